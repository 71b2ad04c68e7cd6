"""Pruning strategies. Each returns masks (values); applying them is a separate step.

- :func:`magnitude_masks`: global, layer-wise and random pruning to a compression rate
  (l0 paper, Sec. 4.1; compression = total / remaining weights).
- :func:`imp_round`, :func:`iterative_magnitude_pruning`: iterative magnitude pruning with
  rewinding (lottery paper, Sec. II and Fig. 1; open_lth's ``sparse_global`` convention).
- :func:`neuron_l1_scores`, :func:`prune_neurons`: ACNN's neuron ranking, Eqs. (1)-(2).
- :func:`bn_channel_masks`: network-slimming channel selection by ``|gamma|`` (proximal NS:
  channels whose scaling factor is exactly zero).

Weight masks are ``dict[str, bool Tensor]`` keyed by ``"<layer>.weight"`` (see
:mod:`replib.sparsity.masks`); channel masks are keyed by BN module name; neuron selections map
a ``nn.Linear`` name to the indices of its *input* features that are kept.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from replib.sparsity.masks import Masks, prunable_layers, rewind, snapshot

logger = logging.getLogger(__name__)

Scope = Literal["global", "layerwise", "random"]


def round_half_up(x: float) -> int:
    """Nearest integer, halves rounded up (not Python's round-half-to-even)."""
    return int(math.floor(x + 0.5))


def _weights(
    model_or_params: nn.Module | Mapping[str, Tensor],
    layers: Iterable[nn.Module | str] | None = None,
) -> dict[str, Tensor]:
    if isinstance(model_or_params, nn.Module):
        return {
            name: mod.weight.detach()
            for name, mod in prunable_layers(model_or_params, layers).items()
        }
    return {name: w.detach() for name, w in model_or_params.items()}


def _top_k_mask(scores: Tensor, k: int) -> Tensor:
    """Bool mask keeping the ``k`` largest scores; ties go to the lower flat index."""
    flat = scores.flatten()
    order = torch.argsort(flat, descending=True, stable=True)
    keep = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    keep[order[:k]] = True
    return keep.view_as(scores)


def magnitude_masks(
    model_or_params: nn.Module | Mapping[str, Tensor],
    compression: float,
    scope: Scope = "global",
    generator: torch.Generator | None = None,
    layers: Iterable[nn.Module | str] | None = None,
) -> Masks:
    """Magnitude pruning to ``compression`` = total / remaining weights (l0 paper, Sec. 4.1).

    - ``"global"``: keep the ``round(N / compression)`` largest ``|w|`` over all prunable layers
      together (one threshold for the whole network).
    - ``"layerwise"``: keep the ``round(n_l / compression)`` largest ``|w|`` of each layer.
    - ``"random"``: keep ``round(n_l / compression)`` weights of each layer chosen uniformly at
      random (``generator`` for reproducibility).

    Rounding is half-up; ties in ``|w|`` are broken by lower flat index (global: by layer order,
    then flat index), so the kept count is exact. Only conv / linear ``weight`` tensors are
    prunable by default (``layers`` to choose others); a mapping of tensors may be passed instead
    of a model.
    """
    if compression < 1.0:
        raise ValueError(f"compression={compression} must be >= 1 (total / remaining)")
    weights = _weights(model_or_params, layers)
    if scope == "global":
        names = list(weights)
        scores = torch.cat([weights[n].abs().flatten().float().cpu() for n in names])
        keep = _top_k_mask(scores, round_half_up(scores.numel() / compression))
        out, start = {}, 0
        for n in names:
            w = weights[n]
            out[n] = keep[start : start + w.numel()].view(w.shape).to(w.device)
            start += w.numel()
        return out
    if scope == "layerwise":
        return {
            n: _top_k_mask(w.abs(), round_half_up(w.numel() / compression))
            for n, w in weights.items()
        }
    if scope == "random":
        out = {}
        for n, w in weights.items():
            perm = torch.randperm(w.numel(), generator=generator)
            keep = torch.zeros(w.numel(), dtype=torch.bool)
            keep[perm[: round_half_up(w.numel() / compression)]] = True
            out[n] = keep.view(w.shape).to(w.device)
        return out
    raise ValueError(f"scope={scope!r} is not known; allowed: 'global', 'layerwise', 'random'")


# --------------------------------------------------------------------------- IMP


def imp_prune_count(remaining: int, rate: float) -> int:
    """open_lth's ``sparse_global`` count: ``ceil(rate * remaining)`` weights are pruned."""
    return math.ceil(rate * remaining)


def imp_round(
    model: nn.Module,
    masks: Mapping[str, Tensor] | None = None,
    rate: float = 0.2,
    layers: Iterable[nn.Module | str] | None = None,
) -> Masks:
    """One round of iterative magnitude pruning (Frankle & Carbin; lottery paper, Fig. 1).

    Among the weights still kept by ``masks`` (all, if ``None``), prune the
    ``ceil(rate * remaining)`` smallest ``|w|`` globally (open_lth's convention), so exactly
    ``remaining - ceil(rate * remaining)`` stay. Ties are broken by layer order, then flat index.
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"rate={rate} must lie in [0, 1)")
    weights = _weights(model, layers)
    if masks is None:
        masks = {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items()}
    if set(masks) != set(weights):
        raise ValueError(f"masks cover {sorted(masks)}, prunable weights are {sorted(weights)}")
    names = list(weights)
    alive = torch.cat([masks[n].flatten().cpu() for n in names])
    scores = torch.cat([weights[n].abs().flatten().float().cpu() for n in names])
    remaining = int(alive.sum())
    keep_count = remaining - imp_prune_count(remaining, rate)
    scores = torch.where(alive, scores, torch.full_like(scores, -1.0))  # dead never re-enter
    keep = _top_k_mask(scores, keep_count)
    out, start = {}, 0
    for n in names:
        w = weights[n]
        out[n] = keep[start : start + w.numel()].view(w.shape).to(w.device)
        start += w.numel()
    logger.info("IMP round: %d -> %d weights kept", remaining, keep_count)
    return out


def iterative_magnitude_pruning(
    model: nn.Module,
    train: Callable[[nn.Module, int], None],
    rounds: int,
    rate: float = 0.2,
    rewind_state: Mapping[str, Tensor] | None = None,
    train_final: bool = True,
) -> list[Masks]:
    """IMP with rewinding: ``rounds`` x (train, prune ``rate`` of the rest, rewind).

    ``train(model, round_index)`` trains in place (it builds its own optimizer, since masks add
    parametrizations). ``rewind_state`` is a :func:`~replib.sparsity.masks.snapshot`, by default
    taken now (rewinding to ``theta_0``); take it after k iterations of the first training for
    late rewinding. After the last pruning the ticket is trained once more if ``train_final``.
    Returns the masks after each round.
    """
    state = snapshot(model) if rewind_state is None else rewind_state
    masks: Masks | None = None
    history: list[Masks] = []
    for r in range(rounds):
        train(model, r)
        masks = imp_round(model, masks, rate)
        rewind(model, state, masks)
        history.append({n: m.clone() for n, m in masks.items()})
    if train_final:
        train(model, rounds)
    return history


# --------------------------------------------------------------------------- ACNN neurons

Direction = Literal["outgoing", "incoming"]


def neuron_l1_scores(linear: nn.Linear, direction: Direction = "outgoing") -> Tensor:
    """``||W_n||_1`` of ACNN Eq. (1).

    ``"outgoing"``: one score per *input* feature of ``linear``, the L1 norm of the weights
    leaving it (column sums of ``|W|``). ``"incoming"``: one score per *output* neuron of
    ``linear``, the L1 norm of the weights entering it (row sums of ``|W|``, bias excluded).
    """
    w = linear.weight.detach().abs()
    if direction == "outgoing":
        return w.sum(dim=0)
    if direction == "incoming":
        return w.sum(dim=1)
    raise ValueError(f"direction={direction!r} is not known; allowed: 'outgoing', 'incoming'")


def linear_chain(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    """The ``nn.Linear`` layers of an MLP in forward order (``hidden_layers()`` if defined)."""
    names = {id(m): n for n, m in model.named_modules()}
    layers = (
        model.hidden_layers()
        if hasattr(model, "hidden_layers")
        else [m for m in model.modules() if isinstance(m, nn.Linear)]
    )
    chain = [(names[id(m)], m) for m in layers]
    for (_, a), (nb, b) in zip(chain[:-1], chain[1:]):
        if a.out_features != b.in_features:
            raise ValueError(
                f"{nb} takes {b.in_features} features, previous layer gives "
                f"{a.out_features}: not a chain of Linear layers"
            )
    return chain


def neurons_to_prune(n: int, fraction: float) -> int:
    """ACNN Eq. (2): ``a_t * n`` neurons are pruned (half-up), at most ``n - 1``."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction={fraction} must lie in [0, 1]")
    return min(round_half_up(fraction * n), n - 1)


def prune_neurons(
    model: nn.Module,
    fractions: Sequence[float],
    include_inputs: bool = True,
    direction: Direction = "outgoing",
) -> dict[str, Tensor]:
    """ACNN Eqs. (1)-(2): in each neuron layer drop the ``a_t`` fraction with smallest L1 norm.

    Neuron layers are the input features (if ``include_inputs``; the "kept input features" of
    the ACNN tables, e.g. 219 of 784 in 219-81-43) followed by each hidden layer, so
    ``fractions`` has one entry per ``nn.Linear`` (or one fewer without inputs). The paper only
    says "the L1 norm of each neuron"; we read it as the norm of the neuron's *outgoing*
    weights, the only reading that also covers input features (which have no incoming weights)
    and the one AMC uses. ``direction="incoming"`` ranks hidden neurons by their incoming
    weights instead (input features are still ranked by outgoing weights).

    Returns ``{linear_name: kept input indices (sorted)}`` for every ``nn.Linear`` whose input
    is a neuron layer; at least one neuron per layer is always kept.
    """
    chain = linear_chain(model)
    targets = chain if include_inputs else chain[1:]
    if len(fractions) != len(targets):
        raise ValueError(
            f"got {len(fractions)} fractions for {len(targets)} neuron layers "
            f"({[n for n, _ in targets]})"
        )
    kept: dict[str, Tensor] = {}
    for (name, layer), frac in zip(targets, fractions):
        idx = [n for n, _ in chain].index(name)
        if direction == "incoming" and idx > 0:
            scores = neuron_l1_scores(chain[idx - 1][1], "incoming")
        else:
            scores = neuron_l1_scores(layer, "outgoing")
        n = scores.numel()
        n_keep = n - neurons_to_prune(n, frac)
        order = torch.argsort(scores, descending=True, stable=True)
        kept[name] = torch.sort(order[:n_keep]).values
    return kept


def neuron_masks(model: nn.Module, kept: Mapping[str, Tensor]) -> Masks:
    """Weight masks equivalent to a neuron selection: zero the outgoing weights of dropped neurons.

    For each ``nn.Linear`` named in ``kept``, the columns of its weight not in ``kept[name]``
    are masked. The masked network computes exactly what :func:`~replib.sparsity.shrink.shrink_mlp`
    computes after physical removal, for any activation function.
    """
    out = {}
    for name, idx in kept.items():
        w = _weights(model, [name])[f"{name}.weight"]
        mask = torch.zeros_like(w, dtype=torch.bool)
        mask[:, idx.to(w.device)] = True
        out[f"{name}.weight"] = mask
    return out


# --------------------------------------------------------------------------- BN channels


def _batchnorms(model: nn.Module, layers: Iterable[str] | None) -> dict[str, nn.Module]:
    if layers is not None:
        return {n: model.get_submodule(n) for n in layers}
    return {
        n: m
        for n, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine
    }


@torch.no_grad()
def bn_channel_masks(
    model: nn.Module,
    threshold: float = 0.0,
    percent: float | None = None,
    layers: Iterable[str] | None = None,
    scales: Mapping[str, Tensor] | None = None,
) -> dict[str, Tensor]:
    """Network-slimming channel selection by ``|gamma|``, the BN scaling factor of Eq. (1) of
    the proximal NS paper (removal of the channels whose factor is zero: its Sec. 5.2).

    - ``percent=None``: keep channels with ``|gamma| > threshold``. The default ``0.0`` keeps
      every channel whose scaling factor is not exactly zero, the proximal NS rule (its prox
      step sets unneeded scaling factors to exactly 0, so no threshold has to be tuned).
    - ``percent=p``: prune the ``round(p * total)`` channels with the smallest ``|gamma|`` over
      all BN layers together (original network slimming's global percentile; ties by layer
      order, then channel index). The official scripts prune all channels with
      ``|gamma| <= sorted[int(total * p)]``, i.e. ``int(total * p) + 1`` or more (ties).

    A layer is never emptied: if every channel of a BN layer would go, the one with the largest
    ``|gamma|`` is kept (largest ``|beta|`` if all ``gamma`` are 0; then the lowest index).
    ``scales`` replaces ``gamma`` by other per-channel factors keyed by BN name, e.g. proximal
    NS's sparse copy ``xi`` (Algorithm 1, step 4, soft-thresholded to exact zeros).
    Returns ``{bn_name: bool tensor}``, True = kept.
    """
    bns = _batchnorms(model, layers if scales is None else (layers or list(scales)))
    source = {n: bn.weight for n, bn in bns.items()} if scales is None else scales
    gammas = {n: source[n].detach().abs().float().cpu() for n in bns}
    if percent is None:
        masks = {n: g > threshold for n, g in gammas.items()}
    else:
        if not 0.0 <= percent < 1.0:
            raise ValueError(f"percent={percent} must lie in [0, 1)")
        scores = torch.cat(list(gammas.values()))
        keep = _top_k_mask(scores, scores.numel() - round_half_up(percent * scores.numel()))
        masks, start = {}, 0
        for n, g in gammas.items():
            masks[n] = keep[start : start + g.numel()]
            start += g.numel()
    for n, mask in masks.items():
        if not mask.any():
            g, b = gammas[n], bns[n].bias.detach().abs().float().cpu()
            best = int(torch.argmax(g)) if g.max() > 0 else int(torch.argmax(b))
            mask[best] = True
            logger.info("%s would lose every channel; keeping channel %d", n, best)
    return {n: m.to(bns[n].weight.device) for n, m in masks.items()}


@torch.no_grad()
def zero_bn_channels_(model: nn.Module, channel_masks: Mapping[str, Tensor]) -> None:
    """Switch masked channels off: set BN ``gamma`` and ``beta`` to 0 where the mask is False.

    This is the "masked model" that :func:`~replib.sparsity.shrink.shrink_channels` reproduces
    exactly: a channel with gamma = beta = 0 outputs 0 after the BN (and after ReLU), so it
    contributes nothing downstream. Note that a channel with gamma = 0 but beta != 0 outputs the
    constant relu(beta); network slimming discards that constant when it prunes, and so do we.
    """
    for name, mask in channel_masks.items():
        bn = model.get_submodule(name)
        off = ~mask.to(bn.weight.device)
        bn.weight[off] = 0.0
        bn.bias[off] = 0.0
