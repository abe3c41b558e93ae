"""Language models as instances: shapes, analytic costs against transformers, the profile
command, workloads, tokens/s, and the shipped LLM instances. Known answers are derived by hand in
the comments."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edgepart.cli import main
from edgepart.cost import evaluate, validate_plan
from edgepart.errors import InputError
from edgepart.instance import Workload, load_instance, load_workload
from edgepart.llm.configs import SHIPPED, DecoderShape, resolve_config
from edgepart.llm.costs import kv_bytes_per_token, unit_costs
from edgepart.llm.rates import LlmRates
from edgepart.solvers.base import solve

ROOT = Path(__file__).resolve().parents[1]
LLM = ROOT / "instances" / "llm"
HOME4 = LLM / "clusters" / "home4_lan.json"


def shape(name: str) -> DecoderShape:
    return DecoderShape.from_config(SHIPPED[name].config, name)


def test_tiny_llama_costs_by_hand() -> None:
    # tiny-llama: h=64, L=4, 4 heads, 2 KV heads, d=64/4=16, I=128, V=256, untied.
    # decoder layer: q 64*64=4096, k and v 64*32=2048 each, o 4096, MLP 3*64*128=24576,
    # norms 2*64=128: 36992 parameters, 36864 of them in matrices.
    # embed 256*64=16384; head 64 + 16384 = 16448; total 16384 + 4*36992 + 16448 = 180800.
    # KV per token per layer at fp16: 2 * 2 * 16 * 2 = 128 bytes; C=100, B=3: 38400 bytes.
    # decode FLOPs of a decoder layer at C=100: 2*36864 + 4*(4*16)*100 = 73728 + 25600 = 99328.
    units = {u.id: u for u in unit_costs(shape("tiny-llama"),
                                         Workload(prompt_tokens=10, context_tokens=100, batch=3))}
    assert [units[k].params for k in ("embed", "layer.0", "head")] == [16384, 36992, 16448]
    assert sum(u.params for u in units.values()) == 180800
    assert kv_bytes_per_token(shape("tiny-llama"), "fp16") == 128
    assert units["layer.3"].kv_bytes == 38400
    assert units["layer.3"].weight_bytes == 36992 * 2
    assert units["layer.1"].flops == 99328
    assert units["embed"].flops == 0 and units["head"].flops == 2 * 256 * 64


def test_prefill_flops_by_hand() -> None:
    # prefill of P=10 tokens on tiny-llama: 2*10*36864 + 4*64*(10*11/2) = 737280 + 14080;
    # the head scores only the last position: 2*256*64 = 32768; output one token id (8 bytes)
    units = unit_costs(shape("tiny-llama"), Workload(10, 100, phase="prefill"))
    assert units[1].flops == 737280 + 14080
    assert units[-1].flops == 32768 and units[-1].output_bytes == 8
    assert units[0].output_bytes == 10 * 64 * 2  # 10 tokens x hidden 64 x 2 bytes


def test_llama31_8b_kv_cache_at_32k_is_4_gib() -> None:
    # 32 layers x (2 x 8 KV heads x 128 x 2 bytes) = 131072 bytes per token; x 32768 = 4 GiB
    s = shape("llama-3.1-8b")
    assert kv_bytes_per_token(s, "fp16") * s.layers * 32768 == 4 * 2**30


def test_int4_decode_roofline_on_a_pi5_by_hand() -> None:
    # Llama-3.1-8B decoder layer: q 4096^2 + k, v 2 * 4096 * 1024 + o 4096^2 + MLP 3 * 4096 *
    # 14336 + norms 8192 = 218112000 parameters; int4: 109056000 bytes. Decode at C=2048 reads
    # them, the KV cache 4096 * 2048 = 8388608 bytes and 2 * 4096 * 2 = 16384 activation bytes:
    # 117460992 bytes / 17e9 B/s = 6.9095 ms, above the compute time (2 * 218103808 + 4 * 4096 *
    # 2048 FLOPs / 153.6e9 = 3.06 ms), so the time is the memory time.
    inst = load_instance(LLM / "llama31_8b_int4_2k_home4.json")
    layer = inst.model.layers[inst.model.index["layer.5"]]
    assert layer.meta["parameters"] == 218112000
    assert layer.time_s["rpi5"] == pytest.approx(117460992 / 17e9, rel=1e-5)
    assert layer.flops == 2 * 218103808 + 4 * 4096 * 2048


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_analytic_counts_equal_the_transformers_model_on_meta(name: str) -> None:
    pytest.importorskip("transformers")
    from edgepart.llm.build import build_causal_lm, unit_param_counts

    s = shape(name)
    model = build_causal_lm(s, "meta")
    units = unit_costs(s, Workload(1, 8))
    assert unit_param_counts(model) == {u.id: u.params for u in units}
    distinct = sum(p.numel() for p in model.parameters())  # a tied matrix counts once here
    assert distinct == sum(u.params for u in units) - (s.vocab * s.hidden if s.tied else 0)


def test_published_parameter_counts() -> None:
    # the counts the model cards publish: Llama-3.1-8B 8.03B, Qwen2.5-7B 7.61B,
    # Llama-3.2-1B 1.24B (tied), Phi-3-mini 3.8B
    def distinct(name: str) -> int:
        s = shape(name)
        return sum(u.params for u in unit_costs(s, Workload(1, 8))) - s.tied * s.vocab * s.hidden

    assert distinct("llama-3.1-8b") == 8_030_261_248
    assert distinct("qwen2.5-7b") == 7_615_616_512
    assert distinct("llama-3.2-1b") == 1_235_814_400
    assert round(distinct("phi-3-mini") / 1e9, 1) == 3.8


def test_tiny_model_built_on_cpu_has_the_analytic_count() -> None:
    pytest.importorskip("transformers")
    from edgepart.llm.build import build_causal_lm

    model = build_causal_lm(shape("tiny-llama"), "cpu")
    assert sum(p.numel() for p in model.parameters()) == 180800
    assert all(p.device.type == "cpu" for p in model.parameters())


@pytest.mark.parametrize(("change", "message"), [
    ({"phase": "generate"}, "workload.phase: must be one of decode, prefill"),
    ({"prompt_tokens": 9, "context_tokens": 8}, "workload.prompt_tokens: must be <= context"),
    ({"batch": 0}, "workload.batch: must be an integer >= 1"),
    ({"dtype": "int3"}, "workload.dtype: must be one of"),
    ({"kind": "cnn"}, "workload.kind: must be one of llm"),
])
def test_bad_workload_names_the_field(change: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message):
        load_workload({"kind": "llm", "prompt_tokens": 1, "context_tokens": 8, **change})


def test_bad_config_names_the_field(tmp_path: Path) -> None:
    config = dict(SHIPPED["tiny-llama"].config, num_key_value_heads=3)
    path = tmp_path / "c.json"
    path.write_text(json.dumps(config))
    with pytest.raises(InputError, match=r"--config.num_key_value_heads: must divide"):
        resolve_config("hf:llama", path)
    with pytest.raises(InputError, match="no shipped config 'gpt-5'"):
        resolve_config("hf:gpt-5")


def test_rates_by_hand() -> None:
    # period 0.1 s, latency 0.4 s: one sequence 2.5 tokens/s; 4 sequences fill the pipeline:
    # min(4 / 0.4, 1 / 0.1) = 10 tokens/s, each 1 / max(0.4, 4 * 0.1) = 2.5; with 2 sequences
    # min(2 / 0.4, 10) = 5 tokens/s, each 1 / max(0.4, 0.2) = 2.5
    four = LlmRates(Workload(1, 8, batch=4), period_s=0.1, latency_s=0.4).to_dict()
    two = LlmRates(Workload(1, 8, batch=2), period_s=0.1, latency_s=0.4)
    assert four["single_sequence_tokens_per_s"] == pytest.approx(2.5)
    assert four["cluster_tokens_per_s"] == pytest.approx(10.0)
    assert four["sequence_tokens_per_s"] == pytest.approx(2.5)
    assert two.cluster_tokens_per_s == pytest.approx(5.0)
    assert two.sequence_tokens_per_s == pytest.approx(2.5)


def test_profile_command_writes_an_llm_instance(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    out = tmp_path / "tiny.json"
    assert main(["profile", "hf:tiny-llama", "--cluster", str(HOME4), "--out", str(out),
                 "--prompt-tokens", "16", "--context-tokens", "256", "--batch-size", "2",
                 "--dtype", "int8"]) == 0
    inst = load_instance(out)
    assert inst.workload == Workload(16, 256, batch=2, dtype="int8")
    assert [x.id for x in inst.model.layers] == ["embed", *[f"layer.{i}" for i in range(4)],
                                                 "head"]
    # layer.0 holds int8 weights (36992 bytes) and 2 sequences x 256 tokens x 128 bytes of KV
    assert inst.model.layers[1].param_bytes == 36992 + 2 * 256 * 128
    assert inst.meta["parameter_check"]["matches"] is True


@pytest.mark.parametrize("args", [
    ["hf:gpt-5"],
    ["hf:tiny-llama", "--context-tokens", "100000"],
    ["hf:tiny-llama", "--phase", "train"],
])
def test_profile_command_bad_input_is_one_line(tmp_path: Path, args: list[str],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["profile", *args, "--cluster", str(HOME4), "--out", str(tmp_path / "x.json")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("edgepart: ") and err.count("\n") == 1


def test_tied_head_carries_the_shared_matrix() -> None:
    inst = load_instance(LLM / "llama32_1b_fp16_2k_home4.json")
    head, embed = inst.model.layers[-1], inst.model.layers[0]
    # 128256 x 2048 fp16 = 525336576 bytes on each of them, plus the final norm on the head
    assert embed.param_bytes == 128256 * 2048 * 2
    assert head.param_bytes == (128256 * 2048 + 2048) * 2
    assert head.meta["shares_parameters_with"] == "embed"


SHIPPED_LLM = sorted(LLM.glob("*.json"))


@pytest.mark.parametrize("path", SHIPPED_LLM, ids=[p.stem for p in SHIPPED_LLM])
def test_shipped_llm_instance_is_proven_quickly(path: Path) -> None:
    inst = load_instance(path)
    result = solve(inst, "auto", time_limit=60)
    assert result.status == "optimal" and result.wall_time_s < 10
    assert inst.workload is not None and inst.meta["parameter_check"]["matches"]


def test_llama_8b_fp16_fits_only_when_split() -> None:
    # 8.03e9 parameters x 2 bytes = 16.06 GB of weights alone; the largest budget is 12 GiB
    inst = load_instance(LLM / "llama31_8b_fp16_2k_home4.json")
    need = sum(x.param_bytes for x in inst.model.layers)
    assert need > 8_030_261_248 * 2 > max(d.memory_bytes for d in inst.devices)
    assert len(solve(inst, "auto").plan.stages) >= 2  # type: ignore[union-attr]


def test_kv_cache_at_32k_decides_the_split() -> None:
    # same model, dtype, cluster and 4 sequences; only the context differs. At 32k each decoder
    # layer holds 4 x 32768 x 4096 bytes = 512 MiB of KV cache next to its 104 MiB of int4
    # weights, so the 2k optimum (14 units on the 6.5 GiB Jetson) no longer fits.
    short = load_instance(LLM / "llama31_8b_int4_2k_home4.json")
    long = load_instance(LLM / "llama31_8b_int4_32k_home4.json")
    plan_2k = solve(short, "auto").plan
    plan_32k = solve(long, "auto").plan
    assert plan_2k is not None and plan_32k is not None
    assert any("needs" in p for p in validate_plan(long, plan_2k))
    assert evaluate(long, plan_32k).bottleneck_s > evaluate(short, plan_2k).bottleneck_s


def test_measured_times_of_the_tiny_model_scale_by_speed_factor(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    out = tmp_path / "tiny.json"
    assert main(["profile", "hf:tiny-llama", "--cluster", str(HOME4), "--out", str(out),
                 "--dtype", "fp32", "--prompt-tokens", "8", "--context-tokens", "64",
                 "--repeats", "3", "--warmup", "1", "--time-model", "measured"]) == 0
    inst = load_instance(out)
    assert inst.meta["time_model"] == "measured"
    times = inst.model.layers[2].time_s
    # one host time, scaled by host_flops / class_flops: laptop / Pi 5 = 153.6e9 / 486.4e9
    assert times["laptop_cpu"] / times["rpi5"] == pytest.approx(153.6 / 486.4, rel=1e-4)
    assert times["rpi5"] > 0


def test_measured_falls_back_to_roofline_for_large_or_quantised_models() -> None:
    from edgepart.llm.measure import can_measure

    # 8.03e9 parameters (32 GB of fp32) are never built here; fp16 is not what the host runs
    assert not can_measure(shape("llama-3.1-8b"), Workload(1, 8, dtype="fp32"))
    assert not can_measure(shape("tiny-llama"), Workload(1, 8, dtype="fp16"))
    assert can_measure(shape("tiny-llama"), Workload(1, 8, dtype="fp32"))


def test_profile_from_a_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("transformers")
    config = tmp_path / "config.json"
    config.write_text(json.dumps(dict(SHIPPED["tiny-llama"].config, num_hidden_layers=2)))
    out = tmp_path / "two.json"
    args = ["--config", str(config), "--cluster", str(HOME4), "--out", str(out),
            "--prompt-tokens", "4", "--context-tokens", "16"]
    assert main(["profile", "hf:LlamaForCausalLM", *args]) == 0
    assert [x.id for x in load_instance(out).model.layers] == ["embed", "layer.0", "layer.1",
                                                              "head"]
    assert main(["profile", "hf:qwen2", *args]) == 2
    assert "does not match --config's model_type 'llama'" in capsys.readouterr().err


def test_llm_rates_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = LLM / "llama31_8b_fp16_2k_home4.json"
    plan = tmp_path / "plan.json"
    assert main(["solve", str(path), "--out", str(plan)]) == 0
    capsys.readouterr()
    assert main(["llm", "rates", str(path), str(plan), "--json"]) == 0
    rates = json.loads(capsys.readouterr().out)
    metrics = evaluate(load_instance(path), solve(load_instance(path), "auto").plan)  # type: ignore[arg-type]
    assert rates["saturated_tokens_per_s"] == pytest.approx(1 / metrics.bottleneck_s)
    assert rates["single_sequence_tokens_per_s"] == pytest.approx(1 / metrics.latency_s)
    assert main(["llm", "rates", str(LLM.parent / "vgg16_4nodes.json"), str(plan)]) == 2  # bad plan
