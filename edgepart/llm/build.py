"""Build a ``transformers`` causal LM from a config with random weights, and count its parameters.

Nothing is downloaded: the model is made with ``AutoModelForCausalLM.from_config`` from the config
dict alone (and ``HF_HUB_OFFLINE=1`` is set in case anything would try). On the ``meta`` device
the model has shapes but no storage, so an 8B model costs nothing to build; that is how every
real config is counted. torch and transformers are imported here only.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from edgepart.errors import InputError
from edgepart.llm.configs import DecoderShape

if TYPE_CHECKING:
    from torch import nn

__all__ = ["build_causal_lm", "unit_param_counts"]


def build_causal_lm(shape: DecoderShape, device: str = "meta", seed: int = 0) -> nn.Module:
    """The model of ``shape`` in eval mode on ``device`` (random weights from ``seed``; torch's
    global random state is left as it was)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from edgepart.profiling.numerics import seeded

    fields = {k: v for k, v in shape.config.items() if k not in ("model_type", "architectures")}
    try:
        config = AutoConfig.for_model(shape.model_type, **fields)
    except (TypeError, ValueError) as err:
        raise InputError(f"config {shape.name}: transformers rejects it: {err}") from None
    with seeded(seed), torch.device(device):
        model = AutoModelForCausalLM.from_config(config)
    return model.eval()


def unit_param_counts(model: nn.Module) -> dict[str, int]:
    """Parameters per unit (``embed``, ``layer.i``, ``head``) of a built model; a tied head
    counts the shared matrix too (see :mod:`edgepart.llm.costs`)."""
    def part(name: str) -> nn.Module:
        return model.get_submodule(name)

    layers = part("model.layers")
    counts = {"embed": _count(part("model.embed_tokens"))}
    counts.update({f"layer.{i}": _count(layer) for i, layer in enumerate(layers.children())})
    counts["head"] = _count(part("model.norm")) + _count(part("lm_head"))
    return counts


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
