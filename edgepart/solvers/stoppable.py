"""Run a solver in a forked child process that a deadline can stop, keeping what it streamed.

Native solvers have long steps that check neither their clock nor their callbacks (HiGHS's
presolve and cut rounds, CP-SAT's presolve: docs/formulations.md, "Time limits"), so a time limit
given to the solver alone does not bound the call. :func:`run_stoppable` runs the solve in a child
process made with ``os.fork``: the model built in this process is there at once, copy-on-write,
without serialising it. The child reports on a pipe, one JSON object per line (:class:`Stream`):

* ``{"solution": [...]}``: an improving solution, in the solver's own variable order and units;
* ``{"bound": b}``: a lower bound on the (minimised) objective that the solver has proven;
* ``{"status": code, "solution": ..., "bound": ...}``: its final answer;
* ``{"error": "..."}``: it failed (the parent reports it, no traceback).

The parent reads until the child closes the pipe or until :data:`KILL_GRACE_S` past the deadline,
and then kills it (``SIGKILL``). It keeps the last solution and the largest bound received. Both
stay valid whenever they were sent: the solution is one the solver found (the caller re-checks and
re-evaluates every plan anyway), and a bound proven at some point of a minimisation holds for its
optimum. So a killed solve is a time-limit stop with the best solution and bound found by then;
with nothing streamed, the caller falls back on its warm start and its own bound.

The child never writes to this process's stdout: its file descriptor 1 is pointed at 2 before the
solve, so solver logs (when verbose) go to stderr and stdout carries only edgepart's own output.
On Linux the kernel kills it if this process dies first (``PR_SET_PDEATHSIG``), so a parent
killed from outside leaves no solver running on. It ends with ``os._exit`` (no Python clean-up,
no atexit handlers, no flush of the parent's buffers it inherited), and garbage collection is off
in it (a collection would touch, and so copy, every object of the parent). The cost is one fork
per solve (tens of milliseconds; page tables of a large model) and the JSON of each streamed
solution. Without ``os.fork`` (Windows) callers solve in this process (:func:`can_fork`).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import math
import os
import select
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from edgepart.formulations.model import Deadline

__all__ = ["KILL_GRACE_S", "Answer", "Stream", "can_fork", "die_with_parent", "run_stoppable"]

KILL_GRACE_S = 0.5
"""Seconds past the deadline that a child has to stop by itself (at the solver's own time limit
or its interrupt callback) and send its final answer before it is killed."""


@dataclass
class Answer:
    """What one solve found, in solver units: the solver's final status code (``None``: no final
    answer, the child was killed at the deadline or died), the best solution, the best proven
    lower bound, and why there is no final answer when there is none."""

    status: int | None = None
    values: list[float] | None = None
    bound: float = -math.inf
    message: str = ""
    killed: bool = False


class Stream:
    """The child's end of the pipe: sends solutions, bounds and the final answer as JSON lines."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.sent_bound = -math.inf
        self.lock = threading.Lock()  # solvers call back from several threads

    def solution(self, values: Sequence[float]) -> None:
        self.send({"solution": list(values)})

    def bound(self, bound: float) -> bool:
        """Send ``bound`` if it is better than the last one sent; says whether it did."""
        with self.lock:
            if bound <= self.sent_bound:
                return False
            self.sent_bound = bound
        self.send({"bound": bound})
        return True

    def final(self, answer: Answer) -> None:
        self.send({"status": answer.status, "solution": answer.values, "bound": answer.bound})

    def send(self, message: dict[str, Any]) -> None:
        """Write ``message`` as one line; whole lines only, whichever thread calls."""
        data = memoryview((json.dumps(message) + "\n").encode())
        with self.lock:
            while data:
                data = data[os.write(self.fd, data):]


Solve = Callable[[Stream], Answer]
"""Runs the solver in the child, streaming what it finds, and returns its final answer."""


def can_fork() -> bool:
    return hasattr(os, "fork")


def run_stoppable(solve: Solve, deadline: Deadline, solver: str) -> Answer:
    """``solve`` in a forked child process that is killed :data:`KILL_GRACE_S` past
    ``deadline``; the answer is the child's final one, or else the last solution and the best
    bound it streamed. ``solver`` names the solver in messages."""
    sys.stdout.flush()
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(read_end)
        _child(solve, write_end, parent)
    os.close(write_end)
    answer = Answer()
    try:
        answer.killed = not _listen(read_end, deadline, answer, solver)
    finally:
        os.close(read_end)
        if answer.status is None:  # still running, or dead without an answer: make sure
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    if answer.killed:
        answer.message = (f"{solver} did not stop at the time limit (a step that checks neither "
                          "its clock nor its callbacks); its process was stopped, keeping the "
                          "best solution and bound it had sent")
    elif answer.status is None:
        answer.message = answer.message or f"{solver}'s process ended without an answer"
    return answer


def _listen(fd: int, deadline: Deadline, answer: Answer, solver: str) -> bool:
    """Read the child's messages into ``answer`` until it closes the pipe (``True``) or the
    grace past ``deadline`` runs out (``False``)."""
    pending = bytearray()  # the start of a line (a solution can span many reads)
    while True:
        wait = deadline.left() + KILL_GRACE_S
        if wait <= 0 or not select.select([fd], [], [], None if math.isinf(wait) else wait)[0]:
            return False
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return True
        *lines, rest = chunk.split(b"\n")
        for k, line in enumerate(lines):
            _take(json.loads(pending + line if k == 0 else line), answer, solver)
        if lines:
            pending = bytearray()
        pending += rest


def _take(message: dict[str, Any], answer: Answer, solver: str) -> None:
    if message.get("solution") is not None:
        answer.values = message["solution"]
    if "bound" in message:
        answer.bound = max(answer.bound, message["bound"])
    if "status" in message:
        answer.status = message["status"]
    if "error" in message:
        answer.message = f"{solver}'s process failed: {message['error']}"


def _child(solve: Solve, fd: int, parent: int) -> None:
    """Solve in the forked child and report on ``fd``; ends the process, whatever happens."""
    code = 1
    try:
        gc.disable()
        die_with_parent(parent)
        os.dup2(2, 1)
        stream = Stream(fd)
        stream.final(solve(stream))
        code = 0
    except BaseException as exc:  # reported to the parent, which decides
        with contextlib.suppress(OSError):
            os.write(fd, (json.dumps({"error": repr(exc)}) + "\n").encode())
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
            ctypes.CDLL(None).fflush(None)  # the native solver's log, when verbose
        os._exit(code)


PR_SET_PDEATHSIG = 1
"""Linux's ``prctl`` option: a signal for this process when the thread that made it ends."""


def die_with_parent(parent: int) -> None:
    """On Linux, have the kernel kill this process when ``parent`` dies, so that a parent killed
    from outside (e.g. bench/scale.py's per-run limit, or a runtime driver) leaves no solver or
    worker running on; a parent already gone before the request took effect ends it at once.
    Called first thing in a child (a forked solver, a spawned runtime worker)."""
    if sys.platform == "linux":
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)
