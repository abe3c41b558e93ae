"""The run report: measured next to predicted, per run and per stage, plus the host check.

All times are in *instance time*: wall seconds divided by ``time_scale``, so they compare with the
cost model's predictions directly. Throughput is measured between answers (the first
:func:`warmup` answers excluded), so pipeline fill does not count; latency is from a request's
first send to its answer, including queueing behind up to ``inflight - 1`` others (the
prediction is for an empty pipeline, so compare at ``--inflight 1``).
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from edgepart.cost import StageMetrics, member_compute_s
from edgepart.plan import Mode as PlanMode
from edgepart.runtime.emulate import Emulation, Mode
from edgepart.runtime.replan import best_single_device

if TYPE_CHECKING:
    from edgepart.runtime.driver import _Stream
    from edgepart.runtime.prepare import Prepared
    from edgepart.runtime.worker import Record

__all__ = ["KEEP_UP_SLACK", "STARVED_SHARE", "build_report", "keep_up", "rate", "warmup"]

KEEP_UP_SLACK = 1.25
"""The host did not keep up when a stage's compute exceeds the emulated time by more than this
factor (cgroup), or its real compute overran the padding target in over 20% of requests (pad)."""

STARVED_SHARE = 0.95
"""``stretch``: a stage whose real compute is at least this share of its emulated compute was
starved. A stretched compute idles until ``time_scale x CPU time / cpus``; its real part is that
much shorter while the thread gets ``cpus / time_scale`` of a core (real share ``cpus /
time_scale`` of the emulated time on a free core), and reaches the whole emulated time only
when the host gave the thread less, so that the wall time, not the CPU time, set the emulated
time. The 5% margin absorbs the idle's own timer slack."""


def warmup(count: int) -> int:
    """Answers (or stage records) left out of averages as warm-up."""
    return min(count // 10, 5)


def rate(times: Sequence[float]) -> float:
    """Answers per second between sorted completion ``times`` (warm-up excluded)."""
    w = warmup(len(times))
    if len(times) - w < 2 or times[-1] <= times[w]:
        return math.nan
    return (len(times) - 1 - w) / (times[-1] - times[w])


def build_report(prep: Prepared, stream: _Stream) -> dict[str, Any]:
    """The report of a finished run (``--json`` prints it)."""
    scale = prep.emulation.time_scale
    first = stream.deployments[0].metrics
    done = sorted(stream.done.values())
    latencies = [(stream.done[r] - stream.sent[r]) / scale for r in stream.done]
    device, period = best_single_device(prep.inst)
    throughput = rate(done) * scale
    stages = _stages(prep, stream)
    out: dict[str, Any] = {
        "requests": prep.options.requests, "completed": len(stream.done),
        "mismatches": stream.mismatches, "duplicates_dropped": stream.duplicates,
        "answers_out_of_order": stream.out_of_order,
        "throughput_per_s": throughput, "predicted_throughput_per_s": first.throughput_per_s,
        "latency_p50_s": _quantile(latencies, 0.5), "latency_p95_s": _quantile(latencies, 0.95),
        "predicted_latency_s": first.latency_s,
        "single_device": device, "single_device_throughput_per_s": 1 / period,
        "speedup_vs_single_device": throughput * period,
        "predicted_speedup_vs_single_device": period / first.bottleneck_s,
        "emulate": prep.emulation.mode.value, "time_scale": scale,
        "inflight": prep.inflight, "host_cpus": prep.cpus,
        "wall_s": (done[-1] - min(stream.sent[r] for r in stream.done)) if done else 0.0,
        "stages": stages,
        "final_plan": stream.plan.to_dict(),
        "deployments": [_deployment(d) for d in stream.deployments],
        "failures": len(stream.failures),
        "replans": sum(d.reason.startswith("failure") for d in stream.deployments),
        "recovery_s": max((f["recovery_s"] or 0.0 for f in stream.failures), default=None),
        "failure_events": [{k: v for k, v in f.items() if k != "noticed"}
                           for f in stream.failures],
        "adaptations": [_adaptation(a, stream) for a in stream.adaptations],
    }
    out["hop_transport_s"] = _mean_finite(s["transport_s"] for s in stages)
    late = keep_up(prep.emulation, stages)
    out["host_keeps_up"] = not late
    out["suggested_time_scale"] = max(late.values(), default=None)
    out["warnings"] = [*prep.warnings, *late, *_shortfall(prep, out)]
    return out


def _quantile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def _stages(prep: Prepared, stream: _Stream) -> list[dict[str, Any]]:
    """Measured next to predicted, per stage of the last deployment."""
    epoch = stream.deployments[-1].epoch
    rows: list[dict[str, Any]] = []
    for st in stream.targets.stages:
        row = _device_row(prep, stream, epoch, (len(rows), st), st.device)
        row.update({"predicted_transfer_s": st.send_s, "predicted_receive_s": st.recv_s})
        if st.devices:  # a group: its mode, and each replica's answered requests
            row.update(mode=st.mode.value, devices=list(st.devices))
        if st.mode is PlanMode.REPLICATE:
            row["replica_requests"] = {d: stream.served[d] for d in st.devices}
            row["replicas"] = [_device_row(prep, stream, epoch, (len(rows), st), d)
                               for d in st.devices]
        rows.append(row)
    return rows


def _device_row(prep: Prepared, stream: _Stream, epoch: int, stage: tuple[int, StageMetrics],
                device: str) -> dict[str, Any]:
    """One device of stage ``stage`` (its index and metrics), measured against its own
    prediction: a replica's compute is its own (the stage's row is its first replica's), a split
    stage's the group's."""
    b, st = stage
    recs = sorted(stream.cluster.records(stream.cluster.ranks[device], epoch),
                  key=lambda r: r.started)
    predicted = (member_compute_s(prep.inst, st.layers, device)
                 if st.mode is PlanMode.REPLICATE else st.compute_s)
    pad = predicted if prep.emulation.mode is Mode.PAD else None
    return {"stage": b, "device": device, "layers": len(st.layers), "requests": len(recs),
            **_measured(recs[warmup(len(recs)):], prep.emulation.time_scale, pad),
            "predicted_compute_s": predicted}


def _measured(recs: Sequence[Record], scale: float, pad_s: float | None) -> dict[str, Any]:
    """Means over a stage's records, in instance time; ``late_share``: the share of requests
    whose real compute overran the padding target ``pad_s``."""
    if not recs:
        return dict.fromkeys(("compute_s", "real_compute_s", "real_compute_min_s", "transfer_s",
                              "transport_s", "idle_s", "message_bytes", "late_share"), math.nan)
    gaps = [b.started - a.finished for a, b in itertools.pairwise(recs)]
    real = [(r.computed - r.started) / scale for r in recs]
    return {
        "compute_s": statistics.fmean(r.finished - r.started for r in recs) / scale,
        "real_compute_s": statistics.fmean(real),
        "real_compute_min_s": min(real),
        "transfer_s": statistics.fmean(r.held + r.delivered - r.sent for r in recs) / scale,
        "transport_s": statistics.fmean(r.delivered - r.sent for r in recs) / scale,
        "idle_s": statistics.fmean(gaps) / scale if gaps else 0.0,
        "message_bytes": statistics.fmean(r.nbytes for r in recs),
        "late_share": statistics.fmean(t > 1.02 * pad_s for t in real) if pad_s else 0.0,
    }


def keep_up(emulation: Emulation, stages: Sequence[dict[str, Any]]) -> dict[str, float]:
    """A warning for each stage (a report's ``stages`` row) this host could not emulate
    faithfully (see :data:`KEEP_UP_SLACK` and :data:`STARVED_SHARE`), with the time scale that
    would leave 20% to spare.

    A split stage is not checked under ``stretch``: its row is its lead's, whose real compute
    holds the waits for the helpers' stretched slices and the lead's own, so it is close to the
    emulated time whether or not the host starved anyone."""
    scale, mode, out = emulation.time_scale, emulation.mode, {}
    for row in [r for stage in stages for r in stage.get("replicas", [stage])]:
        if not row["predicted_compute_s"] > 0:
            continue
        ratio = row["real_compute_s"] / row["predicted_compute_s"]
        starved = (mode is Mode.STRETCH and row.get("mode") != PlanMode.SPLIT.value
                   and row["real_compute_s"] >= STARVED_SHARE * row["compute_s"])
        if ((mode is Mode.PAD and row["late_share"] > 0.2)
                or (mode is Mode.CGROUP and ratio > KEEP_UP_SLACK) or starved):
            suggested = math.ceil(scale * max(ratio, 1.1) * 12) / 10
            out[_starved(row, suggested) if starved else _late(row, suggested)] = suggested
    return out


def _shortfall(prep: Prepared, report: dict[str, Any]) -> list[str]:
    """A warning when an emulated run is over 10% slower than predicted, naming the busiest
    stage's measured and predicted times."""
    measured, predicted = report["throughput_per_s"], report["predicted_throughput_per_s"]
    if prep.emulation.mode is Mode.NONE or not measured < 0.9 * predicted or not report["stages"]:
        return []
    s = max(report["stages"], key=lambda row: max(row["compute_s"], row["transfer_s"]))
    return [f"measured throughput {measured:.3g}/s is {1 - measured / predicted:.0%} below the "
            f"prediction; busiest: stage {s['stage']} on '{s['device']}', compute "
            f"{s['compute_s'] * 1e3:.2f} ms (predicted {s['predicted_compute_s'] * 1e3:.2f}), "
            f"transfer {s['transfer_s'] * 1e3:.2f} ms (predicted "
            f"{s['predicted_transfer_s'] * 1e3:.2f}, real transport "
            f"{s['transport_s'] * 1e3:.2f})"]


def _mean_finite(values: Iterable[float]) -> float:
    kept = [v for v in values if math.isfinite(v)]
    return statistics.fmean(kept) if kept else math.nan


def _late(row: dict[str, Any], suggested: float) -> str:
    return (f"host cannot keep up: stage {row['stage']} on '{row['device']}' computes in "
            f"{row['real_compute_s'] * 1e3:.1f} ms real time for "
            f"{row['predicted_compute_s'] * 1e3:.1f} ms emulated; rerun with --time-scale "
            f"{suggested:g}")


def _starved(row: dict[str, Any], suggested: float) -> str:
    return (f"host cannot keep up: stage {row['stage']} on '{row['device']}' was starved: its "
            f"real compute, {row['real_compute_s'] * 1e3:.1f} ms, is "
            f"{row['real_compute_s'] / row['compute_s']:.0%} of its emulated "
            f"{row['compute_s'] * 1e3:.1f} ms, so the host, not its CPU time, set its speed; "
            f"rerun with --time-scale {suggested:g}")


def _deployment(d: Any) -> dict[str, Any]:
    return {"epoch": d.epoch, "reason": d.reason, "method": d.plan.method,
            "devices": [st.device for st in d.plan.stages],
            "predicted_throughput_per_s": d.metrics.throughput_per_s,
            "predicted_latency_s": d.metrics.latency_s, "deploy_s": d.deploy_s}


def _adaptation(a: dict[str, Any], stream: _Stream) -> dict[str, Any]:
    """An adaptation with the measured throughput after it (after the switch, if it switched)."""
    since = a.get("switched_at", a["detected_at"])
    after = sorted(t for t in stream.done.values() if t > since)
    out = {k: v for k, v in a.items() if k not in ("detected_at", "switched_at")}
    out["throughput_after_per_s"] = rate(after) * stream.prep.emulation.time_scale
    return out
