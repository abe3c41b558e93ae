"""Per-unit times of a small decoder LM measured on this host (``--time-model measured``).

The model is built on the CPU with random weights (fp32: what the host runs, so only
``--dtype fp32`` is measured) and one request of the workload is timed ``repeats`` times after
``warmup`` untimed ones: decode is one token after a KV cache of ``C - 1`` tokens (the cache is
cropped back after each step, so every step attends to ``C`` keys), prefill is the prompt of
``P`` tokens with an empty cache. Forward hooks time each unit (``embed``, ``layer.i``, and
``head`` = final norm to output projection). A unit's time on class ``c`` is the host time
(median, or minimum) times the class's speed factor ``host_flops_per_s / c.flops_per_s``, as for
every measured instance (:mod:`edgepart.profiling.catalog`).

Only models up to :data:`MAX_MEASURED_PARAMS` parameters are materialised; larger ones (and
other dtypes) get roofline times, so an 8B config never allocates its weights here.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from edgepart.instance import Workload
from edgepart.llm.configs import DecoderShape
from edgepart.llm.costs import distinct_params

__all__ = ["MAX_MEASURED_PARAMS", "can_measure", "measure_unit_times"]

MAX_MEASURED_PARAMS = 200_000_000
"""800 MB of fp32 weights: the largest model this host builds to time."""


def can_measure(shape: DecoderShape, workload: Workload) -> bool:
    """True when the model is small enough to build here and its weights are fp32."""
    return workload.dtype == "fp32" and distinct_params(shape) <= MAX_MEASURED_PARAMS


def measure_unit_times(shape: DecoderShape, workload: Workload, *, repeats: int = 10,
                       warmup: int = 3, threads: int = 1, statistic: str = "median"
                       ) -> dict[str, float]:
    """Host seconds of one request per unit (``statistic`` over ``repeats``)."""
    import torch

    from edgepart.llm.build import build_causal_lm
    from edgepart.profiling.measure import summarize
    from edgepart.profiling.numerics import torch_compute

    model = build_causal_lm(shape, "cpu")
    samples: dict[str, list[float]] = defaultdict(list)
    with torch.inference_mode(), torch_compute(threads):
        step = _request(model, workload)
        handles = _hooks(model, samples)
        for k in range(warmup + repeats):
            step()
            if k < warmup:
                samples.clear()
        for h in handles:
            h.remove()
    pick = (lambda t: t.median_s) if statistic == "median" else (lambda t: t.min_s)
    return {unit: pick(summarize(times)) for unit, times in samples.items()}


def _request(model: Any, w: Workload) -> Callable[[], None]:
    """A function that runs one request of ``w`` on ``model``."""
    import torch

    if w.phase == "prefill":
        prompt = torch.zeros((1, w.prompt_tokens), dtype=torch.long)
        return lambda: model(input_ids=prompt, use_cache=True, logits_to_keep=1)
    cache = model(input_ids=torch.zeros((1, w.context_tokens - 1), dtype=torch.long),
                  use_cache=True)["cache"] if w.context_tokens > 1 else None
    token = torch.zeros((1, 1), dtype=torch.long)

    def decode() -> None:
        model(input_ids=token, cache=cache, use_cache=True, logits_to_keep=1)
        if cache is not None:
            cache.crop(-1)  # back to C - 1 tokens: every step attends to C keys

    return decode


def _hooks(model: Any, samples: dict[str, list[float]]) -> list[Any]:
    """Forward hooks that append each unit's seconds per call to ``samples``."""
    started: dict[str, float] = {}
    units = {"embed": ("model.embed_tokens", "model.embed_tokens"),
             "head": ("model.norm", "lm_head")}
    units.update({f"layer.{i}": (f"model.layers.{i}",) * 2
                  for i in range(len(model.get_submodule("model.layers")))})
    handles = []
    for unit, (first, last) in units.items():
        def begin(*_: Any, unit: str = unit) -> None:
            started[unit] = time.perf_counter()

        def end(*_: Any, unit: str = unit) -> None:
            samples[unit].append(time.perf_counter() - started[unit])

        handles.append(model.get_submodule(first).register_forward_pre_hook(begin))
        handles.append(model.get_submodule(last).register_forward_hook(end))
    return handles
