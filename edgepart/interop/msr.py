"""The MSR device-placement benchmark format (Tarnawski et al., "Efficient Algorithms for Device
Placement of DNN Graph Operators", NeurIPS 2020; github.com/msr-fiddle/dnn-partitioning).

Input files map to an edgepart instance as follows (``docs/interop.md`` has the full table):

=====================  ==========================================================================
MSR field              edgepart
=====================  ==========================================================================
``maxFPGAs``           that many devices ``fpga0..`` of class ``fpga``
``maxSizePerFPGA``     ``memory_bytes`` of each ``fpga`` device
``maxCPUs``            that many devices ``cpu0..`` of class ``cpu`` (unless ``cpus=False``);
                       memory never binds (their CPUs have no memory limit)
``nodes[].id``         layer id ``str(id)`` (``meta.msr_id`` keeps the integer)
``fpgaLatency``        ``time_s.fpga``
``cpuLatency``         ``time_s.cpu``
``supportedOnFpga``    false: ``device_classes = ["cpu"]``
``size``               ``param_bytes`` (their per-node accelerator memory)
``colorClass``         ``model.colocate`` (classes with two or more nodes)
``isBackwardNode``     must be false: training graphs are rejected
``edges[].cost``       tensor bytes ``cost * B`` over a uniform link of bandwidth ``B``, latency 0,
                       so the link time is exactly ``cost``
(implicit)             ``cost_model = {overlap: false, transfer: direct}``, no source or sink
=====================  ==========================================================================

Why this is their objective: an accelerator's load in their model is its compute plus the cost of
every tensor crossing its set's boundary, once per tensor in either direction. With direct
transfers a receiving stage pays ``cost`` once per tensor it receives and a sending stage pays once
per tensor it sends (all links equal), and ``overlap = false`` adds these to the compute; without
source and sink nothing else is charged. Their DP assigns ordered, predecessor-closed blocks to
distinct devices, which are exactly edgepart's pipeline stages.

Their CPUs pay no transfer cost; edgepart's links cannot be free for the CPU only (the accelerator
at the other end pays the same link time). So a CPU stage is charged its transfers too: every
plan's max-load in edgepart is >= its max-load in their model, with equality when no CPU runs a
stage. ``cpus=False`` (``--no-cpus``) drops the CPUs and makes the accounting exact.

The memory model adds send and receive buffers (tensor bytes) to each stage; with the default
``B = 1`` byte/s per cost unit the buffers are ``cost`` bytes, negligible next to the accelerator
memory, so the memory constraint is theirs too. Times are copied as they are (their unit; the
published layer graphs use milliseconds), so max-loads equal the paper's numbers.

Split files (``{"maxLoad", "fpgas": [{"load", "nodes"}], "cpus": [...]}``) convert both ways with
:func:`split_to_plan` and :func:`plan_to_split`.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgepart.cost import evaluate, validate_plan
from edgepart.errors import InputError
from edgepart.files import read_json
from edgepart.instance import Instance
from edgepart.interop._common import stable_topological_order, validated_instance
from edgepart.plan import Plan, Stage

__all__ = [
    "COST_TOL",
    "CPU_CLASS",
    "FPGA_CLASS",
    "MsrEdge",
    "MsrGraph",
    "MsrNode",
    "MsrSplit",
    "instance_data",
    "parse_msr",
    "parse_split",
    "plan_to_split",
    "read_msr",
    "read_split",
    "split_to_plan",
    "to_instance",
]

FPGA_CLASS = "fpga"
CPU_CLASS = "cpu"
COST_TOL = 1e-6
"""Out-edge costs of one node may differ by this much (absolute), as in their ``dp.cpp``."""


@dataclass(frozen=True, slots=True)
class MsrNode:
    id: int
    name: str
    supported_on_fpga: bool
    cpu_latency: float
    fpga_latency: float
    size: float
    color_class: int | None


@dataclass(frozen=True, slots=True)
class MsrEdge:
    source: int
    dest: int
    cost: float


@dataclass(frozen=True)
class MsrGraph:
    """One MSR input file (inference graphs only)."""

    max_size_per_fpga: float
    max_fpgas: int
    max_cpus: int
    nodes: tuple[MsrNode, ...]
    edges: tuple[MsrEdge, ...]

    def out_cost(self) -> dict[int, float]:
        """Node id -> the transfer cost of its output (the cost of its first out-edge)."""
        cost: dict[int, float] = {}
        for e in self.edges:
            cost.setdefault(e.source, e.cost)
        return cost


@dataclass(frozen=True, slots=True)
class MsrSplit:
    """A split file: node ids per accelerator and per CPU, in the file's order."""

    fpgas: tuple[tuple[int, ...], ...]
    cpus: tuple[tuple[int, ...], ...]


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


class _Reader:
    """Collects every problem with its JSON path."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def bad(self, path: str, msg: str) -> None:
        self.problems.append(f"{path}: {msg}")

    @staticmethod
    def at(path: str, key: str) -> str:
        return f"{path}.{key}" if path else key

    def fields(self, data: Any, path: str, required: Sequence[str]) -> Mapping[str, Any] | None:
        if not isinstance(data, Mapping):
            self.bad(path, f"must be an object, got {type(data).__name__}")
            return None
        for key in required:
            if key not in data:
                self.bad(path, f"missing required field '{key}'")
        return data

    def num(self, d: Mapping[str, Any], key: str, path: str, default: float | None = None,
            positive: bool = False) -> float:
        value = d.get(key, default)
        if value is None:
            return 0.0  # missing: already reported
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
              and math.isfinite(value) and (value > 0 if positive else value >= 0))
        if not ok:
            self.bad(self.at(path, key), f"must be a finite number {'>' if positive else '>='} 0, "
                     f"got {json.dumps(value)}")
            return 0.0
        return float(value)

    def integer(self, d: Mapping[str, Any], key: str, path: str) -> int:
        value = d.get(key)
        if value is None:
            return 0
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            self.bad(self.at(path, key), f"must be an integer >= 0, got {json.dumps(value)}")
            return 0
        return value

    def flag(self, d: Mapping[str, Any], key: str, path: str) -> bool:
        value = d.get(key, False)
        if value not in (True, False, 0, 1):
            self.bad(self.at(path, key), f"must be true, false, 0 or 1, got {json.dumps(value)}")
            return False
        return bool(value)

    def array(self, d: Mapping[str, Any], key: str, path: str) -> list[Any]:
        value = d.get(key, [])
        if not isinstance(value, list):
            self.bad(self.at(path, key), "must be an array")
            return []
        return value

    def node(self, raw: Any, path: str) -> MsrNode | None:
        d = self.fields(raw, path, ("id", "supportedOnFpga", "cpuLatency", "fpgaLatency",
                                    "isBackwardNode"))
        if d is None:
            return None
        if self.flag(d, "isBackwardNode", path):
            self.bad(f"{path}.isBackwardNode", f"node {d.get('id')} is a backward node: training "
                     "graphs are not supported, import the inference graph")
        color = d.get("colorClass")
        if color is not None and (isinstance(color, bool) or not isinstance(color, int)):
            self.bad(f"{path}.colorClass", f"must be an integer, got {json.dumps(color)}")
            color = None
        return MsrNode(id=self.integer(d, "id", path), name=str(d.get("name", "")),
                       supported_on_fpga=self.flag(d, "supportedOnFpga", path),
                       cpu_latency=self.num(d, "cpuLatency", path),
                       fpga_latency=self.num(d, "fpgaLatency", path),
                       size=self.num(d, "size", path, default=0.0), color_class=color)

    def edge(self, raw: Any, path: str, ids: set[int]) -> MsrEdge | None:
        d = self.fields(raw, path, ("sourceId", "destId", "cost"))
        if d is None or any(key not in d for key in ("sourceId", "destId")):
            return None
        ends = (self.integer(d, "sourceId", path), self.integer(d, "destId", path))
        for key, end in zip(("sourceId", "destId"), ends, strict=True):
            if end not in ids:
                self.bad(f"{path}.{key}", f"unknown node id {json.dumps(d[key])}")
        if ends[0] == ends[1]:
            self.bad(path, f"self-loop on node {ends[0]}")
        edge = MsrEdge(ends[0], ends[1], self.num(d, "cost", path))
        return edge if all(end in ids for end in ends) and ends[0] != ends[1] else None


def parse_msr(data: Any) -> MsrGraph:
    """Check an MSR input (already parsed JSON); every problem is reported by its path."""
    r = _Reader()
    top = r.fields(data, "msr", ("maxSizePerFPGA", "maxFPGAs", "maxCPUs", "nodes", "edges"))
    if top is None:
        raise InputError(r.problems)
    nodes = [r.node(x, f"nodes[{i}]") for i, x in enumerate(r.array(top, "nodes", ""))]
    ok_nodes = [n for n in nodes if n is not None]
    seen: dict[int, int] = {}
    for i, n in enumerate(ok_nodes):
        if n.id in seen:
            r.bad(f"nodes[{i}].id", f"duplicate id {n.id} (also nodes[{seen[n.id]}])")
        seen.setdefault(n.id, i)
    if not ok_nodes:
        r.bad("nodes", "must list at least one node")
    ids = set(seen)
    edges = [r.edge(x, f"edges[{k}]", ids) for k, x in enumerate(r.array(top, "edges", ""))]
    ok_edges = [e for e in edges if e is not None]
    _check_costs(r, ok_edges)
    graph = MsrGraph(max_size_per_fpga=r.num(top, "maxSizePerFPGA", "", positive=True),
                     max_fpgas=r.integer(top, "maxFPGAs", ""),
                     max_cpus=r.integer(top, "maxCPUs", ""),
                     nodes=tuple(ok_nodes), edges=tuple(ok_edges))
    if r.problems:
        raise InputError(r.problems)
    stable_topological_order(sorted(ids), [(e.source, e.dest) for e in graph.edges])  # a DAG?
    return graph


def _check_costs(r: _Reader, edges: list[MsrEdge]) -> None:
    first: dict[int, int] = {}
    for k, e in enumerate(edges):
        j = first.setdefault(e.source, k)
        if abs(edges[j].cost - e.cost) > COST_TOL:
            r.bad(f"edges[{k}].cost", f"out-edges of node {e.source} must have one cost (the "
                  f"transfer time of its output), got {edges[j].cost!r} (edges[{j}]) and "
                  f"{e.cost!r}")


def read_msr(path: str | Path) -> MsrGraph:
    """Read and check an MSR input file; problems are prefixed with the file name."""
    try:
        return parse_msr(read_json(path))
    except InputError as err:
        raise InputError([_prefixed(path, p) for p in err.problems]) from None


def _prefixed(path: str | Path, problem: str) -> str:
    return problem if problem.startswith(str(path)) else f"{path}: {problem}"


# ---------------------------------------------------------------------------------------------
# MSR graph -> instance
# ---------------------------------------------------------------------------------------------


def to_instance(graph: MsrGraph, *, name: str = "msr", bandwidth_bytes_per_s: float = 1.0,
                cpus: bool = True) -> Instance:
    """The validated instance of :func:`instance_data`."""
    return validated_instance(instance_data(graph, name=name, cpus=cpus,
                                            bandwidth_bytes_per_s=bandwidth_bytes_per_s), name)


def instance_data(graph: MsrGraph, *, name: str = "msr", bandwidth_bytes_per_s: float = 1.0,
                  cpus: bool = True) -> dict[str, Any]:
    """The instance JSON of an MSR graph (see the module docstring for every rule).

    ``cpus=False`` drops the CPU devices; a node that is not supported on an accelerator then has
    no device and the import fails with an :class:`InputError` naming it.
    """
    if not (bandwidth_bytes_per_s > 0 and math.isfinite(bandwidth_bytes_per_s)):
        raise InputError(f"--bandwidth-bytes-per-s: must be a positive number, got "
                         f"{bandwidth_bytes_per_s}")
    n_cpus = graph.max_cpus if cpus else 0
    _check_devices(graph, n_cpus, dropped=not cpus)
    cost = graph.out_cost()
    by_id = {n.id: n for n in graph.nodes}
    order = stable_topological_order(sorted(by_id),
                                     [(e.source, e.dest) for e in graph.edges])
    layers = [_layer(by_id[v], cost.get(v, 0.0) * bandwidth_bytes_per_s) for v in order]
    edges = _edges(graph, order, cost, bandwidth_bytes_per_s)
    devices = _devices(graph, n_cpus, cpu_memory=max(1.0, sum(n.size for n in graph.nodes)
                                                     + 2 * sum(e["bytes"] for e in edges)))
    return {
        "format_version": 1, "name": name,
        "description": f"MSR device-placement input '{name}' ({graph.max_fpgas} accelerators, "
                       f"{n_cpus} CPUs)",
        "model": {"name": name, "input_bytes": 0.0, "layers": layers, "edges": edges,
                  "colocate": _colocate(graph)},
        "devices": devices,
        "links": {"default": {"bandwidth_bytes_per_s": bandwidth_bytes_per_s, "latency_s": 0.0}},
        "cost_model": {"overlap": False, "transfer": "direct"},
        "meta": {"imported_from": "msr", "bandwidth_bytes_per_s": bandwidth_bytes_per_s,
                 "cpus": _cpu_note(graph.max_cpus, n_cpus)},
    }


def _edges(graph: MsrGraph, order: list[int], cost: dict[int, float], bandwidth: float
           ) -> list[dict[str, Any]]:
    """Model edges (duplicates dropped) in topological order, carrying ``cost x B`` bytes."""
    position = {v: i for i, v in enumerate(order)}
    unique = {(e.source, e.dest): e for e in graph.edges}
    return [{"src": str(u), "dst": str(v), "bytes": cost[u] * bandwidth}
            for u, v in sorted(unique, key=lambda uv: (position[uv[0]], position[uv[1]]))]


def _devices(graph: MsrGraph, n_cpus: int, cpu_memory: float) -> list[dict[str, Any]]:
    """The accelerators, then the CPUs (whose ``cpu_memory`` exceeds anything a stage needs)."""
    return ([{"id": f"fpga{i}", "class": FPGA_CLASS, "memory_bytes": graph.max_size_per_fpga}
             for i in range(graph.max_fpgas)]
            + [{"id": f"cpu{i}", "class": CPU_CLASS, "memory_bytes": cpu_memory}
               for i in range(n_cpus)])


def _check_devices(graph: MsrGraph, n_cpus: int, *, dropped: bool) -> None:
    if graph.max_fpgas + n_cpus == 0:
        raise InputError("maxFPGAs and maxCPUs: the instance would have no device")
    if n_cpus:
        return
    cpu_only = [n.id for n in graph.nodes if not n.supported_on_fpga]
    if cpu_only:
        why = "--no-cpus drops the CPUs" if dropped else "maxCPUs is 0"
        raise InputError(f"node {cpu_only[0]} ({len(cpu_only)} node(s) in all) has "
                         f"supportedOnFpga=false and {why}: no device may run it")


def _layer(node: MsrNode, output_bytes: float) -> dict[str, Any]:
    layer: dict[str, Any] = {
        "id": str(node.id), "op": node.name or "node", "flops": 0.0, "param_bytes": node.size,
        "output_bytes": output_bytes,
        "time_s": {FPGA_CLASS: node.fpga_latency, CPU_CLASS: node.cpu_latency},
        "meta": {"msr_id": node.id, "name": node.name},
    }
    if not node.supported_on_fpga:
        layer["device_classes"] = [CPU_CLASS]
        del layer["time_s"][FPGA_CLASS]
    return layer


def _colocate(graph: MsrGraph) -> list[list[str]]:
    groups: dict[int, list[str]] = defaultdict(list)
    for n in sorted(graph.nodes, key=lambda n: n.id):
        if n.color_class is not None:
            groups[n.color_class].append(str(n.id))
    return [g for g in groups.values() if len(g) > 1]


def _cpu_note(in_file: int, kept: int) -> str:
    if in_file == 0:
        return "none in the file"
    if kept == 0:
        return f"dropped ({in_file} in the file): accounting exact"
    return ("kept; a CPU stage is also charged its transfers (their CPUs pay none): max-load "
            ">= theirs, equal when no CPU runs a stage")


# ---------------------------------------------------------------------------------------------
# Split files <-> plans
# ---------------------------------------------------------------------------------------------


def parse_split(data: Any) -> MsrSplit:
    """Check a split file (``{"fpgas": [{"nodes": [...]}], "cpus": [...]}``; loads ignored)."""
    r = _Reader()
    top = r.fields(data, "split", ("fpgas",))
    if top is None:
        raise InputError(r.problems)
    groups: dict[str, list[tuple[int, ...]]] = {"fpgas": [], "cpus": []}
    for key, out in groups.items():
        for i, raw in enumerate(r.array(top, key, "")):
            d = r.fields(raw, f"{key}[{i}]", ("nodes",))
            nodes = d.get("nodes") if d is not None else None
            if d is not None and "nodes" in d and (
                    not isinstance(nodes, list)
                    or not all(isinstance(x, int) and not isinstance(x, bool) for x in nodes)):
                r.bad(f"{key}[{i}].nodes", "must be an array of integer node ids")
                nodes = None
            out.append(tuple(nodes or ()))
    if r.problems:
        raise InputError(r.problems)
    return MsrSplit(tuple(groups["fpgas"]), tuple(groups["cpus"]))


def read_split(path: str | Path) -> MsrSplit:
    try:
        return parse_split(read_json(path))
    except InputError as err:
        raise InputError([_prefixed(path, p) for p in err.problems]) from None


def _layer_of_msr_id(inst: Instance) -> dict[int, str]:
    out: dict[int, str] = {}
    for layer in inst.model.layers:
        msr_id = layer.meta.get("msr_id")
        if isinstance(msr_id, int):
            out[msr_id] = layer.id
        elif layer.id.isdigit():
            out[int(layer.id)] = layer.id
    return out


def split_to_plan(inst: Instance, split: MsrSplit, method: str = "msr-split") -> Plan:
    """The plan of a split: ``fpgas[i]`` runs on the i-th non-CPU device, ``cpus[j]`` on the j-th
    ``cpu`` device; empty groups are dropped; stages are ordered so that every edge goes forward.

    Raises :class:`InputError` for unknown, repeated or missing nodes, too few devices, or groups
    that depend on each other both ways (no pipeline order exists).
    """
    layer_of = _layer_of_msr_id(inst)
    groups = _assign_devices(inst, split)
    stage_of: dict[str, int] = {}
    for g, (where, _, nodes) in enumerate(groups):
        for v in nodes:
            if v not in layer_of:
                raise InputError(f"{where}.nodes: unknown node id {v}")
            if layer_of[v] in stage_of:
                other = groups[stage_of[layer_of[v]]][0]
                raise InputError(f"{where}.nodes: node {v} is also in {other}")
            stage_of[layer_of[v]] = g
    missing = [x.id for x in inst.model.layers if x.id not in stage_of]
    if missing:
        raise InputError(f"split: {len(missing)} node(s) in no group, e.g. {missing[0]}")
    order = _group_order(inst, groups, stage_of)
    stages = tuple(Stage(groups[g][1], tuple(x.id for x in inst.model.layers
                                             if stage_of[x.id] == g)) for g in order)
    return Plan(stages, inst.name, method)


def _assign_devices(inst: Instance, split: MsrSplit) -> list[tuple[str, str, tuple[int, ...]]]:
    """(file path, device id, node ids) of every non-empty group."""
    pools = {"fpgas": [d.id for d in inst.devices if d.cls != CPU_CLASS],
             "cpus": [d.id for d in inst.devices if d.cls == CPU_CLASS]}
    out = []
    for key, groups in (("fpgas", split.fpgas), ("cpus", split.cpus)):
        for i, nodes in enumerate(groups):
            if not nodes:
                continue
            if i >= len(pools[key]):
                kind = "CPU" if key == "cpus" else "accelerator"
                raise InputError(f"{key}[{i}]: the split uses {kind} #{i + 1} but the instance "
                                 f"has {len(pools[key])} {kind} device(s)")
            out.append((f"{key}[{i}]", pools[key][i], nodes))
    return out


def _group_order(inst: Instance, groups: list[tuple[str, str, tuple[int, ...]]],
                 stage_of: dict[str, int]) -> list[int]:
    g = inst.model
    arcs = {(stage_of[e.src], stage_of[e.dst]) for e in g.edges
            if stage_of[e.src] != stage_of[e.dst]}
    try:
        return stable_topological_order(list(range(len(groups))), arcs)
    except InputError:
        back = next((a, b) for a, b in sorted(arcs) if _reaches(arcs, b, a))
        raise InputError(f"split: {groups[back[0]][0]} and {groups[back[1]][0]} send tensors to "
                         "each other (directly or through other groups): no pipeline order "
                         "puts every edge forward") from None


def _reaches(arcs: set[tuple[int, int]], a: int, b: int) -> bool:
    seen, todo = {a}, [a]
    while todo:
        u = todo.pop()
        for x, y in arcs:
            if x == u and y not in seen:
                if y == b:
                    return True
                seen.add(y)
                todo.append(y)
    return False


def plan_to_split(inst: Instance, plan: Plan) -> dict[str, Any]:
    """The split file of a valid plan: every device listed (accelerators in pipeline order, then
    the unused ones), loads and ``maxLoad`` from edgepart's evaluator (for an instance imported
    from MSR without CPUs these are exactly their loads)."""
    problems = validate_plan(inst, plan)
    if problems:
        raise InputError(f"plan: {problems[0]}")
    metrics = evaluate(inst, plan)
    load = {s.device: (s.time_s, s.layers) for s in metrics.stages}
    ids = {x.id: x.meta.get("msr_id", x.id) for x in inst.model.layers}
    used = [s.device for s in plan.stages]
    out: dict[str, Any] = {"maxLoad": metrics.bottleneck_s, "fpgas": [], "cpus": []}
    for dev in sorted(inst.devices, key=lambda d: used.index(d.id) if d.id in used else 1 << 30):
        t, layers = load.get(dev.id, (0.0, ()))
        key = "cpus" if dev.cls == CPU_CLASS else "fpgas"
        out[key].append({"load": t, "nodes": [ids[x] for x in layers]})
    return out
