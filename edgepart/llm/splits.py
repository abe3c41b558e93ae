"""Layer splits as the LLM tools make them, turned into edgepart plans.

The tools split the *repeating* layers (a language model's decoder layers) into contiguous
shards, one per device, by a fixed rule; the embedding goes with the first shard and the final
norm and output head with the last. :func:`repeating_range` finds the decoder layers of an
instance with an ``llm`` workload (layers whose ``op`` is ``decoder``); on any other instance
every layer is a repeating layer. :func:`plan_from_layer_devices` turns a device per layer into a
plan (consecutive layers on one device are one stage) and
:func:`edgepart.solvers.heuristics.common.finish_fixed_rule` scores it: a split that breaks the
instance's rules (a stage that does not fit its device's memory, above all) is reported as no
plan, with the reason, since the tool would fail to load it.
"""

from __future__ import annotations

from collections.abc import Sequence

from edgepart.instance import Instance
from edgepart.plan import Plan
from edgepart.solvers.heuristics.common import RangePlan

__all__ = ["plan_from_layer_devices", "repeating_range", "spread_ends"]


def repeating_range(inst: Instance) -> tuple[int, int]:
    """``(first, end)``: the positions of the repeating layers (``first <= v < end``)."""
    n = len(inst.model.layers)
    if inst.workload is None:
        return 0, n
    decoders = [v for v, layer in enumerate(inst.model.layers) if layer.op == "decoder"]
    if not decoders or decoders != list(range(decoders[0], decoders[-1] + 1)):
        return 0, n
    return decoders[0], decoders[-1] + 1


def plan_from_layer_devices(inst: Instance, devices: Sequence[int], method: str) -> Plan:
    """The plan whose stages are the runs of equal devices in ``devices`` (one per layer, in
    layer order; a device must not come back after another one)."""
    cuts = [0] + [v for v in range(1, len(devices)) if devices[v] != devices[v - 1]]
    stage_devices = tuple(devices[c] for c in cuts)
    if len(set(stage_devices)) != len(stage_devices):
        raise ValueError(f"{method}: a device holds two separate ranges of layers")
    return RangePlan((*cuts, len(devices)), stage_devices).to_plan(inst, method)


def spread_ends(inst: Instance, unit_devices: Sequence[int], first: int) -> list[int]:
    """One device per layer from one per repeating unit (starting at layer ``first``): layers
    before the units take the first unit's device, layers after them the last unit's."""
    n = len(inst.model.layers)
    before = [unit_devices[0]] * first
    after = [unit_devices[-1]] * (n - first - len(unit_devices))
    return [*before, *unit_devices, *after]
