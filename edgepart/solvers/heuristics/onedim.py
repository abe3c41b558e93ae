r"""One-dim OutC: every layer split over all devices by output channels.

Source: FlexPie's "OutC" baseline (Zhang et al., arXiv 2502.15312, §4), the scheme of Xenos
(Zhang et al., ATC 2021: each device computes a slice of every layer's output channels, then all
devices all-gather the output). Here: one split stage over every device (lead: the source, else
the fastest device), every layer ``outc``, costed by :class:`edgepart.cost.SplitGroup`. Shares
follow device speed (Xenos and FlexPie: equal). Needs every layer's ``meta.shape`` and a chain.
"""

from __future__ import annotations

import time

from edgepart.cost import layer_shapes
from edgepart.errors import InputError
from edgepart.instance import Instance
from edgepart.plan import Mode, Scheme
from edgepart.results import SolveResult
from edgepart.solvers.base import SolveOptions, register
from edgepart.solvers.groups import one_group_plan
from edgepart.solvers.heuristics.common import finish_heuristic

__all__ = ["cannot_split", "fixed_schemes", "solve_fixed", "solve_onedim"]


def cannot_split(inst: Instance) -> str:
    """Why the whole model cannot be one split stage ("" when it can)."""
    if not inst.model.is_chain:
        return f"needs a chain model ({inst.model.name} is a DAG)"
    if len(inst.devices) < 2:
        return "needs at least 2 devices"
    try:
        shapes = layer_shapes(inst)
    except InputError as err:
        return str(err)
    missing = [inst.model.layers[v].id for v, s in enumerate(shapes) if s is None]
    if missing:
        return (f"{len(missing)} layer(s) have no meta.shape (e.g. '{missing[0]}'): "
                "re-profile the model to split it")
    return ""


def fixed_schemes(inst: Instance, scheme: Scheme) -> dict[int, Scheme]:
    """``scheme`` for every layer that takes one (``outc`` where the layer cannot take it)."""
    shapes = layer_shapes(inst)
    out: dict[int, Scheme] = {}
    for v, shape in enumerate(shapes):
        if shape is not None and (v == 0 or shape.kind != "elementwise"):
            out[v] = scheme if scheme in shape.schemes else Scheme.OUTC
    return out


def solve_fixed(inst: Instance, options: SolveOptions, scheme: Scheme, method: str
                ) -> SolveResult:
    """One split stage over every device with ``scheme`` everywhere it applies."""
    start = time.perf_counter()
    reason = cannot_split(inst)
    if reason:
        return finish_heuristic(inst, None, method=method, options=options, start=start,
                                message=reason)
    plan = one_group_plan(inst, Mode.SPLIT, fixed_schemes(inst, scheme), method)
    return finish_heuristic(inst, plan, method=method, options=options, start=start)


@register("onedim")
def solve_onedim(inst: Instance, options: SolveOptions) -> SolveResult:
    """Every layer split by output channels over every device."""
    return solve_fixed(inst, options, Scheme.OUTC, "onedim")
