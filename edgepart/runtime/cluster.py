"""The workers: one per instance device (rank ``1 + device index``), and the driver's link to them.

Locally (no ``--master``) the driver binds a free port on 127.0.0.1, spawns every worker as a
child process (each in its own cgroup under ``--emulate cgroup``) and owns them: :meth:`close`
stops them, kills what does not stop, and removes the cgroups, on every path out. With
``--master HOST:PORT`` the workers are started by hand (``edgepart worker --rank R --world W
--master HOST:PORT``), one per device, ``W = 1 + number of devices``.

A heartbeat thread pings every live worker and watches the local processes; a worker that does not
answer within the heartbeat timeout (dead, or alive but hung), or whose process exits, becomes a
:class:`~edgepart.runtime.events.Fault` in the driver's inbox. A local worker counted dead is
killed (:meth:`Cluster.bury`), so a hung one cannot come back.

:meth:`Cluster.close` stops the workers, then closes the driver's transport; each worker closes
its own only after the driver's is gone, so no process sees a peer vanish while it still runs
(TensorPipe would log an "eof" error for that on the driver's stderr).

:func:`time_messages` measures the runtime's own cost of one message on this host (``edgepart
devices probe``): rank 0 sends tensors of given sizes to one local worker by the call a stage
makes to the next (:func:`~edgepart.runtime.transport.call_while` of
:func:`~edgepart.runtime.worker.submit`), timed from the call to the acknowledgement, as a
worker's ``transport_s``; the worker drops each message (no stage is deployed on it).
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from edgepart.instance import Instance
from edgepart.profiling.model_spec import first_line
from edgepart.runtime import events, worker
from edgepart.runtime.emulate import Cgroups
from edgepart.runtime.transport import (
    Address,
    RpcTransport,
    Transport,
    bind_master,
    call_while,
    disconnects_unlogged,
)

__all__ = ["Cluster", "WorkerError", "time_messages"]


class WorkerError(RuntimeError):
    """A worker failed to start, set up or take a deployment."""


class Cluster:
    """Worker processes (or remote workers), the transport, and the heartbeat: one worker per
    device of ``inst`` (an instance, or device ids)."""

    def __init__(self, inst: Instance | Sequence[str], master: Address | None, *,
                 startup_timeout_s: float = 120.0, heartbeat_s: float = 0.25,
                 heartbeat_timeout_s: float = 10.0) -> None:
        ids = [d.id for d in inst.devices] if isinstance(inst, Instance) else list(inst)
        self.ranks = {device: k + 1 for k, device in enumerate(ids)}
        self.devices = {r: d for d, r in self.ranks.items()}
        self.world = len(ids) + 1
        self.local = master is None
        self.master = bind_master(*(master or ("127.0.0.1", 0)))
        self.startup_timeout_s = startup_timeout_s
        self.heartbeat_s, self.heartbeat_timeout_s = heartbeat_s, heartbeat_timeout_s
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.logs = Path(tempfile.mkdtemp(prefix="edgepart-run-"))
        self.cgroups: Cgroups | None = None
        self._transport: Transport | None = None
        self.dead: set[int] = set()
        self.epoch = 0
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    # --- start-up ------------------------------------------------------------------------------

    def start(self, cgroup_limits: Mapping[str, tuple[float | None, float | None]] | None = None
              ) -> None:
        """Spawn the local workers (``cgroup_limits``: device -> (cpus, memory bytes), each
        None for no limit; every worker's cgroup sits under a parent of the top CPU weight) and
        join the group; returns when every worker has joined."""
        if self.local:
            if cgroup_limits is not None:
                self.cgroups = Cgroups()
            for device, rank in self.ranks.items():
                self._spawn(rank, cgroup_limits[device] if cgroup_limits else None)
        self._transport = self._connect()

    def _spawn(self, rank: int, limits: tuple[float | None, float | None] | None
               ) -> None:
        cmd = [sys.executable, "-m", "edgepart.cli", "worker", "--rank", str(rank),
               "--world", str(self.world), "--master", f"{self.master[0]}:{self.master[1]}",
               "--parent-pid", str(os.getpid())]
        if limits is not None and self.cgroups is not None:
            for path in self.cgroups.create(f"w{rank}", *limits):
                cmd += ["--cgroup", path]
        env = {**os.environ, "TORCH_CPP_LOG_LEVEL": "ERROR", "PYTHONWARNINGS": "ignore"}
        with open(self.logs / f"w{rank}.log", "wb") as log:
            self.procs[rank] = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                                stdout=subprocess.DEVNULL, stderr=log, env=env)

    def _connect(self) -> Transport:
        """Join as rank 0 in a thread, failing fast when a local worker dies meanwhile."""
        box: dict[str, Any] = {}

        def join() -> None:
            try:
                box["transport"] = RpcTransport(0, self.world, self.master,
                                                timeout_s=self.startup_timeout_s)
            except Exception as err:  # the rendezvous raises backend-specific errors
                box["error"] = err

        thread = threading.Thread(target=join, daemon=True)
        thread.start()
        deadline = time.monotonic() + self.startup_timeout_s
        while thread.is_alive():
            thread.join(0.1)
            if time.monotonic() > deadline:
                box["error"] = TimeoutError("timed out")
                break
            for rank, proc in self.procs.items():
                if proc.poll() is not None:
                    raise WorkerError(f"worker for device '{self.devices[rank]}' exited during "
                                      f"start-up: {self.log_tail(rank)}")
        if "error" in box:
            raise WorkerError(f"workers did not all join at {self.master[0]}:{self.master[1]} "
                              f"within {self.startup_timeout_s:.0f} s: {first_line(box['error'])}")
        transport: Transport = box["transport"]
        self._beat = threading.Thread(target=self._heartbeat, daemon=True)
        self._beat.start()
        return transport

    def setup(self, configs: Mapping[int, worker.WorkerSetup], fingerprint: str) -> None:
        """Build the model on every worker; each must trace the driver's graph."""
        replies = {r: self.transport.call_async(r, worker.setup, cfg) for r, cfg in configs.items()}
        for rank, reply in replies.items():
            theirs = self._wait(rank, reply, "set up the model")
            if theirs != fingerprint:
                raise WorkerError(f"device '{self.devices[rank]}' traced another graph than the "
                                  "driver (different torch/torchvision versions or model code?)")

    # --- deployments ---------------------------------------------------------------------------

    def deploy(self, configs: Mapping[int, worker.StageConfig | None]) -> set[int]:
        """Deploy on every live worker at once; returns the ranks that failed (now dead)."""
        replies = {r: self.transport.call_async(r, worker.deploy, cfg)
                   for r, cfg in configs.items() if r not in self.dead}
        failed = set()
        for rank, reply in replies.items():
            try:
                reply.wait()
            except Exception as err:  # backend-specific; a dead peer or a remote error
                if self.responsive(rank):
                    raise WorkerError(f"device '{self.devices[rank]}' could not deploy its "
                                      f"stage: {_remote_message(err)}") from None
                failed.add(rank)
        self.dead |= failed
        return failed

    def bury(self, ranks: set[int]) -> None:
        """Count ``ranks`` as dead from now on; kill what is left of their local processes (a
        hung worker, e.g. one stopped by SIGSTOP, must not come back and serve stale work)."""
        self.dead |= ranks
        for rank in ranks:
            proc = self.procs.get(rank)
            if proc is not None and proc.poll() is None:
                proc.kill()

    def set_cpus(self, rank: int, cpus: float) -> None:
        """Change a local worker's CPU quota (cgroup emulation)."""
        if self.cgroups is not None:
            self.cgroups.set_cpus(f"w{rank}", cpus)

    def records(self, rank: int, epoch: int) -> list[worker.Record]:
        return self.transport.call(rank, worker.records, epoch, timeout=30)

    def responsive(self, rank: int) -> bool:
        """True when ``rank`` answers a ping within the heartbeat timeout."""
        if rank in self.procs and self.procs[rank].poll() is not None:
            return False
        try:
            self.transport.call(rank, worker.ping, timeout=self.heartbeat_timeout_s)
        except Exception:  # any failure to answer means the worker is gone
            return False
        return True

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            for rank in [r for r in self.devices if r not in self.dead]:
                proc = self.procs.get(rank)
                if proc is not None and proc.poll() is not None:
                    self._lost(rank, f"worker process exited with code {proc.returncode}")
                    continue
                with contextlib.suppress(Exception):  # transport closing under us
                    reply = self.transport.call_async(rank, worker.ping,
                                                 timeout=self.heartbeat_timeout_s)
                    reply.add_done_callback(functools.partial(self._pinged, rank))

    def _pinged(self, rank: int, fut: Any) -> None:
        try:
            fut.wait()
        except Exception as err:  # backend-specific timeout or connection error
            if not self._stop.is_set():
                self._lost(rank, f"no heartbeat ({first_line(err)})")

    def _lost(self, rank: int, message: str) -> None:
        events.INBOX.put(events.Fault(self.epoch, 0, rank, message))

    # --- shutdown ------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop every worker, kill what remains of the local ones, remove the cgroups."""
        self._stop.set()
        if self._transport is not None:
            replies = []
            for rank in self.devices:
                if rank not in self.dead:
                    with contextlib.suppress(Exception):
                        replies.append(self._transport.call_async(rank, worker.stop, timeout=5))
            for reply in replies:
                with contextlib.suppress(Exception):
                    reply.wait()
            if self._beat is not None:
                self._beat.join(2)
            with contextlib.suppress(Exception):
                self._transport.close()
        self._reap()
        if self.cgroups is not None:
            self.cgroups.close()
        shutil.rmtree(self.logs, ignore_errors=True)

    def _reap(self) -> None:
        deadline = time.monotonic() + 5
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.0, deadline - time.monotonic()))
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def log_tail(self, rank: int) -> str:
        """The last line of a local worker's stderr."""
        with contextlib.suppress(OSError):
            lines = (self.logs / f"w{rank}.log").read_text(errors="replace").strip().splitlines()
            if lines:
                return lines[-1]
        return "(no output)"

    @property
    def transport(self) -> Transport:
        """The transport to the workers (once :meth:`start` has returned)."""
        if self._transport is None:
            raise RuntimeError("cluster not started")
        return self._transport

    def _wait(self, rank: int, reply: Any, what: str) -> Any:
        try:
            return reply.wait()
        except Exception as err:  # backend-specific; carries the remote exception's text
            raise WorkerError(f"device '{self.devices[rank]}' could not {what}: "
                              f"{_remote_message(err)}") from None


def time_messages(sizes: Sequence[int], repeats: int = 20, warmup: int = 3) -> list[float]:
    """Median seconds of one message of each of ``sizes`` bytes (a float32 tensor) from this
    process to a local worker, by the runtime's own path (see the module docstring), over
    ``repeats`` rounds that send each size once; ``warmup`` untimed rounds first (they open the
    connection and its buffers)."""
    import torch

    cluster = Cluster(["probe"], None)
    with disconnects_unlogged():
        try:
            cluster.start()
            payloads = [(torch.zeros(max(1, size // 4)),) for size in sizes]
            samples: list[list[float]] = [[] for _ in sizes]
            for k in range(warmup + repeats):  # the sizes in turn: the same host load for each
                for values, times in zip(payloads, samples, strict=True):
                    t0 = time.perf_counter()
                    call_while(cluster.transport, lambda: True, 1, worker.submit, -1, k, values,
                               (), (1,))
                    times.append(time.perf_counter() - t0)
            return [statistics.median(times[warmup:]) for times in samples]
        finally:
            cluster.close()


def _remote_message(err: BaseException) -> str:
    """The remote exception's own message out of torch RPC's text (which holds the remote
    traceback, ending in ``Type: message``), or the local error's first line."""
    head = str(err).partition("\n\nAt:")[0]
    lines = [ln for ln in head.splitlines() if ln.strip() and not ln.startswith(" ")]
    last = lines[-1] if lines else type(err).__name__
    name, sep, message = last.partition(": ")
    return message if sep and name.replace(".", "").isidentifier() else last
