"""edgepart: split a DNN into pipeline stages over heterogeneous edge devices, exactly.

Public API::

    inst = load_instance("instances/resnet50_8nodes.json")
    result = solve(inst, "auto", time_limit=60)
    print(result.status, result.objective_s, result.bound_s, result.gap)
    metrics = evaluate(inst, result.plan)
    front = pareto(inst, "cpsat")      # every (period, latency) trade-off, least latency first
    run_sweep(load_spec("sweep.json"), "runs.parquet", jobs=2)   # edgepart.sweep
"""

from __future__ import annotations

__version__ = "0.1.0"  # first: modules below (suite manifests) record it

from edgepart.compare import compare
from edgepart.cost import Metrics, evaluate, lower_bound, validate_plan
from edgepart.errors import InputError
from edgepart.instance import Device, Instance, Layer, LayerGraph, Link, load_instance
from edgepart.pareto import pareto
from edgepart.plan import Plan, Stage, load_plan
from edgepart.results import SolutionStatus, SolveResult, Termination
from edgepart.solvers.base import METHODS, Objective, SolveOptions, get_method, solve
from edgepart.sweep import run_sweep

__all__ = [
    "METHODS", "Device", "InputError", "Instance", "Layer", "LayerGraph", "Link", "Metrics",
    "Objective", "Plan", "SolutionStatus", "SolveOptions", "SolveResult", "Stage", "Termination",
    "compare", "evaluate", "get_method", "load_instance", "load_plan", "lower_bound", "pareto",
    "run_sweep", "solve", "validate_plan",
]
