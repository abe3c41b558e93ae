r"""The one cost model and the one plan checker. No solver code here.

Notation. Layers :math:`v` with stage :math:`\sigma(v) \in \{0..k-1\}`; stage :math:`b` runs on
device :math:`d_b`; :math:`t(v, d)` is the layer's time on device :math:`d`; :math:`\beta_u` the
bytes of the tensor layer :math:`u` produces; :math:`\tau_{ij}(x) = \lambda_{ij} + x / bw_{ij}` the
time of one :math:`x`-byte message from device :math:`i` to :math:`j` (0 when :math:`i = j`).
The request input (``input_bytes``) is a tensor produced at stage :math:`-1` on the ``source``
device and consumed by the entry layers; the exit layers' tensors are consumed at stage :math:`k`
on the ``sink`` device. Without a source (sink) those tensors are not charged.

Compute: :math:`C_b = \sum_{\sigma(v)=b} t(v, d_b)`.

Relay transfers (default). Tensor :math:`u` is alive across boundary :math:`b` (between stages
:math:`b` and :math:`b+1`) when :math:`\sigma(u) \le b < \max_{w \in succ(u)} \sigma(w)`. Boundary
bytes :math:`B_b = \sum_u \beta_u [u \text{ alive across } b]`, for :math:`b = -1..k-1`, and the
boundary is one message: :math:`R_b = \tau_{d_b d_{b+1}}(B_b)` (with :math:`d_{-1}` = source,
:math:`d_k` = sink). Stage :math:`b` receives :math:`\mathrm{in}_b = R_{b-1}` and sends
:math:`\mathrm{out}_b = R_b`.

Direct transfers. Tensor :math:`u` goes as one message to each stage
:math:`c \in D(u) = \{\sigma(w) : w \in succ(u)\} \setminus \{\sigma(u)\}`; receiver :math:`c` pays
:math:`\tau_{d_{\sigma(u)} d_c}(\beta_u)`, the sender pays once per tensor,
:math:`\max_{c \in D(u)} \tau_{d_{\sigma(u)} d_c}(\beta_u)` (with uniform links: Tarnawski et al.,
NeurIPS 2020). :math:`\mathrm{in}_b`, :math:`\mathrm{out}_b` are the sums over the stage's tensors.

Period (1 / throughput):
:math:`P = \max(\max_b T_b,\ \mathrm{out}_{source},\ \mathrm{in}_{sink})` with
:math:`T_b = \max(\mathrm{in}_b, C_b, \mathrm{out}_b)` when ``overlap`` else their sum; the source
and sink are stages of their own that only send (receive).

End-to-end latency of one request in an empty pipeline:
:math:`L = \sum_b (\mathrm{in}_b + C_b) + \mathrm{in}_{sink}`.

Memory of stage :math:`b`: parameters + the largest working set + its receive and send buffers,
:math:`M_b = \sum_{\sigma(v)=b} p_v + \max_{\sigma(v)=b} w_v + \mathrm{inbytes}_b +
\mathrm{outbytes}_b`, where the buffers hold the bytes of the messages above (relay:
:math:`B_{b-1} + B_b`; direct: each received tensor plus each distinct sent tensor).

Device groups (see :mod:`edgepart.plan`; relay transfers only). A stage's *ends* are the devices
that send and receive its boundary messages: its device (single), every replica (replicate), the
lead :math:`\ell` (split). Between stages with ends :math:`E` and :math:`F` the boundary message
:math:`B_b` costs sender :math:`s \in E` the time :math:`\max_{r \in F} \tau_{sr}(B_b)` and receiver
:math:`r \in F` the time :math:`\max_{s \in E} \tau_{sr}(B_b)`: a request may be dealt to any
replica, so each end is charged its worst partner (with one device on each side this is the
single-device formula above, to the bit).

*Replicate* (data parallelism in a stage, as in PipeDream and Asteroid): replica :math:`r` has
:math:`C_r = \sum_{\sigma(v)=b} t(v, r)` and :math:`T_r = \max(\mathrm{in}_r, C_r, \mathrm{out}_r)`
(the sum without ``overlap``) on its own links. Requests are dealt in proportion to the replicas'
rates :math:`1/T_r`, so the stage serves :math:`\sum_r 1/T_r` requests per second: its period is
:math:`T_b = 1 / \sum_r (1/T_r)`. Its latency term is the slowest replica's,
:math:`\max_r (\mathrm{in}_r + C_r)`; every replica holds all the stage's parameters,
:math:`M_r = \sum p_v + \max w_v + \mathrm{inbytes}_r + \mathrm{outbytes}_r`.

*Split* (intra-layer partitioning; schemes and redistribution after FlexPie, Zhang et al., arXiv
2502.15312). A split stage's layers must form a *path* of the model (:func:`split_path_problem`,
the one rule the validator and the exact solvers share): in topological order
:math:`v_1 \to v_2 \to \dots \to v_m`, the first reads at most one tensor (its producer's, or the
request input), and each later layer reads only the one before it, which nothing else reads. On a
chain every stage is such a path; on a DAG a path inside a residual block or a branch is, while a
stage holding a join (a layer reading two tensors) or a fork (a tensor read twice) cannot be split.
Tensors that only pass through the stage (a skip connection alive across it) stay on the lead.
Each layer :math:`v` with a shape (``meta.shape``: kind conv, pool,
linear or elementwise, input and output ``[C, H, W]``, kernel, stride, padding, groups) has a
scheme :math:`s_v`; its output is cut into one region :math:`R_{v,i}` per group device :math:`i`,
in order from the lead, then the other devices in the instance's order (:func:`split_order`):
``outc`` cuts the :math:`C` output channels (features), ``rows`` the :math:`H` output rows, both
into integer shares proportional to the devices' speeds :math:`1/t(v, i)` (largest remainder);
``grid`` cuts :math:`H \times W` into an :math:`r \times c` grid of equal tiles with :math:`rc = m`
devices and :math:`r` the largest divisor of :math:`m` at most :math:`\sqrt m` (FlexPie's 2D grid is
2 x 2 for 4 devices; like FlexPie, tiles are equal, not speed-weighted). Linear layers take only
``outc``. An elementwise layer (ReLU, batch norm, flatten, ...) takes its producer's scheme and
regions (first in the stage, any scheme of its own). Device :math:`i` computes its region in
:math:`t(v, i)\,|R_{v,i}| / |R_v|` and reads the input region :math:`N_{v,i}`: ``outc`` of a
(non-depthwise) conv or a linear layer needs the whole input; a conv or pool needs for output
rows :math:`[a, z)` the input rows :math:`[a s - p,\ (z-1) s - p + k)` (the halo of kernel
:math:`k`, stride :math:`s`, padding :math:`p`, clipped), the same for columns, and per-channel ops
(pool, depthwise conv) only their own channels; elementwise layers read exactly their region.
*Redistribution* into layer :math:`v` from its producer :math:`u` sends device :math:`i`'s part
of what :math:`j` reads, :math:`x_{ij} = |R_{u,i} \cap N_{v,j}|\,\epsilon_u` bytes
(:math:`\epsilon_u` the bytes per element) for :math:`i \ne j`, over the real link
:math:`\tau_{ij}`; each device sends its messages one after another and receives them one after
another, so the exchange takes
:math:`X_v = \max_i \max(\sum_j \tau_{ij}(x_{ij}), \sum_j \tau_{ji}(x_{ji}))` (messages of 0
bytes are not sent). This one formula is FlexPie's all-gather (``outc`` to ``outc``), halo
exchange (``rows`` to ``rows``, ``grid`` to ``grid``) and re-tiling (a change of scheme). The lead
holds the stage input and scatters it the same way (:math:`R = ` everything on the lead) and
gathers the last layer's output (:math:`N = ` everything on the lead). The group's compute time is
:math:`C_b = X_{\mathrm{in}} + \sum_v (X_v + \max_i t(v, i) |R_{v,i}| / |R_v|) + X_{\mathrm{out}}`
and the stage is costed like a single device (the lead's links) with that :math:`C_b`. Memory of
device :math:`i`: :math:`\sum_v p_v f_{v,i} + \max_v (w_v |R_{v,i}| / |R_v| + \mathrm{recv}_{v,i})`
(+ the boundary buffers on the lead), with :math:`f_{v,i} = |R_{v,i}|/|R_v|` under ``outc``
(a slice of the weights) and 1 under ``rows``/``grid`` (every filter).

Departures from FlexPie, named: times are the profiled layer times scaled by the share, not an
XGBoost model; an exchange is charged per device (send and receive each serial), not as the
sum of all messages; FlexPie's no-transmit fusion (redundant halo compute) is not modelled; its
shares are equal, ours proportional to speed for ``outc`` and ``rows``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import pairwise
from typing import Any

from edgepart.errors import InputError
from edgepart.instance import Instance, Layer, Transfer
from edgepart.plan import Mode, Plan, Scheme, Stage

__all__ = [
    "LayerShape", "Metrics", "Region", "SplitGroup", "StageMetrics", "evaluate",
    "infeasibility_reasons", "layer_shapes", "lower_bound", "member_compute_s", "reads_producer",
    "split_input_bytes", "split_order",
    "split_path_problem", "tolerated", "validate_plan",
]

REL_TOL = 1e-9


def tolerated(limit: float) -> float:
    """The most the checker accepts under ``limit`` (a memory capacity, ``--max-latency`` or
    ``--max-period``): ``limit * (1 + REL_TOL)``. Models that must admit every plan the checker
    admits widen their limits by this, not by a tolerance of their own."""
    return limit * (1 + REL_TOL)


@dataclass(frozen=True, slots=True)
class StageMetrics:
    device: str
    layers: tuple[str, ...]
    compute_s: float
    recv_s: float
    send_s: float
    time_s: float
    memory_bytes: float
    recv_bytes: float
    send_bytes: float
    latency_s: float = math.nan
    """The stage's term of the latency (receive + compute; a replica group's slowest)."""
    mode: Mode = Mode.SINGLE
    devices: tuple[str, ...] = ()
    member_memory_bytes: tuple[float, ...] = ()
    """Per device of a group, in ``devices`` order (a single stage: ``memory_bytes``)."""
    schemes: tuple[tuple[str, Scheme], ...] = ()
    """A split stage's schemes, as in its :class:`~edgepart.plan.Stage`."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"device": self.device,
                               "first_layer": self.layers[0] if self.layers else None,
                               "last_layer": self.layers[-1] if self.layers else None,
                               "layers": len(self.layers), "layer_ids": list(self.layers),
                               "compute_s": self.compute_s, "transfer_in_s": self.recv_s,
                               "transfer_out_s": self.send_s, "time_s": self.time_s,
                               "memory_bytes": self.memory_bytes}
        if self.mode is not Mode.SINGLE:
            out.update(mode=self.mode.value, devices=list(self.devices),
                       member_memory_bytes=list(self.member_memory_bytes))
        if self.schemes:
            out["schemes"] = {lid: s.value for lid, s in self.schemes}
        return out


@dataclass(frozen=True, slots=True)
class Metrics:
    """What a plan costs under the instance's cost model."""

    stages: tuple[StageMetrics, ...]
    bottleneck_s: float
    latency_s: float
    source_send_s: float
    sink_recv_s: float

    @property
    def throughput_per_s(self) -> float:
        return 1.0 / self.bottleneck_s if self.bottleneck_s > 0 else math.inf

    def objective(self, name: str) -> float:
        return self.latency_s if name == "latency" else self.bottleneck_s


# ---------------------------------------------------------------------------------------------
# Split geometry: layer shapes, regions, shares, exchanges
# ---------------------------------------------------------------------------------------------

Interval = tuple[int, int]
SHAPE_KINDS = ("conv", "pool", "linear", "elementwise")


@dataclass(frozen=True, slots=True)
class Region:
    """Channels x rows x columns, each a half-open interval."""

    c: Interval
    h: Interval
    w: Interval

    @property
    def volume(self) -> int:
        c, h, w = self.c[1] - self.c[0], self.h[1] - self.h[0], self.w[1] - self.w[0]
        return c * h * w if c > 0 and h > 0 and w > 0 else 0

    def overlap(self, other: Region) -> int:
        """The volume of the intersection of two regions."""
        c = min(self.c[1], other.c[1]) - max(self.c[0], other.c[0])
        if c <= 0:
            return 0
        h = min(self.h[1], other.h[1]) - max(self.h[0], other.h[0])
        if h <= 0:
            return 0
        w = min(self.w[1], other.w[1]) - max(self.w[0], other.w[0])
        return c * h * w if w > 0 else 0


EMPTY = Region((0, 0), (0, 0), (0, 0))


def whole(shape: tuple[int, int, int]) -> Region:
    return Region((0, shape[0]), (0, shape[1]), (0, shape[2]))


@dataclass(frozen=True, slots=True)
class LayerShape:
    """What splitting a layer needs (``meta.shape`` of a profiled layer)."""

    kind: str
    inp: tuple[int, int, int]
    out: tuple[int, int, int]
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    groups: int = 1

    @property
    def schemes(self) -> tuple[Scheme, ...]:
        """Schemes this layer may be split by (linear layers have no rows)."""
        return (Scheme.OUTC,) if self.kind == "linear" else tuple(Scheme)

    @property
    def per_channel(self) -> bool:
        """Output channel c reads input channel c only (pools, depthwise convs)."""
        return self.kind == "pool" or (self.kind == "conv" and self.groups == self.inp[0]
                                       == self.out[0])

    def needs(self, held: Region, layout: tuple[int, int, int]) -> Region:
        """The region of the input (laid out as ``layout``) that computing ``held`` reads."""
        if held.volume == 0:
            return EMPTY
        if self.kind == "elementwise":
            return held
        if self.kind == "linear":
            return whole(layout)
        channels = held.c if self.per_channel else (0, self.inp[0])
        return Region(channels, _halo(held.h, 0, self), _halo(held.w, 1, self))


def _halo(out: Interval, axis: int, shape: LayerShape) -> Interval:
    """Input rows (axis 0) or columns (1) that output rows (columns) ``out`` = [a, z) read:
    [a s - p, (z - 1) s - p + k), clipped to the input."""
    k, s, p, n = shape.kernel[axis], shape.stride[axis], shape.padding[axis], shape.inp[axis + 1]
    return max(0, out[0] * s - p), min(n, (out[1] - 1) * s - p + k)


def _triple(value: Any, path: str, size: int) -> tuple[int, ...]:
    if (not isinstance(value, list) or len(value) != size
            or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in value)):
        raise InputError(f"{path}: must be {size} non-negative integers, got {value!r}")
    return tuple(value)


def parse_shape(raw: Any, path: str) -> LayerShape:
    """A :class:`LayerShape` from ``meta.shape`` JSON; errors name ``path``."""
    if not isinstance(raw, Mapping) or raw.get("kind") not in SHAPE_KINDS:
        raise InputError(f"{path}.kind: must be one of {', '.join(SHAPE_KINDS)}")
    inp, out = (_triple(raw.get(key), f"{path}.{key}", 3) for key in ("in", "out"))
    pairs = {key: _triple(raw.get(key, default), f"{path}.{key}", 2)
             for key, default in (("kernel", [1, 1]), ("stride", [1, 1]), ("padding", [0, 0]))}
    groups = raw.get("groups", 1)
    if not isinstance(groups, int) or groups < 1:
        raise InputError(f"{path}.groups: must be a positive integer, got {groups!r}")
    return LayerShape(str(raw["kind"]), (inp[0], inp[1], inp[2]), (out[0], out[1], out[2]),
                      (pairs["kernel"][0], pairs["kernel"][1]),
                      (pairs["stride"][0], pairs["stride"][1]),
                      (pairs["padding"][0], pairs["padding"][1]), groups)


def layer_shapes(inst: Instance) -> tuple[LayerShape | None, ...]:
    """Every layer's shape (``None`` for a layer without ``meta.shape``: it cannot be split)."""
    return tuple(None if "shape" not in x.meta
                 else parse_shape(x.meta["shape"], f"model.layers[{v}].meta.shape")
                 for v, x in enumerate(inst.model.layers))


def proportional(total: int, weights: Sequence[float]) -> list[Interval]:
    """``total`` units cut into consecutive integer shares proportional to ``weights``
    (largest remainder; ties to the earlier device)."""
    norm = sum(weights)
    exact = [total * w / norm for w in weights]
    units = [math.floor(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - units[i]), i))
    for i in order[:total - sum(units)]:
        units[i] += 1
    return _consecutive(units)


def _consecutive(units: Sequence[int]) -> list[Interval]:
    out, at = [], 0
    for u in units:
        out.append((at, at + u))
        at += u
    return out


def balanced(total: int, parts: int) -> list[Interval]:
    """``total`` units in ``parts`` equal consecutive shares (the first ones one larger)."""
    return _consecutive([total // parts + (1 if i < total % parts else 0) for i in range(parts)])


def grid_shape(m: int) -> tuple[int, int]:
    """Rows x columns of the ``grid`` scheme for ``m`` devices: r the largest divisor <= sqrt(m)."""
    r = max(d for d in range(1, math.isqrt(m) + 1) if m % d == 0)
    return r, m // r


def _speeds(times: Sequence[float]) -> list[float]:
    """Share weights 1/t (a device with t = 0 gets everything it can: weight 1, others 0)."""
    if any(t == 0 for t in times):
        return [1.0 if t == 0 else 0.0 for t in times]
    return [1.0 / t for t in times]


class SplitGroup:
    """The split costs of one device group (``members[0]`` leads) on paths of layers.

    Built once per group; :meth:`stage` costs a whole split stage, and the exact solvers add up
    the same :meth:`entry`, :meth:`layer` and :meth:`exit` terms in the same order.
    """

    def __init__(self, inst: Instance, members: Sequence[int],
                 shapes: Sequence[LayerShape | None] | None = None) -> None:
        self.inst = inst
        self.members = tuple(members)
        self.shapes = tuple(layer_shapes(inst) if shapes is None else shapes)
        self._held: dict[tuple[int, Scheme], list[Region]] = {}
        self._into: dict[tuple[int, int, int, int, Scheme, Scheme], tuple[float, list[float]]] = {}
        self._compute: dict[tuple[int, int, Scheme], float] = {}
        self._exit: dict[tuple[int, int, Scheme], float] = {}

    def shape(self, v: int) -> LayerShape:
        shape = self.shapes[v]
        if shape is None:
            raise InputError(f"layer '{self.inst.model.layers[v].id}': has no meta.shape, so it "
                             "can run only on one device or replicated, not split")
        return shape

    def held(self, anchor: int, scheme: Scheme) -> list[Region]:
        """Each device's region of the output of ``anchor`` (the layer that fixed the scheme)."""
        key = (anchor, scheme)
        if key not in self._held:
            self._held[key] = self._regions(anchor, scheme)
        return self._held[key]

    def _regions(self, v: int, scheme: Scheme) -> list[Region]:
        c, h, w = self.shape(v).out
        full_c, full_h, full_w = (0, c), (0, h), (0, w)
        speeds = _speeds([self.inst.times[v][d] for d in self.members])
        if scheme is Scheme.OUTC:
            return [Region(x, full_h, full_w) for x in proportional(c, speeds)]
        if scheme is Scheme.ROWS:
            return [Region(full_c, x, full_w) for x in proportional(h, speeds)]
        r, k = grid_shape(len(self.members))
        return [Region(full_c, rows, cols) for rows in balanced(h, r) for cols in balanced(w, k)]

    def compute_share(self, v: int, anchor: int, scheme: Scheme) -> float:
        """:meth:`compute` of layer v on the regions of ``anchor`` in ``scheme`` (memoised)."""
        key = (v, anchor, scheme)
        if key not in self._compute:
            self._compute[key] = self.compute(v, self.held(anchor, scheme))
        return self._compute[key]

    def compute(self, v: int, held: Sequence[Region]) -> float:
        """The slowest device's share of layer v: max_i t(v, i) |R_i| / |R|."""
        total = sum(x.volume for x in held)
        if total == 0:
            return 0.0
        return max(self.inst.times[v][d] * x.volume / total for d, x in zip(self.members, held,
                                                                              strict=True))

    def exchange(self, held: Sequence[Region], needed: Sequence[Region], elem_bytes: float
                 ) -> tuple[float, list[float]]:
        """Seconds of one redistribution (the busiest device's serial sends or receives) and the
        bytes each device receives."""
        m = len(self.members)
        recv_t, send_t, recv_b = [0.0] * m, [0.0] * m, [0.0] * m
        for j in range(m):
            for i in range(m):
                nbytes = held[i].overlap(needed[j]) * elem_bytes if i != j else 0.0
                if nbytes > 0:
                    t = self.inst.transfer_time(self.members[i], self.members[j], nbytes)
                    recv_t[j] += t
                    send_t[i] += t
                    recv_b[j] += nbytes
        return max(max(recv_t), max(send_t)), recv_b

    def _lead_only(self, region: Region) -> list[Region]:
        return [region] + [EMPTY] * (len(self.members) - 1)

    def entry(self, v: int, scheme: Scheme, in_bytes: float) -> tuple[float, list[float]]:
        """The lead scatters the stage input (``in_bytes``) to what layer v, first, reads."""
        shape = self.shape(v)
        held = self.held(v, scheme)
        needed = [shape.needs(x, shape.inp) for x in held]
        return self.exchange(self._lead_only(whole(shape.inp)), needed,
                             _per_element(in_bytes, shape.inp))

    def into(self, u: int, anchor_u: int, v: int, anchor_v: int, scheme_u: Scheme,
             scheme_v: Scheme) -> tuple[float, list[float]]:
        """Redistribution of u's output (regions fixed at ``anchor_u``) into layer v (memoised)."""
        key = (u, anchor_u, v, anchor_v, scheme_u, scheme_v)
        if key not in self._into:
            self._into[key] = self._redistribute(u, anchor_u, v, anchor_v, scheme_u, scheme_v)
        return self._into[key]

    def _redistribute(self, u: int, anchor_u: int, v: int, anchor_v: int, scheme_u: Scheme,
                      scheme_v: Scheme) -> tuple[float, list[float]]:
        shape_v = self.shape(v)
        layout = self.shape(u).out
        needed = [shape_v.needs(x, layout) for x in self.held(anchor_v, scheme_v)]
        return self.exchange(self.held(anchor_u, scheme_u), needed,
                             _per_element(self.inst.model.tensor_bytes[u], layout))

    def exit(self, v: int, anchor: int, scheme: Scheme) -> float:
        """The lead gathers the output of the stage's last layer v (memoised)."""
        key = (v, anchor, scheme)
        if key not in self._exit:
            self._exit[key] = self._gather(v, anchor, scheme)
        return self._exit[key]

    def _gather(self, v: int, anchor: int, scheme: Scheme) -> float:
        layout = self.shape(v).out
        return self.exchange(self.held(anchor, scheme), self._lead_only(whole(layout)),
                             _per_element(self.inst.model.tensor_bytes[v], layout))[0]

    def anchors(self, layers: Sequence[int]) -> list[int]:
        """For each layer of a stage, the layer whose scheme and regions it has: itself, or for
        an elementwise layer after the first, its producer's anchor."""
        out: list[int] = []
        for pos, v in enumerate(layers):
            inherits = pos > 0 and self.shape(v).kind == "elementwise"
            out.append(out[-1] if inherits else v)
        return out

    def stage(self, layers: Sequence[int], schemes: Mapping[int, Scheme], in_bytes: float
              ) -> SplitCost:
        """Cost of running the path ``layers`` (in order, see :func:`split_path_problem`) split
        over the group; ``in_bytes``: the tensor the first layer reads
        (:func:`split_input_bytes`)."""
        anchors = self.anchors(layers)
        scheme = [schemes[a] for a in anchors]
        time, recv = self.entry(layers[0], scheme[0], in_bytes)
        peaks = [[0.0] * len(self.members)]
        for pos, v in enumerate(layers):
            if pos > 0:
                t, recv = self.into(layers[pos - 1], anchors[pos - 1], v, anchors[pos],
                                    scheme[pos - 1], scheme[pos])
                time += t
            time += self.compute_share(v, anchors[pos], scheme[pos])
            peaks.append(self.layer_memory(v, anchors[pos], scheme[pos], recv))
        time += self.exit(layers[-1], anchors[-1], scheme[-1])
        params = [sum(self.weights(v, anchors[p], scheme[p])[i] for p, v in enumerate(layers))
                  for i in range(len(self.members))]
        memory = tuple(params[i] + max(peak[i] for peak in peaks)
                       for i in range(len(self.members)))
        return SplitCost(time, memory)

    def _fractions(self, anchor: int, scheme: Scheme) -> list[float]:
        held = self.held(anchor, scheme)
        total = sum(x.volume for x in held)
        return [x.volume / total if total else 0.0 for x in held]

    def weights(self, v: int, anchor: int, scheme: Scheme) -> list[float]:
        """Parameter bytes device i holds for v: a slice under outc, all of them otherwise."""
        p = self.inst.model.layers[v].param_bytes
        if scheme is not Scheme.OUTC:
            return [p] * len(self.members)
        return [p * f for f in self._fractions(anchor, scheme)]

    def layer_memory(self, v: int, anchor: int, scheme: Scheme, recv: Sequence[float]
                     ) -> list[float]:
        """Device i's working set for layer v: its share of v's plus the bytes it received."""
        work = self.inst.model.layers[v].work_bytes
        return [work * f + r for f, r in zip(self._fractions(anchor, scheme), recv, strict=True)]


@dataclass(frozen=True, slots=True)
class SplitCost:
    time_s: float
    member_memory_bytes: tuple[float, ...]


def _per_element(nbytes: float, shape: tuple[int, int, int]) -> float:
    n = math.prod(shape)
    return nbytes / n if n else 0.0


# ---------------------------------------------------------------------------------------------
# The evaluator
# ---------------------------------------------------------------------------------------------

PerMember = list[list[float]]


@dataclass(frozen=True)
class _Ctx:
    """What every stage's costing reads: the instance, the layer -> stage map and the
    transfers per stage slot (0 the source, b + 1 stage b, k + 1 the sink) and end device."""

    inst: Instance
    sigma: list[int]
    recv: PerMember
    send: PerMember
    recv_b: PerMember
    send_b: PerMember

    @cached_property
    def shapes(self) -> tuple[LayerShape | None, ...]:
        return layer_shapes(self.inst)

    def combine(self) -> Callable[[float, float, float], float]:
        return max if self.inst.cost_model.overlap else _sum3

    @cached_property
    def by_stage(self) -> list[list[int]]:
        out: list[list[int]] = [[] for _ in range(len(self.recv) - 2)]
        for v, b in enumerate(self.sigma):
            out[b].append(v)
        return out

    def layers(self, b: int) -> list[int]:
        return self.by_stage[b]


def evaluate(inst: Instance, plan: Plan) -> Metrics:
    """Cost of a structurally valid plan (see :func:`validate_plan`) under the cost model."""
    sigma = plan.stage_of(inst)
    k = len(plan.stages)
    ends = [[inst.source_index], *(_ends(inst, st) for st in plan.stages), [inst.sink_index]]
    flows = _flows(inst, sigma, k)
    ctx = _Ctx(inst, sigma, *_transfers(inst, flows, ends, k))
    cost = {Mode.SINGLE: _single, Mode.REPLICATE: _replicate, Mode.SPLIT: _split}
    stages = tuple(cost[st.mode](ctx, b, st) for b, st in enumerate(plan.stages))
    source_send, sink_recv = ctx.send[0][0], ctx.recv[k + 1][0]
    bottleneck = max([*(st.time_s for st in stages), source_send, sink_recv])
    latency = sum(st.latency_s for st in stages) + sink_recv
    return Metrics(stages, bottleneck, latency, source_send, sink_recv)


def _ends(inst: Instance, st: Stage) -> list[int | None]:
    """The devices that send and receive the stage's boundary messages."""
    if st.mode is Mode.REPLICATE:
        return [inst.device_index[d] for d in st.members]
    return [inst.device_index[st.device]]


def _single(ctx: _Ctx, b: int, st: Stage) -> StageMetrics:
    d = ctx.inst.device_index[st.device]
    times = ctx.inst.times
    compute = sum(times[v][d] for v in ctx.layers(b))
    recv, send = ctx.recv[b + 1][0], ctx.send[b + 1][0]
    memory = _memory(ctx.inst, ctx.layers(b)) + ctx.recv_b[b + 1][0] + ctx.send_b[b + 1][0]
    return StageMetrics(st.device, st.layers, compute, recv, send,
                        ctx.combine()(recv, compute, send), memory, ctx.recv_b[b + 1][0],
                        ctx.send_b[b + 1][0], recv + compute)


def member_compute_s(inst: Instance, layers: Sequence[str], device: str) -> float:
    """Compute of ``layers`` on ``device`` alone: a single stage's, or one replica's (summed in
    the model's layer order, as :func:`evaluate` does)."""
    d = inst.device_index[device]
    return sum(inst.times[v][d] for v in sorted(inst.model.index[lid] for lid in layers))


def _replicate(ctx: _Ctx, b: int, st: Stage) -> StageMetrics:
    """Replicas serve requests in proportion to their rates: period 1 / sum_r (1 / T_r)."""
    members = [ctx.inst.device_index[d] for d in st.members]
    layers = ctx.layers(b)
    compute = [member_compute_s(ctx.inst, st.layers, d) for d in st.members]
    recv, send = ctx.recv[b + 1], ctx.send[b + 1]
    own = [ctx.combine()(recv[r], compute[r], send[r]) for r in range(len(members))]
    period = 0.0 if min(own) == 0 else 1.0 / sum(1.0 / t for t in own)
    base = _memory(ctx.inst, layers)
    memory = tuple(base + ctx.recv_b[b + 1][r] + ctx.send_b[b + 1][r] for r in range(len(members)))
    return StageMetrics(st.device, st.layers, max(compute), max(recv), max(send), period,
                        max(memory), max(ctx.recv_b[b + 1]), max(ctx.send_b[b + 1]),
                        max(recv[r] + compute[r] for r in range(len(members))), Mode.REPLICATE,
                        st.members, memory)


def _split(ctx: _Ctx, b: int, st: Stage) -> StageMetrics:
    inst = ctx.inst
    layers = ctx.layers(b)
    order = split_order(inst, st)
    group = SplitGroup(inst, order, ctx.shapes)
    schemes = {inst.model.index[lid]: s for lid, s in st.schemes}
    cost = group.stage(layers, schemes, split_input_bytes(inst, layers[0]))
    recv, send = ctx.recv[b + 1][0], ctx.send[b + 1][0]
    buffers = ctx.recv_b[b + 1][0] + ctx.send_b[b + 1][0]
    memory = (cost.member_memory_bytes[0] + buffers, *cost.member_memory_bytes[1:])
    return StageMetrics(st.device, st.layers, cost.time_s, recv, send,
                        ctx.combine()(recv, cost.time_s, send), max(memory),
                        ctx.recv_b[b + 1][0], ctx.send_b[b + 1][0], recv + cost.time_s,
                        Mode.SPLIT, tuple(inst.devices[d].id for d in order), memory, st.schemes)


def split_order(inst: Instance, st: Stage) -> list[int]:
    """A split group's devices in the order its slices go to: the lead (first in the plan)
    first, then the others in the instance's device order (whatever their order in the plan)."""
    lead = inst.device_index[st.devices[0]]
    return [lead, *sorted(inst.device_index[d] for d in st.devices[1:])]


def split_input_bytes(inst: Instance, v: int) -> float:
    """Bytes of the one tensor layer v, first of a split path, reads (the request input for an
    entry layer): what the lead scatters."""
    pred = inst.model.pred[v]
    return inst.model.tensor_bytes[pred[0]] if pred else inst.model.input_bytes


def _sum3(a: float, b: float, c: float) -> float:
    return a + b + c


def _memory(inst: Instance, stage_layers: list[int]) -> float:
    layers = [inst.model.layers[v] for v in stage_layers]
    return sum(x.param_bytes for x in layers) + max((x.work_bytes for x in layers), default=0.0)


def _flows(inst: Instance, sigma: list[int], k: int) -> list[tuple[int, float, list[int]]]:
    """Every tensor as (producer stage, bytes, consumer stages); stage -1 source, k sink."""
    g = inst.model
    flows = []
    for u, succ in enumerate(g.succ):
        consumers = [sigma[w] for w in succ]
        if not succ and inst.sink is not None:
            consumers.append(k)
        if consumers:
            flows.append((sigma[u], g.tensor_bytes[u], consumers))
    if inst.source is not None:
        flows.append((-1, g.input_bytes, [sigma[v] for v in g.entries]))
    return flows


def _transfers(inst: Instance, flows: list[tuple[int, float, list[int]]],
               ends: list[list[int | None]], k: int
               ) -> tuple[PerMember, PerMember, PerMember, PerMember]:
    """Receive and send seconds and bytes per stage slot (b + 1 for stage b in -1..k) and per
    end device of the slot."""
    recv, send, recv_b, send_b = ([[0.0] * len(e) for e in ends] for _ in range(4))
    if inst.cost_model.transfer is Transfer.RELAY:
        boundary = [0.0] * (k + 1)  # boundary b + 1 sits between stage b and b + 1, b = -1..k-1
        for src, nbytes, consumers in flows:
            for b in range(src, max(consumers)):
                boundary[b + 1] += nbytes
        for b in range(-1, k):
            if (b + 1 > k - 1 and inst.sink is None) or (b < 0 and inst.source is None):
                continue
            senders, receivers = ends[b + 1], ends[b + 2]
            if senders == receivers:
                continue
            t = [[inst.transfer_time(s, r, boundary[b + 1]) for r in receivers] for s in senders]
            for i in range(len(senders)):
                send[b + 1][i] += max(t[i])
                send_b[b + 1][i] += boundary[b + 1]
            for j in range(len(receivers)):
                recv[b + 2][j] += max(row[j] for row in t)
                recv_b[b + 2][j] += boundary[b + 1]
        return recv, send, recv_b, send_b
    for src, nbytes, consumers in flows:  # direct transfers: single-device stages only
        slowest = 0.0
        sent = False
        for c in sorted(set(consumers) - {src}):
            if ends[src + 1] == ends[c + 1]:
                continue
            seconds = inst.transfer_time(ends[src + 1][0], ends[c + 1][0], nbytes)
            recv[c + 1][0] += seconds
            recv_b[c + 1][0] += nbytes
            slowest = max(slowest, seconds)
            sent = True
        send[src + 1][0] += slowest
        send_b[src + 1][0] += nbytes if sent else 0.0
    return recv, send, recv_b, send_b


# ---------------------------------------------------------------------------------------------
# The validator
# ---------------------------------------------------------------------------------------------


def validate_plan(inst: Instance, plan: Plan) -> list[str]:
    """Every way the plan breaks the instance's rules, one line each (empty: valid)."""
    problems = _structure(inst, plan)
    if problems:
        return problems
    problems = _group_problems(inst, plan)
    if problems:
        return problems
    sigma = plan.stage_of(inst)
    g = inst.model
    for u, succ in enumerate(g.succ):
        for w in succ:
            if sigma[w] < sigma[u]:
                problems.append(f"edge {g.layers[u].id} -> {g.layers[w].id} goes backwards "
                                f"(stage {sigma[u]} -> stage {sigma[w]})")
    for v, b in enumerate(sigma):
        for dev in plan.stages[b].members:
            d = inst.device_index[dev]
            if not inst.allowed(v, d):
                problems.append(f"layer '{g.layers[v].id}' may not run on device "
                                f"'{dev}' (class {inst.devices[d].cls})")
    for group in g.colocate:
        if len({sigma[g.index[lid]] for lid in group}) > 1:
            problems.append(f"colocate group {list(group)} is split across stages")
    if not problems:
        for b, st in enumerate(evaluate(inst, plan).stages):
            for dev, need in zip(st.devices or (st.device,),
                                 st.member_memory_bytes or (st.memory_bytes,), strict=True):
                cap = inst.devices[inst.device_index[dev]].memory_bytes
                if need > tolerated(cap):
                    problems.append(f"stage {b} needs {need:.0f} bytes on device "
                                    f"'{dev}' which has {cap:.0f}")
    return problems


def _structure(inst: Instance, plan: Plan) -> list[str]:
    problems = []
    seen: dict[str, int] = {}
    used: dict[str, int] = {}
    for b, st in enumerate(plan.stages):
        field_name = "device" if st.mode is Mode.SINGLE else "devices"
        for dev in st.members:
            if dev not in inst.device_index:
                problems.append(f"stages[{b}].{field_name}: unknown device id '{dev}'")
            elif dev in used:
                problems.append(f"stages[{b}].{field_name}: device '{dev}' already runs stage "
                                f"{used[dev]}")
            used.setdefault(dev, b)
        if not st.layers:
            problems.append(f"stages[{b}].layers: stage is empty")
        for lid in st.layers:
            if lid not in inst.model.index:
                problems.append(f"stages[{b}].layers: unknown layer id '{lid}'")
            elif lid in seen:
                problems.append(f"stages[{b}].layers: layer '{lid}' already in stage {seen[lid]}")
            seen.setdefault(lid, b)
    missing = [x.id for x in inst.model.layers if x.id not in seen]
    if missing:
        problems.append(f"stages: {len(missing)} layer(s) in no stage, e.g. '{missing[0]}'")
    if not plan.stages:
        problems.append("stages: plan has no stage")
    return problems


def _group_problems(inst: Instance, plan: Plan) -> list[str]:
    """What makes the plan's device groups impossible to cost (see the module docstring)."""
    groups = [b for b, st in enumerate(plan.stages) if st.is_group]
    if not groups:
        return []
    if inst.cost_model.transfer is not Transfer.RELAY:
        return [f"stages[{groups[0]}]: device groups need relay transfers "
                "(cost_model.transfer)"]
    problems = []
    for b in groups:
        st = plan.stages[b]
        if len(set(st.members)) < 2:
            problems.append(f"stages[{b}].devices: a group needs at least 2 distinct devices")
        if st.mode is Mode.SPLIT:
            problems += split_problems(inst, plan, b)
    return problems


def split_problems(inst: Instance, plan: Plan, b: int) -> list[str]:
    """Why split stage b cannot be costed: layers that are not a path of the model, a layer
    without a shape, a scheme the layer cannot take, a missing or contradicting scheme, shapes
    that do not chain."""
    st = plan.stages[b]
    layers = sorted(inst.model.index[lid] for lid in st.layers)
    not_a_path = split_path_problem(inst, layers)
    if not_a_path:
        return [f"stages[{b}]: {not_a_path}"]
    try:
        shapes = layer_shapes(inst)
    except InputError as err:
        return [str(err)]
    schemes = st.scheme_of
    problems = [f"stages[{b}].schemes.{lid}: not a layer of this stage" for lid in schemes
                if lid not in st.layers]
    for pos, v in enumerate(layers):
        layer = inst.model.layers[v]
        shape = shapes[v]
        if shape is None:
            problems.append(f"stages[{b}]: layer '{layer.id}' has no meta.shape, so it can run "
                            "only on one device or replicated, not split")
            continue
        problems += _scheme_problems(b, layer, shape, schemes.get(layer.id), pos == 0)
        if pos > 0:
            problems += _chain_problems(b, layer, shape, shapes[layers[pos - 1]])
    return problems


def split_path_problem(inst: Instance, layers: Sequence[int]) -> str:
    """Why ``layers`` (indices in topological order) cannot be one split stage ("" when they
    can): they must be a path whose first layer reads at most one tensor and whose every later
    layer reads only the layer before it, which no other layer reads (the module docstring)."""
    g = inst.model
    first = g.layers[layers[0]].id
    if len(g.pred[layers[0]]) > 1:
        return (f"layer '{first}' reads {len(g.pred[layers[0]])} tensors: a split stage "
                "starts at a layer that reads one")
    for u, v in pairwise(layers):
        if g.succ[u] != (v,) or g.pred[v] != (u,):
            return (f"layers '{g.layers[u].id}' and '{g.layers[v].id}' are not consecutive "
                    "on one path (a split stage holds no fork and no join)")
    return ""


def _scheme_problems(b: int, layer: Layer, shape: LayerShape, scheme: Scheme | None,
                     first: bool) -> list[str]:
    where = f"stages[{b}].schemes.{layer.id}"
    if shape.kind == "elementwise" and not first:
        return [] if scheme is None else [
            f"{where}: elementwise layers take their producer's scheme; leave it out"]
    if scheme is None:
        return [f"{where}: missing (one of {', '.join(s.value for s in shape.schemes)})"]
    if scheme not in shape.schemes:
        return [f"{where}: layer '{layer.id}' ({shape.kind}) cannot be split by {scheme.value}"]
    return []


def _chain_problems(b: int, layer: Layer, shape: LayerShape, producer: LayerShape | None
                    ) -> list[str]:
    if producer is None or reads_producer(shape, producer):
        return []
    return [f"stages[{b}]: layer '{layer.id}' reads shape {list(shape.inp)} but its producer "
            f"makes {list(producer.out)}"]


def reads_producer(shape: LayerShape, producer: LayerShape) -> bool:
    """A split layer reads what the layer before it in its stage makes (a linear layer: as many
    elements; an elementwise one keeps its shape), so the stage's regions chain."""
    fits = (math.prod(shape.inp) == math.prod(producer.out) if shape.kind == "linear"
            else shape.inp == producer.out)
    return fits and (shape.kind != "elementwise" or shape.inp == shape.out)


def lower_bound(inst: Instance, objective: str = "bottleneck") -> float:
    r"""A quick valid lower bound on the period (or, for ``objective="latency"``, on the latency:
    every layer's best time, summed).

    With :math:`w_v = \min_d t(v, d)` the best time of layer v, device d does at most
    :math:`s_d = \max_v w_v / t(v, d)` units of best-time work per second (so
    :math:`w_v \le s_d\, t(v, d)` for every layer it may run), hence
    :math:`\sum_v w_v \le \sum_d s_d C_d \le P \sum_d s_d`; and the slowest layer's best time
    bounds any stage holding it. Exact for speed-proportional times with free transfers.
    (A ``min`` instead of the ``max`` is not valid: a layer allowed on one device only made it
    exceed the optimum; see ``tests/test_cost.py``.)
    """
    times = inst.times
    best = [min(row) for row in times]
    if objective == "latency":
        return sum(best)
    speed = []
    for d in range(len(inst.devices)):
        ratios = [best[v] / times[v][d] for v in range(len(best))
                  if 0 < times[v][d] < math.inf]
        speed.append(max(ratios, default=1.0))
    total = sum(best)
    return max(max(best), total / sum(speed) if sum(speed) > 0 else 0.0)


def infeasibility_reasons(inst: Instance) -> list[str]:
    """Plain reasons why no plan can exist (each a proof on its own); empty when none is found.

    Checks that every layer, and every colocation group, fits alone on some device it may run on
    (parameters plus working set), and that no single layer is unsupported everywhere.
    """
    g = inst.model
    reasons = []
    groups = [tuple(g.index[x] for x in grp) for grp in g.colocate]
    grouped = {v for grp in groups for v in grp}
    units = groups + [(v,) for v in range(len(g.layers)) if v not in grouped]
    for unit in units:
        need = sum(g.layers[v].param_bytes for v in unit) + max(g.layers[v].work_bytes
                                                                 for v in unit)
        hosts = [d for d in range(len(inst.devices)) if all(inst.allowed(v, d) for v in unit)]
        what = (f"layer '{g.layers[unit[0]].id}'" if len(unit) == 1
                else f"colocate group starting '{g.layers[unit[0]].id}'")
        if not hosts:
            reasons.append(f"{what} may run on no single device")
        elif need > max(inst.devices[d].memory_bytes for d in hosts):
            best = max(inst.devices[d].memory_bytes for d in hosts)
            reasons.append(f"{what} needs {need:.0f} bytes but the largest device it may run on "
                           f"has {best:.0f}")
    return reasons
