"""Tracing and measuring small hand-written modules, checked exactly against hand-made values."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from edgepart.errors import InputError
from edgepart.profiling.clusters import load_cluster
from edgepart.profiling.granularity import coarsen
from edgepart.profiling.measure import count_costs, summarize
from edgepart.profiling.profile import ProfileOptions, profile_instance
from edgepart.profiling.trace import example_input, trace_model

F = 4  # bytes per float32


class Skip(nn.Module):
    """stem -> conv -> relu -> (+ stem) -> flatten -> fc, on a 1x2x4x4 input."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(2, 4, 1)  # with bias
        self.conv = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x: Any) -> Any:
        s = self.stem(x)
        y = self.relu(self.conv(s))
        return self.fc(torch.flatten(y + s, 1))


SHAPE = (1, 2, 4, 4)
ACT = 4 * 4 * 4 * F  # every activation between stem and fc: 4 channels x 4 x 4
# Hand-computed: FlopCounterMode counts 2 FLOPs per multiply-add and no bias adds.
EXPECTED = {
    #         flops                  param_bytes            output_bytes  work_bytes
    "stem":    (2 * 16 * 4 * 2,       (4 * 2 + 4) * F,       ACT,   2 * 16 * F + ACT),
    "conv":    (2 * 16 * 4 * 4 * 9,   4 * 4 * 9 * F,         ACT,   2 * ACT),
    "relu":    (0,                    0,                     ACT,   2 * ACT),
    "add":     (0,                    0,                     ACT,   3 * ACT),
    "flatten": (0,                    0,                     ACT,   2 * ACT),
    "fc":      (2 * 64 * 3,           (64 * 3 + 3) * F,      3 * F, ACT + 3 * F),
}
EDGES = [("stem", "conv"), ("conv", "relu"), ("relu", "add"), ("stem", "add"),
         ("add", "flatten"), ("flatten", "fc")]


def _cluster(**links: Any) -> Any:
    return load_cluster({
        "classes": {"slow": {"memory_bytes": 1e6, "flops_per_s": 1e5},
                    "fast": {"memory_bytes": 1e6, "flops_per_s": 4e5,
                             "memory_bandwidth_bytes_per_s": 1e6}},
        "devices": [{"class": "slow", "count": 2}, {"class": "fast"}],
        "links": links or {"default": {"bandwidth_bytes_per_s": 1e4, "latency_s": 0.0}},
    })


def _profile(model: Any, **options: Any) -> dict[str, Any]:
    opts = ProfileOptions(input_shape=SHAPE, time_model="roofline", **options)
    return profile_instance(model, _cluster(), opts)


def test_skip_module_layers_match_hand_computed_values() -> None:
    inst = _profile(Skip())
    layers = {x["id"]: x for x in inst["model"]["layers"]}
    assert [x["id"] for x in inst["model"]["layers"]] == list(EXPECTED)
    for lid, (flops, params, out, work) in EXPECTED.items():
        got = layers[lid]
        assert (got["flops"], got["param_bytes"], got["output_bytes"], got["work_bytes"]) == (
            flops, params, out, work), lid
    assert inst["model"]["input_bytes"] == 2 * 16 * F


def test_skip_module_edges_carry_the_producer_tensor() -> None:
    inst = _profile(Skip())
    edges = {(e["src"], e["dst"]): e["bytes"] for e in inst["model"]["edges"]}
    assert sorted(edges) == sorted(EDGES)
    assert all(b == ACT for b in edges.values())


def test_roofline_time_is_the_slower_of_compute_and_memory() -> None:
    inst = _profile(Skip())
    conv = next(x for x in inst["model"]["layers"] if x["id"] == "conv")
    flops = EXPECTED["conv"][0]
    traffic = ACT + ACT + 4 * 4 * 9 * F  # reads stem, writes its output, reads its weight
    assert conv["time_s"]["slow"] == pytest.approx(flops / 1e5, rel=1e-5)
    assert conv["time_s"]["fast"] == pytest.approx(max(flops / 4e5, traffic / 1e6), rel=1e-5)


def test_block_granularity_merges_the_residual_block() -> None:
    inst = _profile(Skip(), granularity="block")
    layers = inst["model"]["layers"]
    assert [x["id"] for x in layers] == ["stem", "conv-add", "flatten", "fc"]
    block = layers[1]
    assert block["meta"]["members"] == ["conv", "relu", "add"]
    assert block["flops"] == EXPECTED["conv"][0]
    assert block["param_bytes"] == EXPECTED["conv"][1]
    # held input (stem) + the two live values at the peak (conv and relu, then relu and add)
    assert block["work_bytes"] == 3 * ACT
    edges = [(e["src"], e["dst"]) for e in inst["model"]["edges"]]
    assert edges == [("conv-add", "flatten"), ("flatten", "fc"), ("stem", "conv-add")]


class InputSkip(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)

    def forward(self, x: Any) -> Any:
        return self.conv(x) + x


def test_a_unit_reading_the_input_and_another_unit_gets_an_input_unit() -> None:
    traced = trace_model(InputSkip(), SHAPE)
    assert [(u.id, u.op, u.nodes) for u in traced.units] == [
        ("x", "input", ("x",)), ("conv", "conv2d", ("conv",)), ("add", "add", ("add",))]
    assert sorted(traced.edges) == [("conv", "add"), ("x", "add"), ("x", "conv")]
    inst = _profile(InputSkip())
    assert inst["model"]["layers"][0]["output_bytes"] == inst["model"]["input_bytes"] == 32 * F


class ShapesAndTuples(nn.Module):
    """Shape arithmetic (folded to constants) and a tuple unpacked by getitem (one unit)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 4)

    def forward(self, x: Any) -> Any:
        a, b = torch.chunk(x, 2, dim=1)
        y = (a * b).reshape(x.shape[0], -1)
        return self.fc(y)


def test_shape_arithmetic_is_folded_and_tuples_stay_in_one_unit() -> None:
    model = ShapesAndTuples().eval()
    traced = trace_model(model, SHAPE)
    ops = [u.op for u in traced.units]
    assert ops == ["chunk", "mul", "reshape", "linear"]
    chunk = traced.units[0]
    assert len(chunk.nodes) == 3 and len(chunk.outputs) == 2  # chunk + its two getitems
    inst = _profile(model)
    assert inst["model"]["layers"][0]["output_bytes"] == 2 * (16 * F)  # both halves
    x = example_input(SHAPE)
    torch.testing.assert_close(traced.graph_module(x), model(x))


def test_units_partition_the_graph_and_map_to_fx_nodes() -> None:
    model = torchvision.models.resnet18(weights=None).eval()
    traced = trace_model(model, (1, 3, 64, 64))
    covered = [n for nodes in traced.unit_nodes.values() for n in nodes]
    graph_nodes = [n.name for n in traced.graph_module.graph.nodes
                   if n.op not in ("placeholder", "output")]
    assert sorted(covered) == sorted(graph_nodes)
    assert len(traced.units) == 69  # 20 convs, 20 norms, 17 ReLUs, 8 adds, 2 pools, flatten, fc
    x = example_input((1, 3, 64, 64))
    with torch.no_grad():
        torch.testing.assert_close(traced.graph_module(x), model(x))
    blocks = coarsen(traced, "block")
    assert [u.id for u in blocks.units][4:6] == ["layer1_0", "layer1_0_relu_1"]
    assert len(blocks.units) == 23


def test_flops_and_parameters_add_up_to_the_whole_model() -> None:
    model = torchvision.models.resnet18(weights=None).eval()
    traced = trace_model(model, (1, 3, 64, 64))
    costs = count_costs(traced)
    with FlopCounterMode(display=False) as counter:
        model(example_input((1, 3, 64, 64)))
    assert sum(c.flops for c in costs.values()) == counter.get_total_flops()
    model_bytes = sum(t.numel() * t.element_size()
                      for t in [*model.parameters(), *model.buffers()])
    assert sum(b for c in costs.values() for _, b in c.params) == model_bytes


def test_summarize_is_robust_to_one_stalled_repeat() -> None:
    timing = summarize([1.0, 1.1, 0.9, 1.0, 50.0])
    assert timing.median_s == 1.0 and timing.max_s == 50.0 and timing.min_s == 0.9
    assert timing.spread == pytest.approx(0.1)  # (q3 - q1) / median = (1.1 - 1.0) / 1.0


def test_untraceable_model_is_an_input_error() -> None:
    class DataDependent(nn.Module):
        def forward(self, x: Any) -> Any:
            return x if x.sum() > 0 else -x

    with pytest.raises(InputError, match=r"torch\.fx cannot trace") as err:
        trace_model(DataDependent(), SHAPE)
    assert "\n" not in str(err.value)


def test_shape_the_model_cannot_take_is_an_input_error() -> None:
    with pytest.raises(InputError, match=r"--input-shape 1,3,4,4: the forward pass") as err:
        trace_model(Skip(), (1, 3, 4, 4))
    assert "\n" not in str(err.value)


def test_a_python_value_from_tensor_data_is_refused_not_folded() -> None:
    class Normalise(nn.Module):
        def forward(self, x: Any) -> Any:
            return x / x.abs().max().item()

    with pytest.raises(InputError, match=r"node 'item' computes a Python value from tensor data"):
        trace_model(Normalise(), SHAPE)


class Attention(nn.Module):
    """ViT's pattern: shape-derived sizes and ``y, _ = attention(...)`` (weights slot None)."""

    def __init__(self) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x: Any) -> Any:
        n = x.shape[0]
        y, _ = self.mha(x, x, x, need_weights=False)
        return y.reshape(n, -1)


def test_attention_is_one_unit_and_its_flops_are_counted() -> None:
    model = Attention().eval()
    traced = trace_model(model, (1, 4, 8))
    assert [u.op for u in traced.units] == ["multiheadattention", "reshape"]
    costs = count_costs(traced)
    with FlopCounterMode(display=False) as counter:
        model(example_input((1, 4, 8)))  # autograd on: the composite (countable) path
    assert sum(c.flops for c in costs.values()) == counter.get_total_flops() > 0
