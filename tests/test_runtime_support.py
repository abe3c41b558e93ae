"""Small models and instances for the runtime tests (no tests here).

``SkipNet`` has a skip connection that crosses every cut of a 2- or 3-stage plan. Instances are
built straight from the profiling trace (units -> layers with their fx ``nodes``) with fixed
per-layer times, so they are deterministic and need no measurement.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from edgepart.profiling.trace import trace_model

SHAPE = (1, 3, 16, 16)
SPEC = "test_runtime_support:SkipNet"
TESTS = Path(__file__).resolve().parent


def let_workers_import_test_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """Put this folder on the workers' PYTHONPATH (they import ``SPEC``)."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (str(TESTS), os.environ.get("PYTHONPATH", "")) if p))


def workers_of(parent: int) -> list[int]:
    """Live worker processes spawned by driver process ``parent``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue
        if (b"worker" in args and b"--parent-pid" in args and state != "Z"
                and args[args.index(b"--parent-pid") + 1] == str(parent).encode()):
            found.append(int(proc.name))
    return found


class SkipNet(nn.Module):
    """conv -> relu -> conv -> relu -> conv, plus the first activation (a skip), -> pool -> fc."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv3 = nn.Conv2d(8, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.conv1(x))
        b = torch.relu(self.conv2(a))
        c = self.conv3(b) + a
        return self.fc(torch.flatten(self.pool(c), 1))


class OtherNet(nn.Module):
    """A different model (for 'instance for another model' errors)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(torch.flatten(x, 1)[:, :16])


def instance_for(model: nn.Module, shape: Sequence[int] = SHAPE, devices: int = 3,
                 layer_time_s: float = 1e-3, name: str = "skipnet",
                 bandwidth: float = 1e9, latency: float = 1e-4) -> dict[str, Any]:
    """An instance of ``model`` on ``devices`` identical devices (ids ``d0``, ``d1``, ...)."""
    traced = trace_model(model, shape)
    size = {u.id: sum(traced.value_bytes[o] for o in u.outputs) for u in traced.units}
    layers = [{"id": u.id, "op": u.op, "flops": 1.0, "param_bytes": 0.0,
               "output_bytes": size[u.id], "time_s": {"cpu": layer_time_s},
               "nodes": list(u.nodes)} for u in traced.units]
    return {
        "format_version": 1, "name": name,
        "model": {"name": name, "input_bytes": traced.value_bytes[traced.input_node],
                  "layers": layers,
                  "edges": [{"src": s, "dst": d, "bytes": size[s]} for s, d in traced.edges]},
        "devices": [{"id": f"d{k}", "class": "cpu", "memory_bytes": 1e9}
                    for k in range(devices)],
        "links": {"default": {"bandwidth_bytes_per_s": bandwidth, "latency_s": latency}},
        "meta": {"input_shape": list(shape)},
    }


def plan_for(inst: dict[str, Any], cuts: Sequence[int], devices: Sequence[str] | None = None
             ) -> dict[str, Any]:
    """A plan cutting the layer list before each index in ``cuts``."""
    ids = [layer["id"] for layer in inst["model"]["layers"]]
    bounds = [0, *cuts, len(ids)]
    devs = devices or [d["id"] for d in inst["devices"]]
    return {"format_version": 1, "instance": inst["name"], "method": "test",
            "stages": [{"device": devs[b], "layers": ids[bounds[b]:bounds[b + 1]]}
                       for b in range(len(bounds) - 1)]}
