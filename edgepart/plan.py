"""A plan: stages in pipeline order, each a set of layers on one device or on a device group; its
JSON form.

A stage is ``{"device": ID, "layers": [...]}`` (one device, as always), or a *group*
``{"devices": [IDs], "mode": "replicate"|"split", "layers": [...], "schemes": {LAYER: SCHEME}}``:

* ``replicate``: every device of the group holds all the stage's layers and takes a share of the
  requests (data parallelism inside a pipeline stage);
* ``split``: every layer of the stage is computed by all devices of the group together, each a
  slice of the layer's output chosen by the layer's scheme (:class:`Scheme`, after FlexPie); the
  first device of ``devices`` is the group's *lead*, which receives the stage's input and sends
  its output, and takes the first slice (the others follow in the instance's device order).
  ``schemes`` names a scheme for every layer that is not elementwise (elementwise layers take
  their producer's).

How a group is costed is :mod:`edgepart.cost`'s business; this module only holds and reads it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from edgepart.errors import InputError
from edgepart.files import read_json
from edgepart.instance import Instance

__all__ = ["Mode", "Plan", "Scheme", "Stage", "load_plan"]


class Mode(StrEnum):
    """How a stage uses its devices."""

    SINGLE = "single"
    REPLICATE = "replicate"
    SPLIT = "split"


class Scheme(StrEnum):
    """How a split layer's output is sliced over a group (FlexPie's schemes)."""

    OUTC = "outc"  # output channels (features): every device needs the whole input
    ROWS = "rows"  # output rows: every device needs its input rows plus the kernel's halo
    GRID = "grid"  # 2D tiles of the feature map, each with its halo


@dataclass(frozen=True, slots=True)
class Stage:
    """Layers on one device (``devices`` empty, mode single) or on a group (``device`` is then
    the group's first device: its lead)."""

    device: str
    layers: tuple[str, ...]
    devices: tuple[str, ...] = ()
    mode: Mode = Mode.SINGLE
    schemes: tuple[tuple[str, Scheme], ...] = ()

    @classmethod
    def group(cls, devices: Sequence[str], mode: Mode | str, layers: Sequence[str],
              schemes: Mapping[str, Scheme | str] | None = None) -> Stage:
        """A group stage (``devices[0]`` leads a split group)."""
        pairs = tuple((lid, Scheme(s)) for lid, s in (schemes or {}).items())
        return cls(devices[0], tuple(layers), tuple(devices), Mode(mode), pairs)

    @property
    def is_group(self) -> bool:
        """Replicated or split over several devices (not today's one-device stage)."""
        return self.mode is not Mode.SINGLE

    @property
    def members(self) -> tuple[str, ...]:
        """Every device of the stage (one for a single-device stage)."""
        return self.devices or (self.device,)

    @property
    def scheme_of(self) -> dict[str, Scheme]:
        return dict(self.schemes)

    def to_dict(self) -> dict[str, Any]:
        if self.mode is Mode.SINGLE:
            return {"device": self.device, "layers": list(self.layers)}
        out: dict[str, Any] = {"devices": list(self.devices), "mode": self.mode.value,
                               "layers": list(self.layers)}
        if self.schemes:
            out["schemes"] = {lid: s.value for lid, s in self.schemes}
        return out


@dataclass(frozen=True, slots=True)
class Plan:
    """Stages in pipeline order. ``method`` names what produced it (free text)."""

    stages: tuple[Stage, ...]
    instance: str = ""
    method: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_assignment(cls, inst: Instance, stage_of: Sequence[int],
                        device_of_stage: Sequence[int], method: str = "") -> Plan:
        """A plan from layer -> stage index and stage -> device index (empty stages dropped)."""
        stages = []
        for b, d in enumerate(device_of_stage):
            layers = tuple(inst.model.layers[v].id for v, s in enumerate(stage_of) if s == b)
            if layers:
                stages.append(Stage(inst.devices[d].id, layers))
        return cls(tuple(stages), inst.name, method)

    def stage_of(self, inst: Instance) -> list[int]:
        """Layer index -> stage index (-1 for a layer in no stage)."""
        out = [-1] * len(inst.model.layers)
        for b, st in enumerate(self.stages):
            for lid in st.layers:
                if lid in inst.model.index:
                    out[inst.model.index[lid]] = b
        return out

    def devices(self, inst: Instance) -> list[int]:
        return [inst.device_index.get(st.device, -1) for st in self.stages]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format_version": 1, "instance": self.instance,
                               "method": self.method,
                               "stages": [s.to_dict() for s in self.stages]}
        if self.meta:
            out["meta"] = dict(self.meta)
        return out

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def from_dict(cls, data: Any) -> Plan:
        if not isinstance(data, Mapping) or not isinstance(data.get("stages"), list):
            raise InputError("plan: must be an object with a 'stages' array")
        stages = tuple(_stage(raw, f"plan.stages[{b}]") for b, raw in enumerate(data["stages"]))
        return cls(stages, str(data.get("instance", "")), str(data.get("method", "")),
                   dict(data.get("meta", {})))


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(x, str) for x in value)


def _stage(raw: Any, path: str) -> Stage:
    """One stage in either JSON form, every problem named by its path."""
    if not isinstance(raw, Mapping) or not _strings(raw.get("layers")):
        raise InputError(f"{path}: must be {{\"device\": id, \"layers\": [ids]}} or "
                         f"{{\"devices\": [ids], \"mode\": ..., \"layers\": [ids]}}")
    if "devices" not in raw:
        if not isinstance(raw.get("device"), str):
            raise InputError(f"{path}.device: must be a device id")
        return Stage(raw["device"], tuple(raw["layers"]))
    if "device" in raw:
        raise InputError(f"{path}: give either 'device' or 'devices', not both")
    if not _strings(raw["devices"]) or len(raw["devices"]) < 2:
        raise InputError(f"{path}.devices: must list at least 2 device ids")
    modes = (Mode.REPLICATE.value, Mode.SPLIT.value)
    if raw.get("mode") not in modes:
        raise InputError(f"{path}.mode: must be one of {', '.join(modes)}, got "
                         f"{json.dumps(raw.get('mode'))}")
    schemes = raw.get("schemes", {})
    names = [s.value for s in Scheme]
    if not isinstance(schemes, Mapping):
        raise InputError(f"{path}.schemes: must be an object {{layer: scheme}}")
    for lid, scheme in schemes.items():
        if scheme not in names:
            raise InputError(f"{path}.schemes.{lid}: must be one of {', '.join(names)}, got "
                             f"{json.dumps(scheme)}")
    if schemes and raw["mode"] != Mode.SPLIT.value:
        raise InputError(f"{path}.schemes: only a split stage has schemes")
    return Stage.group(raw["devices"], raw["mode"], raw["layers"], schemes)


def load_plan(path: str | Path) -> Plan:
    return Plan.from_dict(read_json(path))
