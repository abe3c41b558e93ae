"""Sweeps: every (instance, method, objective, options) combination, run in parallel, one table.

A sweep is the product of instances (files, globs, or a suite manifest), method names (taken
from the registry, :data:`edgepart.solvers.base.METHODS`; ``heuristics`` names every registered
method except the exact backends of :data:`EXACT` and the device-group methods, ``all`` every
one), objectives and option
sets (:class:`~edgepart.solvers.base.SolveOptions` fields such as ``formulation``, ``seed``,
``max_latency``, ``plan_space``). Each run is the library's solve path,
:func:`edgepart.solvers.base.solve` (what ``edgepart solve`` runs), so
every plan is validated and scored by the one evaluator (:func:`edgepart.solvers.base.finish`);
a raised exception becomes a row with status ``error``, never a crash of the sweep, and so does
a run that ignores its time limit: it is stopped at :func:`hard_limit`.

Each run's row (:data:`COLUMNS`) has the objective value, the bound, the wall time, the backend
that answered and, when the instance belongs to a suite manifest (``manifest.json`` beside its
file, or one named by the sweep) with a proven optimum for that objective, the gap to it:
``gap_pct = 100 (value - optimum) / optimum``. The optima are over pipeline plans, so runs of
device-group methods or plan spaces get no gap (:func:`pipeline_run`).

Rows are appended to the table (Parquet; CSV when the path ends in ``.csv``) as they come: the
table is rewritten atomically (a temporary file, then a rename) at most every
:data:`FLUSH_S` seconds and at the end, so a killed sweep leaves a readable table with every row
but the last few seconds'. A rerun skips every combination already in the table (the key is
:data:`KEY`), so resuming never duplicates a row.

Backends: local processes (:class:`concurrent.futures.ProcessPoolExecutor` with a
``forkserver`` context where available, else ``spawn``), or Ray (``ray_address``: an address or
``"local"``; the optional extra ``edgepart[ray]``). Tasks and rows cross process boundaries as
JSON text. Solver threads per run are ``max(1, cores // jobs)`` unless given, so that jobs x
threads never exceeds the cores.
"""

from __future__ import annotations

import glob
import json
import math
import multiprocessing as mp
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd

from edgepart.errors import InputError
from edgepart.files import read_json
from edgepart.instance import load_instance
from edgepart.results import SolutionStatus, SolveResult, Termination
from edgepart.solvers.base import (
    GROUP_METHODS,
    METHODS,
    Objective,
    PlanSpace,
    SolveOptions,
    get_method,
    solve,
)
from edgepart.suite import MANIFEST, Manifest, load_manifest

__all__ = [
    "COLUMNS", "EXACT", "KEY", "RunOverran", "SweepSpec", "Task", "as_table", "default_threads",
    "expand_instances", "hard_limit",
    "load_spec", "make_spec", "pipeline_run", "read_table", "resolve_methods", "run_sweep",
    "run_task", "tasks",
]

EXACT = ("auto", "cpsat", "highs", "cbc", "brute")
"""Registered exact backends that ``heuristics`` leaves out. It also leaves out the methods of
device-group plans (:data:`~edgepart.solvers.base.GROUP_METHODS`); every other registered
method is in it, so a newly registered heuristic joins sweeps without a change here."""
OPTION_FIELDS = ("formulation", "seed", "max_latency", "max_period", "extra", "plan_space",
                 "max_group")
"""SolveOptions fields a sweep may vary (the objective, time limit and threads are its own)."""
KEY = ("instance", "method", "objective", "options")
"""Columns that identify a run: a combination already in the table is not run again."""
COLUMNS = (*KEY, "family", "layers", "devices", "status", "termination", "objective_s",
           "bound_s", "optimum_s", "gap_pct", "wall_s", "solve_time_s", "backend",
           "time_limit_s", "threads", "error", "message", "path", "plan")
"""The table's columns: ``options`` is the option set as canonical JSON, ``plan`` the plan's
JSON (empty without a plan), ``path`` the instance file, ``optimum_s`` the manifest's proven
optimum (NaN when none), ``error`` the failure text (empty when the run did not fail)."""
FLOAT_COLUMNS = ("objective_s", "bound_s", "optimum_s", "gap_pct", "wall_s", "solve_time_s",
                 "time_limit_s")
INT_COLUMNS = ("layers", "devices", "threads")
FLUSH_S = 0.5
HARD_MARGIN_S = 10.0


@dataclass(frozen=True, slots=True)
class SweepSpec:
    """What to run: paths of instance files, method names, objectives and option sets."""

    instances: tuple[Path, ...]
    methods: tuple[str, ...]
    objectives: tuple[str, ...] = ("bottleneck",)
    options: tuple[Mapping[str, Any], ...] = ({},)
    time_limit: float = 30.0
    manifests: tuple[Path, ...] = ()


@dataclass(frozen=True, slots=True)
class Task:
    """One run, as sent to a worker (JSON)."""

    instance: str
    path: str
    method: str
    objective: str
    options: str  # canonical JSON of the option set
    time_limit: float
    threads: int
    optimum_s: float | None = None
    family: str = ""

    def to_json(self) -> str:
        return json.dumps({k: getattr(self, k) for k in self.__slots__})

    @classmethod
    def from_json(cls, text: str) -> Task:
        return cls(**json.loads(text))


@dataclass
class _Table:
    """The output table: the rows read back at the start plus the new ones, rewritten whole."""

    path: Path
    frame: pd.DataFrame
    pending: list[dict[str, Any]] = field(default_factory=list)
    flushed_at: float = 0.0

    def add(self, row: dict[str, Any]) -> None:
        self.pending.append(row)
        if time.monotonic() - self.flushed_at >= FLUSH_S:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.frame = pd.concat([self.frame, as_table(pd.DataFrame(self.pending))],
                                   ignore_index=True)
            self.pending = []
        _write(self.frame, self.path)
        self.flushed_at = time.monotonic()


# --- the spec -----------------------------------------------------------------------------------

def canonical_options(options: Mapping[str, Any]) -> str:
    return json.dumps(dict(options), sort_keys=True, separators=(",", ":"))


def resolve_methods(names: Sequence[str]) -> tuple[str, ...]:
    """Method names with ``heuristics`` and ``all`` expanded from the registry, in order and
    without repeats; an unknown name is an :class:`InputError` listing the known ones."""
    get_method("auto")  # loads every built-in method into the registry
    out: list[str] = []
    for name in names:
        if name == "all":
            out += sorted(METHODS)
        elif name == "heuristics":
            out += sorted(m for m in METHODS if m not in EXACT and m not in GROUP_METHODS)
        else:
            get_method(name)
            out.append(name)
    return tuple(dict.fromkeys(out))


def _check_options(options: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(options, Mapping):
        raise InputError(f"{where}: expected an object of SolveOptions fields")
    unknown = sorted(set(options) - set(OPTION_FIELDS))
    if unknown:
        raise InputError(f"{where}.{unknown[0]}: not a sweep option (choose from "
                         f"{', '.join(OPTION_FIELDS)})")
    try:
        SolveOptions(**options)
    except (InputError, TypeError) as err:
        raise InputError(f"{where}: {err}") from None
    return dict(options)


def expand_instances(patterns: Sequence[str], base: Path) -> tuple[tuple[Path, ...],
                                                                   tuple[Path, ...]]:
    """Instance files and manifests named by ``patterns`` (files, globs or a ``manifest.json``,
    relative to ``base``): a manifest stands for every instance it lists."""
    files: list[Path] = []
    manifests: list[Path] = []
    for pattern in patterns:
        full = pattern if os.path.isabs(pattern) else str(base / pattern)
        hits = sorted(Path(p) for p in glob.glob(full))
        if not hits:
            raise InputError(f"instances: {pattern!r} matches no file")
        for hit in hits:
            if hit.name == MANIFEST:
                manifest = load_manifest(hit)
                manifests.append(hit)
                files += [manifest.path(e) for e in manifest.entries]
            else:
                files.append(hit)
    return tuple(dict.fromkeys(files)), tuple(dict.fromkeys(manifests))


def load_spec(path: str | Path) -> SweepSpec:
    """Read a sweep file (JSON; ``docs/suite.md``); paths in it are relative to its folder."""
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, Mapping):
        raise InputError(f"{path}: expected a JSON object")
    unknown = sorted(set(data) - {"instances", "methods", "objectives", "options", "time_limit"})
    if unknown:
        raise InputError(f"{path}: {unknown[0]}: unknown field")
    return make_spec(data.get("instances"), data.get("methods", ["heuristics"]),
                     data.get("objectives", ["bottleneck"]), data.get("options", [{}]),
                     data.get("time_limit", 30.0), base=path.parent, where=str(path))


def make_spec(instances: Any, methods: Any, objectives: Any, options: Any, time_limit: Any, *,
              base: Path = Path("."), where: str = "sweep") -> SweepSpec:
    """A validated :class:`SweepSpec` (every problem an :class:`InputError` naming its field)."""
    for name, value in (("instances", instances), ("methods", methods),
                        ("objectives", objectives), ("options", options)):
        if not isinstance(value, list) or not value:
            raise InputError(f"{where}: {name}: expected a non-empty list")
    for k, obj in enumerate(objectives):
        if obj not in {o.value for o in Objective}:
            raise InputError(f"{where}: objectives[{k}]: expected bottleneck or latency, got "
                             f"{obj!r}")
    if isinstance(time_limit, bool) or not isinstance(time_limit, (int, float)) or not (
            0 < time_limit < math.inf):
        raise InputError(f"{where}: time_limit: expected a positive number, got {time_limit!r}")
    files, manifests = expand_instances([str(p) for p in instances], base)
    opts = tuple(_check_options(o, f"{where}: options[{k}]") for k, o in enumerate(options))
    return SweepSpec(files, resolve_methods([str(m) for m in methods]), tuple(objectives),
                     opts, float(time_limit), manifests)


def default_threads(jobs: int) -> int:
    """Solver threads per run so that ``jobs`` x threads stays within the cores."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // max(1, jobs))


def pipeline_run(method: str, options: Mapping[str, Any]) -> bool:
    """Whether a run searches pipeline plans only (one device per stage), the plans the suite's
    optima are proven over: a device-group method or plan space may beat them legitimately, so
    its rows get no gap."""
    space = options.get("plan_space", PlanSpace.PIPELINE.value)
    return method not in GROUP_METHODS and space == PlanSpace.PIPELINE.value


def tasks(spec: SweepSpec, threads: int) -> list[Task]:
    """Every run of ``spec``; the gap reference (pipeline runs only, :func:`pipeline_run`) comes
    from the manifests of the spec and from a ``manifest.json`` beside each instance file."""
    optima = _optima(spec)
    out = []
    for path in spec.instances:
        name = _instance(str(path)).name
        for method in spec.methods:
            for objective in spec.objectives:
                optimum, family = optima.get((name, objective), (None, ""))
                out += [Task(name, str(path), method, objective, canonical_options(o),
                             spec.time_limit, threads,
                             optimum if pipeline_run(method, o) else None, family)
                        for o in spec.options]
    return out


def _optima(spec: SweepSpec) -> dict[tuple[str, str], tuple[float | None, str]]:
    paths = {*spec.manifests, *(p.parent / MANIFEST for p in spec.instances
                                if (p.parent / MANIFEST).exists())}
    manifests: list[Manifest] = [load_manifest(p) for p in sorted(paths)]
    return {(e.name, o): (e.optimum(o), e.family) for m in manifests for e in m.entries
            for o in (x.value for x in Objective)}


# --- one run ------------------------------------------------------------------------------------

@lru_cache(maxsize=8)
def _instance(path: str) -> Any:
    return load_instance(path)


def run_task(task_json: str) -> str:
    """Run one task (JSON) and return its row (JSON): the worker function of both backends."""
    task = Task.from_json(task_json)
    inst = _instance(task.path)  # loading is not timed (cached per worker)
    error = ""
    start = time.perf_counter()
    try:
        options = SolveOptions(objective=Objective(task.objective), time_limit=task.time_limit,
                               threads=task.threads, **json.loads(task.options))
        with _hard_limit(hard_limit(task.time_limit)):
            result = solve(inst, task.method, options)
    except Exception as err:  # a failure becomes a row, not a crash of the sweep
        error = f"{type(err).__name__}: {err}"
        result = SolveResult(method=task.method, termination=Termination.ERROR,
                             status=SolutionStatus.NONE, objective=task.objective)
    wall = time.perf_counter() - start
    return json.dumps(_row(task, inst, result, wall, error), allow_nan=True)


def hard_limit(time_limit: float) -> float:
    """Seconds after which a run is stopped: ``1.5 x time_limit + 10``. The limit itself is the
    method's to keep; this only ends a method that ignores it (the margin covers building
    models and re-checking the plan, which the exact backends count inside their limit)."""
    return 1.5 * time_limit + HARD_MARGIN_S


class RunOverran(Exception):
    """A run went past :func:`hard_limit` and was stopped."""


@contextmanager
def _hard_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`RunOverran` in this thread after ``seconds`` (SIGALRM). Only where that
    exists and this is the main thread (local workers and Ray tasks run there); elsewhere the
    run is not stopped. Native solver code is interrupted when it returns to Python."""
    if not hasattr(signal, "setitimer") or threading.current_thread() is not (
            threading.main_thread()):
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise RunOverran(f"stopped after {seconds:g} s (the method overran its time limit)")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _row(task: Task, inst: Any, result: SolveResult, wall: float, error: str
         ) -> dict[str, Any]:
    has = result.has_plan
    value = result.objective_s if has else math.nan
    optimum = math.nan if task.optimum_s is None else task.optimum_s
    failed = result.termination is Termination.ERROR
    return {
        "instance": inst.name, "method": task.method, "objective": task.objective,
        "options": task.options, "family": task.family, "layers": len(inst.model.layers),
        "devices": len(inst.devices),
        "status": "error" if failed else result.status.value,
        "termination": result.termination.value, "objective_s": value,
        "bound_s": result.bound_s if math.isfinite(result.bound_s) else math.nan,
        "optimum_s": optimum,
        "gap_pct": 100.0 * (value - optimum) / optimum if has and optimum > 0 else math.nan,
        "wall_s": wall, "solve_time_s": result.wall_time_s,
        "backend": str(result.extra.get("backend", task.method)),
        "time_limit_s": task.time_limit, "threads": task.threads,
        "error": error or (result.message if failed else ""),
        "message": "" if failed else result.message, "path": task.path,
        "plan": json.dumps(result.plan.to_dict()) if has and result.plan else ""}


# --- the sweep ----------------------------------------------------------------------------------

def read_table(path: str | Path) -> pd.DataFrame:
    """A sweep table (Parquet, or CSV by its suffix) with :data:`COLUMNS` in order."""
    path = Path(path)
    try:
        frame = pd.read_csv(path, keep_default_na=False, na_values=[""]) if _is_csv(path) \
            else pd.read_parquet(path)
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: not a readable sweep table ({err})") from None
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise InputError(f"{path}: not a sweep table (no column {missing[0]!r})")
    return as_table(frame)


def _is_csv(path: Path) -> bool:
    return path.suffix.lower() == ".csv"


def as_table(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with exactly :data:`COLUMNS`, in order and typed (missing text is '')."""
    out = frame.reindex(columns=list(COLUMNS))
    for col in COLUMNS:
        if col in FLOAT_COLUMNS:
            out[col] = pd.to_numeric(out[col], errors="coerce").astype("float64")
        elif col in INT_COLUMNS:
            out[col] = pd.to_numeric(out[col], errors="coerce").fillna(0).astype("int64")
        else:
            out[col] = out[col].astype(object).where(out[col].notna(), "").astype(str)
    return out


def _write(frame: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    if _is_csv(path):
        frame.to_csv(tmp, index=False)
    else:
        frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def run_sweep(spec: SweepSpec, out: str | Path, *, jobs: int = 1, threads: int | None = None,
              ray_address: str | None = None, progress: bool | None = None) -> pd.DataFrame:
    """Run every task of ``spec`` not yet in the table at ``out`` and return the whole table.

    ``progress=None`` shows the bar only on a terminal.
    """
    from tqdm import tqdm

    if jobs < 1:
        raise InputError(f"--jobs: must be >= 1, got {jobs}")
    if ray_address:
        _import_ray()  # a missing extra is bad input, found before anything is written
    out = Path(out)
    table = _Table(out, read_table(out) if out.exists() else as_table(pd.DataFrame()))
    done = set(table.frame[list(KEY)].itertuples(index=False, name=None))
    every = tasks(spec, threads or (1 if ray_address else default_threads(jobs)))
    todo = [t for t in every if (t.instance, t.method, t.objective, t.options) not in done]
    bar = tqdm(total=len(every), initial=len(every) - len(todo), desc="sweep", unit="run",
               disable=None if progress is None else not progress)
    run = _ray_rows if ray_address else _local_rows
    try:
        for row in run(todo, jobs, ray_address or ""):
            table.add(json.loads(row))
            bar.update()
    finally:
        table.flush()
        bar.close()
    return table.frame


def _local_rows(todo: Sequence[Task], jobs: int, _: str) -> Iterator[str]:
    if not todo:
        return
    method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context(method)) as pool:
        futures = [pool.submit(run_task, t.to_json()) for t in todo]
        try:
            for fut in as_completed(futures):
                yield fut.result()
        finally:
            for fut in futures:
                fut.cancel()


def _ray_rows(todo: Sequence[Task], jobs: int, address: str) -> Iterator[str]:
    ray = _import_ray()
    if not todo:
        return
    if not ray.is_initialized():
        if address == "local":
            ray.init(num_cpus=jobs, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    remote: Callable[..., Any] = ray.remote(num_cpus=todo[0].threads)(run_task)
    pending = [remote.remote(t.to_json()) for t in todo]  # type: ignore[attr-defined]
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        yield ray.get(ready[0])


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise InputError("--ray: Ray is not installed (pip install 'edgepart[ray]')") from None
    return ray
