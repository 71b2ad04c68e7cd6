"""replib: the library behind the sparse-training replication book.

Layers (each imports only the ones before it): data -> models -> sparsity -> rl / baselines
-> train -> metrics -> experiments -> plots.
"""

from __future__ import annotations

import os
from pathlib import Path

__version__ = "0.1.0"


class RepoRootNotFoundError(RuntimeError):
    """No project checkout could be found to hold ``data/`` and ``book/``."""


def _is_repo_root(path: Path) -> bool:
    return ((path / "pyproject.toml").is_file() and (path / "data").is_dir()
            and (path / "src" / "replib").is_dir())


def repo_root() -> Path:
    """The project checkout holding ``data/`` (``REPLIB_ROOT`` overrides).

    Without ``REPLIB_ROOT``: the checkout this package was installed from in editable mode,
    else the first of the working directory and its parents that is a checkout (holds
    ``pyproject.toml``, ``data/`` and ``src/replib/``; papermill runs notebooks in
    ``notebooks/<paper>/``). Never the working directory itself when it is not one: records
    and checkpoints would silently land in a stray ``data/`` there.
    """
    env = os.environ.get("REPLIB_ROOT")
    if env:
        return Path(env).resolve()
    here = Path(__file__).resolve().parents[2]
    if _is_repo_root(here):
        return here
    cwd = Path.cwd().resolve()
    for folder in (cwd, *cwd.parents):
        if _is_repo_root(folder):
            return folder
    raise RepoRootNotFoundError(
        f"cannot find the replib checkout: neither {here} (where the package is installed) nor "
        f"{cwd} or a parent of it holds pyproject.toml, data/ and src/replib/; install with "
        f"`pip install -e .` from the checkout, run from inside it, or set REPLIB_ROOT to it"
    )


def default_device():
    """CUDA when present, else CPU."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
