"""Split a traced model into pipeline stages at a plan's cut points.

The model is built from its spec (``torchvision:NAME`` or ``package.module:factory``, see
:mod:`edgepart.profiling.model_spec`) with random weights from a seed, or with a local state dict
loaded with ``weights_only=True``; it is traced and shape-specialised exactly as profiling traced it
(:func:`edgepart.profiling.trace.trace_model`), so the fx node names listed in each instance layer's
``nodes`` are the nodes of this graph.

Every fx node gets the stage of the layer that lists it; the input placeholder belongs to stage
``-1`` (the source) and the output node to stage ``k`` (the sink). Boundary ``b`` (between stage
``b`` and ``b + 1``) carries, in graph order, every value produced at or before ``b`` and used after
``b``: relay semantics, so a skip tensor is received and re-sent by each stage it passes through,
exactly as the cost model's ``relay`` transfer charges it. Stage ``b`` becomes a
:class:`torch.fx.GraphModule` whose arguments are boundary ``b - 1`` and which returns boundary
``b`` as a tuple (the last stage returns the model's own output).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import fx, nn

from edgepart.errors import InputError
from edgepart.instance import Instance
from edgepart.plan import Plan
from edgepart.profiling.model_spec import build_model, first_line
from edgepart.profiling.trace import TracedModel, trace_model

__all__ = [
    "StageSpec",
    "build_stage",
    "fingerprint",
    "load_model",
    "payload_bytes",
    "split_plan",
    "trace",
]


@dataclass(frozen=True, slots=True)
class StageSpec:
    """What one worker needs to build its stage from its own copy of the traced model."""

    index: int
    nodes: tuple[str, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    final: bool


def load_model(spec: str, seed: int = 0, weights: str | Path | None = None) -> nn.Module:
    """The model named by ``spec`` in eval mode: seeded random weights, or ``weights`` loaded."""
    model = build_model(spec, seed=seed)
    if weights is not None:
        _load_weights(model, Path(weights))
    return model.eval()


def _load_weights(model: nn.Module, path: Path) -> None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError(f"--weights {path}: no such file") from None
    except Exception as err:  # torch.load raises many types for a bad or unsafe file
        raise InputError(f"--weights {path}: not a loadable state dict ({first_line(err)})"
                         ) from None
    if not isinstance(state, Mapping):
        raise InputError(f"--weights {path}: holds a {type(state).__name__}, not a state dict")
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise InputError(f"--weights {path}: does not fit the model ({first_line(err)})") from None


def trace(model: nn.Module, input_shape: Sequence[int]) -> TracedModel:
    """Trace and specialise ``model`` for ``input_shape`` as profiling does."""
    return trace_model(model, input_shape)


def fingerprint(gm: fx.GraphModule) -> str:
    """A short digest of the graph's node names and ops (equal on every worker of one model)."""
    text = "\n".join(f"{n.name} {n.op} {_target_name(n.target)}" for n in gm.graph.nodes)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _target_name(target: Any) -> str:
    return target if isinstance(target, str) else getattr(target, "__qualname__", repr(target))


def split_plan(gm: fx.GraphModule, inst: Instance, plan: Plan) -> tuple[StageSpec, ...]:
    """One :class:`StageSpec` per plan stage; ``InputError`` when instance and model disagree."""
    stage_of = _node_stages(gm, inst, plan)
    k = len(plan.stages)
    last_use = _last_use(gm, stage_of, k)
    boundaries = [
        tuple(n for n in stage_of if stage_of[n] <= b < last_use[n]) for b in range(-1, k)
    ]
    return tuple(
        StageSpec(index=b, nodes=tuple(n for n, s in stage_of.items() if s == b),
                  inputs=boundaries[b], outputs=() if b == k - 1 else boundaries[b + 1],
                  final=b == k - 1)
        for b in range(k)
    )


def _node_stages(gm: fx.GraphModule, inst: Instance, plan: Plan) -> dict[str, int]:
    """fx node name -> stage, in graph order (placeholders -1); checks coverage and direction."""
    names = {n.name for n in gm.graph.nodes}
    layer_stage = {lid: b for b, st in enumerate(plan.stages) for lid in st.layers}
    owner: dict[str, int] = {}
    for layer in inst.model.layers:
        for name in layer.nodes or (layer.id,):
            if name not in names:
                raise InputError(f"model.layers '{layer.id}': fx node '{name}' is not in the "
                                 f"traced model (is the instance for another model?)")
            owner[name] = layer_stage[layer.id]
    stage_of: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            stage_of[node.name] = -1
        elif node.op != "output":
            if node.name not in owner:
                raise InputError(f"model: fx node '{node.name}' is in no layer of the instance "
                                 f"(is the instance for another model?)")
            stage_of[node.name] = owner[node.name]
    _check_forward(gm, stage_of)
    return stage_of


def _check_forward(gm: fx.GraphModule, stage_of: Mapping[str, int]) -> None:
    for node in gm.graph.nodes:
        for src in node.all_input_nodes:
            if node.op != "output" and stage_of[src.name] > stage_of[node.name]:
                raise InputError(f"plan: fx node '{src.name}' (stage {stage_of[src.name]}) feeds "
                                 f"'{node.name}' (stage {stage_of[node.name]}): the instance's "
                                 f"edges do not match the model")


def _last_use(gm: fx.GraphModule, stage_of: Mapping[str, int], k: int) -> dict[str, int]:
    """The last stage that reads each value (``k`` for the model output)."""
    last = {name: stage for name, stage in stage_of.items()}
    for node in gm.graph.nodes:
        reader = k if node.op == "output" else stage_of[node.name]
        for src in node.all_input_nodes:
            last[src.name] = max(last[src.name], reader)
    return last


def build_stage(gm: fx.GraphModule, spec: StageSpec) -> fx.GraphModule:
    """The stage as a module: ``forward(*boundary b-1) -> boundary b`` (or the model output)."""
    graph = fx.Graph()
    env: dict[str, fx.Node] = {name: graph.placeholder(name) for name in spec.inputs}
    nodes = {n.name: n for n in gm.graph.nodes}
    for name in spec.nodes:
        env[name] = graph.node_copy(nodes[name], lambda n: env[n.name])
    if spec.final:
        output = next(n for n in gm.graph.nodes if n.op == "output")
        graph.output(fx.node.map_arg(output.args[0], lambda n: env[n.name]))
    else:
        graph.output(tuple(env[name] for name in spec.outputs))
    return fx.GraphModule(gm, graph, class_name=f"Stage{spec.index}")


def payload_bytes(value: Any) -> int:
    """Bytes of every tensor in a (nested) value: what one message between stages carries."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(payload_bytes(v) for v in value)
    if isinstance(value, Mapping):
        return sum(payload_bytes(v) for v in value.values())
    return 0
