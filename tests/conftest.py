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
    _link_real(root)
    return root


def load_stand_in(name: str, split: str):
    """``replib.data.load`` of a stand-in data set, without its "rebuilt copy" warning."""
    import warnings

    from replib import data

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return data.load(name, split)


def _link_real(root: Path) -> None:
    """Link the real data sets (``REPLIB_DATA`` or the shared copy) into ``root`` beside the
    stand-ins already there."""
    real = Path(os.environ.get("REPLIB_DATA") or SHARED)
    if real.exists() and real.resolve() != root.resolve():
        for item in real.iterdir():
            if not (root / item.name).exists():
                (root / item.name).symlink_to(item)


def fake_tinyimagenet(root: Path, per_class: int = 2, n_val: int = 200, grey: int = 3,
                      seed: int = 0, wnids: list[str] | None = None) -> Path:
    """A tiny stand-in Tiny ImageNet under ``root``: ``tiny-imagenet/tiny-imagenet-200.zip`` in
    the official archive's layout (``wnids.txt``, ``train/<wnid>/images/<wnid>_<k>.JPEG``,
    ``val/images/val_<k>.JPEG`` and ``val/val_annotations.txt``), 200 made-up classes,
    ``per_class`` random 64x64 JPEGs per class (the first ``grey`` of them grey-scale, as a few
    official ones are) and ``n_val`` validation images with labels cycling over the classes,
    listed in a shuffled class order; with a ``MANIFEST.json`` of the zip's sha256. The real
    data sets are linked beside it."""
    import hashlib
    import io
    import json
    import zipfile

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    wnids = wnids or [f"n{9000000 + 37 * i:08d}" for i in range(200)]
    folder = root / "tiny-imagenet"
    folder.mkdir(parents=True)
    archive = folder / "tiny-imagenet-200.zip"

    def jpeg(mode: str) -> bytes:
        shape = (64, 64) if mode == "L" else (64, 64, 3)
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(buf, "JPEG")
        return buf.getvalue()

    base = "tiny-imagenet-200"
    listed = list(rng.permutation(wnids))  # wnids.txt is not sorted in the official archive
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(f"{base}/wnids.txt", "\n".join(listed) + "\n")
        k = 0
        for w in wnids:
            for j in range(per_class):
                zf.writestr(f"{base}/train/{w}/images/{w}_{j}.JPEG",
                            jpeg("L" if k < grey else "RGB"))
                k += 1
        lines = []
        for i in range(n_val):
            zf.writestr(f"{base}/val/images/val_{i}.JPEG", jpeg("RGB"))
            lines.append(f"val_{i}.JPEG\t{listed[i % len(listed)]}\t0\t0\t63\t63")
        zf.writestr(f"{base}/val/val_annotations.txt", "\n".join(lines) + "\n")
    (folder / "MANIFEST.json").write_text(json.dumps(
        {"sha256": {archive.name: hashlib.sha256(archive.read_bytes()).hexdigest()},
         "exactness": "random stand-in for tests", "test_images": n_val}))
    _link_real(root)
    return root


def fake_imagenet(root: Path, per_class: int = 1, val_per_class: int = 1, seed: int = 0) -> Path:
    """A tiny stand-in ILSVRC2012 under ``root/imagenet`` in the ImageFolder layout
    (``train/<wnid>/*.JPEG``, ``val/<wnid>/*.JPEG``): 1000 made-up classes, random JPEGs of
    assorted small sizes (some portrait, some landscape, a few grey-scale), and a
    ``MANIFEST.json`` giving its own image counts. The real data sets are linked beside it."""
    import json

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder = root / "imagenet"
    wnids = [f"n{1440000 + 17 * i:08d}" for i in range(1000)]
    k = 0
    for split, n in (("train", per_class), ("val", val_per_class)):
        for w in wnids:
            (folder / split / w).mkdir(parents=True)
            for j in range(n):
                h, wd = int(rng.integers(24, 72)), int(rng.integers(24, 72))
                grey = k % 97 == 0
                arr = rng.integers(0, 256, (h, wd) if grey else (h, wd, 3), dtype=np.uint8)
                Image.fromarray(arr, "L" if grey else "RGB").save(
                    folder / split / w / f"{w}_{j}.JPEG", "JPEG")
                k += 1
    (folder / "MANIFEST.json").write_text(json.dumps(
        {"counts": {"train": 1000 * per_class, "val": 1000 * val_per_class},
         "exactness": "random stand-in for tests"}))
    _link_real(root)
    return root
