"""``make reproduce``: run notebooks with papermill at a budget into ``book/``.

Each source ``notebooks/<paper>/<name>.ipynb`` is executed with ``-p budget <budget>`` into
``book/<paper>/<name>.ipynb``; the runs it asks for are recorded in ``data/results/`` (and
loaded instead of retrained when their records exist).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .. import repo_root
from .budgets import check_budget

log = logging.getLogger(__name__)


def output_path(notebook: Path) -> Path:
    notebook = Path(notebook).resolve()
    return repo_root() / "book" / notebook.parent.name / notebook.name


def execute_notebook(notebook: Path, budget: str, parameters: dict | None = None) -> Path:
    import papermill

    out = output_path(notebook)
    out.parent.mkdir(parents=True, exist_ok=True)
    params = {"budget": budget, **(parameters or {})}
    papermill.execute_notebook(str(notebook), str(out), parameters=params,
                               cwd=str(Path(notebook).resolve().parent), progress_bar=False)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--budget", required=True)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("notebooks", nargs="+", type=Path)
    args = ap.parse_args(argv)
    check_budget(args.budget)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    failed = []
    for nb in args.notebooks:
        log.info("executing %s at budget %s", nb, args.budget)
        try:
            execute_notebook(nb, args.budget)
        except Exception as exc:  # keep going: one failing section must not stop the book
            log.error("%s failed: %s", nb, exc)
            failed.append(nb)
    if failed:
        log.error("failed notebooks: %s", [str(f) for f in failed])
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
