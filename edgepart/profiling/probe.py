"""Probe this machine as a device class (`edgepart devices probe`), after AMP4EC's monitor.

What is reported:

* ``cpus``: CPUs this process may use: the affinity mask, capped by the cgroup CPU quota
  (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us / cpu.cfs_period_us``; the smallest quota on the path
  from the process's cgroup up to the root);
* ``memory_bytes``: ``MemTotal`` from ``/proc/meminfo``, capped by the cgroup memory limit
  (v2 ``memory.max``, v1 ``memory.limit_in_bytes``; the smallest on the path);
* ``flops_per_s``: measured FP32 throughput of a small benchmark on all usable CPUs (a
  512 x 512 matmul and a 3 x 3, 64 -> 64 channel convolution on 56 x 56, as in resnet's first
  stage; each timed by its best of ``repeats`` runs, which is robust to other programs sharing
  the cores; FLOPs counted by :class:`torch.utils.flop_counter.FlopCounterMode`);
* ``memory_bandwidth_bytes_per_s``: copying a 64 MiB tensor into another (read + write);
* ``speed_factor``: ``reference host flops_per_s / flops_per_s``, the multiplier from times
  profiled on the catalog's reference host (single-threaded, see
  :mod:`edgepart.profiling.catalog`) to times on this machine using all its CPUs;
* ``rpc`` (:class:`MessageCost`): the runtime's own cost of one message between two processes on
  this machine (:func:`edgepart.runtime.cluster.time_messages`: a 256-byte and a 4 MiB tensor,
  each the median of 50 sends in turn, call to acknowledgement). A line through the two,
  ``t(bytes) = per_message_s + bytes / bytes_per_s``, separates the fixed per-message cost
  (serialisation, the RPC round trip, thread hand-offs) from the copy. In the cost model a
  per-message cost is a latency: for a cluster emulated on this host (``edgepart run
  --emulate``), add ``per_message_s`` to every link's ``latency_s``, since every emulated message
  really pays it, and the link emulation can only hide it behind a link time longer than it.
* ``idle`` (:class:`IdleCost`): how much more CPU time one small stage (:func:`reference_stage`:
  the first layers of a MobileNetV2 at 224 x 224, ~6 ms, one thread) takes when it runs after
  this thread idled ``gap`` seconds than right after its previous run, the median of
  ``IDLE_REPEATS`` runs each way. A device that serves a stage keeps its own caches between
  requests; a shared host (a cloud virtual machine) may not: on the 2-core VM of
  docs/runtime.md the stage took 1.08x after 20 ms and 1.36-1.42x after 80 ms, most of it in
  its first layer. Profiles time layers back to back, so a pipeline emulated on such a host
  (``edgepart run --emulate``, where every stage idles between requests) runs slower than
  predicted by about this ratio at its gaps; ``--no-idle`` skips it.

The JSON output's ``class`` object can be pasted into a cluster file's ``classes`` as it is.
"""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgepart.profiling.catalog import load_catalog

__all__ = ["IDLE_GAPS_S", "IDLE_REPEATS", "MESSAGE_SIZES", "IdleCost", "MessageCost",
           "ProbeResult", "benchmark", "cgroup_cpu_limit", "cgroup_memory_limit", "idle_cost",
           "message_cost", "probe", "reference_stage"]

_UNLIMITED = 1 << 60
MESSAGE_SIZES = (256, 4 << 20)
"""Bytes of the small and the large probe message (the large one as big as mobilenet_v2's
widest boundary at 1 x 3 x 224 x 224, 4.8 MB)."""


@dataclass(frozen=True, slots=True)
class MessageCost:
    """One message's time between two local processes, by the runtime's own path."""

    small_bytes: int
    small_s: float
    large_bytes: int
    large_s: float

    @property
    def bytes_per_s(self) -> float:
        """The copy's rate: the slope between the two sizes (inf when the large message was no
        slower, i.e. the copy is lost in the noise)."""
        extra = self.large_s - self.small_s
        return (self.large_bytes - self.small_bytes) / extra if extra > 0 else math.inf

    @property
    def per_message_s(self) -> float:
        """The fixed cost of a message: the line's intercept, ``small_s`` less its copy."""
        return max(0.0, self.small_s - self.small_bytes / self.bytes_per_s)

    def to_json(self) -> dict[str, Any]:
        return {"per_message_s": float(f"{self.per_message_s:.4g}"),
                "bytes_per_s": float(f"{self.bytes_per_s:.4g}"),
                "samples": [{"bytes": self.small_bytes, "seconds": float(f"{self.small_s:.4g}")},
                            {"bytes": self.large_bytes, "seconds": float(f"{self.large_s:.4g}")}]}


def message_cost(repeats: int = 50) -> MessageCost:
    """The runtime's per-message cost on this machine (see the module docstring); starts one
    local worker process for it."""
    from edgepart.runtime.cluster import time_messages

    small, large = time_messages(MESSAGE_SIZES, repeats)
    return MessageCost(MESSAGE_SIZES[0], small, MESSAGE_SIZES[1], large)

IDLE_GAPS_S = (0.005, 0.02, 0.08)
"""Idle gaps the ``idle`` probe times the reference stage after (a stage's gap between requests
is about the pipeline's period under load and its latency when it is empty)."""
IDLE_REPEATS = 15


@dataclass(frozen=True, slots=True)
class IdleCost:
    """CPU seconds of the reference stage right after its previous run (``busy_s``) and after
    each idle gap (``after_s``: pairs of gap and CPU seconds), medians."""

    busy_s: float
    after_s: tuple[tuple[float, float], ...]

    def ratio(self, gap_s: float) -> float:
        """CPU time after idling ``gap_s`` (one of the measured gaps) over ``busy_s``."""
        return dict(self.after_s)[gap_s] / self.busy_s

    def to_json(self) -> dict[str, Any]:
        return {"busy_s": float(f"{self.busy_s:.4g}"),
                "after_idle": [{"gap_s": gap, "cpu_s": float(f"{cpu:.4g}"),
                                "ratio": round(cpu / self.busy_s, 3)}
                               for gap, cpu in self.after_s]}


def reference_stage() -> tuple[Any, Any]:
    """The ``idle`` probe's stage and its input: MobileNetV2's stem and first two inverted
    residual blocks (without batch norms) at 1 x 3 x 224 x 224, weights drawn from seed 0."""
    import torch
    from torch import nn

    from edgepart.profiling.numerics import seeded

    with seeded(0):
        stage = nn.Sequential(
            nn.Conv2d(3, 32, 3, 2, 1), nn.ReLU6(), nn.Conv2d(32, 32, 3, 1, 1, groups=32),
            nn.ReLU6(), nn.Conv2d(32, 16, 1), nn.Conv2d(16, 96, 1), nn.ReLU6(),
            nn.Conv2d(96, 96, 3, 2, 1, groups=96), nn.ReLU6(), nn.Conv2d(96, 24, 1)).eval()
        image = torch.randn(1, 3, 224, 224)
    return stage, image


def idle_cost(gaps_s: tuple[float, ...] = IDLE_GAPS_S, repeats: int = IDLE_REPEATS) -> IdleCost:
    """Time the reference stage (thread CPU time, one torch thread, subnormals flushed) right
    after a run of it and after sleeping each of ``gaps_s``, in turn, ``repeats`` rounds."""
    import statistics

    import torch

    from edgepart.profiling.numerics import torch_compute

    stage, image = reference_stage()
    samples: dict[float, list[float]] = {gap: [] for gap in (0.0, *gaps_s)}
    with torch.inference_mode(), torch_compute(1):
        for _ in range(3):
            stage(image)
        for _ in range(repeats):
            for gap, times in samples.items():
                if gap:
                    time.sleep(gap)
                else:
                    stage(image)
                start = time.thread_time()
                stage(image)
                times.append(time.thread_time() - start)
    busy = statistics.median(samples.pop(0.0))
    return IdleCost(busy, tuple((gap, statistics.median(t)) for gap, t in samples.items()))


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """This machine as a device class."""

    name: str
    cpus: float
    memory_bytes: int
    flops_per_s: float
    memory_bandwidth_bytes_per_s: float
    speed_factor: float
    source: str
    rpc: MessageCost | None = None
    idle: IdleCost | None = None

    def to_json(self) -> dict[str, Any]:
        """``class`` is an entry for a cluster file's ``classes`` as it stands."""
        rpc = {} if self.rpc is None else {"rpc": self.rpc.to_json()}
        idle = {} if self.idle is None else {"idle": self.idle.to_json()}
        return {"name": self.name, "cpus": self.cpus, "speed_factor": self.speed_factor, **rpc,
                **idle,
                "class": {"memory_bytes": self.memory_bytes, "flops_per_s": self.flops_per_s,
                          "memory_bandwidth_bytes_per_s": self.memory_bandwidth_bytes_per_s,
                          "description": f"{self.name}: {self.cpus:g} usable CPUs",
                          "source": self.source}}


def probe(repeats: int = 10, cgroup_root: Path = Path("/sys/fs/cgroup"),
          proc: Path = Path("/proc"), rpc: bool = True, idle: bool = True) -> ProbeResult:
    """Measure this machine (see the module docstring); ``rpc`` False: not the message cost;
    ``idle`` False: not the idle cost."""
    cpus = float(len(os.sched_getaffinity(0)))
    quota = cgroup_cpu_limit(cgroup_root, proc / "self" / "cgroup")
    memory = min(_mem_total(proc / "meminfo"),
                 cgroup_memory_limit(cgroup_root, proc / "self" / "cgroup") or _UNLIMITED)
    usable = min(cpus, quota) if quota else cpus
    flops, bandwidth = benchmark(repeats, threads=max(1, int(usable)))
    host = load_catalog().host_flops_per_s
    return ProbeResult(
        name=f"probed:{platform.node() or 'host'}",
        cpus=usable,
        memory_bytes=memory,
        flops_per_s=float(f"{flops:.4g}"),
        memory_bandwidth_bytes_per_s=float(f"{bandwidth:.4g}"),
        speed_factor=round(host / flops, 4),
        source=f"edgepart devices probe on {platform.node() or 'host'} "
               f"({platform.machine()}, {platform.processor() or 'cpu'})",
        rpc=message_cost() if rpc else None,
        idle=idle_cost() if idle else None,
    )


def cgroup_cpu_limit(root: Path, self_cgroup: Path) -> float | None:
    """The smallest CPU quota (in CPUs) on this process's cgroup path, or None when unlimited."""
    limits = []
    for directory in _cgroup_dirs(root, self_cgroup, ("cpu", "cpu,cpuacct")):
        v2 = _read(directory / "cpu.max")
        if v2 is not None:
            quota, _, period = v2.partition(" ")
            if quota != "max" and period:
                limits.append(int(quota) / int(period))
            continue
        quota_us, period_us = _read(directory / "cpu.cfs_quota_us"), _read(
            directory / "cpu.cfs_period_us")
        if quota_us is not None and period_us and int(quota_us) > 0:
            limits.append(int(quota_us) / int(period_us))
    return min(limits) if limits else None


def cgroup_memory_limit(root: Path, self_cgroup: Path) -> int | None:
    """The smallest memory limit (bytes) on this process's cgroup path, or None when unlimited."""
    limits = []
    for directory in _cgroup_dirs(root, self_cgroup, ("memory",)):
        for name in ("memory.max", "memory.limit_in_bytes"):
            text = _read(directory / name)
            if text is not None and text != "max" and int(text) < _UNLIMITED:
                limits.append(int(text))
    return min(limits) if limits else None


def _cgroup_dirs(root: Path, self_cgroup: Path, controllers: tuple[str, ...]) -> Iterator[Path]:
    """Existing cgroup directories from this process's group up to the hierarchy's root.

    v2 (the ``0::/path`` line) lives under ``root``, or ``root/unified`` on a hybrid host; v1
    under ``root/<controller>``. Inside a
    container the recorded path may not exist under ``root``: then only the root is read.
    """
    text = _read(self_cgroup) or ""
    for line in text.splitlines():
        _, names, path = line.split(":", 2)
        if names == "":  # v2; on a hybrid host it is mounted at root/unified
            base = root if (root / "cgroup.controllers").exists() else root / "unified"
        elif names in controllers or set(names.split(",")) & set(controllers):
            base = root / names
        else:
            continue
        directory = base / path.lstrip("/")
        while True:
            if directory.is_dir():
                yield directory
            if directory == base:
                break
            directory = directory.parent


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _mem_total(meminfo: Path) -> int:
    for line in (_read(meminfo) or "").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return _UNLIMITED


def benchmark(repeats: int = 10, threads: int | None = None) -> tuple[float, float]:
    """FP32 FLOP/s of the matmul + conv benchmark on ``threads`` torch threads, and copy
    bandwidth in bytes/s; each part is timed by its best of ``repeats`` runs."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from edgepart.profiling.numerics import torch_compute

    generator = torch.Generator().manual_seed(0)
    a = torch.randn(512, 512, generator=generator)
    image = torch.randn(1, 64, 56, 56, generator=generator)
    weight = torch.randn(64, 64, 3, 3, generator=generator)
    src = torch.ones(16 * 1024 * 1024)  # 64 MiB of float32
    dst = torch.zeros_like(src)
    parts: list[Callable[[], Any]] = [
        lambda: torch.mm(a, a), lambda: torch.nn.functional.conv2d(image, weight, padding=1)]
    with torch.inference_mode(), torch_compute(threads):
        with FlopCounterMode(display=False) as counter:
            for part in parts:
                part()
        flops = counter.get_total_flops() / sum(_best_time(p, repeats) for p in parts)
        copy_bytes = 2 * src.numel() * src.element_size()
        bandwidth = copy_bytes / _best_time(lambda: dst.copy_(src), repeats)
    return flops, bandwidth


def _best_time(fn: Callable[[], Any], repeats: int) -> float:
    """The shortest of ``repeats`` timed runs after two untimed ones: the machine's capability,
    robust to other programs sharing the cores."""
    for _ in range(2):
        fn()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best
