"""Shared fixtures: temporary results/checkpoint folders so tests never touch data/results."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Tiny tensors on a shared 2-core machine run much faster on one thread.
torch.set_num_threads(1)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


@pytest.fixture(autouse=True)
def _isolated_results(tmp_path, monkeypatch):
    monkeypatch.setenv("REPLIB_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("REPLIB_CHECKPOINTS", str(tmp_path / "checkpoints"))
    monkeypatch.setenv("REPLIB_OFFLINE", "1")
    if not os.environ.get("REPLIB_DATA") and SHARED.exists():
        monkeypatch.setenv("REPLIB_DATA", str(SHARED))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: OpenMP threads only add overhead, badly so on a loaded 2-core machine.

    For a module whose tests must run on one thread whatever an earlier module set:
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def have_data(name: str) -> bool:
    """Whether dataset ``name`` is on disk and intact, for ``skipif`` at collection time.

    Looks where the tests will look: ``REPLIB_DATA``, else the shared copy (what
    ``_isolated_results`` sets), else replib's default folder."""
    from replib import data

    root = os.environ.get("REPLIB_DATA") or (SHARED if SHARED.exists() else None)
    try:
        data.verify(name, root=Path(root) if root else None)
        return True
    except (data.DatasetMissingError, data.DatasetCorruptError):
        return False
