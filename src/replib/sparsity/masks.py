"""Weight masks as ``torch.nn.utils.parametrize`` parametrizations, and rewinding.

Two kinds of mask act on the ``weight`` of conv / linear layers:

- :class:`RelaxedMask`, the lottery paper's relaxed binary mask (Sec. III, Eq. (1)): the layer
  computes with ``m * theta`` where ``m`` in [0, 1]^d is a learnable tensor trained jointly with
  ``theta`` on ``L(x; m * theta) + lambda * R(m)`` (Eq. (2)) by projected gradient: an ordinary
  optimizer step on ``m`` followed by :func:`project_masks_` onto [0, 1]. After each round the
  entries with ``m < alpha`` are pruned (Algorithm 1, step 4; :func:`threshold_masks`).
- :class:`HardMask`, a fixed binary mask (IMP, magnitude pruning, iRDA's retraining stage): the
  layer computes with ``mask * theta``.

Masks are values, as in ShrinkBench: ``dict[str, torch.Tensor]`` of bool tensors keyed by the
*logical* parameter name (``"layer1.0.conv1.weight"``), whether or not the layer is currently
parametrized. Strategies in :mod:`replib.sparsity.prune` return such dicts; :func:`apply_hard_masks`
applies them; :func:`current_masks` reads them back.

Both parametrizations keep a binary ``keep`` pattern, so a relaxed mask that has been thresholded
stays pruned where it was cut: ``RelaxedMask`` computes ``(keep * m) * theta``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

logger = logging.getLogger(__name__)

Masks = dict[str, Tensor]
"""Binary masks keyed by logical parameter name (``"<module>.weight"``), True = kept."""

_PARAM_MARK = ".parametrizations."


class RelaxedMask(nn.Module):
    """Relaxed binary mask ``m in [0, 1]^d`` (lottery paper, Eq. (1)): ``weight = m * theta``.

    ``m`` starts at ``init`` everywhere; the paper's Algorithm 1 takes ``m_0 = 1/2``. Entries with
    ``keep == False`` (pruned by an earlier thresholding round) contribute nothing and get no
    gradient.
    """

    def __init__(
        self,
        shape: torch.Size,
        init: float = 0.5,
        keep: Tensor | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= init <= 1.0:
            raise ValueError(f"init={init} must lie in [0, 1] (the mask is relaxed to [0, 1]^d)")
        self.m = nn.Parameter(torch.full(shape, float(init), dtype=dtype, device=device))
        if keep is None:
            keep = torch.ones(shape, dtype=torch.bool, device=device)
        self.register_buffer("keep", keep.to(device=device, dtype=torch.bool).clone())
        with torch.no_grad():
            self.m.mul_(self.keep)

    def forward(self, theta: Tensor) -> Tensor:
        return theta * (self.m * self.keep)


class HardMask(nn.Module):
    """Binary mask as a buffer: ``weight = mask * theta`` (open_lth's ``PrunedModel``)."""

    def __init__(self, mask: Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask.to(torch.bool).clone())

    def forward(self, theta: Tensor) -> Tensor:
        return theta * self.mask


# --------------------------------------------------------------------------- layer lookup


def prunable_layers(
    model: nn.Module, layers: Iterable[nn.Module | str] | None = None
) -> dict[str, nn.Module]:
    """Map logical weight name -> layer for the layers whose ``weight`` may be masked.

    ``layers`` may list modules or module names; by default ``model.prunable_layers()`` when the
    model defines it (every ``replib.models`` net does), else every ``nn.Conv2d``/``nn.Linear``.
    Biases and BN parameters are never included.
    """
    names = {id(mod): name for name, mod in model.named_modules()}
    if layers is None:
        if hasattr(model, "prunable_layers"):
            layers = model.prunable_layers()
        else:
            layers = [
                m
                for m in model.modules()
                if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))
            ]
    out: dict[str, nn.Module] = {}
    for layer in layers:
        if isinstance(layer, str):
            name, module = layer, model.get_submodule(layer)
        else:
            if id(layer) not in names:
                raise ValueError(f"layer {layer!r} is not a submodule of the model")
            name, module = names[id(layer)], layer
        out[f"{name}.weight" if name else "weight"] = module
    return out


def _module_of(model: nn.Module, weight_name: str) -> nn.Module:
    module_name = weight_name.rsplit(".", 1)[0] if "." in weight_name else ""
    if not weight_name.endswith("weight"):
        raise ValueError(f"mask key {weight_name!r} must name a '.weight' parameter")
    return model.get_submodule(module_name)


def _mask_of(module: nn.Module) -> RelaxedMask | HardMask | None:
    if not parametrize.is_parametrized(module, "weight"):
        return None
    plist = module.parametrizations["weight"]
    for p in plist:
        if isinstance(p, (RelaxedMask, HardMask)):
            return p
    return None


def _masked_layers(model: nn.Module) -> dict[str, tuple[nn.Module, RelaxedMask | HardMask]]:
    out = {}
    for name, module in model.named_modules():
        mask = _mask_of(module)
        if mask is not None:
            out[f"{name}.weight" if name else "weight"] = (module, mask)
    return out


def theta(module: nn.Module) -> Tensor:
    """The unmasked weight ``theta`` of a layer (its ``weight`` if not parametrized)."""
    if parametrize.is_parametrized(module, "weight"):
        return module.parametrizations["weight"].original
    return module.weight


# --------------------------------------------------------------------------- relaxed masks


def add_relaxed_masks(
    model: nn.Module, layers: Iterable[nn.Module | str] | None = None, init: float = 0.5
) -> list[nn.Parameter]:
    """Register a :class:`RelaxedMask` on every prunable weight (lottery paper, Eqs. (1)-(2)).

    ``init`` is ``m_0`` (Algorithm 1: 1/2). A layer that already carries a :class:`HardMask`
    keeps its binary pattern as the relaxed mask's ``keep``; one that already carries a relaxed
    mask is left as it is. Returns the mask parameters (see :func:`mask_parameters`).
    """
    for name, module in prunable_layers(model, layers).items():
        existing = _mask_of(module)
        if isinstance(existing, RelaxedMask):
            continue
        keep = None
        if isinstance(existing, HardMask):
            keep = existing.mask
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
        w = module.weight
        parametrize.register_parametrization(
            module, "weight", RelaxedMask(w.shape, init, keep, dtype=w.dtype, device=w.device)
        )
        logger.debug("relaxed mask on %s (%d entries)", name, w.numel())
    return mask_parameters(model)


def mask_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The relaxed-mask tensors ``m`` of the model, in module order (their own param group)."""
    return [p.m for _, (_, p) in _masked_layers(model).items() if isinstance(p, RelaxedMask)]


def network_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every parameter except the relaxed masks: ``theta``, biases, BN (for the other group)."""
    masks = {id(p) for p in mask_parameters(model)}
    return [p for p in model.parameters() if id(p) not in masks]


def mask_penalty(model: nn.Module, penalty: Callable[[Tensor], Tensor]) -> Tensor:
    """``R(m) = sum over layers of penalty(m_layer)``, the regularizer of Eq. (2) (Eq. (3)).

    ``penalty`` is e.g. ``penalties.l1`` (``r_1(m) = m``) or ``lambda m: log_reg(m, eps)``
    (``r_eps``); pruned entries (``keep == False``) are excluded: the penalty is applied to
    ``m * keep``, whose pruned entries are 0, so they add ``penalty(0) = 0`` (true of ``r_1`` and
    ``r_eps``, which this requires) and get exactly zero gradient, as if they were left out. (The
    boolean gather ``m[keep]`` it replaces gives the same gradients but cost, with its scatter in
    the backward pass, more than half of a VGG-11 search step on a CPU.)
    """
    params = [p for _, (_, p) in _masked_layers(model).items() if isinstance(p, RelaxedMask)]
    if not params:
        raise ValueError("the model has no relaxed masks; call add_relaxed_masks first")
    return sum(penalty(p.m * p.keep) for p in params)


@torch.no_grad()
def project_masks_(model: nn.Module) -> None:
    """Projection onto the box [0, 1]^d of Eq. (1), applied after every optimizer step.

    Pruned entries (``keep == False``) are set back to 0.
    """
    for _, (_, p) in _masked_layers(model).items():
        if isinstance(p, RelaxedMask):
            p.m.clamp_(0.0, 1.0).mul_(p.keep)


@torch.no_grad()
def threshold_masks(model: nn.Module, alpha: float) -> Masks:
    """Algorithm 1, step 4 of the lottery paper: prune every entry with ``m < alpha``.

    Returns the kept pattern ``m >= alpha`` (and not already pruned) as bool masks; apply it with
    :func:`apply_hard_masks`, which also sets the pruned ``m`` to 0 as the algorithm does.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha={alpha} must lie in (0, 1)")
    return {
        name: (p.m >= alpha) & p.keep
        for name, (_, p) in _masked_layers(model).items()
        if isinstance(p, RelaxedMask)
    }


def remove_masks(model: nn.Module, leave_masked: bool = True) -> None:
    """Remove every mask parametrization.

    With ``leave_masked`` the layer's plain ``weight`` becomes the masked weight (``m * theta`` or
    ``mask * theta``); otherwise it goes back to ``theta``.
    """
    for _, (module, _) in _masked_layers(model).items():
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=leave_masked)


# --------------------------------------------------------------------------- hard masks


@torch.no_grad()
def apply_hard_masks(model: nn.Module, masks: Mapping[str, Tensor]) -> None:
    """Make each named layer compute with ``mask * theta``.

    A layer without a mask gets a :class:`HardMask`; one with a hard mask gets its buffer
    replaced; one with a :class:`RelaxedMask` gets ``keep = mask`` and ``m`` zeroed where pruned
    (Algorithm 1, step 4). ``theta`` itself is not changed, so a later rewind can restore it.
    """
    for name, mask in masks.items():
        module = _module_of(model, name)
        w = module.weight
        if mask.shape != w.shape:
            raise ValueError(
                f"mask for {name} has shape {tuple(mask.shape)}, weight has {tuple(w.shape)}"
            )
        mask = mask.to(device=w.device, dtype=torch.bool)
        existing = _mask_of(module)
        if isinstance(existing, HardMask):
            existing.mask.copy_(mask)
        elif isinstance(existing, RelaxedMask):
            existing.keep.copy_(mask)
            existing.m.mul_(mask)
        else:
            parametrize.register_parametrization(module, "weight", HardMask(mask))


def current_masks(model: nn.Module) -> Masks:
    """The binary pattern now in force: ``HardMask.mask`` or ``RelaxedMask.keep`` per layer."""
    out = {}
    for name, (_, p) in _masked_layers(model).items():
        out[name] = (p.mask if isinstance(p, HardMask) else p.keep).clone()
    return out


# --------------------------------------------------------------------------- rewinding


def _logical_key(key: str) -> str | None:
    """State-dict key -> logical name; ``None`` for mask state (``m``, ``keep``, ``mask``)."""
    if _PARAM_MARK not in key:
        return key
    owner, rest = key.split(_PARAM_MARK, 1)
    tensor_name, tail = rest.split(".", 1)
    if tail == "original":
        return f"{owner}.{tensor_name}"
    return None


def snapshot(model: nn.Module) -> dict[str, Tensor]:
    """A copy of every parameter and buffer except mask state, under logical names.

    ``theta`` is stored as ``"<layer>.weight"`` whether or not the layer is parametrized, so a
    snapshot taken at initialization (before any mask exists) rewinds a masked model later.
    Take it at iteration 0 for the original lottery ticket, or at iteration k for rewinding to
    an early iterate (the lottery paper's ref. [11]).
    """
    out = {}
    for key, value in model.state_dict().items():
        logical = _logical_key(key)
        if logical is not None:
            out[logical] = value.detach().clone()
    return out


@torch.no_grad()
def rewind(
    model: nn.Module, state: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None = None
) -> None:
    """Reset every weight, bias and BN statistic to ``state`` and keep (or set) the masks.

    This is the rewinding step of IMP and of Algorithm 1 (``theta = theta_0, m = m_{t-1}``):
    relaxed-mask values ``m`` and binary patterns are left untouched, then ``masks`` (if given) is
    applied with :func:`apply_hard_masks`, so the effective weights are ``mask * theta_0``.
    """
    for key, value in model.state_dict().items():
        logical = _logical_key(key)
        if logical is None:
            continue
        if logical not in state:
            raise KeyError(f"snapshot has no entry {logical!r}")
        value.copy_(state[logical])
    if masks is not None:
        apply_hard_masks(model, masks)
