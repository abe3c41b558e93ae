"""The instance: a profiled layer graph, a cluster of devices and links, and cost-model options.

Loaded once from JSON (format version 1, see ``docs/instance-format.md`` and the JSON Schema
``instance.schema.json`` beside this file) into frozen dataclasses, validated once, with every
problem reported by its JSON path (``model.layers[12].param_bytes: must be >= 0, got -4``).

An optional ``workload`` says what one request is when the model is a language model (see
:class:`Workload` and ``docs/llm.md``); the cost model does not read it (its costs are already in
the layers), reports do (tokens/s, time to first token).

Derived data that every method needs (per-layer time on each device, tensor sizes, predecessors,
successors, link times) is computed here once, so the cost model, the formulations and the
heuristics all read the same numbers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Any

from edgepart.errors import InputError
from edgepart.files import read_json

__all__ = [
    "FORMAT_VERSION",
    "CostModel",
    "Device",
    "Instance",
    "Layer",
    "LayerGraph",
    "Link",
    "Transfer",
    "Workload",
    "load_instance",
    "load_workload",
]

FORMAT_VERSION = 1


class Transfer(StrEnum):
    RELAY = "relay"
    DIRECT = "direct"


@dataclass(frozen=True, slots=True)
class Layer:
    id: str
    op: str
    flops: float
    param_bytes: float
    output_bytes: float
    work_bytes: float = 0.0
    time_s: Mapping[str, float] = field(default_factory=dict)
    device_classes: tuple[str, ...] | None = None
    nodes: tuple[str, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Edge:
    src: str
    dst: str
    bytes: float


@dataclass(frozen=True)
class LayerGraph:
    """Layers in topological order, edges between them, and colocation groups."""

    name: str
    input_bytes: float
    layers: tuple[Layer, ...]
    edges: tuple[Edge, ...]
    colocate: tuple[tuple[str, ...], ...] = ()

    @cached_property
    def index(self) -> dict[str, int]:
        """Layer id -> position in the topological order."""
        return {layer.id: i for i, layer in enumerate(self.layers)}

    @cached_property
    def succ(self) -> tuple[tuple[int, ...], ...]:
        out: list[list[int]] = [[] for _ in self.layers]
        for e in self.edges:
            out[self.index[e.src]].append(self.index[e.dst])
        return tuple(tuple(sorted(set(s))) for s in out)

    @cached_property
    def pred(self) -> tuple[tuple[int, ...], ...]:
        out: list[list[int]] = [[] for _ in self.layers]
        for e in self.edges:
            out[self.index[e.dst]].append(self.index[e.src])
        return tuple(tuple(sorted(set(p))) for p in out)

    @cached_property
    def tensor_bytes(self) -> tuple[float, ...]:
        """Bytes of the one tensor each layer produces (what its out-edges carry)."""
        sizes = [layer.output_bytes for layer in self.layers]
        for e in self.edges:
            sizes[self.index[e.src]] = e.bytes
        return tuple(sizes)

    @cached_property
    def entries(self) -> tuple[int, ...]:
        """Layers that consume the request input (no in-edges)."""
        return tuple(i for i, p in enumerate(self.pred) if not p)

    @cached_property
    def exits(self) -> tuple[int, ...]:
        """Layers whose output is a model output (no out-edges)."""
        return tuple(i for i, s in enumerate(self.succ) if not s)

    @cached_property
    def is_chain(self) -> bool:
        """True when the edges are exactly layer i -> layer i+1."""
        pairs = {(self.index[e.src], self.index[e.dst]) for e in self.edges}
        return pairs == {(i, i + 1) for i in range(len(self.layers) - 1)}


@dataclass(frozen=True, slots=True)
class Device:
    id: str
    cls: str
    memory_bytes: float
    flops_per_s: float | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Link:
    bandwidth_bytes_per_s: float
    latency_s: float

    def time(self, nbytes: float) -> float:
        """Seconds to move ``nbytes`` over this link as one message."""
        return self.latency_s + nbytes / self.bandwidth_bytes_per_s


@dataclass(frozen=True, slots=True)
class CostModel:
    overlap: bool = True
    transfer: Transfer = Transfer.RELAY


LLM_PHASES = ("decode", "prefill")
LLM_DTYPES = ("fp32", "fp16", "bf16", "int8", "int4")


@dataclass(frozen=True, slots=True)
class Workload:
    """What one request of a language-model instance is (``docs/llm.md``).

    ``phase="decode"``: one request is one new token of one sequence whose KV cache holds
    ``context_tokens`` tokens; ``"prefill"``: one request is a prompt of ``prompt_tokens`` tokens.
    ``batch`` sequences are resident (each stage holds their KV cache, ``context_tokens`` each);
    ``dtype`` is the weights' storage type.
    """

    prompt_tokens: int
    context_tokens: int
    batch: int = 1
    phase: str = "decode"
    dtype: str = "fp16"
    kind: str = "llm"

    @property
    def tokens_per_request(self) -> int:
        """Tokens one request moves through the pipeline (1 in decode, the prompt in prefill)."""
        return 1 if self.phase == "decode" else self.prompt_tokens

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "prompt_tokens": self.prompt_tokens,
                "context_tokens": self.context_tokens, "batch": self.batch,
                "phase": self.phase, "dtype": self.dtype}


@dataclass(frozen=True)
class Instance:
    """A validated instance. Build it with :func:`load_instance`."""

    name: str
    model: LayerGraph
    devices: tuple[Device, ...]
    links: tuple[tuple[Link, ...], ...]
    source: str | None = None
    sink: str | None = None
    cost_model: CostModel = CostModel()
    description: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict)
    workload: Workload | None = None

    @cached_property
    def device_index(self) -> dict[str, int]:
        return {d.id: k for k, d in enumerate(self.devices)}

    @cached_property
    def times(self) -> tuple[tuple[float, ...], ...]:
        """``times[v][d]``: seconds of layer v on device d (``inf`` where v may not run on d)."""
        return tuple(
            tuple(_layer_time(layer, dev) for dev in self.devices) for layer in self.model.layers
        )

    def allowed(self, v: int, d: int) -> bool:
        return math.isfinite(self.times[v][d])

    def link(self, i: int, j: int) -> Link:
        return self.links[i][j]

    def transfer_time(self, i: int | None, j: int | None, nbytes: float) -> float:
        """Seconds to send one ``nbytes`` message from device i to device j (0 on one device)."""
        if i is None or j is None or i == j:
            return 0.0
        return self.links[i][j].time(nbytes)

    @cached_property
    def source_index(self) -> int | None:
        return None if self.source is None else self.device_index[self.source]

    @cached_property
    def sink_index(self) -> int | None:
        return None if self.sink is None else self.device_index[self.sink]

    @cached_property
    def uniform_links(self) -> bool:
        """True when every ordered pair of distinct devices has the same link."""
        n = len(self.devices)
        pairs = {self.links[i][j] for i in range(n) for j in range(n) if i != j}
        return len(pairs) <= 1

    def without_devices(self, ids: set[str]) -> Instance:
        """This instance with some devices removed (for re-planning after a failure)."""
        keep = [k for k, d in enumerate(self.devices) if d.id not in ids]
        if not keep:
            raise InputError("devices: removing " + ", ".join(sorted(ids)) + " leaves none")
        data = self.to_dict()
        data["devices"] = [data["devices"][k] for k in keep]
        matrix = data["links"]["matrix"]
        data["links"] = {"matrix": {key: [[matrix[key][i][j] for j in keep] for i in keep]
                                    for key in ("bandwidth_bytes_per_s", "latency_s")}}
        for end in ("source", "sink"):
            if data.get(end) in ids:
                data.pop(end)
        return load_instance(data)

    def reordered(self, order: Sequence[int]) -> Instance:
        """This instance with its layers listed in ``order`` (layer indices, a topological order
        of the same graph): the same problem, so a plan of one (layers are named by id) is a
        plan of the other, with the same cost; what changes is which sets are prefixes."""
        layers = self.model.layers
        if sorted(order) != list(range(len(layers))):
            raise ValueError("order: not a permutation of the layers")
        position = {layers[v].id: k for k, v in enumerate(order)}
        if any(position[e.src] >= position[e.dst] for e in self.model.edges):
            raise ValueError("order: not a topological order of the layers")
        return replace(self, model=replace(self.model, layers=tuple(layers[v] for v in order)))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (links written as a full matrix)."""
        return _to_dict(self)


SELF = Link(math.inf, 0.0)
"""The "link" from a device to itself (never used: transfers on one device cost nothing)."""


def _layer_time(layer: Layer, dev: Device) -> float:
    if layer.device_classes is not None and dev.cls not in layer.device_classes:
        return math.inf
    if dev.cls in layer.time_s:
        return float(layer.time_s[dev.cls])
    if dev.flops_per_s:
        return layer.flops / dev.flops_per_s
    return math.inf


# ---------------------------------------------------------------------------------------------
# Loading and validation
# ---------------------------------------------------------------------------------------------


def load_instance(src: str | Path | Mapping[str, Any]) -> Instance:
    """Load and validate an instance from a JSON file path or an already parsed dict.

    Raises :class:`InputError` listing every problem found, each prefixed by its JSON path.
    """
    data = read_json(src) if isinstance(src, (str, Path)) else src
    checker = _Checker()
    inst = checker.instance(data)
    if checker.problems or inst is None:
        raise InputError(checker.problems or ["instance: could not be read"])
    return inst


def load_workload(data: Mapping[str, Any]) -> Workload:
    """Validate a ``workload`` object alone (as :func:`load_instance` does inside an instance)."""
    checker = _Checker()
    workload = checker.workload(data)
    if checker.problems or workload is None:
        raise InputError(checker.problems or ["workload: could not be read"])
    return workload


class _Checker:
    """Collects every problem with its JSON path instead of stopping at the first one."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def bad(self, path: str, msg: str) -> None:
        self.problems.append(f"{path}: {msg}")

    def obj(self, data: Any, path: str, required: tuple[str, ...], optional: tuple[str, ...]
            ) -> dict[str, Any] | None:
        if not isinstance(data, Mapping):
            self.bad(path, f"must be an object, got {type(data).__name__}")
            return None
        for key in required:
            if key not in data:
                self.bad(path, f"missing required field '{key}'")
        for key in data:
            if key not in required and key not in optional:
                self.bad(f"{path}.{key}" if path else key, "unknown field")
        return dict(data)

    def num(self, data: Mapping[str, Any], key: str, path: str, *, positive: bool = False,
            default: float | None = None) -> float:
        value = data.get(key, default)
        where = f"{path}.{key}" if path else key
        if value is None and key not in data:
            return math.nan
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.bad(where, f"must be a number, got {json.dumps(value)}")
            return math.nan
        value = float(value)
        if not math.isfinite(value):
            self.bad(where, f"must be finite, got {value}")
        elif positive and value <= 0:
            self.bad(where, f"must be > 0, got {_fmt(value)}")
        elif value < 0:
            self.bad(where, f"must be >= 0, got {_fmt(value)}")
        return value

    def string(self, data: Mapping[str, Any], key: str, path: str, default: str | None = None
               ) -> str:
        value = data.get(key, default)
        if not isinstance(value, str) or not value:
            if key in data or default is None:
                self.bad(f"{path}.{key}" if path else key,
                         f"must be a non-empty string, got {json.dumps(value)}")
            return "" if value is None else str(value)
        return value

    def array(self, data: Mapping[str, Any], key: str, path: str) -> list[Any]:
        value = data.get(key, [])
        if not isinstance(value, list):
            self.bad(f"{path}.{key}" if path else key, "must be an array")
            return []
        return value

    # -- sections --------------------------------------------------------------------------

    def instance(self, data: Any) -> Instance | None:
        top = self.obj(data, "", ("format_version", "model", "devices"),
                       ("name", "description", "links", "source", "sink", "cost_model", "meta",
                        "workload"))
        if top is None:
            return None
        if top.get("format_version", FORMAT_VERSION) != FORMAT_VERSION:
            self.bad("format_version", f"must be {FORMAT_VERSION}, got "
                     f"{json.dumps(top.get('format_version'))}")
        model = self.model(top.get("model", {}))
        devices = self.devices(top)
        links = self.links(top.get("links"), devices)
        ends = {end: self.end(top, end, devices) for end in ("source", "sink")}
        cost_model = self.cost_model(top.get("cost_model", {}))
        workload = self.workload(top["workload"]) if "workload" in top else None
        if model is not None and devices is not None:
            self.times(model, devices)
        if model is None or devices is None or links is None or self.problems:
            return None
        inst = Instance(name=str(top.get("name", model.name)), model=model, devices=devices,
                        links=links, source=ends["source"], sink=ends["sink"],
                        cost_model=cost_model, description=str(top.get("description", "")),
                        meta=dict(top.get("meta", {})), workload=workload)
        return inst

    def layer(self, data: Any, path: str) -> Layer | None:
        d = self.obj(data, path, ("id", "op", "flops", "param_bytes", "output_bytes"),
                     ("work_bytes", "time_s", "device_classes", "nodes", "meta"))
        if d is None:
            return None
        times = d.get("time_s", {})
        if not isinstance(times, Mapping):
            self.bad(f"{path}.time_s", "must be an object {device_class: seconds}")
            times = {}
        classes = d.get("device_classes")
        if classes is not None and (not isinstance(classes, list) or not classes
                                    or not all(isinstance(c, str) for c in classes)):
            self.bad(f"{path}.device_classes", "must be a non-empty array of class names")
            classes = None
        return Layer(
            id=self.string(d, "id", path), op=self.string(d, "op", path),
            flops=self.num(d, "flops", path), param_bytes=self.num(d, "param_bytes", path),
            output_bytes=self.num(d, "output_bytes", path),
            work_bytes=self.num(d, "work_bytes", path, default=0.0),
            time_s={str(c): self.num(times, c, f"{path}.time_s") for c in times},
            device_classes=None if classes is None else tuple(classes),
            nodes=tuple(str(n) for n in d.get("nodes", [])), meta=dict(d.get("meta", {})))

    def model(self, data: Any) -> LayerGraph | None:
        m = self.obj(data, "model", ("layers",), ("name", "input_bytes", "edges", "colocate"))
        if m is None:
            return None
        raw_layers = self.array(m, "layers", "model")
        if not raw_layers:
            self.bad("model.layers", "must list at least one layer")
        layers = [self.layer(x, f"model.layers[{i}]") for i, x in enumerate(raw_layers)]
        ok_layers = [x for x in layers if x is not None]
        index: dict[str, int] = {}
        for i, layer in enumerate(ok_layers):
            if layer.id in index:
                self.bad(f"model.layers[{i}].id", f"duplicate id '{layer.id}' "
                         f"(also model.layers[{index[layer.id]}])")
            index.setdefault(layer.id, i)
        edges = self.edges(m, index, ok_layers)
        colocate = self.colocate(m, index)
        if len(ok_layers) != len(layers):
            return None
        graph = LayerGraph(name=str(m.get("name", "model")),
                           input_bytes=self.num(m, "input_bytes", "model", default=0.0),
                           layers=tuple(ok_layers), edges=tuple(edges), colocate=colocate)
        self.connected(graph)
        return graph

    def edges(self, m: Mapping[str, Any], index: dict[str, int], layers: list[Layer]
              ) -> list[Edge]:
        edges: list[Edge] = []
        tensor: dict[str, tuple[float, int]] = {}
        seen: set[tuple[str, str]] = set()
        for k, raw in enumerate(self.array(m, "edges", "model")):
            path = f"model.edges[{k}]"
            e = self.obj(raw, path, ("src", "dst"), ("bytes",))
            if e is None:
                continue
            src, dst = self.string(e, "src", path), self.string(e, "dst", path)
            known = True
            for key, lid in (("src", src), ("dst", dst)):
                if lid and lid not in index:
                    self.bad(f"{path}.{key}", f"unknown layer id '{lid}'")
                    known = False
            if not known or not src or not dst:
                continue
            if index[src] >= index[dst]:
                what = "a self-loop" if src == dst else "goes against the layer order (a cycle?)"
                self.bad(path, f"edge {src} -> {dst} {what}: layers must be listed in "
                         "topological order")
                continue
            if (src, dst) in seen:
                self.bad(path, f"duplicate edge {src} -> {dst}")
                continue
            seen.add((src, dst))
            nbytes = (self.num(e, "bytes", path) if "bytes" in e
                      else layers[index[src]].output_bytes)
            if src in tensor and tensor[src][0] != nbytes:
                self.bad(f"{path}.bytes", f"out-edges of layer '{src}' must carry one tensor "
                         f"size, got {_fmt(tensor[src][0])} (model.edges[{tensor[src][1]}]) and "
                         f"{_fmt(nbytes)}")
            tensor.setdefault(src, (nbytes, k))
            edges.append(Edge(src, dst, nbytes))
        return edges

    def colocate(self, m: Mapping[str, Any], index: dict[str, int]
                 ) -> tuple[tuple[str, ...], ...]:
        groups = []
        for g, raw in enumerate(self.array(m, "colocate", "model")):
            if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
                self.bad(f"model.colocate[{g}]", "must be an array of layer ids")
                continue
            for j, lid in enumerate(raw):
                if lid not in index:
                    self.bad(f"model.colocate[{g}][{j}]", f"unknown layer id '{lid}'")
            groups.append(tuple(raw))
        return tuple(groups)

    def connected(self, graph: LayerGraph) -> None:
        if len(graph.layers) < 2:
            return
        parent = list(range(len(graph.layers)))

        def find(a: int) -> int:
            while parent[a] != a:
                parent[a] = parent[parent[a]]
                a = parent[a]
            return a

        for e in graph.edges:
            parent[find(graph.index[e.src])] = find(graph.index[e.dst])
        root = find(0)
        for i, layer in enumerate(graph.layers):
            if find(i) != root:
                self.bad(f"model.layers[{i}]", f"layer '{layer.id}' is not connected to "
                         f"layer '{graph.layers[0].id}'")

    def devices(self, top: Mapping[str, Any]) -> tuple[Device, ...] | None:
        raw = self.array(top, "devices", "")
        if not raw:
            self.bad("devices", "must list at least one device")
        out: list[Device] = []
        seen: dict[str, int] = {}
        for k, item in enumerate(raw):
            path = f"devices[{k}]"
            d = self.obj(item, path, ("id", "class", "memory_bytes"), ("flops_per_s", "meta"))
            if d is None:
                continue
            dev = Device(id=self.string(d, "id", path), cls=self.string(d, "class", path),
                         memory_bytes=self.num(d, "memory_bytes", path, positive=True),
                         flops_per_s=(self.num(d, "flops_per_s", path, positive=True)
                                      if "flops_per_s" in d else None),
                         meta=dict(d.get("meta", {})))
            if dev.id in seen:
                self.bad(f"{path}.id", f"duplicate id '{dev.id}' (also devices[{seen[dev.id]}])")
            seen.setdefault(dev.id, k)
            out.append(dev)
        return tuple(out) if len(out) == len(raw) and raw else None

    def link(self, data: Any, path: str) -> Link | None:
        d = self.obj(data, path, ("bandwidth_bytes_per_s", "latency_s"), ("src", "dst"))
        if d is None:
            return None
        return Link(self.num(d, "bandwidth_bytes_per_s", path, positive=True),
                    self.num(d, "latency_s", path))

    def links(self, data: Any, devices: tuple[Device, ...] | None
              ) -> tuple[tuple[Link, ...], ...] | None:
        d = self.obj(data if data is not None else {}, "links", (), ("default", "pairs", "matrix"))
        if d is None or devices is None:
            return None
        n = len(devices)
        grid: list[list[Link | None]] = [[None] * n for _ in range(n)]
        if "default" in d:
            default = self.link(d["default"], "links.default")
            grid = [[default if i != j else SELF for j in range(n)] for i in range(n)]
        if "matrix" in d:
            self.matrix(d["matrix"], grid)
        elif "default" not in d:
            self.bad("links", "give 'default' or 'matrix'")
        ids = {dev.id: k for k, dev in enumerate(devices)}
        for p, raw in enumerate(self.array(d, "pairs", "links")):
            path = f"links.pairs[{p}]"
            link = self.link(raw, path)
            if not isinstance(raw, Mapping) or link is None:
                continue
            ends = [raw.get(key) for key in ("src", "dst")]
            for key, end in zip(("src", "dst"), ends, strict=True):
                if end not in ids:
                    self.bad(f"{path}.{key}", f"unknown device id {json.dumps(end)}")
            if ends[0] == ends[1]:
                self.bad(path, f"src and dst are the same device {json.dumps(ends[0])}")
            elif ends[0] in ids and ends[1] in ids:
                grid[ids[str(ends[0])]][ids[str(ends[1])]] = link
        if any(link is None for row in grid for link in row):
            return None
        return tuple(tuple(link for link in row if link is not None) for row in grid)

    def matrix(self, data: Any, grid: list[list[Link | None]]) -> None:
        n = len(grid)
        m = self.obj(data, "links.matrix", ("bandwidth_bytes_per_s", "latency_s"), ())
        if m is None:
            return
        cols: dict[str, list[list[float]]] = {}
        for key in ("bandwidth_bytes_per_s", "latency_s"):
            rows = m.get(key)
            if (not isinstance(rows, list) or len(rows) != n
                    or any(not isinstance(r, list) or len(r) != n for r in rows)):
                self.bad(f"links.matrix.{key}", f"must be a {n} x {n} array (one row and "
                         "column per device, in the order of 'devices')")
                return
            cols[key] = rows
        for i in range(n):
            for j in range(n):
                if i == j:
                    grid[i][j] = SELF
                    continue
                cell = {"bandwidth_bytes_per_s": cols["bandwidth_bytes_per_s"][i][j],
                        "latency_s": cols["latency_s"][i][j]}
                grid[i][j] = self.link(cell, f"links.matrix[{i}][{j}]")

    def end(self, top: Mapping[str, Any], key: str, devices: tuple[Device, ...] | None
            ) -> str | None:
        value = top.get(key)
        if value is None:
            return None
        if devices is not None and value not in {d.id for d in devices}:
            self.bad(key, f"unknown device id {json.dumps(value)}")
        return str(value)

    def cost_model(self, data: Any) -> CostModel:
        d = self.obj(data, "cost_model", (), ("overlap", "transfer"))
        if d is None:
            return CostModel()
        overlap = d.get("overlap", True)
        if not isinstance(overlap, bool):
            self.bad("cost_model.overlap", f"must be true or false, got {json.dumps(overlap)}")
        transfer = d.get("transfer", "relay")
        if transfer not in {t.value for t in Transfer}:
            self.bad("cost_model.transfer", f"must be 'relay' or 'direct', got "
                     f"{json.dumps(transfer)}")
            transfer = "relay"
        return CostModel(overlap=bool(overlap), transfer=Transfer(transfer))

    def workload(self, data: Any) -> Workload | None:
        w = self.obj(data, "workload", ("kind", "prompt_tokens", "context_tokens"),
                     ("batch", "phase", "dtype"))
        if w is None:
            return None
        counts = {key: self.count(w, key, "workload")
                  for key in ("prompt_tokens", "context_tokens", "batch")}
        words = {"kind": ("llm", ("llm",)), "phase": ("decode", LLM_PHASES),
                 "dtype": ("fp16", LLM_DTYPES)}
        for key, (default, allowed) in words.items():
            if w.get(key, default) not in allowed:
                self.bad(f"workload.{key}", f"must be one of {', '.join(allowed)}, got "
                         f"{json.dumps(w.get(key))}")
        if counts["prompt_tokens"] > counts["context_tokens"]:
            self.bad("workload.prompt_tokens", f"must be <= context_tokens "
                     f"({counts['context_tokens']}), got {counts['prompt_tokens']}")
        return Workload(prompt_tokens=counts["prompt_tokens"],
                        context_tokens=counts["context_tokens"], batch=counts["batch"],
                        phase=str(w.get("phase", "decode")), dtype=str(w.get("dtype", "fp16")))

    def count(self, data: Mapping[str, Any], key: str, path: str) -> int:
        """An integer >= 1 (default 1 when absent)."""
        value = data.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            self.bad(f"{path}.{key}", f"must be an integer >= 1, got {json.dumps(value)}")
            return 1
        return value

    def times(self, model: LayerGraph, devices: tuple[Device, ...]) -> None:
        for k, dev in enumerate(devices):
            for layer in model.layers:
                if math.isfinite(layer.flops) and math.isinf(_layer_time(layer, dev)) and (
                        layer.device_classes is None or dev.cls in layer.device_classes):
                    self.bad(f"devices[{k}].class", f"no time for layer '{layer.id}' on class "
                             f"'{dev.cls}' (give model.layers[{model.index[layer.id]}].time_s."
                             f"{dev.cls} or devices[{k}].flops_per_s)")
                    break
        for i, layer in enumerate(model.layers):
            if layer.device_classes is not None and not any(
                    math.isfinite(_layer_time(layer, dev)) for dev in devices):
                self.bad(f"model.layers[{i}].device_classes",
                         f"layer '{layer.id}' may run on no device of the cluster")


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


def _to_dict(inst: Instance) -> dict[str, Any]:
    def layer(x: Layer) -> dict[str, Any]:
        d: dict[str, Any] = {"id": x.id, "op": x.op, "flops": x.flops,
                             "param_bytes": x.param_bytes, "output_bytes": x.output_bytes}
        if x.work_bytes:
            d["work_bytes"] = x.work_bytes
        if x.time_s:
            d["time_s"] = dict(x.time_s)
        if x.device_classes is not None:
            d["device_classes"] = list(x.device_classes)
        if x.nodes:
            d["nodes"] = list(x.nodes)
        if x.meta:
            d["meta"] = dict(x.meta)
        return d

    n = len(inst.devices)
    out: dict[str, Any] = {
        "format_version": FORMAT_VERSION, "name": inst.name, "description": inst.description,
        "model": {"name": inst.model.name, "input_bytes": inst.model.input_bytes,
                  "layers": [layer(x) for x in inst.model.layers],
                  "edges": [{"src": e.src, "dst": e.dst, "bytes": e.bytes}
                            for e in inst.model.edges],
                  "colocate": [list(g) for g in inst.model.colocate]},
        "devices": [{"id": d.id, "class": d.cls, "memory_bytes": d.memory_bytes,
                     **({"flops_per_s": d.flops_per_s} if d.flops_per_s else {}),
                     **({"meta": dict(d.meta)} if d.meta else {})} for d in inst.devices],
        "links": {"matrix": {
            "bandwidth_bytes_per_s": [[inst.links[i][j].bandwidth_bytes_per_s if i != j else 0
                                       for j in range(n)] for i in range(n)],
            "latency_s": [[inst.links[i][j].latency_s for j in range(n)] for i in range(n)]}},
        "cost_model": {"overlap": inst.cost_model.overlap,
                       "transfer": inst.cost_model.transfer.value},
    }
    for end in ("source", "sink"):
        if getattr(inst, end) is not None:
            out[end] = getattr(inst, end)
    if inst.meta:
        out["meta"] = dict(inst.meta)
    if inst.workload is not None:
        out["workload"] = inst.workload.to_dict()
    return out
