"""Even split: equal compute per stage over the k fastest devices, fastest first.

Source: the default of pipeline libraries, e.g. GPipe's and torchgpipe's ``balance`` by time and
``torch.distributed.pipelining``'s even split points: the user picks the number of stages and the
library balances the work without looking at the network or at which device gets which stage.

What it models: per-layer compute (each layer's best time over the devices, a device-independent
measure of work); k = every device (``options.extra["k"]`` overrides), fewer when a split does
not fit memory or device classes. What it ignores: device heterogeneity within the split (each
stage gets 1/k of the work whatever the device's speed), transfer sizes and link bandwidths,
the source and sink. Stage b goes to the b-th fastest device.

References
----------
.. [1] Y. Huang et al., "GPipe: Efficient Training of Giant Neural Networks using Pipeline
   Parallelism", NeurIPS 2019.
.. [2] PyTorch, ``torch.distributed.pipelining`` (``SplitPoint``, ``pipe_split``).
"""

from __future__ import annotations

import time

import numpy as np

from edgepart.instance import Instance
from edgepart.results import SolveResult
from edgepart.solvers.base import SolveOptions, register
from edgepart.solvers.heuristics.common import (
    RangeModel,
    RangePlan,
    balanced_cuts,
    device_speed,
    finish_heuristic,
)

__all__ = ["layer_work", "solve_even"]


def layer_work(rm: RangeModel) -> np.ndarray:
    """Each layer's best time over the devices (the work an even split balances)."""
    return np.asarray(rm.times.min(axis=1))


@register("even")
def solve_even(inst: Instance, options: SolveOptions) -> SolveResult:
    """Equal-work contiguous stages on the k fastest devices (largest valid k <= requested)."""
    start = time.perf_counter()
    rm = RangeModel(inst)
    order = [int(d) for d in np.argsort(-device_speed(inst), kind="stable")]
    want = min(int(options.extra.get("k", len(order))), len(order), rm.n)
    work = layer_work(rm)
    for k in range(want, 0, -1):
        cuts = balanced_cuts(work, k, rm.cut_ok)
        if cuts is None:
            continue
        rp = RangePlan(cuts, tuple(order[:k]))
        if rm.valid(rp):
            return finish_heuristic(inst, rp.to_plan(inst), method="even", options=options,
                                    start=start, extra={"k": k, "k_requested": want})
    return finish_heuristic(inst, None, method="even", options=options, start=start,
                            message="no even split over the fastest devices fits")
