"""Probing this machine: cgroup v1/v2 limits read from a fake /sys/fs/cgroup, the benchmark,
and the runtime's per-message cost."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from edgepart.cli import main
from edgepart.profiling.clusters import load_cluster
from edgepart.profiling.probe import (
    IDLE_GAPS_S,
    IdleCost,
    MessageCost,
    cgroup_cpu_limit,
    cgroup_memory_limit,
    reference_stage,
)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_takes_the_smallest_limit_on_the_path(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    _write(root / "cgroup.controllers", "cpu memory")
    _write(root / "cpu.max", "max 100000")
    _write(root / "app" / "cpu.max", "300000 100000")
    _write(root / "app" / "job" / "cpu.max", "150000 100000")
    _write(root / "app" / "memory.max", "1073741824")
    _write(root / "app" / "job" / "memory.max", "max")
    _write(tmp_path / "self_cgroup", "0::/app/job\n")
    assert cgroup_cpu_limit(root, tmp_path / "self_cgroup") == 1.5
    assert cgroup_memory_limit(root, tmp_path / "self_cgroup") == 1 << 30


def test_cgroup_v1_quota_and_limit(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    _write(root / "cpu" / "docker" / "cpu.cfs_quota_us", "200000")
    _write(root / "cpu" / "docker" / "cpu.cfs_period_us", "100000")
    _write(root / "cpu" / "cpu.cfs_quota_us", "-1")
    _write(root / "cpu" / "cpu.cfs_period_us", "100000")
    _write(root / "memory" / "docker" / "memory.limit_in_bytes", str(512 << 20))
    _write(root / "memory" / "memory.limit_in_bytes", "9223372036854771712")  # unlimited
    _write(tmp_path / "self_cgroup", "4:memory:/docker\n2:cpu:/docker\n1:name=systemd:/\n")
    assert cgroup_cpu_limit(root, tmp_path / "self_cgroup") == 2.0
    assert cgroup_memory_limit(root, tmp_path / "self_cgroup") == 512 << 20


def test_no_limits_and_unreadable_paths_mean_none(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    _write(root / "cpu" / "cpu.cfs_quota_us", "-1")
    _write(root / "cpu" / "cpu.cfs_period_us", "100000")
    _write(tmp_path / "self_cgroup", "2:cpu:/not/mounted/here\n")
    assert cgroup_cpu_limit(root, tmp_path / "self_cgroup") is None
    assert cgroup_memory_limit(root, tmp_path / "missing") is None


def test_message_cost_is_the_line_through_two_sizes() -> None:
    # by hand: 1 MB more took 1 ms more -> 1e9 B/s; the 1000-byte message's copy is 1 us, so
    # its fixed cost is 1.1 ms - 1 us = 1.099 ms
    cost = MessageCost(1000, 1.1e-3, 1_001_000, 2.1e-3)
    assert cost.bytes_per_s == pytest.approx(1e9)
    assert cost.per_message_s == pytest.approx(1.099e-3)
    noisy = MessageCost(1000, 2e-3, 1_001_000, 1.5e-3)  # the large one was no slower
    assert noisy.bytes_per_s == math.inf and noisy.per_message_s == 2e-3


def test_idle_cost_ratio_is_the_gap_time_over_the_busy_time() -> None:
    # by hand: 6 ms right after the previous run, 6.6 ms after 20 ms idle -> 1.1
    cost = IdleCost(6e-3, ((0.02, 6.6e-3), (0.08, 9e-3)))
    assert cost.ratio(0.02) == pytest.approx(1.1) and cost.ratio(0.08) == pytest.approx(1.5)
    assert [(g["gap_s"], g["ratio"]) for g in cost.to_json()["after_idle"]] == [(0.02, 1.1),
                                                                                 (0.08, 1.5)]


def test_reference_stage_is_seeded_and_leaves_the_global_generator_alone() -> None:
    torch = pytest.importorskip("torch")
    torch.manual_seed(7)
    expected = torch.rand(1)
    torch.manual_seed(7)
    first, image = reference_stage()
    assert torch.equal(torch.rand(1), expected)
    second, again = reference_stage()
    assert torch.equal(image, again)
    assert all(torch.equal(a, b) for a, b in zip(first.parameters(), second.parameters(),
                                                 strict=True))


def test_probe_command_reports_this_machine(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    assert main(["devices", "probe", "--repeats", "2"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["cpus"] >= 1 and data["speed_factor"] > 0
    rpc = data["rpc"]  # a real message through the runtime's transport to a local worker
    assert 0 < rpc["per_message_s"] < 0.5
    assert [s["bytes"] for s in rpc["samples"]] == [256, 4 << 20]
    assert all(s["seconds"] > 0 for s in rpc["samples"])
    idle = data["idle"]  # the reference stage really ran after each gap
    assert idle["busy_s"] > 0
    assert [g["gap_s"] for g in idle["after_idle"]] == list(IDLE_GAPS_S)
    assert all(g["cpu_s"] > 0 and g["ratio"] > 0 for g in idle["after_idle"])
    entry = data["class"]
    assert entry["memory_bytes"] > 2**20 and entry["flops_per_s"] > 1e8
    assert entry["memory_bandwidth_bytes_per_s"] > 1e7
    cluster = load_cluster({"classes": {"here": entry}, "devices": [{"class": "here"}],
                            "generator": {"kind": "ethernet"}})
    assert cluster.devices[0].device_class.flops_per_s == entry["flops_per_s"]
