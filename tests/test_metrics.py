import math

import pytest
import torch
from torch import nn

from replib import metrics, models


def test_flops_convention_is_two_macs_of_linear_layers():
    m = models.get("lenet300")
    assert metrics.flops(m, (1, 28, 28)) == 2 * (784 * 300 + 300 * 100 + 100 * 10)


def test_conv_flops_of_lenet5_caffe():
    m = models.get("lenet5_caffe")
    conv1 = 2 * 20 * 24 * 24 * 25
    conv2 = 2 * 50 * 8 * 8 * 20 * 25
    fc = 2 * (800 * 500 + 500 * 10)
    assert metrics.flops(m, (1, 28, 28)) == conv1 + conv2 + fc


def test_sparsity_compression_and_sparse_flops():
    m = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        m[1].weight.copy_(torch.tensor([[1.0, 0.0, 0.0, 2.0], [0.0, 0.0, 0.0, 3.0]]))
    assert metrics.sparsity(m) == pytest.approx(5 / 8)
    assert metrics.compression_rate(m) == pytest.approx(8 / 3)
    assert metrics.flops(m, (4,)) == 16
    assert metrics.sparse_flops(m, (4,)) == 6


def test_neuron_compression_rate_matches_acnn_table_1():
    ncr = metrics.neuron_compression_rate([784, 300, 100], [219, 81, 43])
    assert ncr == pytest.approx(1184 / 343) and round(ncr, 2) == 3.45
    with pytest.raises(ValueError):
        metrics.neuron_compression_rate([10], [0])


def test_evaluate_counts_top1_and_top5():
    from replib.data import DATASETS, Split

    class Fixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def forward(self, x):
            logits = torch.arange(10.0).repeat(len(x), 1)  # ranks classes 9 > 8 > ... > 0
            return logits + 0 * self.w

    labels = torch.tensor([9, 5, 0, 7])
    split = Split("mnist", "test", torch.zeros(4, 1, 28, 28, dtype=torch.uint8), labels,
                  DATASETS["mnist"], {})
    ev = metrics.evaluate(Fixed(), split)
    assert ev["acc"] == 0.25 and ev["top5"] == 0.75 and math.isfinite(ev["loss"])


def test_diff_se_is_the_binomial_standard_error_of_a_difference() -> None:
    # two independent accuracies near 0.5 on 1,000 images: sqrt(2 * 0.25 / 1000)
    assert metrics.diff_se(0.5, 1000) == pytest.approx(math.sqrt(0.0005))
    assert metrics.diff_se(0.9, 100) == pytest.approx(math.sqrt(2 * 0.09 / 100))
    assert metrics.diff_se(1.0, 50) == 0.0
    for acc, n in ((1.2, 10), (0.5, 0)):
        with pytest.raises(ValueError, match="diff_se"):
            metrics.diff_se(acc, n)
