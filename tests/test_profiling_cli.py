"""``edgepart profile`` end to end: resnet18 into a valid instance; bad input exits 2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edgepart import load_instance
from edgepart.cli import main

CLUSTER = {
    "name": "pair",
    "devices": [{"class": "rpi4"}, {"class": "jetson_nano"}, {"class": "rpi4"}],
    "generator": {"kind": "ethernet", "bandwidth_mbit_s": 1000},
    "source": "rpi4-0", "sink": "rpi4-0",
}


@pytest.fixture
def cluster(tmp_path: Path) -> Path:
    path = tmp_path / "cluster.json"
    path.write_text(json.dumps(CLUSTER))
    return path


def _profile(cluster: Path, out: Path, *extra: str) -> dict[str, Any]:
    argv = ["profile", "torchvision:resnet18", "--cluster", str(cluster), "--out", str(out),
            "--input-shape", "1,3,64,64", "--repeats", "2", "--warmup", "1", *extra]
    assert main(argv) == 0
    return dict(json.loads(out.read_text()))


def test_resnet18_profiles_into_a_valid_instance(cluster: Path, tmp_path: Path) -> None:
    data = _profile(cluster, tmp_path / "r18.json")
    inst = load_instance(tmp_path / "r18.json")
    assert inst.name == "r18" and len(inst.model.layers) == 69
    assert [d.id for d in inst.devices] == ["rpi4-0", "jetson_nano-0", "rpi4-1"]
    assert inst.model.input_bytes == 3 * 64 * 64 * 4
    for layer in data["model"]["layers"]:
        assert set(layer["time_s"]) == {"rpi4", "jetson_nano"}
        ratio = layer["time_s"]["rpi4"] / max(layer["meta"]["host_time_s"], 1e-12)
        assert ratio == pytest.approx(data["meta"]["speed_factors"]["rpi4"], rel=1e-4)
        assert layer["meta"]["host_time_min_s"] <= layer["meta"]["host_time_s"]
    assert data["meta"]["timing"]["repeats"] == 2
    assert data["meta"]["model_spec"] == "torchvision:resnet18"


def test_statistic_min_scales_the_fastest_repeat(cluster: Path, tmp_path: Path) -> None:
    data = _profile(cluster, tmp_path / "m.json", "--statistic", "min", "--threads", "2")
    factor = data["meta"]["speed_factors"]["jetson_nano"]
    assert data["meta"]["statistic"] == "min" and data["meta"]["host"]["threads"] == 2
    for layer in data["model"]["layers"]:
        expected = layer["meta"]["host_time_min_s"] * factor
        assert layer["time_s"]["jetson_nano"] == pytest.approx(expected, rel=1e-4, abs=1e-9)


def _without_times(data: dict[str, Any]) -> dict[str, Any]:
    data = json.loads(json.dumps(data))
    for layer in data["model"]["layers"]:
        layer.pop("time_s")
        layer["meta"] = {k: v for k, v in layer["meta"].items()
                         if not k.startswith(("host_", "spread"))}
    data["meta"].pop("timing")
    return data


def test_profiles_differ_only_in_times(cluster: Path, tmp_path: Path) -> None:
    a = _profile(cluster, tmp_path / "a.json", "--name", "x")
    b = _profile(cluster, tmp_path / "b.json", "--name", "x")
    assert _without_times(a) == _without_times(b)


def test_roofline_profiles_are_identical_and_block_is_coarser(cluster: Path,
                                                              tmp_path: Path) -> None:
    argv = ("--time-model", "roofline", "--granularity", "block", "--name", "x")
    a = (tmp_path / "a.json", tmp_path / "b.json")
    first = _profile(cluster, a[0], *argv)
    _profile(cluster, a[1], *argv)
    assert a[0].read_text() == a[1].read_text()
    assert len(first["model"]["layers"]) == 23 and "timing" not in first["meta"]
    load_instance(a[0])


@pytest.mark.parametrize(("args", "message"), [
    (["torchvision:resnet_9000"], "model: unknown torchvision model 'resnet_9000'"),
    (["nosuchpackage.models:net"], "model: cannot import 'nosuchpackage.models'"),
    (["json:loads"], "model: json:loads: "),
    (["resnet18"], "model: expected 'torchvision:NAME' or 'package.module:factory'"),
    (["torchvision:resnet18", "--input-shape", "1,3,x"], "--input-shape: expected comma-sep"),
    (["torchvision:resnet18", "--input-shape", "1,0,8,8"], "--input-shape: every dimension"),
    (["torchvision:resnet18", "--input-shape", "1,3,64"], "--input-shape 1,3,64: the forward"),
    (["torchvision:resnet18", "--batch-size", "0"], "--batch-size: must be >= 1"),
    (["torchvision:resnet18", "--granularity", "layer"], "--granularity: expected one of"),
    (["torchvision:resnet18", "--time-model", "guess"], "--time-model: expected one of"),
    (["torchvision:resnet18", "--statistic", "mean"], "--statistic: expected one of median, min"),
    (["torchvision:resnet18", "--threads", "0"], "--threads must be >= 1"),
    (["torchvision:resnet18", "--model-arg", "num_classes=ten"], "--model-arg num_classes"),
])
def test_bad_profile_input_exits_2(args: list[str], message: str, cluster: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["profile", *args, "--cluster", str(cluster), "--out", str(tmp_path / "x.json")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize(("content", "message"), [
    (None, "--cluster: cannot read"),
    ("{not json", "is not JSON"),
    ("[1, 2]", "must hold a JSON object"),
    ('{"devices": [{"class": "rpi4"}], "generator": {"kind": "ethernet"}, "link": 1}',
     "cluster: unknown field(s) link"),
])
def test_bad_cluster_file_exits_2(content: str | None, message: str, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.json"
    if content is not None:
        path.write_text(content)
    argv = ["profile", "torchvision:resnet18", "--cluster", str(path),
            "--out", str(tmp_path / "x.json")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
