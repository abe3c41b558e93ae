"""The driver's inbox: what workers (and the driver's own watchers) tell the driver.

Workers call :func:`deliver` (a request's output, from the last stage) and :func:`report` (a
message could not be sent) through the transport; the driver's heartbeat and process watchers
post :class:`Fault` events directly. The driver's main loop reads :data:`INBOX` alone.
"""

from __future__ import annotations

import queue
import time
from dataclasses import dataclass
from typing import Any

__all__ = ["INBOX", "Fault", "Hop", "Result", "deliver", "report"]

Hop = tuple[str, float, float]
"""(device id, compute seconds, real compute seconds before padding or injected slowdown), both
in instance time, of one stage a request went through."""


@dataclass(frozen=True, slots=True)
class Result:
    epoch: int
    request: int
    output: Any
    hops: tuple[Hop, ...]
    received: float


@dataclass(frozen=True, slots=True)
class Fault:
    """Rank ``rank`` reports that it could not reach rank ``peer`` (``rank == 0``: the driver's
    own watchers, e.g. a heartbeat timeout or an exited worker process)."""

    epoch: int
    rank: int
    peer: int
    message: str


INBOX: queue.Queue[Result | Fault] = queue.Queue()


def deliver(epoch: int, request: int, output: Any, hops: tuple[Hop, ...]) -> None:
    """Called by the last stage with a request's output."""
    INBOX.put(Result(epoch, request, output, hops, time.perf_counter()))


def report(epoch: int, rank: int, peer: int, message: str) -> None:
    """Called by a worker whose message to ``peer`` failed."""
    INBOX.put(Fault(epoch, rank, peer, message))
