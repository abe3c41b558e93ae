"""Warm starts that the solvers accept: the hint of each exact formulation is complete and is a
solution of its model, for a plan right at the model's caps. No solver is involved.

For a valid plan, the stage-slot model (``formulations/pipeline.py``) is built as the driver
builds it (``solvers/exact.py``): capped at the plan's own objective (``upper_bound``), and, when
drawn, with the limit on the other objective set to the plan's own value (``max_latency`` = its
latency when minimising the period, ``max_period`` = its period when minimising the latency), so
that the plan sits at every cap at once. Its hint must

* give every variable a value (Booleans and numbers: times, transfers, period, latency), so that
  no solver has to complete it;
* satisfy every bound and every row of the :class:`LinearModel`, enforced rows included, in real
  arithmetic within 1e-9 of the row's size (:meth:`LinearModel.violations`; a float sum of a few
  hundred terms errs by about 1e-13 of it, and each backend's own feasibility tolerance is far
  looser than 1e-9);
* be the plan: decode to a plan of the same cost, with ``P`` and ``L`` the cost model's period
  and latency (so the model costs the plan exactly as ``edgepart.cost`` does);
* map into the integer model as ``formulations/model.py`` says (Booleans kept, every number
  rounded *down* to a whole unit; real coefficients and constants rounded up, the others to the
  nearest integer) and satisfy every integer row and bound there, at CP-SAT's time unit
  (``cap / TIME_STEPS``) and at a coarse one (``cap / 1000``). This is the claim that the integer
  model is a relaxation, checked on plans at the cap. (Rounding the numbers to the *nearest*
  unit instead breaks rows such as ``P >= in + C + out``, where the parts round up and the
  total down: 5 of 66 random relay instances without overlap, at CP-SAT's unit.)

Plans: brute force's optimum, and the same plan with its interchangeable devices relabelled in
reverse index order, which the symmetry rows forbid and a heuristic's plan may well be (the
local search's plan on the 994-layer NASNet over 32 devices used d2 before d1: HiGHS found the
completion of that hint infeasible). The path model (``formulations/paths.py``) is checked the
same way where it applies (relay transfers or chains), as the driver builds it for the latency
objective, and for the period at a user limit equal to the plan's own period.

Instances: ``strategies.small_instances`` (per-class times, several entries and exits, pinned
layers, memory limits, relay and direct transfers, overlap on and off, source and sink on and
off, colocation), both objectives, limits on and off; shipped instances with a heuristic's plan.
Hypothesis runs derandomized, so CI tries the same examples every time. Measured on the shared
2-core machine (other jobs running): the whole file about 20 s.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st
from strategies import random_instance, small_instances

from edgepart import Plan, SolutionStatus, evaluate, load_instance, solve, validate_plan
from edgepart.cost import Metrics
from edgepart.formulations.model import Dim, LinearModel, Rounding
from edgepart.formulations.paths import Inapplicable, PathFormulation
from edgepart.formulations.pipeline import PipelineFormulation
from edgepart.instance import Instance, Transfer
from edgepart.plan import Stage
from edgepart.solvers.cpsat import TIME_STEPS

ROOT = Path(__file__).resolve().parents[1]
REL = 1e-9
PROPERTY = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def reversed_classes(form: PipelineFormulation, plan: Plan) -> Plan:
    """``plan`` with each set of interchangeable devices (chained by the model's symmetry pairs)
    relabelled in reverse index order: d_i -> d_(m-1-i) within a set of m."""
    sets: list[list[int]] = []
    for d1, d2 in form.symmetric:
        if sets and sets[-1][-1] == d1:
            sets[-1].append(d2)
        else:
            sets.append([d1, d2])
    swap = {d: s[len(s) - 1 - k] for s in sets for k, d in enumerate(s)}
    ids = [dev.id for dev in form.inst.devices]
    index = form.inst.device_index
    return Plan(tuple(Stage(ids[swap.get(index[st.device], index[st.device])], st.layers)
                      for st in plan.stages), plan.instance, plan.method)


def check_stage_hint(inst: Instance, plan: Plan, objective: str,
                     limits: dict[str, float | None]) -> PipelineFormulation:
    """The stage-slot model at ``plan``'s caps; its hint is complete, a solution, and the plan."""
    metrics = evaluate(inst, plan)
    form = PipelineFormulation(inst, objective, limits.get("max_latency"),
                               limits.get("max_period"),
                               upper_bound=metrics.objective(objective))
    hint = form.hint(plan)
    model = form.model
    assert sorted(hint) == list(range(len(model.vars))), "the hint leaves variables out"
    assert model.violations(hint, REL) == []
    assert model.set_hint(hint) == ""
    check_is_the_plan(inst, form.decode([hint[i] for i in range(len(model.vars))]), metrics)
    assert hint[form.P] == pytest.approx(metrics.bottleneck_s, rel=REL)
    if form.L >= 0:
        assert hint[form.L] == pytest.approx(metrics.latency_s, rel=REL)
    for steps in (TIME_STEPS, 1000):
        assert integer_violations(model, hint, steps) == []
    return form


def integer_violations(model: LinearModel, values: dict[int, float], steps: int) -> list[int]:
    """Rows (and, as -1 - i, variable bounds) that ``values`` break in the integer model with
    time unit ``max_coef(TIME) / steps`` and whole bytes, numbers mapped down to whole units."""
    unit = {Dim.TIME: model.max_coef(Dim.TIME) / steps, Dim.BYTES: 1.0, Dim.COUNT: 1.0}
    scale = [1.0 if var.boolean else unit[var.dim] for var in model.vars]
    ints = [round(values[i]) if var.boolean else math.floor(values[i] / scale[i])
            for i, var in enumerate(model.vars)]
    out = [-1 - i for i, var in enumerate(model.vars) if ints[i] > math.ceil(var.ub / scale[i])]
    for k, con in enumerate(model.constraints):
        if all(ints[lit] == 1 for lit in con.enforce):
            rnd = math.ceil if con.rounding is Rounding.RELAX else round
            coefs: dict[int, float] = {}
            for c, i in con.terms:
                coefs[i] = coefs.get(i, 0.0) + c * scale[i] / unit[con.dim]
            if sum(rnd(c) * ints[i] for i, c in coefs.items()) + rnd(con.const / unit[con.dim]) < 0:
                out.append(k)
    return out


def check_path_hint(inst: Instance, plan: Plan, objective: str,
                    limits: dict[str, float | None]) -> bool:
    """The path model for ``plan`` at its caps (see the module docstring); ``False`` where the
    formulation does not apply."""
    metrics = evaluate(inst, plan)
    try:
        form = PathFormulation(inst, objective, limits.get("max_latency"),
                               upper_bound=metrics.objective(objective))
    except Inapplicable:
        return False
    limit = limits.get("max_period") if objective == "latency" else metrics.bottleneck_s
    pm = form.model(limit, user_limit=True)
    assert pm is not None, "the model cuts the plan off"
    hint = form.hint(pm, plan)
    assert sorted(hint) == list(range(len(pm.model.vars))), "the hint leaves variables out"
    assert pm.model.violations(hint, REL) == []
    assert pm.model.set_hint(hint) == ""
    check_is_the_plan(inst, form.decode(pm, [hint[i] for i in range(len(pm.model.vars))]),
                      metrics)
    if objective == "latency":
        assert hint[pm.model.objective] == pytest.approx(metrics.latency_s, rel=REL)
    for steps in (TIME_STEPS, 1000):
        assert integer_violations(pm.model, hint, steps) == []
    return True


def check_is_the_plan(inst: Instance, decoded: Plan | None, metrics: Metrics) -> None:
    assert decoded is not None and validate_plan(inst, decoded) == []
    again = evaluate(inst, decoded)
    assert again.bottleneck_s == pytest.approx(metrics.bottleneck_s, rel=REL)
    assert again.latency_s == pytest.approx(metrics.latency_s, rel=REL)


def limits_at(metrics: Metrics, objective: str, on: bool) -> dict[str, float | None]:
    """The limit on the other objective, at the plan's own value (``on``) or none."""
    if not on:
        return {}
    if objective == "latency":
        return {"max_period": metrics.bottleneck_s}
    return {"max_latency": metrics.latency_s}


@PROPERTY
@given(kw=small_instances(), objective=st.sampled_from(["bottleneck", "latency"]),
       limited=st.booleans())
def test_hints_are_complete_solutions_at_the_cap(kw: dict[str, Any], objective: str,
                                                 limited: bool) -> None:
    inst = load_instance(random_instance(**kw))
    ref = solve(inst, "brute", objective=objective)
    assume(ref.status is SolutionStatus.OPTIMAL)
    assert ref.plan is not None and ref.metrics is not None
    limits = limits_at(ref.metrics, objective, limited)
    form = check_stage_hint(inst, ref.plan, objective, limits)
    relabelled = reversed_classes(form, ref.plan)
    assert evaluate(inst, relabelled).objective(objective) == pytest.approx(
        ref.objective_s, rel=REL)  # interchangeable devices are interchangeable
    check_stage_hint(inst, relabelled, objective, limits)
    applies = inst.cost_model.transfer is Transfer.RELAY or inst.model.is_chain
    assert check_path_hint(inst, ref.plan, objective, limits) == applies


def test_symmetry_rows_reject_the_raw_plan_the_hint_relabels() -> None:
    """Four identical devices on uniform links (d0..d3 interchangeable), two stages on d3 then
    d1: the symmetry rows admit d0 then d1 only, so the hint must relabel (by hand: d3 -> d0,
    d1 -> d1), and the plan as given breaks exactly the rows of the pairs it disorders."""
    data = random_instance(7, n=4, nd=4, shape="chain", ends=False, uniform_links=True,
                           classes=2)
    for dev in data["devices"]:
        dev.update({"class": "a", "flops_per_s": 1e7, "memory_bytes": 1e12})
    inst = load_instance(data)
    plan = Plan((Stage("d3", ("l0", "l1")), Stage("d1", ("l2", "l3"))), inst.name)
    form = check_stage_hint(inst, plan, "bottleneck", {})
    assert form.symmetric == [(0, 1), (1, 2), (2, 3)]
    assert form.canonical_devices([3, 1]) == [0, 1]
    raw = form.hint(plan)
    form.canonical_devices = lambda devs: devs  # type: ignore[method-assign]
    broken = form.model.violations(form.hint(plan), REL)
    # used(d0) >= used(d1) and used(d2) >= used(d3): rows whose first term is y[0,d0], y[0,d2]
    assert [why.split("(")[1].split(")")[0] for why in broken] == [
        "first term y[0,0]", "first term y[0,2]"]
    assert raw[form.y[0][0]] == raw[form.y[1][1]] == 1.0


@pytest.mark.parametrize("name, objective", [
    ("inception_v3_8nodes", "bottleneck"), ("resnet50_8nodes", "latency"),
    ("vgg16_4nodes_tight", "bottleneck"), ("tiny/dag6_direct", "latency"),
    ("tiny/latency_above_horizon", "latency"), ("tiny/skip3_relay_sum", "bottleneck"),
])
def test_shipped_instances_from_a_heuristic_plan(name: str, objective: str) -> None:
    inst = load_instance(ROOT / "instances" / f"{name}.json")
    plan = solve(inst, "local", objective=objective, time_limit=3).plan
    assert plan is not None
    metrics = evaluate(inst, plan)
    form = check_stage_hint(inst, plan, objective, limits_at(metrics, objective, True))
    check_stage_hint(inst, reversed_classes(form, plan), objective, {})
    check_path_hint(inst, plan, objective, {})


def test_nasnet_on_many_interchangeable_devices() -> None:
    """A NASNet of about 100 layers on 16 devices of four classes (bench/graphs.py): many sets of
    interchangeable devices, a heuristic plan of many stages, and its reverse relabelling."""
    sys.path.insert(0, str(ROOT / "bench"))
    import graphs

    inst = load_instance(graphs.instance(graphs.nasnet(**graphs.nasnet_cells_for(100)), 16))
    plan = solve(inst, "local", time_limit=3).plan
    assert plan is not None and len(plan.stages) > 2
    form = check_stage_hint(inst, plan, "bottleneck", {})
    assert len(form.symmetric) > 6
    check_stage_hint(inst, reversed_classes(form, plan), "bottleneck", {})
