"""Cluster descriptions: devices (catalog classes or classes of their own) and links between them.

A cluster file is one JSON object (``docs/profiling.md`` has examples)::

    {"name": "lab",
     "classes": {"myboard": {"memory_bytes": 2e9, "flops_per_s": 5e10, "source": "..."}},
     "devices": [{"class": "rpi4", "count": 2}, {"id": "srv", "class": "nuc_cpu",
                  "memory_bytes": 1e9, "tier": "wired"}],
     "generator": {"kind": "ethernet", "bandwidth_mbit_s": 1000, "latency_s": 0.0005},
     "source": "rpi4-0", "sink": "rpi4-0"}

``devices`` entries name a ``class`` (the catalog's or one of ``classes``), optionally an ``id``
(default ``CLASS-K``, counting per class), a ``count``, a ``memory_bytes`` override (the memory the
model may use on that device) and a ``tier`` for the ``mixed`` generator. Links are either given
as ``links`` in the instance format (``default`` / ``matrix`` / ``pairs``) or made by a
``generator``, deterministically (for a ``seed`` where the generator is random):

* ``ethernet``: every ordered pair has ``bandwidth_mbit_s`` (default 1000) and ``latency_s``
  (default 0.0005): a switched wired LAN.
* ``wireless``: the model of SEIFER (ANRG, USC): devices placed uniformly at random in a
  ``side_m`` x ``side_m`` square (default 150 m) from ``seed``; the link between devices ``d``
  metres apart has ``log2(1 + 283230 / d^2)`` Mbit/s (``d`` is floored at 1 m), and ``latency_s``
  (default 0.001). Positions are kept in the cluster's ``meta``.
* ``mixed``: devices of ``tier`` ``"wifi"`` (the default) reach each other through one access
  point and ``"wired"`` devices (an edge server) sit on its wired side. wired-wired:
  ``wired_mbit_s`` (1000), ``wired_latency_s`` (0.0005); wifi-wired: ``wifi_mbit_s`` (100), the
  sum of both latencies (0.002 + 0.0005); wifi-wifi: two hops on one shared channel, so
  ``wifi_mbit_s / 2`` and twice ``wifi_latency_s``.

1 Mbit/s is 125000 bytes/s.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from edgepart.errors import InputError
from edgepart.profiling.catalog import (
    Catalog,
    DeviceClass,
    load_catalog,
    parse_device_class,
    positive,
)

__all__ = [
    "GENERATORS", "Cluster", "ClusterDevice", "cluster_to_json", "ethernet_links",
    "instance_devices", "load_cluster", "mixed_links", "seifer_bandwidth_mbit_s",
    "wireless_links",
]

BYTES_PER_MBIT = 125_000.0
TIERS = ("wifi", "wired")


@dataclass(frozen=True, slots=True)
class ClusterDevice:
    """One device: its id, class, the memory the model may use on it, and its network tier."""

    id: str
    device_class: DeviceClass
    memory_bytes: int
    tier: str | None = None


@dataclass(frozen=True, slots=True)
class Cluster:
    """Devices and links; ``links`` is instance-format JSON (``docs/instance-format.md``)."""

    name: str
    devices: tuple[ClusterDevice, ...]
    links: Mapping[str, Any]
    source: str | None = None
    sink: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def classes(self) -> tuple[DeviceClass, ...]:
        """The distinct device classes, sorted by name."""
        return tuple(sorted({d.device_class.name: d.device_class for d in self.devices}.values(),
                            key=lambda c: c.name))


def seifer_bandwidth_mbit_s(distance_m: float) -> float:
    """SEIFER's wireless link model: ``log2(1 + 283230 / d^2)`` Mbit/s, ``d`` floored at 1 m."""
    d = max(distance_m, 1.0)
    return math.log2(1.0 + 283230.0 / (d * d))


def ethernet_links(
    *, bandwidth_mbit_s: float = 1000.0, latency_s: float = 0.0005
) -> dict[str, Any]:
    """Uniform links: one ``default`` for every ordered pair."""
    return {"default": {"bandwidth_bytes_per_s": _bytes_per_s(bandwidth_mbit_s),
                        "latency_s": latency_s}}


def wireless_links(n: int, *, seed: int, side_m: float = 150.0,
                   latency_s: float = 0.001) -> tuple[dict[str, Any], list[list[float]]]:
    """SEIFER links for ``n`` devices placed from ``seed``; returns links and positions (m)."""
    rng = random.Random(seed)
    pos = [[round(rng.uniform(0.0, side_m), 3), round(rng.uniform(0.0, side_m), 3)]
           for _ in range(n)]

    def bandwidth(i: int, j: int) -> float:
        dist = math.dist(pos[i], pos[j])
        return _bytes_per_s(seifer_bandwidth_mbit_s(dist))

    return _matrix(n, bandwidth, lambda i, j: latency_s), pos


def mixed_links(tiers: Sequence[str], *, wifi_mbit_s: float = 100.0,
                wifi_latency_s: float = 0.002, wired_mbit_s: float = 1000.0,
                wired_latency_s: float = 0.0005) -> dict[str, Any]:
    """Wi-Fi devices behind one access point plus wired devices (see the module docstring)."""
    def link(i: int, j: int) -> tuple[float, float]:
        wifi_hops = (tiers[i] == "wifi") + (tiers[j] == "wifi")
        if wifi_hops == 0:
            return wired_mbit_s, wired_latency_s
        if wifi_hops == 1:
            return min(wifi_mbit_s, wired_mbit_s), wifi_latency_s + wired_latency_s
        return wifi_mbit_s / 2.0, 2.0 * wifi_latency_s

    n = len(tiers)
    return _matrix(n, lambda i, j: _bytes_per_s(link(i, j)[0]), lambda i, j: link(i, j)[1])


def _matrix(n: int, bandwidth: Callable[[int, int], float],
            latency: Callable[[int, int], float]) -> dict[str, Any]:
    def grid(f: Callable[[int, int], float]) -> list[list[float]]:
        return [[0.0 if i == j else _round(f(i, j)) for j in range(n)] for i in range(n)]

    return {"matrix": {"bandwidth_bytes_per_s": grid(bandwidth), "latency_s": grid(latency)}}


def _bytes_per_s(mbit_s: float) -> float:
    return _round(mbit_s * BYTES_PER_MBIT)


def _round(x: float) -> float:
    return float(f"{x:.6g}")


GENERATORS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "ethernet": ("bandwidth_mbit_s", "latency_s"),
    "wireless": ("seed", "side_m", "latency_s"),
    "mixed": ("wifi_mbit_s", "wifi_latency_s", "wired_mbit_s", "wired_latency_s"),
})


def load_cluster(src: str | Path | Mapping[str, Any]) -> Cluster:
    """Read and validate a cluster file (or an already parsed object)."""
    data = _read(src)
    unknown = set(data) - {"name", "description", "classes", "devices", "links", "generator",
                           "source", "sink", "meta"}
    if unknown:
        raise InputError(f"cluster: unknown field(s) {', '.join(sorted(unknown))}")
    classes = _classes(data.get("classes", {}), load_catalog())
    devices = _devices(data.get("devices"), classes)
    has_links, has_generator = "links" in data, "generator" in data
    if has_links == has_generator:
        raise InputError("cluster: give exactly one of 'links' and 'generator'")
    meta: dict[str, Any] = dict(data.get("meta", {}))
    if has_links:
        links = _check_links(data["links"], [d.id for d in devices])
    else:
        links, generated = _generate(data["generator"], devices)
        meta.update(generated)
    ids = [d.id for d in devices]
    return Cluster(
        name=str(data.get("name", "cluster")), devices=devices, links=links,
        source=_endpoint(data.get("source"), ids, "source"),
        sink=_endpoint(data.get("sink"), ids, "sink"), meta=meta,
    )


def _read(src: str | Path | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(src, Mapping):
        return src
    try:
        data = json.loads(Path(src).read_text())
    except OSError as err:
        raise InputError(f"--cluster: cannot read {str(src)!r}: {err.strerror}") from None
    except json.JSONDecodeError as err:
        raise InputError(f"--cluster: {str(src)!r} is not JSON: {err.msg} at line "
                         f"{err.lineno}") from None
    if not isinstance(data, dict):
        raise InputError(f"--cluster: {str(src)!r} must hold a JSON object")
    return data


def _classes(data: Any, catalog: Catalog) -> dict[str, DeviceClass]:
    if not isinstance(data, Mapping):
        raise InputError("cluster.classes: expected an object of class name -> class")
    own = {name: parse_device_class(name, entry, f"cluster.classes.{name}")
           for name, entry in data.items()}
    return {**catalog.classes, **own}


def _devices(data: Any, classes: Mapping[str, DeviceClass]) -> tuple[ClusterDevice, ...]:
    if not isinstance(data, list) or not data:
        raise InputError("cluster.devices: expected a non-empty list of devices")
    devices: list[ClusterDevice] = []
    per_class: dict[str, int] = {}
    for i, entry in enumerate(data):
        devices.extend(_expand(entry, f"cluster.devices[{i}]", classes, per_class))
    seen: set[str] = set()
    for d in devices:
        if d.id in seen:
            raise InputError(f"cluster.devices: duplicate device id {d.id!r}")
        seen.add(d.id)
    return tuple(devices)


def _expand(entry: Any, where: str, classes: Mapping[str, DeviceClass],
            per_class: dict[str, int]) -> list[ClusterDevice]:
    if not isinstance(entry, Mapping):
        raise InputError(f"{where}: expected an object with a 'class'")
    unknown = set(entry) - {"id", "class", "count", "memory_bytes", "tier"}
    if unknown:
        raise InputError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    name = str(entry.get("class"))
    if name not in classes:
        raise InputError(f"{where}.class: unknown device class {name!r} "
                         f"(known: {', '.join(sorted(classes))})")
    cls = classes[name]
    count = entry.get("count", 1)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise InputError(f"{where}.count: expected an integer >= 1, got {count!r}")
    tier = entry.get("tier")
    if tier is not None and tier not in TIERS:
        raise InputError(f"{where}.tier: expected one of {', '.join(TIERS)}, got {tier!r}")
    memory = int(positive(entry.get("memory_bytes", cls.memory_bytes), f"{where}.memory_bytes"))
    base = entry.get("id")
    out = []
    for k in range(count):
        if base is None:
            dev_id = f"{name}-{per_class.get(name, 0)}"
            per_class[name] = per_class.get(name, 0) + 1
        else:
            dev_id = str(base) if count == 1 else f"{base}-{k}"
        out.append(ClusterDevice(dev_id, cls, memory, tier))
    return out


def _check_links(links: Any, ids: Sequence[str]) -> Mapping[str, Any]:
    if not isinstance(links, Mapping) or not ({"default", "matrix"} & set(links)):
        raise InputError("cluster.links: expected an object with 'default' and/or 'matrix'")
    n = len(ids)
    if "default" in links:
        _check_link(links["default"], "cluster.links.default")
    if "matrix" in links:
        for key in ("bandwidth_bytes_per_s", "latency_s"):
            rows = links["matrix"].get(key) if isinstance(links["matrix"], Mapping) else None
            if (not isinstance(rows, list) or len(rows) != n
                    or any(not isinstance(r, list) or len(r) != n for r in rows)):
                raise InputError(f"cluster.links.matrix.{key}: expected a {n}x{n} list of lists "
                                 "(rows and columns in device order)")
    for i, pair in enumerate(links.get("pairs", [])):
        where = f"cluster.links.pairs[{i}]"
        _check_link(pair, where)
        for end in ("src", "dst"):
            if pair.get(end) not in ids:
                raise InputError(f"{where}.{end}: unknown device id {pair.get(end)!r}")
    return links


def _check_link(link: Any, where: str) -> None:
    if not isinstance(link, Mapping):
        raise InputError(f"{where}: expected an object")
    positive(link.get("bandwidth_bytes_per_s"), f"{where}.bandwidth_bytes_per_s")
    _non_negative(link.get("latency_s", 0.0), f"{where}.latency_s")


def _non_negative(value: Any, where: str) -> None:
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value) or value < 0):
        raise InputError(f"{where}: expected a finite number >= 0, got {value!r}")


def _generate(spec: Any, devices: Sequence[ClusterDevice]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Links from a generator spec, and what to record in the cluster's meta."""
    if not isinstance(spec, Mapping) or spec.get("kind") not in GENERATORS:
        raise InputError(f"cluster.generator.kind: expected one of {', '.join(GENERATORS)}")
    kind = str(spec["kind"])
    params = {k: v for k, v in spec.items() if k != "kind"}
    unknown = set(params) - set(GENERATORS[kind])
    if unknown:
        raise InputError(f"cluster.generator: unknown parameter(s) {', '.join(sorted(unknown))} "
                         f"for {kind} (known: {', '.join(GENERATORS[kind])})")
    for key, value in params.items():
        if key.endswith("latency_s"):
            _non_negative(value, f"cluster.generator.{key}")
        elif key != "seed":
            positive(value, f"cluster.generator.{key}")
    meta: dict[str, Any] = {"generator": dict(spec)}
    if kind == "ethernet":
        return ethernet_links(**params), meta
    if kind == "mixed":
        return mixed_links([d.tier or "wifi" for d in devices], **params), meta
    seed = params.pop("seed", None)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InputError(f"cluster.generator.seed: the wireless generator needs an integer seed, "
                         f"got {seed!r}")
    links, positions = wireless_links(len(devices), seed=seed, **params)
    meta["positions_m"] = {d.id: p for d, p in zip(devices, positions, strict=True)}
    return links, meta


def _endpoint(value: Any, ids: Sequence[str], name: str) -> str | None:
    if value is None or value in ids:
        return value
    raise InputError(f"cluster.{name}: unknown device id {value!r}")


def cluster_to_json(cluster: Cluster) -> dict[str, Any]:
    """The explicit form of a cluster (links written out, classes of its own included)."""
    catalog = load_catalog()
    own = {c.name: _class_json(c) for c in cluster.classes
           if catalog.classes.get(c.name) != c}
    devices = [{"id": d.id, "class": d.device_class.name, "memory_bytes": d.memory_bytes,
                **({"tier": d.tier} if d.tier else {})} for d in cluster.devices]
    out: dict[str, Any] = {"name": cluster.name}
    if own:
        out["classes"] = own
    out.update(devices=devices, links=dict(cluster.links))
    out.update({k: v for k, v in (("source", cluster.source), ("sink", cluster.sink)) if v})
    out["meta"] = dict(cluster.meta)
    return out


def instance_devices(cluster: Cluster) -> list[dict[str, Any]]:
    """The ``devices`` of an instance on ``cluster``: id, class, memory and FLOP/s, and, where
    the class has a CPU share, ``meta.cpus`` (the share ``edgepart run --emulate stretch`` and
    ``cgroup`` give the device's worker)."""
    return [{"id": d.id, "class": d.device_class.name, "memory_bytes": d.memory_bytes,
             "flops_per_s": d.device_class.flops_per_s,
             **({"meta": {"cpus": d.device_class.cpus}} if d.device_class.cpus else {})}
            for d in cluster.devices]


def _class_json(c: DeviceClass) -> dict[str, Any]:
    """A class entry as :func:`~edgepart.profiling.catalog.parse_device_class` reads it back:
    every field, the optional ones where set."""
    data: dict[str, Any] = {"memory_bytes": c.memory_bytes, "flops_per_s": c.flops_per_s,
                            "description": c.description, "source": c.source}
    optional = {"memory_bandwidth_bytes_per_s": c.memory_bandwidth_bytes_per_s,
                "cores": c.cores, "cpus": c.cpus}
    data.update({key: value for key, value in optional.items() if value is not None})
    return data
