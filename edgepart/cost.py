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
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from edgepart.instance import Instance, Transfer
from edgepart.plan import Plan

__all__ = [
    "Metrics", "StageMetrics", "evaluate", "infeasibility_reasons", "lower_bound", "tolerated",
    "validate_plan",
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

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "first_layer": self.layers[0] if self.layers else None,
                "last_layer": self.layers[-1] if self.layers else None,
                "layers": len(self.layers), "layer_ids": list(self.layers),
                "compute_s": self.compute_s, "transfer_in_s": self.recv_s,
                "transfer_out_s": self.send_s, "time_s": self.time_s,
                "memory_bytes": self.memory_bytes}


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


def evaluate(inst: Instance, plan: Plan) -> Metrics:
    """Cost of a structurally valid plan (see :func:`validate_plan`) under the cost model."""
    sigma = plan.stage_of(inst)
    dev = plan.devices(inst)
    k = len(plan.stages)
    ends = [inst.source_index, *dev, inst.sink_index]  # ends[b + 1] is stage b's device
    times = inst.times
    compute = [0.0] * k
    for v, b in enumerate(sigma):
        compute[b] += times[v][dev[b]]
    flows = _flows(inst, sigma, k)
    recv, send, recv_b, send_b = _transfers(inst, flows, ends, k)
    stage_time = [
        (max if inst.cost_model.overlap else _sum3)(recv[b], compute[b], send[b]) for b in range(k)
    ]
    stages = tuple(
        StageMetrics(plan.stages[b].device, plan.stages[b].layers, compute[b], recv[b], send[b],
                     stage_time[b], _memory(inst, sigma, b) + recv_b[b] + send_b[b],
                     recv_b[b], send_b[b])
        for b in range(k)
    )
    source_send, sink_recv = send[-1], recv[k]
    bottleneck = max([*stage_time, source_send, sink_recv])
    latency = sum(recv[b] + compute[b] for b in range(k)) + sink_recv
    return Metrics(stages, bottleneck, latency, source_send, sink_recv)


def _sum3(a: float, b: float, c: float) -> float:
    return a + b + c


def _memory(inst: Instance, sigma: list[int], b: int) -> float:
    layers = [inst.model.layers[v] for v, s in enumerate(sigma) if s == b]
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


def _transfers(inst: Instance, flows: list[tuple[int, float, list[int]]], ends: list[int | None],
               k: int) -> tuple[list[float], list[float], list[float], list[float]]:
    """Per stage b in -1..k (index b works for -1 via Python's last element): receive and send
    seconds and bytes."""
    recv, send = [0.0] * (k + 2), [0.0] * (k + 2)
    recv_b, send_b = [0.0] * (k + 2), [0.0] * (k + 2)
    if inst.cost_model.transfer is Transfer.RELAY:
        boundary = [0.0] * (k + 1)  # boundary b + 1 sits between stage b and b + 1, b = -1..k-1
        for src, nbytes, consumers in flows:
            for b in range(src, max(consumers)):
                boundary[b + 1] += nbytes
        for b in range(-1, k):
            if (b + 1 > k - 1 and inst.sink is None) or (b < 0 and inst.source is None):
                continue
            if ends[b + 1] == ends[b + 2]:
                continue
            t = inst.transfer_time(ends[b + 1], ends[b + 2], boundary[b + 1])
            send[b] += t
            recv[b + 1] += t
            send_b[b] += boundary[b + 1]
            recv_b[b + 1] += boundary[b + 1]
        return recv, send, recv_b, send_b
    for src, nbytes, consumers in flows:
        slowest = 0.0
        sent = False
        for c in sorted(set(consumers) - {src}):
            if ends[src + 1] == ends[c + 1]:
                continue
            t = inst.transfer_time(ends[src + 1], ends[c + 1], nbytes)
            recv[c] += t
            recv_b[c] += nbytes
            slowest = max(slowest, t)
            sent = True
        send[src] += slowest
        send_b[src] += nbytes if sent else 0.0
    return recv, send, recv_b, send_b


def validate_plan(inst: Instance, plan: Plan) -> list[str]:
    """Every way the plan breaks the instance's rules, one line each (empty: valid)."""
    problems = _structure(inst, plan)
    if problems:
        return problems
    sigma = plan.stage_of(inst)
    dev = plan.devices(inst)
    g = inst.model
    for u, succ in enumerate(g.succ):
        for w in succ:
            if sigma[w] < sigma[u]:
                problems.append(f"edge {g.layers[u].id} -> {g.layers[w].id} goes backwards "
                                f"(stage {sigma[u]} -> stage {sigma[w]})")
    for v, b in enumerate(sigma):
        if not inst.allowed(v, dev[b]):
            problems.append(f"layer '{g.layers[v].id}' may not run on device "
                            f"'{inst.devices[dev[b]].id}' (class {inst.devices[dev[b]].cls})")
    for group in g.colocate:
        if len({sigma[g.index[lid]] for lid in group}) > 1:
            problems.append(f"colocate group {list(group)} is split across stages")
    if not problems:
        for b, st in enumerate(evaluate(inst, plan).stages):
            cap = inst.devices[dev[b]].memory_bytes
            if st.memory_bytes > tolerated(cap):
                problems.append(f"stage {b} needs {st.memory_bytes:.0f} bytes on device "
                                f"'{st.device}' which has {cap:.0f}")
    return problems


def _structure(inst: Instance, plan: Plan) -> list[str]:
    problems = []
    seen: dict[str, int] = {}
    used: dict[str, int] = {}
    for b, st in enumerate(plan.stages):
        if st.device not in inst.device_index:
            problems.append(f"stages[{b}].device: unknown device id '{st.device}'")
        elif st.device in used:
            problems.append(f"stages[{b}].device: device '{st.device}' already runs stage "
                            f"{used[st.device]}")
        used.setdefault(st.device, b)
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
