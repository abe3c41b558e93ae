"""edgepart-suite: the manifest of ``instances/suite/`` and the proofs it records.

The manifest (``instances/suite/manifest.json``) lists every instance of the suite with its
sizes (layers, edges, ideals of the layer DAG when there are at most
:data:`~edgepart.cuts.MAX_IDEALS`, devices, device classes and interchangeable device types),
its cost-model options and, per objective (``bottleneck``: the period; ``latency``), a
:class:`Proof`: what one exact run found, with the backend that answered, its time, the time
limit and the machine. A proof's ``status`` is the solver result's own status
(:class:`edgepart.results.SolutionStatus`): ``optimal`` only where the solver's bound meets the
plan's objective as re-evaluated by the one cost model (within
:data:`~edgepart.results.OPTIMALITY_TOL`), ``infeasible`` only where no plan exists, else
``feasible`` with the best bound and the relative gap ``(objective - bound) / objective``, or
``none`` when no plan was found. The plan itself is kept beside the manifest
(``plans/NAME.OBJECTIVE.json``) so that every claim can be re-checked by the evaluator
(:func:`check_entry`) without trusting the solver again.

Instances are made by ``scripts/make_suite.py`` (:mod:`edgepart.suite_build`); proofs by
``scripts/prove_suite.py`` (:func:`prove`), which keeps proofs whose instance file is unchanged
(same SHA-256).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from edgepart import __version__
from edgepart.cost import evaluate, validate_plan
from edgepart.cuts import DeviceTypes, ideal_family
from edgepart.errors import InputError
from edgepart.files import read_json
from edgepart.instance import Instance, load_instance
from edgepart.plan import load_plan
from edgepart.profiling.jsonfmt import dumps
from edgepart.results import OPTIMALITY_TOL, SolutionStatus, SolveResult, Termination
from edgepart.solvers.base import Objective, SolveOptions, solve
from edgepart.suite_build import SuiteInstance

__all__ = [
    "MANIFEST_VERSION", "OBJECTIVES", "Manifest", "Proof", "SuiteEntry", "check_entry",
    "entry_for", "file_sha256", "load_manifest", "machine", "prove", "prove_suite",
    "save_manifest", "write_suite",
]

MANIFEST_VERSION = 1
MANIFEST = "manifest.json"
OBJECTIVES = tuple(o.value for o in Objective)
STATUSES = tuple(s.value for s in SolutionStatus)
SETTLED = ("optimal", "infeasible")
"""Proof statuses that settle an objective (``prove_suite`` skips them unless forced)."""


@dataclass(frozen=True, slots=True)
class Proof:
    """One exact run on one objective (see the module docstring)."""

    status: str
    objective_s: float | None
    bound_s: float | None
    gap: float | None
    backend: str
    solve_time_s: float
    time_limit_s: float
    machine: str
    edgepart: str
    plan: str | None = None
    message: str = ""

    @property
    def settled(self) -> bool:
        return self.status in SETTLED

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class SuiteEntry:
    """One instance of the suite: where it is, what it is and what is proven about it."""

    name: str
    file: str
    family: str
    sha256: str
    layers: int
    edges: int
    ideals: int | None
    devices: int
    device_classes: tuple[str, ...]
    device_types: int
    overlap: bool
    transfer: str
    source: str | None
    sink: str | None
    description: str
    proofs: Mapping[str, Proof]

    def optimum(self, objective: str) -> float | None:
        """The proven optimum of ``objective``, or ``None`` when it is not proven."""
        proof = self.proofs.get(objective)
        if proof is None or proof.status != "optimal":
            return None
        return proof.objective_s

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__slots__ if k != "proofs"}
        out["device_classes"] = list(self.device_classes)
        out["proofs"] = {k: p.to_dict() for k, p in sorted(self.proofs.items())}
        return out


@dataclass(frozen=True, slots=True)
class Manifest:
    """The suite: its entries in a fixed order, and the folder their paths are relative to."""

    entries: tuple[SuiteEntry, ...]
    folder: Path

    def entry(self, name: str) -> SuiteEntry | None:
        return next((e for e in self.entries if e.name == name), None)

    def path(self, entry: SuiteEntry) -> Path:
        return self.folder / entry.file

    def with_entry(self, entry: SuiteEntry) -> Manifest:
        """This manifest with ``entry`` replacing the one of its name (or appended)."""
        kept = [entry if e.name == entry.name else e for e in self.entries]
        if self.entry(entry.name) is None:
            kept.append(entry)
        return replace(self, entries=tuple(kept))

    def to_dict(self) -> dict[str, Any]:
        return {"format_version": MANIFEST_VERSION, "suite": "edgepart-suite",
                "about": "Instances of edgepart-suite with their sizes and, per objective, the "
                         "proven optimum or the best bound and gap (docs/suite.md), over "
                         "pipeline plans (one device per stage).",
                "plan_space": "pipeline",
                "instances": [e.to_dict() for e in self.entries]}


def machine() -> str:
    """The machine a proof ran on, in words (platform, Python, cores)."""
    return (f"{platform.machine()} {platform.system()}, Python {platform.python_version()}, "
            f"{os.cpu_count()} cores")


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def entry_for(inst: Instance, file: str, family: str, sha256: str,
              proofs: Mapping[str, Proof] | None = None) -> SuiteEntry:
    """A manifest entry with ``inst``'s sizes (the ideals only when at most ``MAX_IDEALS``)."""
    ideals = ideal_family(inst)
    return SuiteEntry(
        name=inst.name, file=file, family=family, sha256=sha256,
        layers=len(inst.model.layers), edges=len(inst.model.edges),
        ideals=None if ideals is None else len(ideals.sets), devices=len(inst.devices),
        device_classes=tuple(sorted({d.cls for d in inst.devices})),
        device_types=DeviceTypes.of(inst, range(len(inst.devices))).n_types,
        overlap=inst.cost_model.overlap, transfer=inst.cost_model.transfer.value,
        source=inst.source, sink=inst.sink, description=inst.description,
        proofs=dict(proofs or {}))


# --- proving ------------------------------------------------------------------------------------

def prove(entry: SuiteEntry, inst: Instance, objective: str, *, method: str = "auto",
          time_limit: float, threads: int | None = None, plans: Path | None = None
          ) -> tuple[Proof, SolveResult]:
    """Run the exact ``method`` on one objective and record what it proved.

    The plan goes to ``plans/NAME.OBJECTIVE.json`` (when ``plans`` is given); the status is the
    result's own, so ``optimal`` is written only where the solver's bound proves the re-evaluated
    objective.
    """
    options = SolveOptions(objective=Objective(objective), time_limit=time_limit,
                           threads=threads)
    try:
        result = solve(inst, method, options)
    except Exception as err:  # a crash is recorded as what it is: no plan, no proof
        result = SolveResult(method=method, termination=Termination.ERROR,
                             status=SolutionStatus.NONE, objective=objective,
                             message=f"{method} raised {type(err).__name__}: {err}")
    plan_file = None
    if result.plan is not None and plans is not None:
        plans.mkdir(parents=True, exist_ok=True)
        plan_file = f"plans/{entry.name}.{objective}.json"
        result.plan.save(plans.parent / plan_file)
    has = result.has_plan
    backend = "/".join(str(result.extra[k]) for k in ("backend", "formulation")
                       if k in result.extra)
    proof = Proof(
        status=result.status.value,
        objective_s=result.objective_s if has else None,
        bound_s=result.bound_s if math.isfinite(result.bound_s) else None,
        gap=result.gap if has and math.isfinite(result.bound_s) else None,
        backend=f"{method}" + (f" -> {backend}" if backend else ""),
        solve_time_s=round(result.wall_time_s, 3), time_limit_s=time_limit, machine=machine(),
        edgepart=__version__, plan=plan_file, message=result.message)
    return proof, result


def prove_suite(manifest_path: Path, *, time_limit: float, method: str = "auto",
                force: bool = False, names: Sequence[str] | None = None,
                threads: int | None = None, progress: bool = True) -> Manifest:
    """Prove every objective of every entry (or of ``names``) and rewrite the manifest after
    each one, so that an interrupted run resumes where it stopped: settled proofs (optimal or
    infeasible) made by the same ``method`` are skipped unless ``force``; an unsettled one is
    re-run only with a longer ``time_limit`` than it had (or ``force``)."""
    from tqdm import tqdm

    manifest = load_manifest(manifest_path)
    todo = [(e.name, o) for e in manifest.entries for o in OBJECTIVES
            if (names is None or e.name in names) and (force or _needs_proof(e, o, time_limit))]
    for name, objective in tqdm(todo, desc="prove", unit="run", disable=not progress):
        entry = manifest.entry(name)
        assert entry is not None
        proof, _ = prove(entry, load_instance(manifest.path(entry)), objective, method=method,
                         time_limit=time_limit, threads=threads, plans=manifest.folder / "plans")
        entry = replace(entry, proofs={**entry.proofs, objective: proof})
        manifest = manifest.with_entry(entry)
        save_manifest(manifest, manifest_path)
    return manifest


def _needs_proof(entry: SuiteEntry, objective: str, time_limit: float) -> bool:
    proof = entry.proofs.get(objective)
    return proof is None or (not proof.settled and proof.time_limit_s < time_limit)


# --- writing the suite --------------------------------------------------------------------------

def write_suite(items: Sequence[SuiteInstance], folder: Path) -> Manifest:
    """Write every instance file into ``folder`` and the manifest beside them.

    Proofs of an instance whose file is byte-identical to the last build are kept; files and
    plans of instances no longer in the suite are removed. The files are deterministic: the same
    inputs give the same bytes.
    """
    folder.mkdir(parents=True, exist_ok=True)
    manifest_path = folder / MANIFEST
    old = load_manifest(manifest_path) if manifest_path.exists() else Manifest((), folder)
    entries = []
    for item in items:
        path = folder / f"{item.name}.json"
        path.write_text(dumps(dict(item.data)) + "\n")
        sha = file_sha256(path)
        before = old.entry(item.name)
        proofs = before.proofs if before is not None and before.sha256 == sha else {}
        entries.append(entry_for(load_instance(path), path.name, item.family, sha, proofs))
    manifest = Manifest(tuple(entries), folder)
    keep = {e.file for e in entries} | {MANIFEST}
    for stale in folder.glob("*.json"):
        if stale.name not in keep:
            stale.unlink()
    plans = {p.plan for e in entries for p in e.proofs.values() if p.plan}
    for stale in (folder / "plans").glob("*.json"):
        if f"plans/{stale.name}" not in plans:
            stale.unlink()
    save_manifest(manifest, manifest_path)
    return manifest


# --- checking -----------------------------------------------------------------------------------

def check_entry(manifest: Manifest, entry: SuiteEntry) -> list[str]:
    """Every claim of ``entry`` that the files do not support (empty: all hold).

    The instance file must have the recorded SHA-256 and sizes; each proof's plan must pass the
    checker and re-evaluate to the recorded objective (relative 1e-9); a bound may not exceed
    it; ``optimal`` needs the bound within :data:`OPTIMALITY_TOL`; ``infeasible`` needs a plain
    plan recorded.
    """
    path = manifest.path(entry)
    if file_sha256(path) != entry.sha256:
        return [f"{entry.name}: {entry.file} changed since the manifest was written"]
    inst = load_instance(path)
    problems = _size_problems(entry, inst)
    for objective, proof in sorted(entry.proofs.items()):
        where = f"{entry.name}.{objective}"
        problems += [f"{where}: {p}" for p in _proof_problems(manifest, inst, objective, proof)]
    return problems


def _size_problems(entry: SuiteEntry, inst: Instance) -> list[str]:
    fresh = entry_for(inst, entry.file, entry.family, entry.sha256, entry.proofs)
    return [f"{entry.name}: {k} is {getattr(entry, k)!r} in the manifest, {getattr(fresh, k)!r} "
            "in the file" for k in SuiteEntry.__slots__ if getattr(entry, k) != getattr(fresh, k)]


def _proof_problems(manifest: Manifest, inst: Instance, objective: str, proof: Proof
                    ) -> list[str]:
    if proof.status == "infeasible":
        return [] if proof.plan is None else ["infeasible but a plan is recorded"]
    if proof.plan is None:
        return [] if proof.status == "none" else [f"{proof.status} without a plan"]
    plan = load_plan(manifest.folder / proof.plan)
    invalid = validate_plan(inst, plan)
    if invalid:
        return [f"plan invalid: {invalid[0]}"]
    value = evaluate(inst, plan).objective(objective)
    problems = []
    if proof.objective_s is None or abs(value - proof.objective_s) > 1e-9 * max(value, 1e-12):
        problems.append(f"plan evaluates to {value!r}, manifest says {proof.objective_s!r}")
    bound = -math.inf if proof.bound_s is None else proof.bound_s
    if bound > value * (1 + OPTIMALITY_TOL) + 1e-12:
        problems.append(f"bound {bound!r} exceeds the plan's objective {value!r}")
    if proof.status == "optimal" and (value - bound) > OPTIMALITY_TOL * value:
        problems.append(f"optimal but the bound {bound!r} is below {value!r} by more than the "
                        "tolerance")
    return problems


# --- reading and writing ------------------------------------------------------------------------

def load_manifest(path: str | Path) -> Manifest:
    """Read and validate a manifest; every problem names its JSON path."""
    path = Path(path)
    data = read_json(path)
    reader = _Reader()
    if not isinstance(data, Mapping) or data.get("format_version") != MANIFEST_VERSION:
        raise InputError(f"{path}: format_version: expected {MANIFEST_VERSION}")
    raw = data.get("instances")
    if not isinstance(raw, list):
        raise InputError(f"{path}: instances: expected a list")
    entries = tuple(reader.entry(e, f"instances[{i}]") for i, e in enumerate(raw))
    names = [e.name for e in entries]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        reader.problems.append(f"instances: duplicate name {dup[0]!r}")
    if reader.problems:
        raise InputError([f"{path}: {p}" for p in reader.problems])
    return Manifest(entries, path.parent)


def save_manifest(manifest: Manifest, path: str | Path) -> None:
    """Write the manifest (NaN and infinities never appear: absent numbers are ``null``)."""
    text = json.dumps(manifest.to_dict(), indent=1, allow_nan=False)
    tmp = Path(f"{path}.tmp")
    tmp.write_text(text + "\n")
    os.replace(tmp, path)


class _Reader:
    """Field checks that collect every problem with its JSON path."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def field(self, obj: Mapping[str, Any], key: str, kinds: tuple[type, ...], where: str,
              optional: bool = False) -> Any:
        value = obj.get(key)
        if value is None and optional:
            return None
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            self.problems.append(f"{where}.{key}: expected {' or '.join(k.__name__ for k in kinds)}"
                                 f", got {value!r}")
            return kinds[0]() if kinds[0] is not float else math.nan
        return value

    def entry(self, raw: Any, where: str) -> SuiteEntry:
        if not isinstance(raw, Mapping):
            self.problems.append(f"{where}: expected an object")
            raw = {}
        f = self.field
        proofs_raw = raw.get("proofs", {})
        if not isinstance(proofs_raw, Mapping):
            self.problems.append(f"{where}.proofs: expected an object")
            proofs_raw = {}
        for key in proofs_raw:
            if key not in OBJECTIVES:
                self.problems.append(f"{where}.proofs.{key}: not an objective "
                                     f"({', '.join(OBJECTIVES)})")
        proofs = {k: self.proof(v, f"{where}.proofs.{k}") for k, v in proofs_raw.items()
                  if k in OBJECTIVES}
        classes = f(raw, "device_classes", (list,), where)
        transfer = f(raw, "transfer", (str,), where)
        if transfer not in ("relay", "direct"):
            self.problems.append(f"{where}.transfer: expected relay or direct, got {transfer!r}")
        return SuiteEntry(
            name=f(raw, "name", (str,), where), file=f(raw, "file", (str,), where),
            family=f(raw, "family", (str,), where), sha256=f(raw, "sha256", (str,), where),
            layers=f(raw, "layers", (int,), where), edges=f(raw, "edges", (int,), where),
            ideals=f(raw, "ideals", (int,), where, optional=True),
            devices=f(raw, "devices", (int,), where),
            device_classes=tuple(str(c) for c in classes),
            device_types=f(raw, "device_types", (int,), where),
            overlap=f(raw, "overlap", (bool,), where), transfer=transfer,
            source=f(raw, "source", (str,), where, optional=True),
            sink=f(raw, "sink", (str,), where, optional=True),
            description=f(raw, "description", (str,), where), proofs=proofs)

    def proof(self, raw: Any, where: str) -> Proof:
        if not isinstance(raw, Mapping):
            self.problems.append(f"{where}: expected an object")
            raw = {}
        f = self.field
        status = f(raw, "status", (str,), where)
        if status not in STATUSES:
            self.problems.append(f"{where}.status: expected one of {', '.join(STATUSES)}, got "
                                 f"{status!r}")
        number = (float, int)
        proof = Proof(
            status=status, objective_s=f(raw, "objective_s", number, where, optional=True),
            bound_s=f(raw, "bound_s", number, where, optional=True),
            gap=f(raw, "gap", number, where, optional=True),
            backend=f(raw, "backend", (str,), where),
            solve_time_s=f(raw, "solve_time_s", number, where),
            time_limit_s=f(raw, "time_limit_s", number, where),
            machine=f(raw, "machine", (str,), where), edgepart=f(raw, "edgepart", (str,), where),
            plan=f(raw, "plan", (str,), where, optional=True),
            message=f(raw, "message", (str,), where, optional=True) or "")
        if status == "optimal" and proof.objective_s is None:
            self.problems.append(f"{where}.objective_s: an optimal proof needs the optimum")
        return proof
