"""A plan: stages in pipeline order, each a set of layers on one device; its JSON form."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgepart.errors import InputError
from edgepart.files import read_json
from edgepart.instance import Instance

__all__ = ["Plan", "Stage", "load_plan"]


@dataclass(frozen=True, slots=True)
class Stage:
    device: str
    layers: tuple[str, ...]


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
                               "stages": [{"device": s.device, "layers": list(s.layers)}
                                          for s in self.stages]}
        if self.meta:
            out["meta"] = dict(self.meta)
        return out

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def from_dict(cls, data: Any) -> Plan:
        if not isinstance(data, Mapping) or not isinstance(data.get("stages"), list):
            raise InputError("plan: must be an object with a 'stages' array")
        stages = []
        for b, raw in enumerate(data["stages"]):
            if (not isinstance(raw, Mapping) or not isinstance(raw.get("device"), str)
                    or not isinstance(raw.get("layers"), list)
                    or not all(isinstance(x, str) for x in raw["layers"])):
                raise InputError(f"plan.stages[{b}]: must be {{\"device\": id, \"layers\": [ids]}}")
            stages.append(Stage(raw["device"], tuple(raw["layers"])))
        return cls(tuple(stages), str(data.get("instance", "")), str(data.get("method", "")),
                   dict(data.get("meta", {})))


def load_plan(path: str | Path) -> Plan:
    return Plan.from_dict(read_json(path))
