r"""2D-grid: every layer's feature map cut into a grid of tiles, one per device.

Source: FlexPie's "2D-grid" baseline (Zhang et al., arXiv 2502.15312, §4), the scheme of
DeepThings (Zhao et al., IEEE TCAD 2018: the feature maps of the convolutional layers are tiled
in a 2D grid, each tile with the halo its kernels need). Here: one split stage over every device
(lead: the source, else the fastest), every layer ``grid`` (r x c equal tiles,
:func:`edgepart.cost.grid_shape`); layers that have no feature map (linear) take ``outc``, since
a grid does not apply to them (DeepThings runs them whole on one device: a departure). Needs
every layer's ``meta.shape`` and a chain.
"""

from __future__ import annotations

from edgepart.instance import Instance
from edgepart.plan import Scheme
from edgepart.results import SolveResult
from edgepart.solvers.base import SolveOptions, register
from edgepart.solvers.heuristics.onedim import solve_fixed

__all__ = ["solve_grid2d"]


@register("grid2d")
def solve_grid2d(inst: Instance, options: SolveOptions) -> SolveResult:
    """Every layer split in 2D tiles over every device (linear layers by output features)."""
    return solve_fixed(inst, options, Scheme.GRID, "grid2d")
