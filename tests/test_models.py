"""The model registry builds the papers' networks with exactly the parameter counts they state.

Parameter counts are derived by hand below (conv k x k: c_in*c_out*k^2, no bias; BN: 2 per
channel; linear: in*out + out) and compared with the rough figures the papers publish.
"""

from __future__ import annotations

from functools import cache

import pytest
import torch
from torch import nn

from replib import models


def conv(c_in: int, c_out: int, k: int) -> int:
    return c_in * c_out * k * k


def bn(c: int) -> int:
    return 2 * c


def fc(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


@cache
def built(name: str, num_classes: int = 10, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return models.get(name, num_classes=num_classes, **kwargs).eval()


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def bn_channels(net: nn.Module) -> int:
    return sum(m.num_features for m in net.modules() if isinstance(m, nn.BatchNorm2d))


@pytest.mark.parametrize("name", models.names())
def test_every_model_maps_an_image_batch_to_class_scores(name):
    net = built(name)
    x = torch.randn(2, *models.input_shape(name))
    with torch.no_grad():
        y = net(x)
    assert y.shape == (2, 10)
    assert torch.isfinite(y).all()
    layers = net.prunable_layers()
    assert layers, "every model has prunable layers"
    assert all(isinstance(m, (nn.Conv2d, nn.Linear)) for m in layers)
    every_weight_layer = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) == len(every_weight_layer)
    assert layers[-1].out_features == 10  # the classifier is last


def test_num_classes_sets_the_classifier_width():
    net = built("resnet20", num_classes=100)
    with torch.no_grad():
        assert net(torch.randn(2, 3, 32, 32)).shape == (2, 100)
    assert n_params(net) == n_params(built("resnet20")) + 90 * 64 + 90


def test_input_shapes():
    assert models.input_shape("lenet300") == (1, 28, 28)
    assert models.input_shape("lenet5_caffe") == (1, 28, 28)
    assert models.input_shape("mlp3072") == (3, 32, 32)
    assert all(models.input_shape(n) == (3, 32, 32) for n in models.names()[2:])


def test_unknown_model_is_refused_with_the_allowed_names():
    with pytest.raises(ValueError, match="model") as err:
        models.get("resnet19")
    assert "resnet20" in str(err.value)
    with pytest.raises(ValueError, match="model"):
        models.input_shape("alexnet")


def test_mlp_parameter_counts_and_hidden_layers():
    assert n_params(built("lenet300")) == fc(784, 300) + fc(300, 100) + fc(100, 10) == 266_610
    mlp = built("mlp3072")
    assert n_params(mlp) == 3072 * 1024 + 1024 + 1024 * 1024 + 1024 + 1024 * 10 + 10
    assert n_params(mlp) == 4_206_602
    sizes = [(m.in_features, m.out_features) for m in mlp.hidden_layers()]
    assert sizes == [(3072, 1024), (1024, 1024), (1024, 10)]


def test_lenet5_caffe_parameter_count():
    expected = conv(1, 20, 5) + 20 + conv(20, 50, 5) + 50 + fc(800, 500) + fc(500, 10)
    assert n_params(built("lenet5_caffe")) == expected == 431_080
    assert n_params(built("lenet5_caffe", conv_relu=True)) == 431_080


def test_resnet20_parameter_counts_for_both_shortcuts():
    def plain(c: int) -> int:  # a block that keeps the width: identity shortcut
        return 2 * conv(c, c, 3) + 2 * bn(c)

    def down(c_in: int, c: int) -> int:  # a stride-2 block without its shortcut
        return conv(c_in, c, 3) + conv(c, c, 3) + 2 * bn(c)

    projections = conv(16, 32, 1) + bn(32) + conv(32, 64, 1) + bn(64)
    option_a = (
        conv(3, 16, 3) + bn(16)
        + 3 * plain(16)
        + down(16, 32) + 2 * plain(32)
        + down(32, 64) + 2 * plain(64)
        + fc(64, 10)
    )  # fmt: skip
    assert n_params(built("resnet20", shortcut="A")) == option_a == 269_722
    assert n_params(built("resnet20")) == option_a + projections == 272_474
    # The l0 paper: "about 274 thousand parameters"; He et al.: 0.27M.
    assert option_a + projections == pytest.approx(274_000, rel=0.01)
    assert option_a == pytest.approx(270_000, rel=0.01)


def test_resnet_shortcut_option_a_is_parameter_free():
    net = built("resnet56", shortcut="A")
    assert not any(isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) for m in net.modules())
    with torch.no_grad():
        assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="shortcut"):
        models.get("resnet20", shortcut="C")


def test_wrn20_is_resnet20_with_64_first_block_filters():
    net = built("wrn20")
    widths = [m.out_channels for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert widths[0] == 64 and max(widths) == 256
    assert net.fc.in_features == 256


def test_vgg19_parameter_count_and_bn_channels():
    convs = (
        conv(3, 64, 3) + conv(64, 64, 3)
        + conv(64, 128, 3) + conv(128, 128, 3)
        + conv(128, 256, 3) + 3 * conv(256, 256, 3)
        + conv(256, 512, 3) + 7 * conv(512, 512, 3)
    )  # fmt: skip
    channels = 2 * 64 + 2 * 128 + 4 * 256 + 8 * 512
    net = built("vgg19")
    assert n_params(net) == convs + bn(channels) + fc(512, 10) == 20_035_018
    assert n_params(net) == pytest.approx(20.04e6, rel=1e-3)  # network-slimming README
    assert bn_channels(net) == 5504  # proximal NS paper, Table 1


def test_vgg_init_and_bias_options():
    net = built("vgg19")
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.all(m.weight == 0.5) for m in bns)
    assert net.fc.weight.std().item() == pytest.approx(0.01, rel=0.05)
    vgg11 = built("vgg11", conv_bias=True, bn_init=1.0)
    assert n_params(vgg11) == n_params(built("vgg11")) + 2752  # one bias per conv channel
    assert all(torch.all(m.weight == 1.0) for m in vgg11.modules() if isinstance(m, nn.BatchNorm2d))


def test_densenet40_parameter_count_and_bn_channels():
    def block(start: int) -> int:
        return sum(bn(start + 12 * i) + conv(start + 12 * i, 12, 3) for i in range(12))

    def transition(c: int) -> int:
        return bn(c) + conv(c, c, 1)

    expected = (
        conv(3, 24, 3)
        + block(24) + transition(168)
        + block(168) + transition(312)
        + block(312) + bn(456) + fc(456, 10)
    )  # fmt: skip
    net = built("densenet40")
    assert n_params(net) == expected == 1_059_298
    assert n_params(net) == pytest.approx(1.06e6, rel=0.01)
    assert bn_channels(net) == 9360  # proximal NS paper, Table 1


def test_preresnet164_parameter_count_and_bn_channels():
    def first(c_in: int, p: int) -> int:  # with the 1x1 downsample conv (no BN)
        body = bn(c_in) + conv(c_in, p, 1) + bn(p) + conv(p, p, 3) + bn(p) + conv(p, 4 * p, 1)
        return body + conv(c_in, 4 * p, 1)

    def rest(p: int) -> int:
        return bn(4 * p) + conv(4 * p, p, 1) + bn(p) + conv(p, p, 3) + bn(p) + conv(p, 4 * p, 1)

    expected = (
        conv(3, 16, 3)
        + first(16, 16) + 17 * rest(16)
        + first(64, 32) + 17 * rest(32)
        + first(128, 64) + 17 * rest(64)
        + bn(256) + fc(256, 10)
    )  # fmt: skip
    net = built("preresnet164")
    assert n_params(net) == expected == 1_703_258
    assert n_params(net) == pytest.approx(1.7e6, rel=0.01)  # He et al. (2016b)
    assert bn_channels(net) == 12112  # proximal NS paper, Table 1


def test_preresnet_builds_from_a_pruned_cfg():
    cfg = models.preresnet.default_cfg(110)
    assert len(cfg) == 9 * 12 + 1
    pruned = [c if i % 3 == 0 else max(1, c // 2) for i, c in enumerate(cfg[:-1])] + cfg[-1:]
    net = models.get("preresnet110", cfg=pruned)
    assert n_params(net) < n_params(built("preresnet110"))
    with torch.no_grad():
        assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_resnet18_parameter_count():
    def stage(c_in: int, c: int) -> int:
        return conv(c_in, c, 3) + 3 * conv(c, c, 3) + 4 * bn(c) + conv(c_in, c, 1) + bn(c)

    expected = (
        conv(3, 64, 3) + bn(64)
        + 2 * (2 * conv(64, 64, 3) + 2 * bn(64))
        + stage(64, 128) + stage(128, 256) + stage(256, 512)
        + fc(512, 10)
    )  # fmt: skip
    net = built("resnet18")
    assert n_params(net) == expected == 11_173_962
    assert n_params(net) == pytest.approx(11.17e6, rel=1e-3)
