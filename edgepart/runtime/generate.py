r"""Pipelined token generation of a decoder LM split by a plan (issue 13 item 5, first version).

Each plan stage holds the units it was given (``embed``, ``layer.i``, ``head``; see
:mod:`edgepart.llm.costs`) of a ``transformers`` causal LM built from the same config and seed
in every process (random weights, nothing downloaded), and, per sequence, the slice of the KV
cache of its own decoder layers, kept across steps. A sequence's prompt goes through the stages
(prefill: the stage runs its layers on all ``P`` tokens and fills its cache), the last stage
picks the next token greedily (``argmax`` of the last position's logits) and the token goes back
to the first stage for the next step. Several sequences are in flight at once, one driver
thread each, so while stage ``b`` serves one sequence stage ``b + 1`` serves another: the
pipeline fills. Each stage computes one request at a time (a lock: one device, one compute
thread).

Emulation (``pad``): a decode step on stage ``b`` is padded (slept) to the compute time the
instance predicts for it on its device, and before it the driver's thread for that sequence
waits the predicted transfer into stage ``b`` (and, after the last stage, the transfer to the
sink), so one token of one sequence takes the instance's latency :math:`L` and the padded stages
bound the rate by the period :math:`P`: with :math:`S` sequences in flight the predicted decode
rate is :math:`\min(S/L, 1/P)` (``docs/llm.md``). Links are not occupied by a transfer (two
sequences' messages on one link overlap), which is exact while transfers are shorter than the
stages' compute, as in decode. Prefill steps are not padded (a decode instance predicts decode).

Where the stages run is a *transport*: :class:`InProcess` calls the stage functions directly
(every stage in this process, for tests and as the single-process reference), and
:func:`generate_on_workers` deploys them on ``edgepart worker`` processes (one per device, the
runtime's :class:`~edgepart.runtime.cluster.Cluster`) over torch RPC. The greedy tokens must
equal ``model.generate()`` with the same config and seed, token for token; per-stage memory
(parameters + KV cache after the run) is reported next to the instance's accounting.

Not yet here (see ``docs/llm.md``): ``edgepart run --generate`` (the runtime's own command;
``edgepart llm generate`` runs this module), cgroup emulation, and sampling other than greedy.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edgepart.cost import evaluate
from edgepart.instance import Instance
from edgepart.plan import Plan

__all__ = [
    "GenerationResult",
    "InProcess",
    "StageMemory",
    "StageSpec",
    "emulated_times",
    "generate_on_workers",
    "generate_pipelined",
    "generation_report",
    "predicted_tokens_per_s",
    "reference_tokens",
    "stage_specs",
]


@dataclass(frozen=True, slots=True)
class StageSpec:
    """What one stage holds: its units of the model built from ``config`` with ``seed``."""

    run: str
    index: int
    config: Mapping[str, Any]
    seed: int
    units: tuple[str, ...]
    threads: int = 1
    pad_s: float = 0.0


@dataclass(frozen=True, slots=True)
class StageMemory:
    """Bytes a stage holds after a run: its parameters and the KV cache of every sequence."""

    device: str
    param_bytes: int
    kv_cache_bytes: int


@dataclass(frozen=True)
class GenerationResult:
    """Tokens per sequence, timings and per-stage memory of one pipelined run."""

    tokens: tuple[tuple[int, ...], ...]
    time_to_first_token_s: float
    decode_s: float
    memory: tuple[StageMemory, ...]
    decode_tokens: int = 0

    @property
    def tokens_per_s(self) -> float:
        """Decode tokens of all sequences per second, while all of them decode."""
        return self.decode_tokens / self.decode_s if self.decode_s > 0 else float("nan")


# --- the stage (runs in the process that holds it) -----------------------------------------------

_STAGES: dict[tuple[str, int], _Stage] = {}


class _Stage:
    """One stage's modules and the KV cache of each sequence it has seen."""

    def __init__(self, spec: StageSpec) -> None:
        import torch

        from edgepart.llm.build import build_causal_lm
        from edgepart.llm.configs import DecoderShape

        torch.set_num_threads(spec.threads)
        model: Any = build_causal_lm(DecoderShape.from_config(spec.config, "stage"), "cpu",
                                     spec.seed)
        self.config = model.config
        self.first = "embed" in spec.units
        self.last = "head" in spec.units
        layers = model.get_submodule("model.layers")
        self.layers = [layers[int(u.split(".")[1])] for u in spec.units if u.startswith("layer.")]
        self.embed = model.get_submodule("model.embed_tokens") if self.first else None
        self.norm = model.get_submodule("model.norm") if self.last else None
        self.head = model.get_submodule("lm_head") if self.last else None
        self.rotary = model.get_submodule("model.rotary_emb")
        self.caches: dict[int, Any] = {}
        self.lock = threading.Lock()
        self.pad_s = spec.pad_s
        self.overruns = 0

    def modules(self) -> list[Any]:
        return [m for m in (self.embed, *self.layers, self.norm, self.head) if m is not None]

    def step(self, seq: int, x: Any, start: int) -> Any:
        """Run this stage on ``x`` (token ids on the first stage, else hidden states) whose
        first position is ``start``; returns hidden states, or the next token id (last stage).
        A decode step is padded to ``pad_s`` when that is set."""
        import torch

        with self.lock, torch.inference_mode():
            began = time.perf_counter()
            out = self._compute(seq, x, start)
            left = self.pad_s - (time.perf_counter() - began)
            if start > 0 and self.pad_s > 0:
                self.overruns += left < 0
                time.sleep(max(left, 0.0))
            return out

    def _compute(self, seq: int, x: Any, start: int) -> Any:
        import torch
        from transformers import DynamicCache

        cache = self.caches.setdefault(seq, DynamicCache(config=self.config))
        h = self.embed(x) if self.embed is not None else x
        positions = torch.arange(start, start + h.shape[1]).unsqueeze(0)
        rotary = self.rotary(h, position_ids=positions)
        for layer in self.layers:  # no mask: sdpa is causal for a prompt, free for one token
            h = layer(h, attention_mask=None, position_ids=positions, cache=cache,
                      use_cache=True, position_embeddings=rotary)
        if self.head is None or self.norm is None:
            return h
        return int(self.head(self.norm(h[:, -1:, :])).argmax(dim=-1).item())

    def memory(self) -> tuple[int, int]:
        params = {id(p): p for m in self.modules() for p in m.parameters()}
        weights = sum(p.numel() * p.element_size() for p in params.values())
        kv = 0
        for cache in self.caches.values():
            for layer in cache.layers:
                for t in (getattr(layer, "keys", None), getattr(layer, "values", None)):
                    if t is not None and t.numel():
                        kv += t.numel() * t.element_size()
        return weights, kv


def open_stage(spec: StageSpec) -> bool:
    """Build a stage in this process (a worker, or the driver for :class:`InProcess`)."""
    _STAGES[(spec.run, spec.index)] = _Stage(spec)
    return True


def stage_step(run: str, index: int, seq: int, x: Any, start: int) -> Any:
    """One request of sequence ``seq`` on stage ``index`` (see :meth:`_Stage.step`)."""
    return _STAGES[(run, index)].step(seq, x, start)


def stage_memory(run: str, index: int) -> tuple[int, int]:
    """(parameter bytes, KV-cache bytes) the stage holds."""
    return _STAGES[(run, index)].memory()


def close_stage(run: str, index: int) -> bool:
    _STAGES.pop((run, index), None)
    return True


# --- the driver --------------------------------------------------------------------------------


class InProcess:
    """A transport that calls the stage functions in this process."""

    def call(self, rank: int, fn: Callable[..., Any], *args: Any, timeout: float = 0) -> Any:
        return fn(*args)


def stage_specs(plan: Plan, config: Mapping[str, Any], seed: int, run: str,
                threads: int = 1, pad_s: Sequence[float] | None = None) -> list[StageSpec]:
    """One :class:`StageSpec` per plan stage (``pad_s``: each stage's decode compute time)."""
    return [StageSpec(run, b, dict(config), seed, tuple(s.layers), threads,
                      pad_s[b] if pad_s else 0.0)
            for b, s in enumerate(plan.stages)]


def emulated_times(inst: Instance, plan: Plan) -> tuple[list[float], list[float]]:
    """The instance's prediction for ``pad``: each stage's compute seconds, and the transfer
    seconds into each stage followed by the one to the sink (``k + 1`` entries)."""
    metrics = evaluate(inst, plan)
    return ([st.compute_s for st in metrics.stages],
            [st.recv_s for st in metrics.stages] + [metrics.sink_recv_s])


def predicted_tokens_per_s(inst: Instance, plan: Plan, sequences: int) -> float:
    """Decode tokens/s of ``sequences`` sequences in flight: :math:`\\min(S/L, 1/P)`."""
    metrics = evaluate(inst, plan)
    return min(sequences / metrics.latency_s, 1.0 / metrics.bottleneck_s)


def generate_pipelined(transport: Any, ranks: Sequence[int], specs: Sequence[StageSpec],
                       prompts: Sequence[Sequence[int]], new_tokens: int,
                       devices: Sequence[str] | None = None,
                       link_s: Sequence[float] | None = None) -> GenerationResult:
    """Generate ``new_tokens`` greedy tokens for every prompt through the stages, one driver
    thread per sequence (all sequences in flight at once). Stage ``b`` runs on ``ranks[b]``;
    ``link_s[b]`` is waited before stage ``b`` of a decode step, ``link_s[-1]`` after the last.

    The decode rate is measured while every sequence decodes: the tokens made after the last
    first token and up to the earliest last token, over that window."""
    import torch

    run = specs[0].run
    for spec, rank in zip(specs, ranks, strict=True):
        transport.call(rank, open_stage, spec)
    waits = list(link_s) if link_s else [0.0] * (len(ranks) + 1)
    made: list[list[float]] = [[] for _ in prompts]
    out: list[list[int]] = [[] for _ in prompts]
    errors: list[BaseException] = []
    start = time.perf_counter()

    def sequence(seq: int) -> None:
        try:
            x: Any = torch.tensor([list(prompts[seq])], dtype=torch.long)
            position = 0
            for k in range(new_tokens):
                for b, rank in enumerate(ranks):
                    time.sleep(waits[b] if k else 0.0)
                    x = transport.call(rank, stage_step, run, b, seq, x, position)
                time.sleep(waits[-1] if k else 0.0)
                out[seq].append(int(x))
                made[seq].append(time.perf_counter() - start)
                position += len(prompts[seq]) if k == 0 else 1
                x = torch.tensor([[int(x)]], dtype=torch.long)
        except BaseException as err:  # re-raised in the driver's thread below
            errors.append(err)

    threads = [threading.Thread(target=sequence, args=(s,)) for s in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    memory = tuple(StageMemory(devices[b] if devices else str(rank),
                               *transport.call(rank, stage_memory, run, b))
                   for b, rank in enumerate(ranks))
    for b, rank in enumerate(ranks):
        transport.call(rank, close_stage, run, b)
    ttft = max(times[0] for times in made)
    end = min(times[-1] for times in made)
    window = sum(ttft < t <= end for times in made for t in times)
    return GenerationResult(tuple(tuple(t) for t in out), ttft, end - ttft, memory,
                            decode_tokens=window)


def generate_on_workers(inst: Instance, plan: Plan, config: Mapping[str, Any],
                        prompts: Sequence[Sequence[int]], new_tokens: int, seed: int = 0,
                        emulate: bool = False) -> GenerationResult:
    """:func:`generate_pipelined` with each stage on the ``edgepart worker`` of its device
    (local processes on 127.0.0.1, started and stopped here); ``emulate``: ``pad``."""
    from edgepart.runtime.cluster import Cluster
    from edgepart.runtime.transport import disconnects_unlogged

    cluster = Cluster(inst, None)
    with disconnects_unlogged():
        try:
            cluster.start()
            ranks = [cluster.ranks[s.device] for s in plan.stages]
            pad, links = emulated_times(inst, plan) if emulate else (None, None)
            specs = stage_specs(plan, config, seed, f"gen-{time.time_ns()}", pad_s=pad)
            return generate_pipelined(cluster.transport, ranks, specs, prompts, new_tokens,
                                      [s.device for s in plan.stages], links)
        finally:
            cluster.close()


def reference_tokens(config: Mapping[str, Any], prompts: Sequence[Sequence[int]],
                     new_tokens: int, seed: int = 0) -> list[list[int]]:
    """Greedy tokens of single-process ``model.generate()`` for each prompt (batch 1 each)."""
    import torch

    from edgepart.llm.build import build_causal_lm
    from edgepart.llm.configs import DecoderShape

    model: Any = build_causal_lm(DecoderShape.from_config(config, "reference"), "cpu", seed)
    model.generation_config.eos_token_id = None  # exactly new_tokens, none suppressed
    tokens = []
    with torch.inference_mode():
        for prompt in prompts:
            ids = torch.tensor([list(prompt)], dtype=torch.long)
            out = model.generate(ids, attention_mask=torch.ones_like(ids),  # no token is pad
                                 max_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
            tokens.append([int(t) for t in out[0, len(prompt):]])
    return tokens


def generation_report(inst: Instance, plan: Plan, *, new_tokens: int, sequences: int,
                      prompt_tokens: int, emulate: bool = False, processes: bool = True,
                      check: bool = True, seed: int = 0) -> dict[str, Any]:
    """Run pipelined generation of the instance's model (its ``meta.config``) on ``plan`` and
    compare with the prediction: tokens against ``generate()`` (``check``), decode tokens/s,
    time to first token, and each stage's parameters + KV cache against the instance's
    accounting for the tokens held (``P + N - 1`` per sequence; fp32 weights, what runs here)."""
    import random

    from edgepart.errors import InputError
    from edgepart.llm.costs import activation_bytes

    config = inst.meta.get("config")
    if not isinstance(config, Mapping) or inst.workload is None:
        raise InputError(f"{inst.name}: not an LLM instance (make it with edgepart profile hf:)")
    if new_tokens < 2 or sequences < 1 or prompt_tokens < 1:
        raise InputError(f"--generate must be >= 2, --sequences and --prompt-tokens >= 1, got "
                         f"{new_tokens}, {sequences} and {prompt_tokens}")
    rng = random.Random(seed)
    vocab = int(config["vocab_size"])
    prompts = [[rng.randrange(vocab) for _ in range(prompt_tokens)] for _ in range(sequences)]
    if processes:
        result = generate_on_workers(inst, plan, config, prompts, new_tokens, seed, emulate)
    else:
        pad, links = emulated_times(inst, plan) if emulate else (None, None)
        result = generate_pipelined(InProcess(), list(range(len(plan.stages))),
                                    stage_specs(plan, config, seed, "local", pad_s=pad),
                                    prompts, new_tokens, [s.device for s in plan.stages], links)
    # the instance counts C x B tokens of cache at its dtype; the run holds ``held`` at fp32
    held = sequences * (prompt_tokens + new_tokens - 1)
    w = inst.workload
    kv_scale = held / (w.context_tokens * w.batch) * 4.0 / activation_bytes(w.dtype)
    stages = []
    for stage, mem in zip(plan.stages, result.memory, strict=True):
        layers = [inst.model.layers[inst.model.index[u]] for u in stage.layers]
        stages.append({
            "device": stage.device, "param_bytes": mem.param_bytes,
            "predicted_param_bytes": 4 * sum(x.meta.get("parameters", 0) for x in layers),
            "kv_cache_bytes": mem.kv_cache_bytes,
            "predicted_kv_cache_bytes": kv_scale * sum(x.meta.get("kv_cache_bytes", 0)
                                                       for x in layers)})
    report: dict[str, Any] = {
        "instance": inst.name, "sequences": sequences, "prompt_tokens": prompt_tokens,
        "new_tokens": new_tokens, "emulate": "pad" if emulate else "none",
        "tokens_per_s": result.tokens_per_s, "time_to_first_token_s":
        result.time_to_first_token_s, "stages": stages,
        "tokens": [list(t) for t in result.tokens]}
    if emulate:
        report["predicted_tokens_per_s"] = predicted_tokens_per_s(inst, plan, sequences)
    if check:
        report["tokens_equal_generate"] = report["tokens"] == reference_tokens(
            config, prompts, new_tokens, seed)
    return report

