"""edgepart-suite: the manifest's claims hold, small instances re-prove, the builder is exact.

Known answers here are derived by hand in the comments (or are the hand-derived optima of
``instances/tiny``), never copied from the code's output.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from edgepart.cost import evaluate
from edgepart.errors import InputError
from edgepart.instance import load_instance
from edgepart.plan import load_plan
from edgepart.profiling.clusters import load_cluster
from edgepart.profiling.jsonfmt import dumps
from edgepart.solvers.base import solve
from edgepart.suite import (
    MANIFEST,
    Manifest,
    check_entry,
    entry_for,
    file_sha256,
    load_manifest,
    prove,
    prove_suite,
    save_manifest,
)
from edgepart.suite_build import recombine, suite_instances, tight_budget, with_memory_budget

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "instances" / "suite"
SHARED = ROOT.parent / "shared"
SMALL_PROOF_S = 0.5
"""Re-prove the settled proofs that took at most this long when recorded."""


@pytest.fixture(scope="module")
def manifest() -> Manifest:
    return load_manifest(SUITE / MANIFEST)


def test_suite_size_and_every_objective_recorded(manifest: Manifest) -> None:
    assert len(manifest.entries) >= 60
    families = {e.family for e in manifest.entries}
    assert {"torchvision", "tight", "cost", "pipedream", "msr", "seifer", "llm", "hybrid"
            } <= families
    sizes = [e.devices for e in manifest.entries if e.family == "seifer"]
    assert min(sizes) == 5 and max(sizes) == 100
    for e in manifest.entries:
        assert set(e.proofs) == {"bottleneck", "latency"}, e.name
        for p in e.proofs.values():
            # optimal or infeasible, or a stated bound and gap (or no plan at all)
            assert p.settled or p.status == "none" or (p.gap is not None and p.bound_s
                                                       is not None), (e.name, p)
            assert p.time_limit_s > 0 and p.machine and p.backend


def test_manifest_claims_hold_under_the_evaluator(manifest: Manifest) -> None:
    problems = [p for e in manifest.entries for p in check_entry(manifest, e)]
    assert problems == []


def test_small_instances_reprove(manifest: Manifest) -> None:
    small = [(e, o, p) for e in manifest.entries for o, p in e.proofs.items()
             if p.settled and p.solve_time_s <= SMALL_PROOF_S and e.layers * e.devices <= 2000]
    assert len(small) >= 20
    for entry, objective, recorded in small:
        fresh, _ = prove(entry, load_instance(manifest.path(entry)), objective,
                         method=recorded.backend.split(" ")[0], time_limit=30)
        assert fresh.status == recorded.status, (entry.name, objective)
        if recorded.status == "optimal":
            assert fresh.objective_s == pytest.approx(recorded.objective_s, rel=1e-6)


@pytest.mark.skipif(not (SHARED / "external").exists(), reason="no ../shared/external here")
def test_files_are_what_the_script_makes(manifest: Manifest) -> None:
    """Regenerated, not hand-edited: each file's bytes are the builder's output."""
    built = {item.name: item for item in suite_instances(ROOT, SHARED)}
    stale = "out of date: run scripts/make_suite.py, then scripts/prove_suite.py"
    assert set(built) == {e.name for e in manifest.entries}, stale
    for e in manifest.entries:
        text = dumps(dict(built[e.name].data)) + "\n"
        assert (manifest.path(e)).read_text() == text, f"{e.name}: {stale}"
        assert built[e.name].family == e.family


def test_tiny_known_answers_through_prove_suite(tmp_path: Path) -> None:
    """The prover on instances/tiny reproduces their hand-derived optima."""
    entries = []
    for path in sorted((ROOT / "instances" / "tiny").glob("*.optimum.json")):
        src = path.with_name(path.name.replace(".optimum", ""))
        shutil.copy(src, tmp_path / src.name)
        entries.append(entry_for(load_instance(src), src.name, "tiny",
                                 file_sha256(tmp_path / src.name)))
    save_manifest(Manifest(tuple(entries), tmp_path), tmp_path / MANIFEST)
    result = prove_suite(tmp_path / MANIFEST, time_limit=20, progress=False)
    for entry in result.entries:
        known = json.loads((ROOT / "instances/tiny" / entry.file.replace(
            ".json", ".optimum.json")).read_text())
        for objective, answer in known.items():
            proof = entry.proofs[objective]
            if answer == "infeasible":
                assert proof.status == "infeasible", entry.name
            else:
                assert proof.status == "optimal", entry.name
                assert proof.objective_s == pytest.approx(answer, rel=1e-6), entry.name
        assert check_entry(result, entry) == []
    # resumable: everything is settled, so a second run proves nothing again
    before = (tmp_path / MANIFEST).read_text()
    prove_suite(tmp_path / MANIFEST, time_limit=20, progress=False)
    assert (tmp_path / MANIFEST).read_text() == before


def _chain(params_mib: list[int], time_rpi5: float) -> dict:
    mib = 2**20
    layers = [{"id": f"l{k}", "op": "x", "flops": 0, "param_bytes": p * mib, "output_bytes": 0,
               "time_s": {"rpi5": time_rpi5}} for k, p in enumerate(params_mib)]
    edges = [{"src": f"l{k}", "dst": f"l{k + 1}"} for k in range(len(params_mib) - 1)]
    return {"format_version": 1, "name": "base", "model": {"name": "chain", "input_bytes": 0,
                                                           "layers": layers, "edges": edges},
            "devices": [{"id": "p", "class": "rpi5", "memory_bytes": 2**33}],
            "links": {"default": {"bandwidth_bytes_per_s": 1e6, "latency_s": 0}}}


def test_recombine_scales_times_by_flops() -> None:
    # rpi5 153.6 GFLOP/s, rpi4 57.6 GFLOP/s (catalog): 0.003 s on a Pi 5 is
    # 0.003 * 153.6 / 57.6 = 0.008 s on a Pi 4
    cluster = load_cluster({"devices": [{"class": "rpi4", "count": 2}],
                            "generator": {"kind": "ethernet"}})
    data = recombine(_chain([1, 1], 0.003), cluster, "moved")
    assert data["model"]["layers"][0]["time_s"] == {"rpi4": pytest.approx(0.008, rel=1e-6)}
    assert [d["id"] for d in data["devices"]] == ["rpi4-0", "rpi4-1"]


def test_recombine_with_its_own_cluster_gives_the_profiled_times() -> None:
    base = json.loads((ROOT / "instances/resnet50_8nodes.json").read_text())
    again = recombine(base, load_cluster(ROOT / "instances/clusters/lab8.json"), "again")
    for old, new in zip(base["model"]["layers"], again["model"]["layers"], strict=True):
        for cls, t in old["time_s"].items():  # both rounded to 6 significant digits
            assert new["time_s"][cls] == pytest.approx(t, rel=2e-5), (old["id"], cls)


def test_tight_budget_by_hand() -> None:
    # four 4 MiB layers (no tensors, no working set) on two devices: 16 MiB / 2 = 8 MiB a
    # stage, next fit gives [l0 l1] [l2 l3], so the budget is 8 MiB, and at 8 MiB a plan exists
    data = _chain([4, 4, 4, 4], 0.001)
    data["devices"] = [{"id": f"p{k}", "class": "rpi5", "memory_bytes": 2**33} for k in (0, 1)]
    assert tight_budget(load_instance(data)) == 8
    squeezed = load_instance(with_memory_budget(data, 8, "squeezed"))
    assert [d.memory_bytes for d in squeezed.devices] == [8 * 2**20] * 2
    result = solve(squeezed, "auto", time_limit=10)
    assert result.status.value == "optimal"
    # 5+4+4+4 = 17 MiB on two devices: 8.5 MiB target, next fit [l0] [l1 l2] [l3] needs three
    # stages; at 9.35 MiB [l0 l1]=9 [l2 l3]=8 fits in two, so the budget is 9 MiB
    uneven = _chain([5, 4, 4, 4], 0.001)
    uneven["devices"] = data["devices"]
    assert tight_budget(load_instance(uneven)) == 9


def test_every_memory_budgeted_suite_instance_is_feasible(manifest: Manifest) -> None:
    for e in manifest.entries:
        if e.family == "tight":
            assert all(p.status != "infeasible" for p in e.proofs.values()), e.name


def test_bad_manifest_names_the_field(tmp_path: Path) -> None:
    data = json.loads((SUITE / MANIFEST).read_text())
    data["instances"][0]["proofs"]["bottleneck"]["status"] = "great"
    data["instances"][1]["layers"] = "many"
    path = tmp_path / MANIFEST
    path.write_text(json.dumps(data))
    with pytest.raises(InputError) as err:
        load_manifest(path)
    text = str(err.value)
    assert "instances[0].proofs.bottleneck.status: expected one of" in text
    assert "instances[1].layers: expected int" in text


def test_a_changed_file_is_reported(tmp_path: Path, manifest: Manifest) -> None:
    entry = replace(manifest.entries[0], proofs={})
    shutil.copy(manifest.path(entry), tmp_path / entry.file)
    copy = Manifest((entry,), tmp_path)
    assert check_entry(copy, entry) == []
    inst = json.loads((tmp_path / entry.file).read_text())
    inst["description"] = "edited by hand"
    (tmp_path / entry.file).write_text(json.dumps(inst))
    assert "changed since the manifest was written" in check_entry(copy, entry)[0]


def test_a_wrong_claim_is_caught(tmp_path: Path, manifest: Manifest) -> None:
    entry = next(e for e in manifest.entries if e.optimum("bottleneck") is not None)
    for f in (entry.file, entry.proofs["bottleneck"].plan):
        assert f is not None
        (tmp_path / f).parent.mkdir(exist_ok=True)
        shutil.copy(manifest.folder / f, tmp_path / f)
    proof = entry.proofs["bottleneck"]
    optimum = entry.optimum("bottleneck")
    assert optimum is not None
    wrong = replace(entry, proofs={"bottleneck": replace(proof, objective_s=optimum * 0.9,
                                                         bound_s=optimum * 0.9)})
    problems = check_entry(Manifest((wrong,), tmp_path), wrong)
    assert any("evaluates to" in p for p in problems)
    plan = load_plan(tmp_path / str(proof.plan))
    value = evaluate(load_instance(tmp_path / entry.file), plan).bottleneck_s
    assert value == pytest.approx(optimum, rel=1e-9)
