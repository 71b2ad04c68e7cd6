"""The l0 paper's compression scheme: combined l2-l0 training, weight pruning, fine-tuning.

de Resende Oliveira, Batista & Seara, "On the compression of neural networks using l0-norm
regularization and weight pruning" (paper text: ``shared/papers/l0-norm-weight-pruning.md``).

- :func:`zero_attraction`: the penalization terms of the weight updates, Eqs. (5), (7), (14)
  (Fig. 1).
- :func:`layer_coefs` and :func:`make_penalty`: the regularized objective of Eq. (1) with
  ``Omega = alpha_l2 ||w||_2^2 + alpha_l0 ||w||'_0`` (Sec. 3.3), whose gradient-descent update
  is Eq. (15); per-layer coefficients follow the paper's two hyperparameter strategies
  (Sec. 4.2): NORM (layer-size normalized alphas, three global values) and SEP (individual
  alpha_l2, alpha_l0 and beta for each layer). The l2-only, l1-only and l0-only objectives of
  Experiment 1 (Sec. 4.1) are the same function with the other alphas at zero.
- :func:`prune_copy`, :func:`finetune`, :func:`prune_curve`: pruning of a trained network to a
  list of compression rates (global / layer-wise / random, Sec. 4.1) and fine-tuning of the
  surviving weights with the zero pattern frozen.
- :func:`operating_point`, :func:`error_at`: reading a Table 1 / Table 2 entry off a curve;
  :func:`chance_gate`: an accuracy ordering among networks all at chance is not judged.

Conventions (each a choice where the paper is silent, stated in the notebooks):

- The penalized set ``phi`` of Eq. (4) is the weight of every conv and linear layer (biases and
  BN parameters are not penalized and not pruned; they are counted in "parameters incl. biases").
- The compression rate is prunable weights / nonzero prunable weights (Table 1's "x").
- NORM's "layer-size normalized" alphas: ``alpha_layer = alpha * factor(n_layer)``, for
  alpha_l2 and alpha_l0 both (Sec. 4.2: "layer-size normalized values for alpha_l2 and
  alpha_l0"), ``n_layer`` the layer's number of weights. ``"sqrt"`` follows the authors'
  public Keras script: ``sqrt(n / n_ref)`` with ``n_ref`` = 2,097,152 for conv and 524,288 for
  dense layers (references.md, (D)); two differences from it: the script scales only
  alpha_l0, and its conv fan (``prod(kernel.shape[1:])`` of a Keras ``(kh, kw, in, out)``
  kernel) leaves out the kernel height, so its conv factors are ours divided by ``sqrt(kh)``.
  ``"script"`` is the script's own scaling, for comparison: alpha_l0 only, times
  ``sqrt(fan / n_ref)`` with the script's fan (conv: ``n / kh``). ``"mean"`` is the
  literal reading of "normalized by the layer size": ``n_ref / n`` (each layer's penalty is a
  mean, scaled so that a layer of ``n_ref`` weights gets ``alpha``). ``"none"``: no scaling.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from .data import Split
from .metrics import evaluate
from .sparsity import masks as masks_mod
from .sparsity.penalties import l0_exp, l0_exp_grad, l1, l1_grad, l2, l2_grad
from .sparsity.prune import magnitude_masks, round_half_up

log = logging.getLogger(__name__)

REGS = ("none", "l2", "l1", "l0", "l2l0")
STRATEGIES = ("plain", "norm", "sep")
SIZE_NORMS = ("none", "sqrt", "mean")  # factors of a layer's size alone (norm_factor)
NORMS = SIZE_NORMS + ("script",)
SCOPES = ("global", "layerwise", "random")
FT_PENALTIES = ("none", "l2", "same")
# Reference layer sizes of the authors' Keras script (references.md, (D)).
SQRT_REF = {"conv": 2_097_152, "linear": 524_288}


def _check(name: str, value, allowed: Sequence) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not known; allowed values: {list(allowed)}")


# --------------------------------------------------------------------------- Fig. 1


def zero_attraction(w: Tensor, reg: str, eta: float, alpha: float, beta: float = 1.0) -> Tensor:
    """The penalization term a norm adds to the weight update (Sec. 3.2, Fig. 1).

    - ``"l2"``: ``-2 eta alpha w``, Eq. (5);
    - ``"l1"``: ``-eta alpha sign(w)``, Eq. (7);
    - ``"l0"``: ``-eta alpha beta sign(w) exp(-beta |w|)``, Eq. (14).
    """
    _check("reg", reg, ("l2", "l1", "l0"))
    if eta <= 0 or alpha < 0:
        raise ValueError(f"eta={eta} must be > 0 and alpha={alpha} >= 0")
    if reg == "l2":
        return -eta * alpha * l2_grad(w)
    if reg == "l1":
        return -eta * alpha * l1_grad(w)
    if beta < 1:
        raise ValueError(f"beta={beta} must be >= 1 (Eq. (10))")
    return -eta * alpha * l0_exp_grad(w, beta)


# --------------------------------------------------------------------------- the objective


@dataclass(frozen=True)
class LayerCoef:
    """Penalty coefficients of one layer's weight: ``a2 ||w||^2 + a1 ||w||_1 + a0 ||w||'_0``."""

    name: str
    kind: str  # conv | linear
    n: int
    alpha_l2: float
    alpha_l1: float
    alpha_l0: float
    beta: float


def layer_info(model: nn.Module) -> list[tuple[str, str, int]]:
    """``(weight name, "conv" | "linear", number of weights)`` of each prunable layer, in order."""
    out = []
    for name, mod in masks_mod.prunable_layers(model).items():
        kind = "conv" if isinstance(mod, nn.Conv2d) else "linear"
        out.append((name, kind, mod.weight.numel()))
    return out


def norm_factor(n: int, kind: str, norm: str) -> float:
    """NORM's layer-size factor (module docstring): 1, ``sqrt(n / n_ref)`` or ``n_ref / n``.

    ``norm="script"`` is not a factor of the layer's size alone (it needs the kernel's shape
    and scales only ``alpha_l0``); :func:`layer_coefs` computes it, with ``"sqrt"`` of the
    script's fan.
    """
    _check("norm", norm, SIZE_NORMS)
    _check("kind", kind, tuple(SQRT_REF))
    if n < 1:
        raise ValueError(f"n={n} must be >= 1")
    if norm == "none":
        return 1.0
    ref = SQRT_REF[kind]
    return math.sqrt(n / ref) if norm == "sqrt" else ref / n


def layer_coefs(
    model: nn.Module,
    reg: str = "l2l0",
    strategy: str = "norm",
    *,
    alpha_l2: float = 0.0,
    alpha_l1: float = 0.0,
    alpha_l0: float = 0.0,
    beta: float = 1.0,
    norm: str = "sqrt",
    sep_alpha_l2: Sequence[float] = (),
    sep_alpha_l0: Sequence[float] = (),
    sep_beta: Sequence[float] = (),
) -> list[LayerCoef]:
    """Per-layer penalty coefficients for a regularizer and a hyperparameter strategy.

    ``reg`` selects which terms are on (``"l2"``: Eq. (4); ``"l1"``: Eq. (6); ``"l0"``:
    Eq. (11); ``"l2l0"``: Sec. 3.3; ``"none"``). ``strategy``:

    - ``"plain"``: the same ``alpha``'s and ``beta`` for every layer (Experiment 1);
    - ``"norm"``: NORM, Sec. 4.2: ``alpha_l2`` and ``alpha_l0`` times :func:`norm_factor`,
      one global ``beta``; ``alpha_l1`` is normalized the same way. With ``norm="script"``
      only ``alpha_l0`` is scaled, by ``sqrt(fan / n_ref)`` with the authors' script's fan
      (a conv layer's weights divided by its kernel height), as that script does;
    - ``"sep"``: SEP, Sec. 4.2: ``sep_alpha_l2``, ``sep_alpha_l0``, ``sep_beta`` give one value
      per prunable layer (in ``model.prunable_layers()`` order); ``alpha_l1`` is shared.
    """
    _check("reg", reg, REGS)
    _check("strategy", strategy, STRATEGIES)
    for k, v in (("alpha_l2", alpha_l2), ("alpha_l1", alpha_l1), ("alpha_l0", alpha_l0)):
        if v < 0:
            raise ValueError(f"{k}={v} must be >= 0")
    info = layer_info(model)
    on2, on1, on0 = reg in ("l2", "l2l0"), reg == "l1", reg in ("l0", "l2l0")
    if strategy == "sep":
        for k, vals in (("sep_alpha_l2", sep_alpha_l2), ("sep_alpha_l0", sep_alpha_l0),
                        ("sep_beta", sep_beta)):
            if len(vals) != len(info):
                raise ValueError(f"{k} has {len(vals)} values; strategy='sep' needs one per "
                                 f"prunable layer ({len(info)}: {[n for n, _, _ in info]})")
        a2s, a0s, bs = list(sep_alpha_l2), list(sep_alpha_l0), list(sep_beta)
        a1s = [alpha_l1] * len(info)
    else:
        if strategy == "norm" and norm == "script":
            mods = masks_mod.prunable_layers(model)
            fans = [n // mods[name].weight.shape[2] if kind == "conv" else n
                    for name, kind, n in info]
            f0 = [norm_factor(fan, kind, "sqrt") for fan, (_, kind, _) in zip(fans, info)]
            f = [1.0] * len(info)  # alpha_l2 (and alpha_l1) unscaled
        else:
            f = [norm_factor(n, kind, norm) if strategy == "norm" else 1.0
                 for _, kind, n in info]
            f0 = f
        a2s = [alpha_l2 * x for x in f]
        a1s = [alpha_l1 * x for x in f]
        a0s = [alpha_l0 * x for x in f0]
        bs = [beta] * len(info)
    if on0 and any(b < 1 for b in bs):
        raise ValueError(f"beta={bs} must be >= 1 (Eq. (10))")
    return [LayerCoef(name, kind, n, a2 if on2 else 0.0, a1 if on1 else 0.0,
                      a0 if on0 else 0.0, float(b))
            for (name, kind, n), a2, a1, a0, b in zip(info, a2s, a1s, a0s, bs)]


def penalty_value(model: nn.Module, coefs: Sequence[LayerCoef]) -> Tensor:
    """``sum_l alpha_l2 ||w_l||_2^2 + alpha_l1 ||w_l||_1 + alpha_l0 ||w_l||'_0`` (Eqs. 4, 6, 11)."""
    layers = masks_mod.prunable_layers(model)
    total = torch.zeros((), device=next(model.parameters()).device)
    for c in coefs:
        w = layers[c.name].weight
        if c.alpha_l2:
            total = total + c.alpha_l2 * l2(w)
        if c.alpha_l1:
            total = total + c.alpha_l1 * l1(w)
        if c.alpha_l0:
            total = total + c.alpha_l0 * l0_exp(w, c.beta)
    return total


def make_penalty(coefs: Sequence[LayerCoef]) -> Callable[[nn.Module], Tensor] | None:
    """``penalty(model)`` for :func:`replib.train.fit`; ``None`` when every alpha is zero.

    Added to the mean cross-entropy, its gradient step is exactly Eq. (15) under plain SGD.
    """
    coefs = list(coefs)
    if not any(c.alpha_l2 or c.alpha_l1 or c.alpha_l0 for c in coefs):
        return None
    return lambda model: penalty_value(model, coefs)


def coefs_table(coefs: Sequence[LayerCoef]) -> list[dict]:
    return [asdict(c) for c in coefs]


# --------------------------------------------------------------------------- pruning


def prunable_total(model: nn.Module) -> int:
    return sum(m.weight.numel() for m in masks_mod.prunable_layers(model).values())


def nonzero_weights(model: nn.Module) -> dict[str, int]:
    """Nonzero entries of each prunable weight (the effective weight when masked)."""
    return {n: int((m.weight != 0).sum()) for n, m in masks_mod.prunable_layers(model).items()}


def other_params(model: nn.Module) -> int:
    """Parameters that are never pruned (biases, BN): the rest of :func:`count_params`."""
    prunable = {id(masks_mod.theta(m)) for m in masks_mod.prunable_layers(model).values()}
    return sum(p.numel() for p in model.parameters() if id(p) not in prunable)


def prune_copy(model: nn.Module, compression: float, scope: str = "global",
               seed: int = 0) -> tuple[nn.Module, dict[str, Tensor]]:
    """A copy of ``model`` with its smallest weights zeroed (hard masks attached).

    ``scope`` as in Sec. 4.1: ``"global"`` (GP), ``"layerwise"`` (LP), ``"random"`` (RP);
    exactly ``round(N / compression)`` weights survive (per layer for LP and RP).
    """
    _check("scope", scope, SCOPES)
    gen = torch.Generator().manual_seed(int(seed)) if scope == "random" else None
    masks = magnitude_masks(model, compression, scope=scope, generator=gen)
    pruned = copy.deepcopy(model)
    masks_mod.apply_hard_masks(pruned, masks)
    return pruned, masks


def expected_kept(model: nn.Module, compression: float, scope: str) -> int:
    """How many weights :func:`prune_copy` keeps (the promise the tests check)."""
    sizes = [n for _, _, n in layer_info(model)]
    if scope == "global":
        return round_half_up(sum(sizes) / compression)
    return sum(round_half_up(n / compression) for n in sizes)


# --------------------------------------------------------------------------- curves


def finetune(
    model: nn.Module,
    train: Split,
    *,
    epochs: int,
    make_opt: Callable[[list[nn.Parameter]], torch.optim.Optimizer],
    penalty: Callable[[nn.Module], Tensor] | None,
    batch_size: int,
    seed: int,
    ckpt_dir=None,
    device=None,
    channels_last: bool = False,
    pad: int = 0,
    flip: bool = False,
    desc: str = "finetune",
) -> list[dict]:
    """Retrain a masked model (Sec. 4.1, "fine tuning"): the zero pattern stays frozen.

    The pruned weights are masked by a :class:`~replib.sparsity.masks.HardMask`
    parametrization, so they get no gradient and compute as exact zeros whatever the optimizer;
    the survivors, biases and BN parameters train. A cosine schedule runs over ``epochs``.
    """
    from .train import fit

    if epochs < 1:
        raise ValueError(f"epochs={epochs} must be >= 1")
    opt = make_opt([p for p in model.parameters() if p.requires_grad])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    return fit(model, train, epochs=epochs, optimizer=opt, scheduler=sched,
               batch_size=batch_size, penalty=penalty, seed=seed, ckpt_dir=ckpt_dir,
               device=device, channels_last=channels_last, pad=pad, flip=flip, desc=desc)


def prune_curve(
    model: nn.Module,
    *,
    scopes: Sequence[str],
    compressions: Sequence[float],
    val: Split | None,
    test: Split | None,
    prune_seed: int = 0,
    finetune_fn: Callable[[nn.Module, str, float], list[dict]] | None = None,
    finetune_points: Callable[[str, float], bool] | None = None,
    device=None,
    channels_last: bool = False,
) -> list[dict]:
    """Accuracy versus compression (Figs. 2-6): one row per (scope, compression).

    Each row holds the remaining weights (promised and counted), the validation and test
    accuracy right after pruning, and, where ``finetune_points(scope, c)`` is true, the same
    after ``finetune_fn(pruned_model, scope, c)`` (which must keep the masks in place).
    """
    rows = []
    n_total = prunable_total(model)
    extra = other_params(model)
    for scope in scopes:
        _check("scope", scope, SCOPES)
        for c in compressions:
            pruned, _ = prune_copy(model, float(c), scope, seed=prune_seed)
            kept = expected_kept(model, float(c), scope)
            row = {"scope": scope, "compression": float(c), "kept_promised": kept}
            row.update(_measure(pruned, val, test, device, channels_last, ""))
            if finetune_fn is not None and (finetune_points is None or finetune_points(scope, c)):
                hist = finetune_fn(pruned, scope, float(c))
                row.update(_measure(pruned, val, test, device, channels_last, "ft_"))
                row["ft_train_loss"] = hist[-1]["train_loss"] if hist else None
            nz = row["nonzero"]
            row["compression_actual"] = n_total / nz if nz else float("inf")
            row["params_incl_other"] = nz + extra
            rows.append(row)
            log.info("%s %gx: %s", scope, c, row)
    return rows


def _measure(model: nn.Module, val: Split | None, test: Split | None, device, channels_last,
             prefix: str) -> dict:
    nz = nonzero_weights(model)
    out = {f"{prefix}nonzero": sum(nz.values()),
           f"{prefix}nonzero_per_layer": list(nz.values())}
    if channels_last:
        model.to(memory_format=torch.channels_last)
    for name, split in (("val", val), ("test", test)):
        if split is not None:
            out[f"{prefix}{name}_acc"] = evaluate(model, split, device=device,
                                                  channels_last=channels_last)["acc"]
    if channels_last:
        model.to(memory_format=torch.contiguous_format)
    return out


# --------------------------------------------------------------------------- reading results


def error_at(rows: Sequence[dict], compression: float, scope: str = "global",
             key: str = "ft_test_acc") -> float | None:
    """Error (%) at exactly ``compression`` on a curve (None when the point was not run)."""
    for r in rows:
        if r["scope"] == scope and math.isclose(r["compression"], compression) and \
                r.get(key) is not None:
            return 100.0 * (1.0 - r[key])
    return None


def operating_point(rows: Sequence[dict], max_error: float, scope: str = "global",
                    key: str = "ft_test_acc") -> dict | None:
    """The row of highest compression whose error (%) is at most ``max_error``, or None.

    This is how we read "error / remaining parameters / compression" of a Table 1 entry off
    our curve: the largest compression that is at least as accurate as the paper's entry.
    """
    ok = [r for r in rows if r["scope"] == scope and r.get(key) is not None
          and 100.0 * (1.0 - r[key]) <= max_error + 1e-9]
    if not ok:
        return None
    return max(ok, key=lambda r: r["compression"])


def near_chance(acc: float, chance: float, within: float = 2.0) -> bool:
    """Whether an accuracy (%) lies strictly within ``within`` points of ``chance`` (%)."""
    return abs(acc - chance) < within


def chance_gate(holds: bool, accs: Sequence[float], chance: float,
                within: float = 2.0) -> bool | None:
    """The verdict of an accuracy ordering, or None when the ordering is not informative.

    ``accs`` are the accuracies (%) being ordered (e.g. each penalty's mean accuracy under
    random pruning). When every one of them is within ``within`` points of ``chance``, all the
    networks compared are at chance and their ordering is noise: the claim is inconclusive
    (None, recorded as not run). Otherwise the ordering is judged: ``holds`` is returned.
    """
    accs = list(accs)
    if not accs:
        raise ValueError("accs is empty: nothing to judge")
    if all(near_chance(a, chance, within) for a in accs):
        return None
    return bool(holds)


def weight_histogram(model: nn.Module, bins: Sequence[float]) -> dict:
    """Histogram of ``log10 |w|`` over all prunable weights (zeros in their own count)."""
    ws = torch.cat([m.weight.detach().flatten().abs().float().cpu()
                    for m in masks_mod.prunable_layers(model).values()])
    zeros = int((ws == 0).sum())
    logs = torch.log10(ws[ws > 0])
    edges = torch.tensor(list(bins), dtype=torch.float32)
    counts = torch.histogram(logs.clamp(edges[0], edges[-1]), bins=edges).hist
    return {"edges": edges.tolist(), "counts": counts.long().tolist(), "zeros": zeros}


def small_fraction(model: nn.Module, threshold: float = 1e-3) -> float:
    """Fraction of prunable weights with ``|w| < threshold`` (sparseness during training)."""
    ws = [m.weight.detach() for m in masks_mod.prunable_layers(model).values()]
    total = sum(w.numel() for w in ws)
    return float(sum(int((w.abs() < threshold).sum()) for w in ws)) / total


def sep_from_multipliers(model: nn.Module, *, alpha_l2: float, alpha_l0: float, beta: float,
                         norm: str, mult_l2: Sequence[float] = (),
                         mult_l0: Sequence[float] = (), mult_beta: Sequence[float] = ()
                         ) -> dict[str, list[float]]:
    """SEP per-layer values as NORM's per-layer values times per-layer multipliers.

    This is how our SEP search moves away from the chosen NORM setting, one layer at a time.
    Empty multiplier lists mean 1 for every layer.
    """
    coefs = layer_coefs(model, "l2l0", "norm", alpha_l2=alpha_l2, alpha_l0=alpha_l0,
                        beta=beta, norm=norm)
    n = len(coefs)

    def mult(m):
        if not m:
            return [1.0] * n
        if len(m) != n:
            raise ValueError(f"multipliers {list(m)} must have one value per layer ({n})")
        return [float(x) for x in m]

    return {"sep_alpha_l2": [c.alpha_l2 * x for c, x in zip(coefs, mult(mult_l2))],
            "sep_alpha_l0": [c.alpha_l0 * x for c, x in zip(coefs, mult(mult_l0))],
            "sep_beta": [c.beta * x for c, x in zip(coefs, mult(mult_beta))]}


# --------------------------------------------------------------------------- searching


def val_error(rec: dict, compression: float | Sequence[float], ft: bool = True,
              scope: str = "global") -> float:
    """Validation error (%) of a run's curve at ``compression`` (after fine-tuning if ``ft``).

    The search criterion of the notebooks: never the test set. A list of compressions gives
    the mean error over them. Missing points give ``inf``.
    """
    curve = rec["artifacts"]["curve"] if "artifacts" in rec else rec
    key = "ft_val_acc" if ft else "val_acc"
    cs = [compression] if isinstance(compression, (int, float)) else list(compression)
    errs = [error_at(curve, c, scope, key) for c in cs]
    return math.inf if any(e is None for e in errs) else sum(errs) / len(errs)


def grid_search(run: Callable[[dict], dict], grid: Sequence[dict],
                compression: float | Sequence[float], ft: bool = True) -> tuple[list[dict], dict]:
    """Run every setting of ``grid`` (``run(overrides) -> record``) and rank by validation error.

    Returns one row per setting (its overrides, the validation error at ``compression`` and the
    run id) and the overrides of the best one (first best on ties, i.e. grid order).
    """
    if not grid:
        raise ValueError("grid is empty")
    # every run is asked for before any result is read, so that a planning pass
    # (``make reproduce``) sees the whole grid in one wave and can run it in parallel
    recs = [run(dict(over)) for over in grid]
    rows = []
    for over, rec in zip(grid, recs):
        rows.append({**over, "val_error": val_error(rec, compression, ft),
                     "dense_val_error": 100 * (1 - rec["metrics"]["dense_val_acc"]),
                     "run": rec["run_id"]})
    best = min(range(len(rows)), key=lambda i: rows[i]["val_error"])
    return rows, dict(grid[best])


def coordinate_search(run: Callable[[list[float]], dict], n_layers: int,
                      candidates: Sequence[float], compression: float | Sequence[float],
                      start: Sequence[float] | None = None, ft: bool = True
                      ) -> tuple[list[dict], list[float]]:
    """One pass of coordinate search over per-layer multipliers (our SEP search).

    Starting from ``start`` (all ones), for each layer in turn try each multiplier of
    ``candidates`` for that layer, keep the one with the lowest validation error at
    ``compression`` (the current value wins ties), then move to the next layer.
    ``run(multipliers) -> record``. Returns the trail of evaluated settings and the final
    multipliers.
    """
    mults = [1.0] * n_layers if start is None else [float(x) for x in start]
    if len(mults) != n_layers:
        raise ValueError(f"start has {len(mults)} values, expected {n_layers}")
    trail = []
    base = run(list(mults))
    best_err = val_error(base, compression, ft)
    trail.append({"layer": None, "multipliers": list(mults), "val_error": best_err,
                  "run": base["run_id"], "kept": True})
    for i in range(n_layers):
        best_m = mults[i]
        for m in candidates:
            if math.isclose(m, mults[i]):
                continue
            trial = list(mults)
            trial[i] = float(m)
            rec = run(trial)
            err = val_error(rec, compression, ft)
            trail.append({"layer": i, "multipliers": trial, "val_error": err,
                          "run": rec["run_id"], "kept": False})
            if err < best_err:
                best_err, best_m = err, float(m)
        mults[i] = best_m
        for t in trail:
            if t["layer"] == i and t["multipliers"] == mults:
                t["kept"] = True
    return trail, mults


def expand_groups(names: Sequence[str], groups: Sequence[Sequence[str]],
                  group_values: Sequence[float]) -> list[float]:
    """Per-layer values from per-group values; a layer joins the first group with a prefix of it.

    ``groups[g]`` lists name prefixes (e.g. ``["stem", "stages.layer1"]``); every layer must
    match one group. Used to search SEP multipliers for deep nets one group at a time.
    """
    if len(groups) != len(group_values):
        raise ValueError(f"{len(groups)} groups but {len(group_values)} values")
    out = []
    for n in names:
        g = next((i for i, prefixes in enumerate(groups)
                  if any(n.startswith(p) for p in prefixes)), None)
        if g is None:
            raise ValueError(f"layer {n!r} matches no group prefix of {list(groups)}")
        out.append(float(group_values[g]))
    return out
