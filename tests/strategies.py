"""Random small instances for property tests.

``random_instance`` guarantees: layers listed in topological order, a connected graph (a chain
with optional extra forward edges = skip and branch tensors), every layer runnable on every device
(unless ``restrict``), positive bandwidths; every number finite. Small enough for brute force.
"""

from __future__ import annotations

import random
from typing import Any

from hypothesis import strategies as st


def random_instance(seed: int, *, n: int = 5, nd: int = 3, chain: bool = False,
                    transfer: str = "relay", overlap: bool = True, ends: bool = True,
                    uniform_links: bool = False, memory: bool = False, restrict: bool = False,
                    colocate: bool = False) -> dict[str, Any]:
    rng = random.Random(seed)
    layers = [{"id": f"l{v}", "op": "op", "flops": rng.randint(1, 20) * 1e6,
               "param_bytes": rng.randint(0, 10) * 1e5, "output_bytes": rng.randint(1, 20) * 1e5,
               "work_bytes": rng.randint(0, 3) * 1e5} for v in range(n)]
    edges = [{"src": f"l{v}", "dst": f"l{v + 1}"} for v in range(n - 1)]
    if not chain:
        for v in range(n - 2):
            for w in range(v + 2, n):
                if rng.random() < 0.25:
                    edges.append({"src": f"l{v}", "dst": f"l{w}"})
    classes = ["a", "b"]
    devices = [{"id": f"d{k}", "class": rng.choice(classes),
                "memory_bytes": (rng.randint(15, 60) * 1e5 if memory else 1e12),
                "flops_per_s": rng.choice([1e7, 2e7, 5e7])} for k in range(nd)]
    if restrict:
        layers[rng.randrange(n)]["device_classes"] = [devices[0]["class"]]
    def link() -> dict[str, float]:
        return {"bandwidth_bytes_per_s": rng.choice([1e6, 5e6, 2e7]),
                "latency_s": rng.choice([0.0, 0.001, 0.01])}
    links: dict[str, Any] = {"default": link()}
    if not uniform_links:
        links["pairs"] = [{"src": f"d{i}", "dst": f"d{j}", **link()}
                          for i in range(nd) for j in range(nd) if i != j and rng.random() < 0.6]
    inst: dict[str, Any] = {
        "format_version": 1, "name": f"random{seed}",
        "model": {"name": "random", "input_bytes": rng.randint(1, 10) * 1e5, "layers": layers,
                  "edges": edges},
        "devices": devices, "links": links,
        "cost_model": {"overlap": overlap, "transfer": transfer},
    }
    if colocate and n >= 3:
        v = rng.randrange(n - 1)
        inst["model"]["colocate"] = [[f"l{v}", f"l{v + 1}"]]
    if ends:
        inst["source"] = f"d{rng.randrange(nd)}"
        inst["sink"] = f"d{rng.randrange(nd)}"
    return inst


cost_models = st.sampled_from([("relay", True), ("relay", False), ("direct", True),
                               ("direct", False)])
