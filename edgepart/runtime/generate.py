r"""Pipelined token generation of a decoder LM split by a plan (issue 13 item 5).

Each plan stage holds the units it was given (``embed``, ``layer.i``, ``head``; see
:mod:`edgepart.llm.costs`) of a ``transformers`` causal LM built from the same config and seed
in every process (random weights, nothing downloaded), and, per sequence, the slice of the KV
cache of its own decoder layers, kept across steps. A sequence's prompt goes through the stages
(prefill: the stage runs its layers on all ``P`` tokens and fills its cache), the last stage
picks the next token greedily (``argmax`` of the last position's logits), feeds it back to
the first stage for the next step (the source's part, as on a device that holds both) and
sends it to the driver (the sink). Several sequences are in flight at once, one driver thread
each, so while stage ``b`` serves one sequence stage ``b + 1`` serves another: the pipeline
fills. Each stage computes one request at a time (a lock: one device, one
compute thread).

**Stage-to-stage chaining.** A stage hands its output straight to the next stage: on workers
by an asynchronous torch RPC call from the stage's worker to the next stage's worker, in one
process by handing the call back to the caller (a loop, not recursion). The driver sends each
prompt once and receives each token (one hop, off the decode loop): not a round trip per stage
and token (the first version's, which made the measured rate 37-39% slower than predicted over
RPC). The stage's lock is released before it forwards, so a stage is free for the next
sequence while its output travels. Before the timed run one untimed request goes round the
loop (TensorPipe opens connections on first use).

**Emulation** (``pad``): a step on stage ``b`` is padded (slept) to the compute time the
instance predicts for it on its device, and the predicted transfer after it (to the next stage;
from the last stage, to the sink and from the source back into the first stage) is waited by
the receiver, counted from the moment it was sent (local workers share the monotonic clock, so
the real hop's time is part of the emulated one, as the runtime's link emulation does; remote
workers wait on the sender's side instead). So one token of one
sequence takes the decode instance's latency :math:`L` and the padded stages bound the rate by
the period :math:`P`: with :math:`S` sequences in flight the predicted decode rate is
:math:`\min(S/L, 1/P)` (``docs/llm.md``). Links are not occupied by a transfer (two sequences'
messages on one link overlap), which is exact while transfers are shorter than the stages'
compute, as in decode. Prefill steps are padded likewise to a *prefill* instance of the same
model and cluster when one is given; then the first sequence's first token is predicted at the
prefill latency :math:`L_p` and the last of :math:`S` prompts, started together, at
:math:`L_p + (S - 1) \max_b c_b` (identical jobs through a flow shop whose transfers are pure
delays: the slowest stage's compute :math:`c_b` spaces them). A padded step that ran long (a
late wake-up on a loaded host) shortens the stage's next padding of that phase by as much, at
most one pad, so each stage keeps the emulated device's time per step on average; the time
scale (:class:`GenerationOptions`) stretches every emulated time so the host's own overheads
weigh less.

**Failures.** Generation state (the KV cache) lives on the workers; a lost worker takes every
sequence's cache with it, and every sequence passes through every stage. So a lost worker (its
process exited, it missed heartbeats, or a stage could not reach it) fails the run within the
heartbeat timeout with one :class:`GenerationError` naming the device and how many sequences
were left unfinished; sequences are not re-started. Every sequence's tokens are answered once,
or the run fails as a whole.

Where the stages run: :class:`InProcess` (every stage in this process, for tests and as the
single-process reference) or :func:`generate_on_workers` (one ``edgepart worker`` process per
device, the runtime's :class:`~edgepart.runtime.cluster.Cluster`). The greedy tokens must equal
``model.generate()`` with the same config and seed, token for token; per-stage memory
(parameters + KV cache after the run) is reported next to the instance's accounting.
``edgepart run INSTANCE PLAN --model hf:ARCH --generate N`` runs :func:`generation_report`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgepart.cost import evaluate
from edgepart.instance import Instance
from edgepart.plan import Plan

if TYPE_CHECKING:
    from edgepart.runtime.cluster import Cluster

__all__ = [
    "GenerationError",
    "GenerationOptions",
    "GenerationResult",
    "InProcess",
    "PhaseTimes",
    "StageMemory",
    "StageSpec",
    "emulated_times",
    "generate_on_workers",
    "generate_pipelined",
    "generation_report",
    "predicted_first_tokens_s",
    "predicted_tokens_per_s",
    "reference_tokens",
    "sequence_failed",
    "stage_specs",
    "stage_step",
    "token_ready",
]

PREFILL, DECODE = 0, 1
"""Index of a phase in the (prefill, decode) pairs of :class:`StageSpec`."""
WARM_UP = -1
"""The start position of the driver's untimed warm-up request (neither padded nor counted; its
cache is dropped after it, :func:`forget_warm_up`)."""


class GenerationError(RuntimeError):
    """A run that cannot answer every sequence (a lost worker and its KV cache)."""


@dataclass(frozen=True, slots=True)
class StageSpec:
    """What one stage holds (its units of the model built from ``config`` with ``seed``) and
    where its output goes: ``next_rank`` (the next stage's worker; from the last stage, the
    first stage's), over torch RPC or by a direct call. Emulation, as (prefill, decode) pairs:
    ``pad_s`` the compute to pad a step to, ``link_s`` the transfer after it (from the last
    stage: to the sink and from the source into the first stage), ``sink_s`` the last stage's
    to the sink; ``shared_clock``: the receiver can wait for a transfer on the sender's clock
    (processes of one host). ``fail_after``: decode steps after which the worker process kills
    itself (``fail_hang``: stops itself), the runtime's ``--fail-stage``."""

    run: str
    index: int
    config: Mapping[str, Any]
    seed: int
    units: tuple[str, ...]
    next_rank: int = 0
    over_rpc: bool = False
    shared_clock: bool = True
    threads: int = 1
    pad_s: tuple[float, float] = (0.0, 0.0)
    link_s: tuple[float, float] = (0.0, 0.0)
    sink_s: tuple[float, float] = (0.0, 0.0)
    fail_after: int | None = None
    fail_hang: bool = False


@dataclass(frozen=True, slots=True)
class PhaseTimes:
    """An instance's prediction for a plan, to emulate: each stage's compute seconds, and the
    transfers into the first stage (from the source) and after each stage (``k + 1``)."""

    compute_s: tuple[float, ...]
    transfer_s: tuple[float, ...]

    def scaled(self, factor: float) -> PhaseTimes:
        """Every time ``factor`` times longer (``--time-scale``)."""
        return PhaseTimes(tuple(t * factor for t in self.compute_s),
                          tuple(t * factor for t in self.transfer_s))


@dataclass(frozen=True, slots=True)
class StageMemory:
    """Bytes a stage holds after a run: its parameters and the KV cache of every sequence."""

    device: str
    param_bytes: int
    kv_cache_bytes: int


@dataclass(frozen=True)
class GenerationResult:
    """Tokens per sequence, timings and per-stage memory of one pipelined run.
    ``first_tokens_s``: each sequence's first token, seconds after the start."""

    tokens: tuple[tuple[int, ...], ...]
    first_tokens_s: tuple[float, ...]
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
        from edgepart.llm.build import build_causal_lm
        from edgepart.llm.configs import DecoderShape
        from edgepart.profiling.numerics import set_torch_compute

        set_torch_compute(spec.threads)  # as the profile (edgepart.profiling.numerics)
        model: Any = build_causal_lm(DecoderShape.from_config(spec.config, "stage"), "cpu",
                                     spec.seed)
        self.spec = spec
        self.config = model.config
        self.last = "head" in spec.units
        layers = model.get_submodule("model.layers")
        self.layers = [layers[int(u.split(".")[1])] for u in spec.units if u.startswith("layer.")]
        self.embed = model.get_submodule("model.embed_tokens") if "embed" in spec.units else None
        self.norm = model.get_submodule("model.norm") if self.last else None
        self.head = model.get_submodule("lm_head") if self.last else None
        self.rotary = model.get_submodule("model.rotary_emb")
        self.caches: dict[int, Any] = {}
        self.lock = threading.Lock()
        self.decode_steps = 0
        self.late = [0.0, 0.0]  # (prefill, decode): steps' time beyond their pads, carried

    def modules(self) -> list[Any]:
        return [m for m in (self.embed, *self.layers, self.norm, self.head) if m is not None]

    def step(self, seq: int, x: Any, start: int) -> Any:
        """Run this stage on ``x`` (token ids on the first stage, else hidden states) whose
        first position is ``start``; returns hidden states, or the next token id (last stage).
        The step is padded to the spec's time for its phase; a step that took longer (a
        sleep that woke late on a loaded host, or real compute beyond the pad) shortens the
        next steps' padding by as much, never by more than one pad, so the stage's time per
        step is the emulated device's on average while the host can keep up."""
        import torch

        if start == WARM_UP:
            with self.lock, torch.inference_mode():
                return self._compute(WARM_UP, x, 0)
        phase = DECODE if start > 0 else PREFILL
        with self.lock, torch.inference_mode():
            self._fail_if_due(phase)
            began = time.perf_counter()
            out = self._compute(seq, x, start)
            pad = self.spec.pad_s[phase]
            time.sleep(max(pad - self.late[phase] - (time.perf_counter() - began), 0.0))
            late = self.late[phase] + time.perf_counter() - began - pad
            self.late[phase] = min(max(late, 0.0), pad)
            return out

    def _fail_if_due(self, phase: int) -> None:
        """``--fail-stage``: kill (or stop) this worker process after ``fail_after`` decode
        steps."""
        self.decode_steps += phase == DECODE
        after = self.spec.fail_after
        if after is not None and self.decode_steps > after:
            os.kill(os.getpid(), signal.SIGSTOP if self.spec.fail_hang else signal.SIGKILL)

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


Call = tuple[int, Callable[..., Any], tuple[Any, ...]]
"""A call to make next: (rank, function, arguments)."""


def stage_step(run: str, index: int, seq: int, x: Any, start: int, remaining: int,
               due: float = 0.0) -> Call | None:
    """One request of sequence ``seq`` on stage ``index``, ``remaining`` tokens still to make.

    It waits until ``due`` (the emulated transfer into it, counted from its sender's clock
    when the clock is shared), runs :meth:`_Stage.step`, then passes the output on: to the
    next stage, or from the last stage the token to the driver (:func:`token_ready`) and, while
    tokens remain, back into the first stage as the sequence's next input. Over RPC it makes
    those calls itself and returns None; in one process it calls the driver and returns the
    next stage's call, which its caller makes (no recursion across a whole generation)."""
    stage = _STAGES[(run, index)]
    time.sleep(max(due - time.perf_counter(), 0.0))
    out = stage.step(seq, x, start)
    spec, phase = stage.spec, DECODE if start > 0 else PREFILL
    warm = start == WARM_UP
    if not stage.last:
        return _pass_on(spec, seq, [(spec.next_rank, stage_step, (
            run, index + 1, seq, out, start, remaining, _due(spec, spec.link_s[phase], warm)))])
    calls: list[Call] = []
    if remaining > 1:  # first: the decode loop waits for it, the driver does not
        import torch

        calls.append((spec.next_rank, stage_step, (
            run, 0, seq, torch.tensor([[out]], dtype=torch.long),
            start if warm else start + x.shape[1], remaining - 1,
            _due(spec, spec.link_s[phase], warm))))
    calls.append((0, token_ready, (run, seq, out, _due(spec, spec.sink_s[phase], warm))))
    return _pass_on(spec, seq, calls)


def _due(spec: StageSpec, transfer_s: float, warm_up: bool) -> float:
    """When a message sent now arrives, emulated: on a shared clock the receiver waits for it;
    otherwise the sender waits here and the message is due at once (0)."""
    if warm_up or transfer_s <= 0:
        return 0.0
    if spec.shared_clock:
        return time.perf_counter() + transfer_s
    time.sleep(transfer_s)
    return 0.0


def _pass_on(spec: StageSpec, seq: int, calls: list[Call]) -> Call | None:
    """Make ``calls`` through the worker's transport (asynchronously,
    :func:`~edgepart.runtime.transport.joined_transport`; a failure is reported to the driver
    as the sequence's), or, in one process, the driver's at once and hand back the stage's."""
    if not spec.over_rpc:
        for rank, fn, args in calls:
            if rank == 0:
                fn(*args)
        return next((c for c in calls if c[0] != 0), None)
    from edgepart.runtime.transport import joined_transport

    transport = joined_transport()
    for rank, fn, args in calls:
        reply = transport.call_async(rank, fn, *args)
        reply.add_done_callback(functools.partial(_report_failure, spec, seq, rank))
    return None


def _report_failure(spec: StageSpec, seq: int, rank: int, reply: Any) -> None:
    from edgepart.profiling.model_spec import first_line
    from edgepart.runtime.transport import joined_transport

    try:
        reply.wait()
    except Exception as err:  # backend-specific: a dead peer, a timeout or a remote error
        whom = "the driver" if rank == 0 else f"worker {rank}"
        message = f"stage {spec.index} could not reach {whom}: {first_line(err)}"
        with contextlib.suppress(Exception):  # the driver itself may be gone
            joined_transport().call_async(0, sequence_failed, spec.run, seq, message)


def forget_warm_up(run: str, index: int) -> bool:
    """Drop the warm-up request's KV cache."""
    _STAGES[(run, index)].caches.pop(WARM_UP, None)
    return True


def stage_memory(run: str, index: int) -> tuple[int, int]:
    """(parameter bytes, KV-cache bytes) the stage holds."""
    return _STAGES[(run, index)].memory()


def close_stage(run: str, index: int) -> bool:
    _STAGES.pop((run, index), None)
    return True


# --- the driver's end -------------------------------------------------------------------------

Inbox = queue.Queue[tuple[int, float] | GenerationError]
"""Where the driver receives one sequence's tokens (with their arrival times) or its failure."""
Health = Callable[[], str | None]
"""Names a lost worker, if any."""


_INBOXES: dict[str, list[Inbox]] = {}


def token_ready(run: str, seq: int, token: int, due: float = 0.0) -> None:
    """Called by the last stage with sequence ``seq``'s next token, emulated to arrive at
    ``due`` (the sink's transfer) if that is later."""
    inboxes = _INBOXES.get(run)  # none: a late message of a run that has ended
    if inboxes is not None:
        inboxes[seq].put((token, max(time.perf_counter(), due)))


def sequence_failed(run: str, seq: int, message: str) -> None:
    """Called by a stage that could not pass sequence ``seq`` on."""
    inboxes = _INBOXES.get(run)  # none: a late message of a run that has ended
    if inboxes is not None:
        inboxes[seq].put(GenerationError(message))


class _Done:
    """The reply of a call already made (:class:`InProcess`)."""

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.error: BaseException | None = None
        try:
            self.value = fn(*args)
        except Exception as err:  # handed to wait(), as a remote call's error would be
            self.error = err

    def wait(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        fn(self)


class InProcess:
    """A transport that calls the stage functions in this process."""

    def call(self, rank: int, fn: Callable[..., Any], *args: Any, timeout: float = 0) -> Any:
        return fn(*args)

    def call_async(self, rank: int, fn: Callable[..., Any], *args: Any,
                   timeout: float = 0) -> _Done:
        """Call ``fn``, then each call it hands back (:func:`stage_step`), to the end."""
        return _Done(_calls_to_the_end, (fn, args))


def _calls_to_the_end(fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    result = fn(*args)
    while isinstance(result, tuple):  # a :data:`Call` handed back
        _, fn, args = result
        result = fn(*args)
    return result


def emulated_times(inst: Instance, plan: Plan) -> PhaseTimes:
    """The instance's prediction for ``pad``: each stage's compute, the transfer into each
    stage and the one to the sink."""
    metrics = evaluate(inst, plan)
    return PhaseTimes(tuple(st.compute_s for st in metrics.stages),
                      (*(st.recv_s for st in metrics.stages), metrics.sink_recv_s))


def stage_specs(plan: Plan, config: Mapping[str, Any], seed: int, run: str,
                ranks: Sequence[int] | None = None, *, prefill: PhaseTimes | None = None,
                decode: PhaseTimes | None = None, fail: tuple[int, int, bool] | None = None,
                shared_clock: bool = True, threads: int = 1) -> list[StageSpec]:
    """One :class:`StageSpec` per plan stage. ``ranks``: each stage's worker (None: all in this
    process); ``prefill``/``decode``: the times to emulate; ``fail``: (stage, decode steps,
    hang) for ``--fail-stage``."""
    k = len(plan.stages)
    over_rpc = ranks is not None
    ranks = list(ranks) if ranks is not None else list(range(1, k + 1))  # never 0, the driver's
    nexts = [*ranks[1:], ranks[0]]
    zero = PhaseTimes((0.0,) * k, (0.0,) * (k + 1))
    pre, dec = prefill or zero, decode or zero
    links = [(pre.transfer_s[b + 1], dec.transfer_s[b + 1]) for b in range(k - 1)]
    back = dec.transfer_s[0]  # the token from the source into the first stage
    links.append((pre.transfer_s[k] + back, dec.transfer_s[k] + back))
    return [StageSpec(run, b, dict(config), seed, tuple(s.layers), nexts[b], over_rpc,
                      shared_clock, threads, (pre.compute_s[b], dec.compute_s[b]), links[b],
                      (pre.transfer_s[k], dec.transfer_s[k]),
                      fail[1] if fail and fail[0] == b else None, bool(fail and fail[2]))
            for b, s in enumerate(plan.stages)]


def predicted_tokens_per_s(inst: Instance, plan: Plan, sequences: int) -> float:
    """Decode tokens/s of ``sequences`` sequences in flight: :math:`\\min(S/L, 1/P)`."""
    metrics = evaluate(inst, plan)
    return min(sequences / metrics.latency_s, 1.0 / metrics.bottleneck_s)


def predicted_first_tokens_s(prefill: Instance, plan: Plan, sequences: int
                             ) -> tuple[float, float]:
    """Time to the first sequence's first token and to the last one's, ``sequences`` prompts
    started together: :math:`L_p` and :math:`L_p + (S - 1)\\max_b c_b` (module docstring)."""
    metrics = evaluate(prefill, plan)
    slowest = max(st.compute_s for st in metrics.stages)
    return metrics.latency_s, metrics.latency_s + (sequences - 1) * slowest


def generate_pipelined(transport: Any, ranks: Sequence[int], specs: Sequence[StageSpec],
                       prompts: Sequence[Sequence[int]], new_tokens: int,
                       devices: Sequence[str] | None = None, source_s: float = 0.0,
                       health: Health | None = None,
                       token_timeout_s: float = 120.0) -> GenerationResult:
    """Generate ``new_tokens`` greedy tokens for every prompt through the stages, one driver
    thread per sequence (all sequences in flight at once). Stage ``b`` runs on ``ranks[b]`` and
    passes its output on itself (:func:`stage_step`): the driver hands each prompt to the first
    stage (arriving after ``source_s``, the emulated transfer from the source) and receives
    the tokens from the last one, which feeds each back to the first. ``health()`` names a lost
    worker, if any (checked while waiting); a token that takes longer than ``token_timeout_s``
    fails the run too.

    The decode rate is measured while every sequence decodes: the tokens made after the last
    first token and up to the earliest last token, over that window."""
    run = specs[0].run
    inboxes: list[Inbox] = [queue.Queue() for _ in prompts]
    _INBOXES[run] = inboxes
    try:
        _open_stages(transport, ranks, specs)
        _warm_up(transport, ranks, run, len(prompts[0]), inboxes[0], health, token_timeout_s)
        start = time.perf_counter()
        out, made = _generate(transport, ranks[0], specs[0], prompts, new_tokens, source_s,
                              inboxes, health, token_timeout_s)
        memory = _close_stages(transport, ranks, run, devices)
    finally:
        _INBOXES.pop(run, None)
    return _measured(out, made, start, memory)


def _open_stages(transport: Any, ranks: Sequence[int], specs: Sequence[StageSpec]) -> None:
    """Build every stage on its worker, all at once."""
    opened = [transport.call_async(rank, open_stage, spec)
              for spec, rank in zip(specs, ranks, strict=True)]
    for reply in opened:
        reply.wait()


def _generate(transport: Any, rank: int, first: StageSpec, prompts: Sequence[Sequence[int]],
              new_tokens: int, source_s: float, inboxes: Sequence[Inbox],
              health: Health | None, timeout_s: float
              ) -> tuple[list[list[int]], list[list[float]]]:
    """Every sequence's tokens and their arrival times, one driver thread per sequence; the
    first failure of any fails the run (:class:`GenerationError`)."""
    out: list[list[int]] = [[] for _ in prompts]
    made: list[list[float]] = [[] for _ in prompts]
    failure: list[str] = []

    def sequence(seq: int) -> None:
        try:
            _start_sequence(transport, rank, first, seq, prompts[seq], new_tokens, source_s)
            for _ in range(new_tokens):
                token, when = _next_token(inboxes[seq], failure, health, timeout_s)
                out[seq].append(token)
                made[seq].append(when)
        except GenerationError as err:
            failure.append(str(err))

    threads = [threading.Thread(target=sequence, args=(s,), daemon=True)
               for s in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failure:
        unfinished = sum(len(t) < new_tokens for t in out)
        raise GenerationError(f"{_lost_worker(health) or failure[0]}; {unfinished} of "
                              f"{len(prompts)} sequence(s) unfinished (their KV cache was on "
                              "the workers: not recovered)")
    return out, made


def _close_stages(transport: Any, ranks: Sequence[int], run: str,
                  devices: Sequence[str] | None) -> tuple[StageMemory, ...]:
    """Each stage's memory (named by its device, else its rank), then the stages closed."""
    memory = tuple(StageMemory(devices[b] if devices else str(rank),
                               *transport.call(rank, stage_memory, run, b))
                   for b, rank in enumerate(ranks))
    for b, rank in enumerate(ranks):
        transport.call(rank, close_stage, run, b)
    return memory


def _measured(out: list[list[int]], made: list[list[float]], start: float,
              memory: tuple[StageMemory, ...]) -> GenerationResult:
    """The result: first tokens counted from ``start``, and the decode window from the last
    first token to the earliest last token (:func:`generate_pipelined`)."""
    first = tuple(times[0] - start for times in made)
    ttft, end = max(times[0] for times in made), min(times[-1] for times in made)
    window = sum(ttft < t <= end for times in made for t in times)
    return GenerationResult(tuple(tuple(t) for t in out), first, end - ttft, memory,
                            decode_tokens=window)


def _warm_up(transport: Any, ranks: Sequence[int], run: str, prompt_tokens: int,
             inbox: Inbox, health: Health | None, timeout_s: float) -> None:
    """One untimed prompt of the run's length and one decode step through the chain (sequence
    ``WARM_UP``), then forgotten: it opens the connections between the stages' workers
    (TensorPipe connects on first use) and runs each stage's code for both shapes once, costs
    the prediction does not contain."""
    import torch

    reply = transport.call_async(ranks[0], stage_step, run, 0, 0, torch.zeros(
        (1, prompt_tokens), dtype=torch.long), WARM_UP, 2)
    reply.add_done_callback(functools.partial(_check_handed, run, 0))
    for _ in range(2):  # and the last stage's way back into the first
        _next_token(inbox, [], health, timeout_s)
    for b, rank in enumerate(ranks):
        transport.call(rank, forget_warm_up, run, b)


def _lost_worker(health: Health | None, grace_s: float = 1.0) -> str | None:
    """The lost worker behind a failure, as the cluster's watchers name it: a stage that could
    not reach the next one usually hears of it first, the watchers within their poll."""
    deadline = time.monotonic() + grace_s
    while health is not None and time.monotonic() < deadline:
        lost = health()
        if lost:
            return lost
        time.sleep(0.05)
    return None


def _start_sequence(transport: Any, rank: int, first: StageSpec, seq: int,
                    prompt: Sequence[int], new_tokens: int, source_s: float) -> None:
    """Hand sequence ``seq``'s prompt to the first stage; its tokens come to the inbox."""
    import torch

    x = torch.tensor([list(prompt)], dtype=torch.long)
    reply = transport.call_async(rank, stage_step, first.run, 0, seq, x, 0, new_tokens,
                                 _due(first, source_s, False))
    reply.add_done_callback(functools.partial(_check_handed, first.run, seq))


def _check_handed(run: str, seq: int, reply: Any) -> None:
    """A failed hand-over to the first stage fails the sequence."""
    from edgepart.profiling.model_spec import first_line

    try:
        reply.wait()
    except Exception as err:  # backend-specific: a dead worker or a remote error
        inboxes = _INBOXES.get(run)
        if inboxes is not None:
            inboxes[seq].put(GenerationError(f"stage 0 failed: {first_line(err)}"))


def _next_token(inbox: Inbox, failure: list[str], health: Health | None, timeout_s: float
                ) -> tuple[int, float]:
    """Wait for the sequence's next token; raise :class:`GenerationError` when the run fails
    (another sequence failed, a worker is lost, or nothing came for ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            item = inbox.get(timeout=0.05)
        except queue.Empty:
            lost = health() if health is not None else None
            if failure or lost:
                raise GenerationError(lost or failure[0]) from None
            if time.monotonic() > deadline:
                raise GenerationError(f"no token for {timeout_s:g} s") from None
            continue
        if isinstance(item, GenerationError):
            raise item
        return item


def generate_on_workers(inst: Instance, plan: Plan, config: Mapping[str, Any],
                        prompts: Sequence[Sequence[int]], new_tokens: int, seed: int = 0, *,
                        prefill: PhaseTimes | None = None, decode: PhaseTimes | None = None,
                        fail: tuple[int, int, bool] | None = None,
                        master: tuple[str, int] | None = None,
                        heartbeat_timeout_s: float = 10.0) -> GenerationResult:
    """:func:`generate_pipelined` with each stage on the ``edgepart worker`` of its device
    (local processes on 127.0.0.1 started and stopped here, or remote ones at ``master``)."""
    from edgepart.runtime.cluster import Cluster
    from edgepart.runtime.transport import disconnects_unlogged

    cluster = Cluster(inst, master, heartbeat_timeout_s=heartbeat_timeout_s)
    ranks = [cluster.ranks[s.device] for s in plan.stages]
    health = _stage_health(cluster, ranks)
    with disconnects_unlogged():
        try:
            cluster.start()
            specs = stage_specs(plan, config, seed, f"gen-{time.time_ns()}", ranks,
                                prefill=prefill, decode=decode, fail=fail,
                                shared_clock=cluster.local)
            return generate_pipelined(cluster.transport, ranks, specs, prompts, new_tokens,
                                      [s.device for s in plan.stages],
                                      prefill.transfer_s[0] if prefill else 0.0, health)
        finally:
            cluster.close()


def _stage_health(cluster: Cluster, ranks: Sequence[int]) -> Health:
    """The :data:`Health` of the stages' workers: the first of them the cluster's watchers
    reported lost (from now on: earlier events in this process are another run's), which the
    cluster then buries."""
    from edgepart.runtime import events

    with contextlib.suppress(queue.Empty):
        while True:
            events.INBOX.get_nowait()
    lost: list[str] = []

    def health() -> str | None:
        with contextlib.suppress(queue.Empty):
            while not lost:
                event = events.INBOX.get_nowait()
                if isinstance(event, events.Fault) and event.peer in ranks:
                    cluster.bury({event.peer})
                    lost.append(f"device '{cluster.devices[event.peer]}' (stage "
                                f"{ranks.index(event.peer)}) lost: {event.message}")
        return lost[0] if lost else None

    return health


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


@dataclass(frozen=True, slots=True)
class GenerationOptions:
    """What :func:`generation_report` runs: ``new_tokens`` per sequence for ``sequences``
    random prompts of ``prompt_tokens``; ``emulate`` pads to the instance (and to ``prefill``,
    a prefill instance of the same model and cluster, when given); ``processes``: on worker
    processes (else every stage in this process); ``fail``: (stage, decode steps, hang);
    ``time_scale``: every emulated time that many times longer, and the measured times divided
    by it (reported in the instance's time), as the runtime's ``--time-scale``: it makes the
    host's own overheads (a few ms per hop on a loaded host) smaller against the emulated
    times."""

    new_tokens: int
    sequences: int
    prompt_tokens: int
    emulate: bool = False
    processes: bool = True
    check: bool = True
    seed: int = 0
    prefill: Instance | None = None
    fail: tuple[int, int, bool] | None = None
    master: tuple[str, int] | None = None
    heartbeat_timeout_s: float = 10.0
    time_scale: float = 1.0


def generation_report(inst: Instance, plan: Plan, options: GenerationOptions) -> dict[str, Any]:
    """Run pipelined generation of the instance's model (its ``meta.config``) on ``plan`` and
    compare with the prediction: tokens against ``generate()`` (``check``), decode tokens/s,
    time to first token, and each stage's parameters + KV cache against the instance's
    accounting for the tokens held (``P + N - 1`` per sequence; fp32 weights, what runs here).
    Raises :class:`GenerationError` when a worker is lost."""
    import random

    config = _checked(inst, plan, options)
    rng = random.Random(options.seed)
    vocab = int(config["vocab_size"])
    prompts = [[rng.randrange(vocab) for _ in range(options.prompt_tokens)]
               for _ in range(options.sequences)]
    result = _generate_as_asked(inst, plan, config, prompts, options)
    x = options.time_scale
    report: dict[str, Any] = {
        "instance": inst.name, "sequences": options.sequences,
        "prompt_tokens": options.prompt_tokens, "new_tokens": options.new_tokens,
        "emulate": "pad" if options.emulate else "none", "time_scale": x,
        "where": "workers" if options.processes else "in process",
        "tokens_per_s": result.tokens_per_s * x,
        "time_to_first_token_s": max(result.first_tokens_s) / x,
        "first_sequence_first_token_s": min(result.first_tokens_s) / x,
        "stages": _memory_rows(inst, plan, options, result.memory),
        "tokens": [list(t) for t in result.tokens], **_predictions(inst, plan, options)}
    if options.check:
        report["tokens_equal_generate"] = report["tokens"] == reference_tokens(
            config, prompts, options.new_tokens, options.seed)
    return report


def _generate_as_asked(inst: Instance, plan: Plan, config: Mapping[str, Any],
                       prompts: Sequence[Sequence[int]], options: GenerationOptions
                       ) -> GenerationResult:
    """:func:`generate_on_workers` or, in this process, :func:`generate_pipelined`, padded to
    the instance's (and the prefill instance's) times stretched by the time scale when
    emulating."""
    x = options.time_scale
    decode = emulated_times(inst, plan).scaled(x) if options.emulate else None
    prefill = (emulated_times(options.prefill, plan).scaled(x)
               if options.emulate and options.prefill is not None else None)
    if options.processes:
        return generate_on_workers(
            inst, plan, config, prompts, options.new_tokens, options.seed, prefill=prefill,
            decode=decode, fail=options.fail, master=options.master,
            heartbeat_timeout_s=options.heartbeat_timeout_s)
    from edgepart.profiling.numerics import torch_compute

    with torch_compute(None):  # the stages set threads and flushing: this process's are restored
        return generate_pipelined(
            InProcess(), list(range(1, len(plan.stages) + 1)),
            stage_specs(plan, config, options.seed, f"local-{time.time_ns()}",
                        prefill=prefill, decode=decode),
            prompts, options.new_tokens, [s.device for s in plan.stages],
            prefill.transfer_s[0] if prefill else 0.0)


def _predictions(inst: Instance, plan: Plan, options: GenerationOptions) -> dict[str, float]:
    """What the instances predict for an emulated run: decode tokens/s, and with a prefill
    instance the first sequence's and the last one's time to first token (none without
    emulation: the host's own speed is not the instance's)."""
    if not options.emulate:
        return {}
    out = {"predicted_tokens_per_s": predicted_tokens_per_s(inst, plan, options.sequences)}
    if options.prefill is not None:
        first_s, last_s = predicted_first_tokens_s(options.prefill, plan, options.sequences)
        out["predicted_first_sequence_first_token_s"] = first_s
        out["predicted_time_to_first_token_s"] = last_s
    return out


def _checked(inst: Instance, plan: Plan, options: GenerationOptions) -> Mapping[str, Any]:
    """The instance's model config, once the options are known to fit it."""
    from edgepart.cost import validate_plan
    from edgepart.errors import InputError

    config = inst.meta.get("config")
    if not isinstance(config, Mapping) or inst.workload is None:
        raise InputError(f"{inst.name}: not an LLM instance (make it with edgepart profile hf:)")
    if options.new_tokens < 2 or options.sequences < 1 or options.prompt_tokens < 1:
        raise InputError(f"--generate must be >= 2, --sequences and --prompt-tokens >= 1, got "
                         f"{options.new_tokens}, {options.sequences} and "
                         f"{options.prompt_tokens}")
    if not options.time_scale > 0 or (options.time_scale != 1 and not options.emulate):
        raise InputError(f"--time-scale: expected a number > 0, with --emulate pad, got "
                         f"{options.time_scale:g}")
    if options.fail is not None and not options.processes:
        raise InputError("--fail-stage: needs worker processes (not --in-process)")
    if options.fail is not None and not 0 <= options.fail[0] < len(plan.stages):
        raise InputError(f"--fail-stage: expected 0..{len(plan.stages) - 1}, got "
                         f"{options.fail[0]}")
    pre = options.prefill
    if pre is not None:
        if pre.workload is None or pre.workload.phase != "prefill" or \
                pre.meta.get("config") != config:
            raise InputError(f"--prefill-instance: {pre.name}: not a prefill instance of the "
                             f"same model (edgepart profile ... --phase prefill)")
        if pre.workload.prompt_tokens != options.prompt_tokens:
            raise InputError(f"--prompt-tokens: the prefill instance predicts "
                             f"{pre.workload.prompt_tokens}-token prompts, got "
                             f"{options.prompt_tokens}")
        problems = validate_plan(pre, plan)
        if problems:
            raise InputError(f"--prefill-instance: {problems[0]}")
    return config


def _memory_rows(inst: Instance, plan: Plan, options: GenerationOptions,
                 memory: Sequence[StageMemory]) -> list[dict[str, Any]]:
    """Each stage's measured parameters and KV cache next to the instance's accounting: it
    counts ``C x B`` tokens of cache at its dtype; the run holds ``S (P + N - 1)`` at fp32."""
    from edgepart.llm.costs import activation_bytes

    w = inst.workload
    assert w is not None  # checked by _checked
    held = options.sequences * (options.prompt_tokens + options.new_tokens - 1)
    kv_scale = held / (w.context_tokens * w.batch) * 4.0 / activation_bytes(w.dtype)
    rows = []
    for stage, mem in zip(plan.stages, memory, strict=True):
        layers = [inst.model.layers[inst.model.index[u]] for u in stage.layers]
        rows.append({
            "device": stage.device, "param_bytes": mem.param_bytes,
            "predicted_param_bytes": 4 * sum(x.meta.get("parameters", 0) for x in layers),
            "kv_cache_bytes": mem.kv_cache_bytes,
            "predicted_kv_cache_bytes": kv_scale * sum(x.meta.get("kv_cache_bytes", 0)
                                                       for x in layers)})
    return rows
