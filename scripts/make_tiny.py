"""Write the known-answer set ``instances/tiny/``: small instances and, beside each, its optimum
(``NAME.optimum.json``) found by brute-force enumeration (``edgepart.solvers.brute``).

Run from the repository root: ``python scripts/make_tiny.py``. The tests re-run brute force and
every exact backend on each file and compare with the stored optimum.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from strategies import random_instance

from edgepart import load_instance, solve

OUT = Path(__file__).resolve().parents[1] / "instances" / "tiny"


def two_layers() -> dict[str, Any]:
    """Two 1-GFLOP layers, two 1-GFLOP/s devices, a 0.1 s transfer between them. Splitting gives
    period max(1, 0.1) = 1 s (vs 2 s on one device); latency is best on one device (2 s)."""
    layer = {"op": "matmul", "flops": 1e9, "param_bytes": 0, "output_bytes": 1e8}
    return {"format_version": 1, "name": "two_layers", "description": two_layers.__doc__,
            "model": {"name": "two_layers", "input_bytes": 0,
                      "layers": [{"id": "a", **layer}, {"id": "b", **layer}],
                      "edges": [{"src": "a", "dst": "b"}]},
            "devices": [{"id": f"d{k}", "class": "cpu", "memory_bytes": 1e9, "flops_per_s": 1e9}
                        for k in range(2)],
            "links": {"default": {"bandwidth_bytes_per_s": 1e9, "latency_s": 0.0}}}


def too_big() -> dict[str, Any]:
    """A layer whose parameters exceed every device's memory: infeasible."""
    inst = two_layers()
    inst["name"] = "too_big"
    inst["description"] = too_big.__doc__
    inst["model"]["layers"][1]["param_bytes"] = 2e9
    return inst


RANDOM = {
    "chain5_relay": dict(seed=101, n=5, nd=3, chain=True),
    "chain6_direct_sum": dict(seed=102, n=6, nd=2, chain=True, transfer="direct", overlap=False),
    "dag5_relay": dict(seed=103, n=5, nd=3),
    "dag5_relay_sum": dict(seed=104, n=5, nd=3, overlap=False),
    "dag6_direct": dict(seed=105, n=6, nd=3, transfer="direct"),
    "dag5_memory": dict(seed=106, n=5, nd=3, memory=True),
    "dag5_classes_colocate": dict(seed=107, n=5, nd=3, restrict=True, colocate=True),
    "dag5_no_ends_uniform": dict(seed=108, n=5, nd=3, ends=False, uniform_links=True),
}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    instances = {"two_layers": two_layers(), "too_big": too_big()}
    for name, kw in RANDOM.items():
        inst = random_instance(**kw)  # type: ignore[arg-type]
        inst["name"] = name
        inst["description"] = f"random_instance({', '.join(f'{k}={v!r}' for k, v in kw.items())})"
        instances[name] = inst
    for name, data in instances.items():
        (OUT / f"{name}.json").write_text(json.dumps(data, indent=1) + "\n")
        inst = load_instance(data)
        optimum = {}
        for objective in ("bottleneck", "latency"):
            res = solve(inst, "brute", objective=objective)
            optimum[objective] = (res.objective_s if math.isfinite(res.objective_s)
                                  else "infeasible")
        (OUT / f"{name}.optimum.json").write_text(json.dumps(optimum, indent=1) + "\n")
        print(name, optimum)


if __name__ == "__main__":
    main()
