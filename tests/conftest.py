from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "instances" / "tiny"


@pytest.fixture
def leave_out_envelope(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Call it to make the exact driver's envelope bound 0 with no witness, for the rest of the
    test: where a test is about what runs after it (the lattice, the relaxed or range search,
    a backend's own search), which the envelope would otherwise answer first."""
    from edgepart.bounds import Envelope
    from edgepart.solvers import exact

    def leave_out() -> None:
        monkeypatch.setattr(exact, "envelope", lambda *args, **kwargs: Envelope(0.0))

    return leave_out


@pytest.fixture
def two_layers() -> dict[str, Any]:
    """A fresh copy of instances/tiny/two_layers.json as a dict (safe to mutate)."""
    return copy.deepcopy(json.loads((TINY / "two_layers.json").read_text()))


@pytest.fixture
def run_skipnet(monkeypatch: pytest.MonkeyPatch) -> Callable[..., dict[str, Any]]:
    """Runs ``SkipNet`` (tests/test_runtime_support.py) on its 3 identical devices, cut
    [0:3] [3:5] [5:9], on local workers that import the test models, with the given
    ``RunOptions``; checks that no worker outlives the run and returns the report."""
    from test_runtime_support import (
        SPEC,
        SkipNet,
        instance_for,
        let_workers_import_test_models,
        plan_for,
        workers_of,
    )

    from edgepart.instance import load_instance
    from edgepart.plan import Plan
    from edgepart.runtime.driver import run
    from edgepart.runtime.prepare import RunOptions

    let_workers_import_test_models(monkeypatch)

    def run_it(**options: Any) -> dict[str, Any]:
        data = instance_for(SkipNet())
        report = run(load_instance(data), Plan.from_dict(plan_for(data, [3, 5])),
                     RunOptions(SPEC, **options))
        assert workers_of(os.getpid()) == []
        return report

    return run_it
