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


def have_data(name: str) -> bool:
    from replib import data

    try:
        data.verify(name)
        return True
    except (data.DatasetMissingError, data.DatasetCorruptError):
        return False
