"""The learned layer-time estimator: a known law recovered out of sample, the call counts telling
a module relu from a function relu, traces and estimator files from before the call counts, its
JSON (LightGBM's own text model, no pickle), trace validation, the roofline fallback, the
commands and the bench's within-run noise floor."""

from __future__ import annotations

import importlib.util
import json
import math
import statistics
from pathlib import Path
from typing import Any

import pytest

from edgepart.cli import main
from edgepart.errors import InputError
from edgepart.profiling.estimator import (
    MODEL_FEATURES,
    OPTIONAL_LAYER_FEATURES,
    DeviceFeatures,
    fit,
    fit_baseline,
    load_estimator,
    load_trace,
    roofline_time,
    trace_json,
)

pytest.importorskip("lightgbm")

CPUS = (1.0, 0.5, 0.25)


def _layer(flops: float, op: str = "conv2d") -> dict[str, Any]:
    side = 8
    return {"id": f"l{flops:.0f}", "op": op, "flops": flops, "traffic_bytes": flops / 10,
            "param_bytes": 0, "nodes": 1, "in_c": 16, "in_h": side, "in_w": side, "out_c": 16,
            "out_h": side, "out_w": side, "kernel": 3, "stride": 1, "groups": 1}


def _device(cpus: float) -> DeviceFeatures:
    return DeviceFeatures(1e10 * cpus, 1e10, 1, cpus)


def law(flops: float, cpus: float) -> float:
    """The synthetic truth: 1e9 FLOP/s per CPU, so a layer takes flops / (1e9 x cpus) s."""
    return flops / (1e9 * cpus)


def _traces(flops_values: list[float]) -> list[dict[str, Any]]:
    return [trace_json("synthetic", (1, 3, 8, 8), f"q{c}", _device(c), f"cgroup:{c}",
                       [{**_layer(f), "time_s": law(f, c)} for f in flops_values])
            for c in CPUS]


def test_the_estimator_recovers_a_known_law_out_of_sample() -> None:
    train = [1e5 * 1.05 ** k for k in range(0, 200, 2)]  # every other point of a 5% grid
    held_out = [1e5 * 1.05 ** k for k in range(1, 199, 2)]  # the points in between
    est = fit([load_trace(t) for t in _traces(train)], rounds=400)
    errors = [abs(p - law(f, c)) / law(f, c)
              for c in CPUS
              for f, p in zip(held_out, est.predict([_layer(f) for f in held_out], _device(c)),
                              strict=True)]
    # each held-out point lies between two trained ones 5% apart: a tree's step is within ~5%
    assert statistics.median(errors) < 0.10
    assert sum(e <= 0.10 for e in errors) / len(errors) >= 0.8


def test_the_baseline_extrapolates_beyond_the_trained_layers() -> None:
    # trained on 1e5..1e7 FLOPs; asked about 1e8 and 1e9 (10x and 100x the largest layer). The
    # truth is a power law, log t = log flops - log 1e9 - log cpus, which the baseline's terms
    # contain, so it predicts 0.1 s / cpus and 1 s / cpus; trees alone would predict the largest
    # trained layer's 0.01 s / cpus (10x and 100x short)
    est = fit([load_trace(t) for t in _traces([1e5 * 1.1 ** k for k in range(49)])], rounds=100)
    for cpus in CPUS:
        for flops, truth in ((1e8, 0.1 / cpus), (1e9, 1.0 / cpus)):
            (predicted,) = est.predict([_layer(flops)], _device(cpus))
            assert predicted == pytest.approx(truth, rel=0.10)


def test_an_op_never_trained_on_takes_its_familys_law() -> None:
    # relu layers cost 1 us + nothing else; conv layers follow the FLOP law. A relu6 (family
    # "activation", never trained on) must be priced like a relu (1 us), not like a conv.
    layers = [{**_layer(f, "relu"), "time_s": 1e-6} for f in (1e5, 1e6, 1e7)]
    layers += [{**_layer(f), "time_s": law(f, 1.0)} for f in (1e5, 1e6, 1e7)]
    baseline = fit_baseline([(layer, _device(1.0)) for layer in layers])
    relu6 = math.exp(baseline.log_time(_layer(1e7, "relu6"), _device(1.0)))
    conv = math.exp(baseline.log_time(_layer(1e7), _device(1.0)))
    assert relu6 == pytest.approx(1e-6, rel=0.5)  # ridge pulls it a little toward the pooled law
    assert conv == pytest.approx(law(1e7, 1.0), rel=0.5)


def _relu(channels: float, module: bool) -> dict[str, Any]:
    """A relu on channels x 14 x 14 fp32, called as a module or as a function."""
    elements = channels * 196
    return {**_layer(0, "relu"), "id": f"relu{channels}{module}", "traffic_bytes": 8 * elements,
            "in_c": channels, "in_h": 14, "in_w": 14, "out_c": channels, "out_h": 14,
            "out_w": 14, "kernel": 0, "module_calls": int(module),
            "function_calls": int(not module)}


def relu_law(channels: float, module: bool, cpus: float) -> float:
    """The synthetic truth, after helper F's measurement (64x14x14 relu: 6.5 us as a module, 3.0
    us as a function): a fixed cost per call, 6.5 us or 3 us, plus the bytes at 10 GB/s."""
    return ((6.5e-6 if module else 3e-6) + 8 * channels * 196 / 1e10) / cpus


def test_call_counts_tell_a_module_relu_from_a_function_relu() -> None:
    # same shapes, same bytes, same FLOPs (0): only module_calls / function_calls differ, and
    # the module relu costs 3.5 us more per call; held-out channel counts between trained ones
    trained, held_out = range(16, 96, 2), [c + 1 for c in range(16, 94, 6)]
    traces = [load_trace(trace_json("relus", (1, 3, 8, 8), f"q{cpus}", _device(cpus),
                                    f"cgroup:{cpus}",
                                    [{**_relu(c, m), "time_s": relu_law(c, m, cpus)}
                                     for c in trained for m in (True, False)]))
              for cpus in CPUS]
    est = fit(traces, rounds=300)
    blind = fit(traces, rounds=300,
                features=[f for f in MODEL_FEATURES if f not in OPTIONAL_LAYER_FEATURES])
    for cpus in CPUS:
        for module in (True, False):
            predicted = est.predict([_relu(c, module) for c in held_out], _device(cpus))
            errors = [abs(p - relu_law(c, module, cpus)) / relu_law(c, module, cpus)
                      for c, p in zip(held_out, predicted, strict=True)]
            assert max(errors) < 0.10
        # without the counts both calls are the same row of features, so one price for both;
        # at 40 channels the truth is 12.77 us and 9.27 us (/ cpus), 1.38x apart: no price is
        # within 10% of both
        module_s, function_s = blind.predict([_relu(40, m) for m in (True, False)],
                                             _device(cpus))
        assert module_s == function_s
        assert max(abs(module_s - relu_law(40, m, cpus)) / relu_law(40, m, cpus)
                   for m in (True, False)) > 0.10


def test_traces_from_before_the_call_counts_and_windows_still_fit() -> None:
    # a version-1 trace as written before the fields existed: no module_calls, function_calls
    # or window_times_s; it loads, and fits next to a new one (its counts are NaN to the trees)
    old = _traces([1e5 * 1.1 ** k for k in range(0, 60, 2)])
    for layer in old[0]["layers"]:
        assert not {*OPTIONAL_LAYER_FEATURES, "window_times_s"} & set(layer)
    new = [{**trace, "layers": [{**layer, "module_calls": 1, "function_calls": 0,
                                 "window_times_s": [layer["time_s"]] * 3}
                                for layer in trace["layers"]]}
           for trace in _traces([1e5 * 1.1 ** k for k in range(1, 60, 2)])]
    est = fit([load_trace(t) for t in old + new], rounds=300)
    probe = [1e5 * 1.1 ** k for k in (10.5, 30.5, 50.5)]
    for cpus in CPUS:
        for layers in ([_layer(f) for f in probe],
                       [{**_layer(f), "module_calls": 1, "function_calls": 0} for f in probe]):
            predicted = est.predict(layers, _device(cpus))
            for f, p in zip(probe, predicted, strict=True):
                assert p == pytest.approx(law(f, cpus), rel=0.15)


def test_an_estimator_file_from_before_the_call_counts_still_predicts(tmp_path: Path) -> None:
    # an estimator fitted on the features of before (no call counts), as its file stores them:
    # it loads, and predicts the same with or without the counts in the layers
    before = [f for f in MODEL_FEATURES if f not in OPTIONAL_LAYER_FEATURES]
    est = fit([load_trace(t) for t in _traces([1e5 * 1.1 ** k for k in range(60)])], rounds=20,
              features=before)
    path = tmp_path / "old.json"
    path.write_text(json.dumps(est.to_json()))
    data = json.loads(path.read_text())
    assert data["version"] == 2 and data["features"] == before
    again = load_estimator(path)
    layers = [_layer(1e5 * 1.1 ** k) for k in range(0, 60, 7)]
    counted = [{**layer, "module_calls": 1, "function_calls": 3} for layer in layers]
    assert again.predict(layers, _device(0.5)) == est.predict(layers, _device(0.5))
    assert again.predict(counted, _device(0.5)) == est.predict(layers, _device(0.5))
    with pytest.raises(InputError, match=r"features: bogus not computed .*refit"):
        load_estimator({**data, "features": [*before, "bogus"]})
    with pytest.raises(InputError, match="do not read the 21 features"):
        load_estimator({**data, "features": before[:-2]})
    with pytest.raises(InputError, match="starting with 'op', 'family'"):
        load_estimator({**data, "features": before[1:]})


def test_estimator_json_round_trip_keeps_lightgbm_text(tmp_path: Path) -> None:
    flops = [1e5 * 1.1 ** k for k in range(60)]
    est = fit([load_trace(t) for t in _traces(flops)], rounds=20)
    path = tmp_path / "est.json"
    path.write_text(json.dumps(est.to_json()))
    data = json.loads(path.read_text())  # plain JSON: no pickle anywhere
    assert data["lightgbm"].startswith("tree") and data["ops"] == ["conv2d"]
    again = load_estimator(path)
    layers = [_layer(f) for f in flops[:5]]
    assert again.predict(layers, _device(0.5)) == est.predict(layers, _device(0.5))
    # an op never trained on is LightGBM's missing category, not an error
    assert all(t > 0 for t in again.predict([_layer(1e6, "softmax")], _device(1.0)))
    with pytest.raises(InputError, match="version 2"):
        load_estimator({**data, "version": 1})
    with pytest.raises(InputError, match=r"baseline.pooled: expected 4 finite numbers"):
        load_estimator({**data, "baseline": {"pooled": [1, 2], "families": {}}})


@pytest.mark.parametrize(("change", "message"), [
    ({"format": "x"}, "format"),
    ({"device": {"class": "a", "flops_per_s": -1, "cores": 1, "cpus": 1}},
     r"device.flops_per_s: expected a finite number > 0"),
    ({"layers": [{**_layer(1e6), "time_s": 0}]}, r"layers\[0\].time_s"),
    ({"layers": [{**_layer(1e6), "kernel": "3", "time_s": 1.0}]}, r"layers\[0\].kernel"),
    ({"layers": [{**_layer(1e6), "module_calls": None, "time_s": 1.0}]},
     r"layers\[0\].module_calls: expected a finite number >= 0"),
    ({"layers": [{**_layer(1e6), "time_s": 1.0, "window_times_s": [1.0, -1.0]}]},
     r"layers\[0\].window_times_s\[1\]: expected a finite number >= 0"),
    ({"layers": [{**_layer(1e6), "time_s": 1.0, "window_times_s": []}]},
     r"layers\[0\].window_times_s: expected a non-empty list"),
])
def test_bad_traces_name_the_field(change: dict[str, Any], message: str) -> None:
    trace = {**_traces([1e6])[0], **change}
    with pytest.raises(InputError, match=message):
        load_trace(trace)


def test_roofline_is_the_slower_of_compute_and_memory() -> None:
    # 1 GFLOP at 10 GFLOP/s: 0.1 s; 2 GB at 10 GB/s: 0.2 s -> memory-bound, 0.2 s
    assert roofline_time(1e9, 2e9, 1e10, 1e10) == pytest.approx(0.2)
    assert roofline_time(1e9, 1e8, 1e10, 1e10) == pytest.approx(0.1)
    assert roofline_time(1e9, 2e9, 1e10, None) == pytest.approx(0.1)  # bandwidth unknown


def test_fit_and_evaluate_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = []
    for k, trace in enumerate(_traces([1e5 * 1.1 ** k for k in range(60)])):
        paths.append(tmp_path / f"t{k}.json")
        paths[-1].write_text(json.dumps(trace))
    out = tmp_path / "est.json"
    assert main(["estimator", "fit", *map(str, paths), "--out", str(out), "--rounds", "50",
                 "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["layers"] == 180 and summary["classes"] == ["q0.25", "q0.5", "q1.0"]
    assert main(["estimator", "evaluate", str(out), str(paths[0]), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["traces"]
    assert row["layers"] == 60 and math.isfinite(row["mape_%"])
    # time-weighted error, recomputed here from the estimator's predictions and the trace
    first = load_trace(paths[0])
    predicted = load_estimator(out).predict(first.layers, first.device)
    measured = [layer["time_s"] for layer in first.layers]
    weighted = sum(abs(p - m) for p, m in zip(predicted, measured, strict=True)) / sum(measured)
    assert row["time_weighted_%"] == pytest.approx(100 * weighted, abs=0.01)
    assert main(["estimator", "fit", str(tmp_path / "none.json"), "--out", str(out)]) == 2
    assert "none.json: cannot read" in capsys.readouterr().err
    assert main(["estimator", "evaluate", str(paths[0]), str(paths[0])]) == 2


def test_profile_fills_unmeasured_classes_with_the_estimator(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from torch import nn

    from edgepart.profiling.clusters import load_cluster
    from edgepart.profiling.measure import profile_classes
    from edgepart.profiling.profile import ProfileOptions

    est = fit([load_trace(t) for t in _traces([1e5 * 1.1 ** k for k in range(60)])], rounds=20)
    cluster = load_cluster({"name": "c", "generator": {"kind": "ethernet"},
                            "devices": [{"class": "rpi4"}, {"class": "rpi5"}]})
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
    data = profile_classes(model, cluster, ProfileOptions(input_shape=(1, 3, 16, 16), repeats=1,
                                                          warmup=0),
                           estimator=est)
    for layer in data["model"]["layers"]:
        assert layer["meta"]["time_source"] == {"rpi4": "estimated", "rpi5": "estimated"}
        assert all(t > 0 for t in layer["time_s"].values())


def _bench_estimator() -> Any:
    path = Path(__file__).resolve().parents[1] / "bench" / "estimator.py"
    spec = importlib.util.spec_from_file_location("bench_estimator", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_noise_floor_from_the_windows() -> None:
    bench = _bench_estimator()
    layer = {"window_times_s": [1.0, 1.1, 1.3], "time_s": 1.1}
    data = {"m": {"q1.0": {"layers": [layer, {"time_s": 2.0}]}}}  # the second: an old layer
    (row,) = bench.window_noise(data)
    # by hand: 1.0 against median(1.1, 1.3) = 1.2: 1/6 = 16.67%; 1.1 against 1.15: 4.35%;
    # 1.3 against 1.05: 23.81%; mean 14.94%, one window in three within +-10%; time-weighted
    # (0.2 + 0.05 + 0.25) / (1.2 + 1.15 + 1.05) = 14.71%
    assert row == {"class": "q1.0", "windows": 3, "MAPE %": 14.9, "within 10 %": 33.3,
                   "time-wtd %": 14.7}
    assert bench.window_noise({"m": {"q1.0": {"layers": [{"time_s": 2.0}]}}}) == []


# -- reference mode: what the speed factor from this host's time misses ------------------------

def quota_law(host_s: float, cpus: float) -> float:
    """The synthetic truth of reference mode: a class of ``cpus`` CPUs takes ``host_s / cpus``
    (the speed factor's answer), except that a layer under 1 ms on the host takes 2/3 of that
    (it fits in a CPU quota's period and runs at full speed part of the time): there the speed
    factor is 50% high."""
    return host_s / cpus * (2 / 3 if host_s < 1e-3 else 1.0)


def _quota_traces(model: str, flops_values: list[float]) -> list[dict[str, Any]]:
    host = trace_json(model, (1, 3, 8, 8), "host", _device(1.0), "this-host",
                      [{**_layer(f), "time_s": law(f, 1.0)} for f in flops_values])
    return [host] + [trace_json(model, (1, 3, 8, 8), f"q{c}", _device(c), f"cgroup:{c}",
                                [{**_layer(f), "time_s": quota_law(law(f, 1.0), c)}
                                 for f in flops_values])
                     for c in (0.5, 0.25)]


def test_reference_mode_learns_what_the_speed_factor_misses(tmp_path: Path) -> None:
    train = [1e5 * 1.05 ** k for k in range(0, 200, 2)]  # host times 0.1 ms .. 1.6 s
    held_out = [1e5 * 1.05 ** k for k in range(1, 199, 2)]
    est = fit([load_trace(t) for t in _quota_traces("a", train)], rounds=300,
              reference_class="host")
    host_s = [law(f, 1.0) for f in held_out]
    # where the speed factor is 50% off: host time 1e-4 x 1.05^k s < 1 ms for odd k < 47.2, 24 of 99
    assert sum(t < 1e-3 for t in host_s) == 24
    for c in (0.5, 0.25):
        predicted = est.predict([_layer(f) for f in held_out], _device(c), host_s)
        errors = [abs(p - quota_law(h, c)) / quota_law(h, c)
                  for p, h in zip(predicted, host_s, strict=True)]
        assert sum(e <= 0.10 for e in errors) >= 0.9 * len(errors)
    with pytest.raises(InputError, match="reference mode"):
        est.predict([_layer(1e6)], _device(0.5))
    again = load_estimator(json.loads(json.dumps(est.to_json())))
    assert again.reference == est.reference
    assert again.predict([_layer(1e6)], _device(0.5), [1e-3]) == est.predict(
        [_layer(1e6)], _device(0.5), [1e-3])


def test_reference_mode_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = []
    for k, trace in enumerate(_quota_traces("a", [1e5 * 1.1 ** k for k in range(60)])):
        paths.append(tmp_path / f"t{k}.json")
        paths[-1].write_text(json.dumps(trace))
    out = tmp_path / "est.json"
    assert main(["estimator", "fit", *map(str, paths), "--out", str(out), "--rounds", "50",
                 "--reference", "host", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["layers"] == 120  # the two quota classes
    assert main(["estimator", "evaluate", str(out), *map(str, paths), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["traces"]
    assert sorted(r["class"] for r in rows) == ["q0.25", "q0.5"]  # not the reference itself
    assert main(["estimator", "evaluate", str(out), str(paths[1])]) == 2  # no host trace given
    assert "give the trace of 'a' on class 'host'" in capsys.readouterr().err
    assert main(["estimator", "fit", str(paths[1]), "--out", str(out), "--reference",
                 "host"]) == 2
    assert "no device features in the traces of class 'host'" in capsys.readouterr().err


def test_profile_measures_this_host_for_a_reference_estimator() -> None:
    pytest.importorskip("torch")
    from torch import nn

    from edgepart.profiling.clusters import load_cluster
    from edgepart.profiling.measure import profile_classes
    from edgepart.profiling.profile import ProfileOptions

    est = fit([load_trace(t) for t in _quota_traces("a", [1e5 * 1.1 ** k for k in range(60)])],
              rounds=20, reference_class="host")
    cluster = load_cluster({"name": "c", "generator": {"kind": "ethernet"},
                            "devices": [{"class": "rpi4"}]})
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
    data = profile_classes(model, cluster, ProfileOptions(input_shape=(1, 3, 16, 16), repeats=1,
                                                          warmup=0), estimator=est)
    for layer in data["model"]["layers"]:
        assert layer["meta"]["time_source"] == {"rpi4": "estimated"}
        assert layer["time_s"]["rpi4"] > 0
