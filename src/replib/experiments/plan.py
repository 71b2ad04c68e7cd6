"""``plan(notebooks, budget)``: the runs a notebook asks for, listed without training any.

A notebook of the house pattern builds its :class:`~.spec.RunSpec` objects and passes them to
``ex.run(spec)``. :func:`plan` executes the notebook's code cells, with papermill's parameter
injection, in a separate Python process where :func:`replib.experiments.run` is replaced by a
*planning* version:

* a spec whose record exists returns the real record, so cells that derive later specs from
  earlier results (a lambda chosen on validation accuracy, a rewinding point read off a dense
  run) keep going;
* a spec without a record is noted as *missing* and returns a :class:`PendingRecord`, a
  placeholder that knows its spec and run id but raises :class:`PlanPending` when a cell reads
  its results. A cell that needs a pending result stops there; the cells after it are still
  tried, so independent sweeps further down the notebook are found too;
* :func:`replib.experiments.claims.record_claims` does nothing, so planning writes no ledger;
* ``run(spec, rerun=True)`` is planned like ``run(spec)``: a spec with a record counts as done.

Nothing trains and nothing is written. A notebook whose later runs depend on earlier results is
planned in *waves*: plan, execute the missing runs (:func:`.distributed.run_many`), plan again;
``make reproduce`` repeats this until a plan is ``complete`` (no cell waited on a result).

A notebook may tag cells ``specs``: planning then stops after the last such cell (useful when
the cells after the runs are slow and build no further specs). Without the tag every code cell
is tried. A cell that raises for another reason before any result was pending is a real error
of the notebook (a bad parameter value, say) and is reported in :attr:`NotebookPlan.error`;
so is a corrupt record file (:class:`.store.RecordCorruptError`), whatever ran before it.

Limits: runs made by calling a task or :func:`~.runner.execute` directly, not through
``run``, are invisible to the plan (they execute when papermill renders the notebook, as
before); IPython magics run as in a terminal IPython, not in a kernel.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .budgets import check_budget
from .runner import Record
from .spec import RunSpec
from .store import RecordCorruptError

SPECS_TAG = "specs"


class PlanPending(RuntimeError):
    """A cell read the result of a run that has no record yet (planning only)."""


class PendingRecord(Record):
    """Stands in for the record of a run that has not been executed yet (planning only).

    ``rec["spec"]``, ``rec["run_id"]`` and their attribute forms answer; everything else raises
    :class:`PlanPending`.
    """

    def __init__(self, spec: RunSpec):
        super().__init__(run_id=spec.run_id, spec=spec.to_json())

    def __getitem__(self, key):
        if key in ("run_id", "spec"):
            return dict.__getitem__(self, key)
        raise PlanPending(f"run {dict.__getitem__(self, 'run_id')} has no record yet ({key!r})")

    def get(self, key, default=None):
        return self[key]

    def __iter__(self):
        raise PlanPending(f"run {dict.__getitem__(self, 'run_id')} has no record yet")

    def keys(self):
        raise PlanPending(f"run {dict.__getitem__(self, 'run_id')} has no record yet")

    items = values = keys


@dataclass
class NotebookPlan:
    """The runs one notebook asks for at one budget."""

    notebook: Path
    budget: str
    specs: list[RunSpec] = field(default_factory=list)    # every spec passed to run(), in order
    missing: list[RunSpec] = field(default_factory=list)  # those without a record
    blocked_cells: list[int] = field(default_factory=list)  # cells (index in nb.cells, from 0)
    #                                                         that waited on a result
    error: str | None = None                              # a real error of the notebook

    @property
    def complete(self) -> bool:
        """True when no cell waited on a missing result: ``specs`` is the notebook's full list."""
        return not self.blocked_cells and self.error is None

    def to_json(self) -> dict[str, Any]:
        return {"notebook": str(self.notebook), "budget": self.budget,
                "specs": [s.to_json() for s in self.specs],
                "missing": [s.to_json() for s in self.missing],
                "blocked_cells": self.blocked_cells, "error": self.error}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> NotebookPlan:
        return cls(Path(d["notebook"]), d["budget"], [RunSpec.from_json(s) for s in d["specs"]],
                   [RunSpec.from_json(s) for s in d["missing"]], list(d["blocked_cells"]),
                   d["error"])


@dataclass
class Plan:
    """The plans of several notebooks; ``missing`` is what :func:`run_many` should execute."""

    notebooks: list[NotebookPlan]

    @property
    def specs(self) -> list[RunSpec]:
        return _unique(s for nb in self.notebooks for s in nb.specs)

    @property
    def missing(self) -> list[RunSpec]:
        return _unique(s for nb in self.notebooks for s in nb.missing)

    @property
    def complete(self) -> bool:
        return all(nb.complete for nb in self.notebooks)

    @property
    def errors(self) -> dict[Path, str]:
        return {nb.notebook: nb.error for nb in self.notebooks if nb.error}

    def epochs_by_model(self) -> dict[tuple[str, str], int]:
        """Total training epochs per (model, dataset) over all specs, every stage of a run
        counted (:func:`training_epochs`; for cost estimates)."""
        out: dict[tuple[str, str], int] = {}
        for s in self.specs:
            out[(s.model, s.dataset)] = out.get((s.model, s.dataset), 0) + training_epochs(s)
        return out

    def summary(self) -> str:
        lines = []
        for nb in self.notebooks:
            state = "error" if nb.error else ("complete" if nb.complete else
                                              f"waits on results (cells {nb.blocked_cells})")
            lines.append(f"{nb.notebook}: {len(nb.specs)} runs, {len(nb.missing)} missing, "
                         f"{state}" + (f": {nb.error.splitlines()[-1]}" if nb.error else ""))
        lines.append(f"total: {len(self.specs)} distinct runs, {len(self.missing)} missing")
        return "\n".join(lines)


def training_epochs(spec: RunSpec) -> int:
    """Epochs of training one run of ``spec`` performs, every stage counted (IMP's rounds,
    iRDA's Step 2, fine-tuning...), as the task declares it (``task(..., train_epochs=)``);
    ``spec.epochs`` for a task that declares nothing. For cost estimates: an epoch of a stage
    on a data subset counts as a whole epoch."""
    from .spec import get_task

    fn = get_task(spec.task).train_epochs
    return int(fn(spec.hp, spec.epochs)) if fn else spec.epochs


def _unique(specs: Iterable[RunSpec]) -> list[RunSpec]:
    seen: dict[str, RunSpec] = {}
    for s in specs:
        seen.setdefault(s.run_id, s)
    return list(seen.values())


def plan(notebooks: str | Path | Sequence[str | Path], budget: str,
         parameters: Mapping[str, Any] | None = None, *, timeout: float = 900.0) -> Plan:
    """List the runs ``notebooks`` ask for at ``budget`` (see the module docstring).

    All notebooks are planned in one child Python process (started with this interpreter and
    this environment, plus ``REPLIB_PLAN_ONLY=1`` and ``MPLBACKEND=Agg``), so nothing a
    notebook imports or sets leaks into the caller. ``parameters`` are injected after the
    ``parameters`` cell like papermill's ``-p``.
    """
    check_budget(budget)
    if isinstance(notebooks, (str, Path)):
        notebooks = [notebooks]
    paths = [Path(n).resolve() for n in notebooks]
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"notebook {p} does not exist")
    params = {"budget": budget, **dict(parameters or {})}
    try:
        json.dumps(params)
    except TypeError as exc:
        raise ValueError(f"parameters={params!r} must be JSON-able (as papermill's -p)") from exc
    with tempfile.TemporaryDirectory(prefix="replib-plan-") as tmp:
        out = Path(tmp) / "plan.json"
        log = Path(tmp) / "plan.log"
        cmd = [sys.executable, "-m", "replib.experiments.plan", "--child", "--out", str(out),
               "--parameters", json.dumps(params), *map(str, paths)]
        env = {**os.environ, "REPLIB_PLAN_ONLY": "1", "MPLBACKEND": "Agg"}
        with open(log, "w") as logf:
            proc = subprocess.run(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env,
                                  timeout=timeout)
        if proc.returncode != 0 or not out.exists():
            tail = log.read_text()[-4000:]
            raise RuntimeError(f"planning {[str(p) for p in paths]} failed "
                               f"(exit {proc.returncode}):\n{tail}")
        data = json.loads(out.read_text())
    return Plan([NotebookPlan.from_json(d) for d in data])


# ----------------------------------------------------------------------------------------------
# The child process.


def _code_cells(nb) -> tuple[list[tuple[int, str, list[str]]], int | None]:
    cells = [(i, c.source, list(c.get("metadata", {}).get("tags", [])))
             for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    tagged = [i for i, _, tags in cells if SPECS_TAG in tags]
    return cells, (max(tagged) if tagged else None)


def _assignments(params: Mapping[str, Any]) -> str:
    return "\n".join(f"{k} = {v!r}" for k, v in params.items())


class _Collector:
    def __init__(self) -> None:
        self.specs: list[RunSpec] = []
        self.missing: list[RunSpec] = []

    def reset(self) -> None:
        self.specs, self.missing = [], []


def _install_planning(collector: _Collector) -> None:
    """Replace ``run`` (and, as a backstop, ``execute``/``save``) by their planning versions."""
    from .. import experiments as ex
    from . import claims, runner

    def planned_run(spec: RunSpec, *, rerun: bool = False, device=None,
                    keep_checkpoints: bool = False) -> Record:
        if not isinstance(spec, RunSpec):
            raise TypeError(f"run() needs a RunSpec, got {type(spec).__name__}")
        collector.specs.append(spec)
        rec = runner.lookup(spec)
        if rec is not None:
            return rec
        collector.missing.append(spec)
        return PendingRecord(spec)

    def planned_execute(spec: RunSpec, device=None) -> Record:
        if spec not in collector.specs:
            collector.specs.append(spec)
        collector.missing.append(spec)
        return PendingRecord(spec)

    ex.run = runner.run = planned_run
    runner.execute = planned_execute
    runner.save = lambda record, spec, keep_checkpoints=False: runner.record_path(spec)
    claims.record_claims = lambda *args, **kwargs: None


def _plan_one(shell, collector: _Collector, path: Path, params: Mapping[str, Any]) -> dict:
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    cells, last = _code_cells(nb)
    result = NotebookPlan(path, params["budget"])
    collector.reset()
    shell.reset(new_session=False)
    os.chdir(path.parent)
    has_params = any("parameters" in tags for _, _, tags in cells)
    program: list[tuple[int, str]] = [] if has_params else [(-1, _assignments(params))]
    for i, src, tags in cells:
        if last is not None and i > last:
            break
        program.append((i, src))
        if "parameters" in tags:
            program.append((-1, _assignments(params)))
    for i, src in program:
        res = shell.run_cell(src, store_history=False, silent=True)
        err = res.error_before_exec or res.error_in_exec
        if err is None:
            continue
        if isinstance(err, PlanPending) or (collector.missing
                                            and not isinstance(err, RecordCorruptError)):
            # the cell needed a result that does not exist yet (directly, or through a
            # placeholder that pandas & co. read without our accessors): try the next cells.
            # A corrupt record is a real error, never a wait: no wave would ever fix it
            result.blocked_cells.append(i)
            continue
        result.error = f"cell {i}: {type(err).__name__}: {err}"
        break
    result.specs = _unique(collector.specs)
    result.missing = _unique(collector.missing)
    return result.to_json()


def _child(paths: list[Path], params: dict[str, Any], out: Path) -> None:
    from IPython.core.interactiveshell import InteractiveShell

    collector = _Collector()
    _install_planning(collector)
    shell = InteractiveShell.instance()
    cwd = os.getcwd()
    plans = []
    try:
        for p in paths:
            plans.append(_plan_one(shell, collector, p, params))
    finally:
        os.chdir(cwd)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(plans))
    os.replace(tmp, out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="List the runs notebooks ask for at a budget.")
    ap.add_argument("--budget", help="smoke | cpu | paper")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--parameters", default="{}", help=argparse.SUPPRESS)
    ap.add_argument("notebooks", nargs="+", type=Path)
    args = ap.parse_args(argv)
    if args.child:
        _child([p.resolve() for p in args.notebooks], json.loads(args.parameters), args.out)
        return 0
    if not args.budget:
        ap.error("--budget is required")
    p = plan(args.notebooks, args.budget)
    print(p.summary())
    return 1 if p.errors else 0


if __name__ == "__main__":
    sys.exit(main())
