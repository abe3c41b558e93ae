"""Join a traced, measured model and a cluster into instance JSON (``docs/instance-format.md``).

Per unit (an instance ``layer``), summing its fx nodes (:mod:`edgepart.profiling.measure`):

* ``flops``: the nodes' FLOPs; ``param_bytes``: the distinct parameters and buffers they read;
* ``output_bytes``: the tensors that leave the unit (one tensor, or one bundle of a tuple's parts);
  every out-edge carries it, and ``model.input_bytes`` is the request input;
* ``work_bytes``: the peak of activation bytes alive while the unit runs: the tensors it reads
  from outside (held throughout), the values it makes until their last use inside, and its
  outputs. Aliasing (views) is ignored, so this is an upper bound;
* ``time_s[class]``: ``measured``: the median (``statistic="min"``: the minimum) over repeats of
  the unit's host time (its nodes' times summed per repeat, on ``threads`` torch threads, 1 by
  default) x the class's speed factor (:mod:`edgepart.profiling.catalog`). The minimum is the
  uncontended time when other programs share the cores; the median is the default;
  ``roofline``: the sum over nodes of ``max(flops / flops_per_s, traffic / memory_bandwidth)``;
* ``meta``: the host median, min, max and relative spread of the measurement, and for blocks the
  module-level units merged.

Devices get ``memory_bytes`` from the cluster (the class's RAM unless overridden) and the class's
``flops_per_s``; links, ``source`` and ``sink`` come from the cluster. Floats are rounded to 6
significant digits so that files are compact and stable.
"""

from __future__ import annotations

import platform
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from edgepart.errors import InputError
from edgepart.profiling.catalog import DeviceClass, load_catalog
from edgepart.profiling.clusters import Cluster, instance_devices
from edgepart.profiling.granularity import GRANULARITIES, coarsen
from edgepart.profiling.measure import (
    NodeCost,
    Timing,
    count_costs,
    summarize,
    time_forward,
    time_nodes,
)
from edgepart.profiling.numerics import torch_compute
from edgepart.profiling.trace import TracedModel, Unit, trace_model, unit_shape

__all__ = ["STATISTICS", "TIME_MODELS", "ProfileOptions", "profile_instance"]

TIME_MODELS = ("measured", "roofline")
STATISTICS = ("median", "min")


@dataclass(frozen=True, slots=True)
class ProfileOptions:
    """How to profile. ``host_flops_per_s`` None: the catalog's reference host."""

    input_shape: tuple[int, ...] = (1, 3, 224, 224)
    granularity: str = "module"
    repeats: int = 10
    warmup: int = 3
    time_model: str = "measured"
    threads: int = 1
    statistic: str = "median"
    host_flops_per_s: float | None = None
    model_kwargs: Mapping[str, Any] | None = None
    name: str | None = None
    description: str | None = None


def profile_instance(
    model: nn.Module | str, cluster: Cluster, options: ProfileOptions = ProfileOptions()
) -> dict[str, Any]:
    """Trace, measure and join ``model`` with ``cluster``; returns validated instance JSON."""
    _check(options)
    traced = coarsen(trace_model(model, options.input_shape, model_kwargs=options.model_kwargs),
                     options.granularity)
    costs = count_costs(traced)
    measured = options.time_model == "measured"
    with torch_compute(options.threads):
        samples = (time_nodes(traced, repeats=options.repeats, warmup=options.warmup)
                   if measured else {})
        forward = (time_forward(traced, repeats=options.repeats, warmup=options.warmup)
                   if measured else ())
    host_flops = options.host_flops_per_s or load_catalog().host_flops_per_s
    layers = [_layer(traced, unit, costs, samples, cluster.classes, host_flops,
                     options.statistic) for unit in traced.units]
    size = {layer["id"]: layer["output_bytes"] for layer in layers}
    edges = [{"src": s, "dst": d, "bytes": size[s]} for s, d in traced.edges]
    name = options.name or f"{traced.name.split(':')[-1]}_{len(cluster.devices)}nodes"
    instance: dict[str, Any] = {
        "format_version": 1,
        "name": name,
        "description": options.description or _description(traced, cluster, options),
        "model": {"name": traced.name.split(":")[-1],
                  "input_bytes": traced.value_bytes[traced.input_node],
                  "layers": layers, "edges": edges},
        "devices": instance_devices(cluster),
        "links": dict(cluster.links),
        "cost_model": {"overlap": True, "transfer": "relay"},
        "meta": _meta(traced, cluster, options, host_flops, layers, forward),
    }
    instance.update({k: v for k, v in (("source", cluster.source), ("sink", cluster.sink)) if v})
    from edgepart.instance import load_instance

    load_instance(instance)  # the output must be a valid instance; raises InputError if not
    return instance


def _check(options: ProfileOptions) -> None:
    if options.granularity not in GRANULARITIES:
        raise InputError(f"--granularity: expected one of {', '.join(GRANULARITIES)}, "
                         f"got {options.granularity!r}")
    if options.statistic not in STATISTICS:
        raise InputError(f"--statistic: expected one of {', '.join(STATISTICS)}, "
                         f"got {options.statistic!r}")
    if options.time_model not in TIME_MODELS:
        raise InputError(f"--time-model: expected one of {', '.join(TIME_MODELS)}, "
                         f"got {options.time_model!r}")
    if options.repeats < 1 or options.warmup < 0 or options.threads < 1:
        raise InputError(f"--repeats and --threads must be >= 1 and --warmup >= 0, got "
                         f"{options.repeats}, {options.threads} and {options.warmup}")
    if options.host_flops_per_s is not None and not options.host_flops_per_s > 0:
        raise InputError(f"--host-flops: must be > 0, got {options.host_flops_per_s}")


def _layer(traced: TracedModel, unit: Unit, costs: Mapping[str, NodeCost],
           samples: Mapping[str, Sequence[float]], classes: Sequence[DeviceClass],
           host_flops: float, statistic: str) -> dict[str, Any]:
    params = {name: nbytes for n in unit.nodes for name, nbytes in costs[n].params}
    layer: dict[str, Any] = {
        "id": unit.id, "op": unit.op,
        "flops": sum(costs[n].flops for n in unit.nodes),
        "param_bytes": sum(params.values()),
        "output_bytes": sum(traced.value_bytes[n] for n in unit.outputs),
        "work_bytes": _work_bytes(traced, unit),
    }
    meta: dict[str, Any] = {"members": list(unit.members)} if unit.members else {}
    shape = unit_shape(traced, unit)  # what splitting it over a device group needs
    if shape is not None:
        meta["shape"] = shape
    if samples:
        timing = summarize([sum(samples[n][r] for n in unit.nodes)
                            for r in range(len(samples[unit.nodes[0]]))])
        host = timing.median_s if statistic == "median" else timing.min_s
        layer["time_s"] = {c.name: _round(host * c.speed_factor(host_flops)) for c in classes}
        meta.update(_timing_meta(timing))
    else:
        layer["time_s"] = {c.name: _round(sum(_roofline(costs[n], c) for n in unit.nodes))
                           for c in classes}
    layer["nodes"] = list(unit.nodes)
    layer["meta"] = meta
    return layer


def _roofline(cost: NodeCost, c: DeviceClass) -> float:
    compute = cost.flops / c.flops_per_s
    if c.memory_bandwidth_bytes_per_s is None:
        return compute
    return max(compute, cost.traffic_bytes / c.memory_bandwidth_bytes_per_s)


def _work_bytes(traced: TracedModel, unit: Unit) -> int:
    """Peak live activation bytes while ``unit`` runs (see the module docstring)."""
    nodes = {n.name: n for n in traced.graph_module.graph.nodes}
    inside = set(unit.nodes)
    sizes = traced.value_bytes
    external = {src.name for n in unit.nodes for src in nodes[n].all_input_nodes} - inside
    held = sum(sizes.get(name, 0) for name in external if name not in traced.aliases)
    position = {name: i for i, name in enumerate(unit.nodes)}
    last_use = {name: max((position[u.name] for u in nodes[name].users if u.name in inside),
                          default=position[name]) for name in unit.nodes}
    live: dict[str, int] = {}
    peak = 0
    for i, name in enumerate(unit.nodes):
        if name not in traced.aliases:
            live[name] = sizes.get(name, 0)
        peak = max(peak, held + sum(live.values()))
        for done in [k for k in live if last_use[k] <= i and k not in unit.outputs]:
            del live[done]
    return peak


def _timing_meta(t: Timing) -> dict[str, Any]:
    return {"host_time_s": _round(t.median_s), "host_time_min_s": _round(t.min_s),
            "host_time_max_s": _round(t.max_s), "spread": round(t.spread, 4)}


def _meta(traced: TracedModel, cluster: Cluster, options: ProfileOptions, host_flops: float,
          layers: Sequence[Mapping[str, Any]], forward: Sequence[float]) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "profiler": "edgepart profile",
        "model_spec": traced.name,
        "model_kwargs": dict(options.model_kwargs or {}),
        "input_shape": list(traced.input_shape),
        "granularity": traced.granularity,
        "time_model": options.time_model,
        "statistic": options.statistic,
        "host": {"name": load_catalog().host_name if options.host_flops_per_s is None
                 else platform.processor() or platform.machine(),
                 "flops_per_s": host_flops, "torch": torch.__version__,
                 "threads": options.threads},
        "speed_factors": {c.name: _round(c.speed_factor(host_flops)) for c in cluster.classes},
        "cluster": {"name": cluster.name, **dict(cluster.meta)},
    }
    if forward:
        whole = summarize(forward)
        spreads = [layer["meta"]["spread"] for layer in layers]
        meta["timing"] = {
            "repeats": options.repeats, "warmup": options.warmup,
            "sum_of_layers_s": _round(sum(layer["meta"]["host_time_s"] for layer in layers)),
            "forward_s": _round(whole.median_s), "forward_spread": round(whole.spread, 4),
            "median_layer_spread": round(statistics.median(spreads), 4),
            "max_layer_spread": round(max(spreads), 4),
        }
    return meta


def _description(traced: TracedModel, cluster: Cluster, options: ProfileOptions) -> str:
    shape = "x".join(map(str, traced.input_shape))
    return (f"{traced.name} (input {shape}) at {traced.granularity} granularity, "
            f"{options.time_model} times, on cluster {cluster.name!r} "
            f"({len(cluster.devices)} devices)")


def _round(x: float) -> float:
    return float(f"{x:.6g}")

