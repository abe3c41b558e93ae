"""Neurosurgeon: the best single split of the layer order between a mobile device and a server.

Source: Y. Kang, J. Hauswald, C. Gao, A. Rovinski, T. Mudge, J. Mars, L. Tang, "Neurosurgeon:
Collaborative Intelligence Between the Cloud and Mobile Edge", ASPLOS 2017.

What it models: two devices, the *mobile* one where requests originate (our ``source``; without
one, the ``sink``; without either, the slowest device) and the *server* (the fastest other
device); one split point in the layer order, layers before it on the mobile device and the rest
on the server (either side may be empty); the split minimising end-to-end latency = mobile
compute + transfer of the tensors crossing the split + server compute (Neurosurgeon predicts
per-layer latencies with regression models; we use the instance's profiled times, i.e. perfect
predictions). What it ignores: every other device, pipelining (it optimises one request's
latency, not the period), and energy (its second objective). Splits that break memory or device
classes are skipped. The chosen plan is scored by the shared evaluator like every method.

References
----------
.. [1] Kang et al., ASPLOS 2017, Section 5 (partition point selection).
"""

from __future__ import annotations

import time

import numpy as np

from edgepart.instance import Instance
from edgepart.results import SolveResult
from edgepart.solvers.base import SolveOptions, register
from edgepart.solvers.heuristics.common import (
    RangeModel,
    RangePlan,
    device_speed,
    finish_heuristic,
)

__all__ = ["mobile_and_server", "solve_neurosurgeon"]


def mobile_and_server(inst: Instance) -> tuple[int, int]:
    """The mobile device (source, else sink, else slowest) and the fastest other device."""
    speed = device_speed(inst)
    ends = [e for e in (inst.source_index, inst.sink_index) if e is not None]
    mobile = ends[0] if ends else int(np.argmin(speed))
    others = [d for d in range(len(inst.devices)) if d != mobile] or [mobile]
    return mobile, max(others, key=lambda d: speed[d])


def _split(n: int, j: int, mobile: int, server: int) -> RangePlan:
    if j == 0 or mobile == server:
        return RangePlan((0, n), (server,))
    if j == n:
        return RangePlan((0, n), (mobile,))
    return RangePlan((0, j, n), (mobile, server))


@register("neurosurgeon")
def solve_neurosurgeon(inst: Instance, options: SolveOptions) -> SolveResult:
    """Try every split point of the layer order; keep the lowest-latency valid one."""
    start = time.perf_counter()
    rm = RangeModel(inst)
    mobile, server = mobile_and_server(inst)
    splits = [_split(rm.n, j, mobile, server) for j in range(rm.n + 1) if rm.cut_ok[j]]
    valid = [rp for rp in splits if rm.valid(rp)]
    best = min(valid, key=rm.latency, default=None)
    return finish_heuristic(
        inst, None if best is None else best.to_plan(inst), method="neurosurgeon",
        options=options, start=start,
        extra={"mobile": inst.devices[mobile].id, "server": inst.devices[server].id,
               "split_after": None if best is None or len(best.cuts) < 3
               else inst.model.layers[best.cuts[1] - 1].id})
