"""The solver core and the CLI's parser import and run without importing torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TINY = Path(__file__).resolve().parents[1] / "instances" / "tiny"

SCRIPT = f"""
import sys
import edgepart
from edgepart.cli import build_parser
build_parser()
inst = edgepart.load_instance({str(TINY / "chain5_relay.json")!r})  # SEIFER: no plan on dag5
for method in ("cpsat", "highs", "dp", "local", "seifer"):
    assert edgepart.solve(inst, method).has_plan, method
edgepart.compare(inst)
assert "torch" not in sys.modules, "torch was imported"
print("ok")
"""


def test_core_runs_without_importing_torch() -> None:
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
