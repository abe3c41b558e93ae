r"""Tokens per second and time to first token of a plan on a language-model instance.

The instance's cost model gives a plan's period :math:`P` (the bottleneck stage's time per
request) and latency :math:`L` (one request through the empty pipeline, the return of the token
to the sink included). What they mean depends on the ``workload``:

* ``decode`` (one request = one new token of one sequence): a sequence cannot have two tokens in
  flight (token :math:`t+1` needs token :math:`t`), so one sequence decodes at :math:`1/L`
  tokens/s. :math:`B` resident sequences circulate through the pipeline: each stage serves
  :math:`B` tokens per round and each token needs :math:`L`, so the round takes
  :math:`\max(L, BP)` and the cluster makes :math:`\min(B/L, 1/P)` tokens/s, each sequence
  :math:`1/\max(L, BP)`. The ``bottleneck`` objective maximises the saturated rate :math:`1/P`
  (reached once :math:`B \ge L/P`); the ``latency`` objective maximises one sequence's rate.
* ``prefill`` (one request = one prompt): the time to first token is :math:`L` (the first token
  is sampled by the last stage and reaches the sink at :math:`L`), and a stream of prompts is
  served at :math:`1/P` prompts/s, :math:`p/P` prompt tokens/s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgepart.cost import Metrics
from edgepart.instance import Instance, Workload

__all__ = ["LlmRates", "llm_rates", "rates_line"]


@dataclass(frozen=True, slots=True)
class LlmRates:
    """The rates of one plan (see the module docstring)."""

    workload: Workload
    period_s: float
    latency_s: float

    @property
    def saturated_tokens_per_s(self) -> float:
        """Decode: tokens/s of the whole cluster with enough sequences in flight, :math:`1/P`."""
        return 1.0 / self.period_s

    @property
    def cluster_tokens_per_s(self) -> float:
        """Decode: tokens/s of the cluster with its ``batch`` sequences, :math:`\\min(B/L, 1/P)`."""
        return min(self.workload.batch / self.latency_s, 1.0 / self.period_s)

    @property
    def sequence_tokens_per_s(self) -> float:
        """Decode: tokens/s each sequence sees, :math:`1/\\max(L, BP)`."""
        return 1.0 / max(self.latency_s, self.workload.batch * self.period_s)

    def to_dict(self) -> dict[str, Any]:
        if self.workload.phase == "prefill":
            return {"phase": "prefill", "time_to_first_token_s": self.latency_s,
                    "prompts_per_s": 1.0 / self.period_s,
                    "prompt_tokens_per_s": self.workload.prompt_tokens / self.period_s}
        return {"phase": "decode", "single_sequence_tokens_per_s": 1.0 / self.latency_s,
                "saturated_tokens_per_s": self.saturated_tokens_per_s,
                "batch": self.workload.batch,
                "cluster_tokens_per_s": self.cluster_tokens_per_s,
                "sequence_tokens_per_s": self.sequence_tokens_per_s}


def llm_rates(inst: Instance, metrics: Metrics) -> LlmRates | None:
    """The rates of a plan's metrics, or ``None`` when the instance has no llm workload."""
    if inst.workload is None:
        return None
    return LlmRates(inst.workload, metrics.bottleneck_s, metrics.latency_s)


def rates_line(inst: Instance, metrics: Metrics) -> str | None:
    """One line for people (``None`` without an llm workload)."""
    rates = llm_rates(inst, metrics)
    if rates is None:
        return None
    w = rates.workload
    if w.phase == "prefill":
        return (f"prefill of {w.prompt_tokens} tokens: time to first token "
                f"{rates.latency_s * 1e3:.1f} ms, {1.0 / rates.period_s:.3f} prompts/s")
    return (f"decode at {w.context_tokens} tokens of context: {1.0 / rates.latency_s:.2f} "
            f"tokens/s for one sequence, {rates.cluster_tokens_per_s:.2f} tokens/s with "
            f"{w.batch} sequence(s) ({rates.sequence_tokens_per_s:.2f} each), "
            f"{rates.saturated_tokens_per_s:.2f} tokens/s saturated (1/period)")
