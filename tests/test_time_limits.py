"""``--time-limit S`` bounds the whole call: wall time <= S + 5% + 1 s, with the best plan found
and an honest gap (docs/formulations.md, "Time limits").

The instances are the slowest shipped ones for each path: Inception-v3 on stage slots (no
backend proves it in 2 s; CBC ignores its own limit in preprocessing), and ResNet-50 on 20
devices, whose stage-slot model takes longer than 2 s to build and translate; and a generated
NASNet-A DAG (bench/graphs.py) whose stage-slot model HiGHS spends long steps on that check
neither its clock nor its callbacks, and a larger one whose presolve CP-SAT does not interrupt
(docs/formulations.md, "Time limits"); both solvers then run in a child process killed shortly
after the deadline (edgepart.solvers.stoppable).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from edgepart import SolutionStatus, SolveResult, Termination, load_instance, solve, validate_plan
from edgepart.formulations.model import Deadline
from edgepart.instance import Instance
from edgepart.solvers import stoppable

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 2.0
sys.path.insert(0, str(ROOT / "bench"))
import graphs  # noqa: E402


def allowed(limit: float) -> float:
    return limit * 1.05 + 1.0


@pytest.mark.parametrize("name", ["inception_v3_8nodes", "resnet50_20nodes_wireless"])
@pytest.mark.parametrize("spec", ["cpsat/stages", "highs/stages", "cbc/stages", "auto/auto"])
def test_the_limit_bounds_the_whole_call(name: str, spec: str) -> None:
    inst = load_instance(ROOT / "instances" / f"{name}.json")
    method, _, formulation = spec.partition("/")
    start = time.perf_counter()
    result = solve(inst, method, formulation=formulation, time_limit=LIMIT)
    wall = time.perf_counter() - start
    assert wall <= allowed(LIMIT), f"{spec} took {wall:.2f} s for a {LIMIT} s limit"
    # the warm plan at worst
    assert result.plan is not None and validate_plan(inst, result.plan) == []
    assert result.bound_s <= result.objective_s * (1 + 1e-9)
    if result.status is not SolutionStatus.OPTIMAL:
        assert result.termination is Termination.TIME_LIMIT, result.message


def test_the_command_counts_loading_too(tmp_path: Path) -> None:
    """From the process's start to its end, imports included (about 1 s here), the command
    stays within the limit + 5% + 1 s + the interpreter's own start-up."""
    start = time.perf_counter()
    startup = subprocess.run([sys.executable, "-c", "import edgepart.cli"], check=True)
    imports = time.perf_counter() - start
    assert startup.returncode == 0
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "edgepart.cli", "solve",
                           str(ROOT / "instances" / "inception_v3_8nodes.json"),
                           "--solver", "highs", "--formulation", "stages",
                           "--time-limit", str(LIMIT)], capture_output=True, text=True)
    wall = time.perf_counter() - start
    assert done.returncode == 0, done.stderr
    assert wall <= allowed(LIMIT) + imports, f"{wall:.2f} s (imports {imports:.2f} s)"


NASNET_LIMIT = 12.0


def test_highs_stops_on_a_big_stage_slot_model(leave_out_envelope: Callable[[], None]) -> None:
    """NASNet-A, 196 layers on 8 devices (stage slots: 4,399 variables, 32,075 rows; too many
    ideals for paths or the lattice search). HiGHS spends long steps here that check neither its
    clock nor its callbacks (presolve probing; a root mod-k separation round of 28 s). Before HiGHS
    ran in a child process killed at the deadline, in-process with interrupt callbacks only, this
    took 14.2 s and 12.3 s for a 12 s limit (allowed 13.6 s) and 68.7 s for 60 s (loaded 2-core
    host); the overrun depends on where the deadline falls, so this test caught it once in two.
    (The envelope's bound and witness now start HiGHS so close to the optimum that it proves it
    in about 11.7 s: they are left out, so that HiGHS still runs into the deadline.)"""
    leave_out_envelope()
    g = graphs.nasnet(**graphs.nasnet_cells_for(200))
    inst = load_instance(graphs.instance(g, 8, name="nasnet196_8dev"))
    result = stopped_in_time(inst, "highs", NASNET_LIMIT)
    assert result.status is SolutionStatus.FEASIBLE, result.message


def stopped_in_time(inst: Instance, method: str, limit: float) -> SolveResult:
    """Solve on stage slots: within the allowed wall time, a valid plan, a bound below it, and a
    time-limit stop."""
    start = time.perf_counter()
    result = solve(inst, method, formulation="stages", time_limit=limit)
    wall = time.perf_counter() - start
    assert wall <= allowed(limit), f"{wall:.2f} s for a {limit} s limit"
    assert result.plan is not None and validate_plan(inst, result.plan) == []
    assert result.bound_s <= result.objective_s * (1 + 1e-9)
    assert result.termination is Termination.TIME_LIMIT, result.message
    return result


def test_a_stopped_child_leaves_its_last_solution_and_best_bound() -> None:
    """The shared machinery alone, with a stand-in solver that streams two solutions and three
    bounds (one no better) and then hangs: killed at the deadline + grace, the answer holds the
    second solution and the best bound, 0.7, and no final status."""

    def hang(stream: stoppable.Stream) -> stoppable.Answer:
        stream.solution([1.0, 2.0])
        stream.bound(0.5)
        stream.solution([1.0, 1.5])
        stream.bound(0.7)
        stream.bound(0.4)
        time.sleep(60)
        return stoppable.Answer(0)

    start = time.perf_counter()
    answer = stoppable.run_stoppable(hang, Deadline.after(0.3), "stand-in")
    wall = time.perf_counter() - start
    assert answer.killed and answer.status is None
    assert answer.values == [1.0, 1.5] and answer.bound == 0.7
    assert "stand-in did not stop" in answer.message
    assert wall <= 0.3 + stoppable.KILL_GRACE_S + 1.0, wall


def test_a_long_solution_arrives_whole() -> None:
    """A streamed solution of 300,000 values (about 2.7 MB of JSON, many reads of the pipe)
    arrives as sent; a final answer without a solution keeps it."""
    values = [float(i % 7) + 0.25 for i in range(300_000)]

    def finish(stream: stoppable.Stream) -> stoppable.Answer:
        stream.solution(values)
        return stoppable.Answer(4, None, 2.5)

    answer = stoppable.run_stoppable(finish, Deadline.after(30.0), "stand-in")
    assert not answer.killed and answer.status == 4 and answer.bound == 2.5
    assert answer.values == values


def test_a_failing_child_says_why() -> None:
    def fail(stream: stoppable.Stream) -> stoppable.Answer:
        raise ValueError("no such model")

    answer = stoppable.run_stoppable(fail, Deadline.after(30.0), "stand-in")
    assert not answer.killed and answer.status is None and answer.values is None
    assert "stand-in's process failed: ValueError('no such model')" in answer.message



@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_a_parent_killed_from_outside_leaves_no_solver_running() -> None:
    """A process running a stand-in solver that hangs is killed (as bench/scale.py kills a run
    at its limit): its solver child is killed with it (dead: gone, or a zombie left to init)
    instead of running on."""
    read_end, write_end = os.pipe()
    parent = os.fork()
    if parent == 0:
        os.close(read_end)

        def hang(stream: stoppable.Stream) -> stoppable.Answer:
            os.write(write_end, f"{os.getpid()}\n".encode())
            time.sleep(30)
            return stoppable.Answer(0)

        stoppable.run_stoppable(hang, Deadline.after(60.0), "stand-in")
        os._exit(0)
    os.close(write_end)
    child = int(os.read(read_end, 100))
    os.close(read_end)
    os.kill(parent, signal.SIGKILL)
    os.waitpid(parent, 0)
    time.sleep(0.5)
    state = process_state(child)
    if state not in ("gone", "Z"):
        os.kill(child, signal.SIGKILL)
    assert state in ("gone", "Z"), state


def process_state(pid: int) -> str:
    """``R``, ``S``, ``Z``, ... as Linux says, or ``gone``."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except FileNotFoundError:
        return "gone"
    return next(line.split()[1] for line in lines if line.startswith("State:"))


CPSAT_LIMIT = 14.0


def test_cpsat_stops_in_a_long_presolve(leave_out_envelope: Callable[[], None]) -> None:
    """NASNet-A, 300 layers on 16 devices (stage slots: 14,103 variables, 176,371 rows). CP-SAT's
    presolve has steps that do not look at the clock (TransformClausesToExactlyOne ran 2.9 s
    here, twice, on a 2-core host shared with other jobs, load ~5.5). Before CP-SAT ran in a
    child process killed at the deadline this took 18.1 s for a 14 s limit (allowed 15.7 s;
    CP-SAT was given 5.5 s and returned after 9.2 s, "Stopped after presolve") and 18.2 s for
    15 s; the overrun depends on where the deadline falls in presolve (9-11 s limits on the
    model alone overran 4 times in 4, 6-8 s and 12-13 s not). Now: the warm plan at least,
    valid, with a bound below it. (The envelope bound over the ideals floors this model so
    close to the optimum that CP-SAT then proves it within the limit: it is left out here, so
    that CP-SAT still runs into the deadline.)"""
    leave_out_envelope()
    g = graphs.nasnet(**graphs.nasnet_cells_for(300))
    inst = load_instance(graphs.instance(g, 16, name="nasnet_300_16dev"))
    stopped_in_time(inst, "cpsat", CPSAT_LIMIT)


@pytest.mark.parametrize("method, version", [("highs", "HiGHS"), ("cpsat", "OR-Tools CP-SAT")])
def test_a_killed_solver_keeps_the_warm_plan_and_a_valid_bound(
        monkeypatch: pytest.MonkeyPatch, method: str, version: str) -> None:
    """With a grace far below zero the child is killed before it can answer: the result is the
    warm plan (a valid plan) with a bound no better than the known optimum (instances/tiny/
    dag6_direct: period 3.0, its stored brute-force optimum), a time-limit stop with the reason,
    no traceback."""
    monkeypatch.setattr(stoppable, "KILL_GRACE_S", -1e9)
    inst = load_instance(ROOT / "instances" / "tiny" / "dag6_direct.json")
    result = solve(inst, method, formulation="stages", time_limit=30.0)
    assert result.solver_version.startswith(version), result.solver_version  # it was run
    assert result.plan is not None and validate_plan(inst, result.plan) == []
    assert result.objective_s >= 3.0 * (1 - 1e-9) and result.bound_s <= 3.0 * (1 + 1e-9)
    assert result.termination is Termination.TIME_LIMIT
    assert "its process was stopped" in result.message, result.message


@pytest.mark.parametrize("method, version", [("highs", "HiGHS"), ("cpsat", "OR-Tools CP-SAT")])
def test_a_forked_solver_runs_after_one_in_this_process(method: str, version: str) -> None:
    """A solver that ran in this process (no time limit) left nothing that hangs a forked
    child's run (HiGHS's thread pool would, if the child did not drop it; CP-SAT joins its
    workers before it returns), here after a run of the other solver too: every run proves the
    stored optimum, 3.0."""
    inst = load_instance(ROOT / "instances" / "tiny" / "dag6_direct.json")
    other = solve(inst, "cpsat" if method == "highs" else "highs", formulation="stages")
    here = solve(inst, method, formulation="stages")
    forked = solve(inst, method, formulation="stages", time_limit=60.0)
    assert other.status is SolutionStatus.OPTIMAL, other.message
    for result in (here, forked):
        assert result.solver_version.startswith(version), result.solver_version
        assert result.status is SolutionStatus.OPTIMAL, result.message
        assert result.objective_s == pytest.approx(3.0, rel=1e-7)


@pytest.mark.parametrize("limit", [[], ["--time-limit", "30"]])
def test_cpsat_logs_on_stderr_and_keeps_the_json_readable(limit: list[str]) -> None:
    """``--json --verbose``: stdout is the JSON document alone, CP-SAT's log is on stderr, in
    this process (no limit) and in the child (a limit); the optimum is the stored 3.0."""
    done = subprocess.run([sys.executable, "-m", "edgepart.cli", "solve",
                           str(ROOT / "instances" / "tiny" / "dag6_direct.json"),
                           "--solver", "cpsat", "--formulation", "stages", "--json",
                           "--verbose", *limit], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)  # a log line anywhere on stdout would break this
    assert result["objective_value_s"] == pytest.approx(3.0, rel=1e-7), result
    assert "Starting CP-SAT solver" in done.stderr
