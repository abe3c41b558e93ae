"""The device catalog: classes of edge devices, read from ``catalog.json`` (data, not code).

Each class has its RAM (``memory_bytes``), its peak FP32 throughput (``flops_per_s``), its DRAM
bandwidth (``memory_bandwidth_bytes_per_s``, used by the roofline time model and the learned
estimator), its ``cores`` (the compute units its ``flops_per_s`` counts: CPU cores, or CUDA
cores for a GPU; optional, a feature of the learned estimator, :mod:`edgepart.profiling.
estimator`), for a class emulated under a CPU quota its ``cpus`` (optional, the quota in CPUs,
another estimator feature) and a ``source`` string naming the public specification the numbers
come from.

Speed model. Layers are timed on the profiling host, single-threaded by default (far steadier on
a shared machine); a layer's time on class ``c`` is the host time times the class's *speed
factor* ``host_flops_per_s / c.flops_per_s``, where ``host_flops_per_s`` is the catalog's
``reference_host``: the probe benchmark on one thread of the machine that generated the shipped
instances, unless the caller measures or gives another. ``c.flops_per_s`` is the whole device.
This is a first-order model: it assumes every layer runs at the same fraction of peak on every
device, which flatters devices (GPUs above all) that reach a smaller fraction of their peak at
batch 1. Clusters may define their own classes with measured numbers
(:mod:`edgepart.profiling.clusters`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Any

from edgepart.errors import InputError

__all__ = ["Catalog", "DeviceClass", "load_catalog", "parse_device_class"]


@dataclass(frozen=True, slots=True)
class DeviceClass:
    """One class of device and the public source of its numbers."""

    name: str
    memory_bytes: int
    flops_per_s: float
    memory_bandwidth_bytes_per_s: float | None = None
    description: str = ""
    source: str = ""
    cores: float | None = None
    cpus: float | None = None

    @property
    def quota(self) -> float:
        """The CPUs this class may use: its ``cpus`` (a quota-limited class such as AMP4EC's
        0.4-CPU container), else its ``cores``, else 1."""
        return self.cpus or self.cores or 1.0

    def speed_factor(self, host_flops_per_s: float) -> float:
        """Multiplier from a time measured on the host to a time on this class."""
        return host_flops_per_s / self.flops_per_s


@dataclass(frozen=True, slots=True)
class Catalog:
    """The reference host and the known device classes."""

    host_name: str
    host_flops_per_s: float
    host_source: str
    classes: Mapping[str, DeviceClass]

    def get(self, name: str, where: str = "class") -> DeviceClass:
        """The class ``name``; an unknown name is an :class:`InputError` listing the known ones."""
        try:
            return self.classes[name]
        except KeyError:
            known = ", ".join(sorted(self.classes))
            raise InputError(f"{where}: unknown device class {name!r} (known: {known})") from None


@cache
def load_catalog() -> Catalog:
    """Read the packaged ``catalog.json``."""
    text = resources.files("edgepart.profiling").joinpath("catalog.json").read_text()
    data = json.loads(text)
    host = data["reference_host"]
    classes = {name: parse_device_class(name, entry, f"catalog.classes.{name}")
               for name, entry in data["classes"].items()}
    return Catalog(host["name"], float(host["flops_per_s"]), host["source"],
                   MappingProxyType(classes))


def parse_device_class(name: str, data: Any, where: str) -> DeviceClass:
    """Validate one class entry (catalog or cluster file); errors name the field by ``where``."""
    if not isinstance(data, Mapping):
        raise InputError(f"{where}: expected an object, got {type(data).__name__}")
    unknown = set(data) - {"memory_bytes", "flops_per_s", "memory_bandwidth_bytes_per_s",
                           "description", "source", "cores", "cpus"}
    if unknown:
        raise InputError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    bandwidth, cores = data.get("memory_bandwidth_bytes_per_s"), data.get("cores")
    return DeviceClass(
        name=name,
        memory_bytes=int(positive(data.get("memory_bytes"), f"{where}.memory_bytes")),
        flops_per_s=positive(data.get("flops_per_s"), f"{where}.flops_per_s"),
        memory_bandwidth_bytes_per_s=(
            None if bandwidth is None
            else positive(bandwidth, f"{where}.memory_bandwidth_bytes_per_s")
        ),
        description=str(data.get("description", "")),
        source=str(data.get("source", "")),
        cores=None if cores is None else positive(cores, f"{where}.cores"),
        cpus=None if data.get("cpus") is None else positive(data["cpus"], f"{where}.cpus"),
    )


def positive(value: Any, where: str) -> float:
    """``value`` as a float if it is a finite number > 0, else an :class:`InputError`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{where}: expected a number > 0, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise InputError(f"{where}: must be a finite number > 0, got {value!r}")
    return float(value)
