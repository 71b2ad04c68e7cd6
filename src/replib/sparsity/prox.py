"""Closed-form proximal operators, ``prox_{tau R}(v) = argmin_x (1/2)||x - v||^2 + tau R(x)``.

Each operator comes twice: a pure function of one tensor, and an in-place ``*_`` variant that
applies it to every tensor of a parameter list under ``torch.no_grad()`` (what an optimizer
calls after its gradient step). Thresholds are floats or 0-dim tensors (a tensor threshold
avoids a device synchronization when it is computed on the GPU).

Group operators use the grouping convention of :mod:`replib.sparsity.penalties`: group ``g``
is the slice ``w.select(group_dim, g)``; ``group_dim=0`` means one group per output neuron
(row of a ``Linear`` weight) or output channel (of a ``Conv2d`` weight).
"""

from __future__ import annotations

import torch
from torch import Tensor

from replib.sparsity.penalties import TensorOrTensors, as_tensor_list

__all__ = [
    "exclusive_l12_prox",
    "exclusive_l12_prox_",
    "group_soft_threshold",
    "group_soft_threshold_",
    "project_box",
    "project_box_",
    "soft_threshold",
    "soft_threshold_",
]

Threshold = float | Tensor


def soft_threshold(x: Tensor, tau: Threshold) -> Tensor:
    """``sign(x) max(|x| - tau, 0)``: the prox of ``tau ||.||_1``.

    The backward step of FOBOS, Eq. (10) with the closed form Eq. (18) of the iRDA paper; the
    operator S of Algorithm 1 of the proximal network slimming paper; Eqs. (10)-(11) of the ACNN
    paper. Written as ``x - clamp(x, -tau, tau)`` so that entries with ``|x| <= tau`` are
    exactly zero and the others are exactly ``x -+ tau``.
    """
    if isinstance(tau, Tensor):
        return x - torch.clamp(x, min=-tau, max=tau)
    _check_threshold(tau)
    return x - x.clamp(min=-tau, max=tau)


def _check_threshold(tau: float) -> None:
    if not tau >= 0:  # also rejects NaN
        raise ValueError(f"tau must be >= 0, got {tau}")


# ``softshrink`` with ``out=`` the input: the soft threshold in one in-place pass, no temporary
# (2-3x faster than ``p.sub_(p.clamp(-tau, tau))`` on the CPU). ATen's kernel computes
# ``x > tau ? x - tau : (x < -tau ? x + tau : 0)`` with tau cast to x's dtype: the same values
# as ``x - clamp(x, -tau, tau)``, bit for bit, NaN stays NaN; the one difference is that some
# zeroed negative entries come out as -0.0 instead of +0.0 (-0.0 == 0, so zero masks and
# counts ``x != 0`` are unaffected). Called through the public operator registry
# ``torch.ops.aten`` rather than the private ``torch._C._nn.softshrink`` (which saves ~1 us per
# call on tiny tensors, nothing on large ones); ``torch.nn.functional.softshrink`` has no
# ``out=`` and would allocate.
_softshrink_out = torch.ops.aten.softshrink.out


@torch.no_grad()
def soft_threshold_(params: TensorOrTensors, tau: Threshold) -> None:
    """In-place :func:`soft_threshold` of every tensor in ``params`` (the same values).

    A float ``tau`` takes one in-place pass (ATen ``softshrink`` written into the tensor); a
    tensor ``tau`` (possibly per entry) uses the clamp formulation.
    """
    tensors = as_tensor_list(params)
    if isinstance(tau, Tensor):
        for p in tensors:
            p.sub_(torch.clamp(p, min=-tau, max=tau))
        return
    _check_threshold(tau)
    for p in tensors:
        _softshrink_out(p, tau, out=p)


def project_box(x: Tensor, lo: float = 0.0, hi: float = 1.0) -> Tensor:
    """Euclidean projection onto ``[lo, hi]^d``: the prox of the box indicator.

    The projection step of the projected gradient used on relaxed masks ``m in [0, 1]^d``,
    Eq. (1)-(2) and Sec. III-B of the lottery paper.
    """
    return x.clamp(min=lo, max=hi)


@torch.no_grad()
def project_box_(params: TensorOrTensors, lo: float = 0.0, hi: float = 1.0) -> None:
    """In-place :func:`project_box` of every tensor in ``params``."""
    for p in as_tensor_list(params):
        p.clamp_(min=lo, max=hi)


def _as_groups(w: Tensor, group_dim: int) -> tuple[Tensor, tuple[int, ...]]:
    """``w`` as ``[n_groups, group_size]`` plus the moved shape needed to undo it."""
    if w.dim() == 0:
        return w.reshape(1, 1), ()
    moved = w.movedim(group_dim, 0)
    return moved.reshape(moved.shape[0], -1), tuple(moved.shape)


def _from_groups(g: Tensor, moved_shape: tuple[int, ...], group_dim: int) -> Tensor:
    if not moved_shape:
        return g.reshape(())
    return g.reshape(moved_shape).movedim(0, group_dim)


def group_soft_threshold(w: Tensor, tau: Threshold, group_dim: int = 0) -> Tensor:
    """``w_g max(1 - tau / ||w_g||_2, 0)`` for every group: the prox of ``tau sum_g ||w_g||_2``.

    The group-lasso shrinkage of CGES (Yoon & Hwang 2017, group-sparsity step); a group whose
    norm is at most ``tau`` becomes exactly zero (the neuron is removed).
    """
    g, shape = _as_groups(w, group_dim)
    norms = g.norm(dim=1, keepdim=True)
    scale = torch.where(norms > tau, 1 - tau / norms.clamp_min(torch.finfo(g.dtype).tiny), 0)
    return _from_groups(g * scale.to(g.dtype), shape, group_dim)


@torch.no_grad()
def group_soft_threshold_(params: TensorOrTensors, tau: Threshold, group_dim: int = 0) -> None:
    """In-place :func:`group_soft_threshold` of every tensor in ``params``."""
    for p in as_tensor_list(params):
        p.copy_(group_soft_threshold(p, tau, group_dim))


def _exclusive_threshold(a: Tensor, tau: Threshold) -> Tensor:
    """Per-group threshold of the exact exclusive-lasso prox (``a = |v|`` as ``[G, n]``).

    Minimizing ``(1/2)||x - v||^2 + (tau/2) ||x||_1^2`` gives ``x = S(v, theta)`` with
    ``theta = tau ||x||_1``; on the support of size k (the k largest ``|v_i|``) this means
    ``theta = tau sum_{j<=k} a_(j) / (1 + k tau)``, and k is the largest index with
    ``a_(k) > theta_k`` (the condition holds on a prefix of the sorted entries).
    """
    sorted_a, _ = a.sort(dim=1, descending=True)
    csum = sorted_a.cumsum(dim=1)
    k = torch.arange(1, a.shape[1] + 1, dtype=a.dtype, device=a.device)
    theta_k = tau * csum / (1 + k * tau)
    support = (sorted_a > theta_k).sum(dim=1, keepdim=True)
    theta = theta_k.gather(1, (support - 1).clamp_min(0))
    return torch.where(support > 0, theta, torch.zeros_like(theta))


def exclusive_l12_prox(w: Tensor, tau: Threshold, group_dim: int = 0, exact: bool = True) -> Tensor:
    """Prox of ``tau * (1/2) sum_g ||w_g||_1^2``, the exclusive-sparsity term of CGES.

    ``exact=True`` (default) returns the true argmin: per group, a soft threshold whose level
    ``tau ||x_g||_1`` is solved in closed form by sorting (see :func:`_exclusive_threshold`).
    ``exact=False`` is the one-step update of the CGES paper and code,
    ``sign(w_gi) max(|w_gi| - tau ||w_g||_1, 0)``, which thresholds with the l1 norm of the
    group *before* shrinkage and therefore shrinks more than the exact prox.
    """
    g, shape = _as_groups(w, group_dim)
    a = g.abs()
    if exact:
        theta = _exclusive_threshold(a, tau)
    else:
        theta = tau * a.sum(dim=1, keepdim=True)
    return _from_groups(soft_threshold(g, theta), shape, group_dim)


@torch.no_grad()
def exclusive_l12_prox_(
    params: TensorOrTensors, tau: Threshold, group_dim: int = 0, exact: bool = True
) -> None:
    """In-place :func:`exclusive_l12_prox` of every tensor in ``params``."""
    for p in as_tensor_list(params):
        p.copy_(exclusive_l12_prox(p, tau, group_dim, exact))
