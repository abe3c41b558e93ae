"""Make the device-group (hybrid plan) instances in instances/hybrid_*.json (issue 11).

    python scripts/make_hybrid_instances.py

The VGG-16 ones reuse the layer times of the shipped, measured ``instances/vgg16_4nodes.json``
(one profile of torchvision's VGG-16 at 224 x 224, every device class's time already in it), add
each layer's split shape (``meta.shape``, from one trace of the same model: the unit ids are the
same; see :func:`edgepart.profiling.trace.unit_shape`) and put the model on a new cluster.
AlexNet is profiled here (``edgepart profile`` as scripts/make_instances.py runs it, on the
``lab4`` classes; about 15 s), which records the shapes itself:

* ``hybrid_vgg16_4eq``: 4 equal Raspberry Pi 4 on 1 Gbit/s Ethernet (0.5 ms), FlexPie's setting
  (equal devices, one request at a time): splitting layers pays for latency.
* ``hybrid_replicate_vgg16``: one Jetson Nano and three Raspberry Pi 4 on 100 Mbit/s Ethernet
  (0.5 ms): replicating the whole model on the slow devices beside the fast one pays for the
  period, because a pipeline must ship VGG-16's activations between its stages while replicas
  only receive the 0.6 MB input.
* ``hybrid_alexnet_4eq``: AlexNet on the 4 equal devices of ``hybrid_vgg16_4eq``.

``variant(base, links)`` is what ``bench/hybrid.py`` uses for other bandwidths. Re-profiling is
not needed: layer times do not depend on the cluster's links.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BASE = ROOT / "instances" / "vgg16_4nodes.json"
ETHERNET_1G = {"bandwidth_bytes_per_s": 125e6, "latency_s": 0.0005}
ETHERNET_100M = {"bandwidth_bytes_per_s": 12.5e6, "latency_s": 0.0005}
GIB = 1 << 30

# name -> (model, description, device classes, memory GiB each, link)
CLUSTERS: dict[str, tuple[str, str, list[str], list[int], dict[str, float]]] = {
    "hybrid_vgg16_4eq": ("vgg16",
        "VGG-16 (measured, input 224x224) on 4 equal Raspberry Pi 4 on 1 Gbit/s Ethernet "
        "(0.5 ms): FlexPie's setting, where split stages pay for latency",
        ["rpi4"] * 4, [4] * 4, ETHERNET_1G),
    "hybrid_replicate_vgg16": ("vgg16",
        "VGG-16 (measured, input 224x224) on one Jetson Nano and three Raspberry Pi 4 on "
        "100 Mbit/s Ethernet (0.5 ms): replicated stages pay for the period",
        ["jetson_nano", "rpi4", "rpi4", "rpi4"], [4] * 4, ETHERNET_100M),
    "hybrid_alexnet_4eq": ("alexnet",
        "AlexNet (measured, input 224x224) on 4 equal Raspberry Pi 4 on 1 Gbit/s Ethernet "
        "(0.5 ms)", ["rpi4"] * 4, [4] * 4, ETHERNET_1G),
}


def with_shapes(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` (an instance of torchvision's VGG-16 at module granularity) with every layer's
    split shape from one trace of the model."""
    from edgepart.profiling.trace import trace_model, unit_shape

    traced = trace_model("torchvision:vgg16", (1, 3, 224, 224))
    shapes = {u.id: unit_shape(traced, u) for u in traced.units}
    for layer in data["model"]["layers"]:
        shape = shapes[layer["id"]]
        if shape is not None:
            layer.setdefault("meta", {})["shape"] = shape
    data["meta"]["times_from"] = "instances/vgg16_4nodes.json"
    return data


def profiled(model: str) -> dict[str, Any]:
    """A measured profile of ``model`` on the lab4 device classes (shapes included)."""
    from edgepart.cli import main as edgepart

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "profile.json"
        code = edgepart(["profile", model, "--cluster", str(ROOT / "instances" / "clusters" /
                                                               "lab4.json"),
                         "--out", str(out), "--granularity", "module", "--repeats", "10",
                         "--warmup", "3", "--statistic", "min"])
        if code != 0:
            raise SystemExit(code)
        data: dict[str, Any] = json.loads(out.read_text())
    return data


def variant(base: dict[str, Any], name: str, description: str, classes: list[str],
            memory_gib: list[int], link: dict[str, float]) -> dict[str, Any]:
    """``base`` on a new cluster of ``classes`` with one ``link`` between every pair."""
    data = json.loads(json.dumps(base))
    counts: dict[str, int] = {}
    devices = []
    for cls, gib in zip(classes, memory_gib, strict=True):
        devices.append({"id": f"{cls}-{counts.get(cls, 0)}", "class": cls,
                        "memory_bytes": gib * GIB})
        counts[cls] = counts.get(cls, 0) + 1
    data.update(name=name, description=description, devices=devices,
                links={"default": dict(link)}, source=devices[-1]["id"],
                sink=devices[-1]["id"])
    data["meta"] = {**data.get("meta", {}), "made_by": "scripts/make_hybrid_instances.py"}
    data["meta"].pop("cluster", None)
    return data


def main() -> int:
    bases = {"vgg16": with_shapes(json.loads(BASE.read_text())),
             "alexnet": profiled("torchvision:alexnet")}
    for name, (model, description, classes, memory, link) in CLUSTERS.items():
        data = variant(bases[model], name, description, classes, memory, link)
        path = ROOT / "instances" / f"{name}.json"
        path.write_text(json.dumps(data, indent=1) + "\n")
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
