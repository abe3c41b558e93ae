"""Decoder-only language models as shapes: shipped configs and the one reader of a config.

A config is the Hugging Face ``config.json`` of a causal LM (the fields ``transformers`` reads),
so the same dict builds the real model (:mod:`edgepart.llm.build`) and the analytic costs
(:mod:`edgepart.llm.costs`). :data:`SHIPPED` holds the public configs of the models the issue
names, written from the numbers their authors published (each entry names its source), and a tiny
Llama-architecture config for tests. Nothing is downloaded: every model is built from these
numbers with random weights.

:class:`DecoderShape` is what the cost model needs: hidden size :math:`h`, layers :math:`L`,
attention heads :math:`n_h`, key/value heads :math:`n_{kv}` (grouped-query attention when
:math:`n_{kv} < n_h`), head size :math:`d = h / n_h` unless ``head_dim`` is given, MLP width
:math:`I`, vocabulary :math:`V`, whether the output head shares the embedding matrix
(``tie_word_embeddings``), and which projections carry a bias (Qwen2: q, k and v; Llama with
``attention_bias``: q, k, v and o; ``mlp_bias``: the three MLP projections).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgepart.errors import InputError
from edgepart.files import read_json

__all__ = ["ARCHITECTURES", "SHIPPED", "DecoderShape", "ShippedConfig", "resolve_config"]

ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
                 "phi3": "Phi3ForCausalLM"}
"""``model_type`` -> the ``transformers`` class; the decoders whose layer shapes the analytic
counts of :mod:`edgepart.llm.costs` know (pre-norm, gated SiLU MLP, rotary attention)."""


@dataclass(frozen=True, slots=True)
class ShippedConfig:
    """A config written in the repository and where its numbers come from."""

    config: Mapping[str, Any]
    source: str


def _llama(hidden: int, layers: int, heads: int, kv_heads: int, mlp: int, vocab: int,
           tied: bool, max_positions: int, **extra: Any) -> dict[str, Any]:
    return {"model_type": "llama", "architectures": ["LlamaForCausalLM"],
            "hidden_size": hidden, "num_hidden_layers": layers,
            "num_attention_heads": heads, "num_key_value_heads": kv_heads,
            "intermediate_size": mlp, "vocab_size": vocab, "tie_word_embeddings": tied,
            "max_position_embeddings": max_positions, "rms_norm_eps": 1e-5,
            "hidden_act": "silu", **extra}


SHIPPED: Mapping[str, ShippedConfig] = {
    "llama-3.1-8b": ShippedConfig(
        _llama(4096, 32, 32, 8, 14336, 128256, False, 131072, rope_theta=500000.0),
        "huggingface.co/meta-llama/Llama-3.1-8B config.json; Llama 3 herd paper (Dubey et al., "
        "2024) Table 3: 32 layers, model dimension 4096, FFN 14336, 32 heads, 8 KV heads, "
        "vocabulary 128K; 8,030,261,248 parameters"),
    "llama-3.2-1b": ShippedConfig(
        _llama(2048, 16, 32, 8, 8192, 128256, True, 131072, head_dim=64, rope_theta=500000.0),
        "huggingface.co/meta-llama/Llama-3.2-1B config.json (hidden 2048, 16 layers, 32 heads, "
        "8 KV heads, head_dim 64, intermediate 8192, tied embeddings); 1,235,814,400 parameters"),
    "llama-3.2-3b": ShippedConfig(
        _llama(3072, 28, 24, 8, 8192, 128256, True, 131072, head_dim=128, rope_theta=500000.0),
        "huggingface.co/meta-llama/Llama-3.2-3B config.json (hidden 3072, 28 layers, 24 heads, "
        "8 KV heads, head_dim 128, intermediate 8192, tied embeddings); 3,212,749,824 "
        "parameters"),
    "qwen2.5-7b": ShippedConfig(
        {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "hidden_size": 3584,
         "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
         "intermediate_size": 18944, "vocab_size": 152064, "tie_word_embeddings": False,
         "max_position_embeddings": 131072, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
         "hidden_act": "silu"},
        "huggingface.co/Qwen/Qwen2.5-7B config.json; Qwen2.5 technical report (2024) Table 1: "
        "28 layers, 28 / 4 query / KV heads, tied embeddings no; 7,615,616,512 parameters "
        "(q, k, v projections with bias)"),
    "phi-3-mini": ShippedConfig(
        {"model_type": "phi3", "architectures": ["Phi3ForCausalLM"], "hidden_size": 3072,
         "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
         "intermediate_size": 8192, "vocab_size": 32064, "tie_word_embeddings": False,
         "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "hidden_act": "silu"},
        "huggingface.co/microsoft/Phi-3-mini-4k-instruct config.json; Phi-3 technical report "
        "(Abdin et al., 2024): 3072 hidden, 32 layers, 32 heads, 32K vocabulary; "
        "3,821,079,552 parameters (fused qkv and gate_up projections)"),
    "tiny-llama": ShippedConfig(
        _llama(64, 4, 4, 2, 128, 256, False, 512, rope_theta=10000.0),
        "edgepart test model: the Llama architecture at a few hundred kB (4 layers, hidden 64, "
        "4 heads, 2 KV heads), small enough to build with random weights and run in tests"),
}


@dataclass(frozen=True, slots=True)
class DecoderShape:
    """The shape numbers of a decoder-only LM (see the module docstring)."""

    name: str
    model_type: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    mlp: int
    vocab: int
    tied: bool
    max_positions: int
    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool
    config: Mapping[str, Any]

    @property
    def architecture(self) -> str:
        """The ``transformers`` class that builds this model."""
        return ARCHITECTURES[self.model_type]

    @classmethod
    def from_config(cls, config: Mapping[str, Any], name: str, where: str = "config"
                    ) -> DecoderShape:
        """Read and check a Hugging Face config dict; errors name the field."""
        model_type = config.get("model_type")
        if model_type not in ARCHITECTURES:
            raise InputError(f"{where}.model_type: must be one of "
                             f"{', '.join(ARCHITECTURES)}, got {json.dumps(model_type)}")
        size = {key: _positive_int(config, key, where) for key in (
            "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
            "vocab_size", "max_position_embeddings")}
        heads = size["num_attention_heads"]
        kv_heads = (_positive_int(config, "num_key_value_heads", where)
                    if config.get("num_key_value_heads") is not None else heads)
        if heads % kv_heads:
            raise InputError(f"{where}.num_key_value_heads: must divide num_attention_heads "
                             f"({heads}), got {kv_heads}")
        if config.get("head_dim") is not None:
            head_dim = _positive_int(config, "head_dim", where)
        elif size["hidden_size"] % heads:
            raise InputError(f"{where}.num_attention_heads: must divide hidden_size "
                             f"({size['hidden_size']}) when head_dim is not given, got {heads}")
        else:
            head_dim = size["hidden_size"] // heads
        attention_bias = bool(config.get("attention_bias", False))
        return cls(name=name, model_type=str(model_type), hidden=size["hidden_size"],
                   layers=size["num_hidden_layers"], heads=heads, kv_heads=kv_heads,
                   head_dim=head_dim, mlp=size["intermediate_size"], vocab=size["vocab_size"],
                   tied=bool(config.get("tie_word_embeddings", False)),
                   max_positions=size["max_position_embeddings"],
                   qkv_bias=model_type == "qwen2" or attention_bias,
                   o_bias=model_type == "llama" and attention_bias,
                   mlp_bias=model_type == "llama" and bool(config.get("mlp_bias", False)),
                   config=dict(config))


def _positive_int(config: Mapping[str, Any], key: str, where: str) -> int:
    value = config.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{where}.{key}: must be an integer >= 1, got {json.dumps(value)}")
    return value


def resolve_config(spec: str, config_path: str | Path | None = None) -> DecoderShape:
    """The shape named by a model spec.

    ``hf:NAME`` with no ``config_path``: the shipped config ``NAME`` (:data:`SHIPPED`).
    ``hf:ARCH`` with ``config_path``: that config file, whose ``model_type`` (or whose
    ``architectures[0]``) must be ``ARCH`` (``llama`` or ``LlamaForCausalLM``, ...).
    """
    prefix, _, name = spec.partition(":")
    if prefix != "hf" or not name:
        raise InputError(f"model: expected 'hf:NAME' or 'hf:ARCH' with --config, got {spec!r}")
    if config_path is None:
        if name not in SHIPPED:
            raise InputError(f"model: no shipped config {name!r} (shipped: "
                             f"{', '.join(SHIPPED)}; or give --config CONFIG.json)")
        return DecoderShape.from_config(SHIPPED[name].config, name, f"config {name}")
    data = read_json(config_path)
    if not isinstance(data, Mapping):
        raise InputError(f"--config: {config_path}: must be a JSON object")
    shape = DecoderShape.from_config(data, Path(config_path).stem, "--config")
    if name not in (shape.model_type, shape.architecture):
        raise InputError(f"model: hf:{name} does not match --config's model_type "
                         f"{shape.model_type!r} ({shape.architecture})")
    return shape
