"""Counter-examples (``tests/cases/``): every exact backend, on every formulation, for both
objectives, must reach the stored optimum of each instance on which some method once went wrong
(see ``tests/cases/README.md``). Brute force recomputes the optimum where it can enumerate the
instance, so a wrong stored answer cannot hide a wrong solver."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_exact import SPECS, disagreement

from edgepart import SolutionStatus, Termination, load_instance, solve

CASES = Path(__file__).resolve().parent / "cases"
NAMES = sorted(p.name.removesuffix(".json") for p in CASES.glob("*.json")
               if not p.name.endswith(".optimum.json"))


def expected(name: str, objective: str) -> float | str:
    value = json.loads((CASES / f"{name}.optimum.json").read_text())[objective]
    return value if value == "infeasible" else float(value)


def test_every_case_is_documented() -> None:
    readme = (CASES / "README.md").read_text()
    assert NAMES and all(f"| {name}.json |" in readme for name in NAMES)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("objective", ["bottleneck", "latency"])
def test_stored_optimum_is_the_brute_force_optimum(name: str, objective: str) -> None:
    ref = solve(load_instance(CASES / f"{name}.json"), "brute", objective=objective)
    if ref.termination is Termination.UNSUPPORTED:
        pytest.skip(ref.message)  # too many plans for brute force: the stored value stands
    want = expected(name, objective)
    if want == "infeasible":
        assert ref.status is SolutionStatus.INFEASIBLE
    else:
        assert ref.status is SolutionStatus.OPTIMAL
        assert ref.objective_s == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("objective", ["bottleneck", "latency"])
def test_every_exact_backend_reaches_the_stored_optimum(spec: str, name: str,
                                                       objective: str) -> None:
    inst = load_instance(CASES / f"{name}.json")
    problems = disagreement(inst, spec, expected(name, objective), objective=objective)
    assert not problems, "\n".join(problems)
