"""Write the book's generated parts: the table of contents and the claims scorecards.

``python -m replib.experiments.scorecard book`` regenerates ``book/_toc.yml`` (every executed
notebook present in ``book/<paper>/``) and ``book/_generated/*.md``; it reads
only ``data/claims/`` and ``data/results/`` (no training), so ``make book`` runs it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .claims import status_table, summary
from .spec import PAPERS

TITLES = {
    "acnn": "ACNN: DRL with proximal gradient neuron pruning",
    "lottery": "Concave regularizers for winning tickets",
    "irda": "iRDA for sparse CNNs",
    "l0": "l0-norm regularization and weight pruning",
    "proxns": "Proximal network slimming",
    "compare": "Beyond the papers",
}


def _fmt(v) -> str:
    if v is None or v == "":
        return "—"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def markdown_table(df) -> str:
    if df is None or len(df) == 0:
        return "_No claims recorded yet._\n"
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(_fmt(r[c]).replace("|", "/") for c in cols) + " |")
    return "\n".join(lines) + "\n"


PAGES = ("methods", "reproduce", "compute", "cluster")


def toc(book_dir: Path) -> str:
    """``_toc.yml`` listing the pages and every executed notebook present in ``book/``."""
    book_dir = Path(book_dir)
    lines = ["format: jb-book", "root: intro", "parts:", "  - caption: The book", "    chapters:"]
    lines += [f"      - file: {p}" for p in PAGES if (book_dir / f"{p}.md").exists()]
    for p in ("compare", "l0", "acnn", "lottery", "irda", "proxns"):
        if not (book_dir / p / "index.md").exists():
            continue
        lines += [f'  - caption: "{TITLES[p]}"', "    chapters:", f"      - file: {p}/index"]
        sections = sorted(
            f.with_suffix("").name for f in (book_dir / p).iterdir()
            if f.name[:2].isdigit() and f.suffix in (".ipynb", ".md")
        )
        if sections:
            lines.append("        sections:")
            lines += [f"          - file: {p}/{s}" for s in sections]
    return "\n".join(lines) + "\n"


def write(book_dir: Path) -> list[Path]:
    out_dir = Path(book_dir) / "_generated"
    out_dir.mkdir(parents=True, exist_ok=True)
    (Path(book_dir) / "_toc.yml").write_text(toc(book_dir))
    written = [Path(book_dir) / "_toc.yml"]
    papers = list(PAPERS)
    front = out_dir / "scorecard.md"
    front.write_text(markdown_table(summary(papers)))
    written.append(front)
    for p in papers:
        path = out_dir / f"scorecard_{p}.md"
        try:
            table = status_table(p)
        except FileNotFoundError:
            table = None
        path.write_text(markdown_table(table))
        written.append(path)
    return written


if __name__ == "__main__":
    for p in write(Path(sys.argv[1] if len(sys.argv) > 1 else "book")):
        print(p)
