"""A worker: one process per device, running whatever stage the driver deploys on it.

The driver calls, through the transport: :func:`setup` (build and trace the model once),
:func:`deploy` (build this device's stage for a deployment *epoch*, or none), :func:`ping`,
:func:`records` and :func:`stop`. Stages call :func:`submit` on the next stage; the last stage
calls :func:`edgepart.runtime.events.deliver` on the driver. Each request carries its *route*
(the rank of every stage's end: the driver chose a replica of each replicated stage), and a stage
sends it on to the rank the route names. In a split stage
(:mod:`~edgepart.runtime.groups`) the lead's stage module starts each run of split layers on the
group's other workers (:func:`start_run`), and the members send each other the pieces the cost
model moves (:func:`put_piece`, into the receiver's mailbox); a helper runs no stage of its own,
only its part of each run, in a thread of its own, each slice slowed as its device's compute is
(``--slowdown``, ``stretch``). Under ``stretch`` the lead stretches each of its own slices as
well, and then only its CPU time outside the runs (:func:`_emulated`).

Inside, two threads make a two-stage pipeline, as the cost model's ``overlap`` assumes: the compute
thread runs the stage module (padded or slowed as configured) and the send thread holds each
message for its emulated link time and then sends it, so compute of request ``i + 1`` overlaps the
transfer of request ``i``. Messages of an older epoch are dropped: after a redeploy only the
driver's re-sent requests flow. Every stage computes on one thread, as the driver does for the
reference outputs: the sums are then done in the same order and the outputs match bit for bit.
A worker exits when the driver says stop (once the driver has closed its side, so the driver
sees no connection break while it still runs) or has been silent for ``idle_timeout_s`` (the
driver pings every few hundred milliseconds), so none is ever left behind. A message to a next
stage that hangs is given up when a new deployment arrives, and so is the padding of a request
that a new deployment made obsolete.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from edgepart.instance import Link
from edgepart.profiling.model_spec import first_line
from edgepart.profiling.numerics import set_torch_compute
from edgepart.runtime import emulate, events
from edgepart.runtime.emulate import Emulation
from edgepart.runtime.groups import (
    Key,
    Mailbox,
    Member,
    Obsolete,
    Pace,
    PeerError,
    SplitRole,
    lead_stage,
)
from edgepart.runtime.split import StageSpec, build_stage, fingerprint, load_model, payload_bytes
from edgepart.runtime.split import trace as trace_model
from edgepart.runtime.transport import Address, RpcTransport, Transport, call_while
from edgepart.solvers.stoppable import die_with_parent

__all__ = [
    "Record",
    "StageConfig",
    "WorkerSetup",
    "deploy",
    "ping",
    "put_piece",
    "records",
    "serve",
    "setup",
    "start_run",
    "stop",
    "submit",
]


@dataclass(frozen=True, slots=True)
class WorkerSetup:
    model: str
    seed: int
    weights: str | None
    input_shape: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class StageConfig:
    """One deployment of a stage on this worker's device.

    ``links``: the outgoing link to emulate for each rank the stage may send to (0: the driver;
    a link None: same device or no sink); a request's *route* names the rank of every stage's
    end (the driver's scheduler chose the replica of each replicated stage)."""

    epoch: int
    device: str
    spec: StageSpec
    links: tuple[tuple[int, Link | None], ...]
    emulation: Emulation
    pad_s: float | None = None
    slowdown: tuple[float, int] | None = None  # (factor, from request id)
    fail_after: int | None = None
    fail_hang: bool = False  # at fail_after: stop (SIGSTOP, alive but silent) instead of dying
    split: SplitRole | None = None

    def next_rank(self, route: tuple[int, ...]) -> int:
        """Where this stage sends a request on ``route`` (0: the driver)."""
        return 0 if self.spec.final else route[self.spec.index + 1]


@dataclass(slots=True)
class Record:
    """One request through one stage (``time.perf_counter`` seconds of the worker)."""

    request: int
    epoch: int
    arrived: float
    started: float
    computed: float  # end of the real compute
    finished: float  # end of the padded or slowed compute
    link_wait: float = 0.0  # the emulated link time
    held: float = 0.0  # the part of it the message was held before sending
    sent: float = 0.0  # after the hold
    delivered: float = 0.0  # the transport acknowledged the message
    nbytes: int = 0


@dataclass
class _Work:
    epoch: int
    request: int
    values: Any
    hops: tuple[events.Hop, ...]
    route: tuple[int, ...]
    arrived: float = field(default_factory=time.perf_counter)


class _Worker:
    transport: Transport

    def __init__(self, compute_cgroups: Sequence[str] = ()) -> None:
        self.compute_cgroups = compute_cgroups
        self.inbox: queue.Queue[_Work | None] = queue.Queue()
        self.outbox: queue.Queue[tuple[StageConfig, Any, _Work, Record] | None] = queue.Queue()
        self.lock = threading.Lock()
        self.idle = threading.Condition(self.lock)
        self.unsent = 0  # messages computed but not yet sent (or dropped)
        self.redeployed = threading.Event()  # cuts short the padding of an obsolete request
        self.gm: torch.fx.GraphModule | None = None
        self.config: StageConfig | None = None
        self.module: torch.nn.Module | None = None
        self.member: Member | None = None  # this device's part of a split stage
        self.mailbox = Mailbox()
        self.jobs: queue.Queue[tuple[Key, int] | None] = queue.Queue()  # a helper's runs
        self.serving = -1  # the request the compute thread computes
        self.count = 0
        self.log: list[Record] = []
        self.link = emulate.LinkClock()
        self.contact = time.monotonic()
        self.stopped = threading.Event()
        self.threads = [threading.Thread(target=self._compute_loop, daemon=True),
                        threading.Thread(target=self._send_loop, daemon=True),
                        threading.Thread(target=self._helper_loop, daemon=True)]
        for t in self.threads:
            t.start()

    def current(self, epoch: int) -> StageConfig | None:
        cfg = self.config
        return cfg if cfg is not None and cfg.epoch == epoch else None

    def _compute_loop(self) -> None:
        emulate.join_thread(self.compute_cgroups)
        while (work := self.inbox.get()) is not None:
            with self.lock:
                cfg, module, member = self.current(work.epoch), self.module, self.member
                self.redeployed.clear()  # a deployment from now on makes this request obsolete
            if cfg is None or module is None:
                continue
            self._count(cfg, work.request)
            self.serving = work.request
            in_runs = member.spent_in_runs if member is not None else _nothing_spent
            in_runs()  # a split lead: count this request's runs only
            started, cpu_started = time.perf_counter(), time.thread_time()
            try:
                with torch.no_grad():
                    out = module(*work.values)
            except PeerError as err:  # a split helper is gone: the driver re-plans
                self._report(cfg, err.rank, first_line(err))
                continue
            except Obsolete:  # redeployed while a split run waited: the request is re-sent
                continue
            computed, cpu_s = time.perf_counter(), time.thread_time() - cpu_started
            finished = _sleep_until(
                started + _emulated(cfg, work.request, computed - started, cpu_s, in_runs()),
                self.redeployed)
            scale = cfg.emulation.time_scale
            hop = (cfg.device, (finished - started) / scale, (computed - started) / scale)
            work.hops = (*work.hops, hop)
            rec = Record(work.request, work.epoch, work.arrived, started, computed, finished)
            with self.lock:
                self.unsent += 1
            self.outbox.put((cfg, out, work, rec))

    def _count(self, cfg: StageConfig, request: int) -> None:
        """Count a request (the driver's warm-up request does not count); --fail-stage: die (or
        hang, --fail-hang) mid-stream."""
        self.count += request >= 0
        if cfg.fail_after is not None and self.count > cfg.fail_after:
            os.kill(os.getpid(), signal.SIGSTOP if cfg.fail_hang else signal.SIGKILL)

    def _helper_loop(self) -> None:
        """A split helper plays its part of each run it is started on."""
        emulate.join_thread(self.compute_cgroups)
        while (job := self.jobs.get()) is not None:
            (epoch, seq, run, _, _), request = job
            with self.lock:
                cfg, member = self.current(epoch), self.member
            if cfg is None or member is None:
                continue
            if run == 0:
                self._count(cfg, request)
            try:
                with torch.no_grad():
                    member.play(run, seq, request)
            except PeerError as err:
                self._report(cfg, err.rank, first_line(err))
            except Obsolete:
                continue

    def _pace(self, cfg: StageConfig) -> Pace:
        """A split helper's slow-down: each slice takes as long as :func:`_emulated` says."""

        def pace(request: int, started: float, real_s: float, cpu_s: float) -> None:
            _sleep_until(started + _emulated(cfg, request, real_s, cpu_s), self.stopped)
        return pace

    def _stretch_pace(self, cfg: StageConfig) -> Pace:
        """A split lead's slices under ``stretch``: each takes its CPU time / the device's
        share, as a helper's does, so every layer of a run takes its slowest member's stretched
        slice (the cost model's max over the members). Padding and ``--slowdown`` apply to the
        lead's whole stage instead (:func:`_emulated`)."""

        def pace(request: int, started: float, real_s: float, cpu_s: float) -> None:
            stretched = cfg.emulation.stretch_target(cfg.device, cpu_s)
            if stretched is not None:
                _sleep_until(started + stretched, self.redeployed)
        return pace

    def _send_loop(self) -> None:
        while (item := self.outbox.get()) is not None:
            try:
                self._send(*item)
            finally:
                with self.idle:
                    self.unsent -= 1
                    self.idle.notify_all()

    def _send(self, cfg: StageConfig, out: Any, work: _Work, rec: Record) -> None:
        """Hold the message for its emulated link time, send it on, log it."""
        if self.current(cfg.epoch) is None:
            return
        rec.nbytes = payload_bytes(out)
        rank = cfg.next_rank(work.route)
        rec.link_wait = cfg.emulation.link_wait(dict(cfg.links).get(rank), rec.nbytes)
        rec.held = self.link.hold(rec.link_wait)
        rec.sent = time.perf_counter()
        if rank == 0:
            target: Any = events.deliver
            args: tuple[Any, ...] = (cfg.epoch, work.request, out, work.hops)
        else:
            target, args = submit, (cfg.epoch, work.request, out, work.hops, work.route)
        try:
            if not call_while(self.transport, lambda: self.current(cfg.epoch) is not None,
                              rank, target, *args):
                return  # redeployed meanwhile (the next stage hung): the message is obsolete
        except Exception as err:  # the transport's error types are backend-specific
            self._report(cfg, rank, first_line(err))
            return
        rec.delivered = time.perf_counter()
        self.link.sent(rec.link_wait, rec.delivered - rec.sent)
        self.log.append(rec)

    def _report(self, cfg: StageConfig, peer: int, message: str) -> None:
        with contextlib.suppress(Exception):
            self.transport.call_async(0, events.report, cfg.epoch, self.transport.rank, peer,
                                      message)

    def build(self, cfg: StageConfig | None) -> tuple[torch.nn.Module | None, Member | None]:
        """The stage module of ``cfg`` (none on a split helper: it runs no stage of its own)
        and this device's part of a split stage (a lead's stage module runs it)."""
        if cfg is None or self.gm is None:
            return None, None
        role = cfg.split
        module = build_stage(self.gm, cfg.spec) if role is None or role.lead else None
        if role is None:
            return module, None
        wire = _Wire(self, cfg.epoch)
        if module is None:
            return None, Member(self.gm, role, cfg.epoch, wire, self._pace(cfg))
        member = Member(self.gm, role, cfg.epoch, wire, self._stretch_pace(cfg))
        return lead_stage(module, member, lambda: self.serving), member

    def close(self) -> None:
        self.inbox.put(None)
        self.outbox.put(None)
        self.jobs.put(None)


class _Wire:
    """A split member's sends (asynchronous calls; a failed one fails the member's waits with
    :class:`~edgepart.runtime.groups.PeerError`) and its mailbox in deployment ``epoch``."""

    def __init__(self, worker: _Worker, epoch: int) -> None:
        self.worker, self.epoch = worker, epoch

    def start(self, rank: int, key: Key, request: int, piece: torch.Tensor | None) -> None:
        self._watch(rank, self.worker.transport.call_async(rank, start_run, key, request, piece))

    def post(self, rank: int, key: Key, piece: torch.Tensor) -> None:
        self._watch(rank, self.worker.transport.call_async(rank, put_piece, key, piece))

    def take(self, keys: Sequence[Key]) -> list[torch.Tensor]:
        w = self.worker
        return w.mailbox.take(self.epoch, keys, lambda: w.current(self.epoch) is not None)

    def _watch(self, rank: int, reply: Any) -> None:
        def done(fut: Any) -> None:
            try:
                fut.wait()
            except Exception as err:  # the transport's error types are backend-specific
                self.worker.mailbox.fail(self.epoch, rank, first_line(err))
        reply.add_done_callback(done)


def _emulated(cfg: StageConfig, request: int, real_s: float, cpu_s: float,
              in_runs: tuple[float, float] = (0.0, 0.0)) -> float:
    """Seconds the compute of ``request`` takes on the emulated device: ``real_s`` of wall
    time, ``cpu_s`` of this thread's CPU time, padded (``pad``) or stretched (``stretch``: CPU
    time / the device's CPU share, see :mod:`~edgepart.runtime.emulate`).

    ``in_runs``: the wall and CPU seconds of it a split lead spent in its runs, whose slices
    were already stretched one by one (:meth:`_Worker._stretch_pace`) and whose waits for the
    helpers are their stretched slices: that wall time counts as it was, and only the CPU
    time outside the runs (the nodes without a scheme) is stretched here."""
    stretched = cfg.emulation.stretch_target(cfg.device, cpu_s - in_runs[1])
    busy = max(real_s, cfg.pad_s or 0.0, 0.0 if stretched is None else in_runs[0] + stretched)
    if cfg.slowdown is not None and request >= cfg.slowdown[1]:
        busy *= cfg.slowdown[0]
    return busy


def _nothing_spent() -> tuple[float, float]:
    """A stage without split runs spent nothing in them."""
    return 0.0, 0.0


def _sleep_until(deadline: float, interrupt: threading.Event) -> float:
    """Sleep until ``deadline`` or until ``interrupt`` is set (a new deployment: the request
    is obsolete, and the stage must be free for the new one's at once); returns when the sleep
    ended (no later than ``deadline`` when it was already past: then nothing was padded)."""
    now = time.perf_counter()
    if deadline <= now:
        return min(now, deadline)
    interrupt.wait(deadline - now)
    return time.perf_counter()


_WORKER: list[_Worker] = []


def _this() -> _Worker:
    if not _WORKER:
        raise RuntimeError("this process is not serving as an edgepart worker")
    return _WORKER[0]


# --- called by the driver through the transport ----------------------------------------------


def setup(cfg: WorkerSetup) -> str:
    """Build and trace the model; returns the graph's fingerprint."""
    w = _this()
    w.contact = time.monotonic()
    model = load_model(cfg.model, cfg.seed, cfg.weights)
    w.gm = trace_model(model, cfg.input_shape).graph_module
    return fingerprint(w.gm)


def deploy(cfg: StageConfig | None) -> None:
    """Run ``cfg``'s stage from now on (None: no stage); older messages are dropped."""
    w = _this()
    w.contact = time.monotonic()
    if cfg is not None and w.gm is None:
        raise RuntimeError("deploy before setup")
    module, member = w.build(cfg)
    with w.lock:
        w.config, w.module, w.member, w.count = cfg, module, member, 0
    w.mailbox.forget(sys.maxsize if cfg is None else cfg.epoch)  # none is current
    w.redeployed.set()


def submit(epoch: int, request: int, values: Any, hops: tuple[events.Hop, ...],
           route: tuple[int, ...]) -> None:
    """Queue a request's boundary values for this stage (called by the previous stage, or the
    driver's source for the first); ``route``: the rank of every stage's end."""
    _this().inbox.put(_Work(epoch, request, values, hops, route))


def start_run(key: Key, request: int, piece: torch.Tensor | None) -> None:
    """Start this split helper's part of a run (called by the lead): ``key`` names the run and
    the lead's scatter piece for this member (None: it reads none of the run's input)."""
    w = _this()
    if piece is not None:
        w.mailbox.put(key, piece)
    w.jobs.put((key, request))


def put_piece(key: Key, piece: torch.Tensor) -> None:
    """A piece for this split member's mailbox (called by another member)."""
    _this().mailbox.put(key, piece)


def ping() -> None:
    _this().contact = time.monotonic()


def records(epoch: int) -> list[Record]:
    """This worker's records of deployment ``epoch``."""
    w = _this()
    w.contact = time.monotonic()
    with w.idle:
        w.idle.wait_for(lambda: w.unsent == 0, timeout=10)
    return [r for r in w.log if r.epoch == epoch and r.request >= 0]


def stop() -> None:
    _this().stopped.set()


# --- the process -------------------------------------------------------------------------------


MMAP_THRESHOLD_BYTES = 32 << 20
"""glibc's largest ``M_MMAP_THRESHOLD`` on 64-bit: blocks up to this size come from the heap."""


def _reuse_freed_memory() -> None:
    """Have glibc's malloc serve a stage's tensors from memory it freed before, not from fresh
    pages: blocks up to :data:`MMAP_THRESHOLD_BYTES` come from the heap (not ``mmap``) and the
    heap's free top is kept (no trim). Without it every request of a stage with large
    activations mapped fresh pages and paid their page faults, which a profile measured in one
    thread does not (glibc raises its threshold as the same block is freed and asked for again;
    a worker's tensors are freed in other threads, by the transport): MobileNetV2's first stage
    at 224 x 224 (activations of 1.6-4.8 MB), split in three, ``--inflight 1``, three runs each
    way, used 7.1-7.8 ms of CPU a request without these settings and 5.9-6.6 ms with them; the
    other two stages were unchanged. A no-op where malloc is not glibc's."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # malloc.h
    mallopt(m_mmap_threshold, MMAP_THRESHOLD_BYTES)
    mallopt(m_trim_threshold, 1 << 30)


def serve(rank: int, world: int, master: Address, bind: str | None = None, *,
          cgroups: Sequence[str] = (), parent_pid: int | None = None,
          idle_timeout_s: float = 30.0, connect_timeout_s: float = 300.0) -> int:
    """Join the group as worker ``rank`` and serve until stopped; returns the exit code."""
    if parent_pid is not None:
        die_with_parent(parent_pid)
    # one intra-op thread, as the driver's reference (same sums, same results) and as a device
    # of the cost model, subnormals flushed as in the profile (edgepart.profiling.numerics);
    # set before any thread starts, so every thread starts so
    set_torch_compute(1)
    _reuse_freed_memory()
    worker = _Worker(emulate.join(cgroups))
    _WORKER[:] = [worker]  # before joining: the driver may call setup() at once
    transport = worker.transport = RpcTransport(rank, world, master, bind,
                                                timeout_s=connect_timeout_s)
    try:
        while not worker.stopped.wait(0.2):
            if time.monotonic() - worker.contact > idle_timeout_s:
                print(f"edgepart worker {rank}: no word from the driver for {idle_timeout_s:.0f} s;"
                      " exiting", file=sys.stderr)
                break
        if worker.stopped.is_set():
            _outlast_driver(transport)
    finally:
        worker.close()
        _WORKER.clear()
        transport.close()
    return 0


def _outlast_driver(transport: Transport, limit_s: float = 5.0) -> None:
    """After the driver's stop, wait (at most ``limit_s``) until the driver has closed its side.

    A process whose peer closes a connection while its own transport still runs logs an error
    for it (TensorPipe: "encountered error ... eof"); one that is closing logs nothing. So the
    driver closes first and the workers after it, and the driver's stderr stays clean.
    """
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            transport.call(0, events.alive, timeout=1.0)
        except Exception:  # any failure means the driver's side is closed
            return
        time.sleep(0.05)
