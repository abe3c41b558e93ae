r"""Data parallelism: the whole model replicated on every device.

Source: the data-parallel baseline of pipeline planners (PipeDream, Narayanan et al., SOSP 2019,
§3.1: every worker holds the whole model and takes its own inputs), here for inference: each
device runs whole requests, dealt in proportion to its rate (the replicate mode of
:mod:`edgepart.cost`). Throughput adds up over the devices; latency is the slowest device's whole
forward pass. Any model (no shapes needed); every device must hold the whole model (else no
plan, with the reason).
"""

from __future__ import annotations

import time

from edgepart.instance import Instance
from edgepart.plan import Mode, Plan, Stage
from edgepart.results import SolveResult
from edgepart.solvers.base import SolveOptions, register
from edgepart.solvers.groups import one_group_plan
from edgepart.solvers.heuristics.common import finish_fixed_rule

__all__ = ["solve_dataparallel"]


@register("dataparallel")
def solve_dataparallel(inst: Instance, options: SolveOptions) -> SolveResult:
    """The whole model on every device, requests dealt in proportion to speed."""
    start = time.perf_counter()
    if len(inst.devices) < 2:
        plan = Plan((Stage(inst.devices[0].id, tuple(x.id for x in inst.model.layers)),),
                    inst.name, "dataparallel")
    else:
        plan = one_group_plan(inst, Mode.REPLICATE, method="dataparallel")
    return finish_fixed_rule(inst, plan, method="dataparallel", options=options, start=start)
