"""PipeDream profiler graphs (Narayanan et al., SOSP 2019; github.com/msr-fiddle/pipedream,
``graph/graph.py``) as edgepart instances.

The file has one line per node and one tab-indented line per edge::

    node2 -- Conv2d(3, 64, ...) -- forward_compute_time=22.316, backward_compute_time=6.405,
        activation_size=198246400.000, parameter_size=93184.000      (all on one line)
    <TAB>node1 -- node2

optionally followed by `` -- stage_id=N`` (partitioned graphs; ignored). ``activation_size`` may
be a list ``[a; b]`` (a node with several outputs; they are summed, as PipeDream does). Times are
milliseconds and sizes bytes for one minibatch of :data:`PROFILED_BATCH` (256) samples, fp32, as
profiled on one GPU (``profiled_batch`` says otherwise: the published vgg16 profile's activations
are those of a batch of 128). Below, 256 stands for ``profiled_batch``.

=========================  ====================================================================
PipeDream                  edgepart
=========================  ====================================================================
node id (``node2``)        layer ``id``; layers in a topological order (ties: natural id order)
description                ``op`` = its head (``Conv2d``), ``meta.desc`` = all of it
``forward_compute_time``   ``time_s[C]`` = ms / 1000 x ``batch_size / 256`` for the class ``C``
                           named by ``profiled_on``; another class ``D`` gets that x
                           ``factor(D) / factor(C)`` (catalog speed factors: time multipliers
                           relative to one host)
``backward_compute_time``  ``meta.backward_s`` (inference only: not in the cost model)
``activation_size``        ``output_bytes`` and the bytes of every out-edge, x ``batch_size / 256``
``parameter_size``         ``param_bytes`` (not scaled)
edge ``a -- b``            model edge ``a -> b``
``Input`` node(s)          not layers: their activation is ``model.input_bytes`` (summed over
                           several) and their time (data loading) is dropped; the nodes they
                           fed become the entry layers
=========================  ====================================================================

Approximations (also in ``docs/interop.md``): times scale linearly with the batch size (a GPU is
less efficient at small batches, so small-batch times are optimistic); one speed factor per class
for every layer, and FLOPs are unknown (``flops = 0``). Devices, links, source and sink come from
the cluster.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgepart.errors import InputError
from edgepart.files import read_text
from edgepart.instance import Instance
from edgepart.interop._common import stable_topological_order, validated_instance
from edgepart.profiling.catalog import DeviceClass, load_catalog
from edgepart.profiling.clusters import Cluster, instance_devices

__all__ = ["PROFILED_BATCH", "PipeDreamGraph", "PipeDreamNode", "instance_data",
           "parse_pipedream", "read_pipedream", "time_scales", "to_instance"]

PROFILED_BATCH = 256
_METRICS = ("forward_compute_time", "backward_compute_time", "activation_size", "parameter_size")


@dataclass(frozen=True, slots=True)
class PipeDreamNode:
    id: str
    desc: str
    forward_ms: float
    backward_ms: float
    activation_bytes: float
    parameter_bytes: float

    @property
    def is_input(self) -> bool:
        return self.desc.split("(")[0].strip() == "Input"


@dataclass(frozen=True)
class PipeDreamGraph:
    nodes: tuple[PipeDreamNode, ...]
    edges: tuple[tuple[str, str], ...]


def parse_pipedream(text: str, where: str = "graph") -> PipeDreamGraph:
    """Parse a profile; every bad line is reported as ``WHERE:LINE: problem``."""
    nodes: dict[str, PipeDreamNode] = {}
    edges: list[tuple[int, str, str]] = []
    problems: list[str] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            if line.startswith("\t"):
                edges.append((lineno, *_edge(line)))
            else:
                node = _node(line)
                if node.id in nodes:
                    raise ValueError(f"duplicate node id '{node.id}'")
                nodes[node.id] = node
        except ValueError as err:
            problems.append(f"{where}:{lineno}: {err}")
    for lineno, src, dst in edges:
        for end in (src, dst):
            if end not in nodes:
                problems.append(f"{where}:{lineno}: edge {src} -- {dst}: unknown node '{end}'")
    if not nodes and not problems:
        problems.append(f"{where}: no node lines")
    if problems:
        raise InputError(problems)
    unique = list(dict.fromkeys((s, d) for _, s, d in edges))
    return PipeDreamGraph(tuple(nodes.values()), tuple(unique))


def _edge(line: str) -> tuple[str, str]:
    parts = [p.strip() for p in line.strip().split(" -- ")]
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"edge line must be '<tab>SRC -- DST', got {line.strip()!r}")
    if parts[0] == parts[1]:
        raise ValueError(f"self-loop on '{parts[0]}'")
    return parts[0], parts[1]


def _node(line: str) -> PipeDreamNode:
    parts = line.strip().split(" -- ")
    at = next((i for i, p in enumerate(parts) if p.startswith(_METRICS[0] + "=")), None)
    if at is None or at < 2:
        raise ValueError("node line must be 'ID -- DESCRIPTION -- forward_compute_time=..., "
                         f"backward_compute_time=..., activation_size=..., parameter_size=...', "
                         f"got {line.strip()[:80]!r}")
    values = _metrics(parts[at])
    return PipeDreamNode(id=parts[0].strip(), desc=" -- ".join(parts[1:at]).strip(),
                         forward_ms=values["forward_compute_time"],
                         backward_ms=values["backward_compute_time"],
                         activation_bytes=values["activation_size"],
                         parameter_bytes=values["parameter_size"])


def _metrics(text: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for item in re.split(r",\s*(?=\w+=)", text.strip()):
        key, _, value = item.partition("=")
        if key in _METRICS:
            found[key] = _number(key, value)
    missing = [k for k in _METRICS if k not in found]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    return found


def _number(key: str, value: str) -> float:
    text = value.strip()
    try:
        if text.startswith("["):
            x = sum(float(v) for v in text.strip("[]").split(";") if v.strip())
        else:
            x = float(text)
    except ValueError:
        raise ValueError(f"{key}: not a number: {text!r}") from None
    if not (math.isfinite(x) and x >= 0):
        raise ValueError(f"{key}: must be a finite number >= 0, got {text}")
    return x


def read_pipedream(path: str | Path) -> PipeDreamGraph:
    return parse_pipedream(read_text(path), str(path))


def _natural_key(node_id: str) -> tuple[Any, ...]:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", node_id))


def to_instance(graph: PipeDreamGraph, cluster: Cluster, *,
                profiled_on: str | DeviceClass | None = None, batch_size: int = PROFILED_BATCH,
                profiled_batch: int = PROFILED_BATCH, name: str = "pipedream") -> Instance:
    """The validated instance of :func:`instance_data`."""
    data = instance_data(graph, cluster, profiled_on=profiled_on, batch_size=batch_size,
                         profiled_batch=profiled_batch, name=name)
    return validated_instance(data, name)


def instance_data(graph: PipeDreamGraph, cluster: Cluster, *,
                  profiled_on: str | DeviceClass | None = None, batch_size: int = PROFILED_BATCH,
                  profiled_batch: int = PROFILED_BATCH, name: str = "pipedream") -> dict[str, Any]:
    """The instance JSON of ``graph`` on ``cluster``.

    The measured times belong to class ``profiled_on``: a :class:`DeviceClass`, or the name of
    a class of the cluster or the catalog (default: the cluster's class with the most FLOP/s,
    since the profiles come from a GPU) at batch ``profiled_batch``; one request of
    the instance is a batch of ``batch_size``. See the module docstring for every rule.
    """
    for flag, value in (("--batch-size", batch_size), ("--profiled-batch", profiled_batch)):
        if value < 1:
            raise InputError(f"{flag}: must be >= 1, got {value}")
    scale = time_scales(cluster, profiled_on)
    ratio = batch_size / profiled_batch
    has_pred = {d for _, d in graph.edges}
    inputs = {n.id for n in graph.nodes if n.is_input and n.id not in has_pred}
    kept = sorted((n for n in graph.nodes if n.id not in inputs), key=lambda n: _natural_key(n.id))
    if not kept:
        raise InputError("the graph has only Input nodes")
    by_id = {n.id: n for n in kept}
    model_edges = [(s, d) for s, d in graph.edges if s not in inputs]
    order = stable_topological_order([n.id for n in kept], model_edges)
    measured_on = _profiled_class(cluster, profiled_on).name
    data: dict[str, Any] = {
        "format_version": 1, "name": name,
        "description": f"PipeDream profile '{name}' at batch size {batch_size}, measured times on "
                       f"class {measured_on}, cluster {cluster.name}",
        "model": {"name": name,
                  "input_bytes": sum(n.activation_bytes for n in graph.nodes
                                     if n.id in inputs) * ratio,
                  "layers": [_layer(by_id[v], scale, ratio) for v in order],
                  "edges": [{"src": s, "dst": d, "bytes": by_id[s].activation_bytes * ratio}
                            for s, d in model_edges]},
        "devices": instance_devices(cluster),
        "links": dict(cluster.links),
        "meta": {"imported_from": "pipedream", "profiled_batch": profiled_batch,
                 "batch_size": batch_size, "profiled_on": measured_on,
                 "time_scale_by_class": scale},
    }
    data.update({k: v for k, v in (("source", cluster.source), ("sink", cluster.sink)) if v})
    return data


def _profiled_class(cluster: Cluster, profiled_on: str | DeviceClass | None) -> DeviceClass:
    if isinstance(profiled_on, DeviceClass):
        return profiled_on
    if profiled_on is None:
        return max(cluster.classes, key=lambda c: (c.flops_per_s, c.name))
    own = {c.name: c for c in cluster.classes}
    return own[profiled_on] if profiled_on in own else load_catalog().get(profiled_on,
                                                                          "--profiled-on")


def time_scales(cluster: Cluster, profiled_on: str | DeviceClass | None = None) -> dict[str, float]:
    """Device class of the cluster -> multiplier of the profiled times: the ratio of the catalog
    speed factors (time multipliers relative to the catalog's reference host)."""
    host = load_catalog().host_flops_per_s
    base = _profiled_class(cluster, profiled_on).speed_factor(host)
    return {c.name: c.speed_factor(host) / base for c in cluster.classes}


def _layer(node: PipeDreamNode, scale: Mapping[str, float], ratio: float) -> dict[str, Any]:
    seconds = node.forward_ms / 1000.0 * ratio
    return {"id": node.id, "op": node.desc.split("(")[0].strip() or "node", "flops": 0.0,
            "param_bytes": node.parameter_bytes, "output_bytes": node.activation_bytes * ratio,
            "time_s": {c: seconds * k for c, k in scale.items()},
            "meta": {"desc": node.desc, "backward_s": node.backward_ms / 1000.0 * ratio}}
