"""Block granularity: which cuts it keeps, checked against every plan of tiny instances."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from edgepart import load_instance, solve
from edgepart.errors import InputError
from edgepart.profiling.clusters import load_cluster
from edgepart.profiling.granularity import coarsen, single_tensor_cuts
from edgepart.profiling.profile import ProfileOptions, profile_instance
from edgepart.profiling.trace import trace_model
from edgepart.solvers.base import SolveOptions


def test_chain_keeps_every_cut() -> None:
    assert single_tensor_cuts(["a", "b", "c"], [("a", "b"), ("b", "c")]) == [0, 1]


def test_residual_block_keeps_only_its_boundaries() -> None:
    ids = ["a", "b", "c", "d", "e"]
    edges = [("a", "b"), ("b", "c"), ("c", "d"), ("a", "d"), ("d", "e")]
    assert single_tensor_cuts(ids, edges) == [0, 3]


def test_branches_from_the_input_have_no_cut_until_they_join() -> None:
    # a and b both read the request input and c joins them: after a, the input and a cross;
    # after b, a and b; only after c does one tensor cross again
    edges = [("a", "c"), ("b", "c"), ("c", "d")]
    assert single_tensor_cuts(["a", "b", "c", "d"], edges) == [2]


def _conv() -> nn.Conv2d:
    return nn.Conv2d(8, 8, 3, padding=1)  # 73728 FLOPs on 8x8, 7.4 ms at 1e7 FLOP/s


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = _conv(), _conv()

    def forward(self, x: Any) -> Any:
        return self.conv2(torch.relu(self.conv1(x))) + x


class TwoBlocks(nn.Module):
    """stem conv, two residual blocks of two convs, tail conv: 6 equal convs, 10 units."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.b1, self.b2, self.tail = _conv(), Block(), Block(), _conv()

    def forward(self, x: Any) -> Any:
        return self.tail(self.b2(self.b1(self.stem(x))))


def _optimum(granularity: str, devices: int, bandwidth: float) -> tuple[float, int]:
    """The best period over every plan (brute force) and its number of stages."""
    cluster = load_cluster({
        "classes": {"edge": {"memory_bytes": 1e9, "flops_per_s": 1e7}},
        "devices": [{"class": "edge", "count": devices}],
        "links": {"default": {"bandwidth_bytes_per_s": bandwidth, "latency_s": 0.0}},
    })
    options = ProfileOptions(input_shape=(1, 8, 8, 8), granularity=granularity,
                             time_model="roofline")
    inst = load_instance(profile_instance(TwoBlocks(), cluster, options))
    result = solve(inst, "brute", SolveOptions())
    assert result.plan is not None
    return float(result.objective_s), len(result.plan.stages)


def test_block_granularity_names_blocks_after_their_modules() -> None:
    traced = coarsen(trace_model(TwoBlocks(), (1, 8, 8, 8)), "block")
    assert [(u.id, u.op) for u in traced.units] == [
        ("stem", "conv2d"), ("b1", "block"), ("b2", "block"), ("tail", "conv2d")]


def test_block_keeps_a_cut_that_is_optimal_at_module_granularity() -> None:
    # Two equal devices: the balanced split is between the blocks (3 convs each side), a cut
    # that one tensor crosses; block granularity must still offer it.
    module, module_stages = _optimum("module", 2, 1e7)
    block, _ = _optimum("block", 2, 1e7)
    assert module_stages == 2
    assert block == pytest.approx(module, rel=1e-9)


def test_block_can_lose_when_links_are_free_and_a_block_must_be_split() -> None:
    # Documented limitation: three devices balance 6 convs 2-2-2 only by cutting inside both
    # blocks; with nearly free links that beats any plan with block boundaries (3-3).
    module, module_stages = _optimum("module", 3, 1e12)
    block, _ = _optimum("block", 3, 1e12)
    assert module_stages == 3
    assert block > module * 1.4


def test_block_of_a_chain_is_the_module_granularity() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    traced = trace_model(model, (1, 4))
    assert [u.id for u in coarsen(traced, "block").units] == [u.id for u in traced.units]


def test_unknown_granularity_is_an_input_error() -> None:
    traced = trace_model(nn.Sequential(nn.Linear(4, 4)), (1, 4))
    with pytest.raises(InputError, match="--granularity: expected one of module, block"):
        coarsen(traced, "layer")
