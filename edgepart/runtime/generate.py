"""Pipelined token generation of a decoder LM split by a plan (issue 13 item 5, first version).

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

Where the stages run is a *transport*: :class:`InProcess` calls the stage functions directly
(every stage in this process, for tests and as the single-process reference), and
:func:`generate_on_workers` deploys them on ``edgepart worker`` processes (one per device, the
runtime's :class:`~edgepart.runtime.cluster.Cluster`) over torch RPC. The greedy tokens must
equal ``model.generate()`` with the same config and seed, token for token; per-stage memory
(parameters + KV cache after the run) is reported next to the instance's accounting.

Not yet here (see ``docs/llm.md``): emulated device speeds and links (``--emulate pad``), a
``edgepart run --generate`` command, and sampling other than greedy.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from edgepart.instance import Instance
from edgepart.plan import Plan

__all__ = [
    "GenerationResult",
    "InProcess",
    "StageMemory",
    "StageSpec",
    "generate_on_workers",
    "generate_pipelined",
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
    decode_tokens: int = field(default=0)

    @property
    def tokens_per_s(self) -> float:
        """Decode tokens of all sequences per second (prefill excluded)."""
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

    def modules(self) -> list[Any]:
        return [m for m in (self.embed, *self.layers, self.norm, self.head) if m is not None]

    def step(self, seq: int, x: Any, start: int) -> Any:
        """Run this stage on ``x`` (token ids on the first stage, else hidden states) whose
        first position is ``start``; returns hidden states, or the next token id (last stage)."""
        import torch
        from transformers import DynamicCache

        with self.lock, torch.inference_mode():
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
                threads: int = 1) -> list[StageSpec]:
    """One :class:`StageSpec` per plan stage."""
    return [StageSpec(run, b, dict(config), seed, tuple(s.layers), threads)
            for b, s in enumerate(plan.stages)]


def generate_pipelined(transport: Any, ranks: Sequence[int], specs: Sequence[StageSpec],
                       prompts: Sequence[Sequence[int]], new_tokens: int,
                       devices: Sequence[str] | None = None) -> GenerationResult:
    """Generate ``new_tokens`` greedy tokens for every prompt through the stages, one driver
    thread per sequence (all sequences in flight at once). Stage ``b`` runs on ``ranks[b]``."""
    import torch

    run = specs[0].run
    for spec, rank in zip(specs, ranks, strict=True):
        transport.call(rank, open_stage, spec)
    first_token: list[float] = [0.0] * len(prompts)
    out: list[list[int]] = [[] for _ in prompts]
    errors: list[BaseException] = []
    start = time.perf_counter()

    def sequence(seq: int) -> None:
        try:
            x: Any = torch.tensor([list(prompts[seq])], dtype=torch.long)
            position = 0
            for k in range(new_tokens):
                for b, rank in enumerate(ranks):
                    x = transport.call(rank, stage_step, run, b, seq, x, position)
                out[seq].append(int(x))
                if k == 0:
                    first_token[seq] = time.perf_counter() - start
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
    total = time.perf_counter() - start
    memory = tuple(StageMemory(devices[b] if devices else str(rank),
                               *transport.call(rank, stage_memory, run, b))
                   for b, rank in enumerate(ranks))
    for b, rank in enumerate(ranks):
        transport.call(rank, close_stage, run, b)
    ttft = max(first_token)
    return GenerationResult(tuple(tuple(t) for t in out), ttft, total - ttft, memory,
                            decode_tokens=len(prompts) * (new_tokens - 1))


def generate_on_workers(inst: Instance, plan: Plan, config: Mapping[str, Any],
                        prompts: Sequence[Sequence[int]], new_tokens: int, seed: int = 0
                        ) -> GenerationResult:
    """:func:`generate_pipelined` with each stage on the ``edgepart worker`` of its device
    (local processes on 127.0.0.1, started and stopped here)."""
    from edgepart.runtime.cluster import Cluster
    from edgepart.runtime.transport import disconnects_unlogged

    cluster = Cluster(inst, None)
    with disconnects_unlogged():
        try:
            cluster.start()
            ranks = [cluster.ranks[s.device] for s in plan.stages]
            specs = stage_specs(plan, config, seed, run=f"gen-{time.time_ns()}")
            return generate_pipelined(cluster.transport, ranks, specs, prompts, new_tokens,
                                      [s.device for s in plan.stages])
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
