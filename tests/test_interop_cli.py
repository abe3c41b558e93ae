"""The interop commands through the top-level ``edgepart`` CLI: import, score with ``evaluate``,
export; bad input is one line and exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgepart.cli import main

MSR = {
    "maxSizePerFPGA": 1e6, "maxFPGAs": 2, "maxCPUs": 0,
    "nodes": [{"id": i, "supportedOnFpga": 1, "cpuLatency": 10.0 * i, "fpgaLatency": float(i),
               "isBackwardNode": 0, "size": 100.0} for i in (1, 2, 3)],
    "edges": [{"sourceId": 1, "destId": 2, "cost": 0.5}, {"sourceId": 2, "destId": 3,
                                                           "cost": 0.25}],
}


def test_msr_import_split_evaluate_export(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    src, inst, split, plan = (tmp_path / n for n in ("g.json", "i.json", "s.json", "p.json"))
    src.write_text(json.dumps(MSR))
    split.write_text(json.dumps({"fpgas": [{"load": -1, "nodes": [3]},
                                           {"load": -1, "nodes": [1, 2]}], "cpus": []}))
    assert main(["import", "msr", str(src), "--out", str(inst)]) == 0
    assert main(["import", "msr-plan", str(split), "--instance", str(inst),
                 "--out", str(plan)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(inst), str(plan), "--json"]) == 0
    # stage fpga1 = {1, 2}: compute 3 + send 0.25; stage fpga0 = {3}: compute 3 + receive 0.25
    assert json.loads(capsys.readouterr().out)["bottleneck_s"] == pytest.approx(3.25)
    assert main(["export-plan", "msr", str(plan), "--instance", str(inst),
                 "--out", str(tmp_path / "out.json")]) == 0
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["maxLoad"] == pytest.approx(3.25)
    assert [g["nodes"] for g in out["fpgas"]] == [[1, 2], [3]]


@pytest.mark.parametrize("argv", [
    ["import", "msr", "missing.json", "--out", "x.json"],
    ["import", "pipedream", "missing.txt", "--cluster", "c.json", "--out", "x.json"],
    ["import", "msr-plan", "missing.json", "--instance", "i.json", "--out", "p.json"],
    ["export-plan", "msr", "missing.json", "--instance", "i.json"],
])
def test_bad_input_is_one_line_and_exit_2(argv: list[str], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot read" in err


def test_usage_error_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["import", "msr"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1
