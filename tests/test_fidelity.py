"""The quota emulation's scheduler period and unlimited measuring cgroups (bench/fidelity.py
measures what they do; here: the numbers written to the kernel's files)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgepart.runtime.emulate import CFS_PERIOD_US, Cgroups, cfs_period_us


@pytest.mark.parametrize(("cpus", "period"), [
    (1.0, 5000),  # the default period
    (0.4, 5000),  # quota 2 ms >= the kernel's 1 ms minimum
    (0.1, 10_000),  # 1 ms / 0.1 CPU: the shortest period whose quota is 1 ms
    (0.001, 1_000_000),  # the kernel's longest period
    (0.0005, 1_000_000),  # capped there (the quota is then raised to 1 ms)
])
def test_period_by_quota(cpus: float, period: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGEPART_CFS_PERIOD_US", raising=False)
    assert CFS_PERIOD_US == 5000
    assert cfs_period_us(cpus) == period


def test_period_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEPART_CFS_PERIOD_US", "1000")
    assert cfs_period_us(1.0) == 1000 and cfs_period_us(0.25) == 4000  # 1 ms / 0.25
    assert cfs_period_us(0.5, target_us=20_000) == 20_000


def _fake_v1(root: Path) -> Path:
    for controller, files in (("cpu", ("cpu.cfs_quota_us", "cpu.cfs_period_us", "cpu.shares")),
                              ("memory", ("memory.limit_in_bytes",))):
        (root / controller).mkdir(parents=True)
        for name in files:
            (root / controller / name).write_text("-1\n")
    proc = root / "self_cgroup"
    proc.write_text("4:memory:/\n1:cpu:/\n")
    return proc


def test_unlimited_and_explicit_period_cgroups(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGEPART_CFS_PERIOD_US", raising=False)
    groups = Cgroups(tmp_path, _fake_v1(tmp_path))
    cpu, memory = (Path(d) for d in groups.create("m", None, None))
    assert (cpu / "cpu.cfs_quota_us").read_text() == "-1"  # no quota
    assert not (memory / "memory.limit_in_bytes").exists()  # no memory limit written
    groups.set_cpus("m", 0.5, period_us=20_000)
    assert (cpu / "cpu.cfs_quota_us").read_text() == "10000"  # 0.5 x 20 ms
    assert (cpu / "cpu.cfs_period_us").read_text() == "20000"
    groups.set_cpus("m", 0.4)
    assert (cpu / "cpu.cfs_quota_us").read_text() == "2000"  # 0.4 x 5 ms
    assert groups.own_dirs() == [str(tmp_path / "cpu"), str(tmp_path / "memory")]
    for d in (cpu, memory):  # real cgroup directories hold only kernel files
        for f in d.iterdir():
            f.unlink()
    groups.close(wait_s=0)
