import shutil
import warnings

import pytest
import torch

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


def test_batches_are_deterministic_and_augmentation_crops_and_flips():
    split = data.load("mnist", "test").subset(torch.arange(300))
    a = [y for _, y in data.batches(split, 64, shuffle=True, seed=3)]
    b = [y for _, y in data.batches(split, 64, shuffle=True, seed=3)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert sum(len(y) for y in a) == 300
    img = torch.arange(2 * 1 * 4 * 4, dtype=torch.uint8).view(2, 1, 4, 4)
    g = torch.Generator().manual_seed(0)
    out = data.augment(img, pad=0, flip=True, generator=g)
    for i in range(2):  # each image is either unchanged or mirrored
        assert torch.equal(out[i], img[i]) or torch.equal(out[i], img[i].flip(2))
    cropped = data.augment(img, pad=1, flip=False, generator=g)
    assert cropped.shape == img.shape
    # every crop of a zero-padded image is a shifted window: its nonzero values are a subset
    assert set(cropped[0].unique().tolist()) <= set(img[0].unique().tolist()) | {0}


def test_train_val_split_is_disjoint_and_sized():
    split = data.load("mnist", "test")
    tr, va = data.train_val_split(split, 1000, seed=0)
    assert len(tr) == 9000 and len(va) == 1000
    with pytest.raises(ValueError, match="val_size"):
        data.train_val_split(split, 0)
