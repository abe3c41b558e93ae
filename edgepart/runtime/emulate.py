"""Emulate the instance's cluster on one host: compute padding, cgroup limits, link delays.

Modes (``--emulate``):

* ``none``: workers run at this host's speed and messages go at loopback speed;
* ``pad`` (portable): each worker pads its real compute to the time the instance predicts for its
  device (``time_scale`` x predicted compute of its stage);
* ``cgroup`` (Linux, as root; what AMP4EC did with Docker limits): each worker runs in its own
  cgroup whose CPU quota is its device's speed relative to this host and whose memory limit is the
  device's ``memory_bytes``, so compute is really slowed, not slept. cgroup v1 (``cpu`` and
  ``memory`` controllers) and v2 (``cpu.max``, ``memory.max``) are both supported; every cgroup
  made is removed on exit.

The speed of device ``d`` relative to this host is ``s_d = H / T_d`` where ``H`` is the measured
single-thread time of the whole model on this host and ``T_d`` the instance's predicted time of
the whole model on ``d``; its CPU quota is ``s_d / time_scale`` CPUs. A device whose ``meta`` has
``cpus`` (e.g. AMP4EC's 1-CPU and 0.4-CPU profiles) gets that quota instead (divided by
``time_scale``).

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
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from edgepart.errors import InputError
from edgepart.instance import Instance, Link
from edgepart.profiling.probe import cgroup_cpu_limit

__all__ = [
    "CPU_HEADROOM",
    "Cgroups",
    "Emulation",
    "LinkClock",
    "Mode",
    "device_cpus",
    "join",
    "scale_needed",
    "usable_cpus",
]

CPU_HEADROOM = 0.8
"""Share of the host's CPUs the emulated compute may use (the rest: RPC threads, the driver)."""
_CFS_PERIOD_US = 20_000


class Mode(StrEnum):
    NONE = "none"
    PAD = "pad"
    CGROUP = "cgroup"


@dataclass(frozen=True, slots=True)
class Emulation:
    mode: Mode = Mode.NONE
    time_scale: float = 1.0

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


def device_cpus(inst: Instance, host_model_s: float, time_scale: float) -> dict[str, float]:
    """CPU quota (in CPUs) of each device in cgroup mode (see the module docstring)."""
    out = {}
    for d, dev in enumerate(inst.devices):
        if "cpus" in dev.meta:
            cpus = float(dev.meta["cpus"])
        else:
            total = sum(row[d] for row in inst.times if math.isfinite(row[d]))
            cpus = host_model_s / total if total > 0 else 1.0
        out[dev.id] = cpus / time_scale
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
            self._mkdir(base / tag)
            if self.version == 2:
                _write(base / "cgroup.subtree_control", "+cpu +memory")
                _write(base / tag / "cgroup.subtree_control", "+cpu +memory")
        self._parents = [base / tag for base in self._bases]
        atexit.register(self.close)

    def create(self, name: str, cpus: float, memory_bytes: float) -> list[str]:
        """A cgroup named ``name`` with ``cpus`` CPUs and ``memory_bytes``; returns the
        directories whose ``cgroup.procs`` a worker writes its pid into."""
        quota = max(1000, round(cpus * _CFS_PERIOD_US))
        limit = str(int(memory_bytes))
        dirs = [parent / name for parent in self._parents]
        for path in dirs:
            self._mkdir(path)
        if self.version == 2:
            _write(dirs[0] / "cpu.max", f"{quota} {_CFS_PERIOD_US}")
            _write(dirs[0] / "memory.max", limit)
            _write_if_present(dirs[0] / "memory.swap.max", "0")
        else:
            cpu, memory = dirs
            _write(cpu / "cpu.cfs_period_us", str(_CFS_PERIOD_US))
            _write(cpu / "cpu.cfs_quota_us", str(quota))
            _write(memory / "memory.limit_in_bytes", limit)
            _write_if_present(memory / "memory.memsw.limit_in_bytes", limit)
        return [str(p) for p in dirs]

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


def join(dirs: Sequence[str]) -> None:
    """Move the calling process into the given cgroup directories (a worker does this first)."""
    for d in dirs:
        Path(d, "cgroup.procs").write_text(str(os.getpid()))
