"""Runtime pieces that need no worker process: splitting, emulation set-up, re-planning, checks."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
from test_runtime_support import SHAPE, SPEC, OtherNet, SkipNet, instance_for, plan_for

from edgepart.errors import InputError
from edgepart.instance import load_instance
from edgepart.plan import Plan
from edgepart.runtime.cli import parse_slowdown
from edgepart.runtime.emulate import (
    Cgroups,
    Emulation,
    LinkClock,
    Mode,
    cfs_period_us,
    stage_cpus,
)
from edgepart.runtime.prepare import RunOptions, Slowdown, prepare
from edgepart.runtime.replan import (
    EXACT_METHOD,
    QUICK_METHODS,
    best_single_device,
    exact_plan,
    quick_plan,
    replan,
    slowed,
)
from edgepart.runtime.report import keep_up
from edgepart.runtime.split import build_stage, load_model, payload_bytes, split_plan, trace
from edgepart.runtime.transport import bind_master, parse_address


def _chain(cuts: list[int]) -> tuple[torch.nn.Module, list[torch.fx.GraphModule], list]:
    data = instance_for(SkipNet())
    model = load_model(SPEC, seed=3)
    gm = trace(model, SHAPE).graph_module
    specs = split_plan(gm, load_instance(data), Plan.from_dict(plan_for(data, cuts)))
    return model, [build_stage(gm, s) for s in specs], list(specs)


@pytest.mark.parametrize("cuts", [[4], [3, 5], [1, 2]])
def test_stages_chained_equal_the_model(cuts: list[int]) -> None:
    model, stages, _ = _chain(cuts)
    x = torch.randn(SHAPE)
    values: tuple = (x,)
    for stage in stages[:-1]:
        values = stage(*values)
    torch.testing.assert_close(stages[-1](*values), model(x), rtol=0, atol=0)


def test_skip_tensor_is_relayed_through_every_cut() -> None:
    _, _, specs = _chain([3, 5])  # the relu output is read by conv2 (stage 0) and add (stage 2)
    assert specs[0].outputs == ("relu", "conv2")
    assert specs[1].inputs == ("relu", "conv2") and specs[1].outputs == ("relu", "conv3")
    assert specs[2].final and specs[2].outputs == ()


def test_instance_for_another_model_is_rejected() -> None:
    other = instance_for(OtherNet(), name="other")
    gm = trace(load_model(SPEC), SHAPE).graph_module
    with pytest.raises(InputError, match="another model"):
        split_plan(gm, load_instance(other), Plan.from_dict(plan_for(other, [1])))


def test_weights_load_with_weights_only(tmp_path: Path) -> None:
    trained = SkipNet()
    torch.save(trained.state_dict(), tmp_path / "w.pt")
    loaded = load_model(SPEC, seed=99, weights=tmp_path / "w.pt")
    torch.testing.assert_close(loaded.state_dict(), trained.state_dict())
    torch.save({"fc.weight": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(InputError, match="does not fit"):
        load_model(SPEC, weights=tmp_path / "bad.pt")
    with pytest.raises(InputError, match="no such file"):
        load_model(SPEC, weights=tmp_path / "missing.pt")


def test_payload_bytes_counts_nested_tensors() -> None:
    assert payload_bytes((torch.zeros(2, 3), [torch.zeros(4, dtype=torch.float64)], 7)) == 56


def _fake_v1(root: Path, own: str = "/job") -> Path:
    for controller, files in (("cpu", ("cpu.cfs_quota_us", "cpu.cfs_period_us")),
                              ("memory", ("memory.limit_in_bytes",))):
        base = root / controller / own.lstrip("/")
        base.mkdir(parents=True)
        for name in files:
            (root / controller / name).write_text("-1\n")
    proc = root / "self_cgroup"
    proc.write_text(f"4:memory:{own}\n1:cpu:{own}\n0::/\n")
    return proc


def test_cgroups_v1_limits_and_cleanup(tmp_path: Path) -> None:
    proc = _fake_v1(tmp_path)
    orphan = tmp_path / "cpu" / "job" / "edgepart-999999999" / "w1"  # a driver killed earlier
    orphan.mkdir(parents=True)
    groups = Cgroups(tmp_path, proc)
    assert not orphan.parent.exists()
    dirs = [Path(d) for d in groups.create("w1", cpus=0.4, memory_bytes=512e6)]
    assert groups.version == 1
    period = cfs_period_us(1.0)  # the target period (CFS_PERIOD_US, 5 ms, unless overridden)
    assert (dirs[0] / "cpu.cfs_quota_us").read_text() == str(round(0.4 * period))
    assert (dirs[0] / "cpu.cfs_period_us").read_text() == str(period)
    # 0.05 CPU is under the kernel's 1 ms minimum quota at any period up to 20 ms: the period
    # grows to 1 ms / 0.05 = 20 ms
    groups.set_cpus("w1", 0.05)
    assert (dirs[0] / "cpu.cfs_quota_us").read_text() == "1000"
    assert (dirs[0] / "cpu.cfs_period_us").read_text() == "20000"
    assert (dirs[1] / "memory.limit_in_bytes").read_text() == "512000000"
    for d in dirs:  # a real cgroup directory holds only kernel files; these fakes must go first
        for f in d.iterdir():
            f.unlink()
    groups.close(wait_s=0)
    assert not any(p.name.startswith("edgepart-") for p in tmp_path.rglob("*"))


def test_cgroups_v2_limits(tmp_path: Path) -> None:
    (tmp_path / "job").mkdir()
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    proc = tmp_path / "self_cgroup"
    proc.write_text("0::/job\n")
    groups = Cgroups(tmp_path, proc)
    (path,) = groups.create("w2", cpus=1.0, memory_bytes=1e9)
    assert groups.version == 2
    period = cfs_period_us(1.0)
    assert Path(path, "cpu.max").read_text() == f"{period} {period}"  # 1 CPU: quota = period
    assert Path(path, "memory.max").read_text() == "1000000000"
    assert (tmp_path / "job" / "cgroup.subtree_control").read_text() == "+cpu +memory"


def test_cgroups_without_controllers_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="use --emulate pad"):
        Cgroups(tmp_path, tmp_path / "none")


def test_stage_cpus_from_speed_or_meta() -> None:
    data = instance_for(SkipNet(), devices=2, layer_time_s=0.01)
    data["devices"][1]["meta"] = {"cpus": 0.4}
    plan = Plan.from_dict(plan_for(data, [4]))  # stage 0: 4 layers, 0.04 s predicted
    cpus = stage_cpus(load_instance(data), plan, [0.02, 0.001], time_scale=2.0)
    assert cpus == pytest.approx({"d0": 0.25, "d1": 0.2})


def test_link_wait_and_clock() -> None:
    link = load_instance(instance_for(SkipNet(), bandwidth=1e6, latency=0.01)).link(0, 1)
    assert Emulation(Mode.NONE).link_wait(link, 1000) == 0
    assert Emulation(Mode.PAD, 2.0).link_wait(link, 1000) == pytest.approx(0.022)
    clock = LinkClock()
    for _ in range(30):
        clock.sent(0.02, 0.005)  # the transport took 5 ms of each 20 ms message
    assert clock.hold(0.002) == 0.0  # it alone takes longer than this link
    clock.sent(0.0, 1.0)  # no emulated link: nothing learned
    assert clock.transport_s == pytest.approx(0.005, rel=0.01)


def test_slowed_device_keeps_others() -> None:
    inst = load_instance(instance_for(SkipNet(), layer_time_s=0.001))
    slow = slowed(inst, "d1", 3.0)
    assert slow.times[0][1] == pytest.approx(0.003)
    assert slow.times[0][0] == pytest.approx(0.001) and slow.times[0][2] == pytest.approx(0.001)


def test_replan_on_the_devices_left() -> None:
    inst = load_instance(instance_for(SkipNet())).without_devices({"d1"})
    plan = replan(inst, time_limit_s=5)
    assert {st.device for st in plan.stages} <= {"d0", "d2"}
    assert best_single_device(inst)[0] in {"d0", "d2"}


def test_quick_and_exact_replans_on_the_devices_left() -> None:
    """9 layers of 1 ms on d0 and d2 (test_recovery's docstring): greedy keeps them on one
    device (9 ms); the exact method proves two stages of 4 and 5 layers (5 ms) optimal."""
    inst = load_instance(instance_for(SkipNet())).without_devices({"d1"})
    quick, _ = quick_plan(inst)
    exact = exact_plan(inst, time_limit_s=5)
    assert quick.method == QUICK_METHODS[0] and quick.objective_s == pytest.approx(0.009)
    assert exact.method == EXACT_METHOD and exact.status.value == "optimal"
    assert exact.objective_s == pytest.approx(0.005) == exact.bound_s


def test_bad_options_fail_before_any_process() -> None:
    data = instance_for(SkipNet())
    inst, plan = load_instance(data), Plan.from_dict(plan_for(data, [3, 5]))
    for options, message in [
        (RunOptions(SPEC, fail_stage=3, fail_after=1), "--fail-stage"),
        (RunOptions(SPEC, fail_stage=1), "go together"),
        (RunOptions(SPEC, slowdowns=(Slowdown("ghost", 2, 1),)), "unknown device"),
        (RunOptions(SPEC, emulate=Mode.CGROUP, master=("127.0.0.1", 1)), "--master"),
        (RunOptions(SPEC, requests=0), "--requests"),
        (RunOptions(SPEC, fail_hang=True), "--fail-hang"),
        (RunOptions(SPEC, heartbeat_timeout_s=0), "--heartbeat-timeout"),
    ]:
        with pytest.raises(InputError, match=message):
            prepare(inst, plan, options)


def test_host_that_cannot_keep_up_names_a_time_scale() -> None:
    data = instance_for(SkipNet(), layer_time_s=1e-7)  # devices far faster than this host
    inst, plan = load_instance(data), Plan.from_dict(plan_for(data, [3, 5]))
    with pytest.raises(InputError, match=r"cannot keep up.*--time-scale \d"):
        prepare(inst, plan, RunOptions(SPEC, emulate=Mode.PAD, time_scale=1.0))
    auto = prepare(inst, plan, RunOptions(SPEC, emulate=Mode.PAD, time_scale=None))
    assert auto.emulation.time_scale > 10


def test_arguments() -> None:
    assert parse_slowdown("pi-3:2.5@40") == ("pi-3", 2.5, 40)
    assert parse_address("10.0.0.2:29500") == ("10.0.0.2", 29500)
    for bad in ("pi-3:x@1", "2@3", "pi:2"):
        with pytest.raises(InputError, match="--slowdown"):
            parse_slowdown(bad)
    with pytest.raises(InputError, match="--master"):
        parse_address("nohost")


def test_master_must_be_an_address_of_this_machine() -> None:
    for host in ("0.0.0.0", "192.0.2.1"):  # every interface; a documentation-only address
        with pytest.raises(InputError, match="refused"):
            bind_master(host, 0)


def test_port_in_use_is_an_input_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(InputError, match="port in use"):
            bind_master("127.0.0.1", taken.getsockname()[1])


def test_disconnect_warnings_are_dropped_and_other_lines_kept() -> None:
    """Written to file descriptor 2 as TensorPipe's C++ threads write them: only the broken-
    connection and the shutting-down warnings go; a line of any other form, and an unfinished
    last line, stay."""
    import subprocess
    import sys

    code = (
        "import os, sys\n"
        "from edgepart.runtime.transport import disconnects_unlogged\n"
        "with disconnects_unlogged():\n"
        "    os.write(2, b'[W1130 10:17:46.980950697 tensorpipe_agent.cpp:941] RPC agent for w0'"
        " b' encountered error when reading incoming response from w1: eof (x.cc:259)\\n')\n"
        "    os.write(2, b\"[W1130 11:17:21.1 tensorpipe_agent.cpp:620] RPC agent for w0 won't\"\n"
        "             b\" send response to request #14 to w3, as the agent is shutting down\\n\")\n"
        "    print('edgepart run: warning: kept', file=sys.stderr)\n"
        "    os.write(2, b'[W1130 other.cpp:1] kept too\\nunfinished')\n"
        "print(' after', file=sys.stderr)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=60)
    assert result.stderr == ("edgepart run: warning: kept\n[W1130 other.cpp:1] kept too\n"
                             "unfinished after\n")


def _row(stage: int, real_ms: float, emulated_ms: float, predicted_ms: float,
         mode: str | None = None) -> dict[str, object]:
    """A report's stage row, as much of it as the keep-up check reads."""
    row: dict[str, object] = {"stage": stage, "device": f"d{stage}", "late_share": 0.0,
                              "real_compute_s": real_ms / 1e3, "compute_s": emulated_ms / 1e3,
                              "predicted_compute_s": predicted_ms / 1e3}
    if mode is not None:
        row["mode"] = mode
    return row


def test_a_starved_stretch_stage_is_reported_with_a_time_scale() -> None:
    # stage 0: real 4 of 10 ms emulated (0.4: the stretch bound, a free core); stage 1: real
    # 9.8 of 10 ms (0.98 >= 0.95: the wall time set its speed, starved); stage 2: a split
    # stage at 1.0, not checked (its lead's real time holds the helpers' stretched slices);
    # stage 3: nothing predicted. Stage 1's suggestion: real / predicted = 9.8 / 8 = 1.225,
    # time scale 2 x 1.225 x 1.2 = 2.94, rounded up to tenths: 3.0
    rows = [_row(0, 4.0, 10.0, 10.0), _row(1, 9.8, 10.0, 8.0), _row(2, 10.0, 10.0, 10.0, "split"),
            _row(3, 1.0, 1.0, 0.0)]
    late = keep_up(Emulation(Mode.STRETCH, 2.0), rows)
    assert list(late.values()) == [3.0]
    (text,) = late
    assert text.startswith("host cannot keep up: stage 1 on 'd1' was starved")
    assert "98% of its emulated 10.0 ms" in text and text.endswith("--time-scale 3")
    # the same rows under a quota: stage 1 computes 1.225x its prediction, within 1.25
    assert keep_up(Emulation(Mode.CGROUP, 2.0), rows) == {}


def test_each_replica_is_checked_against_its_own_prediction() -> None:
    """A replicated stage of a fast replica (182 ms predicted) and a slow one (660 ms): under
    pad, the fast one overran its own padding on every request. Checked against the stage's
    slowest replica (660 ms), as the report once did, it looked fine. Suggested scale: real /
    predicted = 600 / 182 = 3.30, x 4 x 1.2 = 15.8, rounded up to tenths: 15.9."""
    fast = {**_row(1, 600.0, 600.0, 182.0), "device": "jetson", "late_share": 1.0}
    slow = {**_row(1, 300.0, 660.0, 660.0), "device": "pi"}
    stage = {**fast, "mode": "replicate", "replicas": [fast, slow]}
    late = keep_up(Emulation(Mode.PAD, 4.0), [stage])
    (text,) = late
    assert text.startswith("host cannot keep up: stage 1 on 'jetson'")
    assert late[text] == pytest.approx(15.9)
