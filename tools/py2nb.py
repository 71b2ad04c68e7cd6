"""Turn a percent-format script into a notebook (authoring aid; the .ipynb is the source).

    python tools/py2nb.py draft.py notebooks/<paper>/NN_name.ipynb

Cells start with ``# %%`` (code), ``# %% [markdown]`` (markdown, each line prefixed ``# ``) or
``# %% tags=["parameters"]`` (the papermill parameters cell).
"""

from __future__ import annotations

import re
import sys

import nbformat


def convert(text: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    chunks = re.split(r"^# %%(.*)$", text, flags=re.M)
    for header, body in zip(chunks[1::2], chunks[2::2]):
        body = body.strip("\n")
        if "[markdown]" in header:
            src = "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#")
                            for line in body.splitlines())
            nb.cells.append(nbformat.v4.new_markdown_cell(src))
        else:
            cell = nbformat.v4.new_code_cell(body)
            m = re.search(r"tags=\[(.*?)\]", header)
            if m:
                cell.metadata["tags"] = [t.strip().strip("'\"") for t in m.group(1).split(",")]
            nb.cells.append(cell)
    return nb


if __name__ == "__main__":
    src, dst = sys.argv[1], sys.argv[2]
    nbformat.write(convert(open(src).read()), dst)
    print(dst)
