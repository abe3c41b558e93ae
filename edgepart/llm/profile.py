"""A decoder-only LM and a cluster as an instance (``docs/llm.md``).

One layer per unit of :func:`edgepart.llm.costs.unit_costs` (``embed``, ``layer.i``, ``head``),
in a chain. Per layer: ``param_bytes`` = weights at the workload's dtype + the KV cache of its
resident sequences (:math:`2 n_{kv} d a \\cdot C \\cdot B`), ``work_bytes`` the working set,
``flops`` one request's FLOPs, ``output_bytes`` the tensor to the next unit, ``time_s`` per
device class: with ``time_model="measured"`` and a model small enough to build here in fp32
(:func:`edgepart.llm.measure.can_measure`), the host time of the unit times the class's speed
factor; otherwise (and with ``"roofline"``) the roofline time
``max(flops / flops_per_s, bytes / memory_bandwidth)``. The
``meta`` of each layer keeps the parts (weights, KV cache, bytes read, parameter count), the
``workload`` field says what one request is, and the instance ``meta`` the config, its source and
the parameter check against the model ``transformers`` builds from the same config.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from edgepart.errors import InputError
from edgepart.instance import Workload, load_instance
from edgepart.llm.configs import SHIPPED, DecoderShape
from edgepart.llm.costs import (
    TOKEN_ID_BYTES,
    UnitCost,
    distinct_params,
    kv_bytes_per_token,
    unit_costs,
)
from edgepart.llm.measure import can_measure, measure_unit_times
from edgepart.profiling.catalog import DeviceClass, load_catalog
from edgepart.profiling.clusters import Cluster, instance_devices

__all__ = ["LlmProfileOptions", "profile_llm_instance"]


@dataclass(frozen=True, slots=True)
class LlmProfileOptions:
    """The workload and naming; ``check_with_transformers`` builds the model on the meta device
    and requires its per-unit parameter counts to equal the analytic ones."""

    workload: Workload
    name: str | None = None
    description: str | None = None
    check_with_transformers: bool = True
    time_model: str = "roofline"
    repeats: int = 10
    warmup: int = 3
    threads: int = 1
    statistic: str = "median"

    def __post_init__(self) -> None:
        if self.time_model not in ("measured", "roofline"):
            raise InputError(f"--time-model: expected measured or roofline, got "
                             f"{self.time_model!r}")
        if self.statistic not in ("median", "min"):
            raise InputError(f"--statistic: expected median or min, got {self.statistic!r}")
        if self.repeats < 1 or self.warmup < 0 or self.threads < 1:
            raise InputError(f"--repeats and --threads must be >= 1 and --warmup >= 0, got "
                             f"{self.repeats}, {self.threads} and {self.warmup}")


def profile_llm_instance(shape: DecoderShape, cluster: Cluster, options: LlmProfileOptions
                         ) -> dict[str, Any]:
    """Instance JSON for ``shape`` on ``cluster`` (validated by :func:`load_instance`)."""
    w = options.workload
    if w.context_tokens > shape.max_positions:
        raise InputError(f"--context-tokens: {shape.name} supports at most "
                         f"{shape.max_positions} positions, got {w.context_tokens}")
    units = unit_costs(shape, w)
    measured = options.time_model == "measured" and can_measure(shape, w)
    times = (_measured_times(shape, units, cluster.classes, options) if measured
             else {u.id: {c.name: _round(u.roofline_s(c.flops_per_s,
                                                      c.memory_bandwidth_bytes_per_s))
                          for c in cluster.classes} for u in units})
    layers = [_layer(u, times[u.id]) for u in units]
    if shape.tied:
        layers[-1]["meta"]["shares_parameters_with"] = "embed"
    name = options.name or f"{shape.name}_{w.dtype}_{w.phase}_{len(cluster.devices)}dev"
    instance: dict[str, Any] = {
        "format_version": 1, "name": name,
        "description": options.description or _description(shape, cluster, w, measured),
        "model": {"name": shape.name, "input_bytes": TOKEN_ID_BYTES * w.tokens_per_request,
                  "layers": layers,
                  "edges": [{"src": a.id, "dst": b.id, "bytes": a.output_bytes}
                            for a, b in pairwise(units)]},
        "devices": instance_devices(cluster),
        "links": dict(cluster.links),
        "cost_model": {"overlap": True, "transfer": "relay"},
        "workload": w.to_dict(),
        "meta": _meta(shape, cluster, units, options, measured),
    }
    instance.update({k: v for k, v in (("source", cluster.source), ("sink", cluster.sink)) if v})
    load_instance(instance)  # the output must be a valid instance
    return instance


def _measured_times(shape: DecoderShape, units: list[UnitCost],
                    classes: tuple[DeviceClass, ...], options: LlmProfileOptions
                    ) -> dict[str, dict[str, float]]:
    host = measure_unit_times(shape, options.workload, repeats=options.repeats,
                              warmup=options.warmup, threads=options.threads,
                              statistic=options.statistic)
    host_flops = load_catalog().host_flops_per_s
    return {u.id: {c.name: _round(host[u.id] * c.speed_factor(host_flops)) for c in classes}
            for u in units}


def _layer(u: UnitCost, times: dict[str, float]) -> dict[str, Any]:
    return {
        "id": u.id, "op": u.role, "flops": u.flops, "param_bytes": u.weight_bytes + u.kv_bytes,
        "output_bytes": u.output_bytes, "work_bytes": u.work_bytes, "time_s": times,
        "nodes": list(u.modules),
        "meta": {"parameters": u.params, "weight_bytes": u.weight_bytes,
                 "kv_cache_bytes": u.kv_bytes, "bytes_read": u.traffic_bytes},
    }


def _meta(shape: DecoderShape, cluster: Cluster, units: list[UnitCost],
          options: LlmProfileOptions, measured: bool) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "profiler": "edgepart profile hf",
        "model_spec": f"hf:{shape.name}",
        "architecture": shape.architecture,
        "config": dict(shape.config),
        "parameters": distinct_params(shape),
        "tied_embeddings": shape.tied,
        "kv_cache_bytes_per_token": kv_bytes_per_token(shape, options.workload.dtype)
        * shape.layers,
        "time_model": "measured" if measured else "roofline",
        "cluster": {"name": cluster.name, **dict(cluster.meta)},
    }
    if measured:
        catalog = load_catalog()
        meta["host"] = {"name": catalog.host_name, "flops_per_s": catalog.host_flops_per_s,
                        "threads": options.threads, "repeats": options.repeats,
                        "statistic": options.statistic}
    if shape.name in SHIPPED and dict(SHIPPED[shape.name].config) == dict(shape.config):
        meta["config_source"] = SHIPPED[shape.name].source
    if options.check_with_transformers:
        meta["parameter_check"] = _check_counts(shape, units)
    return meta


def _check_counts(shape: DecoderShape, units: list[UnitCost]) -> dict[str, Any]:
    """Build the model on the meta device and compare parameters unit by unit."""
    import transformers

    from edgepart.llm.build import build_causal_lm, unit_param_counts

    built = unit_param_counts(build_causal_lm(shape, "meta"))
    analytic = {u.id: u.params for u in units}
    if built != analytic:
        wrong = next(k for k in analytic if built.get(k) != analytic[k])
        raise RuntimeError(f"analytic parameter count of {wrong} is {analytic[wrong]}, "
                           f"transformers builds {built.get(wrong)}: edgepart.llm.costs is "
                           f"wrong for {shape.architecture}")
    return {"transformers": transformers.__version__, "class": shape.architecture,
            "device": "meta", "matches": True}


def _description(shape: DecoderShape, cluster: Cluster, w: Workload, measured: bool) -> str:
    what = (f"decode of 1 token with {w.context_tokens} tokens of context" if w.phase == "decode"
            else f"prefill of {w.prompt_tokens} tokens")
    return (f"{shape.name} ({shape.architecture}, {w.dtype} weights) at decoder-layer "
            f"granularity, {what}, {w.batch} resident sequence(s), "
            f"{'measured' if measured else 'roofline'} times, on cluster "
            f"{cluster.name!r} ({len(cluster.devices)} devices)")


def _round(x: float) -> float:
    return float(f"{x:.6g}")
