"""SEIFER / ANRG partition-then-place: minimum-transfer segments on a high-bandwidth device path.

Source: A. Parthasarathy and B. Krishnamachari, "Partitioning and Placement of Deep Neural
Networks on Distributed Edge Devices to Maximize Inference Throughput" (arXiv 2210.12219) and
"SEIFER: Scalable Edge Inference for Deep Neural Networks" (arXiv 2304.11941); public code
ANRGUSC/SEIFER (``graph_utils.py``: ``create_partition_graph``, ``partition``, ``classify``,
``k_path_matching``).

Algorithm, as published, in our terms:

1. candidate cut points: positions of the layer order where a single tensor (the previous
   layer's) is alive, i.e. the layers every path passes through (they find them as layers alone
   at their longest-path level);
2. segments: runs between candidate points that fit in the *smallest* device's memory (SEIFER
   assumes every node has it; we use our memory model, buffers included);
3. partition: among the segmentations into at most D segments (their N nodes), the one with
   the minimum *sum* of transfer sizes, whatever its number of segments: more segments may
   move fewer bytes (their ``min_cost_path``, a memoised DFS over the segment graph; ours is
   an exact DP over the candidate positions, :func:`seifer_partition`, ties to fewer
   segments). Their DFS minimises the sum without the limit, then drops a first segment whose
   best continuation has more than N segments; the DP minimises under the limit. Their DFS
   also ends a path at a segment that nothing follows (the next run does not fit); then no
   partition exists, and we say so;
4. classes: the chosen transfers are binned by ``np.histogram_bin_edges`` over all candidate
   transfers into C classes (their ``classify``; the top edge clipped into class C, which their
   code leaves out);
5. placement ("K-path matching"): from the highest class down, each longest run of consecutive
   cuts in the class gets a path of devices maximising the smallest bandwidth on it (binary
   search on a bandwidth threshold), its ends pinned to devices already placed, used devices
   removed. SEIFER finds the thresholded paths by randomised colour coding; we search them by a
   bounded depth-first search (:data:`PATH_SEARCH_BUDGET` expansions), directed along the
   pipeline because our links are directed.

We run C = 2..20 (their experiments' range) and keep the placement with the best SEIFER
objective, max over cuts of transfer bytes / bandwidth. What it models: transfer sizes, link
bandwidths, memory (as the smallest node's). What it ignores: compute time (their argument:
transfers dominate on slow Wi-Fi), heterogeneous memory, link latency, the source and sink.
Extensions, stated: devices a segment may not run on (device classes) are skipped; with one
segment (no transfer) the fastest device that can hold it is used, a tie SEIFER leaves open.

References
----------
.. [1] Parthasarathy & Krishnamachari, arXiv 2210.12219, Algorithms 1-3.
.. [2] Parthasarathy & Krishnamachari, arXiv 2304.11941.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from edgepart.cost import REL_TOL, tolerated
from edgepart.instance import Instance
from edgepart.results import SolveResult
from edgepart.solvers.base import SolveOptions, register
from edgepart.solvers.heuristics.common import (
    RangeModel,
    RangePlan,
    device_speed,
    finish_heuristic,
)

__all__ = [
    "CLASS_RANGE",
    "PATH_SEARCH_BUDGET",
    "Partition",
    "candidate_cuts",
    "hosts",
    "k_path_matching",
    "seifer_objective",
    "seifer_partition",
    "solve_seifer",
]

CLASS_RANGE = range(2, 21)
"""Numbers of bandwidth classes tried (SEIFER's experiments use 2 to 20)."""
PATH_SEARCH_BUDGET = 20_000
"""Most depth-first expansions per thresholded path search."""


@dataclass(frozen=True, slots=True)
class Partition:
    """Chosen cut positions ``0 = cuts[0] < ... < cuts[-1] = n`` and the bytes at every
    candidate cut (the population the class histogram is built on)."""

    cuts: tuple[int, ...]
    candidate_bytes: np.ndarray


def candidate_cuts(inst: Instance, rm: RangeModel) -> list[int]:
    """Positions j (0 < j < n) where the only tensor alive is layer j-1's output."""
    g = inst.model
    last = [max(s) if s else (rm.n if inst.sink is not None else u) for u, s in enumerate(g.succ)]
    reach = max(g.entries) if inst.source is not None else -1
    out = []
    for j in range(1, rm.n):
        if reach < j <= last[j - 1] and rm.cut_ok[j]:
            out.append(j)
        reach = max(reach, last[j - 1])
    return out


def seifer_partition(inst: Instance, rm: RangeModel) -> Partition | None:
    """Steps 1-3: the segmentation at the candidate cuts with the minimum *sum* of boundary
    transfers among those whose segments all fit the smallest memory, with at most D segments
    (D devices: SEIFER's N nodes); ``None`` when none fits.

    An exact DP over the candidate positions ``p_0 = 0 < p_1 < ... < p_m = n``:
    ``T_k(b) = min_a T_{k-1}(a) + B(p_a)`` over the ``a < b`` whose segment ``p_a .. p_b - 1``
    fits (``B(p_0) = 0``), ``T_0(0) = 0``, for k = 1 .. min(D, m); the answer is
    ``min_k T_k(m)``. O(min(D, m) m^2). Ties, within a relative :data:`~edgepart.cost.REL_TOL`,
    go to the fewest segments, then, for that count, to the earliest start of the last segment,
    of the one before it, and so on (the first minimum at every backward step).
    """
    pos = np.array([0, *candidate_cuts(inst, rm), rm.n])
    m = len(pos) - 1
    cap = tolerated(float(rm.capacity.min()))
    fits = np.zeros((m + 1, m + 1), dtype=bool)
    for a in range(m):
        fits[a, a + 1:] = rm.memory_row(int(pos[a]), pos[a + 1:]) <= cap
    weight = np.where(np.arange(m + 1) > 0, rm.boundary[pos], 0.0)
    cost = np.full(m + 1, np.inf)
    cost[0] = 0.0
    parents, totals = [], []
    # More segments can lower the sum (two small cuts instead of one large one that the memory
    # would otherwise force), so every count up to D is solved, not only the first that fits.
    for _ in range(min(rm.nd, m)):  # one more segment: cost'[b] = min_a cost[a] + w[a]
        options = np.where(fits, (cost + weight)[:, None], np.inf)
        parents.append(options.argmin(axis=0))
        cost = options.min(axis=0)
        totals.append(cost[m])
    best = min(totals, default=np.inf)
    if not np.isfinite(best):
        return None
    count = next(k for k, t in enumerate(totals, 1) if t <= best * (1 + REL_TOL))
    cuts, b = [m], m
    for parent in reversed(parents[:count]):
        b = int(parent[b])
        cuts.append(b)
    return Partition(tuple(int(pos[c]) for c in reversed(cuts)), rm.boundary[pos[1:-1]])


def seifer_objective(rm: RangeModel, cuts: Sequence[int], devices: Sequence[int]) -> float:
    """SEIFER's bottleneck: max over cuts of transfer bytes / link bandwidth."""
    return max((float(rm.boundary[c] / rm.bw[devices[b], devices[b + 1]])
                for b, c in enumerate(cuts[1:-1])), default=0.0)


def hosts(rm: RangeModel, cuts: Sequence[int]) -> list[list[int]]:
    """Per segment, the devices that may run all its layers (fastest first)."""
    order = np.argsort(-device_speed(rm.inst), kind="stable")
    return [[int(d) for d in order if np.isfinite(rm.compute(cuts[b], cuts[b + 1], int(d)))]
            for b in range(len(cuts) - 1)]


def _runs(classes: Sequence[int], x: int) -> list[tuple[int, int]]:
    """Maximal runs (first cut, number of cuts) of class ``x``, longest first."""
    runs, b = [], 0
    while b < len(classes):
        if classes[b] != x:
            b += 1
            continue
        e = b
        while e < len(classes) and classes[e] == x:
            e += 1
        runs.append((b, e - b))
        b = e
    return sorted(runs, key=lambda r: -r[1])


def _path(rm: RangeModel, allowed: list[list[int]], ends: tuple[int | None, int | None],
          used: set[int], threshold: float) -> list[int] | None:
    """A simple device path, one per position, consecutive bandwidth >= threshold."""
    last = len(allowed) - 1
    budget = [PATH_SEARCH_BUDGET]

    def choices(b: int, prev: int | None, path: list[int]) -> Iterator[int]:
        pinned = ends[0] if b == 0 else ends[1] if b == last else None
        pool = [pinned] if pinned is not None else [d for d in allowed[b]
                                                   if d not in used and d not in path]
        for d in pool:
            if prev is None or (d not in path and rm.bw[prev, d] >= threshold):
                yield d

    def extend(path: list[int]) -> list[int] | None:
        if len(path) == len(allowed):
            return path
        for d in choices(len(path), path[-1] if path else None, path):
            budget[0] -= 1
            if budget[0] < 0:
                return None
            found = extend([*path, d])
            if found is not None:
                return found
        return None

    return extend([])


def _widest_path(rm: RangeModel, allowed: list[list[int]], ends: tuple[int | None, int | None],
                 used: set[int]) -> list[int] | None:
    """The path maximising its smallest bandwidth (binary search on the threshold)."""
    levels = np.unique(rm.bw[~np.eye(rm.nd, dtype=bool)])[::-1]
    lo, hi, best = 0, len(levels) - 1, None
    while lo <= hi:
        mid = (lo + hi) // 2
        found = _path(rm, allowed, ends, used, float(levels[mid]))
        if found is None:
            lo = mid + 1
        else:
            best, hi = found, mid - 1
    return best


def k_path_matching(rm: RangeModel, cuts: Sequence[int], classes: Sequence[int],
                    n_classes: int) -> tuple[int, ...] | None:
    """Step 5: devices per segment, highest class first (``None`` when a run has no path)."""
    allowed = hosts(rm, cuts)
    node: list[int | None] = [None] * (len(cuts) - 1)
    used: set[int] = set()
    for x in range(n_classes, 0, -1):
        for first, count in _runs(classes, x):
            path = _widest_path(rm, allowed[first:first + count + 1],
                                (node[first], node[first + count]), used)
            if path is None:
                return None
            node[first:first + count + 1] = path
            used.update(path)
    if node[0] is None:  # a single segment: no transfer, SEIFER's objective is indifferent
        node[0] = next(iter(allowed[0]), None)
    return None if None in node else tuple(d for d in node if d is not None)


@register("seifer")
def solve_seifer(inst: Instance, options: SolveOptions) -> SolveResult:
    """Partition (steps 1-3), then K-path matching for each class count; best SEIFER objective."""
    start = time.perf_counter()
    rm = RangeModel(inst)
    part = seifer_partition(inst, rm)
    if part is None:
        return finish_heuristic(inst, None, method="seifer", options=options, start=start,
                                message="no partition into at most D segments fits the "
                                        "smallest device's memory")
    chosen = rm.boundary[list(part.cuts[1:-1])]
    best: tuple[float, int, tuple[int, ...]] | None = None
    tried: set[tuple[int, ...]] = set()
    for n_classes in CLASS_RANGE:
        edges = np.histogram_bin_edges(part.candidate_bytes if len(part.candidate_bytes)
                                       else chosen, bins=n_classes)
        classes = tuple(int(c) for c in np.clip(np.digitize(chosen, edges), 1, n_classes))
        if classes in tried:
            continue
        tried.add(classes)
        devices = k_path_matching(rm, part.cuts, classes, n_classes)
        if devices is not None:
            value = seifer_objective(rm, part.cuts, devices)
            if best is None or value < best[0]:
                best = (value, n_classes, devices)
    if best is None:
        return finish_heuristic(inst, None, method="seifer", options=options, start=start,
                                message="K-path matching found no device path")
    plan = RangePlan(part.cuts, best[2]).to_plan(inst)
    return finish_heuristic(inst, plan, method="seifer", options=options, start=start,
                            extra={"segments": len(part.cuts) - 1, "classes": best[1],
                                   "seifer_objective_s": best[0]})
