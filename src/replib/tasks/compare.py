"""``compare_method`` and ``compare_speedup``: the five papers' methods side by side.

* ``compare_method`` trains LeNet-300-100 with one sparse method of the five papers at one
  strength under a shared training budget and records (remaining weights, accuracy) points for
  a Pareto plot (``notebooks/compare/01_lenet300_pareto``). Every method is the paper modules'
  own code: ``ProxSGD`` / ``IRDA`` (iRDA paper), ``l0_exp`` + global ``magnitude_masks`` and
  ``l0.finetune`` (l0 paper), ``lottery.run_relaxed`` / ``lottery.run_imp`` (lottery paper),
  ``prune_neurons`` + ``shrink_mlp`` (ACNN), and plain SGD + global magnitude pruning.
* ``compare_speedup`` measures inference latency of pruned models in three forms (dense with
  zeros, ``torch.sparse`` CSR, physically shrunk) beside their FLOPs
  (``notebooks/compare/02_real_speedup``).

The shared budget: every training stage runs ``spec.epochs`` epochs. One-shot methods
(SGD + magnitude pruning, l0-exp + pruning, l1 prox-SGD, iRDA, ACNN neuron pruning) train one
stage and then fine-tune the frozen zero pattern for ``ft_epochs``; the iterative methods (IMP,
relaxed masks with rewinding) train ``rounds`` (+1 for IMP's dense stage) stages of
``spec.epochs`` each, as their papers do.
"""

from __future__ import annotations

import copy
import statistics
import time

import torch
from torch import nn

from .. import l0 as L0
from .. import lottery as LT
from .. import models
from ..experiments.spec import task
from ..metrics import evaluate, flops, layer_flops, nonzero, prunable_weights, sparse_flops
from ..sparsity import masks as masks_mod
from ..sparsity.optim import IRDA, ProxSGD, l1_param_groups
from ..sparsity.penalties import l0_exp
from ..sparsity.prune import bn_channel_masks, magnitude_masks, prune_neurons, zero_bn_channels_
from ..sparsity.shrink import shrink_channels, shrink_mlp
from ..train import NonFiniteLossError, fit, multistep_schedule, seed_everything
from .common import load_splits

METHODS = ("sgd_magnitude", "l1_prox", "irda", "l0_exp", "mask_l1", "mask_log", "imp", "acnn")
"""The sparse methods compared (one per paper, plus the SGD + magnitude pruning baseline)."""

METHOD_NAMES = {
    "sgd_magnitude": "SGD + magnitude pruning",
    "l1_prox": "l1 prox-SGD (iRDA paper)",
    "irda": "iRDA",
    "l0_exp": "l0-exp + global pruning (l0 paper)",
    "mask_l1": "relaxed mask, l1 + rewinding (lottery paper)",
    "mask_log": "relaxed mask, log + rewinding (lottery paper)",
    "imp": "IMP (Frankle & Carbin)",
    "acnn": "ACNN neuron pruning (recorded search)",
}

METHOD_DEFAULTS = dict(
    method="sgd_magnitude",
    strength=0.0,        # lambda (l1_prox, irda, mask_*), alpha (l0_exp), rate (imp); unused else
    lr=0.1,              # SGD learning rate of every SGD stage (dense recipe of 00_dense)
    momentum=0.0,
    weight_decay=1e-4,
    batch_size=128,
    ft_epochs=2,         # fine-tuning of the frozen pattern after one-shot methods
    ft_lr=0.01,
    compressions=[2.0, 5.0, 10.0, 20.0, 50.0, 100.0],  # one-shot pruning levels (total/kept)
    beta=5.0,            # l0-exp sharpness (l0 paper's default in tasks/l0.py)
    gamma=1.0,           # iRDA: beta_t = gamma sqrt(t)
    anchor="init",       # iRDA's w0 for the weights: "init" (w0 = w1) or "zero" (Algorithm 1
                         # read literally; an MLP without BatchNorm then loses its random
                         # initialization after one step and collapses, notebook 01)
    rounds=3,            # IMP / relaxed-mask rounds
    alpha=0.01,          # relaxed mask threshold (lottery paper Sec. V-D)
    eps=0.1,             # log regularizer's eps (Sec. V-D)
    acnn_layers=[],      # ACNN kept layer sizes, e.g. ["239-166-46"], from recorded searches
    train_subset=0,
    val_size=5000,
)


def _check(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not known; allowed values: {list(allowed)}")


def total_weights(model: nn.Module) -> int:
    return sum(w.numel() for w in prunable_weights(model).values())


def point(model: nn.Module, total: int, val, test, device, **extra) -> dict:
    """One Pareto point: nonzero prunable weights, compression vs ``total``, val/test accuracy."""
    remaining = nonzero(prunable_weights(model).values())
    return {
        "remaining": remaining,
        "compression": float("inf") if remaining == 0 else total / remaining,
        "val_acc": evaluate(model, val, device=device)["acc"] if val is not None else None,
        "test_acc": evaluate(model, test, device=device)["acc"],
        **extra,
    }


def _sgd(params, hp: dict, lr: float | None = None, momentum: float | None = None):
    return torch.optim.SGD(params, lr=hp["lr"] if lr is None else lr,
                           momentum=hp["momentum"] if momentum is None else momentum,
                           weight_decay=hp["weight_decay"])


def _fit(model, train, epochs, opt, hp, spec, ctx, name, penalty=None, test=None, sched=True):
    schedule = multistep_schedule(opt, epochs, (0.5, 0.75)) if sched else None
    return fit(model, train, epochs=epochs, optimizer=opt, scheduler=schedule,
               batch_size=hp["batch_size"], test=test, penalty=penalty, seed=spec.seed,
               ckpt_dir=ctx.stage_dir(name), device=ctx.device, desc=f"{spec.hp['method']} {name}")


def _finetune(pruned, train, hp, spec, ctx, name):
    """``l0.finetune`` (Sec. 4.1 of the l0 paper): hard-masked zeros stay zero, cosine LR."""
    if hp["ft_epochs"] <= 0:
        return []
    return L0.finetune(pruned, train, epochs=hp["ft_epochs"],
                       make_opt=lambda ps: torch.optim.SGD(ps, lr=hp["ft_lr"], momentum=0.9),
                       penalty=None, batch_size=hp["batch_size"], seed=spec.seed,
                       ckpt_dir=ctx.stage_dir(name), device=ctx.device, desc=name)


def _freeze_zeros(model: nn.Module) -> nn.Module:
    """A copy with the current zero pattern attached as hard masks (for fine-tuning)."""
    out = copy.deepcopy(model)
    kept = {n: w.detach() != 0 for n, w in prunable_weights(out).items()}
    masks_mod.apply_hard_masks(out, kept)
    return out


def _prune_points(model, train, val, test, hp, spec, ctx, total) -> list[dict]:
    """Global magnitude pruning at each compression, fine-tuned, one point each."""
    pts = []
    for c in hp["compressions"]:
        pruned, _ = L0.prune_copy(model, c, "global")
        before = evaluate(pruned, test, device=ctx.device)["acc"]
        _finetune(pruned, train, hp, spec, ctx, f"ft{c:g}")
        pts.append(point(pruned, total, val, test, ctx.device, target=c, test_acc_noft=before))
    return pts


def acnn_fractions(layers: str, sizes=(784, 300, 100)) -> list[float]:
    """Per-layer pruned fractions ``a_t`` from an ACNN "Layers" string such as ``239-166-46``."""
    kept = [int(k) for k in layers.split("-")]
    if len(kept) != len(sizes) or any(not 0 < k <= n for k, n in zip(kept, sizes)):
        raise ValueError(f"layers={layers!r} must give {len(sizes)} kept counts within {sizes}")
    return [1.0 - k / n for k, n in zip(kept, sizes)]


@task("compare_method", defaults=METHOD_DEFAULTS, models=("lenet300",), datasets=("mnist",))
def compare_method(spec, ctx):
    """One method at one strength on LeNet-300-100 / MNIST; points (remaining weights, acc)."""
    hp = spec.hp
    _check("method", hp["method"], METHODS)
    _check("anchor", hp["anchor"], ("init", "zero"))
    seed_everything(spec.seed)
    train, val, test = load_splits(spec, ctx)
    build = lambda: models.get(spec.model, num_classes=10)  # noqa: E731
    model = build().to(ctx.device)
    total = total_weights(model)
    method, lam, E = hp["method"], hp["strength"], spec.epochs
    history, pts, t0 = [], [], time.perf_counter()

    if method in ("sgd_magnitude", "acnn"):
        history = _fit(model, train, E, _sgd(model.parameters(), hp), hp, spec, ctx, "train")
        if method == "sgd_magnitude":
            pts = _prune_points(model, train, val, test, hp, spec, ctx, total)
        else:
            for layers in hp["acnn_layers"]:
                kept = prune_neurons(model, acnn_fractions(layers))
                small = shrink_mlp(model, kept)
                before = evaluate(small, test, device=ctx.device)["acc"]
                ft = _freeze_zeros(small)
                _finetune(ft, train, hp, spec, ctx, f"ft{layers}")
                pts.append(point(ft, total, val, test, ctx.device, target=layers,
                                 test_acc_noft=before))
    elif method == "l0_exp":
        def penalty(m):
            return lam * l0_exp(list(prunable_weights(m).values()), hp["beta"])
        history = _fit(model, train, E, _sgd(model.parameters(), hp), hp, spec, ctx, "train",
                       penalty=penalty)
        pts = _prune_points(model, train, val, test, hp, spec, ctx, total)
    elif method in ("l1_prox", "irda"):
        try:
            if method == "l1_prox":
                opt = ProxSGD(l1_param_groups(model, lam), lr=hp["lr"], lam=lam,
                              momentum=hp["momentum"])
                history = _fit(model, train, E, opt, hp, spec, ctx, "train")
            else:
                groups = l1_param_groups(model, lam, anchor=hp["anchor"])
                if len(groups) > 1:
                    groups[1]["anchor"] = "init"   # as tasks/irda.make_irda_optimizer
                opt = IRDA(groups, lam=lam, gamma=hp["gamma"], anchor=hp["anchor"])
                history = _fit(model, train, E, opt, hp, spec, ctx, "train", sched=False)
                opt.start_retraining()            # Algorithm 1, Step 2, for ft_epochs
                if hp["ft_epochs"] > 0:
                    history += _fit(model, train, hp["ft_epochs"], opt, hp, spec, ctx,
                                    "step2", sched=False)
        except NonFiniteLossError as err:
            return {"history": history, "metrics": {"failed": str(err)},
                    "artifacts": {"points": []}}
        before = evaluate(model, test, device=ctx.device)["acc"]
        if method == "l1_prox":
            model = _freeze_zeros(model)
            _finetune(model, train, hp, spec, ctx, "ft")
        pts = [point(model, total, val, test, ctx.device, target=lam, test_acc_noft=before)]
    elif method in ("mask_l1", "mask_log", "imp"):
        cfg = LT.TrainConfig(epochs=E, lr=hp["lr"], momentum=hp["momentum"],
                             weight_decay=hp["weight_decay"], milestones=(0.5, 0.75),
                             batch_size=hp["batch_size"], pad=0, flip=False, seed=spec.seed,
                             device=ctx.device)
        if method == "imp":
            out = LT.run_imp(build, train, test, cfg, ctx.stage_dir, rounds=hp["rounds"],
                             rate=lam, val=val)
        else:
            out = LT.run_relaxed(build, train, test, cfg, ctx.stage_dir, reg=method[5:],
                                 lam=lam, rounds=hp["rounds"], eps=hp["eps"],
                                 alpha=hp["alpha"], val=val)
        history = [dict(h, stage=k) for k, hs in out["histories"].items() for h in hs]
        for r in out["rounds"]:
            if r.get("test_acc") is None or r.get("kept") is None:
                continue
            pts.append({"remaining": r["kept"], "compression": total / max(r["kept"], 1),
                        "val_acc": r.get("val_acc"), "test_acc": r["test_acc"],
                        "target": r["round"]})
    return {
        "history": history,
        "metrics": {"n_points": len(pts), "total_weights": total,
                    "wall_s": time.perf_counter() - t0,
                    "train_epochs_total": sum(1 for _ in history)},
        "artifacts": {"points": pts},
    }


# --------------------------------------------------------------------------- best-at tables


def best_at(points: list[dict], compression: float, select: str = "val_acc",
            min_acc: float = 0.2) -> dict | None:
    """The point with compression >= ``compression`` that is best by ``select`` (validation
    accuracy: the choice never looks at the test set); None when no point reaches it. Points
    with no remaining weight or at chance accuracy (a collapsed run) are never selected."""
    ok = [p for p in points if p["compression"] >= compression * (1 - 1e-9)
          and p.get("remaining", 1) > 0 and not collapsed(p, min_acc)]
    key = select if all(p.get(select) is not None for p in ok) else "test_acc"
    return max(ok, key=lambda p: p[key]) if ok else None


def collapsed(p: dict, min_acc: float = 0.2) -> bool:
    """A point at chance level (10 classes: a constant classifier scores about 0.11)."""
    acc = p.get("val_acc") if p.get("val_acc") is not None else p["test_acc"]
    return p.get("remaining", 1) == 0 or acc <= min_acc


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Non-dominated (remaining, acc) pairs: fewer weights and higher accuracy are better."""
    front, best = [], -1.0
    for rem, acc in sorted(points, key=lambda p: (p[0], -p[1])):
        if acc > best:
            front.append((rem, acc))
            best = acc
    return front


# --------------------------------------------------------------------------- latency

class CSRLinear(nn.Module):
    """A Linear layer computing ``x W^T + b`` with ``W`` stored as ``torch.sparse`` CSR."""

    def __init__(self, layer: nn.Linear) -> None:
        super().__init__()
        self.register_buffer("weight_csr", layer.weight.detach().clone().to_sparse_csr())
        self.register_buffer("bias", None if layer.bias is None else layer.bias.detach().clone())
        self.out_features = layer.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.sparse.mm(self.weight_csr, x.t()).t()
        return y if self.bias is None else y + self.bias


def csr_copy(model: nn.Module) -> nn.Module:
    """A copy of an MLP with every Linear replaced by :class:`CSRLinear` (masks baked in)."""
    new = copy.deepcopy(model)
    masks_mod.remove_masks(new, leave_masked=True)
    for name, mod in list(new.named_modules()):
        if isinstance(mod, nn.Linear):
            parent = new.get_submodule(name.rsplit(".", 1)[0]) if "." in name else new
            setattr(parent, name.rsplit(".", 1)[-1], CSRLinear(mod))
    return new


@torch.no_grad()
def interleaved_latency(variants: dict[str, nn.Module], x: torch.Tensor, rounds: int,
                        inner: int = 5, warmup: int = 3) -> dict[str, dict]:
    """Median (and quartiles) of per-call wall time in ms, measuring the variants in turn.

    Each round times ``inner`` calls of every variant, in a rotated order, so that load spikes
    of a shared machine hit all variants alike; the median over rounds is reported.
    """
    if rounds < 1 or inner < 1:
        raise ValueError(f"rounds={rounds} and inner={inner} must be >= 1")
    names = list(variants)
    for m in variants.values():
        m.eval()
        for _ in range(warmup):
            m(x)
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    times = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            sync()
            t0 = time.perf_counter()
            for _ in range(inner):
                variants[n](x)
            sync()
            times[n].append((time.perf_counter() - t0) * 1e3 / inner)
    out = {}
    for n, ts in times.items():
        q = statistics.quantiles(ts, n=4) if len(ts) > 1 else [ts[0]] * 3
        out[n] = {"median_ms": statistics.median(ts), "q1_ms": q[0], "q3_ms": q[2]}
    return out


SPEED_DEFAULTS = dict(
    sparsities=[0.0, 0.5, 0.8, 0.9, 0.95, 0.99],
    batch_sizes=[1, 256],
    rounds=30,
    inner=5,
    threads=1,
    init="random",          # "random": magnitude pruning of the random init (no training)
    device="cpu",           # cpu | cuda (GPU latency when one is present)
)


def _mlp_variants(model, s: float) -> tuple[dict, dict]:
    """LeNet-300-100 at sparsity ``s``: zeros (global magnitude), CSR, and neuron-shrunk."""
    variants = {"dense": model}
    info = {"dense": {"flops": flops(model, (1, 28, 28)), "kept_weights": total_weights(model)}}
    if s == 0:
        return variants, info
    zeros = copy.deepcopy(model)
    masks_mod.apply_hard_masks(zeros, magnitude_masks(model, 1.0 / (1.0 - s), "global"))
    masks_mod.remove_masks(zeros, leave_masked=True)   # plain Linear layers holding zeros
    variants["zeros"], variants["csr"] = zeros, csr_copy(zeros)
    # the neuron-level counterpart: the same fraction of neurons of every layer removed
    frac = 1.0 - (1.0 - s) ** 0.5   # keeping sqrt(1-s) of inputs and outputs keeps ~(1-s) weights
    small = shrink_mlp(model, prune_neurons(model, [frac, frac, frac]))
    variants["shrunk"] = small
    shape = (1, 28, 28)
    nz = nonzero(prunable_weights(zeros).values())
    info["zeros"] = {"flops": flops(zeros, shape), "kept_weights": nz}
    info["csr"] = {"flops": sparse_flops(zeros, shape), "kept_weights": nz}
    info["shrunk"] = {"flops": flops(small, shape),
                      "kept_weights": total_weights(small), "neuron_fraction_removed": frac}
    return variants, info


def _conv_variants(model, s: float, shape) -> tuple[dict, dict]:
    """A conv net with fraction ``s`` of BN channels (smallest |gamma|) zeroed, and shrunk."""
    dense = {"flops": flops(model, shape), "kept_weights": total_weights(model)}
    if s == 0:
        return {"dense": model}, {"dense": dense}
    cm = bn_channel_masks(model, percent=s)
    zeros = copy.deepcopy(model)
    zero_bn_channels_(zeros, cm)
    x = torch.randn(2, *shape)
    small = shrink_channels(model, cm, x)
    # zeroed channels as structured weight zeros (conv outputs and inputs), for sparse FLOPs
    return {"dense": model, "zeros": zeros, "shrunk": small}, {
        "dense": dense,
        "zeros": {"flops": flops(zeros, shape), "kept_weights": total_weights(zeros),
                  "channels_kept": int(sum(int(m.sum()) for m in cm.values())),
                  "channels_total": int(sum(m.numel() for m in cm.values()))},
        "shrunk": {"flops": flops(small, shape), "kept_weights": total_weights(small)},
    }


@task("compare_speedup", defaults=SPEED_DEFAULTS, models=("lenet300", "vgg11", "resnet20"),
      datasets=("mnist", "cifar10"))
def compare_speedup(spec, ctx):
    """Latency (median over interleaved rounds) and FLOPs of pruned models in three forms."""
    hp = spec.hp
    _check("init", hp["init"], ("random",))
    _check("device", hp["device"], ("cpu", "cuda"))
    if hp["device"] == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but no GPU is available; allowed here: 'cpu'")
    dev = torch.device(hp["device"])
    seed_everything(spec.seed)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(int(hp["threads"]))
    shape = models.input_shape(spec.model)
    n_cls = 10
    model = models.get(spec.model, num_classes=n_cls).eval()
    if spec.model != "lenet300":
        with torch.no_grad():   # random BN scales so that channel selection is not all ties
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.weight.uniform_(0.1, 1.0)
    rows = []
    try:
        for s in hp["sparsities"]:
            if spec.model == "lenet300":
                variants, info = _mlp_variants(model, s)
            else:
                variants, info = _conv_variants(model, s, shape)
            dense_flops = info["dense"]["flops"]
            if dev.type != "cpu":   # the dense model is shared between levels: copy it
                variants = {k: (copy.deepcopy(v) if k == "dense" else v).to(dev)
                            for k, v in variants.items()}
            for bs in hp["batch_sizes"]:
                x = torch.randn(bs, *shape, device=dev)
                lat = interleaved_latency(variants, x, hp["rounds"], hp["inner"])
                for name, v in lat.items():
                    rows.append({"sparsity": s, "form": name, "batch": bs, "device": dev.type,
                                 **v, **info[name],
                                 "flops_ratio": info[name]["flops"] / dense_flops})
    finally:
        torch.set_num_threads(old_threads)
    per_layer = layer_flops(model, shape)
    return {"history": [], "metrics": {"dense_flops": flops(model, shape), "n_rows": len(rows),
                                       "threads": int(hp["threads"])},
            "artifacts": {"rows": rows, "dense_layer_flops": per_layer}}


def points_frame(records):
    """One row per recorded point: method, strength, seed, remaining weights, accuracies."""
    import pandas as pd

    rows = []
    for rec in records:
        sp = rec["spec"]
        for p in rec["artifacts"]["points"]:
            rows.append({"method": sp["hparams"]["method"], "strength": sp["hparams"]["strength"],
                         "seed": sp["seed"], "run": rec["run_id"], **p})
    return pd.DataFrame(rows)


def best_table(df, targets=(10.0, 50.0, 100.0)):
    """Each method's best accuracy at >= each compression (chosen per seed by validation
    accuracy, then mean and spread over seeds of the chosen points' test accuracy)."""
    import pandas as pd

    rows = []
    for method in METHODS:
        sel = df[df.method == method]
        if sel.empty:
            continue
        row = {"method": METHOD_NAMES[method]}
        for c in targets:
            accs = []
            for _, g in sel.groupby("seed"):
                b = best_at(g.to_dict("records"), c)
                if b is not None:
                    accs.append(100.0 * b["test_acc"])
            row[f"{c:g}x acc %"] = (sum(accs) / len(accs)) if accs else float("nan")
            row[f"{c:g}x spread"] = (max(accs) - min(accs)) if len(accs) > 1 else float("nan")
        row["max compression"] = float(sel.compression.max())
        rows.append(row)
    return pd.DataFrame(rows)


def speedup_frame(records):
    """Rows of ``compare_speedup`` records with the speed-up against the dense model measured
    in the same interleaved group (same sparsity level, batch size)."""
    import pandas as pd

    rows = []
    for rec in records:
        for r in rec["artifacts"]["rows"]:
            rows.append({"model": rec["spec"]["model"], "run": rec["run_id"], **r})
    df = pd.DataFrame(rows)
    dense = (df[df.form == "dense"].set_index(["model", "device", "sparsity", "batch"])
             .median_ms.rename("dense_ms"))
    df = df.join(dense, on=["model", "device", "sparsity", "batch"])
    df["speedup"] = df.dense_ms / df.median_ms
    df["flop_reduction"] = 1.0 / df.flops_ratio
    return df
