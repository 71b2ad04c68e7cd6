"""``make reproduce``: plan every notebook's runs, execute the missing ones, render with papermill.

1. **Plan** (:func:`.plan.plan`): list the run specs each notebook asks for at the budget,
   without training.
2. **Execute** (:func:`.distributed.run_many`): the runs without a record, serially in this
   process (``--workers 1``, no ``RAY_ADDRESS``), on a local Ray instance (``--workers N``) or
   on an existing Ray cluster (``RAY_ADDRESS`` / ``--address``). Notebooks whose later runs
   depend on earlier results are planned again after each wave until their plans are complete.
3. **Render**: each source ``notebooks/<paper>/<name>.ipynb`` is executed with
   ``-p budget <budget>`` into ``book/<paper>/<name>.ipynb``; its runs are loaded from their
   records (any run the plan could not see is trained there, as before). papermill writes
   into a temporary file beside it, which replaces the book's notebook only when the whole
   notebook ran: a failed or interrupted render leaves the committed notebook as it was.

The ``smoke`` budget is refused unless nothing is rendered (``--plan-only``,
``--no-render``): its notebooks would replace the book's with meaningless numbers. Smoke
is for nbval and CI (``make test``), which execute the notebooks without writing to ``book/``.

A notebook whose plan fails (a bad parameter, say) or one of whose runs failed is not
rendered; both are listed at the end and the exit status is 1.

    python -m replib.experiments.reproduce --budget cpu --workers 2 notebooks/*/[0-9]*.ipynb
    RAY_ADDRESS=ray://head:10001 python -m replib.experiments.reproduce --budget paper ...
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import uuid
import warnings
from pathlib import Path

from .. import repo_root
from .budgets import BUDGETS

log = logging.getLogger(__name__)


def output_path(notebook: Path) -> Path:
    notebook = Path(notebook).resolve()
    return repo_root() / "book" / notebook.parent.name / notebook.name


def execute_notebook(notebook: Path, budget: str, parameters: dict | None = None) -> Path:
    """Render ``notebook`` at ``budget`` onto :func:`output_path`. papermill saves its output
    at the start and on an error, so it writes into a temporary file in the same folder, which
    replaces the output only when the notebook ran to the end (and is removed otherwise)."""
    import papermill

    out = output_path(notebook)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp.ipynb")
    params = {"budget": budget, **(parameters or {})}
    try:
        papermill.execute_notebook(str(notebook), str(tmp), parameters=params,
                                   cwd=str(Path(notebook).resolve().parent), progress_bar=False)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def execute_runs(notebooks: list[Path], budget: str, *, workers: int = 1,
                 address: str | None = None, max_waves: int = 10, max_retries: int = 2,
                 num_cpus: float | None = None, num_gpus: float | None = None,
                 ) -> tuple[dict[Path, str], set[str]]:
    """Plan and execute, wave after wave. Returns (notebook -> why it cannot be rendered,
    run ids that failed)."""
    from .distributed import run_many
    from .plan import plan

    problems: dict[Path, str] = {}
    failed: dict[str, str] = {}
    runs_of: dict[Path, set[str]] = {}
    live = [Path(n).resolve() for n in notebooks]
    for wave in range(1, max_waves + 1):
        if not live:
            break
        p = plan(live, budget)
        log.info("plan, wave %d:\n%s", wave, p.summary())
        if wave == 1:
            warn_data_mismatches([s for nb in p.notebooks for s in nb.specs])
        for nb in p.notebooks:
            runs_of.setdefault(nb.notebook, set()).update(s.run_id for s in nb.specs)
            if nb.error:
                problems[nb.notebook] = f"planning failed: {nb.error}"
        todo = [s for s in p.missing if s.run_id not in failed]
        if todo:
            res = run_many(todo, workers, address=address, max_retries=max_retries,
                           num_cpus=num_cpus, num_gpus=num_gpus)
            for f in res.failures:
                failed[f.spec.run_id] = str(f)
        # plan again only the notebooks that may still reveal runs
        live = [nb.notebook for nb in p.notebooks
                if not nb.complete and not nb.error
                and not any(s.run_id in failed for s in nb.missing)]
        if not todo:
            break
    for nb, ids in runs_of.items():
        bad = [failed[i] for i in sorted(ids & set(failed))]
        if bad:
            problems[nb] = "failed run(s): " + "; ".join(bad)
    return problems, set(failed)


def _copy_of(prov: dict) -> tuple:
    """What tells two copies of a data set apart in a record's provenance: official bytes or a
    rebuilt copy, and how many test images it holds (None: the official count)."""
    return prov.get("copy"), prov.get("test_images")


def data_mismatches(specs) -> dict[str, tuple[int, tuple, tuple]]:
    """Per data set: how many of these runs' existing records were made on another copy of it
    than the one configured here (``REPLIB_DATA``; nothing is downloaded), as
    ``(records, recorded copy, configured copy)``. A run id does not depend on the copy, so such
    records are loaded as they are (with the numbers of the copy they were made on)."""
    from ..data import verify
    from .runner import lookup
    from .store import RecordCorruptError

    here: dict[str, tuple | None] = {}
    found: dict[str, tuple[set, tuple]] = {}
    for s in specs:
        try:
            rec = lookup(s)
        except RecordCorruptError:
            continue  # reported by the sweep as that run's failure
        if rec is None:
            continue
        for d in rec.get("provenance", {}).get("datasets", []):
            name = d.get("dataset")
            if name not in here:
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        here[name] = _copy_of(verify(name, download=False))
                except Exception:  # not available here: nothing to compare with
                    here[name] = None
            if here[name] is not None and _copy_of(d) != here[name]:
                found.setdefault(name, (set(), _copy_of(d)))[0].add(s.run_id)
    return {name: (len(ids), copy, here[name]) for name, (ids, copy) in found.items()}


def _copy_words(copy: tuple) -> str:
    kind, test = copy
    return f"{kind} copy" + (f", {test:,} test images" if test else "")


def warn_data_mismatches(specs) -> None:
    for name, (n, rec, now) in data_mismatches(specs).items():
        log.warning("%s: %d recorded run(s) were made on another copy of it (%s) than the one "
                    "configured now (%s); they are loaded as recorded. Delete those records "
                    "(or pass rerun=True) to retrain them on this copy.", name, n,
                    _copy_words(rec), _copy_words(now))


def _number(kind: type, low: float, strict: bool):
    """An argparse ``type``: a finite ``kind`` (int or float) > ``low`` (``strict``) or >=."""
    what = f"{'an integer' if kind is int else 'a number'} {'>' if strict else '>='} {low:g}"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not math.isfinite(value) or value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"{text!r} must be {what}")
        return value

    return parse


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", required=True, choices=BUDGETS,
                    help="smoke only with --plan-only or --no-render (see above)")
    ap.add_argument("--workers", type=_number(int, 1, False), default=1,
                    help="task slots of a local Ray instance (1: serial, no Ray)")
    ap.add_argument("--address", default=None,
                    help="an existing Ray cluster (default: $RAY_ADDRESS)")
    ap.add_argument("--max-retries", type=_number(int, 0, False), default=2,
                    help="resubmissions of a run whose worker or node died")
    ap.add_argument("--cpus-per-run", type=_number(float, 0, True), default=None,
                    help="CPUs each Ray task asks for (default: 1 with a GPU or on a cluster, "
                         "else the local cores divided among the workers)")
    ap.add_argument("--gpus-per-run", type=_number(float, 0, False), default=None,
                    help="share of a GPU each Ray task asks for (default: by network size)")
    ap.add_argument("--plan-only", action="store_true",
                    help="print the runs each notebook asks for and what is missing; run nothing")
    ap.add_argument("--no-render", action="store_true",
                    help="execute the runs but do not render the notebooks")
    ap.add_argument("notebooks", nargs="+", type=Path)
    args = ap.parse_args(argv)
    if args.budget == "smoke" and not (args.plan_only or args.no_render):
        ap.error("--budget smoke would replace the book's notebooks (book/) with smoke renders "
                 "whose numbers are meaningless; smoke is for nbval and CI (make test). Render "
                 "at cpu or paper, or add --plan-only or --no-render")
    from .runner import env_threads

    try:
        env_threads()
    except ValueError as exc:
        ap.error(str(exc))
    notebooks = [Path(n).resolve() for n in args.notebooks]
    absent = [str(n) for n in notebooks if not n.is_file()]
    if absent:
        ap.error(f"no such notebook(s): {absent}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    address = args.address or os.environ.get("RAY_ADDRESS") or None

    if args.plan_only:
        from .plan import plan

        p = plan(notebooks, args.budget)
        print(p.summary())
        warn_data_mismatches([s for nb in p.notebooks for s in nb.specs])
        for (model, dataset), epochs in sorted(p.epochs_by_model().items()):
            print(f"  {model}/{dataset}: {epochs} epochs in all")
        return 1 if p.errors else 0

    problems, _ = execute_runs(notebooks, args.budget, workers=args.workers, address=address,
                               max_retries=args.max_retries, num_cpus=args.cpus_per_run,
                               num_gpus=args.gpus_per_run)
    if not args.no_render:
        for nb in notebooks:
            if nb in problems:
                continue
            log.info("rendering %s at budget %s", nb, args.budget)
            try:
                execute_notebook(nb, args.budget)
            except Exception as exc:  # keep going: one failing section must not stop the book
                problems[nb] = f"rendering failed: {exc}"
    if problems:
        for nb, why in problems.items():
            log.error("%s not rendered: %s", nb, why)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
