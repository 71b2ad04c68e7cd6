"""Relaxed and hard masks (lottery paper, Sec. III and Algorithm 1) and rewinding."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from replib.sparsity import penalties
from replib.sparsity.masks import (
    HardMask,
    RelaxedMask,
    add_relaxed_masks,
    apply_hard_masks,
    current_masks,
    mask_parameters,
    mask_penalty,
    network_parameters,
    project_masks_,
    remove_masks,
    rewind,
    snapshot,
    theta,
    threshold_masks,
)


def tiny_mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))


def tiny_convnet() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 5 * 5, 3),
    )


def test_relaxed_mask_weight_is_m_times_theta():
    net = tiny_mlp()
    add_relaxed_masks(net)
    layer = net[0]
    assert isinstance(layer.parametrizations["weight"][0], RelaxedMask)
    with torch.no_grad():
        layer.parametrizations["weight"][0].m.uniform_(0, 1)
    m = layer.parametrizations["weight"][0].m
    assert torch.equal(layer.weight, m * theta(layer))
    x = torch.randn(4, 6)
    expected = torch.relu(x @ (m * theta(layer)).T + layer.bias) @ net[2].weight.T + net[2].bias
    torch.testing.assert_close(net(x), expected)


def test_relaxed_mask_starts_at_one_half_as_in_algorithm_1():
    net = tiny_mlp()
    theta0 = net[0].weight.detach().clone()
    masks = add_relaxed_masks(net)
    assert len(masks) == 2 and all(torch.all(m == 0.5) for m in masks)
    torch.testing.assert_close(net[0].weight, 0.5 * theta0, rtol=0, atol=0)
    other = tiny_mlp()
    add_relaxed_masks(other, init=1.0)
    torch.testing.assert_close(other[0].weight, theta0, rtol=0, atol=0)


def test_mask_and_network_parameters_partition_the_model():
    net = tiny_mlp()
    add_relaxed_masks(net, layers=[net[0]])
    ms, rest = mask_parameters(net), network_parameters(net)
    assert len(ms) == 1 and ms[0].shape == (5, 6)
    assert {id(p) for p in ms} | {id(p) for p in rest} == {id(p) for p in net.parameters()}
    assert not {id(p) for p in ms} & {id(p) for p in rest}
    assert not parametrize.is_parametrized(net[2])


def test_projection_keeps_masks_in_unit_box():
    net = tiny_mlp()
    (m, _) = add_relaxed_masks(net)
    values = torch.tensor([-0.7, -1e-9, 0.0, 0.3, 1.0, 1.2])
    with torch.no_grad():
        m[0] = values
    project_masks_(net)
    assert torch.equal(m[0], torch.tensor([0.0, 0.0, 0.0, 0.3, 1.0, 1.0]))
    assert all(p.min() >= 0 and p.max() <= 1 for p in mask_parameters(net))


def test_threshold_keeps_entries_at_or_above_alpha():
    """Algorithm 1, step 4: m < alpha is pruned (an entry equal to alpha stays)."""
    net = tiny_mlp()
    m1, m2 = add_relaxed_masks(net)
    alpha = 0.25
    with torch.no_grad():
        m1.copy_(torch.linspace(0, 1, m1.numel()).view_as(m1))
        m1[0, 0] = alpha
        m2.fill_(0.9)
        m2[1, :] = 0.1
    masks = threshold_masks(net, alpha)
    assert set(masks) == {"0.weight", "2.weight"}
    assert torch.equal(masks["0.weight"], m1 >= alpha) and bool(masks["0.weight"][0, 0])
    assert int(masks["2.weight"].sum()) == m2.numel() - 5
    # applying the threshold sets pruned m to 0 and keeps them there
    apply_hard_masks(net, masks)
    assert torch.all(m1[~masks["0.weight"]] == 0)
    assert all(torch.equal(current_masks(net)[k], v) for k, v in masks.items())
    with torch.no_grad():
        m1.add_(0.5)  # e.g. a large optimizer step
    project_masks_(net)
    assert torch.all(m1[~masks["0.weight"]] == 0)
    assert torch.all(net[0].weight[~masks["0.weight"]] == 0)


def test_log_penalty_step_follows_closed_form_gradient():
    """Projected gradient on lambda * r_eps(m): m <- P_[0,1](m - lr * lambda * r_eps'(m))."""
    net = tiny_mlp()
    (m,) = add_relaxed_masks(net, layers=[net[0]])
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        m.copy_(torch.rand(m.shape, generator=gen))
        m[0, :3] = torch.tensor([0.0, 1e-3, 0.02])  # near zero: the step overshoots below 0
    m0 = m.detach().clone()
    lam, eps, lr = 0.5, 0.1, 0.05
    opt = torch.optim.SGD(mask_parameters(net), lr=lr)
    loss = lam * mask_penalty(net, lambda t: penalties.log_reg(t, eps))
    loss.backward()
    grad = 1.0 / ((m0 + eps) * math.log((1 + eps) / eps))
    torch.testing.assert_close(m.grad, lam * grad)
    opt.step()
    project_masks_(net)
    expected = (m0 - lr * lam * grad).clamp(0, 1)
    torch.testing.assert_close(m.detach(), expected)
    assert torch.all(m[0, :3] == 0)
    assert theta(net[0]).grad is None  # the penalty acts on m only


def test_l1_penalty_is_sum_of_masks():
    net = tiny_mlp()
    add_relaxed_masks(net)
    total = sum(p.numel() for p in mask_parameters(net))
    torch.testing.assert_close(mask_penalty(net, penalties.l1), torch.tensor(0.5 * total))


def test_hard_mask_weight_and_gradient():
    net = tiny_convnet()
    gen = torch.Generator().manual_seed(1)
    masks = {
        "0.weight": torch.rand(net[0].weight.shape, generator=gen) > 0.5,
        "4.weight": torch.rand(net[4].weight.shape, generator=gen) > 0.5,
    }
    apply_hard_masks(net, masks)
    assert isinstance(net[0].parametrizations["weight"][0], HardMask)
    for key, layer in (("0.weight", net[0]), ("4.weight", net[4])):
        assert torch.equal(layer.weight, theta(layer) * masks[key])
    net(torch.randn(2, 2, 5, 5)).sum().backward()
    assert torch.all(theta(net[0]).grad[~masks["0.weight"]] == 0)
    got = current_masks(net)
    assert set(got) == set(masks) and all(torch.equal(got[k], masks[k]) for k in masks)


def test_rewind_restores_initial_weights_and_keeps_zeros():
    net = tiny_convnet()
    init = snapshot(net)  # before any mask exists
    gen = torch.Generator().manual_seed(2)
    masks = {
        "0.weight": torch.rand(net[0].weight.shape, generator=gen) > 0.3,
        "4.weight": torch.rand(net[4].weight.shape, generator=gen) > 0.7,
    }
    apply_hard_masks(net, masks)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    net.train()
    for _ in range(3):
        opt.zero_grad()
        net(torch.randn(8, 2, 5, 5)).pow(2).mean().backward()
        opt.step()
    assert not torch.equal(theta(net[0]), init["0.weight"])
    assert not torch.equal(net[1].running_mean, init["1.running_mean"])
    rewind(net, init, masks)
    for key, layer in (("0.weight", net[0]), ("4.weight", net[4])):
        assert torch.equal(theta(layer), init[key])
        assert torch.equal(layer.weight, init[key] * masks[key])
        assert int((layer.weight != 0).sum()) == int(masks[key].sum())  # no init weight is 0
    assert torch.equal(net[0].bias, init["0.bias"])
    assert torch.equal(net[1].running_mean, init["1.running_mean"])
    assert torch.equal(net[1].weight, init["1.weight"])


def test_rewind_keeps_relaxed_mask_values():
    """Algorithm 1, step 2: theta = theta_0 and m = m_{t-1}."""
    net = tiny_mlp()
    init = snapshot(net)
    (m1, m2) = add_relaxed_masks(net)
    with torch.no_grad():
        m1.uniform_(0, 1)
        theta(net[0]).add_(1.0)
    m_before = m1.detach().clone()
    masks = threshold_masks(net, 0.3)
    rewind(net, init, masks)
    assert torch.equal(theta(net[0]), init["0.weight"])
    assert torch.equal(m1, m_before * masks["0.weight"])
    # a snapshot of a masked model uses the same logical names
    assert set(snapshot(net)) == set(init)


def test_remove_masks_bakes_in_masked_weight():
    net = tiny_mlp()
    (m1, _) = add_relaxed_masks(net)
    with torch.no_grad():
        m1.uniform_(0, 1)
    expected = net[0].weight.detach().clone()
    remove_masks(net)
    assert not parametrize.is_parametrized(net[0])
    assert torch.equal(net[0].weight, expected)
    assert mask_parameters(net) == []


def test_hard_mask_then_relaxed_mask_carries_pattern():
    net = tiny_mlp()
    keep = torch.rand(net[0].weight.shape, generator=torch.Generator().manual_seed(0)) > 0.5
    apply_hard_masks(net, {"0.weight": keep})
    add_relaxed_masks(net)
    assert torch.equal(current_masks(net)["0.weight"], keep)
    assert torch.all(net[0].weight[~keep] == 0)


def test_mask_shape_mismatch_is_an_error():
    net = tiny_mlp()
    with pytest.raises(ValueError, match="shape"):
        apply_hard_masks(net, {"0.weight": torch.ones(3, 3, dtype=torch.bool)})


@pytest.mark.parametrize("reg", ["l1", "log"])
def test_mask_penalty_equals_the_penalty_of_the_kept_entries(reg):
    """R(m) over the kept entries only (Eq. (3) after a thresholding round): the same value and
    bit for bit the same gradient as the penalty of the gathered ``m[keep]``, with exactly zero
    gradient on the pruned entries, even where a pruned ``m`` is (wrongly) nonzero."""
    eps = 0.1
    pen = penalties.l1 if reg == "l1" else (lambda t: penalties.log_reg(t, eps))
    net = tiny_mlp()
    gen = torch.Generator().manual_seed(3)
    apply_hard_masks(net, {"0.weight": torch.rand(5, 6, generator=gen) > 0.4})
    add_relaxed_masks(net)
    with torch.no_grad():
        for p in mask_parameters(net):
            p.copy_(torch.rand(p.shape, generator=gen) * (p != 0))
    relaxed = [mod for mod in net.modules() if isinstance(mod, RelaxedMask)]
    with torch.no_grad():  # a pruned entry that is not 0 must still not count
        relaxed[0].m[~relaxed[0].keep] = 0.7
    mask_penalty(net, pen).backward()
    got = [r.m.grad.clone() for r in relaxed]
    for r in relaxed:
        r.m.grad = None
    ref = sum(pen(r.m[r.keep]) for r in relaxed)
    ref.backward()
    for r, g in zip(relaxed, got):
        assert torch.equal(g, r.m.grad)
        assert torch.all(g[~r.keep] == 0)
    with torch.no_grad():
        torch.testing.assert_close(mask_penalty(net, pen), ref)
