"""Pruning strategies (exact counts) and physical shrinking (same logits, fewer params/FLOPs)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from replib import models
from replib.sparsity.masks import apply_hard_masks, current_masks, snapshot, theta
from replib.sparsity.prune import (
    bn_channel_masks,
    imp_round,
    iterative_magnitude_pruning,
    magnitude_masks,
    neuron_l1_scores,
    neuron_masks,
    prune_neurons,
    round_half_up,
    zero_bn_channels_,
)
from replib.sparsity.shrink import (
    InputSelectBatchNorm2d,
    InputSelectLinear,
    shrink_channels,
    shrink_mlp,
)

# --------------------------------------------------------------------------- small models


class Block(nn.Module):
    """Post-activation basic block: conv-BN-ReLU-conv-BN, + shortcut, ReLU."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.short(x))


class TinyResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.b1, self.b2, self.b3 = Block(8, 8, 1), Block(8, 8, 1), Block(8, 12, 2)
        self.fc = nn.Linear(12, 5)

    def forward(self, x):
        x = self.b3(self.b2(self.b1(F.relu(self.bn(self.conv(x))))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class PreBlock(nn.Module):
    """Pre-activation bottleneck: BN-ReLU-conv1x1-BN-ReLU-conv3x3, + (conv) shortcut."""

    def __init__(self, cin: int, mid: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, mid, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, cout, 3, stride, 1, bias=False)
        self.down = (
            None if stride == 1 and cin == cout else nn.Conv2d(cin, cout, 1, stride, bias=False)
        )

    def forward(self, x):
        out = self.conv2(F.relu(self.bn2(self.conv1(F.relu(self.bn1(x))))))
        return out + (x if self.down is None else self.down(x))


class TinyPreResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.b1, self.b2 = PreBlock(8, 4, 8, 1), PreBlock(8, 4, 16, 2)
        self.bn, self.fc = nn.BatchNorm2d(16), nn.Linear(16, 5)

    def forward(self, x):
        x = F.relu(self.bn(self.b2(self.b1(self.conv(x)))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.bn, self.conv = nn.BatchNorm2d(cin), nn.Conv2d(cin, growth, 3, 1, 1, bias=False)

    def forward(self, x):
        return torch.cat([x, self.conv(F.relu(self.bn(x)))], 1)


class TinyDenseNet(nn.Module):
    """Stem conv, one dense block of 3 BN-ReLU-conv layers (concatenation), BN head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, 1, 1, bias=False)
        self.block = nn.Sequential(DenseLayer(6, 4), DenseLayer(10, 4), DenseLayer(14, 4))
        self.bn, self.fc = nn.BatchNorm2d(18), nn.Linear(18, 5)

    def forward(self, x):
        x = F.relu(self.bn(self.block(self.conv(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def tiny_mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))  # 45 weights


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flops(model: nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops()


def randomize_bn_(model: nn.Module, seed: int = 0) -> None:
    """Nontrivial BN statistics and affine parameters, so eval-mode BN is not the identity."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen))
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.randn(m.num_features, generator=gen))
                m.bias.copy_(torch.randn(m.num_features, generator=gen))


def random_channel_masks(
    model: nn.Module, seed: int, p_keep: float = 0.5
) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    masks = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.BatchNorm2d):
            mask = torch.rand(m.num_features, generator=gen) < p_keep
            mask[torch.randint(m.num_features, (1,), generator=gen)] = True
            masks[name] = mask
    return masks


# --------------------------------------------------------------------------- magnitude


def test_global_compression_keeps_exactly_round_n_over_c():
    net = models.get("lenet300")
    weights = {n: m.weight for n, m in net.named_modules() if isinstance(m, nn.Linear)}
    total = sum(w.numel() for w in weights.values())
    assert total == 266_200
    masks = magnitude_masks(net, 10.0)
    assert set(masks) == {f"{n}.weight" for n in weights}  # weights only, no biases
    assert sum(int(m.sum()) for m in masks.values()) == 26_620
    kept = torch.cat([w.detach().abs()[masks[f"{n}.weight"]] for n, w in weights.items()])
    cut = torch.cat([w.detach().abs()[~masks[f"{n}.weight"]] for n, w in weights.items()])
    assert kept.min() >= cut.max()  # one threshold for the whole network
    apply_hard_masks(net, masks)
    nonzero = sum(int((m.weight != 0).sum()) for m in net.modules() if isinstance(m, nn.Linear))
    assert nonzero == 26_620


def test_layerwise_and_random_keep_round_n_l_over_c_per_layer():
    net = models.get("lenet300")
    sizes = {
        f"{n}.weight": m.weight.numel() for n, m in net.named_modules() if isinstance(m, nn.Linear)
    }
    c = 7.0
    expected = {n: round_half_up(s / c) for n, s in sizes.items()}  # 33600, 4286, 143
    assert expected == {
        "layers.fc1.weight": 33_600,
        "layers.fc2.weight": 4_286,
        "layers.fc3.weight": 143,
    }
    layerwise = magnitude_masks(net, c, scope="layerwise")
    assert {n: int(m.sum()) for n, m in layerwise.items()} == expected
    for n, mask in layerwise.items():
        w = net.get_submodule(n.rsplit(".", 1)[0]).weight.detach().abs()
        assert w[mask].min() >= w[~mask].max()
    r1 = magnitude_masks(net, c, scope="random", generator=torch.Generator().manual_seed(0))
    r2 = magnitude_masks(net, c, scope="random", generator=torch.Generator().manual_seed(0))
    r3 = magnitude_masks(net, c, scope="random", generator=torch.Generator().manual_seed(1))
    assert {n: int(m.sum()) for n, m in r1.items()} == expected
    assert all(torch.equal(r1[n], r2[n]) for n in r1)
    assert not torch.equal(r1["layers.fc1.weight"], r3["layers.fc1.weight"])


def test_ties_are_broken_deterministically_by_index():
    params = {"a": torch.ones(2, 3), "b": torch.full((4,), -1.0)}
    masks = magnitude_masks(params, compression=2.0)  # keep round(10 / 2) = 5 of 10 equal
    assert sum(int(m.sum()) for m in masks.values()) == 5
    # earlier layer first, then lower flat index
    assert masks["a"].flatten().tolist() == [True] * 5 + [False] and not masks["b"].any()
    again = magnitude_masks(params, compression=2.0)
    assert all(torch.equal(masks[k], again[k]) for k in masks)
    layer = magnitude_masks({"a": torch.ones(7)}, 2.0, scope="layerwise")["a"]
    assert layer.tolist() == [True] * 4 + [False] * 3  # round_half_up(3.5) = 4


def test_compression_below_one_is_rejected():
    with pytest.raises(ValueError, match="compression"):
        magnitude_masks(tiny_mlp(), 0.5)


# --------------------------------------------------------------------------- IMP


def test_imp_round_prunes_ceil_rate_of_remaining():
    net = tiny_mlp()  # 45 prunable weights
    m1 = imp_round(net, None, rate=0.2)
    assert sum(int(m.sum()) for m in m1.values()) == 45 - math.ceil(9.0)  # 36
    apply_hard_masks(net, m1)
    m2 = imp_round(net, current_masks(net), rate=0.2)
    assert sum(int(m.sum()) for m in m2.values()) == 36 - math.ceil(7.2)  # 28
    assert all(torch.all(m1[k] | ~m2[k]) for k in m1)  # pruned weights never come back
    alive = torch.cat(
        [theta(net.get_submodule(k[:-7])).detach().abs()[m1[k]].flatten() for k in m1]
    )
    kept = torch.cat([theta(net.get_submodule(k[:-7])).detach().abs()[m2[k]].flatten() for k in m2])
    assert kept.min() >= torch.sort(alive).values[-28]


def test_iterative_magnitude_pruning_rewinds_and_counts():
    net = tiny_mlp()
    init = snapshot(net)
    x, y = torch.randn(32, 6), torch.randn(32, 3)

    def train(model: nn.Module, round_index: int) -> None:
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(5):
            opt.zero_grad()
            F.mse_loss(model(x), y).backward()
            opt.step()

    history = iterative_magnitude_pruning(net, train, rounds=3, rate=0.2, train_final=False)
    assert [sum(int(m.sum()) for m in h.values()) for h in history] == [36, 28, 22]
    for key, layer in (("0.weight", net[0]), ("2.weight", net[2])):
        assert torch.equal(theta(layer), init[key])  # rewound to theta_0
        assert torch.equal(layer.weight, init[key] * history[-1][key])


# --------------------------------------------------------------------------- ACNN neurons


def test_neuron_l1_scores_hand_computed():
    layer = nn.Linear(3, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -2.0, 0.0], [3.0, 0.0, -1.0]]))
    assert neuron_l1_scores(layer).tolist() == [4.0, 2.0, 1.0]  # outgoing, per input
    assert neuron_l1_scores(layer, "incoming").tolist() == [3.0, 4.0]  # incoming, per output


def test_prune_neurons_gives_acnn_layer_sizes_and_never_empties():
    net = models.get("lenet300")
    fractions = [565 / 784, 219 / 300, 57 / 100]
    kept = prune_neurons(net, fractions)
    assert [len(v) for v in kept.values()] == [219, 81, 43]  # ACNN Table 1, MNIST
    assert (784 + 300 + 100) / sum(len(v) for v in kept.values()) == pytest.approx(3.45, abs=5e-3)
    scores = neuron_l1_scores(net.layers.fc2)
    chosen = kept["layers.fc2"]
    dropped = torch.ones(300, dtype=torch.bool)
    dropped[chosen] = False
    assert scores[chosen].min() >= scores[dropped].max()
    everything = prune_neurons(net, [1.0, 1.0, 1.0])
    assert [len(v) for v in everything.values()] == [1, 1, 1]
    with pytest.raises(ValueError, match="fractions"):
        prune_neurons(net, [0.5, 0.5])


def test_shrunk_mlp_matches_masked_mlp():
    torch.manual_seed(0)
    net = models.get("lenet300").eval()
    kept = prune_neurons(net, [565 / 784, 219 / 300, 57 / 100])
    masked = copy.deepcopy(net)
    apply_hard_masks(masked, neuron_masks(masked, kept))
    small = shrink_mlp(net, kept).eval()
    x = torch.randn(16, 1, 28, 28)
    torch.testing.assert_close(small(x), masked(x), rtol=0, atol=1e-5)
    fc1 = small.layers.fc1
    assert isinstance(fc1, InputSelectLinear) and fc1.weight.shape == (81, 219)
    assert small.hidden_layers()[0] is fc1
    assert small.layers.fc2.weight.shape == (43, 81)
    assert small.layers.fc3.weight.shape == (10, 43)
    assert n_params(small) == 219 * 81 + 81 + 81 * 43 + 43 + 43 * 10 + 10
    assert flops(small, x) < flops(net, x)


def test_shrink_mlp_hidden_only():
    net = tiny_mlp()
    kept = prune_neurons(net, [0.4], include_inputs=False)  # 5 hidden -> 3
    masked = copy.deepcopy(net)
    apply_hard_masks(masked, neuron_masks(masked, kept))
    small = shrink_mlp(net, kept)
    x = torch.randn(4, 6)
    torch.testing.assert_close(small(x), masked(x), rtol=0, atol=1e-6)
    assert small[0].weight.shape == (3, 6) and small[2].weight.shape == (3, 3)
    assert n_params(small) < n_params(net)


# --------------------------------------------------------------------------- BN channels


def test_bn_channel_masks_threshold_zero_and_guard():
    net = TinyResNet()
    with torch.no_grad():
        net.bn.weight.copy_(torch.tensor([0.0, 0.3, 0.0, -0.2, 0.0, 0.0, 1.0, 0.0]))
        net.b1.bn1.weight.zero_()
        net.b1.bn1.bias.copy_(torch.tensor([0.1, -0.9, 0.2, 0.0, 0.0, 0.0, 0.0, 0.0]))
    masks = bn_channel_masks(net)  # proximal NS: only exact zeros go
    assert masks["bn"].tolist() == [False, True, False, True, False, False, True, False]
    assert masks["b1.bn1"].tolist() == [False, True] + [False] * 6  # largest |beta| stays
    assert masks["b2.bn1"].all()


def test_bn_channel_masks_percent_is_exact_and_never_empties():
    net = TinyDenseNet()
    randomize_bn_(net)
    total = sum(m.num_features for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    masks = bn_channel_masks(net, percent=0.4)
    assert total - sum(int(m.sum()) for m in masks.values()) == round_half_up(0.4 * total)
    gammas = torch.cat([net.get_submodule(n).weight.detach().abs() for n in masks])
    flat = torch.cat(list(masks.values()))
    assert gammas[flat].min() >= gammas[~flat].max()
    harsh = bn_channel_masks(net, percent=0.97)
    assert all(m.any() for m in harsh.values())


# --------------------------------------------------------------------------- shrink conv nets


def check_shrink(model: nn.Module, masks: dict[str, torch.Tensor], x: torch.Tensor) -> nn.Module:
    """Shrunk model == masked model (BN gamma and beta of masked channels zeroed), in eval mode.

    Why the equivalence is exact: a channel with gamma = beta = 0 leaves its BN as exactly 0,
    stays 0 through ReLU, pooling and residual additions of zeros, and so adds exactly nothing
    to any conv that reads it; removing that input channel changes only the order of a sum of
    the same nonzero terms. Channels whose value is not provably zero everywhere (e.g. a
    residual stream on which one BN keeps the channel) are kept, so the masked model still
    computes with them.
    """
    model.eval()
    masked = copy.deepcopy(model)
    zero_bn_channels_(masked, masks)
    small = shrink_channels(model, masks, x).eval()
    with torch.no_grad():
        torch.testing.assert_close(small(x), masked(x), rtol=0, atol=1e-5)
    assert n_params(small) < n_params(model)
    assert flops(small, x) < flops(model, x)
    for m in small.modules():  # no layer emptied
        if isinstance(m, nn.Conv2d):
            assert m.in_channels > 0 and m.out_channels > 0
        if isinstance(m, nn.BatchNorm2d):
            assert m.num_features > 0
    return small


def test_shrink_resnet_residual_coupling_rule():
    torch.manual_seed(0)
    net = TinyResNet()
    randomize_bn_(net)
    x = torch.randn(2, 3, 8, 8)
    stream = ["bn", "b1.bn2", "b2.bn2"]  # BNs adding into the stage-1 residual stream
    masks = {
        n: torch.ones(m.num_features, dtype=torch.bool)
        for n, m in net.named_modules()
        if isinstance(m, nn.BatchNorm2d)
    }
    for n in stream:
        masks[n][0] = False  # all agree on channel 0
    masks["b1.bn2"][1] = False  # only one BN masks channel 1
    masks["b1.bn1"][[2, 3]] = False  # internal channels: always removable
    small = check_shrink(net, masks, x)
    assert small.conv.out_channels == 7  # channel 0 cut from the stream, channel 1 kept
    assert small.b1.conv2.out_channels == 7 and small.b3.conv1.in_channels == 7
    assert small.b1.conv1.out_channels == 6


def test_shrink_random_masks_resnet_preresnet_densenet():
    x = torch.randn(2, 3, 8, 8)
    for seed, cls in enumerate((TinyResNet, TinyPreResNet, TinyDenseNet)):
        torch.manual_seed(seed)
        net = cls()
        randomize_bn_(net, seed)
        check_shrink(net, random_channel_masks(net, seed), x)


def test_shrink_densenet_concat_channel_removed_everywhere():
    """A stem channel masked by every BN that reads it is cut from the stem conv itself."""
    torch.manual_seed(0)
    net = TinyDenseNet()
    randomize_bn_(net)
    masks = {
        n: torch.ones(m.num_features, dtype=torch.bool)
        for n, m in net.named_modules()
        if isinstance(m, nn.BatchNorm2d)
    }
    for mask in masks.values():
        mask[2] = False
    masks["block.1.bn"][7] = False  # only layer 1 drops a channel of layer 0's output
    small = check_shrink(net, masks, torch.randn(2, 3, 8, 8))
    assert small.conv.out_channels == 5 and small.fc.in_features == 17
    assert small.block[0].conv.out_channels == 4
    assert isinstance(small.block[1].bn, InputSelectBatchNorm2d)  # selected locally
    assert small.block[1].conv.in_channels == 8


@pytest.mark.parametrize("name", ["resnet20", "vgg11", "densenet40"])
def test_shrink_registry_models(name):
    torch.manual_seed(0)
    net = models.get(name)
    randomize_bn_(net)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # proximal NS leaves about 60% of scaling factors exactly zero
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight[torch.rand(m.num_features, generator=gen) < 0.6] = 0.0
    masks = bn_channel_masks(net)
    small = check_shrink(net, masks, torch.randn(2, 3, 32, 32))
    assert n_params(small) < 0.8 * n_params(net)
