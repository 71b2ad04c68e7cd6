"""Tests of the cross-paper comparison tasks (``replib.tasks.compare``)."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import have_data
from torch import nn

from replib import models
from replib.tasks import compare as C


def test_csr_linear_matches_dense_linear():
    torch.manual_seed(0)
    lin = nn.Linear(20, 7)
    with torch.no_grad():
        lin.weight[lin.weight.abs() < 0.15] = 0.0
    x = torch.randn(5, 20)
    assert torch.allclose(C.CSRLinear(lin)(x), lin(x), atol=1e-6)


def test_csr_copy_of_lenet_computes_the_same_function():
    torch.manual_seed(0)
    model = models.get("lenet300", num_classes=10).eval()
    variants, info = C._mlp_variants(model, 0.9)
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        ref = variants["zeros"](x)
        assert torch.allclose(variants["csr"](x), ref, atol=1e-5)
    # global magnitude pruning at 10x keeps exactly round(266200 / 10) weights
    assert info["zeros"]["kept_weights"] == 26620 == info["csr"]["kept_weights"]
    # skipping zeros: sparse FLOPs are 2 x kept MACs (every weight used once per input)
    assert info["csr"]["flops"] == 2 * 26620
    assert info["zeros"]["flops"] == info["dense"]["flops"] == 532400
    # neurons removed: sqrt(0.1) of every layer kept -> roughly 10% of the weights
    assert 0.08 < info["shrunk"]["kept_weights"] / 266200 < 0.12
    assert variants["shrunk"](x).shape == (3, 10)


def test_conv_variants_shrunk_equals_zeroed_channels():
    torch.manual_seed(0)
    model = models.get("vgg11", num_classes=10).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.1, 1.0)
    variants, info = C._conv_variants(model, 0.5, (3, 32, 32))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(variants["shrunk"](x), variants["zeros"](x), atol=1e-4)
    assert info["zeros"]["channels_kept"] == info["zeros"]["channels_total"] // 2
    assert info["shrunk"]["flops"] < info["dense"]["flops"] / 2


def test_acnn_fractions_exact_and_validated():
    assert C.acnn_fractions("392-150-50") == [0.5, 0.5, 0.5]
    assert C.acnn_fractions("784-300-100") == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="layers"):
        C.acnn_fractions("800-150-50")
    with pytest.raises(ValueError, match="layers"):
        C.acnn_fractions("100-50")


def test_best_at_selects_by_validation_not_test():
    pts = [
        {"compression": 12.0, "val_acc": 0.90, "test_acc": 0.95},
        {"compression": 15.0, "val_acc": 0.93, "test_acc": 0.91},
        {"compression": 5.0, "val_acc": 0.99, "test_acc": 0.99},
        {"compression": math.inf, "remaining": 0, "val_acc": 0.999, "test_acc": 0.11},
    ]
    assert C.best_at(pts, 10.0)["test_acc"] == 0.91
    assert C.best_at(pts, 5.0)["test_acc"] == 0.99
    assert C.best_at(pts, 50.0) is None


def test_pareto_front():
    pts = [(100, 0.9), (50, 0.95), (200, 0.94), (10, 0.5), (50, 0.8)]
    assert C.pareto_front(pts) == [(10, 0.5), (50, 0.95)]


def test_interleaved_latency_reports_ordered_quartiles():
    lin = nn.Linear(8, 8)
    out = C.interleaved_latency({"a": lin, "b": nn.Sequential(lin, nn.ReLU())},
                                torch.randn(4, 8), rounds=5, inner=2)
    assert set(out) == {"a", "b"}
    for v in out.values():
        assert 0 < v["q1_ms"] <= v["median_ms"] <= v["q3_ms"]
    with pytest.raises(ValueError, match="rounds"):
        C.interleaved_latency({"a": lin}, torch.randn(1, 8), rounds=0)


def test_unknown_method_anchor_and_device_are_rejected():
    from replib import experiments as ex

    spec = ex.make_spec("compare", "compare_method", model="lenet300", dataset="mnist",
                        epochs=1, seed=0, budget="smoke", method="magic")
    with pytest.raises(ValueError, match="method"):
        ex.run(spec)
    spec = ex.make_spec("compare", "compare_method", model="lenet300", dataset="mnist",
                        epochs=1, seed=0, budget="smoke", method="irda", anchor="w1")
    with pytest.raises(ValueError, match="anchor"):
        ex.run(spec)
    spec = ex.make_spec("compare", "compare_speedup", model="lenet300", dataset="mnist",
                        epochs=1, seed=0, budget="smoke", device="tpu")
    with pytest.raises(ValueError, match="device"):
        ex.run(spec)


def test_speedup_record_and_frame():
    from replib import experiments as ex

    spec = ex.make_spec("compare", "compare_speedup", model="lenet300", dataset="mnist",
                        epochs=1, seed=0, budget="smoke", sparsities=[0.0, 0.99],
                        batch_sizes=[2], rounds=2, inner=1)
    df = C.speedup_frame([ex.run(spec)])
    assert (df[df.form == "dense"].speedup == 1.0).all()
    csr = df[df.form == "csr"].iloc[0]
    assert csr.kept_weights == 2662 and math.isclose(csr.flop_reduction, 532400 / (2 * 2662))


@pytest.mark.skipif(not have_data("mnist"), reason="MNIST not available")
def test_sgd_magnitude_points_have_exact_compression():
    from replib import experiments as ex

    spec = ex.make_spec("compare", "compare_method", model="lenet300", dataset="mnist",
                        epochs=1, seed=0, budget="smoke", method="sgd_magnitude",
                        train_subset=256, val_size=128, ft_epochs=1, compressions=[10.0, 50.0])
    rec = ex.run(spec)
    pts = rec["artifacts"]["points"]
    # fine-tuning keeps the pruned pattern: exactly round(266200 / c) weights remain
    assert [p["remaining"] for p in pts] == [26620, 5324]
    assert all(0.0 <= p["test_acc"] <= 1.0 and p["val_acc"] is not None for p in pts)
    df = C.points_frame([rec])
    assert list(df.method.unique()) == ["sgd_magnitude"]
