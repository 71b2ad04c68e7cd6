import dataclasses
import shutil
import warnings
from pathlib import Path

import pytest
import torch

import replib
from replib import data


def test_unknown_dataset_names_parameter():
    with pytest.raises(ValueError, match=r"dataset='svhn'.*allowed values"):
        data.load("svhn")


def test_mnist_loads_whole_split_with_official_statistics():
    train = data.load("mnist", "train")
    assert train.images.shape == (60000, 1, 28, 28) and train.images.dtype == torch.uint8
    assert train.labels[:5].tolist() == [5, 0, 4, 1, 9]
    assert torch.bincount(train.labels).tolist()[0] == 5923  # official label count of digit 0
    mean = train.images.float().div(255).mean().item()
    assert abs(mean - 0.1307) < 1e-3
    assert train.provenance["copy"] == "official"


def test_missing_dataset_offline_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("REPLIB_DATA", str(tmp_path))
    with pytest.raises(data.DatasetMissingError) as err:
        data.load("fashionmnist", "train")
    msg = str(err.value)
    assert str(tmp_path / "FashionMNIST" / "raw") in msg
    assert "train-images-idx3-ubyte" in msg


def test_available_says_why_a_dataset_cannot_be_loaded(tmp_path, monkeypatch):
    monkeypatch.setenv("REPLIB_OFFLINE", "1")
    assert data.available("cifar100", tmp_path) == (
        False, "data not available offline: cifar100 (DatasetMissingError)")
    _copy_dataset(data.data_root(), tmp_path, "MNIST/raw")
    assert data.available("mnist", tmp_path) == (True, "")
    victim = tmp_path / "MNIST/raw/t10k-labels-idx1-ubyte"
    victim.write_bytes(victim.read_bytes()[:-8])
    ok, why = data.available("mnist", tmp_path)
    assert not ok and why.endswith("(DatasetCorruptError)")
    with pytest.raises(ValueError):
        data.available("svhn", tmp_path)


def _copy_dataset(src_root, dst_root, folder):
    shutil.copytree(src_root / folder, dst_root / folder)
    for f in (dst_root / folder).iterdir():
        f.chmod(0o644)


def test_truncated_file_is_reported_not_loaded(tmp_path, monkeypatch):
    src = data.data_root()
    _copy_dataset(src, tmp_path, "MNIST/raw")
    victim = tmp_path / "MNIST/raw/t10k-images-idx3-ubyte"
    victim.write_bytes(victim.read_bytes()[:100_000])
    monkeypatch.setenv("REPLIB_DATA", str(tmp_path))
    monkeypatch.setenv("REPLIB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(data.DatasetCorruptError, match="t10k-images-idx3-ubyte"):
        data.load("mnist", "test")


def test_manifest_copy_is_checked_warned_and_recorded(tmp_path, monkeypatch):
    src = data.data_root() / "cifar-10-batches-py"
    if not (src / "MANIFEST.json").exists():
        pytest.skip("only the offline CIFAR-10 copy carries a manifest")
    (tmp_path / "cifar-10-batches-py").mkdir()
    for f in src.iterdir():
        (tmp_path / "cifar-10-batches-py" / f.name).symlink_to(f)
    monkeypatch.setenv("REPLIB_DATA", str(tmp_path))
    monkeypatch.setenv("REPLIB_CACHE", str(tmp_path / "cache"))
    with pytest.warns(UserWarning, match="rebuilt copy"):
        test = data.load("cifar10", "test")
    assert test.provenance["copy"] == "manifest" and len(test) == 1000
    # a corrupted byte in one batch breaks the manifest check
    bad = tmp_path / "cifar-10-batches-py" / "test_batch"
    raw = bytearray(bad.read_bytes())
    raw[5000] ^= 0xFF
    bad.unlink()
    bad.write_bytes(bytes(raw))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(data.DatasetCorruptError, match="sha256"):
            data.load("cifar10", "test")


@pytest.mark.parametrize("where", ["mnist", "imagenet"])
def test_unreadable_manifest_is_a_corrupt_dataset_not_a_crash(tmp_path, monkeypatch, where):
    monkeypatch.setenv("REPLIB_OFFLINE", "1")
    info = data.check_name(where)
    folder = tmp_path / info.folder
    for f in info.files:  # wrong bytes (or empty class folders): only the manifest can vouch
        if where == "imagenet":
            (folder / f).mkdir(parents=True)
        else:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f).write_bytes(b"rebuilt")
    manifest = folder / "MANIFEST.json"
    manifest.write_text('{"sha256": {"truncated')
    with pytest.raises(data.DatasetCorruptError, match="MANIFEST.json is not valid JSON") as err:
        data.verify(where, tmp_path)
    assert str(manifest) in str(err.value)
    assert data.available(where, tmp_path) == (
        False, f"data not available offline: {where} (DatasetCorruptError)")
    manifest.write_text("[1, 2]")
    with pytest.raises(data.DatasetCorruptError, match="not a JSON object"):
        data.verify(where, tmp_path)


def _numbered(split):
    """``split`` with each image's position as its label, to follow images through a shuffle."""
    return dataclasses.replace(split, labels=torch.arange(len(split)))


def test_batches_are_deterministic_and_augmentation_crops_and_flips():
    split = _numbered(data.load("mnist", "test").subset(torch.arange(300)))
    a = [y for _, y in data.batches(split, 64, shuffle=True, seed=3)]
    b = [y for _, y in data.batches(split, 64, shuffle=True, seed=3)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert sum(len(y) for y in a) == 300
    order, other = torch.cat(a), torch.cat([y for _, y in data.batches(split, 64, shuffle=True,
                                                                           seed=4)])
    assert sorted(order.tolist()) == sorted(other.tolist()) == list(range(300))
    assert not torch.equal(order, other)  # another seed, another order
    assert not torch.equal(order, torch.arange(300))  # shuffled at all
    n = 16
    img = torch.arange(n * 1 * 4 * 4, dtype=torch.uint8).view(n, 1, 4, 4)  # none symmetric
    g = torch.Generator().manual_seed(0)
    out = data.augment(img, pad=0, flip=True, generator=g)
    mirrored = [torch.equal(out[i], img[i].flip(2)) for i in range(n)]
    for i in range(n):  # each image is either unchanged or mirrored
        assert torch.equal(out[i], img[i]) or mirrored[i]
    assert 0 < sum(mirrored) < n  # a coin per image: some mirrored, some not
    cropped = data.augment(img, pad=1, flip=False, generator=g)
    assert cropped.shape == img.shape
    # every crop of a zero-padded image is a shifted window: its nonzero values are a subset
    assert set(cropped[0].unique().tolist()) <= set(img[0].unique().tolist()) | {0}


def test_train_val_split_is_disjoint_and_sized():
    split = _numbered(data.load("mnist", "test"))
    tr, va = data.train_val_split(split, 1000, seed=0)
    assert len(tr) == 9000 and len(va) == 1000
    train_ids, val_ids = set(tr.labels.tolist()), set(va.labels.tolist())
    assert len(train_ids) == 9000 and len(val_ids) == 1000  # no image twice
    assert not train_ids & val_ids  # disjoint
    assert train_ids | val_ids == set(range(10000))  # and together the whole split
    assert torch.equal(va.images, split.images[va.labels])  # images travel with their labels
    other = set(data.train_val_split(split, 1000, seed=1)[1].labels.tolist())
    assert other != val_ids
    with pytest.raises(ValueError, match="val_size"):
        data.train_val_split(split, 0)


def test_repo_root_is_the_checkout_or_a_clear_error(tmp_path, monkeypatch):
    checkout = replib.repo_root()
    assert (checkout / "pyproject.toml").is_file() and (checkout / "data" / "claims").is_dir()
    # a non-editable install: the package lives in site-packages, far from any checkout
    monkeypatch.delenv("REPLIB_ROOT", raising=False)
    monkeypatch.setattr(replib, "__file__",
                        str(tmp_path / "lib" / "site-packages" / "replib" / "__init__.py"))
    monkeypatch.chdir(checkout / "notebooks" / "l0")  # where papermill runs a notebook
    assert replib.repo_root() == checkout
    stray = tmp_path / "notebooks" / "l0"
    (stray / "data").mkdir(parents=True)  # a data/ alone does not make a checkout
    monkeypatch.chdir(stray)
    with pytest.raises(replib.RepoRootNotFoundError, match="set REPLIB_ROOT") as err:
        replib.repo_root()
    assert isinstance(err.value, RuntimeError) and str(stray) in str(err.value)
    monkeypatch.setenv("REPLIB_ROOT", str(checkout))
    assert replib.repo_root() == checkout
    assert Path.cwd() == stray
