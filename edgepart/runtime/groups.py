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

**Split stage.** Each layer with a scheme is computed by all the group's devices (members), each
the region of the output the cost model gives it (:class:`~edgepart.cost.SplitGroup`, shares
proportional to speed, members in :func:`~edgepart.cost.split_order`, the lead first): ``outc``
slices a conv's or linear layer's weights by output channels (features) and the slice reads the
whole input (a pool reads its own channels); ``rows`` gives a conv or pool output rows
:math:`[a, z)` and it reads input rows :math:`[as - p, (z-1)s - p + k)`, the part outside the
input replaced by the layer's padding (zeros, or :math:`-\infty` for a max pool); ``grid`` does
the same on rows and columns of its tile. An elementwise module (:data:`FUSABLE`, e.g. ReLU) that
is the only reader of a split layer runs on each slice, as the cost model splits it.

The split nodes of a stage are grouped in *runs* (:func:`split_runs`): a split node joins the
run before it when it reads only that run's last value and nothing else reads that value
(VGG-16's convolutions, ReLUs and pools form one run). A run is executed as the cost model
charges it (:class:`RunPlan`): the lead scatters the run's input once (each member gets the part
it reads, :math:`N_{v,i}`), each member computes its region of every layer of the run and keeps
it, between layers each member sends each other member the part of its region that the other
reads, :math:`R_{u,i} \cap N_{v,j}` (the halo rows or columns under ``rows``/``grid``, the
all-gather under ``outc``, the re-tiling on a change of scheme; nothing when it is empty, as the
cost model sends no 0-byte message), directly to that member (worker-to-worker RPC, not through
the lead), and the lead gathers the run's output once. Each member's pieces land in its
:class:`Mailbox`, keyed by (epoch, sequence number, run, step, sender), filled by the senders'
asynchronous calls (no RPC handler blocks); the lead runs its part in its compute thread, each
helper in a thread of its own (:class:`Member`). Several requests may be in flight through the
stage: each run of each request has its own sequence number. A slice copies its input once
per layer: its own part and the pieces it received are pasted into one tensor framed by the
layer's padding (:meth:`Slice.assemble`; the conv then runs unpadded), or not at all when it
reads one whole piece with no padding (a pool at an even cut).

**Overlap of halos with compute.** A member does not wait for a layer's pieces before it starts
the layer: it computes its slice in *bands* (:class:`LayerOrder`, :func:`layer_order`). Under
``rows`` and ``grid`` the first band is the box of its region whose windows read only the input
it holds (its own part of the previous layer's value, and the padding; output rows :math:`o`
with :math:`[os - p, os - p + k)` inside its rows), then it takes the received pieces and
computes the rest, the rows (and, on a grid, columns) along its cuts, in up to four boxes; each
piece of the next exchange is posted as soon as the bands it takes are computed. So every halo
travels while its receiver computes the inside of its next layer, and the next layer starts
with the rows that need no received piece and takes the halo rows last. Under ``outc`` a conv's
or linear layer's slice reads every input channel, so it waits first and computes its region at
once, as before; so does a conv whose bands along the cuts would use each weight fewer than
:data:`MIN_BAND_REUSE` times (a band is a call that reads all the weights again: on VGG-16's
512-channel layers that costs more than the wait it hides). Each band is computed as a slice of
its own (:func:`_band_slices`): it copies once the input its windows read (for a band along a
cut, its own rows and the received halo) into one contiguous tensor framed by the padding, so a
layer's input is still copied about once (the bands along a cut copy again the few input rows
they share with the inside). A band's output is a piece of its own (no copy into one tensor):
the next layer's bands and the gather paste from the pieces (a pool after a conv in bands so
copies its input once, where it read the conv's one output tensor as it was), and a posted piece
that spans two bands is pasted from both.

Departures from the cost model, named: the cost model charges each layer's exchange after the
slowest member's compute, :math:`X_v + \max_i t(v, i)|R_{v,i}|/|R_v|` (:mod:`edgepart.cost`);
the overlap hides up to all of :math:`X_v` (the transfer and the receiver's wake-up) behind the
inside of the next layer, so a run can take less than its charge. The bands are one kernel call
each (two to five per layer and member in place of one), each reading the layer's weights again
(:data:`MIN_BAND_REUSE` bounds what that costs). An elementwise module that is not the only
reader of a split layer, and any node without a scheme (a flatten, an addition), runs on the
lead on the whole tensor, so it ends a run: the run before it is gathered to the lead and the
one after it scattered again (the cost model lets an elementwise layer take its producer's
regions). Each message also carries its piece's bytes once, with no packing of several pieces.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import fx, nn

from edgepart.cost import EMPTY, Region, SplitGroup, layer_shapes, split_order
from edgepart.instance import Instance
from edgepart.plan import Mode, Plan, Scheme, Stage

__all__ = [
    "FUSABLE",
    "MEASURED_WEIGHT",
    "MIN_BAND_REUSE",
    "NO_BORDER",
    "PREDICTED_WEIGHT",
    "SERVICE_SMOOTHING",
    "Border",
    "Exchange",
    "Key",
    "LayerOrder",
    "Mailbox",
    "Member",
    "Obsolete",
    "Pace",
    "PeerError",
    "Piece",
    "ReplicaScheduler",
    "RunLead",
    "RunPlan",
    "Slice",
    "SlicePart",
    "SplitRole",
    "Wire",
    "cut",
    "drop_replicas",
    "ends",
    "layer_order",
    "lead_stage",
    "paste",
    "run_plan",
    "slice_parts",
    "split_refusals",
    "split_roles",
    "split_runs",
    "split_traffic",
]

FUSABLE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Sigmoid, nn.Tanh)
"""Elementwise modules a split layer's slices apply before they are gathered."""

PREDICTED_WEIGHT = 0.5
MEASURED_WEIGHT = 0.5
SERVICE_SMOOTHING = 0.3

MIN_BAND_REUSE = 48
"""A conv's slice is computed in bands (halos overlapped with compute) only when each band
along a cut uses each weight at least this many times (its output rows x columns): every band
is a call that reads all the conv's weights again. Measured (single thread, loaded 2-core
x86_64 host, VGG-16 split by rows in two): a one-row band of 14 or 28 positions of a
512-channel conv cost 0.8 to 1.9 ms more than computing it with the rest (9.4 MB of weights
read again), more than the wait of about 1 ms it hides; of 56 positions (256 channels) 0.2 to
0.5 ms; of 112 or more, nothing measurable."""


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
    """A split member's message to ``rank`` failed (that worker is gone)."""

    def __init__(self, rank: int, message: str) -> None:
        super().__init__(message)
        self.rank = rank


class Obsolete(RuntimeError):
    """The deployment a split run belongs to was replaced while it waited: the request is
    dropped (the driver re-sends what is unanswered to the new deployment)."""


@dataclass(frozen=True, slots=True)
class SlicePart:
    """One device's part of one split fx node: its output ``region``, the input's shape
    ``inp`` (channels, height, width; ``(F, 1, 1)`` for a linear layer's features) and the
    layer's window (``meta.shape``: kernel extent, stride, padding); ``then``: the target of
    the :data:`FUSABLE` module the slice applies after it (:func:`split_roles`)."""

    node: str
    scheme: Scheme
    region: Region
    inp: tuple[int, int, int]
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    then: str | None = None


@dataclass(frozen=True, slots=True)
class SplitRole:
    """A device's place in a split stage: its ``index`` among the members (0: the lead), every
    member's rank and parts in :func:`~edgepart.cost.split_order`, and the stage's runs of
    chained split nodes (:func:`split_runs`)."""

    index: int
    ranks: tuple[int, ...]
    parts: tuple[tuple[SlicePart, ...], ...]
    runs: tuple[tuple[str, ...], ...]

    @property
    def lead(self) -> bool:
        return self.index == 0


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
            parts[i].append(SlicePart(name, scheme, region, shape.inp, shape.kernel,
                                      shape.stride, shape.padding))
    return parts


def split_roles(gm: fx.GraphModule, inst: Instance, st: Stage, ranks: Mapping[str, int]
                ) -> dict[str, SplitRole]:
    """Each member's role in split stage ``st`` (``ranks``: device -> rank); a slice fuses
    the :data:`FUSABLE` module that is its node's only reader when that is in the stage too."""
    order = [inst.devices[d].id for d in split_order(inst, st)]
    inside = {n for lid in st.layers for n in inst.model.layers[inst.model.index[lid]].nodes
              or (lid,)}
    cuts = slice_parts(inst, st)
    then = {}
    for p in cuts[0]:
        reader = _fused_node(gm, p.node)
        then[p.node] = None if reader is None or reader.name not in inside else str(reader.target)
    parts = tuple(tuple(replace(p, then=then[p.node]) for p in member) for member in cuts)
    runs = split_runs(gm, parts[0])
    member_ranks = tuple(ranks[d] for d in order)
    return {d: SplitRole(i, member_ranks, parts, runs) for i, d in enumerate(order)}


def _node(gm: fx.GraphModule, name: str) -> fx.Node:
    return next(n for n in gm.graph.nodes if n.name == name)


def _fused_node(gm: fx.GraphModule, name: str) -> fx.Node | None:
    """The :data:`FUSABLE` module call that is the only reader of node ``name`` and the only
    call of its module (None if none)."""
    users = list(_node(gm, name).users)
    if len(users) != 1 or users[0].op != "call_module":
        return None
    reader = users[0]
    alone = len(reader.all_input_nodes) == 1 and not reader.kwargs
    calls = sum(n.op == "call_module" and n.target == reader.target for n in gm.graph.nodes)
    module = gm.get_submodule(str(reader.target))
    return reader if alone and calls == 1 and isinstance(module, FUSABLE) else None


def split_runs(gm: fx.GraphModule, parts: Sequence[SlicePart]) -> tuple[tuple[str, ...], ...]:
    """The split nodes of ``parts`` in graph order, grouped in runs: a node joins the run before
    it when it reads only the run's last value (the previous split node's output, or its fused
    module's) and nothing else reads that value."""
    fuses = {p.node: p.then is not None for p in parts}
    runs: list[list[str]] = []
    tail: fx.Node | None = None  # the value the current run ends with
    for node in gm.graph.nodes:
        if node.name not in fuses:
            continue
        if tail is not None and node.all_input_nodes == [tail] and list(tail.users) == [node]:
            runs[-1].append(node.name)
        else:
            runs.append([node.name])
        tail = next(iter(node.users)) if fuses[node.name] else node
    return tuple(tuple(run) for run in runs)


def _pair(value: Any) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


Span = tuple[int, int, int, int]
"""(first, end, padding before, padding after) of the input along one axis."""


def _span(out: tuple[int, int], k: int, s: int, p: int, n: int) -> Span:
    """Output rows (columns) [a, z) read input [a s - p, (z - 1) s - p + k): the part inside
    [0, n), and how much of the layer's padding lies before and after it."""
    lo, hi = out[0] * s - p, (out[1] - 1) * s - p + k
    return max(0, lo), min(n, hi), max(0, -lo), max(0, hi - n)


def _reads_own_channels(module: nn.Module, part: SlicePart) -> bool:
    """A pool under ``outc`` reads only its own channels (a conv or linear slice reads all)."""
    return part.scheme is Scheme.OUTC and not isinstance(module, (nn.Conv2d, nn.Linear))


def _window(part: SlicePart) -> tuple[Span, Span]:
    """The input rows and columns that the output region reads (all of them under outc)."""
    _, h, w = part.inp
    if part.scheme is Scheme.OUTC:
        return (0, h, 0, 0), (0, w, 0, 0)
    k, s, p = part.kernel, part.stride, part.padding
    return _span(part.region.h, k[0], s[0], p[0], h), _span(part.region.w, k[1], s[1], p[1], w)


def _reads(module: nn.Module, part: SlicePart) -> Region:
    """The input region a slice reads (:math:`N_{v,i}` of the cost model; empty for an empty
    slice)."""
    if part.region.volume == 0:
        return EMPTY
    rows, cols = _window(part)
    channels = part.region.c if _reads_own_channels(module, part) else (0, part.inp[0])
    return Region(channels, rows[:2], cols[:2])


# --- pieces of tensors: a piece is a tensor that holds one region of a layer's value -----------


def _meet(a: Region, b: Region) -> Region:
    """The intersection of two regions (:data:`~edgepart.cost.EMPTY` when they do not meet)."""
    c = (max(a.c[0], b.c[0]), min(a.c[1], b.c[1]))
    h = (max(a.h[0], b.h[0]), min(a.h[1], b.h[1]))
    w = (max(a.w[0], b.w[0]), min(a.w[1], b.w[1]))
    region = Region(c, h, w)
    return region if region.volume else EMPTY


def cut(x: torch.Tensor, held: Region, want: Region) -> torch.Tensor:
    """The part ``want`` of ``x``, a tensor that holds region ``held`` (a view; a 2D tensor of
    features has channels only)."""
    c = slice(want.c[0] - held.c[0], want.c[1] - held.c[0])
    if x.dim() == 2:
        return x[:, c]
    return x[:, c, want.h[0] - held.h[0]:want.h[1] - held.h[0],
             want.w[0] - held.w[0]:want.w[1] - held.w[0]]


Piece = tuple[Region, torch.Tensor]
"""A region of a layer's value and the tensor that holds it."""

Border = tuple[int, int, int, int]
"""Rows before and after, columns before and after: a layer's padding around a slice's input."""

NO_BORDER: Border = (0, 0, 0, 0)


def paste(need: Region, pieces: Sequence[Piece], border: Border = NO_BORDER,
          fill: float = 0.0) -> torch.Tensor:
    """Region ``need`` of a value from ``pieces`` that cover it, framed by ``border`` rows and
    columns of ``fill`` (a layer's padding: the frame is written once, no second copy of the
    whole region as a separate pad would make); a single piece that is ``need`` with no border
    is returned as it is (no copy)."""
    if len(pieces) == 1 and pieces[0][0] == need and border == NO_BORDER:
        return pieces[0][1]
    like = pieces[0][1]
    c, h, w = (need.c[1] - need.c[0], need.h[1] - need.h[0], need.w[1] - need.w[0])
    if like.dim() == 2:
        out = like.new_empty((like.shape[0], c))
        inside = out
    else:
        top, bottom, left, right = border
        out = like.new_empty((like.shape[0], c, top + h + bottom, left + w + right))
        _fill_frame(out, border, fill)
        inside = out[:, :, top:top + h, left:left + w]
    for region, piece in pieces:
        cut(inside, need, region).copy_(piece)
    return out


def _fill_frame(out: torch.Tensor, border: Border, fill: float) -> None:
    """Write ``fill`` into the ``border`` rows and columns of ``out`` (N, C, H, W)."""
    top, bottom, left, right = border
    height, width = out.shape[2], out.shape[3]
    for rows, cols in (((0, top), (0, width)), ((height - bottom, height), (0, width)),
                       ((0, height), (0, left)), ((0, height), (width - right, width))):
        if rows[1] > rows[0] and cols[1] > cols[0]:
            out[:, :, rows[0]:rows[1], cols[0]:cols[1]].fill_(fill)


def _compact(x: torch.Tensor) -> torch.Tensor:
    """``x`` with a storage of its own size (a transport sends a view's whole storage)."""
    whole = x.is_contiguous() and x.untyped_storage().nbytes() == x.numel() * x.element_size()
    return x if whole else x.clone(memory_format=torch.contiguous_format)


class Slice(nn.Module):
    """One device's slice of one split module: it reads the input region :attr:`reads`;
    :meth:`assemble` puts that region together from pieces, framed by the layer's padding
    where the slice touches the input's edge (:attr:`border`, of :attr:`fill`), and
    :meth:`output` computes the slice's region of the output from it (then its fused module, if
    any). A slice's input is so copied once per layer: the pieces into the framed tensor."""

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
        rows, cols = _window(part)
        self.border: Border = (rows[2], rows[3], cols[2], cols[3])
        self.fill = float("-inf") if isinstance(module, (nn.MaxPool2d, nn.AdaptiveMaxPool2d)) \
            else 0.0
        self.reads = _reads(module, part)

    @property
    def empty(self) -> bool:
        return self.part.region.volume == 0

    def forward(self, piece: torch.Tensor) -> torch.Tensor:
        """The slice's output from ``piece``, the input region :attr:`reads`."""
        return self.output(self.assemble([(self.reads, piece)]))

    def assemble(self, pieces: Sequence[Piece]) -> torch.Tensor:
        """The input region :attr:`reads` from ``pieces``, framed by :attr:`border`."""
        return paste(self.reads, pieces, self.border, self.fill)

    def output(self, framed: torch.Tensor) -> torch.Tensor:
        """The slice's output from ``framed``, its input as :meth:`assemble` makes it."""
        out = self.compute(framed)
        return out if self.then is None else self.then(out)

    def compute(self, framed: torch.Tensor) -> torch.Tensor:
        m = self.module
        if self.part.scheme is Scheme.OUTC:  # the whole input: the module pads it itself
            if self.weight is None:  # a pool: its own channels
                return m(framed)
            if isinstance(m, nn.Linear):
                return F.linear(framed, self.weight, self.bias)
            assert isinstance(m, nn.Conv2d)
            return F.conv2d(framed, self.weight, self.bias, m.stride, _pair(m.padding),
                            m.dilation, m.groups)
        if isinstance(m, nn.Conv2d):
            return F.conv2d(framed, m.weight, m.bias, m.stride, 0, m.dilation, m.groups)
        if isinstance(m, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):  # no padding (refused)
            return F.avg_pool2d(framed, self.part.kernel, self.part.stride)
        return F.max_pool2d(framed, self.part.kernel, self.part.stride)


# --- runs: the exchanges, and the members that play them ---------------------------------------


@dataclass(frozen=True, slots=True)
class Exchange:
    """One redistribution of a run: each member's ``held`` region of a value and the region it
    ``needs`` of it; ``moves`` are the messages, (sender, receiver, region): every non-empty
    intersection of a member's held region with another member's needs."""

    held: tuple[Region, ...]
    needs: tuple[Region, ...]
    moves: tuple[tuple[int, int, Region], ...]

    @classmethod
    def of(cls, held: Sequence[Region], needs: Sequence[Region]) -> Exchange:
        moves = tuple((i, j, region) for j, need in enumerate(needs)
                      for i, have in enumerate(held)
                      if i != j and (region := _meet(have, need)).volume)
        return cls(tuple(held), tuple(needs), moves)


def _whole(regions: Sequence[Region]) -> Region:
    """The smallest region holding ``regions`` (the whole value, when they tile it)."""
    return Region(*((0, max(getattr(x, axis)[1] for x in regions)) for axis in ("c", "h", "w")))


@dataclass(frozen=True, slots=True)
class RunPlan:
    """The exchanges of one run: ``steps[0]`` scatters the run's input from the lead, ``steps[k]``
    feeds the run's layer ``k`` from layer ``k - 1``'s regions, ``steps[-1]`` gathers the last
    layer's output on the lead."""

    nodes: tuple[str, ...]
    steps: tuple[Exchange, ...]

    @property
    def messages(self) -> int:
        """Messages per request: one start (with its scatter piece, if any) per helper, and every
        move after the scatter."""
        return len(self.steps[0].held) - 1 + sum(len(s.moves) for s in self.steps[1:])

    @property
    def elements(self) -> int:
        """Tensor elements moved per request (the scatter included)."""
        return sum(region.volume for s in self.steps for _, _, region in s.moves)


def run_plan(gm: fx.GraphModule, nodes: Sequence[str],
             parts: Sequence[Mapping[str, SlicePart]]) -> RunPlan:
    """The :class:`RunPlan` of run ``nodes`` (``parts[i]``: member ``i``'s parts by node)."""
    c, h, w = parts[0][nodes[0]].inp
    regions = [Region((0, c), (0, h), (0, w))] + [EMPTY] * (len(parts) - 1)
    steps = []
    for node in nodes:
        module = gm.get_submodule(str(_node(gm, node).target))
        steps.append(Exchange.of(regions, [_reads(module, p[node]) for p in parts]))
        regions = [p[node].region for p in parts]
    whole = _whole(regions)
    steps.append(Exchange.of(regions, [whole] + [EMPTY] * (len(parts) - 1)))
    return RunPlan(tuple(nodes), tuple(steps))


@dataclass(frozen=True, slots=True)
class LayerOrder:
    """How one member computes its slice of one layer of a run: its output region cut in
    ``bands`` (boxes), the first ``early`` of them from its own part of the input alone, before
    it waits for the pieces it receives (all of them when it receives none), the others after;
    ``posts[b]``: the moves of the next exchange, (receiver, region), sent once band ``b`` is
    computed (the last band each one takes)."""

    bands: tuple[Region, ...]
    early: int
    posts: tuple[tuple[tuple[int, Region], ...], ...]


def layer_order(part: SlicePart, me: int, into: Exchange, out: Exchange, weighted: bool
                ) -> LayerOrder:
    """Member ``me``'s :class:`LayerOrder` of its slice ``part``, fed by exchange ``into`` and
    read by exchange ``out``: under ``rows`` or ``grid`` the box of its region whose windows
    read only the input it holds (:func:`_free`) first, then the rest of the region, whose
    windows read a received halo, in up to four boxes (:func:`_around`); the whole region at
    once, after the pieces it receives, under ``outc`` (a conv's or linear layer's slice reads
    every input channel) and when a ``weighted`` layer's (a conv's) band along a cut would use
    each weight fewer than :data:`MIN_BAND_REUSE` times."""
    region = part.region
    if not region.volume:
        return LayerOrder((), 0, ())
    if not any(j == me for _, j, _ in into.moves):
        free = region
    elif part.scheme is Scheme.OUTC:
        free = EMPTY
    else:
        free = _free(part, _meet(into.held[me], into.needs[me]), into.needs[me])
    rest = _around(region, free) if free.volume else ()
    if weighted and any(_positions(box) < MIN_BAND_REUSE for box in rest):
        free, rest = EMPTY, ()
    bands = (free, *rest) if free.volume else (region,)
    sends = [(j, r) for i, j, r in out.moves if i == me]
    last = [max(b for b, band in enumerate(bands) if band.overlap(r)) for _, r in sends]
    posts = tuple(tuple(send for send, b_last in zip(sends, last, strict=True) if b_last == b)
                  for b in range(len(bands)))
    return LayerOrder(bands, int(free.volume > 0), posts)


def _free(part: SlicePart, own: Region, need: Region) -> Region:
    """The box of the part's output region whose windows read only ``own`` (the part of the
    input region ``need`` the member holds) and the layer's padding: on each axis the outputs
    :math:`o` whose window :math:`[os - p, os - p + k)`, clipped to the input, lies in
    ``own``'s interval (a contiguous range, as both ends of the window grow with :math:`o`);
    empty when ``own`` lacks channels the slice reads."""
    if not own.volume or own.c != need.c:
        return EMPTY
    _, h, w = part.inp
    axes = zip((part.region.h, part.region.w), part.kernel, part.stride, part.padding, (h, w),
               (own.h, own.w), strict=True)
    spans = []
    for (a, z), k, s, p, n, (lo, hi) in axes:
        inside = [o for o in range(a, z) if lo <= max(0, o * s - p) and min(n, o * s - p + k) <= hi]
        spans.append((inside[0], inside[-1] + 1) if inside else (0, 0))
    box = Region(part.region.c, spans[0], spans[1])
    return box if box.volume else EMPTY


def _positions(box: Region) -> int:
    """Output positions (rows x columns) of a box: how often a conv uses each weight in it."""
    return (box.h[1] - box.h[0]) * (box.w[1] - box.w[0])


def _around(region: Region, box: Region) -> tuple[Region, ...]:
    """``region`` less ``box`` (a box inside it, all its channels), as up to four boxes: the
    rows above and below the box (full width), then the columns left and right of it."""
    c, (top, bottom), (left, right) = region.c, region.h, region.w
    (top_in, bottom_in), (left_in, right_in) = box.h, box.w
    parts = (Region(c, (top, top_in), (left, right)), Region(c, (bottom_in, bottom), (left, right)),
             Region(c, (top_in, bottom_in), (left, left_in)),
             Region(c, (top_in, bottom_in), (right_in, right)))
    return tuple(p for p in parts if p.volume)


def split_traffic(gm: fx.GraphModule, role: SplitRole) -> tuple[int, int]:
    """Messages and tensor elements per request of a split stage's runs."""
    plans = _run_plans(gm, role)
    return sum(p.messages for p in plans), sum(p.elements for p in plans)


def _run_plans(gm: fx.GraphModule, role: SplitRole) -> list[RunPlan]:
    parts = [{p.node: p for p in member} for member in role.parts]
    return [run_plan(gm, run, parts) for run in role.runs]


Key = tuple[int, int, int, int, int]
"""(epoch, sequence number, run, step, sender) of a piece."""


class Mailbox:
    """The pieces sent to one member, by :data:`Key`. :meth:`take` waits until every key it
    asks for is in; it raises :class:`PeerError` when one of this member's sends of that epoch
    failed, and :class:`Obsolete` when ``live()`` says the deployment is gone."""

    def __init__(self) -> None:
        self._ready = threading.Condition()
        self._box: dict[Key, torch.Tensor] = {}
        self._failed: dict[int, tuple[int, str]] = {}  # epoch -> (rank, message)

    def put(self, key: Key, piece: torch.Tensor) -> None:
        with self._ready:
            self._box[key] = piece
            self._ready.notify_all()

    def fail(self, epoch: int, rank: int, message: str) -> None:
        with self._ready:
            self._failed.setdefault(epoch, (rank, message))
            self._ready.notify_all()

    def take(self, epoch: int, keys: Sequence[Key], live: Callable[[], bool],
             poll_s: float = 0.05) -> list[torch.Tensor]:
        with self._ready:
            while True:
                if epoch in self._failed:
                    raise PeerError(*self._failed[epoch])
                if all(k in self._box for k in keys):
                    return [self._box.pop(k) for k in keys]
                if not live():
                    raise Obsolete(f"deployment {epoch} was replaced")
                self._ready.wait(poll_s)

    def forget(self, epoch: int) -> None:
        """Drop the pieces and failures of deployments before ``epoch``."""
        with self._ready:
            self._box = {k: v for k, v in self._box.items() if k[0] >= epoch}
            self._failed = {e: f for e, f in self._failed.items() if e >= epoch}


class Wire(Protocol):
    """How a member reaches the others (asynchronous sends) and its own :class:`Mailbox`."""

    def start(self, rank: int, key: Key, request: int, piece: torch.Tensor | None) -> None:
        """Start a helper's part of a run; ``piece`` (under ``key``) is its scatter piece."""

    def post(self, rank: int, key: Key, piece: torch.Tensor) -> None:
        """Put ``piece`` in member ``rank``'s mailbox under ``key``."""

    def take(self, keys: Sequence[Key]) -> list[torch.Tensor]:
        """The pieces under ``keys`` from this member's mailbox, once they are all in."""


Pace = Callable[[int, float, float, float], None]
"""Called after each band of a slice is computed (:class:`LayerOrder`; the copies into its
input count in it): (request, started, wall seconds, thread CPU seconds)."""


class Member:
    """One device's part of a split stage in deployment ``epoch``: its slices, the run plans,
    its :class:`LayerOrder` of every layer and the wire. The lead calls :meth:`lead_run` (in its
    stage module, :class:`RunLead`); a helper calls :meth:`play` for each run it is started
    on."""

    def __init__(self, gm: fx.GraphModule, role: SplitRole, epoch: int, wire: Wire,
                 pace: Pace | None = None) -> None:
        self.role, self.epoch, self.wire, self.pace = role, epoch, wire, pace
        self.plans = _run_plans(gm, role)
        parts = {p.node: p for p in role.parts[role.index]}
        self.orders = [[layer_order(parts[node], role.index, plan.steps[k], plan.steps[k + 1],
                                    isinstance(_module(gm, node), nn.Conv2d))
                        for k, node in enumerate(plan.nodes)] for plan in self.plans]
        self.bands = [[_band_slices(gm, parts[node], order.bands)
                       for node, order in zip(plan.nodes, orders, strict=True)]
                      for plan, orders in zip(self.plans, self.orders, strict=True)]
        self.sequence = 0
        self.in_runs = (0.0, 0.0)  # the lead's wall and thread CPU seconds in lead_run

    def lead_run(self, run: int, x: torch.Tensor, request: int) -> torch.Tensor:
        """Scatter run ``run``'s input ``x`` (starting every helper), play the lead's part and
        return the gathered output."""
        started, cpu = time.perf_counter(), time.thread_time()
        try:
            return self._lead_run(run, x, request)
        finally:
            wall_s, cpu_s = self.in_runs
            self.in_runs = (wall_s + time.perf_counter() - started,
                            cpu_s + time.thread_time() - cpu)

    def spent_in_runs(self) -> tuple[float, float]:
        """Wall and thread CPU seconds the lead spent in its runs (exchanges, its paced slices,
        waits for the helpers) since the last call, which starts the count anew."""
        spent, self.in_runs = self.in_runs, (0.0, 0.0)
        return spent

    def _lead_run(self, run: int, x: torch.Tensor, request: int) -> torch.Tensor:
        seq, self.sequence = self.sequence, self.sequence + 1
        scatter = self.plans[run].steps[0]
        key = (self.epoch, seq, run, 0, 0)
        for j in range(1, len(self.role.ranks)):
            piece = None if not scatter.needs[j].volume else _compact(
                cut(x, scatter.held[0], scatter.needs[j]))
            self.wire.start(self.role.ranks[j], key, request, piece)
        out = self.play(run, seq, request, [(scatter.held[0], x)])
        assert out is not None  # the lead needs the whole output
        return out

    def play(self, run: int, seq: int, request: int, held: Sequence[Piece] = ()
             ) -> torch.Tensor | None:
        """This member's part of ``run`` for sequence number ``seq`` (``held``: the run's
        input on the lead, none on a helper, whose part of it the scatter brings): every layer
        in its :class:`LayerOrder`, then the gather (the lead's output; None on a helper)."""
        plan, me = self.plans[run], self.role.index
        for k in range(len(plan.nodes)):
            held = self._layer(self.bands[run][k], self.orders[run][k], plan.steps[k],
                               (seq, run, k), held, request)
        gather = plan.steps[-1]
        need = gather.needs[me]
        if not need.volume:
            return None
        return paste(need, [*_pieces(held, need),
                            *self._receive(gather, (seq, run, len(plan.nodes)))])

    def _layer(self, bands: Sequence[Slice], order: LayerOrder, into: Exchange,
               at: tuple[int, int, int], held: Sequence[Piece], request: int) -> list[Piece]:
        """One layer's slice computed band by band in ``order`` (``bands``: a slice for each),
        from this member's ``held`` pieces and, from band ``order.early`` on, those it
        receives by exchange ``into``; each move of the next exchange is posted as soon as the
        bands it takes are computed. Returns the bands' outputs (the pieces of the slice's
        region)."""
        me = self.role.index
        pieces = _pieces(held, into.needs[me])
        out: list[Piece] = []
        for b, band in enumerate(bands):
            if b == order.early:
                pieces += self._receive(into, at)
            started, cpu = time.perf_counter(), time.thread_time()
            out.append((band.part.region, band.output(band.assemble(_pieces(pieces,
                                                                            band.reads)))))
            if self.pace is not None:
                self.pace(request, started, time.perf_counter() - started,
                          time.thread_time() - cpu)
            for j, region in order.posts[b]:
                self.wire.post(self.role.ranks[j], (self.epoch, at[0], at[1], at[2] + 1, me),
                               _compact(paste(region, _pieces(out, region))))
        return out

    def _receive(self, step: Exchange, at: tuple[int, int, int]) -> list[Piece]:
        """The pieces the other members send this one in exchange ``step`` (waits for them)."""
        me = self.role.index
        incoming = [(i, part) for i, j, part in step.moves if j == me]
        if not incoming:
            return []
        got = self.wire.take([(self.epoch, *at, i) for i, _ in incoming])
        return [(part, piece) for (_, part), piece in zip(incoming, got, strict=True)]


def _pieces(held: Sequence[Piece], need: Region) -> list[Piece]:
    """The parts of ``held`` pieces inside region ``need`` (views)."""
    return [(m, cut(x, region, m)) for region, x in held if (m := _meet(region, need)).volume]


class RunLead(nn.Module):
    """The lead's stand-in for the first split node of run ``run`` (the run's other nodes and
    fused modules become identities): scatters, plays the lead's part, gathers."""

    def __init__(self, member: Member, run: int, request: Callable[[], int]) -> None:
        super().__init__()
        self.member, self.run, self.request = member, run, request

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.member.lead_run(self.run, x, self.request())


def _replace(gm: fx.GraphModule, target: str, module: nn.Module) -> None:
    parent, _, leaf = target.rpartition(".")
    setattr(gm.get_submodule(parent) if parent else gm, leaf, module)


def _module(gm: fx.GraphModule, node: str) -> nn.Module:
    return gm.get_submodule(str(_node(gm, node).target))


def _slice(gm: fx.GraphModule, part: SlicePart) -> Slice:
    module = _module(gm, part.node)
    return Slice(module, part, None if part.then is None else gm.get_submodule(part.then))


def _band_slices(gm: fx.GraphModule, part: SlicePart, bands: Sequence[Region]
                 ) -> tuple[Slice, ...]:
    """A slice for each band of ``part``'s region: each reads, and copies once, only the input
    its band's windows read (a band is computed as a slice of its own)."""
    return tuple(_slice(gm, replace(part, region=band)) for band in bands)


def lead_stage(stage: fx.GraphModule, member: Member, request: Callable[[], int]
               ) -> fx.GraphModule:
    """The lead's stage module: each run's first split module replaced by a :class:`RunLead`,
    the run's other split modules and fused modules by identities (``request()``: the id of
    the request being computed, which the helpers' slow-down needs)."""
    parts = {p.node: p for p in member.role.parts[member.role.index]}
    for r, run in enumerate(member.role.runs):
        targets = []
        for node in run:
            targets.append(str(_node(stage, node).target))
            then = parts[node].then
            if then is not None:
                targets.append(then)
        _replace(stage, targets[0], RunLead(member, r, request))
        for target in targets[1:]:
            _replace(stage, target, nn.Identity())
    return stage
