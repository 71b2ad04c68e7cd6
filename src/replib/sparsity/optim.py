"""Sparse update rules as ``torch.optim.Optimizer`` subclasses that drop into any training loop.

All of them keep their internal state (step counters, running averages, anchors, ProxNS's
auxiliary variable xi) in ``self.state`` and their hyperparameters in ``param_groups``, so
``state_dict()`` / ``load_state_dict()`` round-trip and a resumed run takes the identical next
step. Hyperparameters are per group, so e.g. biases and BatchNorm parameters can be left
unregularized with ``lam=0`` (see :func:`l1_param_groups`).

- :class:`ProxSGD`: SGD step, then soft threshold ``lr * lam`` (FOBOS); iRDA Eqs. (9)-(10), (18).
- :class:`SqrtProxSGD`: SGD step, then soft threshold ``lam sqrt(t) / gamma``; iRDA Eqs. (21)-(22).
- :class:`RDA`: ``w = S(w0 - (t/beta_t) gbar_t, (t/beta_t) lam)``; iRDA Eqs. (19)-(20), (27).
- :class:`IRDA`: RDA plus :meth:`IRDA.start_retraining` (Step 2, zeros frozen); iRDA Alg. 1.
- :class:`MaskedSGD`: SGD on the nonzero weights only; iRDA Sec. 3.6.
- :class:`ProxAdam`: Adam step, then soft threshold ``lr * lam``; ACNN Eqs. (8)-(11).
- :class:`ProximalSlimming`: PALM on the BN scales (gamma/xi averaging, soft threshold on xi);
  ProxNS Algorithm 1.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from replib.sparsity.prox import soft_threshold, soft_threshold_

logger = logging.getLogger(__name__)

__all__ = [
    "IRDA",
    "RDA",
    "MaskedSGD",
    "ProxAdam",
    "ProxSGD",
    "ProximalSlimming",
    "SqrtProxSGD",
    "apply_l1_prox",
    "inverse_sqrt_lr",
    "l1_param_groups",
    "rda_step",
    "sqrt_prox_threshold",
]

Params = Iterable[Tensor] | Iterable[dict[str, Any]]
Closure = Callable[[], Tensor] | None


def _set_group_default(optimizer: Optimizer, key: str, value: Any) -> None:
    """Add a hyperparameter unknown to a built-in optimizer's ``__init__`` (e.g. ``lam``)."""
    optimizer.defaults[key] = value
    for group in optimizer.param_groups:
        group.setdefault(key, value)


def _check_nonnegative(**values: float) -> None:
    for name, value in values.items():
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")


def l1_param_groups(model: nn.Module, lam: float, **hyper: Any) -> list[dict[str, Any]]:
    """Two param groups: weight matrices / kernels (``dim > 1``) with ``lam``, the rest with 0.

    The l1 term then acts on the conv and linear weights only; biases and BatchNorm scales and
    shifts (1-D tensors) are trained by the same rule without the penalty. Neither the iRDA
    paper nor the ACNN paper says which parameters it regularizes; this is our stated choice,
    and passing ``model.parameters()`` instead regularizes everything. Under :class:`RDA` the
    ``lam=0`` group still follows dual averaging (SDA, Eq. (6) of iRDA); with
    ``anchor="zero"`` that restarts BN scales from 0, so consider ``anchor="init"`` there.
    """
    weights = [p for p in model.parameters() if p.requires_grad and p.dim() > 1]
    others = [p for p in model.parameters() if p.requires_grad and p.dim() <= 1]
    groups = [{"params": weights, "lam": lam, **hyper}]
    if others:
        groups.append({"params": others, "lam": 0.0, **hyper})
    return groups


def _inverse_sqrt(k: int) -> float:
    return 1.0 / math.sqrt(k + 1)


def inverse_sqrt_lr(optimizer: Optimizer, gamma: float) -> LambdaLR:
    """The step size ``alpha_t = 1 / (gamma sqrt(t))`` of Eq. (8) of the iRDA paper (text below it).

    Sets every group's learning rate to ``1 / gamma`` and returns a ``LambdaLR`` to be stepped
    once per iteration (mini-batch), after ``optimizer.step()``: iteration t then uses
    ``1 / (gamma sqrt(t))``. Our reading of the prox-SGD and sqrt(t)-prox-SGD rows of the
    paper's Tables 1 and 7, which give a gamma but no learning rate.
    """
    for group in optimizer.param_groups:
        group["lr"] = 1.0 / gamma
        group["initial_lr"] = 1.0 / gamma
    return LambdaLR(optimizer, _inverse_sqrt)


def _params_with_grad(group: dict[str, Any]) -> list[Tensor]:
    return [p for p in group["params"] if p.grad is not None]


def _closure_loss(closure: Closure) -> Tensor | None:
    """The loss of ``closure`` (None without one), evaluated with gradients enabled."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


class ProxSGD(torch.optim.SGD):
    """Proximal SGD (FOBOS) for ``f(w) + lam ||w||_1``: Eqs. (9)-(10), closed form Eq. (18), iRDA.

    Each step is a ``torch.optim.SGD`` step (``w_{t+1/2} = w_t - alpha_t g_t``, Eq. (9), with
    optional momentum / weight decay), then ``w_{t+1} = S(w_{t+1/2}, alpha_t lam)`` (Eq. (10)),
    with ``alpha_t`` the group's current ``lr``: LR schedulers change the threshold with the
    step, which is why prox-SGD's threshold decays (Sec. 3.3). Use :func:`inverse_sqrt_lr` for
    the paper's ``alpha_t = 1 / (gamma sqrt(t))``.
    """

    def __init__(
        self,
        params: Params,
        lr: float,
        lam: float,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        _check_nonnegative(lam=lam)
        super().__init__(
            params,
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
        )
        _set_group_default(self, "lam", lam)

    def step(self, closure: Closure = None) -> Tensor | None:
        """One SGD step (Eq. (9)), then the soft threshold ``lr * lam`` (Eq. (10))."""
        loss = super().step(closure)
        apply_l1_prox(self)
        return loss


def sqrt_prox_threshold(lam: float, gamma: float, t: int) -> float:
    """``(t / beta_t) lam = lam sqrt(t) / gamma`` with ``beta_t = gamma sqrt(t)``: Eq. (22), iRDA.

    The threshold of both sqrt(t)-prox-SGD and RDA; it grows with the iteration count t.
    """
    return lam * math.sqrt(t) / gamma


class SqrtProxSGD(torch.optim.SGD):
    """sqrt(t)-prox-SGD: Eqs. (21)-(22) of the iRDA paper.

    The forward step is SGD with the group's ``lr`` (``alpha_t``), the backward step a soft
    threshold of ``(t / beta_t) lam = lam sqrt(t) / gamma``, i.e. the RDA threshold of Eq. (20)
    applied to the SGD iterate. t counts this parameter's updates (iterations, not epochs) and
    lives in ``state[p]["step"]``. Eqs. (23)-(24): the effective penalty grows like t, so the
    iterates are driven to 0 (the paper's Table 7 shows sparsity 1.00 for lam >= 1e-6). For
    the paper's ``alpha_t = 1 / (gamma sqrt(t))`` use :func:`inverse_sqrt_lr` with the same gamma.
    """

    def __init__(
        self,
        params: Params,
        lr: float,
        lam: float,
        gamma: float = 1.0,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
    ) -> None:
        _check_nonnegative(lam=lam)
        if gamma <= 0:
            raise ValueError(f"gamma must be > 0, got {gamma}")
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
        _set_group_default(self, "lam", lam)
        _set_group_default(self, "gamma", gamma)

    def step(self, closure: Closure = None) -> Tensor | None:
        """One SGD step (Eq. (21), first line), then the growing soft threshold of Eq. (22)."""
        loss = super().step(closure)
        for group in self.param_groups:
            for p in _params_with_grad(group):
                state = self.state[p]
                state["step"] = state.get("step", 0) + 1
                if group["lam"] != 0:
                    tau = sqrt_prox_threshold(group["lam"], group["gamma"], state["step"])
                    soft_threshold_(p, tau)
        return loss


def rda_step(
    anchor: Tensor | None,
    grad_avg: Tensor,
    t: int,
    lam: float,
    gamma: float,
    out: Tensor | None = None,
) -> Tensor:
    """``S(w0 - (t/beta_t) gbar_t, (t/beta_t) lam)``, ``beta_t = gamma sqrt(t)``: Eq. (20), iRDA.

    The closed-form minimizer of Eq. (19), ``<gbar_t, w> + beta_t/(2t) ||w - w0||^2 +
    lam ||w||_1``; ``anchor=None`` means ``w0 = 0`` (Eq. (28) of Algorithm 1).

    With ``out`` (what :class:`RDA` passes: the parameter itself), the same operations are
    written into ``out`` in place, without temporaries, and ``out`` is returned; the values are
    exactly those of ``out=None`` (only a zero may come out as -0.0, see
    :func:`~replib.sparsity.prox.soft_threshold_`). ``out`` must not overlap ``anchor`` or
    ``grad_avg``.
    """
    c = math.sqrt(t) / gamma  # t / beta_t
    if out is None:
        center = -c * grad_avg if anchor is None else anchor - c * grad_avg
        return soft_threshold(center, c * lam)
    if anchor is None:
        torch.mul(grad_avg, -c, out=out)
    else:
        torch.mul(grad_avg, c, out=out)
        torch.sub(anchor, out, out=out)
    if lam != 0:  # S(x, 0) = x exactly
        soft_threshold_(out, c * lam)
    return out


class RDA(Optimizer):
    """Regularized dual averaging with ``h(w) = ||w - w0||^2 / 2``: Step 1 of Algorithm 1, iRDA.

    Per parameter: ``t <- t + 1``; ``gbar_t = (t-1)/t gbar_{t-1} + g_t / t`` (Eq. (27));
    ``w_{t+1} = S(w0 - (t/beta_t) gbar_t, (t/beta_t) lam)`` with ``beta_t = gamma sqrt(t)``
    (Eqs. (20), (28)). There is no learning rate: ``t / beta_t = sqrt(t) / gamma`` plays its
    role, and the threshold ``lam sqrt(t) / gamma`` grows (Sec. 3.3).

    ``anchor`` (per group) resolves the paper's ambiguity about w0:

    - ``"zero"``: Algorithm 1 read literally (``w0 = 0``, ``h(w) = ||w||^2``): the random
      initialization ``w1`` only enters through the first gradients; from the first step on,
      the weights are ``-(sqrt(t)/gamma) S(gbar_t, lam)``.
    - ``"init"``: Eq. (20) anchored at the initialization, ``w0 = w1`` (the weights at the
      first ``step()``), the reading under which the initialization scale s of Sec. 3.5 /
      Table 5 acts on every iterate.

    State per parameter: ``step`` (t), ``grad_avg`` (gbar_t) and, for ``anchor="init"``,
    ``anchor`` (w0). A parameter whose ``.grad`` is None is skipped (its t does not advance).
    """

    def __init__(
        self, params: Params, lam: float, gamma: float = 1.0, anchor: str = "zero"
    ) -> None:
        _check_nonnegative(lam=lam)
        if gamma <= 0:
            raise ValueError(f"gamma must be > 0, got {gamma}")
        if anchor not in ("zero", "init"):
            raise ValueError(f"anchor must be 'zero' or 'init', got {anchor!r}")
        defaults = {"lam": lam, "gamma": gamma, "anchor": anchor, "retraining": False}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Closure = None) -> Tensor | None:
        """One RDA iteration (Eqs. (26)-(28)); in retraining mode Eqs. (29)-(31) (see IRDA)."""
        loss = _closure_loss(closure)
        for group in self.param_groups:
            for p in _params_with_grad(group):
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["grad_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    if group["anchor"] == "init":
                        state["anchor"] = p.detach().clone()
                grad = p.grad
                keep = None
                if group["retraining"]:
                    # Eq. (29): (g_t)_j = 0 where (w_t)_j = 0. A float mask (1.0 where w != 0)
                    # is several times faster on the CPU than a bool one; p, overwritten by
                    # the closed form below anyway, holds the masked gradient meanwhile.
                    keep = torch.ne(p, 0, out=torch.empty_like(p))
                    grad = torch.mul(grad, keep, out=p)
                t = state["step"] + 1
                state["step"] = t
                grad_avg = state["grad_avg"]
                grad_avg.mul_((t - 1) / t).add_(grad, alpha=1 / t)  # Eq. (27) / (30)
                # Eq. (20) written straight into p (the values of rda_step without out)
                rda_step(state.get("anchor"), grad_avg, t, group["lam"], group["gamma"], out=p)
                if keep is not None:
                    p.mul_(keep)  # the zero pattern of Step 1 stays frozen
        return loss


class IRDA(RDA):
    """Iterative RDA, Algorithm 1 of the iRDA paper: :class:`RDA` (Step 1) plus retraining.

    After Step 1, call :meth:`start_retraining`: Step 2 (Eqs. (29)-(31), Sec. 3.6) continues
    the same RDA recursion (t and gbar carry on) but sets the gradient of every zero weight to
    zero and keeps zero weights exactly zero, so only the nonzero weights are updated. Weights
    that become zero during Step 2 are frozen from then on. For retraining with plain SGD on
    the frozen pattern instead, use :class:`MaskedSGD`.
    """

    def start_retraining(self) -> None:
        """Switch every group to Step 2 of Algorithm 1 (stored in ``param_groups``)."""
        n_zero = n_total = 0
        for group in self.param_groups:
            group["retraining"] = True
            for p in group["params"]:
                n_zero += int((p == 0).sum())
                n_total += p.numel()
        logger.info("iRDA step 2: retraining with %d / %d weights frozen at zero", n_zero, n_total)

    @property
    def retraining(self) -> bool:
        """Whether Step 2 is active (in every group)."""
        return all(group["retraining"] for group in self.param_groups)


class MaskedSGD(torch.optim.SGD):
    """SGD that only updates the weights that were nonzero when it was built (Sec. 3.6, iRDA).

    The zero pattern (``state[p]["mask"]``, 1.0 where the weight was nonzero) is taken at
    construction; gradients are multiplied by it before the SGD step (as in Eq. (29)). That is
    enough to keep zeros exactly zero whatever the momentum, dampening, Nesterov or weight
    decay: at a masked position the weight is 0, so its decay term ``wd * w`` is 0, its
    momentum buffer starts at 0 and only ever receives 0, and the update ``-lr * 0`` leaves 0
    (no second pass over the weights is needed). Use it for "retrain with the zero pattern
    frozen" after any sparsifying stage.
    """

    def __init__(
        self,
        params: Params,
        lr: float,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        super().__init__(
            params,
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
        )
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p]["mask"] = (p.detach() != 0).to(p.dtype)

    def step(self, closure: Closure = None) -> Tensor | None:
        """Masked gradient (Eq. (29)), then the SGD step."""
        loss = _closure_loss(closure)
        with torch.no_grad():
            for group in self.param_groups:
                params = _params_with_grad(group)
                if params:
                    torch._foreach_mul_(
                        [p.grad for p in params], [self.state[p]["mask"] for p in params]
                    )
        super().step()
        return loss


class ProxAdam(torch.optim.Adam):
    """Adam followed by the l1 prox with threshold ``lam * lr``: Eqs. (8)-(11) of the ACNN paper.

    Eqs. (8)-(9) are the (sub)gradient steps of the DDPG actor and critic (we minimize the
    usual DDPG losses, i.e. the actor *ascends* Q as in Eq. (8); Eq. (6) as printed minimizes
    ``Q + ||theta||_1``, a sign slip). Eqs. (10)-(11) soft-threshold with ``lambda * lr``, lr the
    learning rate; we take the group's current Adam ``lr`` (not Adam's per-coordinate effective
    step), so schedulers act on the threshold too.
    """

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        lam: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        _check_nonnegative(lam=lam)
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        _set_group_default(self, "lam", lam)

    def step(self, closure: Closure = None) -> Tensor | None:
        """One Adam step, then ``S(w, lr * lam)`` (Eqs. (10)-(11))."""
        loss = super().step(closure)
        apply_l1_prox(self)
        return loss


def apply_l1_prox(optimizer: Optimizer, lam: float | None = None) -> None:
    """Soft-threshold every parameter (with a gradient) by ``group["lr"] * lam``.

    Eqs. (10)-(11) of the ACNN paper (and Eq. (10) of iRDA) as a function, to call right after
    ``optimizer.step()`` of any optimizer with an ``lr``. ``lam=None`` reads ``group["lam"]``
    (0 when absent).
    """
    for group in optimizer.param_groups:
        group_lam = group.get("lam", 0.0) if lam is None else lam
        if group_lam != 0:
            soft_threshold_(_params_with_grad(group), group["lr"] * group_lam)


def _slimming_update(
    gammas: list[Tensor], xis: list[Tensor], alpha: float, beta: float, lam: float
) -> None:
    """Eq. (8b) and Alg. 1 line 4 of ProxNS on BN scales ``gammas`` and their ``xis`` (in place).

    BN scale vectors are short, so one kernel call per tensor costs far more than the arithmetic:
    when all of them are vectors of one dtype and device (BN scales are), the update runs once on
    their concatenation, which is then copied back (the same element-wise operations in the same
    order, so the same values); otherwise one tensor at a time.
    """
    denom = alpha + beta
    tensors = gammas + xis
    if all(x.dim() == 1 for x in tensors) and len({(x.dtype, x.device) for x in tensors}) == 1:
        sizes = [p.shape[0] for p in gammas]
        pairs = [(torch.cat(gammas), torch.cat(xis))]
    else:
        sizes = None
        pairs = list(zip(gammas, xis))
    for g, x in pairs:
        g.mul_(alpha).add_(x, alpha=beta).div_(denom)  # Eq. (8b)
        x.mul_(alpha).add_(g, alpha=beta).div_(denom)  # Alg. 1 line 4: the argument of S ...
        soft_threshold_(x, lam / denom)  # ... and S
    if sizes is not None:
        g, x = pairs[0]
        torch._foreach_copy_(gammas, g.split(sizes))
        torch._foreach_copy_(xis, x.split(sizes))


class ProximalSlimming(Optimizer):
    """Proximal network slimming (PALM on the BN scales): Algorithm 1 of the ProxNS paper.

    Holds the BatchNorm scaling factors gamma and their auxiliary copies xi (``state[p]["xi"]``,
    saved in the ``state_dict``; the official code keeps xi in a plain list and loses it on
    resume). Call :meth:`step` right **after** the base optimizer's step, every iteration:

    - Eq. (8b) / Alg. 1 line 3: ``gamma <- (alpha gamma + beta xi) / (alpha + beta)``. Applied to
      the gamma that plain SGD with ``lr = 1/alpha`` has just updated, this equals Eq. (8b)
      exactly; with momentum / weight decay the SGD direction replaces the gradient ("SGD or
      variant" in Alg. 1).
    - Alg. 1 line 4: ``xi <- S((alpha xi + beta gamma) / (alpha + beta), lam / (alpha + beta))``
      (the minimizer of Eq. (9)).

    ``alpha = 1 / lr`` is read at every step from the base optimizer's group holding the
    parameter, so it follows the LR schedule (x10 at each drop, as in the paper's Sec. 5.1
    and the official code); or pass a fixed ``alpha`` instead of ``base_optimizer``.
    xi starts as U(xi_init) (official code: U(0.47, 0.53); the paper's text says [0.47, 0.50]);
    gamma = 0.5 at init is the model's job.

    Only xi is exactly sparse during training. :meth:`finalize` sets gamma <- xi so that the
    network uses xi's exact zeros (our reading of "scaling factors equal to zero", Table 1).
    The official code never copies xi into gamma: its saved gamma is the averaged one, small
    but generally nonzero where xi = 0.
    """

    def __init__(
        self,
        params: Params,
        lam: float,
        beta: float,
        base_optimizer: Optimizer | None = None,
        alpha: float | None = None,
        xi_init: tuple[float, float] = (0.47, 0.53),
        generator: torch.Generator | None = None,
    ) -> None:
        _check_nonnegative(lam=lam, beta=beta)
        if (base_optimizer is None) == (alpha is None):
            raise ValueError("give exactly one of base_optimizer (alpha = 1/lr) or alpha")
        super().__init__(params, {"lam": lam, "beta": beta, "alpha": alpha})
        self.base_optimizer = base_optimizer
        lo, hi = xi_init
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                state["xi"] = torch.empty_like(p).uniform_(lo, hi, generator=generator)
                state["step"] = 0

    def _base_lr(self) -> dict[int, float]:
        if self.base_optimizer is None:
            return {}
        return {
            id(q): float(group["lr"])
            for group in self.base_optimizer.param_groups
            for q in group["params"]
        }

    @staticmethod
    def _alpha(p: Tensor, group: dict[str, Any], base_lr: dict[int, float]) -> float:
        """``alpha``: the group's fixed value, else ``1 / lr`` of the base optimizer's group."""
        if group["alpha"] is not None:
            return float(group["alpha"])
        if id(p) not in base_lr:
            raise KeyError("a ProximalSlimming parameter is not in the base optimizer")
        return 1.0 / base_lr[id(p)]

    @torch.no_grad()
    def step(self, closure: Closure = None) -> Tensor | None:
        """Lines 3-4 of Algorithm 1 (after the base optimizer's SGD step)."""
        loss = _closure_loss(closure)
        base_lr = self._base_lr()
        for group in self.param_groups:
            lam, beta = group["lam"], group["beta"]
            # The BN scales are updated together, one bucket per value of alpha.
            by_alpha: dict[float, tuple[list[Tensor], list[Tensor]]] = {}
            for p in group["params"]:
                alpha = self._alpha(p, group, base_lr)
                gammas, xis = by_alpha.setdefault(alpha, ([], []))
                gammas.append(p)
                xis.append(self.state[p]["xi"])
            for alpha, (gammas, xis) in by_alpha.items():
                _slimming_update(gammas, xis, alpha, beta, lam)
                for p in gammas:
                    state = self.state[p]
                    state["step"] += 1
                    state["alpha"] = alpha
        return loss

    def xi(self) -> list[Tensor]:
        """The auxiliary variables xi, one per BN scale tensor (live references)."""
        return [self.state[p]["xi"] for group in self.param_groups for p in group["params"]]

    def zero_masks(self) -> list[Tensor]:
        """``xi == 0`` per BN layer: the channels proximal NS marks for removal."""
        return [x == 0 for x in self.xi()]

    @torch.no_grad()
    def finalize(self) -> int:
        """Set gamma <- xi in every BN layer; return the number of exactly-zero scales."""
        n_zero = 0
        for group in self.param_groups:
            for p in group["params"]:
                p.copy_(self.state[p]["xi"])
                n_zero += int((p == 0).sum())
        logger.info("proximal NS: gamma <- xi, %d scaling factors exactly zero", n_zero)
        return n_zero
