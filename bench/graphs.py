"""Synthetic layer graphs for scale benchmarks: plain chains, NASNet-A cells and BERT encoders.

Each builder returns a :class:`Graph` (layers in a topological order, with FLOPs, parameter and
tensor bytes from real layer shapes, fp32, batch 1); :func:`instance` puts it on a cluster and
returns an instance dict in the format of ``docs/instance-format.md``, for
``edgepart.load_instance``::

    from graphs import nasnet, instance
    from edgepart import load_instance
    inst = load_instance(instance(nasnet(cells_per_stack=14), devices=32))   # 974 layers

Graphs
------
* :func:`chain`: a plain CNN of exactly ``layers`` layers (stem conv, then conv / batchnorm /
  ReLU repeats in four stages at 56, 28, 14 and 7 pixels with 64 to 512 channels, max-pooling
  between stages, global pooling and a classifier). Every edge joins consecutive layers.
* :func:`nasnet`: NASNet-A (Zoph et al., "Learning Transferable Architectures for Scalable Image
  Recognition", CVPR 2018), cells as in the reference implementation
  (``tensorflow/models``, ``research/slim/nets/nasnet/nasnet_utils.py``: ``NasNetANormalCell``
  and ``NasNetAReductionCell``). Cell ``i`` reads the outputs of cells ``i-1`` and ``i-2``
  (each through a 1x1 "prep" convolution, or a stride-2 one when ``i-2`` is at a larger
  resolution); five blocks each add two branches, a branch being 0-2 layers (a separable
  convolution ``sep_KxK_2`` is two fused relu-depthwise-pointwise-batchnorm layers, a pooling one
  layer, ``none`` no layer); the cell output concatenates the states no block consumed. A normal
  cell has 21 layers, a reduction cell 22. ``stacks`` stacks of ``cells_per_stack`` normal cells
  are separated by reduction cells, after a stride-2 stem convolution and ``stem_cells``
  reduction cells (NASNet-A Mobile: 3 stacks, 2 stem cells, ``filters`` 44 at 28x28). Ten
  parallel branches per cell make the graph wide: a single cell has tens of thousands of ideals.
* :func:`bert`: BERT encoder blocks (Devlin et al., NAACL 2019; base: hidden 768, 12 heads, FFN
  3072, sequence 128): per block q, k and v projections as three parallel branches, attention
  scores, softmax, context, output projection, residual add, layer norm, FFN up, GELU, FFN down,
  residual add, layer norm (14 layers), between an embedding (3 layers) and a pooler and
  classifier (3 layers). Blocks meet at one layer, so the ideals grow linearly (about 14 per
  block).

Per-layer times per device class
--------------------------------
A layer's time on class ``c`` is a roofline with per-class efficiencies, not FLOPs over one speed
(:data:`PROFILES`)::

    t(layer, c) = overhead_c + max(flops / (peak_c * eff_c[kind]), bytes / (bw_c * mem_eff_c))
                  * noise

with ``peak_c`` and ``bw_c`` the catalog's FP32 FLOP/s and DRAM bandwidth
(``edgepart/profiling/catalog.json``), ``kind`` one of ``conv``, ``sepconv`` (depthwise
dominated), ``matmul`` (dense GEMM), ``bmm`` (attention's batched products), ``mem``
(elementwise, pooling, normalisation, softmax, concatenation, embedding gathers), ``bytes`` the
layer's inputs, outputs and parameters, and ``noise`` a seeded log-normal factor (sigma 0.08, as
repeated measurements of one layer spread). GPUs reach a larger share of their peak on
convolutions and GEMMs than CPUs, a smaller one on depthwise convolutions, and pay a kernel-launch
overhead per layer: the ratio of two classes' times changes from layer to layer, as measured
profiles do, so no class is a constant factor faster.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np

from edgepart.profiling.catalog import Catalog, load_catalog
from edgepart.profiling.clusters import ethernet_links, wireless_links

__all__ = [
    "CLASSES", "KINDS", "PROFILES", "ClassProfile", "Graph", "GraphLayer", "bert", "chain",
    "device_counts", "instance", "layer_time", "nasnet", "nasnet_cells_for",
]

FP32 = 4
KINDS = ("conv", "sepconv", "matmul", "bmm", "mem")
CLASSES = ("rpi4", "rpi5", "jetson_nano", "nuc_cpu")
"""Default device classes of :func:`instance` (those of the shipped ``lab8`` cluster)."""
WEIGHTS = (3, 3, 1, 1)
"""Default shares of :data:`CLASSES` among the devices (``lab8``: 3 + 3 + 1 + 1)."""


@dataclass(frozen=True, slots=True)
class ClassProfile:
    """Share of the catalog's peak FLOP/s reached per layer kind, of its DRAM bandwidth, and a
    fixed per-layer overhead (framework dispatch; kernel launch and sync on a GPU)."""

    eff: dict[str, float]
    mem_eff: float
    overhead_s: float


_ARM = ClassProfile({"conv": 0.30, "sepconv": 0.08, "matmul": 0.45, "bmm": 0.25, "mem": 1.0},
                    0.40, 40e-6)
_X86 = ClassProfile({"conv": 0.22, "sepconv": 0.12, "matmul": 0.55, "bmm": 0.35, "mem": 1.0},
                    0.55, 10e-6)
_GPU = ClassProfile({"conv": 0.55, "sepconv": 0.06, "matmul": 0.70, "bmm": 0.35, "mem": 1.0},
                    0.65, 90e-6)
PROFILES: dict[str, ClassProfile] = {
    "rpi_zero_2w": _ARM, "rpi3b": _ARM, "rpi4": _ARM,
    "rpi5": ClassProfile({"conv": 0.32, "sepconv": 0.10, "matmul": 0.50, "bmm": 0.30,
                          "mem": 1.0}, 0.45, 20e-6),
    "jetson_nano": _GPU,
    "jetson_orin_nano": ClassProfile({"conv": 0.45, "sepconv": 0.05, "matmul": 0.65, "bmm": 0.35,
                                      "mem": 1.0}, 0.70, 60e-6),
    "nuc_cpu": _X86, "laptop_cpu": _X86,
}
"""Per catalog class. The efficiencies are typical of published edge benchmarks (a few tens of
percent of peak for convolutions and GEMMs, under a tenth for depthwise convolutions on GPUs); the
point is that they differ by kind and class, not their exact values."""


@dataclass(frozen=True, slots=True)
class GraphLayer:
    id: str
    op: str
    kind: str
    flops: float
    param_bytes: float
    output_bytes: float
    inputs: tuple[str, ...]


@dataclass
class Graph:
    """Layers in a topological order; each layer's ``inputs`` are earlier layers (none: it reads
    the request input)."""

    name: str
    input_bytes: float
    layers: list[GraphLayer] = field(default_factory=list)

    def add(self, lid: str, op: str, kind: str, flops: float, params: float, out: float,
            inputs: Sequence[str]) -> str:
        self.layers.append(GraphLayer(lid, op, kind, float(flops), float(params), float(out),
                                      tuple(inputs)))
        return lid

    def __len__(self) -> int:
        return len(self.layers)


# --- chains -------------------------------------------------------------------------------------

def chain(layers: int, *, name: str | None = None) -> Graph:
    """A plain CNN of exactly ``layers`` (>= 6) layers; see the module docstring."""
    if layers < 6:
        raise ValueError(f"layers must be >= 6, got {layers}")
    g = Graph(name or f"chain{layers}", 224 * 224 * 3 * FP32)
    prev: list[str] = []
    c, h = 32, 112
    prev = [g.add("stem_conv", "conv2d", "conv", 2 * h * h * c * 3 * 9, (27 * c + c) * FP32,
                  h * h * c * FP32, prev)]
    body = layers - 3  # stem conv + avgpool + linear
    stages = ((56, 64), (28, 128), (14, 256), (7, 512))
    sizes = [body // 4 + (k < body % 4) for k in range(4)]
    for s, ((hs, cs), size) in enumerate(zip(stages, sizes, strict=True)):
        for k in range(size):
            lid = f"s{s}_{k}"
            if k == 0:  # downsample, then widen in the first conv
                prev = [g.add(lid, "maxpool2d", "mem", hs * hs * c * 9, 0, hs * hs * c * FP32,
                              prev)]
                h = hs
                continue
            step = (k - 1) % 3
            if step == 0:
                prev = [g.add(lid, "conv2d", "conv", 2 * h * h * cs * c * 9,
                              (9 * c * cs + cs) * FP32, h * h * cs * FP32, prev)]
                c = cs
            else:
                op = "batchnorm2d" if step == 1 else "relu"
                prev = [g.add(lid, op, "mem", h * h * c * (4 if step == 1 else 1),
                              (4 * c if step == 1 else 0) * FP32, h * h * c * FP32, prev)]
    prev = [g.add("avgpool", "adaptive_avg_pool2d", "mem", h * h * c, 0, c * FP32, prev)]
    g.add("fc", "linear", "matmul", 2 * c * 1000, (c * 1000 + 1000) * FP32, 1000 * FP32, prev)
    assert len(g) == layers
    return g


# --- NASNet-A -----------------------------------------------------------------------------------

# (operation, input state) pairs of the five blocks; states 0 = h[i-2], 1 = h[i-1], 2+ = blocks.
_NORMAL = (("sep5", 0), ("sep3", 1), ("sep5", 1), ("sep3", 1), ("avg", 0), ("none", 1),
           ("avg", 1), ("avg", 1), ("sep3", 0), ("none", 0))
_NORMAL_CONCAT = (1, 2, 3, 4, 5, 6)  # used_hiddenstates = [1, 0, 0, 0, 0, 0, 0]
_REDUCTION = (("sep5", 0), ("sep7", 1), ("max", 0), ("sep7", 1), ("avg", 0), ("sep5", 1),
              ("none", 3), ("avg", 2), ("sep3", 2), ("max", 0))
_REDUCTION_CONCAT = (3, 4, 5, 6)  # used_hiddenstates = [1, 1, 1, 0, 0, 0, 0]


@dataclass(frozen=True, slots=True)
class _State:
    id: str
    h: int  # spatial size
    c: int  # channels


def _cell(g: Graph, tag: str, prev2: _State, prev1: _State, filters: int,
          reduction: bool) -> _State:
    spec, concat = (_REDUCTION, _REDUCTION_CONCAT) if reduction else (_NORMAL, _NORMAL_CONCAT)
    h_in, f = prev1.h, filters
    h_out = h_in // 2 if reduction else h_in

    def conv1x1(lid: str, src: _State, stride: int) -> _State:
        ho = src.h // stride
        g.add(lid, "conv2d", "conv", 2 * ho * ho * src.c * f, (src.c * f + 2 * f) * FP32,
              ho * ho * f * FP32, [src.id])
        return _State(lid, ho, f)

    states = [conv1x1(f"{tag}_prep0", prev2, prev2.h // h_in),
              conv1x1(f"{tag}_prep1", prev1, 1)]
    for b in range(5):
        ends = []
        for side, (op, idx) in zip("lr", spec[2 * b: 2 * b + 2], strict=True):
            src = states[idx]
            stride = 2 if reduction and idx < 2 else 1
            lid = f"{tag}_b{b}{side}"
            if op.startswith("sep"):
                k = int(op[3:])
                for rep in range(2):
                    s = stride if rep == 0 else 1
                    ho = src.h // s
                    g.add(f"{lid}_sep{rep}", "separable_conv2d", "sepconv",
                          2 * ho * ho * f * (k * k + f), (k * k * f + f * f + 2 * f) * FP32,
                          ho * ho * f * FP32, [src.id])
                    src = _State(f"{lid}_sep{rep}", ho, f)
            elif op in ("avg", "max"):
                ho = src.h // stride
                g.add(f"{lid}_{op}pool", f"{op}_pool2d", "mem", 9 * ho * ho * f, 0,
                      ho * ho * f * FP32, [src.id])
                src = _State(f"{lid}_{op}pool", ho, f)
            elif stride == 2:  # identity on a cell input of a reduction cell: factorized reduce
                src = conv1x1(f"{lid}_reduce", src, 2)
            ends.append(src)
        assert ends[0].h == ends[1].h == h_out
        lid = g.add(f"{tag}_b{b}_add", "add", "mem", h_out * h_out * f, 0,
                    h_out * h_out * f * FP32, [e.id for e in ends])
        states.append(_State(lid, h_out, f))
    parts = [states[i] for i in concat]
    hs = {p.h for p in parts}
    if len(hs) > 1:  # the normal cell's h[i-1] is at the cell's resolution already
        raise AssertionError(f"concat of different resolutions in {tag}: {hs}")
    c_out = len(parts) * f
    g.add(f"{tag}_concat", "concat", "mem", 0, 0, h_out * h_out * c_out * FP32,
          [p.id for p in parts])
    return _State(f"{tag}_concat", h_out, c_out)


def nasnet(cells_per_stack: int, *, stacks: int = 3, stem_cells: int = 2, filters: int = 44,
           name: str | None = None) -> Graph:
    """NASNet-A: a stride-2 stem convolution, ``stem_cells`` reduction cells, then ``stacks``
    stacks of ``cells_per_stack`` normal cells with a reduction cell between stacks, then ReLU,
    global average pooling and a 1000-way classifier. Filters double at every reduction
    (``filters`` in the first stack). ``4 + 22 * (stem_cells + stacks - 1) + 21 * stacks *
    cells_per_stack`` layers (NASNet-A Mobile, 4 cells per stack: 344)."""
    if cells_per_stack < 1 or stacks < 1 or stem_cells < 0:
        raise ValueError("need cells_per_stack >= 1, stacks >= 1, stem_cells >= 0")
    g = Graph(name or f"nasnet{stem_cells}_{stacks}x{cells_per_stack}", 224 * 224 * 3 * FP32)
    h = 112
    stem = _State(g.add("stem_conv", "conv2d", "conv", 2 * h * h * 32 * 27, (27 * 32 + 64) * FP32,
                        h * h * 32 * FP32, []), h, 32)
    prev2 = prev1 = stem
    f = filters // 2 ** stem_cells
    for k in range(stem_cells):
        prev2, prev1 = prev1, _cell(g, f"stem{k}", prev2, prev1, f, reduction=True)
        f *= 2
    for s in range(stacks):
        if s > 0:
            f *= 2
            prev2, prev1 = prev1, _cell(g, f"red{s}", prev2, prev1, f, reduction=True)
        for k in range(cells_per_stack):
            prev2, prev1 = prev1, _cell(g, f"n{s}_{k}", prev2, prev1, f, reduction=False)
    h, c = prev1.h, prev1.c
    relu = g.add("final_relu", "relu", "mem", h * h * c, 0, h * h * c * FP32, [prev1.id])
    pool = g.add("avgpool", "adaptive_avg_pool2d", "mem", h * h * c, 0, c * FP32, [relu])
    g.add("fc", "linear", "matmul", 2 * c * 1000, (c * 1000 + 1000) * FP32, 1000 * FP32, [pool])
    return g


def nasnet_cells_for(layers: int) -> dict[str, int]:
    """The :func:`nasnet` arguments (``cells_per_stack``, ``stacks``, ``stem_cells``) whose layer
    count is closest to ``layers``; more stacks and stem cells win ties (closer to NASNet-A)."""
    best: tuple[int, int, int, int] | None = None
    for stacks in (3, 2, 1):
        for stem in (2, 1, 0):
            fixed = 4 + 22 * (stem + stacks - 1)
            n = max(1, round((layers - fixed) / (21 * stacks)))
            err = abs(fixed + 21 * stacks * n - layers)
            if best is None or err < best[0]:
                best = (err, n, stacks, stem)
    assert best is not None
    return {"cells_per_stack": best[1], "stacks": best[2], "stem_cells": best[3]}


# --- BERT ---------------------------------------------------------------------------------------

def bert(blocks: int, *, seq: int = 128, hidden: int = 768, heads: int = 12, ffn: int = 3072,
         vocab: int = 30522, name: str | None = None) -> Graph:
    """``blocks`` BERT encoder blocks (``6 + 14 * blocks`` layers; BERT-base has 12)."""
    if blocks < 1:
        raise ValueError(f"blocks must be >= 1, got {blocks}")
    g = Graph(name or f"bert{blocks}", seq * 8)  # int64 token ids
    x = seq * hidden
    emb = g.add("embed", "embedding", "mem", 0, vocab * hidden * FP32, x * FP32, [])
    pos = g.add("embed_pos", "add", "mem", x, (512 + 2) * hidden * FP32, x * FP32, [emb])
    cur = g.add("embed_ln", "layer_norm", "mem", 8 * x, 2 * hidden * FP32, x * FP32, [pos])
    lin = 2 * seq * hidden * hidden
    for b in range(blocks):
        t = f"l{b}"
        q, k, v = (g.add(f"{t}_{p}", "linear", "matmul", lin, (hidden + 1) * hidden * FP32,
                         x * FP32, [cur]) for p in "qkv")
        scores = seq * seq * heads
        s = g.add(f"{t}_scores", "matmul", "bmm", 2 * seq * seq * hidden, 0, scores * FP32,
                  [q, k])
        p = g.add(f"{t}_softmax", "softmax", "mem", 5 * scores, 0, scores * FP32, [s])
        ctx = g.add(f"{t}_context", "matmul", "bmm", 2 * seq * seq * hidden, 0, x * FP32,
                    [p, v])
        out = g.add(f"{t}_attn_out", "linear", "matmul", lin, (hidden + 1) * hidden * FP32,
                    x * FP32, [ctx])
        a1 = g.add(f"{t}_add1", "add", "mem", x, 0, x * FP32, [cur, out])
        n1 = g.add(f"{t}_ln1", "layer_norm", "mem", 8 * x, 2 * hidden * FP32, x * FP32, [a1])
        up = g.add(f"{t}_ffn_up", "linear", "matmul", 2 * seq * hidden * ffn,
                   (hidden + 1) * ffn * FP32, seq * ffn * FP32, [n1])
        act = g.add(f"{t}_gelu", "gelu", "mem", 8 * seq * ffn, 0, seq * ffn * FP32, [up])
        down = g.add(f"{t}_ffn_down", "linear", "matmul", 2 * seq * hidden * ffn,
                     (ffn + 1) * hidden * FP32, x * FP32, [act])
        a2 = g.add(f"{t}_add2", "add", "mem", x, 0, x * FP32, [n1, down])
        cur = g.add(f"{t}_ln2", "layer_norm", "mem", 8 * x, 2 * hidden * FP32, x * FP32, [a2])
    pool = g.add("pooler", "linear", "matmul", 2 * hidden * hidden, (hidden + 1) * hidden * FP32,
                 hidden * FP32, [cur])
    tanh = g.add("pooler_tanh", "tanh", "mem", hidden, 0, hidden * FP32, [pool])
    g.add("classifier", "linear", "matmul", 2 * hidden * 2, (hidden + 1) * 2 * FP32, 2 * FP32,
          [tanh])
    return g


# --- on a cluster -------------------------------------------------------------------------------

@cache
def _catalog() -> Catalog:
    return load_catalog()


def layer_time(layer: GraphLayer, in_bytes: float, cls: str, rng: np.random.Generator) -> float:
    """Forward time (s) of ``layer`` on class ``cls`` (the roofline of the module docstring);
    ``in_bytes`` is what it reads, ``rng`` draws the measurement noise."""
    dc = _catalog().classes[cls]
    prof = PROFILES[cls]
    bw = dc.memory_bandwidth_bytes_per_s or dc.flops_per_s / 10
    compute = layer.flops / (dc.flops_per_s * prof.eff[layer.kind])
    memory = (in_bytes + layer.output_bytes + layer.param_bytes) / (bw * prof.mem_eff)
    noise = float(np.exp(rng.normal(0.0, 0.08)))
    return float(f"{prof.overhead_s + max(compute, memory) * noise:.6g}")


def device_counts(devices: int, classes: Sequence[str] = CLASSES,
                  weights: Sequence[float] = WEIGHTS) -> dict[str, int]:
    """``devices`` split over ``classes`` in proportion to ``weights`` (largest remainder), at
    least one of each class when there are enough devices."""
    if devices < 1:
        raise ValueError(f"devices must be >= 1, got {devices}")
    total = float(sum(weights))
    exact = [devices * w / total for w in weights]
    counts = [max(1, math.floor(x)) if devices >= len(classes) else math.floor(x) for x in exact]
    order = sorted(range(len(classes)), key=lambda i: exact[i] - math.floor(exact[i]),
                   reverse=True)
    while sum(counts) < devices:
        for i in order:
            if sum(counts) < devices:
                counts[i] += 1
    while sum(counts) > devices:
        i = max(range(len(counts)), key=lambda j: counts[j])
        counts[i] -= 1
    return {c: n for c, n in zip(classes, counts, strict=True) if n}


def instance(graph: Graph, devices: int, *, classes: Sequence[str] = CLASSES,
             weights: Sequence[float] = WEIGHTS, network: str = "ethernet", seed: int = 0,
             name: str | None = None) -> dict[str, Any]:
    """``graph`` on ``devices`` devices of ``classes`` (shares ``weights``, catalog memory), as an
    instance dict. ``network``: ``ethernet`` (1 Gbit/s, 0.5 ms per message) or ``wireless``
    (SEIFER's model, ``edgepart.profiling.clusters.wireless_links``: a 150 m square, placement
    from ``seed``, ``log2(1 + 283230 / d^2)`` Mbit/s, 1 ms). The first device (a Pi 4, the
    camera) is the source and the sink; relay transfers with overlap, as the shipped suite."""
    catalog = _catalog()
    rng = np.random.default_rng(seed)
    out_bytes = {layer.id: layer.output_bytes for layer in graph.layers}
    layers = []
    for layer in graph.layers:
        in_bytes = (sum(out_bytes[s] for s in layer.inputs) if layer.inputs
                    else graph.input_bytes)
        layers.append({
            "id": layer.id, "op": layer.op, "flops": layer.flops,
            "param_bytes": layer.param_bytes, "output_bytes": layer.output_bytes,
            "work_bytes": in_bytes + layer.output_bytes,
            "time_s": {c: layer_time(layer, in_bytes, c, rng) for c in classes},
            "meta": {"kind": layer.kind}})
    edges = [{"src": s, "dst": layer.id} for layer in graph.layers for s in layer.inputs]
    devs = []
    for cls, count in device_counts(devices, classes, weights).items():
        dc = catalog.classes[cls]
        devs += [{"id": f"{cls}-{k}", "class": cls, "memory_bytes": dc.memory_bytes,
                  "flops_per_s": dc.flops_per_s} for k in range(count)]
    if network == "ethernet":
        links = ethernet_links(bandwidth_mbit_s=1000.0, latency_s=0.0005)
    elif network == "wireless":
        links, _ = wireless_links(len(devs), seed=seed, side_m=150.0, latency_s=0.001)
    else:
        raise ValueError(f"network must be 'ethernet' or 'wireless', got {network!r}")
    camera = devs[0]["id"]
    return {
        "format_version": 1,
        "name": name or f"{graph.name}_{devices}dev" + ("_wifi" if network == "wireless" else ""),
        "description": f"bench/graphs.py: {graph.name} ({len(graph)} layers) on {devices} "
                       f"devices ({network})",
        "model": {"name": graph.name, "input_bytes": graph.input_bytes, "layers": layers,
                  "edges": edges},
        "devices": devs, "links": links, "source": camera, "sink": camera,
        "cost_model": {"overlap": True, "transfer": "relay"},
        "meta": {"generator": "bench/graphs.py", "seed": seed, "network": network},
    }
