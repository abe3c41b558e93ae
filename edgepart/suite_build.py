"""The instances of edgepart-suite, built from what the project can ship or regenerate.

Every instance is a profiled layer graph on a cluster; nothing is profiled or downloaded here
(no torch), so the whole suite rebuilds in seconds (``scripts/make_suite.py``). Families:

* ``torchvision``: the layer graphs of the shipped, torchvision-profiled instances
  (``instances/*.json``) re-combined with every cluster of ``instances/clusters/`` that has no
  memory budget, and with :data:`GENERATED_CLUSTERS`. A layer's time on a device class the base
  instance was not profiled for follows the catalog's speed model
  (:mod:`edgepart.profiling.catalog`): times are the host time times the class's speed factor
  ``host_flops / flops_c``, so :math:`t(v, c) = t(v, c_0)\\, f_{c_0} / f_c` for any class
  :math:`c_0` the base has, with :math:`f` the classes' FLOP/s; re-combining a base with its own
  cluster gives its own times back (to the 6 significant digits both are rounded to).
* ``tight``: memory-tight variants: the shipped tight clusters (``*_tight.json``) with the models
  they were made for, and every model on ``lab8`` with the per-device budget of
  :func:`tight_budget` (a split that fits is known by construction, so each stays feasible).
* ``cost``: cost-model variants of torchvision instances (stage time the sum instead of the
  maximum of receive, compute and send; direct instead of relay transfers).
* ``pipedream``: the published PipeDream profiles (``shared/external/pipedream``) imported with
  :mod:`edgepart.interop.pipedream` at batch 1 onto 8 and 32 edge devices (Ethernet, and SEIFER's
  wireless model), the profiles taken as measured on a V100-class GPU.
* ``msr``: the MSR device-placement inputs (``shared/external/msr-dnn-partitioning``) imported
  with :mod:`edgepart.interop.msr`, with and without their CPU.
* ``llm`` and ``hybrid``: the language-model instances of ``instances/llm/`` (built from model
  configs by ``scripts/make_llm_instances.py``) and the device-group instances
  ``instances/hybrid_*.json``, as they are (only the name changes). Their proofs, like every
  proof of the suite, are over pipeline plans.
* ``seifer``: SEIFER-style wireless networks (Parthasarathy & Krishnamachari; the ``wireless``
  generator of :mod:`edgepart.profiling.clusters`): ResNet-50 on N = 5 to 100 identical Raspberry
  Pi 4 nodes placed uniformly in a 150 m square, memory budgets (32 or 64 MiB) that force a
  partition of its 102 MB of weights, no source or sink.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgepart.cost import evaluate, validate_plan
from edgepart.errors import InputError
from edgepart.files import read_json
from edgepart.instance import Instance, load_instance
from edgepart.interop import msr, pipedream
from edgepart.plan import Plan, Stage
from edgepart.profiling.catalog import load_catalog, parse_device_class
from edgepart.profiling.clusters import Cluster, instance_devices, load_cluster

__all__ = [
    "GENERATED_CLUSTERS", "SuiteInstance", "recombine", "seifer_cluster", "suite_instances",
    "tight_budget", "with_memory_budget",
]

MODELS = ("resnet50", "vgg16", "mobilenet_v2", "inception_v3", "vit_b_16")
"""Torchvision models profiled in ``instances/`` (the base of each is the file below)."""
BASES = {"resnet50": "resnet50_8nodes", "vgg16": "vgg16_4nodes",
         "mobilenet_v2": "mobilenet_v2_4nodes", "inception_v3": "inception_v3_8nodes",
         "vit_b_16": "vit_b_16_8nodes"}
LOOSE_CLUSTERS = ("lab4", "lab8", "lab16", "wifi8_mixed", "wireless20")
TIGHT_CLUSTERS = (("resnet50", "lab8_tight"), ("vgg16", "zero4_tight"),
                  ("vit_b_16", "lab8_vit_tight"))
EDGE32 = [{"class": "rpi4", "count": 12}, {"class": "rpi5", "count": 12},
          {"class": "jetson_nano", "count": 4}, {"class": "nuc_cpu", "count": 4}]
GENERATED_CLUSTERS: Mapping[str, dict[str, Any]] = {
    "lab32": {"name": "lab32", "devices": EDGE32,
              "generator": {"kind": "ethernet", "bandwidth_mbit_s": 1000, "latency_s": 0.0005},
              "source": "rpi4-0", "sink": "rpi4-0"},
    "edge8": {"name": "edge8", "devices": [{"class": c, "count": 2} for c in (
        "jetson_orin_nano", "jetson_nano", "rpi5", "rpi4")],
              "generator": {"kind": "ethernet", "bandwidth_mbit_s": 1000, "latency_s": 0.0005}},
    "edge32_wifi": {"name": "edge32_wifi", "devices": EDGE32,
                    "generator": {"kind": "wireless", "seed": 2024, "side_m": 150,
                                  "latency_s": 0.001}},
}
"""Clusters made here: 32 heterogeneous devices on Ethernet (as ``bench/scale.py``), and the
8- and 32-device clusters the PipeDream profiles are imported onto."""
LAB32_MODELS = ("resnet50", "vgg16", "mobilenet_v2", "vit_b_16")
COST_VARIANTS = (("resnet50", "lab8", {"overlap": False, "transfer": "relay"}),
                 ("resnet50", "lab8", {"overlap": True, "transfer": "direct"}),
                 ("mobilenet_v2", "lab4", {"overlap": True, "transfer": "direct"}),
                 ("vit_b_16", "lab8", {"overlap": False, "transfer": "relay"}),
                 ("vgg16", "lab4", {"overlap": False, "transfer": "direct"}))
PIPEDREAM_BATCH = {"alexnet": 256, "resnet18": 256, "vgg16": 128}
"""Model -> the batch its published profile was taken at (``docs/interop.md``)."""
PIPEDREAM_CLUSTERS = ("edge8", "lab32", "edge32_wifi")
V100 = {"memory_bytes": 16 * 2**30, "flops_per_s": 1.57e13,
        "source": "NVIDIA V100 PCIe datasheet: 14-15.7 TFLOPS FP32"}
SEIFER_NODES = (5, 10, 20, 50, 100)
SEIFER_MEMORY_MIB = (32, 64)
SEIFER_SEEDS = {5: (1, 2), 10: (1, 2), 20: (1, 2), 50: (1,), 100: (1,)}
"""Placements per network size (the largest take longest to prove, so one each)."""
MIB = 2**20
SHIPPED = (("llm", "llm/*.json", "llm_"), ("hybrid", "hybrid_*.json", ""))
"""(family, glob under ``instances/``, name prefix) of instances taken as they are."""


@dataclass(frozen=True, slots=True)
class SuiteInstance:
    """One instance of the suite: its JSON, its family and what it was made from."""

    name: str
    family: str
    data: Mapping[str, Any]


def _sig6(x: float) -> float:
    return float(f"{x:.6g}")


def recombine(base: Mapping[str, Any], cluster: Cluster, name: str,
              cost_model: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The layer graph of ``base`` (instance JSON) on ``cluster``.

    Times on the cluster's classes follow the speed model of the module docstring, from the
    first class (by name) of each layer's ``time_s``; layers without ``time_s`` keep their FLOPs
    and the devices' ``flops_per_s`` decide. Links, source and sink are the cluster's.
    """
    catalog = load_catalog().classes
    target = {c.name: c.flops_per_s for c in cluster.classes}
    model = dict(base["model"])
    layers = []
    for k, layer in enumerate(model["layers"]):
        times = layer.get("time_s", {})
        if times:
            ref = min(times)
            if ref not in catalog:
                raise InputError(f"model.layers[{k}].time_s: class {ref!r} is not in the catalog")
            flops_ref = catalog[ref].flops_per_s
            layer = {**layer, "time_s": {c: _sig6(times[ref] * flops_ref / f)
                                         for c, f in sorted(target.items())}}
        layers.append(layer)
    model["layers"] = layers
    data: dict[str, Any] = {
        "format_version": 1, "name": name,
        "description": f"{model['name']} layers of {base['name']} on cluster {cluster.name}",
        "model": model,
        "devices": instance_devices(cluster),
        "links": dict(cluster.links),
        "cost_model": dict(cost_model or base.get("cost_model", {})),
        "meta": {"suite_base": base["name"], "cluster": cluster.name},
    }
    data.update({k: v for k, v in (("source", cluster.source), ("sink", cluster.sink)) if v})
    return data


def tight_budget(inst: Instance) -> int:
    """A per-device memory budget (whole MiB) under which ``inst`` still has a plan.

    Next fit over the layer order with a target of ``T`` parameter bytes per stage (a layer
    larger than ``T`` alone) gives consecutive stages, each an ideal of the DAG; ``T`` starts at
    the parameters divided by the devices and grows by 10% until the split needs no more stages
    than there are devices and passes the checker (colocation, allowed classes). The budget is
    the largest stage memory of that split as the evaluator counts it (parameters, working set,
    receive and send buffers; none of these depends on which device runs the stage), rounded up
    to a MiB, so the split itself proves the budgeted instance feasible, and every device holds
    at most about twice its share of the weights.
    """
    params = [layer.param_bytes for layer in inst.model.layers]
    target = max(sum(params) / len(inst.devices), 1.0)
    while target <= 2 * sum(params) + 1:
        plan = _next_fit(inst, params, target)
        if plan is not None and not validate_plan(inst, plan):
            worst = max(s.memory_bytes for s in evaluate(inst, plan).stages)
            return math.ceil(worst / MIB)
        target *= 1.1
    raise InputError(f"{inst.name}: no next-fit split fits on {len(inst.devices)} devices")


def _next_fit(inst: Instance, params: list[float], target: float) -> Plan | None:
    groups: list[list[str]] = [[]]
    load = 0.0
    for layer, p in zip(inst.model.layers, params, strict=True):
        if groups[-1] and load + p > target:
            groups.append([])
            load = 0.0
        groups[-1].append(layer.id)
        load += p
    if len(groups) > len(inst.devices):
        return None
    return Plan(tuple(Stage(d.id, tuple(g)) for d, g in zip(inst.devices, groups, strict=False)),
                inst.name, "next-fit")


def with_memory_budget(data: Mapping[str, Any], budget_mib: int, name: str) -> dict[str, Any]:
    """``data`` with every device's memory set to ``budget_mib`` MiB (the share a model may use
    next to other services), which must not exceed any device's own."""
    budget = budget_mib * MIB
    small = [d["id"] for d in data["devices"] if d["memory_bytes"] < budget]
    if small:
        raise InputError(f"{name}: budget {budget_mib} MiB exceeds the memory of {small[0]}")
    devices = [{**d, "memory_bytes": budget} for d in data["devices"]]
    meta = {**data.get("meta", {}), "memory_budget_mib": budget_mib}
    return {**data, "name": name, "devices": devices, "meta": meta,
            "description": f"{data.get('description', name)}, memory budget {budget_mib} MiB "
                           "per device"}


def seifer_cluster(nodes: int, memory_mib: int, seed: int) -> Cluster:
    """SEIFER's setting: identical Raspberry Pi 4 nodes on random wireless links."""
    return load_cluster({"name": f"seifer{nodes}_s{seed}",
                         "devices": [{"class": "rpi4", "count": nodes,
                                      "memory_bytes": memory_mib * MIB}],
                         "generator": {"kind": "wireless", "seed": seed, "side_m": 150,
                                       "latency_s": 0.001}})


def suite_instances(root: Path, shared: Path) -> list[SuiteInstance]:
    """Every suite instance, in a fixed order. ``root`` is the repository (its ``instances/``),
    ``shared`` the folder holding ``external/`` (PipeDream and MSR files)."""
    bases = {m: read_json(root / "instances" / f"{BASES[m]}.json") for m in MODELS}
    clusters = {p.stem: load_cluster(p) for p in sorted((root / "instances/clusters").glob(
        "*.json"))}
    clusters.update({k: load_cluster(v) for k, v in GENERATED_CLUSTERS.items()})
    out = list(_torchvision(bases, clusters))
    out += _tight(bases, clusters)
    out += [SuiteInstance(f"tv_{m}_{c}_{_cost_tag(cm)}", "cost",
                          recombine(bases[m], clusters[c], f"tv_{m}_{c}_{_cost_tag(cm)}", cm))
            for m, c, cm in COST_VARIANTS]
    out += _pipedream(shared / "external" / "pipedream", clusters)
    out += _msr(shared / "external" / "msr-dnn-partitioning")
    out += _shipped(root / "instances")
    out += _seifer(bases["resnet50"])
    for item in out:
        load_instance(item.data)  # every file of the suite is a valid instance
    return out


def _torchvision(bases: Mapping[str, Any], clusters: Mapping[str, Cluster]
                 ) -> Iterator[SuiteInstance]:
    for m in MODELS:
        for c in (*LOOSE_CLUSTERS, *(("lab32",) if m in LAB32_MODELS else ())):
            yield SuiteInstance(f"tv_{m}_{c}", "torchvision",
                                recombine(bases[m], clusters[c], f"tv_{m}_{c}"))


def _tight(bases: Mapping[str, Any], clusters: Mapping[str, Cluster]) -> list[SuiteInstance]:
    out = [SuiteInstance(f"tv_{m}_{c}", "tight", recombine(bases[m], clusters[c], f"tv_{m}_{c}"))
           for m, c in TIGHT_CLUSTERS]
    for m in MODELS:
        loose = recombine(bases[m], clusters["lab8"], f"tv_{m}_lab8")
        budget = tight_budget(load_instance(loose))
        name = f"tv_{m}_lab8_{budget}mib"
        out.append(SuiteInstance(name, "tight", with_memory_budget(loose, budget, name)))
    return out


def _cost_tag(cost_model: Mapping[str, Any]) -> str:
    return ("overlap" if cost_model["overlap"] else "sum") + "_" + str(cost_model["transfer"])


def _pipedream(folder: Path, clusters: Mapping[str, Cluster]) -> list[SuiteInstance]:
    v100 = parse_device_class("v100", V100, "v100")
    out = []
    for model, batch in PIPEDREAM_BATCH.items():
        graph = pipedream.read_pipedream(folder / model / "graph.txt")
        for c in PIPEDREAM_CLUSTERS:
            name = f"pd_{model}_{c}"
            data = pipedream.instance_data(graph, clusters[c], profiled_on=v100, batch_size=1,
                                           profiled_batch=batch, name=name)
            out.append(SuiteInstance(name, "pipedream", data))
    return out


def _msr(folder: Path) -> list[SuiteInstance]:
    out = []
    for stem in ("bert24_inference", "gnmt_inference"):
        graph = msr.read_msr(folder / f"{stem}.json")
        for cpus in (False, True):
            name = f"msr_{stem.removesuffix('_inference')}" + ("_cpu" if cpus else "")
            out.append(SuiteInstance(name, "msr", msr.instance_data(graph, name=name, cpus=cpus)))
    return out


def _shipped(folder: Path) -> list[SuiteInstance]:
    out = []
    for family, pattern, prefix in SHIPPED:
        for path in sorted(folder.glob(pattern)):
            name = prefix + path.stem
            out.append(SuiteInstance(name, family, {**read_json(path), "name": name}))
    return out


def _seifer(base: Mapping[str, Any]) -> list[SuiteInstance]:
    out = []
    for n in SEIFER_NODES:
        for mib in SEIFER_MEMORY_MIB:
            for seed in SEIFER_SEEDS[n]:
                name = f"seifer_resnet50_n{n}_{mib}mib_s{seed}"
                out.append(SuiteInstance(name, "seifer", recombine(
                    base, seifer_cluster(n, mib, seed), name)))
    return out
