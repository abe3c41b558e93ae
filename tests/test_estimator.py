"""The learned layer-time estimator: a known law recovered out of sample, its JSON (LightGBM's own
text model, no pickle), trace validation, the roofline fallback and the commands."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

import pytest

from edgepart.cli import main
from edgepart.errors import InputError
from edgepart.profiling.estimator import (
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
