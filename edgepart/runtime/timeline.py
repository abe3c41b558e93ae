"""Measured stage activity against the predicted schedule: what ``edgepart run --timeline`` draws.

Each worker records, per request it serves (:class:`~edgepart.runtime.worker.Record`), when its
compute started, when the real compute ended, when the padded or slowed compute ended
(``finished``), and when the transport acknowledged its outgoing message (``delivered``); the
driver's source records the same for each message into the first stage (:data:`SourceSend`).
From those, for stage ``b`` and request ``r`` of one deployment, in instance time (wall seconds
/ ``time_scale``) from the first interval shown:

* ``receive``: the message into stage ``b`` occupying its link: from when its sender was ready
  to send it (stage ``b - 1``'s ``finished``; for stage 0, when the source took the request up)
  to its acknowledgement. This is the cost model's ``recv_s`` of stage ``b`` (link hold plus
  real transport); it is also stage ``b - 1``'s send;
* ``compute``: ``started`` to the end of the real compute;
* ``pad``: from there to ``finished`` (padding, or an injected slowdown; none without emulation);
* ``send``: the last stage's message to the driver (the sink), ``finished`` to ``delivered``.

The gap between a receive's end and the compute's start is queueing at the stage. The worker
clocks are ``time.perf_counter``, which is the system-wide monotonic clock on Linux, so the
stages of one host line up; workers on other machines have their own clocks and are drawn each
from their own origin, which :func:`measured_intervals` cannot correct (it says so with
``aligned``).

:func:`save_timeline` draws these intervals above the cost model's schedule of as many requests
(:func:`edgepart.plots.plot_timeline`), on the same time axis, and returns what it drew.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from edgepart.runtime.report import warmup

if TYPE_CHECKING:
    from edgepart.instance import Instance
    from edgepart.plan import Plan
    from edgepart.runtime.worker import Record

__all__ = ["SHARED_AXIS_RATIO", "SHOWN_REQUESTS", "Interval", "Kind", "SourceSend",
           "measured_intervals", "save_timeline"]

SHOWN_REQUESTS = 6
"""Requests drawn: enough to see the pipeline's steady state, few enough to read each bar."""

SHARED_AXIS_RATIO = 4.0
"""Measured and predicted panels share a time axis while the measured span is at most this many
times the predicted one."""

SourceSend = tuple[int, int, float, float]
"""(epoch, request, taken up, acknowledged): one message from the driver to the first stage."""


class Kind(StrEnum):
    RECEIVE = "receive"
    COMPUTE = "compute"
    PAD = "pad"
    SEND = "send"


@dataclass(frozen=True, slots=True)
class Interval:
    """Stage ``stage`` (on ``device``) doing ``kind`` for ``request`` from ``start_s`` to
    ``end_s`` (instance seconds from the first interval shown)."""

    stage: int
    device: str
    request: int
    kind: Kind
    start_s: float
    end_s: float


def measured_intervals(devices: Sequence[str], records: Sequence[Sequence[Record]],
                       source: Sequence[SourceSend], epoch: int, time_scale: float,
                       requests: int = SHOWN_REQUESTS) -> list[Interval]:
    """The intervals of ``requests`` requests of deployment ``epoch`` that every stage served,
    after the warm-up ones (:func:`~edgepart.runtime.report.warmup`); ``records[b]`` are stage
    ``b``'s records (on ``devices[b]``), ``source`` the driver's sends."""
    by_stage = [{r.request: r for r in recs if r.epoch == epoch} for recs in records]
    sends = {request: (start, end) for e, request, start, end in source if e == epoch}
    served = sorted(r for r in set(sends).intersection(*by_stage) if r >= 0)
    chosen = served[warmup(len(served)):][:requests]
    raw: list[tuple[int, int, Kind, float, float]] = []
    for request in chosen:
        ready, acknowledged = sends[request]
        for b, stage in enumerate(by_stage):
            rec = stage[request]
            raw += [(b, request, Kind.RECEIVE, ready, acknowledged),
                    (b, request, Kind.COMPUTE, rec.started, rec.computed)]
            if rec.finished > rec.computed:
                raw.append((b, request, Kind.PAD, rec.computed, rec.finished))
            ready, acknowledged = rec.finished, rec.delivered
        raw.append((len(by_stage) - 1, request, Kind.SEND, ready, acknowledged))
    origin = min((start for *_, start, _ in raw), default=0.0)
    return [Interval(b, devices[b], request, kind, (start - origin) / time_scale,
                     (end - origin) / time_scale) for b, request, kind, start, end in raw]


def save_timeline(path: str | Path, inst: Instance, plan: Plan, intervals: Sequence[Interval],
                  title: str = "") -> list[Interval]:
    """Draw ``intervals`` above the predicted schedule of ``plan`` on ``inst`` (as many
    requests) in one PNG at ``path``; returns the intervals drawn.

    Both panels share one time axis, so bar lengths compare directly, unless the measured span
    is over :data:`SHARED_AXIS_RATIO` times the predicted one (a stall, a much slower host):
    the predicted bars would then be too thin to read, so each panel gets its own axis and the
    titles give both spans.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from edgepart.cost import evaluate
    from edgepart.plots import plot_measured_timeline, plot_timeline

    shown = len({iv.request for iv in intervals}) or 1
    m = evaluate(inst, plan)
    predicted_s = (shown - 1) * m.bottleneck_s + m.latency_s
    measured_s = max((iv.end_s for iv in intervals), default=0.0)
    shared = measured_s <= SHARED_AXIS_RATIO * predicted_s
    fig = Figure(figsize=(11, 7.5), layout="constrained")
    FigureCanvasAgg(fig)
    measured_ax, predicted_ax = fig.subplots(2, 1, sharex=shared)
    axis = "" if shared else " (own time axis)"
    plot_measured_timeline(intervals, measured_ax, _sink_row(inst, plan), title or (
        f"measured: {shown} requests of the last deployment in {measured_s:.4g} s{axis}"))
    plot_timeline(inst, plan, predicted_ax, requests=shown)
    predicted_ax.set_title(f"predicted (cost model): {shown} requests in {predicted_s:.4g} s"
                           f"{axis}; " + predicted_ax.get_title())
    fig.savefig(path, dpi=110)
    return list(intervals)


def _sink_row(inst: Instance, plan: Plan) -> str:
    """The last row's label: the answer always goes to the driver, over the link to the
    instance's sink when it has one on another device than the last stage's."""
    if inst.sink is None or inst.sink == plan.stages[-1].device:
        return "answer to driver"
    return f"sink: {inst.sink}"
