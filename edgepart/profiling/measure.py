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
* **looped time** (:func:`time_nodes_looped`, what ``--measure-on`` records): each node, fed its
  real inputs, runs back to back for a window of at least ``window_s``; its time is the window
  divided by the runs, the median over ``windows`` windows. Under a CPU quota the window spans
  many scheduler periods, so the throttled part of each period falls on every node in proportion
  to its CPU time (a single pass would charge a whole throttle to whichever node it hits).
  :func:`measure_units` then scales the units' looped times to add up to a plain forward pass
  timed in the same place (:func:`forward_rate`), since looped nodes run with a hot cache.
  Every window is kept (:class:`UnitTimes`): how far one window lies from the others is the
  measurement's own noise.
* **shapes and features** (:func:`unit_features`, the learned estimator's input): op kind, first
  input and output shape as (channels, height, width), the kernel, stride and groups of the
  unit's first convolution or pool, FLOPs, parameter bytes, bytes moved, and how the unit's
  code is called: ``module_calls`` (``call_module`` fx nodes, each paying
  ``nn.Module.__call__``: a 64x14x14 relu took 6.5 us as a module and 3.0 us as a function on
  the reference host) and ``function_calls`` (``call_function`` and ``call_method`` nodes,
  tuple getitems included); read from the torch modules, the fx graph and the values of the
  counting pass, not from the instance.

Measured profiles per device class (``edgepart profile --measure-on``, :class:`MeasureOn`): this
host (``this-host``), this host under a CPU quota and memory limit (``cgroup:CPUS[,MEM]``, the
cgroup of :func:`edgepart.runtime.emulate.limited`, as ``edgepart run --emulate cgroup`` limits
a worker), or a uniformly slower CPU of share ``CPUS`` of this one (``stretch:CPUS``, as
``edgepart run --emulate stretch`` emulates it): the looped timing then reads the thread's CPU
time (``time.thread_time``) instead of the wall clock, and divides it by ``CPUS``, so time the
thread waited for a core on a busy host is not counted. :func:`merge_profiles` joins instances
of one model profiled in several runs or on several hosts.
"""

from __future__ import annotations

import gc
import json
import math
import os
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import fx
from torch.utils.flop_counter import FlopCounterMode

from edgepart.errors import InputError
from edgepart.profiling.catalog import DeviceClass
from edgepart.profiling.clusters import Cluster
from edgepart.profiling.estimator import DeviceFeatures, Estimator, trace_json
from edgepart.profiling.granularity import coarsen
from edgepart.profiling.numerics import torch_compute
from edgepart.profiling.trace import TracedModel, Unit, example_input, trace_model

if TYPE_CHECKING:
    from edgepart.profiling.profile import ProfileOptions

__all__ = [
    "SOURCE_RANK",
    "MeasureOn",
    "NodeCost",
    "Timing",
    "UnitTimes",
    "class_features",
    "count_costs",
    "measure_classes",
    "measure_units",
    "merge_profiles",
    "parse_measure_on",
    "profile_classes",
    "summarize",
    "time_forward",
    "time_nodes",
    "time_nodes_looped",
    "trace_path",
    "trace_record",
    "unit_features",
]

SOURCE_RANK = {"measured": 3, "estimated": 2, "scaled": 1, "roofline": 0}
"""How each layer time was obtained (layer ``meta.time_source``), best first when merging."""


@dataclass(frozen=True, slots=True)
class NodeCost:
    """Static cost of one fx node."""

    flops: int
    params: tuple[tuple[str, int], ...]
    traffic_bytes: int
    input_shape: tuple[int, ...] = ()
    output_shape: tuple[int, ...] = ()


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
            inputs = [self.env[src] for src in n.all_input_nodes if src in self.env]
            costs[n.name] = NodeCost(int(counter.get_total_flops()), params,
                                     _traffic(traced, n, params), _first_shape(inputs),
                                     _first_shape([value]))
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


def _first_shape(values: Sequence[Any]) -> tuple[int, ...]:
    """Shape of the first tensor among ``values`` (or inside a tuple of them); () if none."""
    for value in values:
        if isinstance(value, torch.Tensor):
            return tuple(value.shape)
        if isinstance(value, (tuple, list)):
            inner = _first_shape(value)
            if inner:
                return inner
    return ()


def _chw(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(channels, height, width) of a batch-first shape: NCHW as it is, (N, T, C) as C x T x 1,
    (N, C) as C x 1 x 1."""
    dims = shape[1:] if len(shape) > 1 else shape
    if len(dims) >= 3:
        return dims[0], dims[1], math.prod(dims[2:])
    if len(dims) == 2:
        return dims[1], dims[0], 1
    return (dims[0] if dims else 0), 1, 1


def unit_features(traced: TracedModel, unit: Unit, costs: Mapping[str, NodeCost]
                  ) -> dict[str, float | str]:
    """What the learned estimator knows of one unit (see the module docstring)."""
    first, last = costs[unit.nodes[0]], costs[unit.outputs[-1]]
    in_c, in_h, in_w = _chw(first.input_shape)
    out_c, out_h, out_w = _chw(last.output_shape)
    nodes = _unit_nodes(traced, unit)
    kernel, stride, groups = _window(traced.graph_module, nodes)
    params = {name: nbytes for n in unit.nodes for name, nbytes in costs[n].params}
    return {"op": unit.op, "flops": sum(costs[n].flops for n in unit.nodes),
            "traffic_bytes": sum(costs[n].traffic_bytes for n in unit.nodes),
            "param_bytes": sum(params.values()), "nodes": len(unit.nodes),
            "in_c": in_c, "in_h": in_h, "in_w": in_w, "out_c": out_c, "out_h": out_h,
            "out_w": out_w, "kernel": kernel, "stride": stride, "groups": groups,
            "module_calls": sum(n.op == "call_module" for n in nodes),
            "function_calls": sum(n.op in ("call_function", "call_method") for n in nodes)}


def _unit_nodes(traced: TracedModel, unit: Unit) -> list[fx.Node]:
    """The fx nodes of ``unit``, in graph order."""
    names = set(unit.nodes)
    return [n for n in traced.graph_module.graph.nodes if n.name in names]


def _window(gm: fx.GraphModule, nodes: Sequence[fx.Node]) -> tuple[int, int, int]:
    """Kernel size, stride and groups of the first convolution or pool among ``nodes`` ((0, 0,
    0): none; a non-square kernel counts by its area's square root)."""
    for node in nodes:
        if node.op != "call_module":
            continue
        module = gm.get_submodule(str(node.target))
        kernel = getattr(module, "kernel_size", None)
        if kernel is None:
            continue
        stride = getattr(module, "stride", kernel)
        return (round(math.sqrt(math.prod(_pair(kernel)))), round(math.sqrt(math.prod(
            _pair(stride)))), int(getattr(module, "groups", 1)))
    return 0, 0, 0


def _pair(value: Any) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (int(value), int(value))


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


def time_nodes_looped(traced: TracedModel, *, window_s: float, windows: int,
                      clock: Callable[[], float] = time.perf_counter
                      ) -> dict[str, tuple[float, ...]]:
    """Per fx node, its time per run in each of ``windows`` windows of back-to-back runs (see
    the module docstring), read on ``clock`` (the wall clock, or ``time.thread_time`` for CPU
    time); placeholders, get_attrs and the output take 0 in every window."""
    out: dict[str, tuple[float, ...]] = {}

    class _Looper(fx.Interpreter):
        def run_node(self, n: fx.Node) -> Any:
            value = super().run_node(n)
            if n.op in ("placeholder", "output", "get_attr"):
                out[n.name] = (0.0,) * windows
                return value
            per_run = []
            for _ in range(windows):
                runs, start = 0, clock()
                while (elapsed := clock() - start) < window_s or runs == 0:
                    super().run_node(n)
                    runs += 1
                per_run.append(elapsed / runs)
            out[n.name] = tuple(per_run)
            return value

    with _quiet():
        _Looper(traced.graph_module).run(example_input(traced.input_shape))
    return out


@dataclass(frozen=True, slots=True)
class MeasureOn:
    """Where one device class is measured: this host (``cpus`` None), under a CPU quota of
    ``cpus`` CPUs and a ``memory_bytes`` limit (None: none), or (``stretch``) as a uniformly
    slower CPU of share ``cpus``: thread CPU time / ``cpus``. ``device_class`` None: the
    cluster's only class."""

    device_class: str | None
    cpus: float | None = None
    memory_bytes: float | None = None
    stretch: bool = False

    @property
    def label(self) -> str:
        if self.cpus is None:
            return "this-host"
        if self.stretch:
            return f"stretch:{self.cpus:g}"
        memory = "" if self.memory_bytes is None else f",{self.memory_bytes:g}"
        return f"cgroup:{self.cpus:g}{memory}"

    @property
    def clock(self) -> Callable[[], float]:
        """What the looped timing reads: the thread's CPU time (stretch), else the wall clock."""
        return time.thread_time if self.stretch else time.perf_counter

    @property
    def slowdown(self) -> float:
        """What the clock's seconds are multiplied by: ``1 / cpus`` (stretch), else 1."""
        return 1 / self.cpus if self.stretch and self.cpus else 1.0

    @contextmanager
    def applied(self) -> Iterator[None]:
        """Run the body where this class is measured: in a cgroup made here (with no quota for
        this host: the cgroup's top CPU weight still puts the measurement ahead of other
        programs on a shared host); stretch needs none (CPU time is what it reads)."""
        from edgepart.runtime.emulate import limited

        if self.stretch:
            yield
            return
        with limited(self.cpus, self.memory_bytes):
            yield

    def window_s(self) -> float:
        """Looped timing window: at least 10 ms and 8 scheduler periods of the quota."""
        if self.cpus is None or self.stretch:
            return 0.01
        from edgepart.runtime.emulate import cfs_period_us

        return max(0.01, 8 * cfs_period_us(self.cpus) * 1e-6)


def parse_measure_on(text: str) -> MeasureOn:
    """``[CLASS=]this-host``, ``[CLASS=]cgroup:CPUS[,MEM]`` (MEM in bytes, e.g. 512e6) or
    ``[CLASS=]stretch:CPUS`` (0 < CPUS <= 1)."""
    where = f"--measure-on {text!r}"
    device_class, _, spec = text.rpartition("=")
    if spec == "this-host":
        return MeasureOn(device_class or None)
    kind, _, numbers = spec.partition(":")
    parts = numbers.split(",")
    if (kind, len(parts)) not in (("cgroup", 1), ("cgroup", 2), ("stretch", 1)):
        raise InputError(f"{where}: expected [CLASS=]this-host, [CLASS=]cgroup:CPUS[,MEM] or "
                         "[CLASS=]stretch:CPUS")
    try:
        values = [float(x) for x in parts]
    except ValueError:
        raise InputError(f"{where}: CPUS and MEM must be numbers") from None
    if not all(math.isfinite(v) and v > 0 for v in values) or values[0] * 1000 < 1:
        raise InputError(f"{where}: CPUS must be >= 0.001 and MEM > 0")
    if kind == "stretch":
        if values[0] > 1:
            raise InputError(f"{where}: a stretched CPU is a share of one of this host's: "
                             f"CPUS must be <= 1, got {values[0]:g}")
        return MeasureOn(device_class or None, values[0], stretch=True)
    return MeasureOn(device_class or None, values[0], values[1] if len(values) > 1 else None)


def profile_classes(model: Any, cluster: Cluster, options: ProfileOptions,
                    measure_on: Sequence[MeasureOn] = (), estimator: Estimator | None = None,
                    trace_dir: str | Path | None = None, windows: int = 3) -> dict[str, Any]:
    """:func:`~edgepart.profiling.profile.profile_instance`, then the times of the classes in
    ``measure_on`` measured (looped timing, where each spec says), those of every other class
    estimated by ``estimator`` if one is given (one in reference mode predicts from this host's
    looped times, measured here first); each layer's ``meta.time_source`` says which
    (``measured``, ``estimated``, else ``scaled`` or ``roofline`` from ``options.time_model``).
    With ``trace_dir``, one trace file per measured class is written there
    (:mod:`edgepart.profiling.estimator`)."""
    from edgepart.instance import load_instance
    from edgepart.profiling.profile import profile_instance  # profile.py imports this module

    classes = {c.name: c for c in cluster.classes}
    names = [_measured_class(spec, classes) for spec in measure_on]  # bad input before the work
    base = options if estimator is None else replace(options, time_model="roofline")
    instance = profile_instance(model, cluster, base)
    sources = dict.fromkeys(classes, "scaled" if base.time_model == "measured" else "roofline")
    times: dict[str, list[float]] = {}
    if measure_on or estimator is not None:
        traced = coarsen(trace_model(model, options.input_shape,
                                     model_kwargs=options.model_kwargs), options.granularity)
        costs = count_costs(traced)
        features = [unit_features(traced, unit, costs) for unit in traced.units]
        measured_all = measure_classes(traced, measure_on, options.threads, windows)
        for name, spec, measured in zip(names, measure_on, measured_all, strict=True):
            times[name] = list(measured.time_s)
            sources[name] = "measured"
            if trace_dir is not None:
                _write_trace(Path(trace_dir), trace_record(
                    traced, classes[name], spec, features, measured))
        if estimator is not None:
            reference = None if estimator.reference is None else list(_this_host(
                traced, measure_on, measured_all, options.threads, windows).time_s)
            for name in sorted(set(classes) - set(times)):
                times[name] = estimator.predict(features, class_features(classes[name]),
                                                reference)
                sources[name] = "estimated"
    for i, layer in enumerate(instance["model"]["layers"]):
        layer["time_s"].update({c: float(f"{t[i]:.6g}") for c, t in times.items()})
        layer["meta"]["time_source"] = dict(sources)
    instance["meta"]["measured_on"] = {n: s.label for n, s in zip(names, measure_on, strict=True)}
    load_instance(instance)  # still a valid instance
    return instance


def _this_host(traced: TracedModel, specs: Sequence[MeasureOn], measured: Sequence[UnitTimes],
               threads: int, windows: int) -> UnitTimes:
    """This host's times (a reference-mode estimator's input): the ``this-host`` class among
    those just measured, else measured now."""
    return next((m for spec, m in zip(specs, measured, strict=True)
                 if spec.label == "this-host"), None) or measure_units(
        traced, MeasureOn(None), threads, windows)


def measure_classes(traced: TracedModel, specs: Sequence[MeasureOn], threads: int = 1,
                    windows: int = 3) -> list[UnitTimes]:
    """:func:`measure_units` for each of ``specs``, except that every ``stretch`` class after
    the first reuses the first one's measurement, scaled by the ratio of shares: a uniformly
    slower CPU of share ``c`` takes the same CPU time ``/ c`` by definition, and measuring each
    class apart only added noise (measured apart, a stage's CPU time in the run was 0.72-0.88 of
    its profiled sum under MobileNetV2's 0.4-CPU profile and 1.16-1.29 under its 1-CPU one,
    bench/fidelity.py: the two profiles disagreed on the same work)."""
    out: list[UnitTimes] = []
    first: tuple[MeasureOn, UnitTimes] | None = None
    for spec in specs:
        if spec.stretch and first is not None and spec.cpus and first[0].cpus:
            out.append(first[1].scaled(first[0].cpus / spec.cpus))
            continue
        out.append(measure_units(traced, spec, threads, windows))
        if spec.stretch and first is None:
            first = (spec, out[-1])
    return out


def class_features(c: DeviceClass, spec: MeasureOn | None = None) -> DeviceFeatures:
    """The estimator's view of class ``c`` (measured under ``spec``'s quota if given)."""
    cpus = spec.cpus if spec is not None and spec.cpus is not None else c.quota
    return DeviceFeatures(c.flops_per_s, c.memory_bandwidth_bytes_per_s, c.cores or 1.0, cpus)


def _measured_class(spec: MeasureOn, classes: Mapping[str, DeviceClass]) -> str:
    if spec.device_class is None:
        if len(classes) != 1:
            raise InputError(f"--measure-on {spec.label}: the cluster has {len(classes)} classes "
                             f"({', '.join(sorted(classes))}): write CLASS={spec.label}")
        return next(iter(classes))
    if spec.device_class not in classes:
        raise InputError(f"--measure-on {spec.device_class}={spec.label}: no class "
                         f"{spec.device_class!r} in the cluster (it has "
                         f"{', '.join(sorted(classes))})")
    return spec.device_class


@dataclass(frozen=True, slots=True)
class UnitTimes:
    """Seconds of each unit of a traced model, in unit order, on one device class.

    ``time_s[i]``: what the instance and the trace report, the sum of the unit's nodes' median
    windows, scaled (:func:`measure_units`). ``window_times_s[i][k]``: the sum of the unit's
    nodes' ``k``-th windows, scaled alike; for a one-node unit ``time_s[i]`` is the median of
    ``window_times_s[i]``. The windows of one unit are repeated measurements in one run, so
    their scatter is the within-run noise (not drift between runs or hosts).
    """

    time_s: tuple[float, ...]
    window_times_s: tuple[tuple[float, ...], ...]

    def scaled(self, factor: float) -> UnitTimes:
        return UnitTimes(tuple(t * factor for t in self.time_s),
                         tuple(tuple(t * factor for t in w) for w in self.window_times_s))


def measure_units(traced: TracedModel, spec: MeasureOn, threads: int = 1, windows: int = 3
                  ) -> UnitTimes:
    """Seconds of each unit of ``traced`` where ``spec`` says: looped timing, scaled so that the
    units add up to a plain forward pass measured there too (:func:`forward_rate`).

    Why scaled: a node looped alone runs with its inputs and weights hot in cache, and the sum of
    looped times fell 16% short of a whole forward (mobilenet_v2, 1x3x112x112, this host); the
    runtime runs whole stages, so the whole forward sets the total and the looped times only
    share it out among the units. Every window is scaled by the same factor.
    """
    with torch_compute(threads), spec.applied():
        node_windows = time_nodes_looped(traced, window_s=spec.window_s(), windows=windows,
                                         clock=spec.clock)
        forward_s = forward_rate(traced, 25 * spec.window_s(), spec.clock)
    looped = [sum(statistics.median(node_windows[n]) for n in unit.nodes)
              for unit in traced.units]
    per_window = [tuple(sum(window) for window in zip(*(node_windows[n] for n in unit.nodes),
                                                      strict=True))
                  for unit in traced.units]
    total = sum(looped)
    return UnitTimes(tuple(looped), tuple(per_window)).scaled(
        spec.slowdown * forward_s / total if total > 0 else 1.0)


def forward_rate(traced: TracedModel, min_s: float,
                 clock: Callable[[], float] = time.perf_counter) -> float:
    """Seconds per plain forward pass: back-to-back passes for at least ``min_s`` (one untimed
    first), ``clock`` time over passes, so that every throttled stretch of a quota is
    counted."""
    x = example_input(traced.input_shape)
    with _quiet():
        traced.graph_module(x)
        passes, start = 0, clock()
        while (elapsed := clock() - start) < min_s or passes < 3:
            traced.graph_module(x)
            passes += 1
    return elapsed / passes


def trace_record(traced: TracedModel, c: DeviceClass, spec: MeasureOn,
                 features: Sequence[Mapping[str, Any]], times: UnitTimes) -> dict[str, Any]:
    """The trace JSON of one measured class (:func:`edgepart.profiling.estimator.trace_json`):
    per layer its features, ``time_s`` and ``window_times_s``."""
    layers = [{"id": unit.id, **f, "time_s": t, "window_times_s": list(w)}
              for unit, f, t, w in zip(traced.units, features, times.time_s,
                                       times.window_times_s, strict=True)]
    return trace_json(traced.name, traced.input_shape, c.name, class_features(c, spec),
                      spec.label, layers)


def trace_path(folder: Path, trace: Mapping[str, Any]) -> Path:
    """Where a trace is written: ``FOLDER/MODEL.CLASS.trace.json``."""
    stem = str(trace["model"]).split(":")[-1].replace("/", "_")
    return folder / f"{stem}.{trace['device']['class']}.trace.json"


def _write_trace(folder: Path, trace: Mapping[str, Any]) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        trace_path(folder, trace).write_text(json.dumps(trace) + "\n")
    except OSError as err:
        raise InputError(f"--trace-dir: cannot write to {folder} ({err.strerror})") from None


def merge_profiles(instances: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One instance from profiles of the same model (same layer ids in the same order): per
    layer and class the best-obtained time (``measured`` > ``estimated`` > ``scaled`` >
    ``roofline``; the mean where several runs tie), devices joined by id (the first wins)."""
    if not instances:
        raise InputError("merge: give at least one instance")
    first = instances[0]
    ids = [layer["id"] for layer in first["model"]["layers"]]
    for k, inst in enumerate(instances[1:], 1):
        other = [layer["id"] for layer in inst["model"]["layers"]]
        if other != ids:
            raise InputError(f"merge: instance {k} ({inst.get('name')!r}) has other layers than "
                             f"instance 0 ({first.get('name')!r}): not the same model")
    merged = json.loads(json.dumps(first))
    for i, layer in enumerate(merged["model"]["layers"]):
        times, sources = _merged_times([inst["model"]["layers"][i] for inst in instances])
        layer["time_s"] = times
        layer.setdefault("meta", {})["time_source"] = sources
    seen = {d["id"] for d in merged["devices"]}
    for inst in instances[1:]:
        merged["devices"] += [d for d in inst["devices"] if d["id"] not in seen]
        seen |= {d["id"] for d in inst["devices"]}
    merged.setdefault("meta", {})["merged_from"] = [inst.get("name") for inst in instances]
    return merged


def _merged_times(layers: Sequence[Mapping[str, Any]]) -> tuple[dict[str, float],
                                                                  dict[str, str]]:
    best: dict[str, tuple[str, list[float]]] = {}
    for layer in layers:
        sources = layer.get("meta", {}).get("time_source", {})
        for cls, t in layer["time_s"].items():
            source = sources.get(cls, "scaled")
            held = best.get(cls)
            if held is None or SOURCE_RANK.get(source, -1) > SOURCE_RANK.get(held[0], -1):
                best[cls] = (source, [t])
            elif source == held[0] and source == "measured":
                held[1].append(t)
    return ({cls: float(f"{statistics.fmean(ts):.6g}") for cls, (_, ts) in best.items()},
            {cls: source for cls, (source, _) in best.items()})


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
