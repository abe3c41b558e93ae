"""The LLM tools' splits as heuristics (exo, llamacpp, llamacpp_memory, memory_first): their
rules on small cases derived by hand, their plans on a shipped instance, an unfit split reported
as no plan, and on random instances: valid plans never better than the optimum."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import random_instance

from edgepart import SolutionStatus, load_instance, solve, validate_plan
from edgepart.instance import Instance
from edgepart.solvers.heuristics.exo import exo_shards
from edgepart.solvers.heuristics.llamacpp import layer_split

LLM = Path(__file__).resolve().parents[1] / "instances" / "llm"
BASELINES = ["exo", "llamacpp", "llamacpp_memory", "memory_first"]


def test_exo_shards_by_hand() -> None:
    # memory a=2, b=1, c=1, 8 layers: ring order by (memory, id) descending is a, c, b;
    # intervals [0, 0.5), [0.5, 0.75), [0.75, 1): layers 0-3, int(4)..int(6)-1 = 4-5, 6-7
    assert exo_shards([(2, "a"), (1, "b"), (1, "c")], 8) == [("a", 0, 3), ("c", 4, 5),
                                                              ("b", 6, 7)]
    # memory 10, 1, 1 and 2 layers: a ends at round(10/12, 5) = 0.83333: layer 0 (int(1.66666)
    # - 1 = 0); c ends at round(0.83333 + 0.08333.., 5) = 0.91666: first int(1.66666) = 1, last
    # int(1.83332) - 1 = 0, empty, skipped; b (the last) takes layer 1 to the end
    assert exo_shards([(10, "a"), (1, "b"), (1, "c")], 2) == [("a", 0, 0), ("b", 1, 1)]


def test_llamacpp_layer_split_by_hand() -> None:
    # 3 repeating layers + the output layer; layer i goes to the first device whose cumulative
    # fraction exceeds i / 4. Even over 2 devices: ends 0.5, 1: 0, 0.25 -> 0; 0.5, 0.75 -> 1.
    assert layer_split([1, 1], 3) == [0, 0, 1, 1]
    # weights 3:1: ends 0.75, 1: 0, 0.25, 0.5 -> 0; 0.75 -> 1: the second device gets only the
    # output layer
    assert layer_split([3, 1], 3) == [0, 0, 0, 1]


def stage_view(inst: Instance, method: str) -> list[tuple[str, str, str]]:
    result = solve(inst, method)
    assert result.plan is not None, result.message
    return [(s.device, s.layers[0], s.layers[-1]) for s in result.plan.stages]


def test_exo_on_llama_8b_home4() -> None:
    # budgets 12, 7, 7, 6.5 GiB (total 32.5) and 32 decoder layers, as in test_exo_shards_by_hand:
    # laptop ends at 0.36923 -> layers 0..int(11.815)-1 = 10; pi5-b (id-descending tie) ends at
    # 0.58461 -> 11..17; pi5-a at 0.79999 -> 18..24; orin 25..31 and the head.
    # Each fp16 decoder layer at 2k context reads 436224000 weight + 8388608 KV + 16384
    # activation bytes = 444628992 bytes: 26.155 ms on a Pi 5 (17 GB/s); 7 of them on a Pi is
    # the bottleneck, 183.08 ms (the laptop's 11 layers and the embedding take 95.6 ms).
    inst = load_instance(LLM / "llama31_8b_fp16_2k_home4.json")
    assert stage_view(inst, "exo") == [("laptop", "embed", "layer.10"),
                                       ("pi5-b", "layer.11", "layer.17"),
                                       ("pi5-a", "layer.18", "layer.24"),
                                       ("orin", "layer.25", "head")]
    assert solve(inst, "exo").objective_s == pytest.approx(7 * 444628992 / 17e9, rel=1e-5)


def test_llamacpp_on_llama_8b_home4() -> None:
    # even split over 4 devices in instance order, 32 decoder layers + the output layer:
    # layer i goes to device k when k/4 <= i/33 < (k+1)/4: 0-8 laptop (8/33 < 0.25 <= 9/33),
    # 9-16 pi5-a, 17-24 pi5-b, 25-31 and the head on orin (25/33 >= 0.75)
    inst = load_instance(LLM / "llama31_8b_fp16_2k_home4.json")
    assert stage_view(inst, "llamacpp") == [("laptop", "embed", "layer.8"),
                                            ("pi5-a", "layer.9", "layer.16"),
                                            ("pi5-b", "layer.17", "layer.24"),
                                            ("orin", "layer.25", "head")]


def chain(params: list[float], memory: dict[str, float], extra: dict[str, Any] | None = None
          ) -> Instance:
    """A chain of 1-FLOP layers with the given parameter bytes and no tensors to move."""
    layers = [{"id": f"L{v}", "op": "decoder", "flops": 1, "param_bytes": p, "output_bytes": 0}
              for v, p in enumerate(params)]
    return load_instance({
        "format_version": 1, "model": {"layers": layers, "edges": [
            {"src": f"L{v}", "dst": f"L{v + 1}"} for v in range(len(params) - 1)]},
        "devices": [{"id": d, "class": "c", "memory_bytes": m, "flops_per_s": 1}
                    for d, m in memory.items()],
        "links": {"default": {"bandwidth_bytes_per_s": 1, "latency_s": 0}}, **(extra or {})})


def test_memory_first_by_hand() -> None:
    # layers of 3 bytes; b (10) takes three (9 <= 10), then a (7) the last one; c unused
    inst = chain([3, 3, 3, 3], {"a": 7, "b": 10, "c": 5})
    assert stage_view(inst, "memory_first") == [("b", "L0", "L2"), ("a", "L3", "L3")]
    # three 6-byte layers on two 7-byte devices: one each, the third fits nowhere
    none = solve(chain([6, 6, 6], {"a": 7, "b": 7}), "memory_first")
    assert none.plan is None and "do not fit" in none.message


def test_unfit_split_is_no_plan_with_the_reason() -> None:
    # exo on memory a=b=5 (ring b, a: equal memory, ids descending) and layers of 1, 1, 4, 4
    # bytes: b gets L0-L1 (2 bytes), a gets L2-L3, 8 bytes > 5: exo could not load it
    inst = chain([1, 1, 4, 4], {"a": 5, "b": 5})
    result = solve(inst, "exo")
    assert result.plan is None and result.status is SolutionStatus.NONE
    assert ("exo's plan breaks the instance's rules: stage 1 needs 8 bytes on device 'a'"
            in result.message)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10**6), st.integers(1, 6), st.integers(1, 3), st.booleans())
def test_baselines_valid_and_never_better_than_the_optimum(seed: int, n: int, nd: int,
                                                           memory: bool) -> None:
    inst = load_instance(random_instance(seed, n=n, nd=nd, memory=memory))
    optimum = solve(inst, "brute")
    for method in BASELINES:
        result = solve(inst, method)
        if result.plan is not None:
            assert validate_plan(inst, result.plan) == [], method
            assert result.objective_s >= optimum.objective_s * (1 - 1e-9), method


def test_table_on_the_instance_where_exo_and_llamacpp_do_not_fit() -> None:
    # 6 sequences x 32768 tokens x 128 KiB = 24 GiB of KV cache plus 8 GB of int8 weights on
    # 32.5 GiB of budgets: memory-proportional and even splits overflow a device; the optimum
    # (memory-bound, like memory_first) fits
    from edgepart.llm.baselines import baseline_table

    frame = baseline_table([LLM / "llama31_8b_int8_32k_x6_home4.json"])
    fits = dict(zip(frame["method"], frame["fits"], strict=True))
    assert fits == {"auto": True, "exo": False, "llamacpp": False, "llamacpp_memory": False,
                    "memory_first": True}
    assert frame.loc[frame["method"] == "auto", "status"].item() == "optimal"
    note = frame.loc[frame["method"] == "exo", "note"].item()
    assert note.startswith("exo's plan breaks the instance's rules: stage ")
