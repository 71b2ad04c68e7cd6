"""replib: the library behind the sparse-training replication book.

Layers (each imports only the ones before it): data -> models -> sparsity -> rl / baselines
-> train -> metrics -> experiments -> plots.
"""

from __future__ import annotations

import os
from pathlib import Path

__version__ = "0.1.0"


def repo_root() -> Path:
    """The project checkout holding ``data/`` (``REPLIB_ROOT`` overrides)."""
    env = os.environ.get("REPLIB_ROOT")
    if env:
        return Path(env).resolve()
    here = Path(__file__).resolve().parents[2]
    if (here / "pyproject.toml").exists() and (here / "data").exists():
        return here
    return Path.cwd()


def default_device():
    """CUDA when present, else CPU."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
