"""Language models across edge devices: decoder-only LMs as instances (``docs/llm.md``).

:mod:`~edgepart.llm.configs` (shipped configs and shapes), :mod:`~edgepart.llm.costs` (analytic
parameters, KV cache, FLOPs, roofline), :mod:`~edgepart.llm.profile` (the instance),
:mod:`~edgepart.llm.rates` (tokens/s, time to first token), :mod:`~edgepart.llm.build` (the
``transformers`` model, torch only there). Importing this package needs no torch.
"""

from __future__ import annotations

from edgepart.llm.configs import SHIPPED, DecoderShape, resolve_config
from edgepart.llm.profile import LlmProfileOptions, profile_llm_instance
from edgepart.llm.rates import LlmRates, llm_rates, rates_line

__all__ = ["SHIPPED", "DecoderShape", "LlmProfileOptions", "LlmRates", "llm_rates",
           "profile_llm_instance", "rates_line", "resolve_config"]
