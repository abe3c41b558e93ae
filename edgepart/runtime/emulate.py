"""Emulate the instance's cluster on one host: compute padding, cgroup limits, link delays.

Modes (``--emulate``):

* ``none``: workers run at this host's speed and messages go at loopback speed;
* ``pad`` (portable): each worker pads its real compute to the time the instance predicts for its
  device (``time_scale`` x predicted compute of its stage);
* ``cgroup`` (Linux, as root; what AMP4EC did with Docker limits): each worker runs in its own
  cgroup whose CPU quota is its device's speed relative to this host and whose memory limit is the
  device's ``memory_bytes``, so compute is really slowed, not slept. cgroup v1 (``cpu`` and
  ``memory`` controllers) and v2 (``cpu.max``, ``memory.max``) are both supported; every cgroup
  made is removed on exit. Under v1 only the worker's compute thread is in the ``cpu`` cgroup
  (v1 places threads one by one), so the quota slows the device's compute, not its messaging,
  as the cost model has it; under v2 the whole worker is limited.
* ``stretch`` (portable, no root): each worker's device is a CPU of fixed share ``cpus`` (its
  ``meta.cpus``, e.g. AMP4EC's 1.0 and 0.4 CPU profiles, never the predicted time): the compute
  thread runs a request at this host's full single-thread speed, then idles until
  ``time_scale x cpu / cpus`` seconds after the start, ``cpu`` being the CPU time the thread
  used (``time.thread_time``, so time the thread waited for a core on a busy host is not
  counted as work). Every piece of work, short or long, is slowed by the same factor
  ``cpus / time_scale``, as on a uniformly slower CPU; a CFS quota (``cgroup``) is instead this
  host's fast CPU switched off for part of each period (see :data:`CFS_PERIOD_US`). No memory
  limit is set. The stretch binds only while the thread gets ``cpus / time_scale`` of a core
  whenever it computes, so where the driver may make cgroups each worker joins one with no
  quota under the parent of top CPU weight (:class:`Cgroups`), as ``cgroup`` workers do: the
  scheduler serves it before other load (:func:`cgroup_problem` says when it cannot).

The speed of device ``d`` relative to this host, for the stage ``b`` it runs, is ``H_b / T_b``:
``H_b`` is the stage's measured single-thread time on this host and ``T_b`` its predicted compute
time on ``d``; the device's CPU quota is ``H_b / T_b / time_scale`` CPUs (set again at every
deployment, since a profile's per-layer times are not all in the same ratio to this host's). A
device whose ``meta`` has ``cpus`` (e.g. AMP4EC's 1-CPU and 0.4-CPU profiles) gets that quota
instead (divided by ``time_scale``).

In the emulating modes every message occupies its link for ``time_scale * (latency + bytes /
bandwidth)``: it is held for that time less what the real transport took for the recent messages
on the link (a moving average, :class:`LinkClock`), then sent, so the real transport time is
part of the emulated link time instead of coming on top of it. All times the runtime reports
are divided by ``time_scale`` so they compare with the prediction directly. When the host cannot
keep up (the CPU the emulated devices need exceeds its cores, or real compute exceeds the
emulated time), the run says so and names the ``--time-scale`` that would fit.
"""

from __future__ import annotations

import atexit
import contextlib
import math
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from edgepart.cost import evaluate
from edgepart.errors import InputError
from edgepart.instance import Instance, Link
from edgepart.plan import Plan
from edgepart.profiling.probe import cgroup_cpu_limit

__all__ = [
    "CFS_PERIOD_US",
    "CPU_HEADROOM",
    "MAX_PERIOD_US",
    "MIN_QUOTA_US",
    "Cgroups",
    "Emulation",
    "LinkClock",
    "Mode",
    "cfs_period_us",
    "cgroup_problem",
    "join",
    "join_thread",
    "limited",
    "scale_needed",
    "stage_cpus",
    "usable_cpus",
]

CPU_HEADROOM = 0.5
"""Share of the host's CPUs the emulated compute may use (the rest: RPC threads, the driver)."""
MIN_QUOTA_US = 1000
"""The kernel's least CFS quota and period (1 ms)."""
MAX_PERIOD_US = 1_000_000
"""The kernel's longest CFS period (1 s): it sets the least quota, 0.001 CPU."""


CFS_PERIOD_US = 5000
"""The scheduler period the runtime's quotas aim at (``EDGEPART_CFS_PERIOD_US`` overrides it,
for experiments). Measured on the development host (Linux 6.18, ``CONFIG_HZ=250``: a 4 ms tick;
``sched_cfs_bandwidth_slice_us`` 5000), a busy loop's wall time x quota / CPU time, 1.0 being a
uniform slow-down: periods of 1-2 ms over-throttle (1.9 and 1.7 at 1 CPU, 1.4 at 0.5 CPU: the
quota is enforced at ticks), 4-5 ms are within 5% at 1, 0.5 and 0.25 CPU, 100 ms lets a 0.3 s
burst run 20-30% fast. So 5 ms: the shortest period this kernel enforces faithfully, which halves
the burst of a work item that starts on an idle device against the former 10 ms."""


def cfs_period_us(cpus: float, target_us: int | None = None) -> int:
    """The scheduler period of a quota of ``cpus`` CPUs: ``target_us`` (default
    :data:`CFS_PERIOD_US`, or ``EDGEPART_CFS_PERIOD_US``), lengthened where the quota would be
    under the kernel's 1 ms minimum.

    A quota is a fast CPU switched off for part of each period: work that fits in one period's
    quota runs at full speed, so a burst of work that starts on an idle device ends up to
    ``(1 - cpus) x period`` sooner than on a device uniformly ``cpus`` as fast. A short period
    shrinks that, but only down to what the kernel enforces (see :data:`CFS_PERIOD_US`).
    """
    target = target_us or int(os.environ.get("EDGEPART_CFS_PERIOD_US", CFS_PERIOD_US))
    return min(MAX_PERIOD_US, max(target, math.ceil(MIN_QUOTA_US / cpus)))


class Mode(StrEnum):
    NONE = "none"
    PAD = "pad"
    CGROUP = "cgroup"
    STRETCH = "stretch"


@dataclass(frozen=True, slots=True)
class Emulation:
    """How the workers emulate the devices; ``cpus``: each device's CPU share (``stretch``)."""

    mode: Mode = Mode.NONE
    time_scale: float = 1.0
    cpus: tuple[tuple[str, float], ...] = ()

    def stretch_target(self, device: str, cpu_s: float) -> float | None:
        """Seconds a compute that used ``cpu_s`` of CPU takes on ``device`` (``stretch`` mode:
        ``time_scale x cpu_s / cpus``; None in the other modes)."""
        if self.mode is not Mode.STRETCH:
            return None
        return self.time_scale * cpu_s / dict(self.cpus)[device]

    def link_wait(self, link: Link | None, nbytes: float) -> float:
        """Seconds a message of ``nbytes`` waits before it goes over ``link`` (None: no link)."""
        if self.mode is Mode.NONE or link is None:
            return 0.0
        return self.time_scale * link.time(nbytes)

    def pad_target(self, predicted_compute_s: float) -> float | None:
        """Seconds a stage's compute is padded to (None: not padded)."""
        return self.time_scale * predicted_compute_s if self.mode is Mode.PAD else None


class LinkClock:
    """Holds each message on one emulated link, less the transport's recent own time."""

    def __init__(self) -> None:
        self.transport_s = 0.0  # moving average of the real send time (call to acknowledgement)

    def hold(self, wait_s: float) -> float:
        """Sleep for the part of ``wait_s`` the transport will not take; returns the seconds
        slept."""
        if wait_s <= 0:
            return 0.0
        held = max(0.0, wait_s - self.transport_s)
        time.sleep(held)
        return held

    def sent(self, wait_s: float, transport_s: float) -> None:
        """Record a message's real send time (only emulated links learn it)."""
        if wait_s > 0:
            self.transport_s += 0.2 * (transport_s - self.transport_s)


def stage_cpus(inst: Instance, plan: Plan, host_stage_s: Sequence[float],
               time_scale: float) -> dict[str, float]:
    """CPU quota (in CPUs) of each device of ``plan`` in cgroup mode, from the stages' measured
    single-thread times on this host (see the module docstring)."""
    out = {}
    for st, host_s in zip(evaluate(inst, plan).stages, host_stage_s, strict=True):
        meta = inst.devices[inst.device_index[st.device]].meta
        cpus = float(meta["cpus"]) if "cpus" in meta else (
            host_s / st.compute_s if st.compute_s > 0 else 1.0)
        out[st.device] = cpus / time_scale
    return out


def scale_needed(demand_cpus: float, cpus: float) -> float:
    """The ``--time-scale`` that fits compute needing ``demand_cpus`` (at scale 1) into
    ``CPU_HEADROOM * cpus``."""
    return demand_cpus / (CPU_HEADROOM * cpus)


def usable_cpus() -> float:
    """CPUs this process may use: its affinity, capped by its cgroups' CPU quota."""
    cpus = float(len(os.sched_getaffinity(0)))
    quota = cgroup_cpu_limit(Path("/sys/fs/cgroup"), Path("/proc/self/cgroup"))
    return min(cpus, quota) if quota else cpus


def _own_paths(proc_cgroup: Path) -> dict[str, str]:
    """Controller -> this process's cgroup path ('' is the v2 hierarchy)."""
    out: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in proc_cgroup.read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for name in controllers.split(",") if controllers else [""]:
                out[name] = path
    return out


class Cgroups:
    """Creates one cgroup per worker under this process's own cgroups; :meth:`close` removes them.

    ``root`` is where the cgroup filesystems are mounted; the layout is found there: v2 when
    ``root/cgroup.controllers`` exists (or ``root/unified`` offers cpu and memory), else v1 with
    ``root/cpu`` and ``root/memory``.
    """

    def __init__(self, root: Path = Path("/sys/fs/cgroup"),
                 proc_cgroup: Path = Path("/proc/self/cgroup")) -> None:
        self.version, self._bases = _layout(root, _own_paths(proc_cgroup))
        self._made: list[Path] = []
        self._closed = False
        tag = f"edgepart-{os.getpid()}"
        for base in self._bases:
            _remove_orphans(base)
            self._mkdir(base / tag)
            if self.version == 2:
                _write(base / "cgroup.subtree_control", "+cpu +memory")
                _write(base / tag / "cgroup.subtree_control", "+cpu +memory")
        self._parents = [base / tag for base in self._bases]
        # A quota caps a worker; top weight makes it a promise too, against other load on the
        # host (the quotas together stay within CPU_HEADROOM of the cores).
        if self.version == 2:
            _write_if_present(self._parents[0] / "cpu.weight", "10000")
        else:
            _write_if_present(self._parents[0] / "cpu.shares", "262144")
        atexit.register(self.close)

    def create(self, name: str, cpus: float | None, memory_bytes: float | None,
               period_us: int | None = None) -> list[str]:
        """A cgroup named ``name`` with ``cpus`` CPUs (per ``period_us``, see :meth:`set_cpus`;
        None: no quota) and ``memory_bytes`` (None: no memory limit); returns its directories
        (a worker joins them, see :func:`join`)."""
        dirs = [parent / name for parent in self._parents]
        for path in dirs:
            self._mkdir(path)
        self.set_cpus(name, cpus, period_us)
        if memory_bytes is None:
            return [str(p) for p in dirs]
        limit = str(int(memory_bytes))
        if self.version == 2:
            _write(dirs[0] / "memory.max", limit)
            _write_if_present(dirs[0] / "memory.swap.max", "0")
        else:
            _write(dirs[1] / "memory.limit_in_bytes", limit)
            _write_if_present(dirs[1] / "memory.memsw.limit_in_bytes", limit)
        return [str(p) for p in dirs]

    def set_cpus(self, name: str, cpus: float | None, period_us: int | None = None) -> None:
        """Set the CPU quota of cgroup ``name`` to ``cpus`` CPUs per ``period_us`` (default:
        :func:`cfs_period_us`; ``cpus`` None: no quota)."""
        cpu = self._parents[0] / name
        if cpus is None:
            _write(cpu / ("cpu.max" if self.version == 2 else "cpu.cfs_quota_us"),
                   "max" if self.version == 2 else "-1")
            return
        period = period_us or cfs_period_us(cpus)
        quota = max(MIN_QUOTA_US, round(cpus * period))
        if self.version == 2:
            _write(cpu / "cpu.max", f"{quota} {period}")
        else:
            _write(cpu / "cpu.cfs_period_us", str(period))
            _write(cpu / "cpu.cfs_quota_us", str(quota))

    def own_dirs(self) -> list[str]:
        """This process's own cgroup directories, where :func:`limited` returns the caller."""
        return [str(base) for base in self._bases]

    def close(self, wait_s: float = 5.0) -> None:
        """Remove every cgroup made (children first), waiting up to ``wait_s`` for exiting
        processes to leave them."""
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + wait_s
        for path in reversed(self._made):
            while True:
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.05)

    def _mkdir(self, path: Path) -> None:
        try:
            path.mkdir()
        except FileExistsError:
            pass
        except OSError as err:
            raise InputError(f"--emulate cgroup: cannot create {path} ({err.strerror}); it needs "
                             "root and writable cgroup controllers (else use --emulate pad)"
                             ) from None
        self._made.append(path)


def cgroup_problem() -> str:
    """Why this process cannot make the workers' cgroups ('' when it can): found by making
    them (:class:`Cgroups`) and removing them again."""
    try:
        Cgroups().close()
    except InputError as err:
        return str(err).removeprefix("--emulate cgroup: ")
    return ""


def _remove_orphans(base: Path) -> None:
    """Remove the empty cgroups of drivers that were killed before they could clean up."""
    for parent in base.glob("edgepart-*"):
        pid = parent.name.removeprefix("edgepart-")
        if pid.isdigit() and not Path("/proc", pid).exists():
            with contextlib.suppress(OSError):  # not empty after all: leave it
                for child in parent.iterdir():
                    if child.is_dir():
                        child.rmdir()
                parent.rmdir()


def _layout(root: Path, own: dict[str, str]) -> tuple[int, list[Path]]:
    """(cgroup version, base directories to create under): v2 [unified] or v1 [cpu, memory]."""
    for v2_root in (root, root / "unified"):
        controllers = v2_root / "cgroup.controllers"
        if controllers.exists() and {"cpu", "memory"} <= set(controllers.read_text().split()):
            return 2, [v2_root / own.get("", "/").lstrip("/")]
    cpu, memory = root / "cpu", root / "memory"
    if (cpu / "cpu.cfs_quota_us").exists() and (memory / "memory.limit_in_bytes").exists():
        return 1, [cpu / own.get("cpu", "/").lstrip("/"),
                   memory / own.get("memory", "/").lstrip("/")]
    raise InputError(f"--emulate cgroup: no cgroup v1 cpu+memory or v2 controllers under {root} "
                     "(use --emulate pad)")


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text)
    except OSError as err:
        raise InputError(f"--emulate cgroup: cannot write {text!r} to {path} ({err.strerror})"
                         ) from None


def _write_if_present(path: Path, text: str) -> None:
    if path.exists():
        _write(path, text)


def join(dirs: Sequence[str]) -> list[str]:
    """Move the calling process into the given cgroups, except v1 ``cpu`` ones: those are
    returned for the compute thread to join alone (:func:`join_thread`)."""
    thread_only = [d for d in dirs if Path(d, "cpu.cfs_quota_us").exists()]
    for d in dirs:
        if d not in thread_only:
            Path(d, "cgroup.procs").write_text(str(os.getpid()))
    return thread_only


def join_thread(dirs: Sequence[str]) -> None:
    """Move the calling thread (only) into the given v1 cgroups."""
    for d in dirs:
        Path(d, "tasks").write_text(str(threading.get_native_id()))


@contextlib.contextmanager
def limited(cpus: float | None, memory_bytes: float | None = None,
            period_us: int | None = None) -> Iterator[None]:
    """Run the body under a CPU quota of ``cpus`` CPUs (None: none) and a memory limit, as a
    worker of ``--emulate cgroup`` runs: in a cgroup of its own, made and removed here, under
    the parent whose top CPU weight puts it ahead of other programs on the host.

    What moves: under v1 the calling thread joins the ``cpu`` cgroup (so a single-threaded
    computation in it is limited and nothing else), and the process joins the ``memory`` one
    (only pages allocated afterwards count); under v2 the whole process moves. On exit the caller
    goes back to its own cgroups.
    """
    groups = Cgroups()
    try:
        join_thread(join(groups.create("measure", cpus, memory_bytes, period_us)))
        try:
            yield
        finally:
            join_thread(join(groups.own_dirs()))
    finally:
        groups.close()
