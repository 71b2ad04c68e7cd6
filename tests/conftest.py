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


def fake_cifar100(root: Path, n_train: int = 200, n_test: int = 100, seed: int = 0) -> Path:
    """A tiny stand-in CIFAR-100 under ``root`` in torchvision's layout (random images, labels
    cycling over the 100 classes) with a ``MANIFEST.json`` of sha256 sums, which
    ``replib.data`` loads as a checked rebuilt copy. For the code paths that run only where
    CIFAR-100 can be loaded, which offline it cannot. The real data sets are linked beside it
    (``REPLIB_DATA`` can point at ``root``)."""
    import hashlib
    import json
    import pickle

    import numpy as np

    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    sums = {}
    for split, n in (("train", n_train), ("test", n_test)):
        entry = {"data": rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8),
                 "fine_labels": [i % 100 for i in range(n)],
                 "coarse_labels": [i % 20 for i in range(n)]}
        (folder / split).write_bytes(pickle.dumps(entry))
        sums[split] = hashlib.sha256((folder / split).read_bytes()).hexdigest()
    (folder / "MANIFEST.json").write_text(json.dumps(
        {"sha256": sums, "exactness": "random stand-in for tests", "test_images": n_test}))
    real = Path(os.environ.get("REPLIB_DATA") or SHARED)
    if real.exists():
        for item in real.iterdir():
            if item.name != folder.name and not (root / item.name).exists():
                (root / item.name).symlink_to(item)
    return root
