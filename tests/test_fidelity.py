"""The quota emulation's scheduler period and unlimited measuring cgroups (bench/fidelity.py
measures what they do; here: the numbers written to the kernel's files), and ``--emulate
stretch``, a uniformly slower CPU: its arithmetic, its input checks, and a real worker's
slow-down."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


# --- --emulate stretch: a uniformly slower CPU -----------------------------------------------


def test_stretch_target_is_cpu_time_over_the_share() -> None:
    from edgepart.runtime.emulate import Emulation, Mode

    stretch = Emulation(Mode.STRETCH, 2.0, (("slow", 0.4), ("fast", 1.0)))
    # by hand: 10 ms of CPU on a 0.4-CPU device is 25 ms; at time scale 2, 50 ms of wall time
    assert stretch.stretch_target("slow", 0.010) == pytest.approx(0.050)
    assert stretch.stretch_target("fast", 0.010) == pytest.approx(0.020)
    assert Emulation(Mode.PAD, 2.0).stretch_target("slow", 0.010) is None


def _skipnet_on(shares: list[float | None], shape: tuple[int, ...] = (1, 3, 16, 16)
                ) -> dict[str, Any]:
    from test_runtime_support import SkipNet, instance_for

    data = instance_for(SkipNet(), shape=shape, devices=len(shares))
    for device, cpus in zip(data["devices"], shares, strict=True):
        if cpus is not None:
            device["meta"] = {"cpus": cpus}
    return data


def _files(tmp_path: Path, data: dict[str, Any], cuts: list[int]) -> list[str]:
    from test_runtime_support import plan_for

    inst, plan = tmp_path / "inst.json", tmp_path / "plan.json"
    inst.write_text(json.dumps(data))
    plan.write_text(json.dumps(plan_for(data, cuts)))
    return [str(inst), str(plan)]


def test_stretch_needs_every_device_share(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from test_runtime_support import SPEC

    from edgepart.cli import main

    files = _files(tmp_path, _skipnet_on([0.4, None]), [4])
    assert main(["run", *files, "--model", SPEC, "--emulate", "stretch"]) == 2
    err = capsys.readouterr().err
    assert "devices[1].meta.cpus" in err and "Traceback" not in err
    files = _files(tmp_path, _skipnet_on([0.4, 1.5]), [4])
    assert main(["run", *files, "--model", SPEC, "--emulate", "stretch"]) == 2
    assert "(0, 1]" in capsys.readouterr().err


def thread_cpu_s(compute: Callable[[], object], repeats: int) -> float:
    """The median thread CPU time of ``compute()`` on one torch thread, as a worker computes,
    over ``repeats`` calls after two warm-up calls."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            cpu = []
            for _ in range(repeats + 2):
                t0 = time.thread_time()
                compute()
                cpu.append(time.thread_time() - t0)
    finally:
        torch.set_num_threads(threads)
    return statistics.median(cpu[2:])


def test_a_quarter_cpu_stretch_worker_takes_four_times_its_cpu_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The busy-loop check through the real worker: one stage on a 0.25-CPU device; its compute
    must take 1 / 0.25 = 4x the CPU time the same forward pass takes here on one thread."""
    torch = pytest.importorskip("torch")
    from test_runtime_support import SPEC, SkipNet, let_workers_import_test_models, plan_for

    from edgepart.instance import load_instance
    from edgepart.plan import Plan
    from edgepart.runtime.driver import run
    from edgepart.runtime.emulate import Mode
    from edgepart.runtime.prepare import RunOptions

    let_workers_import_test_models(monkeypatch)
    shape = (1, 3, 96, 96)
    model, x = SkipNet(), torch.randn(shape)
    cpu_s = thread_cpu_s(lambda: model(x), repeats=10)
    data = _skipnet_on([0.25, 0.25], shape)
    report = run(load_instance(data), Plan.from_dict(plan_for(data, [])),
                 RunOptions(SPEC, requests=12, inflight=1, emulate=Mode.STRETCH, time_scale=1.0))
    assert report["completed"] == 12 and report["mismatches"] == 0
    (stage,) = report["stages"]
    # each request: max(real wall time, 4 x its CPU time); so at least ~4x the CPU time here
    # (generous: 2.8x), and no more than the real time plus twice the stretch (a thread starved
    # on a shared host computes longer than stretched, and then its real time is what counts)
    assert stage["compute_s"] > 2.8 * cpu_s, (stage, cpu_s)
    assert stage["compute_s"] < stage["real_compute_s"] + 8 * cpu_s, (stage, cpu_s)


# --- stretch workers protected from other load: a cgroup of top weight, no quota --------------


def test_stretch_workers_compute_in_a_top_weight_cgroup_without_quota() -> None:
    """A spawned worker given a cgroup with no limit (what ``run`` gives every stretch worker
    when it may make cgroups): its compute thread (v1) or process (v2) is in a cgroup with no
    CPU quota, under the driver's parent cgroup of the top CPU weight (v1 shares 262144, the
    kernel's maximum; v2 weight 10000, its maximum)."""
    pytest.importorskip("torch")
    from edgepart.runtime.cluster import Cluster
    from edgepart.runtime.emulate import cgroup_problem

    problem = cgroup_problem()
    if problem:
        pytest.skip(f"no cgroups here: {problem}")
    cluster = Cluster(["probe"], None)
    try:
        cluster.start({"probe": (None, None)})
        proc = cluster.procs[1]
        args = [str(a) for a in proc.args]  # type: ignore[union-attr]
        cpu = Path(args[args.index("--cgroup") + 1])
        if (cpu / "cpu.cfs_quota_us").exists():  # v1: the compute thread joined alone
            assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "-1"
            assert (cpu.parent / "cpu.shares").read_text().strip() == "262144"
            threads = {int(t) for t in (cpu / "tasks").read_text().split()}
            own = {int(t.name) for t in Path(f"/proc/{proc.pid}/task").iterdir()}
            assert threads and threads <= own
        else:
            assert (cpu / "cpu.max").read_text().split()[0] == "max"
            assert (cpu.parent / "cpu.weight").read_text().strip() == "10000"
            assert str(proc.pid) in (cpu / "cgroup.procs").read_text().split()
    finally:
        cluster.close()


def test_stretch_without_cgroups_warns_that_its_workers_are_unprotected(
        monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    from test_runtime_support import SPEC, let_workers_import_test_models, plan_for

    from edgepart.instance import load_instance
    from edgepart.plan import Plan
    from edgepart.runtime import prepare as prepare_module
    from edgepart.runtime.emulate import Mode, cgroup_problem
    from edgepart.runtime.prepare import RunOptions, prepare

    let_workers_import_test_models(monkeypatch)
    data = _skipnet_on([0.5, 0.5])
    inst, plan = load_instance(data), Plan.from_dict(plan_for(data, [4]))
    options = RunOptions(SPEC, emulate=Mode.STRETCH, time_scale=None)
    here = prepare(inst, plan, options)
    assert here.weight_cgroups == (cgroup_problem() == "")
    assert any("normal CPU weight" in w for w in here.warnings) == (not here.weight_cgroups)
    monkeypatch.setattr(prepare_module, "cgroup_problem", lambda: "not root")
    denied = prepare(inst, plan, options)
    assert not denied.weight_cgroups
    assert any("at normal CPU weight (not root)" in w for w in denied.warnings)
    remote = prepare(inst, plan, RunOptions(SPEC, emulate=Mode.STRETCH, time_scale=None,
                                            master=("127.0.0.1", 1)))
    assert any("started by hand (--master)" in w for w in remote.warnings)
