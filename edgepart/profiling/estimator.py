"""Learned per-layer time: FlexPie's cost estimator (CE) with LightGBM, and the roofline fallback.

The model. A layer's time on a device class is a function ``t = f(x_layer, x_device)`` of

* the layer: op kind (categorical), input and output (channels, height, width), kernel, stride,
  groups, FLOPs, parameter bytes and bytes moved (:func:`edgepart.profiling.measure.unit_features`,
  read from the torch modules);
* the device class: peak FLOP/s, memory bandwidth, cores and CPU quota (:class:`DeviceFeatures`).

``f`` is a gradient-boosted tree ensemble fitted to measured traces, as FlexPie's planner does
(Happyrhzhang/FlexPie, ``python/cost_model``, see /work/shared/ALGORITHMS.md: XGBoost with the
``reg:gamma`` objective on layer shapes, kernel and stride). We use LightGBM with the same gamma
objective: a log link, ``log t = sum of trees``, so a device's speed enters as a factor and the
fit minimises a deviance that weighs relative, not absolute, errors (a 10 us layer counts as
much as a 10 ms one). ``max_delta_step`` caps each leaf's log-step: the gamma Newton step divides
by a hessian ``t e^-f`` that is tiny for the fastest layers when times span five orders of
magnitude, and without the cap the fit diverged (every prediction ~1e-57 s). The booster is kept
in LightGBM's own text format (``Booster.model_to_string``) inside our JSON, never pickled.

Without an estimator, :func:`roofline_time` is the fallback: ``max(flops / peak, bytes /
bandwidth)``, the time of a layer that runs at its device's peak compute or memory rate.

Trace files (``edgepart profile --measure-on ... --trace DIR``, :func:`trace_json`) hold one
measured run of one model on one class::

    {"format": "edgepart-trace", "version": 1, "model": "torchvision:resnet18",
     "input_shape": [1, 3, 112, 112], "measured_on": "cgroup:0.5",
     "device": {"class": "q0.5", "flops_per_s": 5e10, "memory_bandwidth_bytes_per_s": 1e10,
                "cores": 1, "cpus": 0.5},
     "layers": [{"id": "conv1", "op": "conv2d", "flops": 118013952, ..., "time_s": 0.00123}]}

lightgbm is imported only by :func:`fit` and :meth:`Estimator.predict`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgepart.errors import InputError
from edgepart.files import read_json

__all__ = ["DEVICE_FEATURES", "LAYER_FEATURES", "TRACE_FORMAT", "DeviceFeatures", "Estimator",
           "Trace", "fit", "load_estimator", "load_trace", "roofline_time", "trace_json"]

TRACE_FORMAT = "edgepart-trace"
ESTIMATOR_FORMAT = "edgepart-estimator"
LAYER_FEATURES = ("flops", "traffic_bytes", "param_bytes", "in_c", "in_h", "in_w", "out_c",
                  "out_h", "out_w", "kernel", "stride", "groups", "nodes")
DEVICE_FEATURES = ("flops_per_s", "memory_bandwidth_bytes_per_s", "cores", "cpus")
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
    device = DeviceFeatures(
        flops_per_s=_number(dev.get("flops_per_s"), f"{where}: device.flops_per_s"),
        memory_bandwidth_bytes_per_s=None if dev.get("memory_bandwidth_bytes_per_s") is None
        else _number(dev["memory_bandwidth_bytes_per_s"],
                     f"{where}: device.memory_bandwidth_bytes_per_s"),
        cores=_number(dev.get("cores"), f"{where}: device.cores"),
        cpus=_number(dev.get("cpus"), f"{where}: device.cpus"))
    layers = data.get("layers")
    if not isinstance(layers, list) or not layers:
        raise InputError(f"{where}: layers: expected a non-empty list")
    for i, layer in enumerate(layers):
        _object(layer, f"{where}: layers[{i}]")
        if not isinstance(layer.get("op"), str):
            raise InputError(f"{where}: layers[{i}].op: expected a string")
        for name in (*LAYER_FEATURES, "time_s"):
            _number(layer.get(name), f"{where}: layers[{i}].{name}", allow_zero=name != "time_s")
    return Trace(str(data.get("model", "")), str(dev.get("class", "")), device,
                 str(data.get("measured_on", "")), tuple(layers))


@dataclass(frozen=True, slots=True)
class Estimator:
    """A fitted estimator: the LightGBM text model, its op vocabulary and what it was fitted on."""

    booster_text: str
    ops: tuple[str, ...]
    trained_on: Mapping[str, Any] = field(default_factory=dict)

    def predict(self, layers: Sequence[Mapping[str, Any]], device: DeviceFeatures
                ) -> list[float]:
        """Predicted seconds of each layer (features as in a trace) on ``device``."""
        import lightgbm
        import numpy as np

        booster = lightgbm.Booster(model_str=self.booster_text)
        rows = np.array([_row(layer, device, self.ops) for layer in layers], dtype=float)
        return [float(t) for t in booster.predict(rows)]

    def to_json(self) -> dict[str, Any]:
        return {"format": ESTIMATOR_FORMAT, "version": 1,
                "features": ["op", *LAYER_FEATURES, *DEVICE_FEATURES], "ops": list(self.ops),
                "trained_on": dict(self.trained_on), "lightgbm": self.booster_text}


def load_estimator(src: str | Path | Mapping[str, Any]) -> Estimator:
    """Read an estimator JSON written by :meth:`Estimator.to_json`."""
    where = str(src) if not isinstance(src, Mapping) else "estimator"
    data = _read_json(src, where) if not isinstance(src, Mapping) else src
    if data.get("format") != ESTIMATOR_FORMAT or data.get("version") != 1:
        raise InputError(f"{where}: format: expected {ESTIMATOR_FORMAT!r} version 1")
    if data.get("features") != ["op", *LAYER_FEATURES, *DEVICE_FEATURES]:
        raise InputError(f"{where}: features: not the features this edgepart computes")
    ops, text = data.get("ops"), data.get("lightgbm")
    if not isinstance(ops, list) or not all(isinstance(op, str) for op in ops):
        raise InputError(f"{where}: ops: expected a list of strings")
    if not isinstance(text, str) or not text.startswith("tree"):
        raise InputError(f"{where}: lightgbm: expected LightGBM's text model")
    return Estimator(text, tuple(ops), dict(data.get("trained_on") or {}))


def fit(traces: Sequence[Trace], *, rounds: int = DEFAULT_ROUNDS,
        params: Mapping[str, Any] | None = None) -> Estimator:
    """Fit the estimator to every layer of ``traces`` (see the module docstring)."""
    import lightgbm
    import numpy as np

    if not traces:
        raise InputError("fit: give at least one trace")
    ops = tuple(sorted({str(layer["op"]) for t in traces for layer in t.layers}))
    rows = [_row(layer, t.device, ops) for t in traces for layer in t.layers]
    times = [float(layer["time_s"]) for t in traces for layer in t.layers]
    data = lightgbm.Dataset(np.array(rows, dtype=float), np.array(times), categorical_feature=[0],
                            free_raw_data=False)
    booster = lightgbm.train({**DEFAULT_PARAMS, **(params or {})}, data, num_boost_round=rounds)
    trained_on = {"models": sorted({t.model for t in traces}),
                  "classes": sorted({t.device_class for t in traces}),
                  "layers": len(rows), "rounds": rounds, "objective": "gamma",
                  "lightgbm": lightgbm.__version__}
    return Estimator(booster.model_to_string(), ops, trained_on)


def _row(layer: Mapping[str, Any], device: DeviceFeatures, ops: Sequence[str]) -> list[float]:
    """Feature vector: op code (-1, LightGBM's missing category, for an op never trained on),
    the layer's numbers, the device's."""
    op = str(layer["op"])
    code = float(ops.index(op)) if op in ops else -1.0
    return [code, *(float(layer[name]) for name in LAYER_FEATURES), *device.vector()]


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
