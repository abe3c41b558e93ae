"""Re-planning while serving: solve again on the devices left, or with a device's new speed.

After a failure the driver must serve again at once and serve well soon after, so it plans twice
on the devices left (:meth:`Instance.without_devices`):

1. :func:`quick_plan`: the first of :data:`QUICK_METHODS` that finds a plan (``greedy`` takes a
   few milliseconds on ResNet-50 x 7 devices; ``local`` and ``brute`` only where it finds none).
   This plan is deployed at once.
2. :func:`exact_plan`: the project's default exact method (``auto``) under a time limit, run in
   the background while the quick plan serves; the driver switches to its plan when it is better
   than the quick one (it is proven optimal when ``status`` says so).

:func:`replan` is both in one call, exact first (adaptation, which drains the pipeline before it
switches anyway, uses it). Adaptation (AMP4EC) calls :func:`slowed` to make a device ``factor``
times slower in the instance before re-planning.
"""

from __future__ import annotations

import math
from typing import Any

from edgepart.cost import evaluate, validate_plan
from edgepart.errors import InputError
from edgepart.instance import Instance, load_instance
from edgepart.plan import Plan, Stage
from edgepart.results import SolveResult
from edgepart.solvers.base import solve

__all__ = ["EXACT_METHOD", "QUICK_METHODS", "NoPlanError", "best_single_device", "exact_plan",
           "quick_plan", "replan", "slowed", "warm_up_solvers"]

EXACT_METHOD = "auto"
QUICK_METHODS = ("greedy", "local", "brute")


class NoPlanError(RuntimeError):
    """No method found a plan for the devices left."""


def quick_plan(inst: Instance, time_limit_s: float = 10.0) -> tuple[SolveResult, Plan]:
    """The result of the first method in :data:`QUICK_METHODS` that finds a plan, and the plan."""
    return _first_plan(inst, QUICK_METHODS, time_limit_s)


def exact_plan(inst: Instance, time_limit_s: float = 10.0) -> SolveResult:
    """:data:`EXACT_METHOD` on ``inst`` under ``time_limit_s`` (the result may hold no plan)."""
    return solve(inst, EXACT_METHOD, time_limit=time_limit_s)


def replan(inst: Instance, time_limit_s: float = 10.0) -> Plan:
    """A plan for ``inst``: the exact method's, else the first quick method's that finds one."""
    return _first_plan(inst, (EXACT_METHOD, *QUICK_METHODS), time_limit_s)[1]


def _first_plan(inst: Instance, methods: tuple[str, ...],
                time_limit_s: float) -> tuple[SolveResult, Plan]:
    """The first result with a plan, and that plan; raises :class:`NoPlanError` if none."""
    reasons = []
    for method in methods:
        try:
            result = solve(inst, method, time_limit=time_limit_s)
        except InputError as err:  # method not registered (yet) in this build, or refused
            reasons.append(f"{method}: {err}")
            continue
        if result.plan is not None:
            return result, result.plan
        reasons.append(f"{method}: {result.message or result.termination.value}")
    raise NoPlanError(f"no plan on devices {', '.join(d.id for d in inst.devices)} ("
                      + "; ".join(reasons) + ")")


def warm_up_solvers() -> None:
    """Re-plan a one-layer, one-device instance with every method a re-plan may use, so that a
    later re-plan pays no import time."""
    inst = load_instance({
        "format_version": 1, "name": "warm-up",
        "model": {"name": "one", "input_bytes": 1,
                  "layers": [{"id": "a", "op": "x", "flops": 1, "param_bytes": 0,
                              "output_bytes": 1}], "edges": []},
        "devices": [{"id": "d", "class": "c", "memory_bytes": 1, "flops_per_s": 1}],
        "links": {"default": {"bandwidth_bytes_per_s": 1, "latency_s": 0}}})
    replan(inst)
    quick_plan(inst)


def slowed(inst: Instance, device: str, factor: float) -> Instance:
    """``inst`` with every layer time on ``device`` multiplied by ``factor`` (the device gets a
    class of its own, ``CLASS~DEVICE``, so other devices of its class keep their speed)."""
    data: dict[str, Any] = inst.to_dict()
    dev = next(d for d in data["devices"] if d["id"] == device)
    old, new = dev["class"], f"{dev['class']}~{device}"
    dev["class"] = new
    if dev.get("flops_per_s"):
        dev["flops_per_s"] = dev["flops_per_s"] / factor
    for layer in data["model"]["layers"]:
        times = layer.get("time_s", {})
        if old in times:
            times[new] = times[old] * factor
        if layer.get("device_classes") is not None and old in layer["device_classes"]:
            layer["device_classes"] = [*layer["device_classes"], new]
    return load_instance(data)


def best_single_device(inst: Instance) -> tuple[str | None, float]:
    """The device that runs the whole model alone fastest, and its period (``inf``: none can)."""
    best: tuple[str | None, float] = (None, math.inf)
    layers = tuple(layer.id for layer in inst.model.layers)
    for dev in inst.devices:
        plan = Plan((Stage(dev.id, layers),), inst.name, "single")
        if not validate_plan(inst, plan):
            period = evaluate(inst, plan).bottleneck_s
            if period < best[1]:
                best = (dev.id, period)
    return best
