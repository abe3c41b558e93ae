"""Measured profiles per device class: --measure-on parsing, real cgroup quotas, layer features
(call counts included), time sources, traces with every timing window, and merging profiles."""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import pytest

from edgepart.errors import InputError

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from edgepart.cli import main  # noqa: E402
from edgepart.profiling import measure  # noqa: E402
from edgepart.profiling.catalog import parse_device_class  # noqa: E402
from edgepart.profiling.clusters import load_cluster  # noqa: E402
from edgepart.profiling.estimator import load_trace  # noqa: E402
from edgepart.profiling.granularity import coarsen  # noqa: E402
from edgepart.profiling.measure import (  # noqa: E402
    MeasureOn,
    count_costs,
    measure_classes,
    measure_units,
    merge_profiles,
    parse_measure_on,
    profile_classes,
    trace_record,
    unit_features,
)
from edgepart.profiling.profile import ProfileOptions  # noqa: E402
from edgepart.profiling.trace import trace_model  # noqa: E402

CGROUP_V1 = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
needs_cgroups = pytest.mark.skipif(os.geteuid() != 0 or not CGROUP_V1.exists(),
                                   reason="needs root and cgroup v1 cpu")


class ConvNet(nn.Module):
    """conv 3->8 k3 s2 p1, relu, depthwise conv 8->8 k3 s1 p1 groups 8, on 1x3x16x16."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.relu = nn.ReLU()
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)

    def forward(self, x: Any) -> Any:
        return self.dw(self.relu(self.conv(x)))


class Mixed(nn.Module):
    """Modules, functions, a method and a parameter read by get_attr, on 1x3x8x8."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(4 * 8 * 8, 2)
        self.scale = nn.Parameter(torch.ones(2))

    def forward(self, x: Any) -> Any:
        y = self.act(self.conv(x))
        z = torch.relu(y) + y
        return self.fc(z.flatten(1)) * self.scale


@pytest.mark.parametrize(("text", "expected"), [
    ("this-host", MeasureOn(None)),
    ("q=cgroup:0.4", MeasureOn("q", 0.4)),
    ("amp=cgroup:0.4,512e6", MeasureOn("amp", 0.4, 512e6)),
    ("amp=stretch:0.4", MeasureOn("amp", 0.4, stretch=True)),
])
def test_parse_measure_on(text: str, expected: MeasureOn) -> None:
    assert parse_measure_on(text) == expected


@pytest.mark.parametrize("text", ["cgroup:", "cgroup:x", "cgroup:0", "docker:1", "cgroup:1,2,3",
                                  "cgroup:0.0001", "stretch:1.5", "stretch:0.4,512e6",
                                  "stretch:0"])
def test_bad_measure_on_is_an_input_error(text: str) -> None:
    with pytest.raises(InputError, match="--measure-on"):
        parse_measure_on(text)


def test_unit_features_read_the_modules() -> None:
    traced = trace_model(ConvNet(), (1, 3, 16, 16))
    costs = count_costs(traced)
    feats = {u.id: unit_features(traced, u, costs) for u in traced.units}
    conv, dw, relu = feats["conv"], feats["dw"], feats["relu"]
    # by hand: output 8 x 8 x 8; 2 FLOPs per MAC, Cout*Hout*Wout*Cin*k*k = 8*64*27 MACs
    assert conv["flops"] == 2 * 8 * 64 * 27
    assert (conv["in_c"], conv["in_h"], conv["in_w"]) == (3, 16, 16)
    assert (conv["out_c"], conv["out_h"], conv["out_w"]) == (8, 8, 8)
    assert (conv["kernel"], conv["stride"], conv["groups"]) == (3, 2, 1)
    assert conv["param_bytes"] == 4 * (8 * 3 * 9 + 8)  # weights + bias, fp32
    # depthwise: 8 channels, one 3x3 filter each: 8*64*9 MACs
    assert dw["flops"] == 2 * 8 * 64 * 9 and (dw["kernel"], dw["groups"]) == (3, 8)
    assert relu["flops"] == 0 and relu["kernel"] == 0
    # relu reads and writes 8*8*8 fp32 values
    assert relu["traffic_bytes"] == 2 * 4 * 512
    # three nn.Modules, each its own unit, no function calls
    assert [(f["module_calls"], f["function_calls"]) for f in feats.values()] == [(1, 0)] * 3


def test_unit_features_count_module_and_function_calls() -> None:
    # Mixed.forward by hand: self.conv, self.act (modules); torch.relu, + (functions);
    # .flatten (a method); self.fc (module); the get_attr of self.scale (neither: it joins the
    # unit of its one user, the * that is a function)
    traced = trace_model(Mixed(), (1, 3, 8, 8))
    costs = count_costs(traced)
    feats = {u.id: unit_features(traced, u, costs) for u in traced.units}
    calls = {name: (f["module_calls"], f["function_calls"]) for name, f in feats.items()}
    assert calls == {"conv": (1, 0), "act": (1, 0), "relu": (0, 1), "add": (0, 1),
                     "flatten": (0, 1), "fc": (1, 0), "mul": (0, 1)}
    # at block granularity relu and add merge (two tensors, relu's and act's, cross between
    # them): one unit, two function calls
    blocks = coarsen(traced, "block")
    block_costs = count_costs(blocks)
    merged = [unit_features(blocks, u, block_costs) for u in blocks.units
              if u.nodes == ("relu", "add")]
    assert [(f["module_calls"], f["function_calls"]) for f in merged] == [(0, 2)]


def _instance(times: dict[str, float], sources: dict[str, str], devices: list[str],
              ids: tuple[str, ...] = ("a", "b")) -> dict[str, Any]:
    return {
        "format_version": 1, "name": "m",
        "model": {"name": "m", "input_bytes": 4, "edges": [{"src": ids[0], "dst": ids[1],
                                                          "bytes": 4}],
                  "layers": [{"id": i, "op": "conv2d", "flops": 1, "param_bytes": 0,
                              "output_bytes": 4,
                              "time_s": dict(times), "meta": {"time_source": dict(sources)}}
                             for i in ids]},
        "devices": [{"id": d, "class": d.split("-")[0], "memory_bytes": 1e9} for d in devices],
        "links": {"default": {"bandwidth_bytes_per_s": 1e8, "latency_s": 0.0}},
    }


def test_merge_keeps_the_best_obtained_time_per_class() -> None:
    run1 = _instance({"x": 1.0, "y": 8.0}, {"x": "measured", "y": "scaled"}, ["x-0", "y-0"])
    run2 = _instance({"x": 3.0, "y": 2.0}, {"x": "measured", "y": "measured"}, ["y-0", "y-1"])
    run3 = _instance({"x": 9.0, "y": 9.0}, {"x": "estimated", "y": "estimated"}, ["x-0"])
    merged = merge_profiles([run1, run2, run3])
    layer = merged["model"]["layers"][0]
    # x: measured twice (1 and 3) -> their mean 2; y: measured once (2) beats scaled and estimated
    assert layer["time_s"] == {"x": 2.0, "y": 2.0}
    assert layer["meta"]["time_source"] == {"x": "measured", "y": "measured"}
    assert [d["id"] for d in merged["devices"]] == ["x-0", "y-0", "y-1"]
    assert run1["model"]["layers"][0]["time_s"]["x"] == 1.0  # inputs untouched


def test_merge_refuses_other_models() -> None:
    one = _instance({"x": 1.0}, {"x": "measured"}, ["x-0"])
    other = _instance({"x": 1.0}, {"x": "measured"}, ["x-0"], ids=("a", "c"))
    with pytest.raises(InputError, match="not the same model"):
        merge_profiles([one, other])


def test_merge_profiles_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(_instance({"x": 1.0}, {"x": "scaled"}, ["x-0"])))
    b.write_text(json.dumps(_instance({"x": 4.0}, {"x": "measured"}, ["x-0"])))
    assert main(["merge-profiles", str(a), str(b), "--out", str(tmp_path / "m.json")]) == 0
    merged = json.loads((tmp_path / "m.json").read_text())
    assert merged["model"]["layers"][1]["time_s"] == {"x": 4.0}
    assert "x (measured)" in capsys.readouterr().out
    assert main(["merge-profiles", str(tmp_path / "missing.json"), "--out",
                 str(tmp_path / "n.json")]) == 2


def _busy(n: int = 400_000) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.thread_time()
    total = 0
    for i in range(n):
        total += i
    return time.perf_counter() - wall, time.thread_time() - cpu


@needs_cgroups
def test_a_quota_slows_the_calling_thread_and_is_removed() -> None:
    from edgepart.runtime.emulate import limited

    with limited(0.25):
        wall, cpu = _busy(2_000_000)  # ~50 ms of CPU: many CFS periods, not one burst
    # at 0.25 CPU the wall time is 4x the CPU time; generous for a shared host's noise
    assert wall / cpu > 2.5
    assert not list(Path("/sys/fs/cgroup/cpu").glob(f"edgepart-{os.getpid()}"))


@needs_cgroups
def test_profile_classes_measures_under_the_quota(tmp_path: Path) -> None:
    cluster = load_cluster({
        "name": "c", "generator": {"kind": "ethernet"},
        "classes": {"slow": {"memory_bytes": 1e9, "flops_per_s": 2.5e10, "cores": 1,
                             "cpus": 0.25},
                    "free": {"memory_bytes": 1e9, "flops_per_s": 1e11, "cores": 1},
                    "rpi": {"memory_bytes": 1e9, "flops_per_s": 1e10}},
        "devices": [{"class": "slow"}, {"class": "free"}, {"class": "rpi"}]})
    data = profile_classes(ConvNet(), cluster,
                           ProfileOptions(input_shape=(1, 3, 16, 16), repeats=2, warmup=1),
                           [MeasureOn("slow", 0.25), MeasureOn("free")], trace_dir=tmp_path,
                           windows=1)
    layers = data["model"]["layers"]
    assert all(layer["meta"]["time_source"] == {"slow": "measured", "free": "measured",
                                                "rpi": "scaled"} for layer in layers)
    assert data["meta"]["measured_on"] == {"slow": "cgroup:0.25", "free": "this-host"}
    slow = sum(layer["time_s"]["slow"] for layer in layers)
    free = sum(layer["time_s"]["free"] for layer in layers)
    assert slow / free > 2.0  # 4x by the quota; generous
    trace = load_trace(tmp_path / "ConvNet.slow.trace.json")
    assert trace.device.cpus == 0.25 and len(trace.layers) == len(layers)


def test_measure_units_on_this_host_without_a_quota() -> None:
    traced = trace_model(ConvNet(), (1, 3, 16, 16))
    if os.geteuid() != 0 or not CGROUP_V1.exists():
        pytest.skip("this-host measurement runs in a cgroup too (top CPU weight)")
    times = measure_units(traced, MeasureOn(None), windows=1).time_s
    assert len(times) == len(traced.units) and all(t > 0 for t in times[1:])


def test_profile_measure_on_bad_input_exits_2(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    cluster = tmp_path / "c.json"
    cluster.write_text(json.dumps({"name": "c", "devices": [{"class": "rpi4"},
                                                           {"class": "rpi5"}],
                                   "generator": {"kind": "ethernet"}}))
    argv = ["profile", "torchvision:squeezenet1_1", "--cluster", str(cluster), "--out",
            str(tmp_path / "o.json"), "--input-shape", "1,3,32,32", "--repeats", "1"]
    assert main([*argv, "--measure-on", "cgroup:abc"]) == 2
    assert "--measure-on" in capsys.readouterr().err
    assert main([*argv, "--measure-on", "cgroup:0.5"]) == 2  # two classes: which one?
    assert "CLASS=cgroup:0.5" in capsys.readouterr().err


def test_stretch_measures_cpu_time_over_the_share() -> None:
    """``stretch:0.25`` is the thread's CPU time x 4 (no cgroup, no root): against the same
    units measured as ``stretch:1`` (CPU time alone) right after, 4x within host noise."""
    traced = trace_model(ConvNet(), (1, 3, 64, 64))
    full = measure_units(traced, MeasureOn(None, 1.0, stretch=True), windows=1).time_s
    quarter = measure_units(traced, MeasureOn(None, 0.25, stretch=True), windows=1).time_s
    assert MeasureOn(None, 0.25, stretch=True).label == "stretch:0.25"
    assert 3.0 < sum(quarter) / sum(full) < 5.3


def test_stretch_classes_share_one_cpu_time_measurement(monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    """Two stretch classes and a this-host one: the host and the first stretch class are timed
    (two calls), the second stretch class is the first's times x 0.5 / 0.25 = 2, exactly."""
    traced = trace_model(ConvNet(), (1, 3, 32, 32))
    calls: list[MeasureOn] = []
    real = measure.measure_units

    def counted(t: Any, spec: MeasureOn, *args: Any) -> Any:
        calls.append(spec)
        return real(t, spec, *args)

    monkeypatch.setattr(measure, "measure_units", counted)
    specs = [MeasureOn("host"), MeasureOn("half", 0.5, stretch=True),
             MeasureOn("quarter", 0.25, stretch=True)]
    host, half, quarter = measure_classes(traced, specs, windows=1)
    assert calls == specs[:2]
    assert quarter.time_s == tuple(t * 2.0 for t in half.time_s)
    assert quarter.window_times_s == tuple(tuple(t * 2.0 for t in w) for w in half.window_times_s)
    assert len(host.time_s) == len(half.time_s)


def test_a_trace_keeps_every_window_and_round_trips(tmp_path: Path) -> None:
    """Three windows per layer (stretch: CPU time, no cgroup needed); each one-node unit's time
    is the median of its windows, every window scaled alike; the JSON loads back unchanged."""
    traced = trace_model(Mixed(), (1, 3, 8, 8))
    spec = MeasureOn("half", 0.5, stretch=True)
    measured = measure_units(traced, spec, windows=3)
    costs = count_costs(traced)
    features = [unit_features(traced, u, costs) for u in traced.units]
    c = parse_device_class("half", {"memory_bytes": 1e9, "flops_per_s": 1e10, "cpus": 0.5},
                           "half")
    path = tmp_path / "mixed.half.trace.json"
    path.write_text(json.dumps(trace_record(traced, c, spec, features, measured)))
    trace = load_trace(path)
    assert [layer["id"] for layer in trace.layers] == [u.id for u in traced.units]
    for layer, t, windows in zip(trace.layers, measured.time_s, measured.window_times_s,
                                 strict=True):
        assert layer["time_s"] == t and layer["window_times_s"] == list(windows)
        assert len(windows) == 3 and all(w > 0 for w in windows)
        # one node per unit, or (mul) one node and a get_attr that takes 0 in every window
        assert t == pytest.approx(statistics.median(windows), rel=1e-12)
    assert trace.layers[1]["module_calls"] == 1 and trace.layers[2]["function_calls"] == 1
