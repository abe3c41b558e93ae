r"""Device groups at run time: the replica scheduler and the slices of a split stage.

**Replicated stage.** Every replica runs the whole stage. The driver deals each request, when it
sends it, to one replica of every replicated stage (the request carries its *route*: the rank
of each stage's end) by a weighted score after AMP4EC's task scheduler (Zhang et al., arXiv
2504.00407, /work/shared/ALGORITHMS.md): AMP4EC scores a node by available CPU, memory and
current load with weights it does not publish. Ours scores replica :math:`r` by its speed, its
queue and its measured service time:

.. math:: \mathrm{score}_r = -(q_r + 1)\,\bigl(w_p \hat C_r + w_m \bar C_r\bigr)

with :math:`q_r` the requests dealt to :math:`r` and not yet answered (its queue),
:math:`\hat C_r` its predicted compute (the cost model's, i.e. its speed) and :math:`\bar C_r` an
exponential average (weight :data:`SERVICE_SMOOTHING` on the newest) of its measured compute,
both in instance seconds; :data:`PREDICTED_WEIGHT` :math:`w_p = 0.5` and
:data:`MEASURED_WEIGHT` :math:`w_m = 0.5`. The highest score (the earliest expected finish) wins,
ties to the earlier replica. In a steady stream each replica then holds a queue proportional to
its rate, which is the cost model's assumption (requests dealt in proportion to
:math:`1/T_r`). Memory is not scored: the validator already checked that every replica holds the
stage. A replica that dies is dropped from the scheduler; the requests dealt to it are dealt
again to the others (no re-plan).

**Split stage.** The lead (the plan's first device) runs the stage; each layer with a scheme is
computed by all the group's devices, each the region of the output the cost model gives it
(:class:`~edgepart.cost.SplitGroup`, shares proportional to speed, in :func:`~edgepart.cost.
split_order`): ``outc`` slices a conv's or linear layer's weights by output channels (features)
and every device reads the whole input (a pool reads its own channels); ``rows`` gives a conv or
max pool output rows :math:`[a, z)` and it reads input rows :math:`[as - p, (z-1)s - p + k)`, the
part outside the input replaced by the layer's padding (zeros, or :math:`-\infty` for a max pool);
``grid`` does the same on rows and columns of its tile (tiles equal, as the cost model has them).
The lead scatters each layer's input pieces to the others and gathers their outputs (RPC calls
between workers, the driver not involved). An elementwise module (:data:`FUSABLE`, e.g. ReLU)
that is the only reader of a split layer runs on each slice before it is gathered, as the cost
model splits it; other elementwise layers run on the lead on the whole tensor. Departure from
the cost model, named: the cost model lets the slices stay on their devices between layers (only
halos and all-gathers move); here every split layer is scattered from and gathered to the lead,
so more bytes move, all through the lead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from edgepart.cost import Region, SplitGroup, layer_shapes, split_order
from edgepart.instance import Instance
from edgepart.plan import Mode, Plan, Scheme, Stage

__all__ = [
    "FUSABLE",
    "MEASURED_WEIGHT",
    "PREDICTED_WEIGHT",
    "SERVICE_SMOOTHING",
    "PeerError",
    "ReplicaScheduler",
    "Scattered",
    "Slice",
    "SlicePart",
    "drop_replicas",
    "ends",
    "fused",
    "glue",
    "helper_slices",
    "scatter_stage",
    "slice_parts",
    "split_refusals",
]

FUSABLE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Sigmoid, nn.Tanh)
"""Elementwise modules a split layer's slices apply before they are gathered."""

PREDICTED_WEIGHT = 0.5
MEASURED_WEIGHT = 0.5
SERVICE_SMOOTHING = 0.3


class ReplicaScheduler:
    """Deals the requests of one replicated stage to its replicas (module docstring)."""

    def __init__(self, predicted_s: Mapping[int, float]) -> None:
        self.predicted = dict(predicted_s)  # rank -> predicted compute
        self.measured = dict(predicted_s)
        self.queue = dict.fromkeys(predicted_s, 0)

    def score(self, rank: int) -> float:
        service = PREDICTED_WEIGHT * self.predicted[rank] + MEASURED_WEIGHT * self.measured[rank]
        return -(self.queue[rank] + 1) * service

    def pick(self) -> int:
        """The replica the next request goes to (its queue grows by one)."""
        ranks = list(self.queue)
        rank = max(ranks, key=lambda r: (self.score(r), -ranks.index(r)))
        self.queue[rank] += 1
        return rank

    def release(self, rank: int) -> None:
        """A request dealt to ``rank`` is answered or dealt again."""
        if rank in self.queue:
            self.queue[rank] = max(0, self.queue[rank] - 1)

    def observe(self, rank: int, compute_s: float) -> None:
        if rank in self.measured:
            self.measured[rank] += SERVICE_SMOOTHING * (compute_s - self.measured[rank])

    def drop(self, rank: int) -> None:
        for table in (self.predicted, self.measured, self.queue):
            table.pop(rank, None)


def ends(stage: Stage) -> tuple[str, ...]:
    """The devices that receive the stage's input: every replica, or the one (lead) device."""
    return stage.members if stage.mode is Mode.REPLICATE else (stage.device,)


def drop_replicas(plan: Plan, gone: set[str]) -> Plan | None:
    """``plan`` without the replicas in ``gone``; None when a stage would be left without a
    device or a split group without a member (then only a re-plan helps)."""
    stages = []
    for st in plan.stages:
        lost = set(st.members) & gone
        if lost and (st.mode is not Mode.REPLICATE or lost == set(st.members)):
            return None
        left = [d for d in st.members if d not in gone]
        if not lost:
            stages.append(st)
        elif len(left) == 1:
            stages.append(Stage(left[0], st.layers))
        else:
            stages.append(Stage.group(left, Mode.REPLICATE, st.layers))
    return Plan(tuple(stages), plan.instance, plan.method, plan.meta)


class PeerError(RuntimeError):
    """A split layer's helper on ``rank`` did not answer."""

    def __init__(self, rank: int, message: str) -> None:
        super().__init__(message)
        self.rank = rank


@dataclass(frozen=True, slots=True)
class SlicePart:
    """One device's part of one split fx node: its output ``region``, the input's height and
    width, and the layer's window (``meta.shape``: kernel extent, stride, padding)."""

    node: str
    scheme: Scheme
    region: Region
    in_size: tuple[int, int]
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)


def _layer_nodes(inst: Instance, st: Stage) -> dict[str, tuple[int, Scheme]]:
    """fx node -> (layer index, scheme) of every layer of a split stage that has a scheme."""
    out = {}
    for lid, scheme in st.schemes:
        v = inst.model.index[lid]
        for name in inst.model.layers[v].nodes or (lid,):
            out[name] = (v, scheme)
    return out


def split_refusals(gm: fx.GraphModule, inst: Instance, plan: Plan) -> list[str]:
    """Why ``edgepart run`` cannot run a split stage of ``plan`` (empty: it can)."""
    modules = dict(gm.named_modules())
    nodes = {n.name: n for n in gm.graph.nodes}
    problems = []
    for b, st in enumerate(plan.stages):
        if st.mode is not Mode.SPLIT:
            continue
        for name, (v, scheme) in _layer_nodes(inst, st).items():
            where = f"plan: stages[{b}].schemes.{inst.model.layers[v].id}"
            node = nodes.get(name)
            module = modules.get(str(node.target)) if node is not None else None
            if node is None or node.op != "call_module" or module is None:
                problems.append(f"{where}: fx node '{name}' is not a module call; only conv, "
                                "linear and pool modules run split")
            elif not _splittable(module, scheme):
                problems.append(f"{where}: `edgepart run` cannot split a "
                                f"{type(module).__name__} by {scheme.value}")
    return problems


def _splittable(module: nn.Module, scheme: Scheme) -> bool:
    if isinstance(module, nn.Conv2d):
        plain = module.padding_mode == "zeros" and not isinstance(module.padding, str)
        if scheme is Scheme.OUTC:
            return plain and module.groups == 1
        return plain and _pair(module.dilation) == (1, 1)
    if isinstance(module, nn.MaxPool2d):
        return not module.ceil_mode and _pair(module.dilation) == (1, 1)
    if isinstance(module, nn.AvgPool2d):  # padding would count in the mean at the cuts
        return scheme is Scheme.OUTC or (not module.ceil_mode and _pair(module.padding) == (0, 0))
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        return True  # its meta.shape exists only for even windows (kernel = stride = in / out)
    return isinstance(module, nn.Linear) and scheme is Scheme.OUTC


def slice_parts(inst: Instance, st: Stage) -> list[list[SlicePart]]:
    """Per device of the group, in :func:`~edgepart.cost.split_order`, its part of every split
    node: the cost model's regions, so the runtime splits exactly as it is costed."""
    order = split_order(inst, st)
    group = SplitGroup(inst, order)
    shapes = layer_shapes(inst)
    parts: list[list[SlicePart]] = [[] for _ in order]
    for name, (v, scheme) in _layer_nodes(inst, st).items():
        shape = shapes[v]
        assert shape is not None  # the validator refused a split layer without a shape
        for i, region in enumerate(group.held(v, scheme)):
            parts[i].append(SlicePart(name, scheme, region, (shape.inp[1], shape.inp[2]),
                                      shape.kernel, shape.stride, shape.padding))
    return parts


def _pair(value: Any) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


Span = tuple[int, int, int, int]
"""(first, end, padding before, padding after) of the input along one axis."""


def _span(out: tuple[int, int], k: int, s: int, p: int, n: int) -> Span:
    """Output rows (columns) [a, z) read input [a s - p, (z - 1) s - p + k): the part inside
    [0, n), and how much of the layer's padding lies before and after it."""
    lo, hi = out[0] * s - p, (out[1] - 1) * s - p + k
    return max(0, lo), min(n, hi), max(0, -lo), max(0, hi - n)


def glue(slices: Sequence[Slice], outs: Sequence[torch.Tensor]) -> torch.Tensor:
    """The whole output from the non-empty slices' outputs: along channels (features) under
    outc; under rows and grid, each band of tiles with equal rows side by side, the bands
    stacked."""
    if slices[0].part.scheme is Scheme.OUTC:
        return torch.cat(list(outs), slices[0].dim)
    bands: dict[tuple[int, int], list[torch.Tensor]] = {}
    order = sorted(range(len(slices)),
                   key=lambda i: (slices[i].part.region.h, slices[i].part.region.w))
    for i in order:
        bands.setdefault(slices[i].part.region.h, []).append(outs[i])
    return torch.cat([torch.cat(band, 3) for band in bands.values()], 2)


class Slice(nn.Module):
    """One device's slice of one split module: :meth:`take` cuts the input it reads from the
    whole input, :meth:`forward` computes its region of the output."""

    def __init__(self, module: nn.Module, part: SlicePart, then: nn.Module | None = None
                 ) -> None:
        super().__init__()
        self.module, self.part, self.then = module, part, then
        c0, c1 = part.region.c
        self.weight: torch.Tensor | None = None
        self.bias: torch.Tensor | None = None
        if part.scheme is Scheme.OUTC and isinstance(module, (nn.Conv2d, nn.Linear)):
            self.weight = module.weight[c0:c1].detach().clone()
            self.bias = None if module.bias is None else module.bias[c0:c1].detach().clone()
        self.rows, self.cols = self._window(module, part)

    @staticmethod
    def _window(module: nn.Module, part: SlicePart) -> tuple[Span, Span]:
        """The input rows and columns that the output region reads (all of them under outc)."""
        if part.scheme is Scheme.OUTC:
            return (0, part.in_size[0], 0, 0), (0, part.in_size[1], 0, 0)
        k, s, p = part.kernel, part.stride, part.padding
        return (_span(part.region.h, k[0], s[0], p[0], part.in_size[0]),
                _span(part.region.w, k[1], s[1], p[1], part.in_size[1]))

    @property
    def empty(self) -> bool:
        return self.part.region.volume == 0

    @property
    def dim(self) -> int:
        """The output dimension channel slices are concatenated along."""
        return -1 if isinstance(self.module, nn.Linear) else 1

    def take(self, x: torch.Tensor) -> torch.Tensor:
        if self.part.scheme is not Scheme.OUTC:
            return x[:, :, self.rows[0]:self.rows[1], self.cols[0]:self.cols[1]]
        if self.weight is None:  # a pool under outc reads its own channels
            return x[:, self.part.region.c[0]:self.part.region.c[1]]
        return x

    def forward(self, piece: torch.Tensor) -> torch.Tensor:
        out = self.compute(piece)
        return out if self.then is None else self.then(out)

    def compute(self, piece: torch.Tensor) -> torch.Tensor:
        m = self.module
        if self.part.scheme is Scheme.OUTC:
            if self.weight is None:  # a pool: its own channels
                return m(piece)
            if isinstance(m, nn.Linear):
                return F.linear(piece, self.weight, self.bias)
            assert isinstance(m, nn.Conv2d)
            return F.conv2d(piece, self.weight, self.bias, m.stride, _pair(m.padding),
                            m.dilation, m.groups)
        pads = (self.cols[2], self.cols[3], self.rows[2], self.rows[3])
        if isinstance(m, nn.Conv2d):
            return F.conv2d(F.pad(piece, pads), m.weight, m.bias, m.stride, 0, m.dilation,
                            m.groups)
        if isinstance(m, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):  # no padding (refused)
            return F.avg_pool2d(piece, self.part.kernel, self.part.stride)
        padded = F.pad(piece, pads, value=float("-inf"))
        return F.max_pool2d(padded, self.part.kernel, self.part.stride)


Remote = Callable[[int, str, torch.Tensor], Any]
"""Starts a helper's slice: (rank, fx node, input piece) -> a reply with ``wait()``."""


class Scattered(nn.Module):
    """The lead's stand-in for a split module: scatters the pieces, computes its own slice,
    gathers the others' (``slices[i]`` is device ``i``'s, on rank ``ranks[i]``; 0 the lead)."""

    def __init__(self, slices: Sequence[Slice], ranks: Sequence[int], remote: Remote) -> None:
        super().__init__()
        self.parts = list(slices)
        self.ranks, self.remote = list(ranks), remote

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        node = self.parts[0].part.node
        replies = {i: self.remote(self.ranks[i], node, s.take(x))
                   for i, s in enumerate(self.parts) if i > 0 and not s.empty}
        done = [] if self.parts[0].empty else [(self.parts[0],
                                                 self.parts[0](self.parts[0].take(x)))]
        for i, reply in replies.items():
            try:
                done.append((self.parts[i], reply.wait()))
            except Exception as err:  # the transport's error types are backend-specific
                raise PeerError(self.ranks[i], str(err).splitlines()[0] if str(err) else
                                type(err).__name__) from None
        return glue([s for s, _ in done], [out for _, out in done])


def fused(gm: fx.GraphModule, node: str) -> str | None:
    """The :data:`FUSABLE` module call that is the only reader of ``node`` (None if none)."""
    users = list(next(n for n in gm.graph.nodes if n.name == node).users)
    if len(users) != 1 or users[0].op != "call_module":
        return None
    reader = users[0]
    alone = len(reader.all_input_nodes) == 1 and not reader.kwargs
    module = gm.get_submodule(str(reader.target))
    return str(reader.target) if alone and isinstance(module, FUSABLE) else None


def _replace(gm: fx.GraphModule, target: str, module: nn.Module) -> None:
    parent, _, leaf = target.rpartition(".")
    setattr(gm.get_submodule(parent) if parent else gm, leaf, module)


def _slice(gm: fx.GraphModule, part: SlicePart) -> Slice:
    target = str(next(n.target for n in gm.graph.nodes if n.name == part.node))
    then = fused(gm, part.node)
    return Slice(gm.get_submodule(target), part, None if then is None else gm.get_submodule(then))


def scatter_stage(stage: fx.GraphModule, parts: Sequence[Sequence[SlicePart]],
                  ranks: Sequence[int], remote: Remote) -> fx.GraphModule:
    """The lead's stage module: every split module replaced by a :class:`Scattered` (and the
    elementwise module fused into it by an identity)."""
    for column in zip(*parts, strict=True):
        node = column[0].node
        target = str(next(n.target for n in stage.graph.nodes if n.name == node))
        slices = [_slice(stage, p) for p in column]
        then = fused(stage, node)
        _replace(stage, target, Scattered(slices, ranks, remote))
        if then is not None:
            _replace(stage, then, nn.Identity())
    return stage


def helper_slices(gm: fx.GraphModule, parts: Sequence[SlicePart]) -> dict[str, Slice]:
    """A helper's slices, by fx node, built from its own copy of the traced model."""
    return {p.node: _slice(gm, p) for p in parts}
