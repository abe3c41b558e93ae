"""The device catalog: required classes, sourced numbers, the speed-factor model."""

from __future__ import annotations

import json

import pytest

from edgepart.cli import main
from edgepart.errors import InputError
from edgepart.profiling.catalog import load_catalog, parse_device_class

REQUIRED = {"rpi4", "rpi5", "jetson_nano", "jetson_orin_nano", "nuc_cpu", "laptop_cpu"}


def test_catalog_has_the_common_edge_classes_with_sources() -> None:
    catalog = load_catalog()
    assert set(catalog.classes) >= REQUIRED
    for c in catalog.classes.values():
        assert c.memory_bytes > 0 and c.flops_per_s > 0, c.name
        assert c.memory_bandwidth_bytes_per_s is not None and c.memory_bandwidth_bytes_per_s > 0
        assert len(c.source) > 20, f"{c.name} needs a source"
    assert catalog.host_flops_per_s > 0 and catalog.host_source


def test_speed_factor_is_the_throughput_ratio() -> None:
    catalog = load_catalog()
    rpi4, orin = catalog.classes["rpi4"], catalog.classes["jetson_orin_nano"]
    assert rpi4.speed_factor(1e11) == pytest.approx(1e11 / 5.76e10)
    assert orin.speed_factor(catalog.host_flops_per_s) < 1 < rpi4.speed_factor(
        catalog.host_flops_per_s)


def test_unknown_class_lists_the_known_ones() -> None:
    with pytest.raises(InputError, match=r"--x: unknown device class 'rpi9' \(known: .*rpi4"):
        load_catalog().get("rpi9", "--x")


@pytest.mark.parametrize(("entry", "message"), [
    ({"flops_per_s": 1e9}, r"x.memory_bytes: expected a number > 0, got None"),
    ({"memory_bytes": 1e9, "flops_per_s": -1}, r"x.flops_per_s: must be a finite number > 0"),
    ({"memory_bytes": 1e9, "flops_per_s": 1e9, "speed": 2}, r"x: unknown field\(s\) speed"),
])
def test_bad_class_entry(entry: dict[str, float], message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_device_class("x", entry, "x")


def test_devices_list_prints_the_catalog(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["devices", "list"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data["classes"]) >= REQUIRED
    assert data["classes"]["rpi4"]["speed_factor"] > 1
