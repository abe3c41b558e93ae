"""``edgepart run --timeline``: measured intervals from the workers' records, and the picture."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edgepart.runtime.timeline import SHOWN_REQUESTS, Interval, Kind, measured_intervals
from edgepart.runtime.worker import Record


def test_intervals_from_records_by_hand() -> None:
    """Two stages, time scale 2, one request (0) of epoch 1; request 1 (served by stage 0 only)
    and a record of epoch 0 are left out. In wall seconds, from the source's take-up at 10.0:
    stage 0 receives 10.0-10.2, computes 10.3-10.5, pads to 10.6; its message is acknowledged
    at 10.9, so stage 1 receives 10.6-10.9, computes 11.0-11.4 (no padding) and sends to the
    driver 11.4-11.5. Halved (time scale 2) from the origin 10.0: the expected list below."""
    source = [(1, 0, 10.0, 10.2), (1, 1, 10.1, 10.3), (0, 0, 5.0, 5.1)]
    stage0 = [Record(0, 1, 10.2, 10.3, 10.5, 10.6, delivered=10.9),
              Record(1, 1, 10.3, 10.6, 10.8, 10.8, delivered=11.0),
              Record(0, 0, 5.1, 5.2, 5.3, 5.3, delivered=5.4)]
    stage1 = [Record(0, 1, 10.9, 11.0, 11.4, 11.4, delivered=11.5)]
    got = measured_intervals(["a", "b"], [stage0, stage1], source, epoch=1, time_scale=2.0)
    expected = [Interval(0, "a", 0, Kind.RECEIVE, 0.0, 0.1),
                Interval(0, "a", 0, Kind.COMPUTE, 0.15, 0.25),
                Interval(0, "a", 0, Kind.PAD, 0.25, 0.3),
                Interval(1, "b", 0, Kind.RECEIVE, 0.3, 0.45),
                Interval(1, "b", 0, Kind.COMPUTE, 0.5, 0.7),
                Interval(1, "b", 0, Kind.SEND, 0.7, 0.75)]
    assert [(i.stage, i.device, i.request, i.kind) for i in got] == [
        (i.stage, i.device, i.request, i.kind) for i in expected]
    for g, e in zip(got, expected, strict=True):
        assert (g.start_s, g.end_s) == pytest.approx((e.start_s, e.end_s))


def test_run_draws_the_timeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                run_skipnet: Callable[..., dict[str, Any]]) -> None:
    """The PNG is written and the report counts what :func:`save_timeline` returned; on the
    workers' common clock each request's compute at stage b + 1 starts after its compute at
    stage b ended."""
    from edgepart.runtime import driver

    returned: list[list[Interval]] = []
    original = driver.save_timeline

    def keep(*args: Any, **kwargs: Any) -> list[Interval]:
        returned.append(original(*args, **kwargs))
        return returned[-1]

    monkeypatch.setattr(driver, "save_timeline", keep)
    path = tmp_path / "timeline.png"
    report = run_skipnet(requests=12, inflight=3, timeline=str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (intervals,) = returned
    # 12 requests, the first (warmup(12) = 1) left out, then SHOWN_REQUESTS of them; each has a
    # receive and a compute on each of the 3 stages and a send to the driver (no padding
    # without emulation)
    assert report["timeline"]["requests"] == list(range(1, 1 + SHOWN_REQUESTS))
    assert report["timeline"]["intervals"] == len(intervals) == SHOWN_REQUESTS * (3 * 2 + 1)
    assert all(iv.end_s >= iv.start_s >= 0 for iv in intervals)
    computes = sorted((iv.request, iv.stage, iv.start_s, iv.end_s) for iv in intervals
                      if iv.kind is Kind.COMPUTE)
    for (r1, _, _, end), (r2, _, start, _) in itertools.pairwise(computes):
        if r1 == r2:
            assert start >= end
