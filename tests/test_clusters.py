"""Cluster files and link generators: validation, determinism, the SEIFER and mixed link models."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from edgepart.cli import main
from edgepart.errors import InputError
from edgepart.profiling.clusters import (
    cluster_to_json,
    instance_devices,
    load_cluster,
    mixed_links,
    seifer_bandwidth_mbit_s,
    wireless_links,
)

ROOT = Path(__file__).resolve().parents[1]


def _spec(**generator: Any) -> dict[str, Any]:
    return {"devices": [{"class": "rpi4", "count": 3}, {"class": "jetson_nano"}],
            "generator": generator}


def test_wireless_generator_is_deterministic_for_a_seed() -> None:
    a, pos_a = wireless_links(6, seed=7)
    b, pos_b = wireless_links(6, seed=7)
    c, pos_c = wireless_links(6, seed=8)
    assert (a, pos_a) == (b, pos_b)
    assert pos_a != pos_c and a != c


def test_wireless_bandwidth_follows_the_seifer_formula() -> None:
    links, pos = wireless_links(5, seed=1, side_m=150.0)
    bw = links["matrix"]["bandwidth_bytes_per_s"]
    for i in range(5):
        assert all(0 <= p <= 150.0 for p in pos[i])
        for j in range(5):
            if i != j:
                mbit = math.log2(1 + 283230 / math.dist(pos[i], pos[j]) ** 2)
                assert bw[i][j] == pytest.approx(mbit * 125_000, rel=1e-5)
                assert bw[i][j] == bw[j][i]


def test_seifer_formula_values() -> None:
    assert seifer_bandwidth_mbit_s(100.0) == pytest.approx(math.log2(1 + 28.323))
    assert seifer_bandwidth_mbit_s(0.0) == seifer_bandwidth_mbit_s(1.0)  # floored at 1 m


def test_mixed_links_by_tier() -> None:
    links = mixed_links(["wifi", "wifi", "wired"], wifi_mbit_s=100, wifi_latency_s=0.002,
                        wired_mbit_s=1000, wired_latency_s=0.0005)["matrix"]
    bw, lat = links["bandwidth_bytes_per_s"], links["latency_s"]
    assert bw[0][1] == 50 * 125_000 and lat[0][1] == 0.004  # two Wi-Fi hops, one channel
    assert bw[0][2] == 100 * 125_000 and lat[0][2] == 0.0025  # Wi-Fi hop, then the wire
    assert bw[0][0] == 0.0  # diagonal unused


def test_ethernet_cluster_ids_memory_and_links() -> None:
    spec = _spec(kind="ethernet", bandwidth_mbit_s=500, latency_s=0.001)
    spec["devices"].append({"id": "srv", "class": "nuc_cpu", "memory_bytes": 1e9})
    cluster = load_cluster(spec)
    assert [d.id for d in cluster.devices] == ["rpi4-0", "rpi4-1", "rpi4-2", "jetson_nano-0",
                                               "srv"]
    assert cluster.devices[0].memory_bytes == 4 * 1024**3  # the catalog's
    assert cluster.devices[-1].memory_bytes == 10**9  # overridden
    assert cluster.links == {"default": {"bandwidth_bytes_per_s": 62_500_000.0,
                                         "latency_s": 0.001}}


def test_cluster_to_json_round_trips() -> None:
    spec = _spec(kind="wireless", seed=3)
    spec["classes"] = {"board": {"memory_bytes": 2e9, "flops_per_s": 5e10, "source": "mine"}}
    spec["devices"].append({"class": "board"})
    cluster = load_cluster(spec)
    again = load_cluster(json.loads(json.dumps(cluster_to_json(cluster))))
    assert again.devices == cluster.devices
    assert again.links == cluster.links


def test_cluster_to_json_keeps_cores_and_cpus() -> None:
    """A class of the cluster's own with cores and a CPU quota, and a catalog name redefined
    with only a quota added (0.4 CPUs, as AMP4EC's containers): both are written with every
    field, so the cluster loads back to the same classes (the writer once dropped both)."""
    spec = _spec(kind="ethernet")
    spec["classes"] = {
        "board": {"memory_bytes": 2e9, "flops_per_s": 5e10, "cores": 6, "cpus": 1.5},
        "rpi4": {**_catalog_entry("rpi4"), "cpus": 0.4}}
    spec["devices"].append({"class": "board"})
    cluster = load_cluster(spec)
    written = cluster_to_json(cluster)
    assert written["classes"]["board"]["cores"] == 6 and written["classes"]["board"]["cpus"] == 1.5
    assert written["classes"]["rpi4"]["cpus"] == 0.4
    again = load_cluster(json.loads(json.dumps(written)))
    assert again.devices == cluster.devices  # a device's class compares every field


def _catalog_entry(name: str) -> dict[str, Any]:
    """The catalog's own JSON entry of class ``name``."""
    text = (ROOT / "edgepart" / "profiling" / "catalog.json").read_text()
    return dict(json.loads(text)["classes"][name])


@pytest.mark.parametrize(("spec", "message"), [
    ({"devices": []}, "cluster.devices: expected a non-empty list"),
    ({"devices": [{"class": "toaster"}], "generator": {"kind": "ethernet"}},
     r"cluster.devices\[0\].class: unknown device class 'toaster' \(known: .*rpi4"),
    ({"devices": [{"class": "rpi4", "count": 0}], "generator": {"kind": "ethernet"}},
     r"cluster.devices\[0\].count: expected an integer >= 1"),
    ({"devices": [{"class": "rpi4"}]}, "give exactly one of 'links' and 'generator'"),
    ({"devices": [{"class": "rpi4"}], "generator": {"kind": "5g"}},
     "cluster.generator.kind: expected one of ethernet, wireless, mixed"),
    ({"devices": [{"class": "rpi4"}], "generator": {"kind": "wireless"}},
     "the wireless generator needs an integer seed"),
    ({"devices": [{"class": "rpi4"}], "generator": {"kind": "ethernet", "bandwith_mbit_s": 1}},
     "unknown parameter.* bandwith_mbit_s"),
    ({"devices": [{"class": "rpi4"}], "generator": {"kind": "ethernet", "latency_s": -1}},
     "cluster.generator.latency_s: expected a finite number >= 0"),
    ({"devices": [{"class": "rpi4", "count": 2}],
      "links": {"matrix": {"bandwidth_bytes_per_s": [[0, 1]], "latency_s": [[0, 0], [0, 0]]}}},
     "cluster.links.matrix.bandwidth_bytes_per_s: expected a 2x2 list of lists"),
    ({"devices": [{"class": "rpi4"}], "links": {"default": {"bandwidth_bytes_per_s": 0}}},
     "cluster.links.default.bandwidth_bytes_per_s: must be a finite number > 0"),
    ({"devices": [{"class": "rpi4"}], "generator": {"kind": "ethernet"}, "source": "pi"},
     "cluster.source: unknown device id 'pi'"),
    ({"devices": [{"class": "rpi4", "id": "a"}, {"class": "rpi5", "id": "a"}],
      "generator": {"kind": "ethernet"}}, "duplicate device id 'a'"),
])
def test_bad_cluster_is_a_one_line_input_error(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message) as err:
        load_cluster(spec)
    assert "\n" not in str(err.value)


def test_cluster_command_writes_a_loadable_explicit_cluster(tmp_path: Path) -> None:
    out = tmp_path / "c.json"
    argv = ["cluster", "mixed", "--devices", "rpi4:2,nuc_cpu:1@wired", "--source", "first",
            "--param", "wifi_mbit_s=200", "--out", str(out)]
    assert main(argv) == 0
    data = json.loads(out.read_text())
    assert data["source"] == "rpi4-0" and "matrix" in data["links"]
    assert data["links"]["matrix"]["bandwidth_bytes_per_s"][0][2] == 200 * 125_000
    assert load_cluster(out).devices[2].tier == "wired"


@pytest.mark.parametrize("argv", [
    ["cluster", "ethernet", "--devices", "rpi4:x"],
    ["cluster", "ethernet", "--devices", "toaster:2"],
    ["cluster", "ethernet", "--devices", "rpi4:2", "--param", "bandwidth_mbit_s=fast"],
    ["cluster", "wireless", "--devices", "rpi4:2"],
])
def test_bad_cluster_command_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("edgepart: ")


@pytest.mark.parametrize("path", sorted((ROOT / "instances" / "clusters").glob("*.json")),
                         ids=lambda p: p.stem)
def test_shipped_cluster_files_load(path: Path) -> None:
    cluster = load_cluster(path)
    assert cluster.source == cluster.sink == cluster.devices[0].id


def test_instance_devices_carry_a_class_cpu_share_as_meta_cpus() -> None:
    cluster = load_cluster({
        "classes": {"amp_0.4cpu": {"memory_bytes": 512e6, "flops_per_s": 4e10, "cpus": 0.4}},
        "devices": [{"class": "amp_0.4cpu", "count": 2}, {"class": "rpi4"}],
        "generator": {"kind": "ethernet", "bandwidth_mbit_s": 1000}})
    devices = instance_devices(cluster)
    assert [d["id"] for d in devices] == ["amp_0.4cpu-0", "amp_0.4cpu-1", "rpi4-0"]
    assert [d.get("meta") for d in devices] == [{"cpus": 0.4}, {"cpus": 0.4}, None]
    assert devices[0]["memory_bytes"] == 512e6 and devices[0]["flops_per_s"] == 4e10
