"""Penalties and proximal operators: hand-computed values, gradients, and argmin property."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from replib.sparsity import (
    exclusive_l12,
    exclusive_l12_prox,
    exclusive_l12_prox_,
    group_l21,
    group_soft_threshold,
    group_soft_threshold_,
    l0_exp,
    l0_exp_grad,
    l1,
    l1_grad,
    l2,
    l2_grad,
    log_reg,
    log_reg_grad,
    project_box,
    project_box_,
    soft_threshold,
    soft_threshold_,
)

f64 = torch.float64

pytestmark = pytest.mark.usefixtures("one_thread")


def t(*values: float) -> Tensor:
    return torch.tensor(values, dtype=f64)


# ---------------------------------------------------------------- penalties: values


def test_l1_l2_hand_computed_and_summed_over_tensors() -> None:
    w = t(1.0, -2.0, 0.0)
    assert l1(w).item() == 3.0
    assert l2(w).item() == 5.0  # sum of squares, no factor 1/2 (l0 paper Eq. (4))
    assert l1([w, t(-4.0)]).item() == 7.0
    assert l2(iter([w, t(3.0)])).item() == 14.0


def test_l0_exp_hand_computed() -> None:
    # 1 - exp(-beta |w|) with beta |w| = ln 2 gives 1/2; zero contributes nothing.
    w = t(0.0, math.log(2.0), -math.log(2.0))
    assert l0_exp(w, beta=1.0).item() == pytest.approx(1.0)
    assert l0_exp(w, beta=2.0).item() == pytest.approx(2 * (1 - 0.25))


def test_l0_exp_tends_to_number_of_nonzeros() -> None:
    w = t(0.0, 1e-2, -1e-2, 0.3, -1.0, 5.0, 0.0)
    errors = [abs(l0_exp(w, beta).item() - 5) for beta in (1.0, 10.0, 100.0, 1e3, 1e4)]
    assert all(a > b for a, b in zip(errors, errors[1:]))
    assert errors[-1] < 1e-12


def test_log_reg_is_normalized_to_unit_interval() -> None:
    eps = 0.1
    assert log_reg(t(0.0), eps).item() == 0.0
    assert log_reg(t(1.0), eps).item() == pytest.approx(1.0)
    assert log_reg(t(0.0, 1.0, 1.0, 0.0), eps).item() == pytest.approx(2.0)
    m = t(0.3)
    expected = math.log((0.3 + eps) / eps) / math.log((1 + eps) / eps)
    assert log_reg(m, eps).item() == pytest.approx(expected)
    # concave: above the chord r(m) = m between (0, 0) and (1, 1)
    assert log_reg(m, eps).item() > 0.3


def test_group_penalties_hand_computed() -> None:
    w = torch.tensor([[3.0, 4.0], [1.0, -1.0]], dtype=f64)  # rows = neurons
    assert group_l21(w).item() == pytest.approx(5 + math.sqrt(2))
    assert exclusive_l12(w).item() == pytest.approx(0.5 * (7**2 + 2**2))
    # group_dim=1: columns are the groups
    assert group_l21(w, group_dim=1).item() == pytest.approx(math.sqrt(10) + math.sqrt(17))
    assert exclusive_l12(w, group_dim=1).item() == pytest.approx(0.5 * (4**2 + 5**2))
    # a conv kernel: one group per output channel
    k = torch.ones(2, 3, 2, 2, dtype=f64)
    assert group_l21(k).item() == pytest.approx(2 * math.sqrt(12))


# ---------------------------------------------------------------- penalties: gradients


def _autograd(fn: Callable[[Tensor], Tensor], w: Tensor) -> Tensor:
    w = w.clone().requires_grad_(True)
    fn(w).backward()
    assert w.grad is not None
    return w.grad


@pytest.mark.parametrize(
    ("penalty", "grad"),
    [
        (l1, l1_grad),
        (l2, l2_grad),
        (lambda w: l0_exp(w, 5.0), lambda w: l0_exp_grad(w, 5.0)),
        (lambda w: l0_exp(w, 50.0), lambda w: l0_exp_grad(w, 50.0)),
    ],
    ids=["l1", "l2", "l0_exp_beta5", "l0_exp_beta50"],
)
def test_closed_form_gradient_equals_autograd(penalty: Callable, grad: Callable) -> None:
    w = torch.randn(50, dtype=f64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(grad(w), _autograd(penalty, w))


def test_log_reg_gradient_equals_autograd() -> None:
    m = torch.rand(50, dtype=f64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(log_reg_grad(m, 0.1), _autograd(lambda x: log_reg(x, 0.1), m))


def test_l0_zero_attraction_peaks_near_zero() -> None:
    """Fig. 1 of the l0 paper: the attraction beta e^{-beta|w|} grows as |w| shrinks."""
    w = t(1.0, 0.1, 0.01, 0.001)
    attraction = l0_exp_grad(w, beta=10.0)
    assert torch.all(attraction[1:] > attraction[:-1])
    assert attraction[-1].item() == pytest.approx(10.0 * math.exp(-0.01))


# ---------------------------------------------------------------- prox: hand-computed


def test_soft_threshold_hand_computed() -> None:
    x = t(-3.0, -1.0, -0.5, 0.0, 0.5, 2.0)
    expected = t(-2.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    assert torch.equal(soft_threshold(x, 1.0), expected)
    assert torch.equal(soft_threshold(x, torch.tensor(1.0, dtype=f64)), expected)
    # a per-entry threshold broadcasts
    assert torch.equal(soft_threshold(t(3.0, 3.0), t(1.0, 4.0)), t(2.0, 0.0))


def test_soft_threshold_in_place_zeros_propagates_nan_and_rejects_negative_tau() -> None:
    x = torch.tensor([float("nan"), -0.75, -0.125, 0.0, 0.125, 0.25, 0.5, -2.0] * 5)  # + tail
    y = x.clone()
    soft_threshold_(y, 0.25)
    expected = torch.tensor([float("nan"), -0.5, 0.0, 0.0, 0.0, 0.0, 0.25, -1.75] * 5)
    torch.testing.assert_close(y, expected, rtol=0, atol=0, equal_nan=True)
    assert int((y == 0).sum()) == 4 * 5  # exact zeros where |x| <= tau
    assert torch.equal(y.nan_to_num(7.0), soft_threshold(x, 0.25).nan_to_num(7.0))
    with pytest.raises(ValueError, match="tau"):
        soft_threshold_(y, -0.1)
    with pytest.raises(ValueError, match="tau"):
        soft_threshold(x, -0.1)


def test_project_box_hand_computed() -> None:
    assert torch.equal(project_box(t(-0.5, 0.3, 1.7)), t(0.0, 0.3, 1.0))
    assert torch.equal(project_box(t(-0.5, 0.3, 1.7), lo=-1.0, hi=0.0), t(-0.5, 0.0, 0.0))


def test_group_soft_threshold_hand_computed() -> None:
    w = torch.tensor([[3.0, 4.0], [0.6, 0.8], [0.0, 0.0]], dtype=f64)
    out = group_soft_threshold(w, 1.0)  # row norms 5, 1, 0
    expected = torch.tensor([[2.4, 3.2], [0.0, 0.0], [0.0, 0.0]], dtype=f64)
    torch.testing.assert_close(out, expected)
    assert torch.all(out[1:] == 0)  # exactly zero, not merely small
    cols = group_soft_threshold(w.T.contiguous(), 1.0, group_dim=1)
    torch.testing.assert_close(cols, expected.T)


def test_group_soft_threshold_on_conv_kernel_zeroes_whole_channels() -> None:
    k = torch.ones(4, 3, 2, 2, dtype=f64)
    k[1] *= 0.1  # norm 0.1 * sqrt(12) < 1
    out = group_soft_threshold(k, 1.0)
    assert out.shape == k.shape
    assert torch.all(out[1] == 0)
    scale = 1 - 1 / math.sqrt(12)
    torch.testing.assert_close(out[0], k[0] * scale)


def test_exclusive_prox_hand_computed() -> None:
    v = t(3.0, -1.0, 0.5).reshape(1, 3)  # one group (one neuron's three incoming weights)
    # CGES one-step form: threshold tau * ||v||_1 = 0.2 * 4.5 = 0.9
    cges = exclusive_l12_prox(v, 0.2, exact=False)
    torch.testing.assert_close(cges, t(2.1, -0.1, 0.0).reshape(1, 3))
    # exact prox: support {3, -1}, theta = 0.2 * (3 + 1) / (1 + 2 * 0.2) = 0.8 / 1.4
    theta = 0.8 / 1.4
    exact = exclusive_l12_prox(v, 0.2)
    torch.testing.assert_close(exact, t(3 - theta, -(1 - theta), 0.0).reshape(1, 3))
    # a 1-D tensor (a bias) has one group per entry: the exclusive term is then 0.5 * v_i^2
    torch.testing.assert_close(exclusive_l12_prox(t(3.0, -1.0), 0.5), t(2.0, -2.0 / 3.0))


# ---------------------------------------------------------------- prox: argmin property


def test_soft_threshold_is_the_argmin_on_a_grid() -> None:
    grid = torch.arange(-5.0, 5.0, 1e-4, dtype=f64)
    for v in (-3.2, -0.7, 0.0, 0.4, 1.0, 2.5):
        for tau in (0.0, 0.5, 1.0):
            objective = 0.5 * (grid - v) ** 2 + tau * grid.abs()
            best = grid[objective.argmin()].item()
            assert soft_threshold(t(v), tau).item() == pytest.approx(best, abs=1e-4)


def test_project_box_is_the_argmin_on_a_grid() -> None:
    grid = torch.arange(0.0, 1.0 + 1e-9, 1e-4, dtype=f64)
    for v in (-0.3, 0.25, 0.8, 1.6):
        best = grid[((grid - v) ** 2).argmin()].item()
        assert project_box(t(v)).item() == pytest.approx(best, abs=1e-4)


def _grid_argmin_2d(objective: Callable[[Tensor], Tensor]) -> Tensor:
    axis = torch.arange(-3.0, 3.0, 5e-3, dtype=f64)
    xx, yy = torch.meshgrid(axis, axis, indexing="ij")
    points = torch.stack([xx.flatten(), yy.flatten()], dim=1)  # [N, 2]
    return points[objective(points).argmin()]


@pytest.mark.parametrize("v", [(2.0, 1.0), (0.5, -0.3), (-1.5, 1.4), (0.1, 2.2)])
def test_group_and_exclusive_prox_are_argmin_on_a_2d_grid(v: tuple[float, float]) -> None:
    v_t = t(*v)
    tau = 0.6

    def group_obj(x: Tensor) -> Tensor:
        return 0.5 * ((x - v_t) ** 2).sum(1) + tau * x.norm(dim=1)

    def excl_obj(x: Tensor) -> Tensor:
        return 0.5 * ((x - v_t) ** 2).sum(1) + tau * 0.5 * x.abs().sum(1) ** 2

    g = group_soft_threshold(v_t.reshape(1, 2), tau).flatten()
    torch.testing.assert_close(g, _grid_argmin_2d(group_obj), atol=6e-3, rtol=0)
    e = exclusive_l12_prox(v_t.reshape(1, 2), tau).flatten()
    torch.testing.assert_close(e, _grid_argmin_2d(excl_obj), atol=6e-3, rtol=0)


def _assert_no_better_point_nearby(objective: Callable[[Tensor], Tensor], x: Tensor) -> None:
    """A convex objective has no descent direction at its minimizer: random probes never win."""
    gen = torch.Generator().manual_seed(0)
    f_x = objective(x).item()
    for scale in (1e-1, 1e-2, 1e-3, 1e-4):
        for _ in range(100):
            probe = x + scale * torch.randn(x.shape, dtype=x.dtype, generator=gen)
            assert objective(probe).item() >= f_x - 1e-12


def test_group_and_exclusive_prox_minimize_their_objectives_in_higher_dims() -> None:
    gen = torch.Generator().manual_seed(3)
    v = torch.randn(5, 7, dtype=f64, generator=gen)
    tau = 0.4

    def group_obj(x: Tensor) -> Tensor:
        return 0.5 * ((x - v) ** 2).sum() + tau * group_l21(x)

    def excl_obj(x: Tensor) -> Tensor:
        return 0.5 * ((x - v) ** 2).sum() + tau * exclusive_l12(x)

    _assert_no_better_point_nearby(group_obj, group_soft_threshold(v, tau))
    x = exclusive_l12_prox(v, tau)
    _assert_no_better_point_nearby(excl_obj, x)
    # The CGES one-step form is not the exact prox: it does worse on the same objective.
    assert excl_obj(exclusive_l12_prox(v, tau, exact=False)) > excl_obj(x)


def test_exact_exclusive_prox_satisfies_optimality_conditions() -> None:
    gen = torch.Generator().manual_seed(4)
    v = torch.randn(6, 9, dtype=f64, generator=gen)
    tau = 0.3
    x = exclusive_l12_prox(v, tau)
    l1_rows = x.abs().sum(dim=1, keepdim=True)
    support = x != 0
    # on the support: x_i - v_i + tau sign(x_i) ||x_g||_1 = 0
    residual = (x - v + tau * torch.sign(x) * l1_rows)[support]
    torch.testing.assert_close(residual, torch.zeros_like(residual), atol=1e-12, rtol=0)
    # off the support: |v_i| <= tau ||x_g||_1
    assert torch.all(v.abs()[~support] <= (tau * l1_rows).expand_as(v)[~support] + 1e-12)
    assert support.any(dim=1).all() and (~support).any()  # the case is not degenerate


# ---------------------------------------------------------------- in-place variants


def test_inplace_variants_match_pure_functions_on_parameter_lists() -> None:
    gen = torch.Generator().manual_seed(5)
    shapes = [(4, 3), (6,), (2, 3, 2, 2)]
    values = [torch.randn(s, dtype=f64, generator=gen) for s in shapes]
    cases = [
        (soft_threshold_, lambda x: soft_threshold(x, 0.5), {"tau": 0.5}),
        (project_box_, lambda x: project_box(x, 0.0, 1.0), {"lo": 0.0, "hi": 1.0}),
        (group_soft_threshold_, lambda x: group_soft_threshold(x, 0.8), {"tau": 0.8}),
        (exclusive_l12_prox_, lambda x: exclusive_l12_prox(x, 0.2), {"tau": 0.2}),
    ]
    for inplace, pure, kwargs in cases:
        params = [nn.Parameter(v.clone()) for v in values]  # requires_grad: needs no_grad
        inplace(params, **kwargs)
        for p, v in zip(params, values):
            assert torch.equal(p.detach(), pure(v))
            assert p.requires_grad
