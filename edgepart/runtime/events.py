"""The driver's inbox: what workers (and the driver's own watchers) tell the driver.

Workers call :func:`deliver` (a request's output, from the last stage) and :func:`report` (a
message could not be sent) through the transport, and :func:`alive` while they wait for the driver
to leave (see :mod:`~edgepart.runtime.worker`); the driver's heartbeat and process watchers post
:class:`Fault` events directly, and its background exact re-plan posts :class:`Proven`. The
driver's main loop reads :data:`INBOX` alone.
"""

from __future__ import annotations

import queue
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgepart.results import SolveResult

__all__ = ["INBOX", "Fault", "Hop", "Proven", "Result", "alive", "deliver", "report"]

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
    own watchers, e.g. a heartbeat timeout or an exited worker process). ``noticed``: when the
    driver heard of it (``time.perf_counter``), where recovery time starts."""

    epoch: int
    rank: int
    peer: int
    message: str
    noticed: float = field(default_factory=time.perf_counter)


@dataclass(frozen=True, slots=True)
class Proven:
    """The exact re-plan started by ``owner`` (the driver's request loop) after its failure number
    ``failure`` has ended with ``result``."""

    owner: object
    failure: int
    result: SolveResult


INBOX: queue.Queue[Result | Fault | Proven] = queue.Queue()


def deliver(epoch: int, request: int, output: Any, hops: tuple[Hop, ...]) -> None:
    """Called by the last stage with a request's output."""
    INBOX.put(Result(epoch, request, output, hops, time.perf_counter()))


def report(epoch: int, rank: int, peer: int, message: str) -> None:
    """Called by a worker whose message to ``peer`` failed."""
    INBOX.put(Fault(epoch, rank, peer, message))


def alive() -> None:
    """Answered while the driver's transport is open (a stopped worker polls it, see
    :func:`edgepart.runtime.worker.serve`)."""
