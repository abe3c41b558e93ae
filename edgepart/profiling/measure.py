"""Measure every fx node of a traced model: FLOPs, parameter bytes, memory traffic, time.

What is modelled, per fx node (units add up their nodes, see :mod:`edgepart.profiling.profile`):

* **FLOPs**: :class:`torch.utils.flop_counter.FlopCounterMode` around the node. It counts matrix
  products, convolutions and attention at 2 FLOPs per multiply-add; element-wise ops, norms and
  pools count 0. The counting pass runs with autograd enabled so that ``nn.MultiheadAttention``
  takes its composite path: its fused inference kernel is invisible to the counter.
* **parameters**: the parameters and buffers a ``call_module`` or ``get_attr`` node reads, by
  qualified name, so that a unit counts a tensor it reads twice only once.
* **traffic**: bytes the node reads and writes (tensor inputs, output, parameters); 0 for aliases
  (tuple getitems, get_attrs). Only the roofline time model uses it.
* **time**: a node-by-node :class:`torch.fx.Interpreter` under ``torch.inference_mode()``;
  ``warmup`` full passes, then ``repeats`` passes, each node timed with ``time.perf_counter`` (so
  a node's time includes a few microseconds of interpreter overhead). The garbage collector is
  paused while timing, and the thread yields the CPU before each node so that the node starts on
  a fresh scheduler slice: on a shared machine that halves the inflation of the medians (resnet50
  at load 8 on 2 cores: +25 % instead of +80 % over the idle machine). :func:`summarize` reduces
  the samples to the median, quartiles and extremes.
"""

from __future__ import annotations

import gc
import os
import statistics
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx
from torch.utils.flop_counter import FlopCounterMode

from edgepart.profiling.trace import TracedModel, example_input

__all__ = ["NodeCost", "Timing", "count_costs", "summarize", "time_forward", "time_nodes",
           "torch_threads"]


@dataclass(frozen=True, slots=True)
class NodeCost:
    """Static cost of one fx node."""

    flops: int
    params: tuple[tuple[str, int], ...]
    traffic_bytes: int


@dataclass(frozen=True, slots=True)
class Timing:
    """Median, quartiles, minimum and maximum of repeated measurements, in seconds."""

    median_s: float
    q1_s: float
    q3_s: float
    min_s: float
    max_s: float
    repeats: int

    @property
    def spread(self) -> float:
        """Interquartile range / median: the typical relative noise (0 when the median is 0).

        Robust to the odd stalled repeat, which ``max_s`` still shows.
        """
        return (self.q3_s - self.q1_s) / self.median_s if self.median_s > 0 else 0.0


def summarize(samples: Sequence[float]) -> Timing:
    """Reduce repeated measurements to a :class:`Timing` (quartiles: inclusive method)."""
    q1, median, q3 = (statistics.quantiles(samples, n=4, method="inclusive")
                      if len(samples) > 1 else [samples[0]] * 3)
    return Timing(median, q1, q3, min(samples), max(samples), len(samples))


def count_costs(traced: TracedModel) -> dict[str, NodeCost]:
    """FLOPs, parameters and traffic of every fx node (one pass on the example input)."""
    gm = traced.graph_module
    costs: dict[str, NodeCost] = {}

    class _Counter(fx.Interpreter):
        def run_node(self, n: fx.Node) -> Any:
            with FlopCounterMode(display=False) as counter:
                value = super().run_node(n)
            params = _params(gm, n)
            costs[n.name] = NodeCost(int(counter.get_total_flops()), params,
                                     _traffic(traced, n, params))
            return value

    with torch.enable_grad():
        _Counter(gm).run(example_input(traced.input_shape))
    return costs


def _params(gm: fx.GraphModule, n: fx.Node) -> tuple[tuple[str, int], ...]:
    if n.op == "get_attr":
        tensor = _get_attr(gm, str(n.target))
        return ((str(n.target), _nbytes(tensor)),) if isinstance(tensor, torch.Tensor) else ()
    if n.op != "call_module":
        return ()
    module = gm.get_submodule(str(n.target))
    tensors = [*module.named_parameters(prefix=str(n.target)),
               *module.named_buffers(prefix=str(n.target))]
    return tuple(sorted((name, _nbytes(t)) for name, t in tensors))


def _get_attr(gm: fx.GraphModule, target: str) -> Any:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _traffic(traced: TracedModel, n: fx.Node, params: tuple[tuple[str, int], ...]) -> int:
    if n.name in traced.aliases or n.op == "placeholder":
        return 0
    reads = sum(traced.value_bytes.get(src.name, 0) for src in n.all_input_nodes)
    return reads + traced.value_bytes.get(n.name, 0) + sum(b for _, b in params)


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def time_nodes(traced: TracedModel, *, repeats: int, warmup: int) -> dict[str, tuple[float, ...]]:
    """Per fx node, its wall time in each of ``repeats`` timed passes."""
    samples: dict[str, list[float]] = {n.name: [] for n in traced.graph_module.graph.nodes}

    class _Timer(fx.Interpreter):
        record = False

        def run_node(self, n: fx.Node) -> Any:
            os.sched_yield()  # start on a fresh scheduler slice: fewer preemptions mid-node
            start = time.perf_counter()
            value = super().run_node(n)
            if self.record:
                samples[n.name].append(time.perf_counter() - start)
            return value

    timer = _Timer(traced.graph_module)
    x = example_input(traced.input_shape)
    with _quiet():
        for i in range(warmup + repeats):
            timer.record = i >= warmup
            timer.run(x)
    return {name: tuple(s) for name, s in samples.items()}


def time_forward(traced: TracedModel, *, repeats: int, warmup: int) -> tuple[float, ...]:
    """Wall time of ``repeats`` whole forward passes of the graph module (no interpreter)."""
    x = example_input(traced.input_shape)
    out: list[float] = []
    with _quiet():
        for i in range(warmup + repeats):
            os.sched_yield()
            start = time.perf_counter()
            traced.graph_module(x)
            if i >= warmup:
                out.append(time.perf_counter() - start)
    return tuple(out)


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run torch's intra-op work on ``threads`` threads (None: leave it), restoring it after."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def _quiet() -> Iterator[None]:
    """Inference mode with the garbage collector paused."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        with torch.inference_mode():
            yield
    finally:
        if enabled:
            gc.enable()
