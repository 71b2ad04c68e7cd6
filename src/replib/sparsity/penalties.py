"""Sparsity-inducing penalties of the five papers, as differentiable functions of tensors.

Every penalty takes one tensor or an iterable of tensors (e.g. ``model.parameters()``) and
returns a 0-dim tensor that autograd can differentiate, so it can be added to a loss. Where a
paper writes the gradient (the "zero-attraction" term of a weight update), a ``*_grad``
function returns it in closed form; the unit tests check it against autograd.

Conventions:

- ``l2`` is the plain sum of squares, **without** a factor 1/2, as in Eq. (4) of the l0 paper
  (whose update, Eq. (5), carries ``2 * eta * alpha_l2 * w_j``).
- Group penalties (CGES, Yoon & Hwang 2017) partition a weight tensor along ``group_dim``:
  group ``g`` is the slice ``w.select(group_dim, g)``. The default ``group_dim=0`` makes each
  row of a ``Linear`` weight ``[out, in]`` (one neuron's incoming weights) and each output
  channel of a ``Conv2d`` weight ``[out, in, kh, kw]`` one group. The public CGES code (TF,
  weights ``[in, out]``, reduction over the last axis) groups each *input* unit's outgoing
  weights instead; that is ``group_dim=1`` for a PyTorch ``Linear`` weight.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor

TensorOrTensors = Tensor | Iterable[Tensor]

__all__ = [
    "TensorOrTensors",
    "as_tensor_list",
    "exclusive_l12",
    "group_l21",
    "l0_exp",
    "l0_exp_grad",
    "l1",
    "l1_grad",
    "l2",
    "l2_grad",
    "log_reg",
    "log_reg_grad",
]


def as_tensor_list(tensors: TensorOrTensors) -> list[Tensor]:
    """One tensor or an iterable of tensors, as a list (generators are consumed once)."""
    if isinstance(tensors, Tensor):
        return [tensors]
    return list(tensors)


def _sum(terms: list[Tensor]) -> Tensor:
    if not terms:
        return torch.zeros(())
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


def l1(w: TensorOrTensors) -> Tensor:
    """``sum_j |w_j|``: the l1 norm, Eq. (6) of the l0 paper (Psi in Eq. (16) of iRDA)."""
    return _sum([t.abs().sum() for t in as_tensor_list(w)])


def l1_grad(w: Tensor) -> Tensor:
    """``sign(w)``: the l1 penalization term of Eq. (7) of the l0 paper (subgradient 0 at 0)."""
    return torch.sign(w)


def l2(w: TensorOrTensors) -> Tensor:
    """``sum_j w_j^2`` (no factor 1/2): the squared l2 norm, Eq. (4) of the l0 paper."""
    return _sum([t.pow(2).sum() for t in as_tensor_list(w)])


def l2_grad(w: Tensor) -> Tensor:
    """``2 w``: the l2 penalization term of Eq. (5) of the l0 paper."""
    return 2 * w


def l0_exp(w: TensorOrTensors, beta: float) -> Tensor:
    """``sum_j (1 - exp(-beta |w_j|))``: the smooth l0 approximation, Eqs. (10)-(11), l0 paper.

    Tends to the number of nonzero entries, Eqs. (8)-(9), as ``beta -> inf``.
    """
    return _sum([(1 - torch.exp(-beta * t.abs())).sum() for t in as_tensor_list(w)])


def l0_exp_grad(w: Tensor, beta: float) -> Tensor:
    """``beta sign(w) exp(-beta |w|)``: Eq. (13) of the l0 paper, the zero attraction of Fig. 1.

    The update of Eq. (14) subtracts ``eta * alpha * l0_exp_grad(w, beta)``.
    """
    return beta * torch.sign(w) * torch.exp(-beta * w.abs())


def log_reg(m: TensorOrTensors, eps: float) -> Tensor:
    """``sum_i log((m_i + eps) / eps) / log((1 + eps) / eps)``: the log regularizer r_eps.

    Sec. III-A (with Eq. (3)) of the lottery paper. Normalized so that ``r_eps(0) = 0`` and
    ``r_eps(1) = 1``; defined for relaxed masks ``m`` in ``[0, 1]`` (the caller projects).
    """
    norm = math.log((1 + eps) / eps)
    return _sum([(torch.log1p(t / eps)).sum() / norm for t in as_tensor_list(m)])


def log_reg_grad(m: Tensor, eps: float) -> Tensor:
    """``1 / ((m + eps) log((1 + eps) / eps))``: derivative of r_eps, lottery paper Sec. III-A."""
    return 1 / ((m + eps) * math.log((1 + eps) / eps))


def _groups(w: Tensor, group_dim: int) -> Tensor:
    """View ``w`` as ``[n_groups, group_size]`` with one row per slice along ``group_dim``."""
    if w.dim() == 0:
        return w.reshape(1, 1)
    return w.movedim(group_dim, 0).reshape(w.shape[group_dim], -1)


def group_l21(w: TensorOrTensors, group_dim: int = 0) -> Tensor:
    """``sum_g ||w_g||_2``: the group-sparsity (l2,1) term of CGES (Yoon & Hwang 2017).

    Drives whole groups (neurons / channels, see the module docstring) to zero.
    """
    return _sum([_groups(t, group_dim).norm(dim=1).sum() for t in as_tensor_list(w)])


def exclusive_l12(w: TensorOrTensors, group_dim: int = 0) -> Tensor:
    """``(1/2) sum_g ||w_g||_1^2``: the exclusive-sparsity (l1,2) term of CGES.

    Makes the weights inside a group compete, so each group keeps few nonzeros. The 1/2 makes
    its subgradient ``sign(w_gi) ||w_g||_1``, the threshold used by the CGES update.
    """
    return _sum(
        [0.5 * _groups(t, group_dim).abs().sum(dim=1).pow(2).sum() for t in as_tensor_list(w)]
    )
