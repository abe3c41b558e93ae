"""Recovery after a failure: a quick heuristic plan at once, the exact one when it is proven.

SkipNet has 9 layers of 1 ms each on identical devices (``instance_for``), with transfers of a
few kilobytes at 1 GB/s that overlap compute. Known answers, by hand:

* the 3-stage plan [0:3] [3:5] [5:9] on d0, d1, d2 has period max(3, 2, 4) = 4 ms;
* when d1 is lost, two devices are left; two stages of a and 9 - a layers give period
  max(a, 9 - a) ms, least at a = 4 or 5: **5 ms**, the exact re-plan's period;
* the greedy heuristic (the first quick method) keeps every layer on one device here
  (9 ms), so the driver must first serve with greedy's plan and then switch to a two-device plan.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

RECOVERY_LIMIT_S = 3.0


def _run_with_failure(run_skipnet: Callable[..., dict[str, Any]],
                      **options: Any) -> dict[str, Any]:
    report = run_skipnet(requests=30, inflight=4, fail_stage=1, fail_after=8, **options)
    assert report["completed"] == 30 and report["mismatches"] == 0
    return report


def _heuristic_then_exact(report: dict[str, Any]) -> dict[str, Any]:
    """Checks the deployments after losing d1 (see the module docstring); returns the failure."""
    (failure,) = report["failure_events"]
    assert failure["device"] == "d1"
    initial, quick, exact = report["deployments"]
    assert initial["reason"] == "initial" and "d1" in initial["devices"]
    assert quick["method"] == failure["replan_method"] == "greedy"
    assert quick["predicted_throughput_per_s"] == pytest.approx(1 / 0.009)
    assert "d1" not in quick["devices"] and "d1" not in exact["devices"]
    assert sorted(exact["devices"]) == ["d0", "d2"]
    assert exact["predicted_throughput_per_s"] == pytest.approx(1 / 0.005)
    assert failure["exact"]["status"] == "optimal" and failure["exact"]["switched"]
    assert failure["exact"]["period_s"] == pytest.approx(0.005)
    assert 0 < failure["recovery_s"] < RECOVERY_LIMIT_S
    assert failure["exact_switch_s"] > 0
    return failure


def test_killed_stage_serves_a_heuristic_plan_then_the_proven_one(
        run_skipnet: Callable[..., dict[str, Any]]) -> None:
    report = _run_with_failure(run_skipnet)
    failure = _heuristic_then_exact(report)
    # the driver notices the death as the worker's exit, or as the transport's end of file on
    # the connection to it (TensorPipe's uv transport says "EOF: end of file", shm said "eof")
    message = failure["message"].lower()
    assert "exited" in message or "eof" in message


def test_hung_worker_is_found_by_its_heartbeat_and_replaced(
        run_skipnet: Callable[..., dict[str, Any]]) -> None:
    """The worker of stage 1 stops itself (SIGSTOP: its process is alive, it answers nothing);
    only the heartbeat can tell, after ``heartbeat_timeout_s``."""
    report = _run_with_failure(run_skipnet, fail_hang=True, heartbeat_timeout_s=5.0)
    failure = _heuristic_then_exact(report)
    assert failure["message"].startswith("no heartbeat")
