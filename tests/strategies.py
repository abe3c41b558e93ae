"""Random small instances for property tests.

``random_instance(seed, ...)`` returns an instance as a JSON-ready dict and guarantees:

- layers listed in a topological order and a weakly connected graph, of one of three shapes:
  ``chain`` (edges i -> i+1 only), ``forward`` (a chain plus random forward edges: skip and
  branch tensors, one entry and one exit) or ``dag`` (each layer a new entry or a reader of one
  or two earlier layers' tensors, then the weak components joined by an edge from their first
  layer: typically several entry layers and several exit layers);
- a time per layer and device *class*, drawn independently for every layer and class
  (``class_times``, the default), with some layers much faster on one class and much slower on
  another, so classes differ in *relative* speed; with ``class_times=False`` the time is
  ``flops / flops_per_s`` (every class the same relative speed);
- with ``restrict``, several layers pinned (``device_classes``) to classes present in the
  cluster, so every layer can run somewhere (the instance still loads);
- directed links drawn independently per direction (a default plus per-pair overrides, or a full
  matrix), unless ``uniform_links``; every bandwidth positive, every number finite;
- ``ends``: source and sink both on (``True``), both off (``False``) or only one of them
  (``"source"``, ``"sink"``), each device drawn independently;
- optional colocation groups and memory limits (which may make the instance infeasible: brute
  force says so, and every exact method must agree).

Brute force (``edgepart.solvers.brute``) enumerates every plan; :func:`small_instances` keeps it
well under a second by capping the layers by the devices (:data:`MAX_LAYERS`; the worst draws
measured on a 2-core machine, 50 draws each: 5 devices x 4 layers 0.17 s, 4 x 5 0.29 s,
3 x 6 0.08 s; one more layer would be 0.8 s, 0.9 s, 0.18 s). Explicit ``n`` and ``nd`` are not
capped (callers also build large instances for heuristics).
"""

from __future__ import annotations

import random
from typing import Any

from hypothesis import strategies as st

from edgepart import load_instance
from edgepart.instance import Instance

CLASSES = ("a", "b", "c")
SHAPES = ("chain", "forward", "dag")
MAX_LAYERS = {1: 6, 2: 6, 3: 6, 4: 5, 5: 4}
"""Most layers drawn for a given number of devices (keeps brute force well under a second)."""


def random_instance(seed: int, *, n: int = 5, nd: int = 3, chain: bool = False,
                    shape: str | None = None, transfer: str = "relay", overlap: bool = True,
                    ends: bool | str = True, uniform_links: bool = False, memory: bool = False,
                    restrict: bool | int = False, colocate: bool = False,
                    classes: int | None = None, class_times: bool = True) -> dict[str, Any]:
    """A random instance; every draw comes from ``random.Random(seed)``.

    ``chain=True`` is ``shape="chain"``; without either the shape is drawn (``forward`` or
    ``dag``). ``restrict`` pins that many layers (``True``: 1 to n/2 + 1 of them, drawn).
    ``classes`` is the number of device classes (2 or 3; drawn when ``None``).
    """
    rng = random.Random(seed)
    if shape is None:
        shape = "chain" if chain else rng.choice(SHAPES[1:])
    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")
    ncls = classes if classes is not None else rng.choice([2, 3])
    names = CLASSES[:ncls]
    layers = [{"id": f"l{v}", "op": "op", "flops": rng.randint(1, 20) * 1e6,
               "param_bytes": rng.randint(0, 10) * 1e5, "output_bytes": rng.randint(1, 20) * 1e5,
               "work_bytes": rng.randint(0, 3) * 1e5} for v in range(n)]
    if class_times:
        for layer in layers:
            layer["time_s"] = _class_times(rng, names)
    devices = [{"id": f"d{k}", "class": rng.choice(names),
                "memory_bytes": (rng.randint(15, 60) * 1e5 if memory else 1e12),
                "flops_per_s": rng.choice([1e7, 2e7, 5e7])} for k in range(nd)]
    present = sorted({str(d["class"]) for d in devices})
    pinned = (rng.randint(1, n // 2 + 1) if restrict is True else int(restrict))
    for v in rng.sample(range(n), min(pinned, n)):
        size = rng.randint(1, max(1, len(present) - 1))
        # a subset of the classes in the cluster; sometimes with an absent class added
        allowed = rng.sample(present, size)
        if len(present) < ncls and rng.random() < 0.3:
            allowed.append(rng.choice([c for c in names if c not in present]))
        layers[v]["device_classes"] = sorted(allowed)
    inst: dict[str, Any] = {
        "format_version": 1, "name": f"random{seed}",
        "model": {"name": "random", "input_bytes": rng.randint(1, 10) * 1e5, "layers": layers,
                  "edges": _edges(rng, n, shape)},
        "devices": devices, "links": _links(rng, nd, uniform_links),
        "cost_model": {"overlap": overlap, "transfer": transfer},
    }
    if colocate and n >= 3:
        groups = []
        for _ in range(rng.choice([1, 1, 2])):
            groups.append([f"l{v}" for v in sorted(rng.sample(range(n), rng.choice([2, 2, 3])))])
        inst["model"]["colocate"] = groups
    if ends not in (True, False, "source", "sink"):
        raise ValueError(f"ends must be True, False, 'source' or 'sink', got {ends!r}")
    for end in ("source", "sink"):
        if ends is True or ends == end:
            inst[end] = f"d{rng.randrange(nd)}"
    return inst


def _class_times(rng: random.Random, names: tuple[str, ...]) -> dict[str, float]:
    """Seconds per class, drawn independently; a third of the layers are lopsided: 8x faster
    than drawn on one class and 8x slower on another."""
    times = {c: round(rng.uniform(0.05, 1.5), 3) for c in names}
    if rng.random() < 1 / 3:
        fast, slow = rng.sample(names, 2)
        times[fast] = round(times[fast] / 8, 4)
        times[slow] = round(times[slow] * 8, 3)
    return times


def _edges(rng: random.Random, n: int, shape: str) -> list[dict[str, str]]:
    pairs: set[tuple[int, int]] = set()
    if shape in ("chain", "forward"):
        pairs = {(v, v + 1) for v in range(n - 1)}
        if shape == "forward":
            pairs |= {(v, w) for v in range(n - 2) for w in range(v + 2, n) if rng.random() < 0.25}
    else:
        # each layer is a new entry, or reads one or two earlier layers' tensors
        for w in range(1, n):
            if rng.random() >= 0.35:
                pairs |= {(v, w) for v in rng.sample(range(w), min(w, rng.choice([1, 1, 2])))}
        comp = list(range(n))  # join the weak components, keeping their entries entries

        def find(a: int) -> int:
            while comp[a] != a:
                a = comp[a]
            return a

        def join(v: int, w: int) -> None:
            pairs.add((v, w))
            comp[find(v)] = find(w)

        for v, w in sorted(pairs):
            comp[find(v)] = find(w)
        while len({find(v) for v in range(n)}) > 1:
            start = max(v for v in range(n) if v == min(u for u in range(n) if find(u) == find(v)))
            later = [w for w in range(start + 1, n) if find(w) != find(start)]
            if later:  # from the component's first layer (an entry) to another component
                join(start, rng.choice(later))
            else:
                mine = [w for w in range(n) if find(w) == find(start)]
                join(rng.choice([v for v in range(start) if find(v) != find(start)]),
                     rng.choice(mine))
    return [{"src": f"l{v}", "dst": f"l{w}"} for v, w in sorted(pairs)]


def _link(rng: random.Random) -> dict[str, float]:
    return {"bandwidth_bytes_per_s": rng.choice([1e6, 5e6, 2e7, 1e8]),
            "latency_s": rng.choice([0.0, 0.001, 0.01, 0.05])}


def _links(rng: random.Random, nd: int, uniform: bool) -> dict[str, Any]:
    if uniform:
        return {"default": _link(rng)}
    if rng.random() < 0.3:  # a full matrix, every direction drawn on its own
        cells = [[_link(rng) if i != j else {"bandwidth_bytes_per_s": 0, "latency_s": 0}
                  for j in range(nd)] for i in range(nd)]
        return {"matrix": {key: [[c[key] for c in row] for row in cells]
                           for key in ("bandwidth_bytes_per_s", "latency_s")}}
    return {"default": _link(rng),
            "pairs": [{"src": f"d{i}", "dst": f"d{j}", **_link(rng)}
                      for i in range(nd) for j in range(nd) if i != j and rng.random() < 0.6]}


cost_models = st.sampled_from([("relay", True), ("relay", False), ("direct", True),
                               ("direct", False)])


@st.composite
def small_instances(draw: st.DrawFn, max_devices: int = 5) -> dict[str, Any]:
    """Keyword arguments of :func:`random_instance` for an instance brute force enumerates in
    well under a second: 1 to ``max_devices`` devices (mostly 2 or more), layers capped by
    :data:`MAX_LAYERS` (mostly 3 or more). Every choice is a ``sampled_from``, so the draws
    spread evenly instead of crowding at the simplest values."""
    nd = draw(st.sampled_from([1, *[k for k in range(2, max_devices + 1) for _ in (0, 1)]]))
    transfer, overlap = draw(cost_models)
    return {"seed": draw(st.integers(0, 10**6)), "nd": nd,
            "n": draw(st.sampled_from([1, 2, *[v for v in range(3, MAX_LAYERS[nd] + 1)
                                               for _ in (0, 1)]])),
            "shape": draw(st.sampled_from(["dag", "forward", "dag", "chain"])),
            "transfer": transfer, "overlap": overlap,
            "ends": draw(st.sampled_from(["source", True, "sink", False])),
            "uniform_links": draw(st.sampled_from([False, True, False])),
            "memory": draw(st.booleans()),
            "restrict": draw(st.sampled_from([1, 0, 2, 3])),
            "colocate": draw(st.booleans()), "classes": draw(st.sampled_from([3, 2]))}


def two_branches() -> Instance:
    """x feeds two branches a1 -> a2 and b1 -> b2 that meet at j, listed x, a1, b1, a2, b2, j.
    Tensors (bytes): x 1, a1 10, b1 10, a2 1, b2 1, j 1; a1, a2, b1, b2 take 1 s on either of
    two devices, x and j nothing; links 1 byte/s, no source or sink, overlap."""
    data = random_instance(0, n=6, nd=2, chain=True, ends=False, uniform_links=True,
                           class_times=False)
    names = ["x", "a1", "b1", "a2", "b2", "j"]
    out = {"x": 1, "a1": 10, "b1": 10, "a2": 1, "b2": 1, "j": 1}
    for layer, name in zip(data["model"]["layers"], names, strict=True):
        layer.update(id=name, flops=0.0 if name in "xj" else 1e7, output_bytes=out[name],
                     param_bytes=0, work_bytes=0)
    data["model"]["edges"] = [{"src": s, "dst": d} for s, d in (
        ("x", "a1"), ("x", "b1"), ("a1", "a2"), ("b1", "b2"), ("a2", "j"), ("b2", "j"))]
    for d in data["devices"]:
        d.update(flops_per_s=1e7, memory_bytes=1e12)
    data["links"] = {"default": {"bandwidth_bytes_per_s": 1.0, "latency_s": 0.0}}
    data["cost_model"] = {"overlap": True, "transfer": "relay"}
    return load_instance(data)
