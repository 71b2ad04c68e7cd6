"""ILSVRC2012 (iRDA Table 3): streamed from an ImageFolder copy, checked by its class folders
and counts, decoded with the ImageNet recipe's transforms, reproducibly. Offline there is no
copy, so the tests use the random stand-in of ``conftest.fake_imagenet``."""

from __future__ import annotations

import json
import random
import shutil
import warnings

import numpy as np
import pytest
import torch
from conftest import fake_imagenet, load_stand_in
from PIL import Image

from replib import data


@pytest.fixture(scope="module")
def stand_in_root(tmp_path_factory):
    return fake_imagenet(tmp_path_factory.mktemp("data"))


@pytest.fixture
def stand_in(stand_in_root, monkeypatch):
    monkeypatch.setenv("REPLIB_DATA", str(stand_in_root))
    monkeypatch.setenv("REPLIB_WORKERS", "0")
    return stand_in_root / "imagenet"


def _load(split):
    return load_stand_in("imagenet", split)


def test_missing_copy_explains_the_layout_and_never_downloads(tmp_path, monkeypatch):
    monkeypatch.setenv("REPLIB_DATA", str(tmp_path))
    monkeypatch.setenv("REPLIB_OFFLINE", "0")
    import torchvision.datasets.utils as tvu

    monkeypatch.setattr(tvu, "download_url", lambda *a, **k: pytest.fail("tried to download"))
    with pytest.raises(data.DatasetMissingError) as err:
        data.load("imagenet", "train")
    msg = str(err.value)
    assert str(tmp_path / "imagenet") in msg and "train/<wnid>/*.JPEG" in msg and "login" in msg
    assert data.available("imagenet") == (
        False, "data not available offline: imagenet (DatasetMissingError)")


def test_splits_are_the_class_folders_in_order(stand_in):
    train, test = _load("train"), _load("test")
    assert isinstance(train, data.StreamSplit) and len(train) == 1000 and len(test) == 1000
    assert train.labels.tolist() == list(range(1000)) == test.labels.tolist()
    classes = sorted(p.name for p in (stand_in / "train").iterdir())
    assert train.files[5].endswith(f"train/{classes[5]}/{classes[5]}_0.JPEG")
    assert test.provenance["copy"] == "manifest" and test.provenance["folder"].endswith("val")
    sub = train.subset(torch.tensor([7, 3]), "two")
    assert sub.labels.tolist() == [7, 3] and sub.files == [train.files[7], train.files[3]]
    assert "two: 2 of 1000" == sub.provenance["subset"]


def test_an_incomplete_or_mismatched_copy_is_one_clear_error(stand_in_root, tmp_path,
                                                             monkeypatch):
    root = tmp_path / "copy"
    shutil.copytree(stand_in_root / "imagenet", root / "imagenet")
    monkeypatch.setenv("REPLIB_DATA", str(root))
    victim = next((root / "imagenet" / "val").iterdir())
    moved = next(victim.iterdir())
    moved.unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(data.DatasetCorruptError, match="has 999 images, expected 1000"):
            data.load("imagenet", "test")
        ok, why = data.available("imagenet")
        assert not ok and why.endswith("(DatasetCorruptError)")
        # the same count, but one class folder renamed: train and val disagree
        Image.new("RGB", (30, 30)).save(victim / "extra.JPEG")
        victim.rename(victim.with_name("n99999999"))
        with pytest.raises(data.DatasetCorruptError, match="class folders differ"):
            data.load("imagenet", "test")
    # no manifest: the official counts are expected
    manifest = root / "imagenet" / "MANIFEST.json"
    assert json.loads(manifest.read_text())["counts"]["train"] == 1000
    manifest.unlink()
    with pytest.raises(data.DatasetCorruptError, match="expected 1281167"):
        data.verify("imagenet", root)


def _epoch(split, **kw):
    return [(x.clone(), y.clone()) for x, y in data.batches(split, 64, **kw)]


def test_batches_replay_exactly_whatever_the_workers(stand_in, monkeypatch):
    train = _load("train").subset(torch.arange(150))
    a = _epoch(train, shuffle=True, seed=4, flip=True)
    monkeypatch.setenv("REPLIB_WORKERS", "2")
    b = _epoch(train, shuffle=True, seed=4, flip=True)
    assert len(a) == 3 and a[0][0].shape == (64, 3, 224, 224) and a[-1][0].shape[0] == 22
    assert all(torch.equal(x, u) and torch.equal(y, v) for (x, y), (u, v) in zip(a, b))
    c = _epoch(train, shuffle=True, seed=5, flip=True)
    assert not torch.equal(a[0][1], c[0][1])  # another epoch, another order
    # normalized with ImageNet's statistics: a batch is centred near 0 (uniform noise: mean
    # 127.5/255 against means near 0.45)
    assert abs(float(a[0][0].mean())) < 0.5
    ev1, ev2 = _epoch(train), _epoch(train)  # evaluation: in order, no randomness
    assert torch.equal(ev1[0][0], ev2[0][0]) and ev1[0][1].tolist() == list(range(64))


def test_evaluation_transform_is_resize_then_centre_crop(stand_in, tmp_path):
    img = Image.new("RGB", (40, 80))
    px = img.load()
    for yy in range(80):  # a vertical ramp: the centre crop keeps the middle rows
        for xx in range(40):
            px[xx, yy] = (3 * yy, 0, 0)
    path = tmp_path / "ramp.png"
    img.save(path)
    ds = data._DecodeImages([str(path)], torch.tensor([0]), [0], train=False, seed=0, size=224)
    x, _ = ds[0]
    # shorter side 40 -> 256 (scale 6.4): 256 x 512, centre crop rows 144..367 of 512
    ref = img.resize((256, 512), Image.Resampling.BILINEAR).crop((16, 144, 240, 368))
    assert x.shape == (3, 224, 224)
    assert torch.equal(x, torch.from_numpy(np.asarray(ref).transpose(2, 0, 1).copy()))


def test_random_resized_crop_boxes_follow_the_recipe():
    for seed in range(300):
        rng = random.Random(seed)
        x0, y0, x1, y1 = data._DecodeImages._crop_box(500, 375, rng)
        w, h = x1 - x0, y1 - y0
        assert 0 <= x0 and x1 <= 500 and 0 <= y0 and y1 <= 375
        assert 0.08 * 0.9 <= w * h / (500 * 375) <= 1.0
        assert 3 / 4 * 0.9 <= w / h <= 4 / 3 * 1.1
    # a strip no crop of the allowed shapes fits: the central crop, ratio clamped to 4/3
    assert data._DecodeImages._crop_box(1000, 10, random.Random(0)) == (493, 0, 506, 10)


def test_a_file_that_does_not_decode_is_named(stand_in_root, tmp_path, monkeypatch):
    root = tmp_path / "copy"
    shutil.copytree(stand_in_root / "imagenet", root / "imagenet")
    monkeypatch.setenv("REPLIB_DATA", str(root))
    monkeypatch.setenv("REPLIB_WORKERS", "0")
    train = _load("train")
    bad = train.files[2]
    with open(bad, "wb") as f:
        f.write(b"not a jpeg")
    with pytest.raises(data.DatasetCorruptError, match=f"{bad} cannot be read as an image"):
        list(data.batches(train.subset(torch.arange(4)), 4))


def test_imagenet_resnet18_has_he_et_al_stem():
    from replib import irda as IR

    net = IR.build_model("resnet18", 1000, stem="imagenet")
    assert net.stem.conv.kernel_size == (7, 7) and net.stem.conv.stride == (2, 2)
    assert isinstance(net.stem.pool, torch.nn.MaxPool2d)
    x = torch.randn(2, 3, 224, 224)
    assert net.stem(x).shape == (2, 64, 56, 56) and net(x).shape == (2, 1000)
    assert sum(p.numel() for p in net.parameters()) == 11_689_512  # torchvision's resnet18
    with pytest.raises(ValueError, match="stem='vit'"):
        IR.build_model("resnet18", 10, stem="vit")


def test_irda_trains_on_the_stand_in_at_smoke(stand_in):
    from replib import experiments as ex
    from replib import irda as IR

    cfg = IR.for_method(IR.setting("imagenet", "smoke"), "irda")
    spec = ex.make_spec("irda", "irda", dataset="imagenet", model="resnet18", budget="smoke",
                        method="irda", lam=1e-8, gamma=0.1, s=10.0, anchor="zero", **cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rec = ex.run(spec)
    m = rec.metrics
    assert {d["dataset"] for d in rec["provenance"]["datasets"]} == {"imagenet"}
    assert 0 <= m["test_acc"] <= m["test_top5"] <= 1 and m["test_n"] == 500
    assert [h["stage"] for h in rec.history] == [1, 2] and m["sparsity"] > 0  # Steps 1 and 2


def test_resumed_training_on_a_stream_equals_uninterrupted(stand_in, tmp_path):
    from replib import irda as IR
    from replib.train import fit

    train = _load("train").subset(torch.arange(48))
    test = _load("test").subset(torch.arange(16))

    def trained(ckpt, lengths, init_seed):
        torch.manual_seed(init_seed)
        model = IR.build_model("resnet18", 1000, width_div=16, stem="imagenet")
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        for epochs in lengths:  # a second fit() on the same folder resumes the first
            hist = fit(model, train, epochs=epochs, optimizer=opt, batch_size=16, test=test,
                       pad=4, flip=True, seed=3, ckpt_dir=ckpt, progress=False)
        return model, [{k: v for k, v in h.items() if k != "epoch_time_s"} for h in hist]

    ref_model, ref = trained(tmp_path / "a", [2], init_seed=0)
    trained(tmp_path / "b", [1], init_seed=0)  # "interrupted" after its first epoch
    model, resumed = trained(tmp_path / "b", [2], init_seed=1)  # another init: all is loaded
    assert resumed == ref and len(ref) == 2
    assert all(torch.equal(a, b) for a, b in zip(ref_model.state_dict().values(),
                                                 model.state_dict().values()))
