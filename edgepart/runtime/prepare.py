"""Everything the driver checks and computes before it starts a single worker.

Bad input fails here, before any process exists: the plan against the instance, the instance
against the model (every fx node in exactly one layer), the fault and slowdown options, and
whether this host can emulate the cluster at the requested ``--time-scale`` (``auto`` picks the
smallest one that fits). The request inputs and the unsplit model's reference outputs are made
here too, so the driver does no model work while it measures.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import fx, nn

from edgepart.cost import evaluate, validate_plan
from edgepart.errors import InputError
from edgepart.instance import CostModel, Instance, Transfer
from edgepart.plan import Plan
from edgepart.profiling.numerics import torch_compute
from edgepart.runtime.emulate import (
    CPU_HEADROOM,
    Emulation,
    Mode,
    cgroup_problem,
    scale_needed,
    stage_cpus,
)
from edgepart.runtime.emulate import usable_cpus as host_cpus
from edgepart.runtime.groups import split_refusals
from edgepart.runtime.split import StageSpec, build_stage, load_model, split_plan, trace
from edgepart.runtime.transport import Address

__all__ = ["INPUT_POOL", "Prepared", "RunOptions", "Slowdown", "prepare", "stretch_cpus"]

INPUT_POOL = 8
"""Distinct request inputs; request ``i`` sends input ``i % INPUT_POOL``."""


@dataclass(frozen=True, slots=True)
class Slowdown:
    """``--slowdown DEVICE:FACTOR@REQUEST``: the device's compute is ``factor`` times slower
    from request id ``request`` on."""

    device: str
    factor: float
    request: int


@dataclass(frozen=True)
class RunOptions:
    model: str
    requests: int = 20
    inflight: int | None = None  # None: enough to fill the pipeline (see prepare)
    emulate: Mode = Mode.NONE
    time_scale: float | None = 1.0  # None: auto
    master: Address | None = None
    fail_stage: int | None = None
    fail_after: int | None = None
    fail_hang: bool = False
    adapt: bool = False
    slowdowns: tuple[Slowdown, ...] = ()
    seed: int = 0
    weights: str | None = None
    input_shape: tuple[int, ...] | None = None
    replan_time_limit_s: float = 10.0
    timeline: str | None = None  # a PNG of measured against predicted stage activity
    startup_timeout_s: float = 120.0
    heartbeat_timeout_s: float = 10.0


@dataclass
class Prepared:
    inst: Instance
    plan: Plan
    options: RunOptions
    model: nn.Module
    gm: fx.GraphModule
    input_shape: tuple[int, ...]
    inputs: list[torch.Tensor]
    references: list[Any]
    emulation: Emulation
    cpus: float
    inflight: int
    cgroup_cpus: dict[str, float] | None = None  # quotas of the plan's devices (cgroup mode)
    weight_cgroups: bool = False  # stretch: workers in cgroups of top weight and no quota
    warnings: list[str] = field(default_factory=list)


def prepare(inst: Instance, plan: Plan, options: RunOptions) -> Prepared:
    """Check the inputs and make the requests; raises :class:`InputError` on bad input."""
    _check_options(inst, plan, options)
    warnings = []
    if inst.cost_model.transfer is Transfer.DIRECT:
        warnings.append("the runtime relays tensors stage to stage: predictions use "
                        "transfer=relay, not the instance's direct")
        inst = replace(inst, cost_model=CostModel(inst.cost_model.overlap, Transfer.RELAY))
    shape = options.input_shape or _recorded_shape(inst)
    model = load_model(options.model, options.seed, options.weights)
    gm = trace(model, shape).graph_module
    specs = split_plan(gm, inst, plan)
    refusals = split_refusals(gm, inst, plan)
    if refusals:
        raise InputError(refusals)
    inputs = _inputs(shape, options.seed, min(options.requests, INPUT_POOL))
    with torch_compute(1), torch.no_grad():
        references = [model(x) for x in inputs]
    # the first comparison loads torch.testing's internals (0.7 s on a busy host): here, not on
    # the first answer, where it held up the driver and the requests behind it
    torch.testing.assert_close(references[0], references[0])
    predicted = evaluate(inst, plan)
    inflight = options.inflight or math.ceil(2 * predicted.latency_s / predicted.bottleneck_s) + 1
    prep = Prepared(inst, plan, options, model, gm, shape, inputs, references,
                    Emulation(options.emulate, options.time_scale or 1.0), host_cpus(),
                    inflight, warnings=warnings)
    if torch.Size(shape).numel() * 4 != inst.model.input_bytes:
        warnings.append(f"input {list(shape)} has {torch.Size(shape).numel() * 4} bytes but the "
                        f"instance says {inst.model.input_bytes:.0f}: predictions may be off")
    _fit_host(prep, specs)
    if options.emulate is Mode.STRETCH:
        _protect_stretch(prep)
    return prep


def _check_options(inst: Instance, plan: Plan, options: RunOptions) -> None:
    problems = validate_plan(inst, plan)
    if problems:
        raise InputError([f"plan: {p}" for p in problems])
    groups = [b for b, stage in enumerate(plan.stages) if stage.is_group]
    if groups and options.emulate is Mode.CGROUP:  # quotas are set per stage, not per member
        raise InputError(f"--emulate cgroup: plan stages[{groups[0]}] is a device group; "
                         "groups run with --emulate none or pad")
    if options.emulate is Mode.STRETCH:
        stretch_cpus(inst)
    if options.requests < 1:
        raise InputError(f"--requests: must be >= 1, got {options.requests}")
    if options.inflight is not None and options.inflight < 1:
        raise InputError(f"--inflight: must be >= 1, got {options.inflight}")
    if options.time_scale is not None and not options.time_scale > 0:
        raise InputError(f"--time-scale: must be > 0, got {options.time_scale}")
    if (options.fail_stage is None) != (options.fail_after is None):
        raise InputError("--fail-stage and --fail-after go together")
    if options.timeline is not None and not Path(options.timeline).parent.resolve().is_dir():
        raise InputError(f"--timeline: no folder {str(Path(options.timeline).parent)!r} to "
                         "write into")
    if options.fail_hang and options.fail_stage is None:
        raise InputError("--fail-hang: needs --fail-stage and --fail-after")
    if not options.heartbeat_timeout_s > 0:
        raise InputError(f"--heartbeat-timeout: must be > 0, got {options.heartbeat_timeout_s}")
    if options.fail_stage is not None and not 0 <= options.fail_stage < len(plan.stages):
        raise InputError(f"--fail-stage: the plan has stages 0..{len(plan.stages) - 1}, "
                         f"got {options.fail_stage}")
    if options.fail_after is not None and options.fail_after < 0:
        raise InputError(f"--fail-after: must be >= 0, got {options.fail_after}")
    for s in options.slowdowns:
        if s.device not in inst.device_index:
            raise InputError(f"--slowdown: unknown device '{s.device}'")
    if options.emulate is Mode.CGROUP and options.master is not None:
        raise InputError("--emulate cgroup limits workers that this driver spawns; "
                         "it cannot be combined with --master")


def _recorded_shape(inst: Instance) -> tuple[int, ...]:
    shape = inst.meta.get("input_shape")
    if not (isinstance(shape, Sequence) and shape and all(isinstance(d, int) for d in shape)):
        raise InputError("--input-shape: the instance records no input shape (meta.input_shape); "
                         "give one, e.g. --input-shape 1,3,224,224")
    return tuple(shape)


def _inputs(shape: tuple[int, ...], seed: int, count: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed + 1)
    return [torch.randn(shape, generator=generator) for _ in range(count)]


def stage_seconds(gm: fx.GraphModule, specs: Sequence[StageSpec], x: torch.Tensor,
                  repeats: int = 5) -> list[float]:
    """Single-thread time of every stage on this host: the least of ``repeats`` passes after a
    warm-up (on a shared host the least is the time without interference, which a worker with
    a CPU quota and top scheduling weight gets)."""
    stages = [build_stage(gm, spec) for spec in specs]
    samples: list[list[float]] = [[] for _ in stages]
    with torch_compute(1), torch.no_grad():
        for rep in range(repeats + 1):
            values: Any = (x,)
            for stage, times in zip(stages, samples, strict=True):
                t0 = time.perf_counter()
                values = stage(*values)
                if rep:
                    times.append(time.perf_counter() - t0)
    return [min(times) for times in samples]


def stretch_cpus(inst: Instance) -> dict[str, float]:
    """Every device's CPU share for ``--emulate stretch``: its ``meta.cpus``, which every device
    must have (the share is the device's, never derived from the predicted times)."""
    out = {}
    for k, device in enumerate(inst.devices):
        value = device.meta.get("cpus")
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value <= 1:
            raise InputError(f"devices[{k}].meta.cpus: --emulate stretch needs every device's "
                             f"CPU share in (0, 1], got {value!r} (else use --emulate pad)")
        out[device.id] = float(value)
    return out


def _fit_host(prep: Prepared, specs: Sequence[StageSpec]) -> None:
    """Choose ``--time-scale auto`` or refuse a scale the host cannot keep up with; set the
    threads of every worker, the cgroup quotas and the stretch shares.

    Two limits: all the emulated compute together must fit the host's CPUs (with
    :data:`CPU_HEADROOM`), and no used device may be faster than :data:`CPU_HEADROOM` of one
    host CPU (each worker computes on one thread, sharing the cores with the others).
    """
    options, inst = prep.options, prep.inst
    if options.emulate is Mode.NONE:
        return
    host = stage_seconds(prep.gm, specs, prep.inputs[0])
    speed = stage_cpus(inst, prep.plan, host, 1.0)
    shares = stretch_cpus(inst) if options.emulate is Mode.STRETCH else {}
    if shares:  # every replica computes at its device's share
        speed = {d: shares[d] for st in prep.plan.stages for d in st.members}
    if options.emulate in (Mode.CGROUP, Mode.STRETCH):
        demand = sum(speed.values())
    else:
        demand = sum(host) / evaluate(inst, prep.plan).bottleneck_s
    fastest = max(speed.values())
    need = max(scale_needed(demand, prep.cpus), scale_needed(fastest, 1.0))
    scale = options.time_scale or max(1.0, math.ceil(need * 10) / 10)
    if scale < need:
        raise InputError(
            f"--time-scale {scale:g}: this host cannot keep up: the emulated devices need "
            f"{demand / scale:.2f} CPUs (it has {prep.cpus:g}, {CPU_HEADROOM:.0%} usable) and "
            f"the fastest is {fastest / scale:.2f} x one CPU; use "
            f"--time-scale {math.ceil(need * 10) / 10:g} or more (or auto)")
    prep.emulation = Emulation(options.emulate, scale, tuple(shares.items()))
    if options.emulate is Mode.CGROUP:
        prep.cgroup_cpus = {d: c / scale for d, c in speed.items()}


def _protect_stretch(prep: Prepared) -> None:
    """Put ``stretch`` workers in cgroups of the top CPU weight and no quota, as ``cgroup``
    workers are, when this driver spawns them and may make cgroups (root); else warn.

    Stretch is faithful only while a worker's thread gets ``cpus / time_scale`` of a core
    whenever it computes. At normal weight, other load on the host takes its share of the cores
    from the workers (measured: real share 1.00, i.e. the stretch no longer bound, at load
    5-12 on 2 cores); at the top weight the scheduler serves them first. No quota: the stretch
    itself sets the device's speed, and a quota would throttle the full-speed compute it
    measures.
    """
    if prep.options.master is not None:
        problem = "the workers are started by hand (--master)"
    else:
        problem = cgroup_problem()
    prep.weight_cgroups = not problem
    if problem:
        prep.warnings.append(
            "--emulate stretch: the workers compete with other load on this host at normal CPU "
            f"weight ({problem}); on a busy host they are starved and run slower than emulated")
