"""Baselines of the ACNN paper run by us: CGES, L0 hard-concrete gates, structural shrinking."""

from __future__ import annotations

import math

import pytest
import torch

from replib.baselines import (
    CGESStep,
    HardConcreteGate,
    L0GatedMLP,
    alive_neurons,
    cges_prox_,
    fold_constant_neurons_,
    layer_shares,
    shrink_sparse_mlp,
)
from replib.models import MLP


def tiny_mlp(sizes=(4, 3, 2)) -> MLP:
    torch.manual_seed(0)
    return MLP(sizes)


# --------------------------------------------------------------------------- CGES


def test_layer_shares_follow_the_code():
    shares = layer_shares(3, mu=0.8, chvar=0.2)
    assert [tuple(round(v, 10) for v in s) for s in shares] == [(0.8, 0.2), (0.6, 0.4),
                                                                (0.4, 0.6)]
    with pytest.raises(ValueError, match="mu"):
        layer_shares(6, mu=0.8, chvar=0.2)


def test_cges_prox_hand_computed():
    model = MLP((2, 2))  # one layer: groups are the 2 input columns
    with torch.no_grad():
        model.layers.fc1.weight.copy_(torch.tensor([[3.0, 0.1], [4.0, 0.1]]))
    # lr * lam = 1, mu = 0.8 (one layer): group threshold 0.8, exclusive threshold 0.2
    cges_prox_(model, lr=1.0, lam=1.0, mu=0.8, chvar=0.0)
    w = model.layers.fc1.weight
    # column 0 has norm 5: scaled by 1 - 0.8/5 = 0.84 -> (2.52, 3.36); column 1 (norm 0.141) -> 0
    # exclusive one-step: threshold 0.2 * (2.52 + 3.36) = 1.176 -> (1.344, 2.184)
    assert torch.allclose(w[:, 0], torch.tensor([1.344, 2.184]), atol=1e-6)
    assert torch.equal(w[:, 1], torch.zeros(2))


def test_cges_step_decays_lr_per_iteration():
    model = tiny_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    hook = CGESStep(opt, lam=0.0, decay_every=5000, decay_rate=0.9)
    hook(model, 4998)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)
    hook(model, 4999)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.045)
    hook(model, 10_001)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05 * 0.81)


# --------------------------------------------------------------------------- L0 gates


def test_hard_concrete_closed_forms():
    gate = HardConcreteGate(3, droprate_init=0.5)
    with torch.no_grad():
        gate.log_alpha.copy_(torch.tensor([-10.0, 0.0, 10.0]))
    z = gate.deterministic()
    # sigmoid(0) * 1.2 - 0.1 = 0.5; extremes are clamped to exactly 0 and 1
    assert z.tolist() == pytest.approx([0.0, 0.5, 1.0], abs=1e-6)
    assert z[0] == 0.0 and z[2] == 1.0
    q = gate.prob_nonzero()
    shift = (2 / 3) * math.log(0.1 / 1.1)
    assert q[1].item() == pytest.approx(1 / (1 + math.exp(shift)))
    samples = gate.sample(1000)
    assert samples.min() >= 0 and samples.max() <= 1
    assert (samples[:, 1] == 0).any() and (samples[:, 1] == 1).any()  # stretched: exact 0s, 1s


def test_hard_concrete_init_drop_rate():
    torch.manual_seed(0)
    gate = HardConcreteGate(2000, droprate_init=0.2)
    assert gate.log_alpha.mean().item() == pytest.approx(math.log(0.8 / 0.2), abs=0.01)
    with pytest.raises(ValueError, match="droprate_init"):
        HardConcreteGate(3, droprate_init=1.0)


def test_l0_regularization_closed_form():
    torch.manual_seed(0)
    net = L0GatedMLP((3, 2), droprate_init=(0.5, 0.5))
    q = net.gates[0].prob_nonzero()
    w, b = net.linears[0].weight, net.linears[0].bias
    expected = (q * (2.0 / 100 + 0.5 * 0.1 * w.pow(2).sum(0))).sum() + 0.5 * 0.1 * b.pow(2).sum()
    assert net.regularization(2.0, 100, 0.1).item() == pytest.approx(expected.item())


def test_l0_to_mlp_matches_eval_forward():
    torch.manual_seed(0)
    net = L0GatedMLP((6, 5, 3))
    with torch.no_grad():
        net.gates[0].log_alpha[:2] = -10.0  # two closed input gates
    net.eval()
    x = torch.randn(7, 6)
    mlp = net.to_mlp().eval()
    assert torch.allclose(net(x), mlp(x), atol=1e-6)
    assert (mlp.layers.fc1.weight[:, :2] == 0).all()
    small, kept = shrink_sparse_mlp(mlp, x)
    assert kept[0] == 4


# --------------------------------------------------------------------------- structure


def test_alive_neurons_and_shrink_exact_counts():
    model = tiny_mlp((5, 4, 3, 2))
    with torch.no_grad():
        fc1, fc2, fc3 = model.hidden_layers()
        fc1.weight[:, 0] = 0.0        # input 0 unused
        fc2.weight[:, 1] = 0.0        # hidden-1 neuron 1 unused
        fc3.weight[:, 2] = 0.0        # hidden-2 neuron 2 unused
        fc2.weight[0, :] = 0.0        # hidden-2 neuron 0: no input -> constant relu(b)
        fc2.bias[0] = 0.7
    x = torch.randn(9, 5)
    small, kept = shrink_sparse_mlp(model, x)
    assert kept == [4, 3, 1]
    with torch.no_grad():
        assert torch.allclose(small(x), model(x), atol=1e-6)


def test_fold_constant_neurons_keeps_the_function():
    model = tiny_mlp((3, 2, 2))
    with torch.no_grad():
        fc1, fc2 = model.hidden_layers()
        fc1.weight[1] = 0.0
        fc1.bias[1] = -0.3  # constant neuron with value relu(-0.3) = 0
        fc1.weight[0] = 0.0
        fc1.bias[0] = 0.4   # constant neuron with value 0.4
    x = torch.randn(5, 3)
    with torch.no_grad():
        ref = model(x)
        const = fold_constant_neurons_(model)
        assert const[1].tolist() == [True, True]
        assert torch.allclose(model(x), ref, atol=1e-6)
        assert (fc2.weight == 0).all()
    kept = alive_neurons(model)
    assert [k.numel() for k in kept.values()] == [1, 1]  # never empties a layer
