"""Tiny ImageNet (``replib.data``, the lottery paper's Figs. 5-7): read from its official zip,
checked, and clear about what is wrong. Offline there is no copy, so the tests use the random
stand-in archive of ``conftest.fake_tinyimagenet`` (same layout as the official one)."""

from __future__ import annotations

import hashlib
import io
import json
import warnings
import zipfile

import numpy as np
import pytest
import torch
from conftest import fake_tinyimagenet, load_stand_in
from PIL import Image

from replib import data

BASE = "tiny-imagenet-200"


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    root = fake_tinyimagenet(tmp_path / "data", per_class=2, n_val=300, grey=3)
    monkeypatch.setenv("REPLIB_DATA", str(root))
    monkeypatch.setenv("REPLIB_CACHE", str(tmp_path / "cache"))
    return root / "tiny-imagenet"


def _load(split):
    return load_stand_in("tinyimagenet", split)


def _decode(zf, name):
    with Image.open(io.BytesIO(zf.read(name))) as im:
        return torch.from_numpy(np.asarray(im.convert("RGB")).transpose(2, 0, 1).copy())


def test_splits_labels_and_pixels_follow_the_archive(stand_in):
    train, test = _load("train"), _load("test")
    assert train.images.shape == (400, 3, 64, 64) and train.images.dtype == torch.uint8
    assert test.images.shape == (300, 3, 64, 64) and len(test.labels) == 300
    assert train.info.num_classes == 200 and train.provenance["copy"] == "manifest"
    with zipfile.ZipFile(stand_in / "tiny-imagenet-200.zip") as zf:
        listed = zf.read(f"{BASE}/wnids.txt").decode().split()
        classes = sorted(listed)  # label = index of the sorted WordNet id, whatever the file order
        assert listed != classes
        # train: by class, then by file name; every class has its 2 images
        assert torch.bincount(train.labels, minlength=200).tolist() == [2] * 200
        assert train.labels.tolist() == sorted(train.labels.tolist())
        w = classes[7]
        assert torch.equal(train.images[14], _decode(zf, f"{BASE}/train/{w}/images/{w}_0.JPEG"))
        assert torch.equal(train.images[15], _decode(zf, f"{BASE}/train/{w}/images/{w}_1.JPEG"))
        # test: the validation images in the annotation file's order, labelled by its wnid
        lines = zf.read(f"{BASE}/val/val_annotations.txt").decode().split("\n")
        for i in (0, 1, 123, 299):
            fname, wnid = lines[i].split("\t")[:2]
            assert test.labels[i].item() == classes.index(wnid)
            assert torch.equal(test.images[i], _decode(zf, f"{BASE}/val/images/{fname}"))
    # grey-scale JPEGs come back as three equal channels
    grey = train.images[:3].int()
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 1], grey[:, 2])
    assert not torch.equal(train.images[3, 0], train.images[3, 1])


def test_normalize_uses_tiny_imagenet_statistics(stand_in):
    train = _load("train")
    x = train.normalize(train.images[:2])
    mean = torch.tensor(data.DATASETS["tinyimagenet"].mean).view(1, 3, 1, 1)
    std = torch.tensor(data.DATASETS["tinyimagenet"].std).view(1, 3, 1, 1)
    assert torch.allclose(x, (train.images[:2].float() / 255 - mean) / std, atol=1e-6)


def test_missing_archive_names_the_folder_and_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("REPLIB_DATA", str(tmp_path))
    with pytest.raises(data.DatasetMissingError) as err:
        data.load("tinyimagenet", "train")
    assert str(tmp_path / "tiny-imagenet") in str(err.value)
    assert "tiny-imagenet-200.zip" in str(err.value)
    assert data.available("tinyimagenet") == (
        False, "data not available offline: tinyimagenet (DatasetMissingError)")


def test_download_asks_for_the_official_zip_with_its_md5(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tvu

    calls = []
    monkeypatch.setattr(tvu, "download_url", lambda *a, **kw: calls.append((a, kw)))
    monkeypatch.setenv("REPLIB_OFFLINE", "0")
    with pytest.raises(data.DatasetMissingError):  # the stub downloads nothing
        data.verify("tinyimagenet", root=tmp_path)
    assert calls == [((data.TINY_IMAGENET_URL, str(tmp_path / "tiny-imagenet")),
                      {"filename": "tiny-imagenet-200.zip",
                       "md5": "90528d7ca1a48142e341f4ef8d21d0de"})]


def test_an_archive_that_is_not_the_official_one_is_refused(stand_in):
    (stand_in / "MANIFEST.json").unlink()  # no manifest: the official MD5 must match
    with pytest.raises(data.DatasetCorruptError, match="md5 .* expected 90528d7c"):
        data.load("tinyimagenet", "test")


def _rewrite(stand_in, edit):
    """Rebuild the stand-in archive with ``edit(name, bytes) -> bytes | None`` (None drops the
    member) and re-seal its manifest, so only the parser can object."""
    archive = stand_in / "tiny-imagenet-200.zip"
    with zipfile.ZipFile(archive) as zf:
        members = [(n, zf.read(n)) for n in zf.namelist()]
    with zipfile.ZipFile(archive, "w") as zf:
        for n, b in members:
            b = edit(n, b)
            if b is not None:
                zf.writestr(n, b)
    manifest = json.loads((stand_in / "MANIFEST.json").read_text())
    manifest["sha256"][archive.name] = hashlib.sha256(archive.read_bytes()).hexdigest()
    (stand_in / "MANIFEST.json").write_text(json.dumps(manifest))


def _small_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.mark.parametrize("split, edit, match", [
    ("test", lambda n, b: b[:40] if n.endswith("val_5.JPEG") else b,
     r"val_5\.JPEG cannot be read as an image"),
    ("test", lambda n, b: None if n.endswith("val_5.JPEG") else b,
     r"val_5\.JPEG cannot be read as an image \(KeyError"),
    ("train", lambda n, b: _small_jpeg() if n.endswith("_1.JPEG") and "/train/" in n else b,
     "is 32x32, expected 64x64"),
    ("test", lambda n, b: b.replace(b"\tn", b"\tx", 1) if n.endswith("val_annotations.txt")
     else b, "names a class not in wnids.txt"),
    ("train", lambda n, b: None if n.endswith("wnids.txt") else b, "no tiny-imagenet-200/wnids"),
])
def test_a_damaged_archive_is_one_clear_error(stand_in, split, edit, match):
    _rewrite(stand_in, edit)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(data.DatasetCorruptError, match=match):
            data.load("tinyimagenet", split)


def test_a_file_that_is_not_a_zip_is_one_clear_error(stand_in):
    archive = stand_in / "tiny-imagenet-200.zip"
    archive.write_bytes(b"not a zip" * 100)
    manifest = json.loads((stand_in / "MANIFEST.json").read_text())
    manifest["sha256"][archive.name] = hashlib.sha256(archive.read_bytes()).hexdigest()
    (stand_in / "MANIFEST.json").write_text(json.dumps(manifest))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(data.DatasetCorruptError, match="not a readable zip"):
            data.load("tinyimagenet", "train")
