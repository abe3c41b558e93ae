"""Learned per-layer time: FlexPie's cost estimator (CE) with LightGBM, and the roofline fallback.

The model. A layer's time on a device class is a function ``t = f(x_layer, x_device)`` of

* the layer: op kind and its family (categorical, :data:`OP_FAMILIES`), input and output
  (channels, height, width), kernel, stride, groups, FLOPs, parameter bytes, bytes moved and its
  module and function calls (:func:`edgepart.profiling.measure.unit_features`, read from the
  torch modules and the fx graph; a ``relu`` called as an ``nn.Module`` costs a few microseconds
  more than one called as a function, and nothing else in the features tells them apart), and
  derived
  from them the input and output element counts and the layer's roofline terms on the device,
  ``flops / peak`` and ``bytes / (bandwidth x cpus)`` (under a CPU quota a copy loop runs only the
  quota's share of the time, as the compute does);
* the device class: peak FLOP/s, memory bandwidth, cores and CPU quota (:class:`DeviceFeatures`).

``f`` is a log-linear baseline times a gradient-boosted tree ensemble fitted to measured traces,
as FlexPie's planner does (Happyrhzhang/FlexPie, ``python/cost_model``, see
/work/shared/ALGORITHMS.md: XGBoost with the ``reg:gamma`` objective on layer shapes, kernel and
stride)::

    log t = b(x) + sum of trees(x)
    b(x)  = g . (1, log(1 + flops), log(1 + bytes), log cpus)
          + h_F . (1, log(1 + flops), log(1 + bytes))

``b`` is fitted first, by least squares on ``log t``: ``g`` pooled over all layers, ``h_F`` per op
family ``F`` with a ridge penalty :data:`FAMILY_RIDGE` on ``h`` only, so a family of few layers
stays near the pooled law and a family never trained on gets it exactly (``h_F = 0``). Why a
baseline: trees are piecewise constant, so alone they predict a layer larger or smaller than any
trained on (resnet50's widest convolutions, a held-out model's) as the nearest trained one; the
baseline extrapolates as a power law in FLOPs and bytes, and the trees fit only the residual
factor, starting from ``b`` (LightGBM's ``init_score``). The trees use LightGBM with FlexPie's
gamma objective: a log link, so a device's speed enters as a factor and the fit minimises a
deviance that weighs relative, not absolute, errors (a 10 us layer counts as much as a 10 ms
one). ``max_delta_step`` caps each leaf's log-step: the gamma Newton step divides by a hessian
``t e^-f`` that is tiny for the fastest layers when times span five orders of magnitude, and
without the cap the fit diverged (every prediction ~1e-57 s). The booster is kept in LightGBM's
own text format (``Booster.model_to_string``) inside our JSON, never pickled; the baseline's
coefficients are JSON numbers.

**Reference mode** (``fit(..., reference_class=NAME)``, ``edgepart estimator fit --reference
NAME``). FlexPie's CE predicts from features alone; a profile, though, always has one measured
time of each layer, this host's, and the catalog's speed-factor model uses just that (``t_c =
t_ref x peak_ref / peak_c``). In reference mode the estimator starts from that model and learns
only what it misses::

    log t = log t_ref + log(peak_ref / peak_c) + sum of trees(x, t_ref, peak_ref / peak_c)

with ``t_ref`` the layer's measured time on the reference class (a trace of the same model on
class ``NAME``, joined by layer id; the features ``reference_s`` and ``speed_ratio``,
:data:`REFERENCE_FEATURES`). What the speed factor misses and the trees can learn: how a slower
device's time depends on the layer, e.g. under a CFS CPU quota a layer shorter than the quota's
period runs at full speed while a long one is throttled (measured: quota classes ran 6-42%
faster per model than ``t_ref / quota``). Predictions then need the reference times:
``edgepart profile --time-model EST.json`` times every layer on this host first (the host the
reference traces came from, or one as fast: the stored reference device's peak sets
``peak_ref``). Departure from FlexPie, named: its CE reads no measured time.

Without an estimator, :func:`roofline_time` is the fallback: ``max(flops / peak, bytes /
bandwidth)``, the time of a layer that runs at its device's peak compute or memory rate.

Trace files (``edgepart profile --measure-on ... --trace DIR``, :func:`trace_json`) hold one
measured run of one model on one class::

    {"format": "edgepart-trace", "version": 1, "model": "torchvision:resnet18",
     "input_shape": [1, 3, 112, 112], "measured_on": "cgroup:0.5",
     "device": {"class": "q0.5", "flops_per_s": 5e10, "memory_bandwidth_bytes_per_s": 1e10,
                "cores": 1, "cpus": 0.5},
     "layers": [{"id": "conv1", "op": "conv2d", "flops": 118013952, ..., "module_calls": 1,
                 "function_calls": 0, "time_s": 0.00123,
                 "window_times_s": [0.00121, 0.00123, 0.00125]}]}

``module_calls``, ``function_calls`` (:data:`OPTIONAL_LAYER_FEATURES`) and ``window_times_s``
(every timing window, :class:`edgepart.profiling.measure.UnitTimes`) are optional: traces
written before they existed load, and a missing count is unknown, NaN, to the trees (LightGBM
sends a missing value down the side of each split that fitted the training data best).

Estimator files store the feature list the trees were fitted on, and predictions build each
row by those names, so an estimator fitted before the call counts existed still predicts what
it did; a file naming a feature this version does not compute is refused.

lightgbm is imported only by :func:`fit` and :meth:`Estimator.predict`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edgepart.errors import InputError
from edgepart.files import read_json

__all__ = ["DERIVED_FEATURES", "DEVICE_FEATURES", "FAMILIES", "FAMILY_RIDGE", "LAYER_FEATURES",
           "MODEL_FEATURES", "OPTIONAL_LAYER_FEATURES", "OP_FAMILIES", "REFERENCE_FEATURES",
           "TRACE_FORMAT",
           "Baseline", "DeviceFeatures",
           "Estimator", "Reference", "Trace", "fit", "fit_baseline", "load_estimator", "load_trace",
           "op_family", "reference_times", "roofline_time", "trace_json"]

TRACE_FORMAT = "edgepart-trace"
ESTIMATOR_FORMAT = "edgepart-estimator"
ESTIMATOR_VERSION = 2
OPTIONAL_LAYER_FEATURES = ("module_calls", "function_calls")
"""Layer features that traces written before they existed lack (unknown: NaN)."""
LAYER_FEATURES = ("flops", "traffic_bytes", "param_bytes", "in_c", "in_h", "in_w", "out_c",
                  "out_h", "out_w", "kernel", "stride", "groups", "nodes",
                  *OPTIONAL_LAYER_FEATURES)
DERIVED_FEATURES = ("in_elements", "out_elements", "compute_s", "memory_s")
DEVICE_FEATURES = ("flops_per_s", "memory_bandwidth_bytes_per_s", "cores", "cpus")
MODEL_FEATURES = ("op", "family", *LAYER_FEATURES, *DERIVED_FEATURES, *DEVICE_FEATURES)
REFERENCE_FEATURES = ("reference_s", "speed_ratio")
"""Features of reference mode only: the layer's measured time on the reference class and
``peak_ref / peak_c`` (the speed factor)."""
KNOWN_FEATURES = (*MODEL_FEATURES, *REFERENCE_FEATURES)
OP_FAMILIES: Mapping[str, str] = {
    "conv2d": "conv", "linear": "linear", "batchnorm2d": "norm", "layernorm": "norm",
    "relu": "activation", "relu6": "activation", "silu": "activation", "gelu": "activation",
    "sigmoid": "activation", "hardswish": "activation", "hardsigmoid": "activation",
    "add": "binary", "mul": "binary", "maxpool2d": "pool", "avgpool2d": "pool",
    "adaptiveavgpool2d": "global_pool", "adaptive_avg_pool2d": "global_pool",
    "mean": "global_pool", "view": "view", "reshape": "view", "flatten": "view",
    "transpose": "view", "permute": "view", "chunk": "view", "contiguous": "copy", "cat": "copy",
    "stochastic_depth": "copy", "dropout": "copy"}
"""Op kind -> family of ops with one cost law: a view or ``chunk`` is a per-call overhead, an
activation or binary op streams its tensor once, a copy writes one; an op named here but never
trained on is predicted from its family's layers. Ops not listed form the family ``other``."""
FAMILIES = tuple(sorted({*OP_FAMILIES.values(), "other"}))
FAMILY_RIDGE = 1.0
"""Ridge penalty on a family's deviation from the pooled baseline (in units of squared log-time
per layer: a family of n layers moves away from the pooled law about n / (n + 1) of the way)."""
DEFAULT_PARAMS: Mapping[str, Any] = {
    "objective": "gamma", "max_delta_step": 1.0, "learning_rate": 0.05, "num_leaves": 31,
    "min_data_in_leaf": 5, "feature_fraction": 0.9, "bagging_fraction": 0.9, "bagging_freq": 1,
    "verbose": -1, "seed": 0, "deterministic": True, "num_threads": 1, "force_col_wise": True}
DEFAULT_ROUNDS = 600


@dataclass(frozen=True, slots=True)
class DeviceFeatures:
    """What the estimator knows of a device class. ``memory_bandwidth_bytes_per_s`` None:
    unknown (LightGBM takes it as missing)."""

    flops_per_s: float
    memory_bandwidth_bytes_per_s: float | None
    cores: float
    cpus: float

    def to_json(self, name: str) -> dict[str, Any]:
        return {"class": name, "flops_per_s": self.flops_per_s,
                "memory_bandwidth_bytes_per_s": self.memory_bandwidth_bytes_per_s,
                "cores": self.cores, "cpus": self.cpus}

    def vector(self) -> list[float]:
        bandwidth = self.memory_bandwidth_bytes_per_s
        return [self.flops_per_s, math.nan if bandwidth is None else bandwidth, self.cores,
                self.cpus]


@dataclass(frozen=True, slots=True)
class Trace:
    """One measured run: a model's layers (features and time) on one device class."""

    model: str
    device_class: str
    device: DeviceFeatures
    measured_on: str
    layers: tuple[Mapping[str, Any], ...]


def roofline_time(flops: float, traffic_bytes: float, flops_per_s: float,
                  memory_bandwidth_bytes_per_s: float | None) -> float:
    """``max(flops / peak, bytes / bandwidth)`` (the compute term alone if the bandwidth is
    unknown)."""
    compute = flops / flops_per_s
    if memory_bandwidth_bytes_per_s is None:
        return compute
    return max(compute, traffic_bytes / memory_bandwidth_bytes_per_s)


def trace_json(model: str, input_shape: Sequence[int], device_class: str,
               device: DeviceFeatures, measured_on: str,
               layers: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A trace file's JSON (see the module docstring); ``layers`` carry features and
    ``time_s``."""
    return {"format": TRACE_FORMAT, "version": 1, "model": model,
            "input_shape": list(input_shape), "measured_on": measured_on,
            "device": device.to_json(device_class), "layers": [dict(x) for x in layers]}


def load_trace(src: str | Path | Mapping[str, Any]) -> Trace:
    """Read and validate one trace file; errors name the field."""
    where = str(src) if not isinstance(src, Mapping) else "trace"
    data = _read_json(src, where) if not isinstance(src, Mapping) else src
    if data.get("format") != TRACE_FORMAT or data.get("version") != 1:
        raise InputError(f"{where}: format: expected {TRACE_FORMAT!r} version 1")
    dev = _object(data.get("device"), f"{where}: device")
    device = _device_features(dev, f"{where}: device")
    layers = data.get("layers")
    if not isinstance(layers, list) or not layers:
        raise InputError(f"{where}: layers: expected a non-empty list")
    for i, layer in enumerate(layers):
        _check_layer(_object(layer, f"{where}: layers[{i}]"), f"{where}: layers[{i}]")
    return Trace(str(data.get("model", "")), str(dev.get("class", "")), device,
                 str(data.get("measured_on", "")), tuple(layers))


def _check_layer(layer: Mapping[str, Any], where: str) -> None:
    """A trace layer: op, every required feature and ``time_s``; the optional features and
    ``window_times_s`` where present."""
    if not isinstance(layer.get("op"), str):
        raise InputError(f"{where}.op: expected a string")
    for name in (*LAYER_FEATURES, "time_s"):
        if name in layer or name not in OPTIONAL_LAYER_FEATURES:
            _number(layer.get(name), f"{where}.{name}", allow_zero=name != "time_s")
    windows = layer.get("window_times_s")
    if windows is not None and not (isinstance(windows, list) and windows):
        raise InputError(f"{where}.window_times_s: expected a non-empty list, got {windows!r}")
    for k, t in enumerate(windows or ()):
        _number(t, f"{where}.window_times_s[{k}]", allow_zero=True)


def op_family(op: str) -> str:
    """The family of ``op`` (:data:`OP_FAMILIES`; ``other`` if unlisted)."""
    return OP_FAMILIES.get(op, "other")


@dataclass(frozen=True, slots=True)
class Baseline:
    """The log-linear baseline ``b`` of the module docstring: ``pooled`` = ``g`` (4 numbers),
    ``families`` = ``h_F`` (3 numbers each)."""

    pooled: tuple[float, ...]
    families: Mapping[str, tuple[float, ...]]

    def log_time(self, layer: Mapping[str, Any], device: DeviceFeatures) -> float:
        """``b(x)``: the baseline's log-seconds of ``layer`` on ``device``."""
        shared = _shape_terms(layer)
        family = self.families.get(op_family(str(layer["op"])), (0.0, 0.0, 0.0))
        return (sum(g * x for g, x in zip(self.pooled, (*shared, math.log(device.cpus)),
                                          strict=True))
                + sum(h * x for h, x in zip(family, shared, strict=True)))

    def to_json(self) -> dict[str, Any]:
        return {"pooled": list(self.pooled),
                "families": {f: list(h) for f, h in sorted(self.families.items())}}


def fit_baseline(layers: Sequence[tuple[Mapping[str, Any], DeviceFeatures]]) -> Baseline:
    """Least squares of ``log t`` on the baseline's terms, ridge :data:`FAMILY_RIDGE` on the
    family terms only (the module docstring says why)."""
    import numpy as np

    families = sorted({op_family(str(layer["op"])) for layer, _ in layers})
    width = 4 + 3 * len(families)
    design = np.zeros((len(layers), width))
    for i, (layer, device) in enumerate(layers):
        shared = _shape_terms(layer)
        design[i, :4] = (*shared, math.log(device.cpus))
        k = 4 + 3 * families.index(op_family(str(layer["op"])))
        design[i, k:k + 3] = shared
    target = np.log([float(layer["time_s"]) for layer, _ in layers])
    penalty = np.diag([0.0] * 4 + [FAMILY_RIDGE] * (width - 4))
    # lstsq on the stacked system [X; sqrt(P)] w = [y; 0]: the ridge solution, and well defined
    # where the pooled columns are collinear (a single class: log cpus constant)
    stacked = np.vstack([design, np.sqrt(penalty)])
    coef = np.linalg.lstsq(stacked, np.concatenate([target, np.zeros(width)]), rcond=None)[0]
    return Baseline(tuple(float(c) for c in coef[:4]),
                    {f: tuple(float(c) for c in coef[4 + 3 * j:7 + 3 * j])
                     for j, f in enumerate(families)})


@dataclass(frozen=True, slots=True)
class Reference:
    """Reference mode's class: its name and device features (``peak_ref`` is its FLOP/s)."""

    device_class: str
    device: DeviceFeatures


@dataclass(frozen=True, slots=True)
class Estimator:
    """A fitted estimator: the baseline (or, in reference mode, the reference class), the
    LightGBM text model of the residual, its op vocabulary, the features its trees read (in
    column order) and what it was fitted on."""

    booster_text: str
    ops: tuple[str, ...]
    baseline: Baseline | None
    trained_on: Mapping[str, Any] = field(default_factory=dict)
    features: tuple[str, ...] = MODEL_FEATURES
    reference: Reference | None = None

    def predict(self, layers: Sequence[Mapping[str, Any]], device: DeviceFeatures,
                reference_s: Sequence[float] | None = None) -> list[float]:
        """Predicted seconds of each layer (features as in a trace) on ``device``; in reference
        mode ``reference_s`` are the layers' measured seconds on the reference class."""
        import lightgbm
        import numpy as np

        refs = self._reference_times(layers, reference_s)
        booster = lightgbm.Booster(model_str=self.booster_text)
        rows = np.array([_row(layer, device, self.ops, self.features, self.speed_ratio(device), t)
                         for layer, t in zip(layers, refs, strict=True)], dtype=float)
        residual = booster.predict(rows, raw_score=True)
        return [math.exp(self.start(layer, device, t) + float(r))
                for layer, t, r in zip(layers, refs, residual, strict=True)]

    def start(self, layer: Mapping[str, Any], device: DeviceFeatures,
              reference_s: float = math.nan) -> float:
        """Log-seconds the trees start from: the baseline ``b``, or in reference mode the
        speed-factor model ``log(t_ref x peak_ref / peak_c)``."""
        if self.baseline is not None:
            return self.baseline.log_time(layer, device)
        return math.log(reference_s * self.speed_ratio(device))

    def speed_ratio(self, device: DeviceFeatures) -> float:
        """``peak_ref / peak_c`` in reference mode, else NaN."""
        return (math.nan if self.reference is None
                else self.reference.device.flops_per_s / device.flops_per_s)

    def _reference_times(self, layers: Sequence[Mapping[str, Any]],
                         reference_s: Sequence[float] | None) -> list[float]:
        if self.reference is None:
            return [math.nan] * len(layers)
        if reference_s is None or len(reference_s) != len(layers):
            raise InputError(f"estimator: predicts from each layer's measured time on class "
                             f"{self.reference.device_class!r} (reference mode): give one per "
                             "layer")
        return [_number(t, "estimator: reference time") for t in reference_s]

    def to_json(self) -> dict[str, Any]:
        reference = None if self.reference is None else self.reference.device.to_json(
            self.reference.device_class)
        return {"format": ESTIMATOR_FORMAT, "version": ESTIMATOR_VERSION,
                "features": list(self.features), "ops": list(self.ops),
                "trained_on": dict(self.trained_on),
                "baseline": None if self.baseline is None else self.baseline.to_json(),
                "reference": reference, "lightgbm": self.booster_text}


def load_estimator(src: str | Path | Mapping[str, Any]) -> Estimator:
    """Read an estimator JSON written by :meth:`Estimator.to_json`."""
    where = str(src) if not isinstance(src, Mapping) else "estimator"
    data = _read_json(src, where) if not isinstance(src, Mapping) else src
    if data.get("format") != ESTIMATOR_FORMAT or data.get("version") != ESTIMATOR_VERSION:
        raise InputError(f"{where}: format: expected {ESTIMATOR_FORMAT!r} version "
                         f"{ESTIMATOR_VERSION} (refit older estimators)")
    features = _check_features(data.get("features"), f"{where}: features")
    ops, text = data.get("ops"), data.get("lightgbm")
    if not isinstance(ops, list) or not all(isinstance(op, str) for op in ops):
        raise InputError(f"{where}: ops: expected a list of strings")
    if not isinstance(text, str) or not text.startswith("tree"):
        raise InputError(f"{where}: lightgbm: expected LightGBM's text model")
    if f"\nmax_feature_idx={len(features) - 1}\n" not in text:
        raise InputError(f"{where}: lightgbm: its trees do not read the {len(features)} "
                         "features the file lists")
    reference = None if data.get("reference") is None else _load_reference(
        data["reference"], f"{where}: reference")
    baseline = None if reference is not None else _load_baseline(data.get("baseline"),
                                                                 f"{where}: baseline")
    return Estimator(text, tuple(ops), baseline, dict(data.get("trained_on") or {}), features,
                     reference)


def _load_reference(value: Any, where: str) -> Reference:
    dev = _object(value, where)
    return Reference(str(dev.get("class", "")), _device_features(dev, where))


def _device_features(dev: Mapping[str, Any], where: str) -> DeviceFeatures:
    """A device object as :meth:`DeviceFeatures.to_json` writes it (in a trace or an
    estimator); errors name ``where.FIELD``."""
    bandwidth = dev.get("memory_bandwidth_bytes_per_s")
    return DeviceFeatures(
        _number(dev.get("flops_per_s"), f"{where}.flops_per_s"),
        None if bandwidth is None else _number(bandwidth, f"{where}.memory_bandwidth_bytes_per_s"),
        _number(dev.get("cores"), f"{where}.cores"), _number(dev.get("cpus"), f"{where}.cpus"))


def _check_features(value: Any, where: str) -> tuple[str, ...]:
    """The trees' feature names: ``op`` and ``family`` (the categorical columns) first, then
    distinct names of :data:`MODEL_FEATURES` and :data:`REFERENCE_FEATURES`."""
    ok = (isinstance(value, list) and value[:2] == ["op", "family"]
          and len(set(map(str, value))) == len(value))
    if not ok:
        raise InputError(f"{where}: expected distinct names starting with 'op', 'family'")
    unknown = [name for name in value if name not in KNOWN_FEATURES]
    if unknown:
        raise InputError(f"{where}: {', '.join(map(str, unknown))} not computed by this "
                         "edgepart (refit the estimator)")
    return tuple(value)


def fit(traces: Sequence[Trace], *, rounds: int = DEFAULT_ROUNDS,
        params: Mapping[str, Any] | None = None,
        features: Sequence[str] | None = None, reference_class: str | None = None
        ) -> Estimator:
    """Fit the estimator to every layer of ``traces``: the baseline, then the trees from it (see
    the module docstring). ``features``: the trees' features (``op``, ``family``, then any of
    :data:`MODEL_FEATURES`, and of :data:`REFERENCE_FEATURES` in reference mode; fewer for an
    ablation; default all). ``reference_class``: reference mode, fitted on every trace of another
    class whose model also has a trace on that class (joined by layer id)."""
    import lightgbm
    import numpy as np

    if not traces:
        raise InputError("fit: give at least one trace")
    default = (*MODEL_FEATURES, *REFERENCE_FEATURES) if reference_class else MODEL_FEATURES
    columns = _check_features(list(features or default), "fit: features")
    ops = tuple(sorted({str(layer["op"]) for t in traces for layer in t.layers}))
    reference, samples = _samples(traces, reference_class)
    baseline = None if reference else fit_baseline([(layer, dev) for layer, dev, _ in samples])
    est = Estimator("", ops, baseline, {}, columns, reference)
    rows = [_row(layer, dev, ops, columns, est.speed_ratio(dev), t) for layer, dev, t in samples]
    data = lightgbm.Dataset(np.array(rows, dtype=float),
                            np.array([float(layer["time_s"]) for layer, _, _ in samples]),
                            init_score=np.array([est.start(*s) for s in samples]),
                            feature_name=list(columns), categorical_feature=[0, 1],
                            free_raw_data=False)
    booster = lightgbm.train({**DEFAULT_PARAMS, **(params or {})}, data, num_boost_round=rounds)
    trained_on = {"models": sorted({t.model for t in traces}),
                  "classes": sorted({t.device_class for t in traces}),
                  "layers": len(rows), "rounds": rounds, "objective": "gamma",
                  "lightgbm": lightgbm.__version__}
    return replace(est, booster_text=booster.model_to_string(), trained_on=trained_on)


def reference_times(reference: Reference | None, trace: Trace, traces: Iterable[Trace]
                    ) -> list[float] | None:
    """``trace``'s layers' times on the ``reference`` class, from the trace of the same model
    on that class among ``traces`` (joined by layer id); ``None`` outside reference mode."""
    if reference is None:
        return None
    name = reference.device_class
    ref = next((t for t in traces if t.device_class == name and t.model == trace.model), None)
    if ref is None:
        raise InputError(f"estimator: reference mode: give the trace of {trace.model!r} on "
                         f"class {name!r} too")
    times = {str(layer.get("id")): float(layer["time_s"]) for layer in ref.layers}
    missing = [str(layer.get("id")) for layer in trace.layers if str(layer.get("id")) not in times]
    if missing:
        raise InputError(f"estimator: reference mode: layer {missing[0]!r} of {trace.model!r} "
                         f"has no time on class {name!r}")
    return [times[str(layer.get("id"))] for layer in trace.layers]


Sample = tuple[Mapping[str, Any], DeviceFeatures, float]
"""A layer, its class's features and its reference time (NaN outside reference mode)."""


def _samples(traces: Sequence[Trace], reference_class: str | None
             ) -> tuple[Reference | None, list[Sample]]:
    """The training samples; in reference mode the reference class and only the layers of
    other classes whose model has a reference trace, each with its time there."""
    if reference_class is None:
        return None, [(layer, t.device, math.nan) for t in traces for layer in t.layers]
    refs = [t for t in traces if t.device_class == reference_class]
    devices = {t.device for t in refs}
    if len(devices) != 1:
        raise InputError(f"fit: reference: {'no' if not devices else 'disagreeing'} device "
                         f"features in the traces of class {reference_class!r}")
    reference = Reference(reference_class, devices.pop())
    samples: list[Sample] = []
    for t in traces:
        if t.device_class != reference_class and any(r.model == t.model for r in refs):
            times = reference_times(reference, t, refs) or []
            samples += [(layer, t.device, ref) for layer, ref in zip(t.layers, times, strict=True)]
    if not samples:
        raise InputError(f"fit: reference: no trace of another class shares a model with the "
                         f"{reference_class!r} traces")
    return reference, samples


def _row(layer: Mapping[str, Any], device: DeviceFeatures, ops: Sequence[str],
         features: Sequence[str], speed_ratio: float = math.nan,
         reference_s: float = math.nan) -> list[float]:
    """Feature vector, ``features`` in order (names of :data:`KNOWN_FEATURES`): op code (-1,
    LightGBM's missing category, for an op never trained on), family code, the layer's numbers
    (NaN: an optional one the trace lacks), the derived ones, the device's, and in reference
    mode the reference time and the speed factor."""
    op = str(layer["op"])
    bandwidth = device.memory_bandwidth_bytes_per_s
    values = {
        "op": float(ops.index(op)) if op in ops else -1.0,
        "family": float(FAMILIES.index(op_family(op))),
        **{name: float(layer.get(name, math.nan)) for name in LAYER_FEATURES},
        "in_elements": float(layer["in_c"]) * layer["in_h"] * layer["in_w"],
        "out_elements": float(layer["out_c"]) * layer["out_h"] * layer["out_w"],
        "compute_s": layer["flops"] / device.flops_per_s,
        "memory_s": math.nan if bandwidth is None
        else layer["traffic_bytes"] / (bandwidth * device.cpus),
        **dict(zip(DEVICE_FEATURES, device.vector(), strict=True)),
        "reference_s": reference_s, "speed_ratio": speed_ratio}
    return [values[name] for name in features]


def _shape_terms(layer: Mapping[str, Any]) -> tuple[float, float, float]:
    """``(1, log(1 + flops), log(1 + bytes))``: the baseline's layer terms (``1 +``: a view has
    no FLOPs)."""
    return (1.0, math.log1p(float(layer["flops"])), math.log1p(float(layer["traffic_bytes"])))


def _load_baseline(value: Any, where: str) -> Baseline:
    data = _object(value, where)
    pooled = _numbers(data.get("pooled"), 4, f"{where}.pooled")
    families = _object(data.get("families"), f"{where}.families")
    return Baseline(pooled, {str(f): _numbers(h, 3, f"{where}.families.{f}")
                             for f, h in families.items()})


def _numbers(value: Any, count: int, where: str) -> tuple[float, ...]:
    ok = (isinstance(value, list) and len(value) == count
          and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
                  for x in value))
    if not ok:
        raise InputError(f"{where}: expected {count} finite numbers, got {value!r}")
    return tuple(float(x) for x in value)


def _read_json(path: str | Path, where: str) -> Mapping[str, Any]:
    return _object(read_json(path), where)


def _object(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InputError(f"{where}: expected an object, got {type(value).__name__}")
    return value


def _number(value: Any, where: str, *, allow_zero: bool = False) -> float:
    ok = (not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
          and (value > 0 or (allow_zero and value == 0)))
    if not ok:
        raise InputError(f"{where}: expected a finite number {'>= 0' if allow_zero else '> 0'}, "
                         f"got {value!r}")
    return float(value)
