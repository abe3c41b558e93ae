"""Re-planning while serving: solve again on the devices left, or with a device's new speed.

After a failure the driver drops the device (:meth:`Instance.without_devices`) and calls
:func:`replan`: a time-limited exact solve (CP-SAT) first, then whichever heuristic is
registered, then brute force (which refuses all but tiny instances). Adaptation (AMP4EC) calls
:func:`slowed` to make a device ``factor`` times slower in the instance before re-planning.
"""

from __future__ import annotations

import math
from typing import Any

from edgepart.cost import evaluate, validate_plan
from edgepart.errors import InputError
from edgepart.instance import Instance, load_instance
from edgepart.plan import Plan, Stage
from edgepart.solvers.base import solve

__all__ = ["FALLBACK_METHODS", "NoPlanError", "best_single_device", "replan", "slowed",
           "warm_up_solvers"]

FALLBACK_METHODS = ("cpsat", "local", "dp", "greedy", "brute")


class NoPlanError(RuntimeError):
    """No method found a plan for the devices left."""


def replan(inst: Instance, time_limit_s: float = 10.0) -> Plan:
    """A plan for ``inst`` from the first method in :data:`FALLBACK_METHODS` that finds one."""
    reasons = []
    for method in FALLBACK_METHODS:
        try:
            result = solve(inst, method, time_limit=time_limit_s)
        except InputError as err:  # method not registered (yet) in this build
            reasons.append(f"{method}: {err}")
            continue
        if result.plan is not None:
            return result.plan
        reasons.append(f"{method}: {result.message or result.termination.value}")
    raise NoPlanError(f"no plan on devices {', '.join(d.id for d in inst.devices)} ("
                      + "; ".join(reasons) + ")")


def warm_up_solvers() -> None:
    """Re-plan a one-layer, one-device instance, so that a later re-plan pays no import time."""
    replan(load_instance({
        "format_version": 1, "name": "warm-up",
        "model": {"name": "one", "input_bytes": 1,
                  "layers": [{"id": "a", "op": "x", "flops": 1, "param_bytes": 0,
                              "output_bytes": 1}], "edges": []},
        "devices": [{"id": "d", "class": "c", "memory_bytes": 1, "flops_per_s": 1}],
        "links": {"default": {"bandwidth_bytes_per_s": 1, "latency_s": 0}}}))


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
