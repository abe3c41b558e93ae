r"""Analytic costs of a decoder-only LM at decoder-layer granularity.

Units (the instance's layers, in order): ``embed`` (token embedding), ``layer.0`` ..
``layer.{L-1}`` (decoder layers), ``head`` (final norm and output projection). With the shape
of :class:`~edgepart.llm.configs.DecoderShape`, :math:`q` bytes per weight (``fp32`` 4, ``fp16``
and ``bf16`` 2, ``int8`` 1, ``int4`` 0.5) and :math:`a` bytes per activation and KV-cache value
(4 for ``fp32`` weights, else 2: quantised weights keep fp16 activations and cache, as llama.cpp's
default ``f16`` cache does):

Parameters (counted exactly as ``transformers`` builds them; checked by the tests):

* embed: :math:`Vh`;
* decoder layer: :math:`W = h n_h d + 2 h n_{kv} d + n_h d h + 3 h I` matrix weights, plus
  biases (q, k, v: :math:`n_h d + 2 n_{kv} d`; o: :math:`h`; MLP: :math:`2I + h`) and two norms
  (:math:`2h`);
* head: the final norm :math:`h` and the output matrix :math:`Vh`. A *tied* head shares the
  embedding's matrix: the model has :math:`Vh` fewer distinct parameters, but a stage that holds
  the head needs the matrix as much as the stage holding the embedding, so each unit carries it.
  When both land on one stage (a single-stage plan) the instance counts the matrix twice, an
  overcount of :math:`Vhq` bytes on that plan only (``docs/llm.md``).

KV cache: :math:`k = 2 n_{kv} d a` bytes per token per decoder layer; a stage holds
:math:`k\,C\,B` per decoder layer for :math:`B` resident sequences of :math:`C` tokens. This goes
into the layer's ``param_bytes`` (resident for as long as the weights), so the one evaluator's
stage memory is weights + KV cache + the largest working set + transfer buffers.

FLOPs per request (a multiply-add is 2 FLOPs; element-wise work (norms, rotary, SiLU, softmax,
residuals) is left out: :math:`O(h + I + n_h C)` per token against :math:`O(h(h + I) + n_h d C)`,
about 1% on the shipped configs):

* decode (one token attending to :math:`C` keys): :math:`2W + 4 n_h d C` per decoder layer,
  head :math:`2Vh`;
* prefill of :math:`P` tokens (token :math:`i` attends to :math:`i` keys):
  :math:`2PW + 4 n_h d P(P+1)/2` per decoder layer, head :math:`2Vh` (only the last position's
  logits are computed, as ``generate()`` does); embedding lookups: 0.

Bytes moved from memory per request: every weight of a decoder layer or the head once, plus the
KV cache read (decode: :math:`kC`) or written (prefill: :math:`kP`), plus the layer's input and
output activations; the embedding reads one row per token. The roofline time of a unit on a class
with peak :math:`F` FLOP/s (the catalog's FP32 peak, used for every dtype) and DRAM bandwidth
:math:`M` is :math:`\max(\text{flops}/F, \text{bytes}/M)`: decode is bandwidth-bound on every
shipped class, so its time is the weights and cache it reads over the bandwidth.

Working set (``work_bytes``) of a decoder layer: the q, k, v projections and the two MLP
intermediates of the request's tokens, :math:`t((n_h + 2n_{kv})d + 2I)a`, plus one fp32 score row
per head per token (:math:`4 n_h t C`), the memory of a fused attention kernel that never holds
the whole :math:`t \times C` score matrix. Tensors between units: :math:`t h a` bytes for
:math:`t` tokens per request; the request input is :math:`8t` bytes of token ids and the head
sends one 8-byte token id (the last stage samples).
"""

from __future__ import annotations

from dataclasses import dataclass

from edgepart.instance import Workload
from edgepart.llm.configs import DecoderShape

__all__ = ["BYTES_PER_PARAM", "TOKEN_ID_BYTES", "UnitCost", "activation_bytes", "decoder_params",
           "distinct_params", "kv_bytes_per_token", "unit_costs"]

BYTES_PER_PARAM = {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "int8": 1.0, "int4": 0.5}
"""Storage bytes per weight. int4 is exactly 4 bits: group-wise scales (e.g. llama.cpp's Q4_0
stores 4.5 bits per weight) add 6-12% on top (``docs/llm.md``)."""
TOKEN_ID_BYTES = 8
"""One int64 token id."""


@dataclass(frozen=True, slots=True)
class UnitCost:
    """One unit's parameters, memory, FLOPs, traffic and tensors for one request."""

    id: str
    role: str
    params: int
    weight_bytes: float
    kv_bytes: float
    flops: float
    traffic_bytes: float
    work_bytes: float
    output_bytes: float
    modules: tuple[str, ...]

    def roofline_s(self, flops_per_s: float, bandwidth: float | None) -> float:
        """``max(flops / flops_per_s, traffic / bandwidth)`` (compute only without bandwidth)."""
        compute = self.flops / flops_per_s
        return compute if bandwidth is None else max(compute, self.traffic_bytes / bandwidth)


def activation_bytes(dtype: str) -> float:
    """Bytes of one activation or KV-cache value for weights stored as ``dtype``."""
    return 4.0 if dtype == "fp32" else 2.0


def decoder_params(s: DecoderShape) -> tuple[int, int]:
    """(matrix weights :math:`W`, all parameters) of one decoder layer."""
    q, kv = s.heads * s.head_dim, s.kv_heads * s.head_dim
    matrices = s.hidden * q + 2 * s.hidden * kv + q * s.hidden + 3 * s.hidden * s.mlp
    biases = ((q + 2 * kv) * s.qkv_bias + s.hidden * s.o_bias
              + (2 * s.mlp + s.hidden) * s.mlp_bias)
    return matrices, matrices + biases + 2 * s.hidden


def distinct_params(s: DecoderShape) -> int:
    """The model's parameter count (a tied matrix once), as ``transformers`` reports it."""
    _, layer = decoder_params(s)
    head = s.hidden + (0 if s.tied else s.vocab * s.hidden)
    return s.vocab * s.hidden + s.layers * layer + head


def kv_bytes_per_token(s: DecoderShape, dtype: str) -> float:
    """KV-cache bytes one token adds to one decoder layer: ``2 x kv_heads x head_dim x a``."""
    return 2 * s.kv_heads * s.head_dim * activation_bytes(dtype)


def unit_costs(s: DecoderShape, w: Workload) -> list[UnitCost]:
    """The ``embed``, ``layer.i`` and ``head`` units of ``s`` under workload ``w``."""
    q, a = BYTES_PER_PARAM[w.dtype], activation_bytes(w.dtype)
    t = w.tokens_per_request
    hidden_out = t * s.hidden * a
    embed = UnitCost("embed", "embedding", s.vocab * s.hidden, s.vocab * s.hidden * q, 0.0, 0.0,
                     t * s.hidden * q + hidden_out, 0.0, hidden_out, ("model.embed_tokens",))
    units = [embed] + [_decoder(s, w, i) for i in range(s.layers)]
    head_params = s.hidden + s.vocab * s.hidden
    units.append(UnitCost("head", "head", head_params, head_params * q, 0.0,
                          2.0 * s.vocab * s.hidden, head_params * q + hidden_out,
                          s.vocab * 4.0, TOKEN_ID_BYTES, ("model.norm", "lm_head")))
    return units


def _decoder(s: DecoderShape, w: Workload, i: int) -> UnitCost:
    q, a = BYTES_PER_PARAM[w.dtype], activation_bytes(w.dtype)
    matrices, params = decoder_params(s)
    per_token = kv_bytes_per_token(s, w.dtype)
    attend = s.heads * s.head_dim
    if w.phase == "decode":
        t, keys = 1, w.context_tokens
        flops = 2.0 * matrices + 4.0 * attend * keys
        cache_traffic = per_token * keys
    else:
        t, keys = w.prompt_tokens, w.prompt_tokens
        flops = 2.0 * t * matrices + 4.0 * attend * t * (t + 1) / 2
        cache_traffic = per_token * t
    activations = 2 * t * s.hidden * a
    work = t * ((s.heads + 2 * s.kv_heads) * s.head_dim + 2 * s.mlp) * a + 4.0 * s.heads * t * keys
    return UnitCost(f"layer.{i}", "decoder", params, params * q,
                    per_token * w.context_tokens * w.batch, flops,
                    params * q + cache_traffic + activations, work, t * s.hidden * a,
                    (f"model.layers.{i}",))
