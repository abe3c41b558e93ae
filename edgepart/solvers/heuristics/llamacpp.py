"""llama.cpp's layer split (``--split-mode layer``): even, or in proportion to device memory.

Source: llama.cpp (ggml-org/llama.cpp), ``llama_model::load_tensors`` in
``src/llama-model.cpp``, as read in the repository: the split weights are ``--tensor-split``, or
each device's free memory when it is not given ("default split, by free memory"); they are
normalised to cumulative fractions :math:`s_0 \\le \\dots \\le s_{D-1} = 1` and, with every layer
offloaded, layer :math:`i` of the :math:`n` repeating layers goes to the first device with
:math:`s_k > i / (n + 1)` (``std::upper_bound``); the output layer (final norm and head) is
layer :math:`i = n` of the same rule. The input embedding stays on the host, here the device of
the first decoder layer. Devices are taken in the instance's order (llama.cpp's order of
``--device`` / ``--rpc``). A device whose fraction covers no layer gets none.

Two methods:

* ``llamacpp``: ``--tensor-split 1,1,...,1`` (an even split, what users set for equal nodes);
* ``llamacpp_memory``: weights = each device's ``memory_bytes`` (llama.cpp's default, and how
  ``--tensor-split`` is commonly set by hand: by each device's memory).

What it ignores: device speed, links, the KV cache (a split that does not fit is reported as no
plan, as llama.cpp would fail to allocate it).
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Sequence
from itertools import accumulate

from edgepart.instance import Instance
from edgepart.llm.splits import plan_from_layer_devices, repeating_range, spread_ends
from edgepart.results import SolveResult
from edgepart.solvers.base import SolveOptions, register
from edgepart.solvers.heuristics.common import finish_fixed_rule

__all__ = ["layer_split", "solve_llamacpp", "solve_llamacpp_memory"]


def layer_split(weights: Sequence[float], n: int) -> list[int]:
    """The device of each of ``n`` repeating layers and then of the output layer (``n + 1``
    entries) for split ``weights``, by llama.cpp's rule above."""
    total = sum(weights)
    ends = [c / total for c in accumulate(weights)]
    return [min(bisect.bisect_right(ends, i / (n + 1)), len(ends) - 1) for i in range(n + 1)]


def _solve(inst: Instance, options: SolveOptions, weights: Sequence[float], method: str
           ) -> SolveResult:
    start = time.perf_counter()
    first, end = repeating_range(inst)
    n = len(inst.model.layers)
    # an llm instance: decoder layers then the head (llama.cpp's output layer); otherwise every
    # layer but the last is a repeating layer and the last one is the output layer
    repeating = end - first if end < n else n - 1
    units = layer_split(weights, repeating)
    plan = plan_from_layer_devices(inst, spread_ends(inst, units, first), method)
    return finish_fixed_rule(inst, plan, method=method, options=options, start=start,
                        extra={"tensor_split": list(weights)})


@register("llamacpp")
def solve_llamacpp(inst: Instance, options: SolveOptions) -> SolveResult:
    """llama.cpp with ``--tensor-split 1,...,1`` (even)."""
    return _solve(inst, options, [1.0] * len(inst.devices), "llamacpp")


@register("llamacpp_memory")
def solve_llamacpp_memory(inst: Instance, options: SolveOptions) -> SolveResult:
    """llama.cpp's default split: in proportion to each device's memory."""
    return _solve(inst, options, [d.memory_bytes for d in inst.devices], "llamacpp_memory")
