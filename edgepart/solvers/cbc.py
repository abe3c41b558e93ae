"""CBC backend: the neutral model through PuLP, solved by the CBC binary that PuLP ships.

PuLP does not return CBC's bound, so it is read from CBC's own log ("Lower bound:" after a stop,
or the objective less the relative gap tolerance ``1e-7`` after "Optimal solution found").
No MIP start is passed: CBC 2.10 ignores the time limit while it tries to complete one (seen:
148 s for a 20 s limit on Inception-v3); the warm plan still caps the period in the model and is
returned if CBC finds nothing better.
"""

from __future__ import annotations

import math
import re
import tempfile
from pathlib import Path

import pulp

from edgepart.formulations.model import LinearModel
from edgepart.instance import Instance
from edgepart.results import SolveResult, Termination
from edgepart.solvers.base import SolveOptions, register
from edgepart.solvers.exact import BackendResult, solve_exact
from edgepart.solvers.milp import solver_output, to_pulp

__all__ = ["run_cbc", "solve_cbc"]

GAP_REL = 1e-7
PROVEN_INFEASIBLE = r"^Problem is infeasible|^Pre-processing says infeasible"
"""CBC's log lines for a model proven infeasible (every variable here is bounded, so its
"infeasible or unbounded" after preprocessing means infeasible)."""


def run_cbc(model: LinearModel, options: SolveOptions) -> BackendResult:
    pm = to_pulp(model)
    with tempfile.TemporaryDirectory(prefix="edgepart-cbc-") as tmp:
        log_path = Path(tmp) / "cbc.log"
        solver = pulp.PULP_CBC_CMD(msg=options.verbose, timeLimit=options.time_limit,
                                   threads=options.threads, gapRel=GAP_REL,
                                   logPath=str(log_path),
                                   options=[f"randomSeed {options.seed + 1}"])
        with solver_output(options.verbose):
            pm.problem.solve(solver)
        log = log_path.read_text() if log_path.exists() else ""
    unit = pm.scale[model.objective]
    has = pm.problem.sol_status in (pulp.LpSolutionOptimal, pulp.LpSolutionIntegerFeasible)
    termination, bound = _read_log(log)
    return BackendResult(values=pm.values() if has else None, termination=termination,
                         bound_s=bound * unit, version=f"CBC via PuLP {pulp.__version__}",
                         message="" if termination is not Termination.ERROR else log[-200:])


def _read_log(log: str) -> tuple[Termination, float]:
    """CBC's termination and proven bound (in model units) from its log."""
    result = re.search(r"^Result - (.*)$", log, re.M)
    objective = re.search(r"^Objective value:\s+(\S+)", log, re.M)
    lower = re.search(r"^Lower bound:\s+(\S+)", log, re.M)
    text = result.group(1) if result else ""
    if "infeasible" in text.lower() or re.search(PROVEN_INFEASIBLE, log, re.M):
        return Termination.INFEASIBLE, math.inf
    if lower:
        bound = float(lower.group(1))
    elif "Optimal" in text and objective:
        value = float(objective.group(1))
        bound = value - GAP_REL * abs(value)
    else:
        bound = -math.inf
    if "Optimal" in text:
        return Termination.OPTIMAL, bound
    if "time" in text.lower():
        return Termination.TIME_LIMIT, bound
    return Termination.ERROR, bound


@register("cbc")
def solve_cbc(inst: Instance, options: SolveOptions) -> SolveResult:
    return solve_exact(inst, options, "cbc", run_cbc, prefer="paths")
