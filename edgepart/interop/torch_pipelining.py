"""Export a plan as a ``torch.distributed.pipelining`` split spec.

``torch.distributed.pipelining.pipeline(model, mb_args, split_spec={fqn: SplitPoint.BEGINNING})``
wraps the submodule named ``fqn`` so that a split marker runs just before (``BEGINNING``) or just
after (``END``) each of its calls, traces the forward pass, and cuts the traced graph at the
markers *in execution order*: stage ``i`` is everything between marker ``i - 1`` and marker ``i``.

So a plan is expressible when

1. its stages are contiguous in forward execution order (the order of the model's torch.fx graph):
   no node of stage ``b`` runs after a node of stage ``b + 1``. Plans whose stages interleave on a
   DAG (a branch on one stage running between two pieces of another) are not;
2. every boundary has a module to hook: the first node of stage ``b + 1`` is a call of a submodule
   (split at its ``BEGINNING``) or the last node of stage ``b`` is (split at its ``END``), and that
   submodule is called exactly once in the forward pass (a reused module, such as torchvision's
   ``BasicBlock.relu``, would put a marker at each of its calls).

Layers map to the model through their ``nodes`` (torch.fx node names, as written by
``edgepart profile``); the model is traced with :func:`torch.fx.symbolic_trace` to get the
execution order and each ``call_module`` node's FQN. fx nodes that belong to no layer (identities
the profiler removed, folded shape arithmetic) are ignored.
"""

from __future__ import annotations

import inspect
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from edgepart.cost import validate_plan
from edgepart.errors import InputError
from edgepart.instance import Instance
from edgepart.plan import Plan

if TYPE_CHECKING:
    from torch import nn

__all__ = ["FxCall", "NotExpressible", "Position", "SplitPoint", "TorchSplit", "fx_calls",
           "torch_split"]


class NotExpressible(Exception):
    """A valid plan whose stage boundaries no split spec can express (one-line reason)."""


class Position(StrEnum):
    BEGINNING = "BEGINNING"
    END = "END"


@dataclass(frozen=True, slots=True)
class FxCall:
    """One torch.fx node in graph (execution) order; ``target`` is the FQN of a call_module."""

    name: str
    op: str
    target: str


@dataclass(frozen=True, slots=True)
class SplitPoint:
    """The marker that starts stage ``stage`` (>= 1)."""

    fqn: str
    position: Position
    stage: int


@dataclass(frozen=True)
class TorchSplit:
    points: tuple[SplitPoint, ...]
    devices: tuple[str, ...]
    instance: str = ""

    def split_spec(self) -> dict[str, str]:
        """``{fqn: "BEGINNING" | "END"}`` (the names of ``SplitPoint`` members)."""
        return {p.fqn: p.position.value for p in self.points}

    def to_json(self) -> str:
        return json.dumps({"split_spec": self.split_spec(), "stages": list(self.devices)},
                          indent=2)

    def to_code(self) -> str:
        """Python source that builds the split spec, one comment per stage."""
        lines = [f"# torch.distributed.pipelining split of instance {self.instance!r}: "
                 f"{len(self.devices)} stage(s); stage i runs on rank i",
                 "from torch.distributed.pipelining import SplitPoint, pipeline", "",
                 "split_spec = {"]
        for p in self.points:
            edge = "starts" if p.position is Position.BEGINNING else "ends"
            which = p.stage if p.position is Position.BEGINNING else p.stage - 1
            lines.append(f"    {p.fqn!r}: SplitPoint.{p.position.value},  # stage {which} "
                         f"(device {self.devices[which]}) {edge} here")
        lines += ["}", "# stages: " + ", ".join(f"{i}={d}" for i, d in enumerate(self.devices)),
                  "# pipe = pipeline(model, mb_args=(example_input,), split_spec=split_spec)"]
        return "\n".join(lines) + "\n"


def fx_calls(module: nn.Module) -> list[FxCall]:
    """The model's torch.fx nodes in execution order (arguments with defaults kept constant)."""
    from torch import fx

    params = list(inspect.signature(module.forward).parameters.values())[1:]  # keep the input
    concrete = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
    try:
        gm = fx.symbolic_trace(module, concrete_args=concrete or None)
    except Exception as err:  # fx raises many types (TraceError, TypeError, ...)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"model: torch.fx cannot trace {type(module).__name__}: {first}"
                         ) from None
    return [FxCall(n.name, n.op, n.target if isinstance(n.target, str)
                   else getattr(n.target, "__name__", str(n.target))) for n in gm.graph.nodes]


def torch_split(inst: Instance, plan: Plan, calls: Sequence[FxCall]) -> TorchSplit:
    """The split spec of a valid plan, given the model's fx nodes in execution order.

    Raises :class:`InputError` when the plan, the instance and the model do not match, and
    :class:`NotExpressible` when the plan is valid but no split spec expresses it.
    """
    problems = validate_plan(inst, plan)
    if problems:
        raise InputError(f"plan: {problems[0]}")
    order = _staged_calls(inst, plan, calls)
    uses = Counter(c.target for c in calls if c.op == "call_module")
    points = tuple(_boundary(order, i, uses) for i in range(1, len(order))
                   if order[i][1] != order[i - 1][1])
    return TorchSplit(points, tuple(s.device for s in plan.stages), inst.name)


def _staged_calls(inst: Instance, plan: Plan, calls: Sequence[FxCall]
                  ) -> list[tuple[FxCall, int]]:
    """The fx nodes that belong to a layer, in execution order, with their stage; checks that
    stages are contiguous in that order."""
    stage_of_node: dict[str, int] = {}
    for layer, stage in zip(inst.model.layers, plan.stage_of(inst), strict=True):
        if not layer.nodes:
            raise InputError(f"layer '{layer.id}' lists no fx nodes ('nodes'): the plan cannot "
                             "be mapped onto the model")
        stage_of_node.update(dict.fromkeys(layer.nodes, stage))
    known = {c.name for c in calls}
    unknown = [n for n in stage_of_node if n not in known]
    if unknown:
        raise InputError(f"model: the traced model has no fx node '{unknown[0]}' "
                         f"({len(unknown)} unknown in all): is the instance profiled from it?")
    order = [(c, stage_of_node[c.name]) for c in calls if c.name in stage_of_node]
    latest = order[0]
    for call, stage in order:
        if stage < latest[1]:
            raise NotExpressible(
                f"fx node '{call.name}' (stage {stage}) runs after '{latest[0].name}' (stage "
                f"{latest[1]}) in the forward pass: the plan's stages interleave (DAG stages), "
                "and pipelining cuts the forward pass in execution order")
        if stage > latest[1]:
            latest = (call, stage)
    return order


def _boundary(order: list[tuple[FxCall, int]], i: int, uses: Counter[str]) -> SplitPoint:
    first, stage = order[i]
    last = order[i - 1][0]
    for call, position in ((first, Position.BEGINNING), (last, Position.END)):
        if call.op == "call_module" and uses[call.target] == 1:
            return SplitPoint(call.target, position, stage)
    raise NotExpressible(
        f"the boundary before stage {stage} lies between fx nodes '{last.name}' "
        f"({_what(last, uses)}) and '{first.name}' ({_what(first, uses)}): a split point needs "
        "a submodule called once at one side of it")


def _what(call: FxCall, uses: Counter[str]) -> str:
    if call.op != "call_module":
        return f"{call.op} {call.target}"
    return f"module {call.target} called {uses[call.target]} times"

