"""Tasks of the lottery paper (see notebooks/lottery/ and :mod:`replib.lottery`).

- ``lottery_logistic``: Sec. IV-C, Figs. 3-4 (MNIST 0/1 at 20x20, four methods, lambda sweep,
  random runs, and the k-sparse mask).
- ``lottery_tickets``: one method (IMP, Algorithm 1 with l1 or log, or the sigmoid mask) for
  ``rounds`` pruning rounds with rewinding, and the tickets trained in isolation (Figs. 5-9,
  Tables II-III).
- ``lottery_step_time``: measured time of one SGD step of the search (relaxed mask) and of the
  ticket training (hard mask) per architecture (Table III's ratio, for the networks whose full
  runs exceed the budget).
"""

from __future__ import annotations

import math
import time

import torch

from .. import data, models
from .. import lottery as lt
from ..data import train_val_split
from ..experiments.spec import task
from ..metrics import count_params
from ..sparsity import masks as masks_mod
from ..train import seed_everything
from .common import TRAIN_DEFAULTS

# --------------------------------------------------------------------------- Sec. IV-C

LOGISTIC_DEFAULTS = {
    "runs": 100,            # random runs per lambda (Sec. IV-C)
    "n_per_digit": 200,     # 200 images of each digit ...
    "n_train": 160,         # ... 160 to train, 40 to validate
    "size": 20,             # 20x20 = 400 pixels (+ intercept)
    "resize": "resize",     # how 28x28 becomes 20x20: "resize" (area) or "crop" (central)
    "lams": [1e-5, 10 ** -4.5, 1e-4, 10 ** -3.5, 1e-3, 10 ** -2.5, 1e-2, 10 ** -1.5, 1e-1,
             10 ** -0.5, 1.0],
    "eps": 0.1,             # r_eps of the log regularizer (Sec. V-D's value)
    "m0": 0.5,              # Algorithm 1's m_0
    "k_sparse": 8,          # Fig. 4: an 8-sparse mask
    "tol": 1e-3,            # relative tolerance of the second sparsity reading
}


@task("lottery_logistic", defaults=LOGISTIC_DEFAULTS, models=("logreg",), datasets=("mnist",))
def lottery_logistic(spec, ctx):
    """Figs. 3-4: validation accuracy and sparsity against lambda for plain logistic regression,
    l1 on theta (subgradient), mask-l1 and mask-log (projected gradient), over random runs;
    ``spec.epochs`` is the number of full-batch gradient-descent iterations."""
    hp = spec.hp
    if hp["resize"] not in lt.RESIZE_MODES:
        raise ValueError(f"resize={hp['resize']!r}; allowed values: {list(lt.RESIZE_MODES)}")
    seed_everything(spec.seed)
    mnist = ctx.load("mnist", "train").to("cpu")
    X, y = lt.mnist01_pool(mnist.images, mnist.labels, hp["size"], hp["resize"])
    draws = lt.draw_mnist01(X, y, hp["runs"], hp["n_per_digit"], hp["n_train"], spec.seed)
    lams = [float(v) for v in hp["lams"]]
    t0 = time.perf_counter()
    res = lt.logistic_sweep(draws, lams, spec.epochs, hp["eps"], hp["m0"], hp["tol"])
    sweep_s = time.perf_counter() - t0

    # Fig. 4: a k-sparse log mask on the first run, and eight validation digits (4 + 4)
    Xt, yt = draws.X_train[:1], draws.y_train[:1]
    theta_hat = res["lr"]["theta"][:1, :, :1]
    lam_k, m_k = lt.find_k_sparse_mask(Xt, yt, theta_hat, hp["k_sparse"], spec.epochs,
                                       "log", hp["eps"], hp["m0"])
    th_k = lt.masked_theta(theta_hat, m_k)
    binary = th_k.clone()
    binary[:, :-1, :] = theta_hat[:, :-1, :] * (m_k > 0)
    Xv, yv = draws.X_val[:1], draws.y_val[:1]
    n_val = yv.shape[1] // 2
    pick = torch.cat([torch.arange(4), n_val + torch.arange(4)])
    samples = draws.X_val[0, pick, :-1]

    history, summary = [], {}
    for name, r in res.items():
        for k, lam in enumerate(lams):
            row = {"method": name, "lam": lam,
                   "acc_mean": float(r["acc"][:, k].mean()),
                   "acc_std": float(r["acc"][:, k].std()),
                   "sparsity_mean": float(r["sparsity"][:, k].mean()),
                   "sparsity_std": float(r["sparsity"][:, k].std()),
                   "sparsity_tol_mean": float(r["sparsity_tol"][:, k].mean()),
                   "nonzero_mean": float(((1 - r["sparsity"][:, k]) * (X.shape[1])).mean())}
            history.append(row)
        summary[name] = {"acc": r["acc"].tolist(), "sparsity": r["sparsity"].tolist(),
                         "sparsity_tol": r["sparsity_tol"].tolist()}
    acc_k = float(lt.accuracy(Xv, yv, th_k)[0, 0])
    acc_bin = float(lt.accuracy(Xv, yv, binary)[0, 0])
    metrics = {
        "lr_acc": float(res["lr"]["acc"][:, 0].mean()),
        "lr_sparsity": float(res["lr"]["sparsity"][:, 0].mean()),
        "k_sparse_lam": lam_k, "k_sparse_nonzero": int((m_k > 0).sum()),
        "k_sparse_val_acc": acc_k, "k_sparse_val_acc_binary": acc_bin,
        "sweep_s": sweep_s, "pixels": int(X.shape[1]),
        "runs": int(hp["runs"]), "n_train_total": int(draws.y_train.shape[1]),
        "n_val_total": int(draws.y_val.shape[1]),
    }
    artifacts = {
        "per_run": summary, "lams": lams,
        "k_mask": m_k[0, :, 0].tolist(), "k_theta": th_k[0, :-1, 0].tolist(),
        "samples": samples.tolist(), "sample_labels": yv[0, pick].tolist(),
        "side": int(hp["size"]),
    }
    return {"history": history, "metrics": metrics, "artifacts": artifacts}


# --------------------------------------------------------------------------- Algorithm 1

TICKET_MODELS = ("resnet20", "resnet56", "wrn20", "vgg11")
PAPER_LAMBDA = {"mask_l1": 3e-6, "mask_log": 1e-6, "sigmoid": 3e-6}
"""Sec. V-D: lambda = 3e-6 for r_1 and 1e-6 for r_eps (eps = 0.1). The sigmoid baseline of
Fig. 9 gets the l1 value (our choice: the same l1 pull on m, only the parameterization differs)."""

TICKET_DEFAULTS = dict(TRAIN_DEFAULTS)
TICKET_DEFAULTS.update({
    "augment": True,          # open_lth's CIFAR augmentation (pad-4 crop + flip)
    "milestones": [56 / 85, 71 / 85],  # ResNet-20 (Sec. V-D); VGG-11 / WRN-20: 60/120, 90/120
    "method": "mask_log",     # imp | mask_l1 | mask_log | sigmoid
    "rounds": 3,              # Sec. V-D: 3 pruning rounds
    "lam": 0.0,               # 0: the paper's value for the method (PAPER_LAMBDA)
    "lam_scale": 1.0,         # multiplier of lambda
    "mask_lr_scale": 1.0,     # mask learning rate / weight learning rate (reduced budgets)
    "eps": 0.1,               # r_eps (Sec. V-D)
    "alpha": 0.01,            # threshold of Algorithm 1, step 4 (not stated; our choice)
    "prune": "threshold",     # threshold | percentage (Fig. 8)
    "rate": 0.2,              # IMP / percentage rule: fraction of the remaining pruned per round
    "m0": 0.5,                # Algorithm 1's m_0
    "s0": 0.0,                # sigmoid mask's initial score ([12])
    "beta_final": 200.0,      # sigmoid temperature at the end of a round (Sec. V-G)
    "ticket_every_round": True,
    "width": 0,               # ResNets: 0 = the paper's width (16; WRN-20: 64)
    # 0: rewind theta to theta_0 (Algorithm 1); k > 0: to theta after k SGD steps of the first
    # training ("late rewinding", [11]; our variation, not the paper's setting). Added after
    # records existed: experiments.spec.ADDED_HPARAMS keeps it out of the run id at 0.
    "rewind_iter": 0,
})


def build_model(name: str, num_classes: int, width: int = 0):
    """The paper's networks as open_lth builds them (Sec. V-B)."""
    if name == "vgg11":
        return models.get("vgg11", num_classes, conv_bias=True, init="open_lth",
                          bn_init="uniform")
    if width:
        from ..models.resnet import cifar_resnet

        depth = {"resnet20": 20, "resnet56": 56, "wrn20": 20}[name]
        return cifar_resnet(depth, width, num_classes)
    return models.get(name, num_classes)


def smoke_images(dataset: str, n: int) -> int:
    """``n`` CIFAR-sized (32x32) images' worth of pixels in images of ``dataset``: the smoke
    budget keeps its cost on Tiny ImageNet's 64x64 images (``n // 4``) near CIFAR's."""
    _, h, w = data.check_name(dataset).shape
    return max(1, n * 32 * 32 // (h * w))


def _ticket_splits(spec, ctx):
    hp = spec.hp
    train = ctx.load(spec.dataset, "train")
    test = ctx.load(spec.dataset, "test")
    val = None
    if hp["val_size"]:
        train, val = train_val_split(train, hp["val_size"], seed=0)
    if hp["train_subset"]:
        g = torch.Generator().manual_seed(1234)
        idx = torch.randperm(len(train), generator=g)[:hp["train_subset"]]
        train = train.subset(idx.to(train.labels.device), "train subset")
    if spec.budget == "smoke":  # 200 CIFAR-sized test images, as many pixels on larger ones
        n = min(len(test), smoke_images(spec.dataset, 200))
        test = test.subset(torch.arange(n, device=test.labels.device), "smoke test subset")
    return train, val, test


def _ticket_epochs(hp, epochs: int) -> int:
    """IMP trains ``rounds + 1`` times (dense, then after each pruning round); the mask
    methods search ``rounds`` rounds and train the ticket of every round or of the last."""
    rounds = int(hp["rounds"])
    if hp["method"] == "imp":
        return (rounds + 1) * epochs
    return (rounds + (rounds if hp["ticket_every_round"] else 1)) * epochs


@task("lottery_tickets", defaults=TICKET_DEFAULTS, models=TICKET_MODELS,
      train_epochs=_ticket_epochs,
      datasets=("cifar10", "cifar100", "tinyimagenet"))
def lottery_tickets(spec, ctx):
    """Search a sparse subnetwork with one method for ``rounds`` rounds with rewinding to
    ``theta_0`` and train each round's ticket in isolation; ``spec.epochs`` is the length of
    every training (search round or ticket)."""
    hp = spec.hp
    method = hp["method"]
    if method not in lt.METHODS:
        raise ValueError(f"method={method!r} is not known; allowed values: {list(lt.METHODS)}")
    if hp["prune"] not in lt.PRUNE_RULES:
        raise ValueError(f"prune={hp['prune']!r}; allowed values: {list(lt.PRUNE_RULES)}")
    if hp["optimizer"] != "sgd" or hp["schedule"] != "multistep":
        raise ValueError("lottery_tickets follows Sec. V-D: optimizer='sgd', "
                         "schedule='multistep'")
    seed_everything(spec.seed)
    train, val, test = _ticket_splits(spec, ctx)
    ncls = train.info.num_classes

    def build():
        return build_model(spec.model, ncls, hp["width"])

    cfg = lt.TrainConfig(epochs=spec.epochs, lr=hp["lr"], momentum=hp["momentum"],
                         weight_decay=hp["weight_decay"], nesterov=hp["nesterov"],
                         milestones=tuple(hp["milestones"]), mask_lr_scale=hp["mask_lr_scale"],
                         batch_size=hp["batch_size"],
                         pad=4 if hp["augment"] else 0, flip=hp["augment"], seed=spec.seed,
                         device=ctx.device)
    lam = (hp["lam"] or PAPER_LAMBDA.get(method, 0.0)) * hp["lam_scale"]
    t0 = time.perf_counter()
    rewind_iter = int(hp["rewind_iter"])
    if rewind_iter and method == "sigmoid":
        raise ValueError("rewind_iter > 0 is implemented for imp, mask_l1 and mask_log only")
    if method == "imp":
        out = lt.run_imp(build, train, test, cfg, ctx.stage_dir, hp["rounds"], hp["rate"],
                         val=val, rewind_iter=rewind_iter)
    elif method == "sigmoid":
        out = lt.run_sigmoid(build, train, test, cfg, ctx.stage_dir, lam, hp["rounds"],
                             hp["s0"], hp["beta_final"], hp["ticket_every_round"], val=val)
    else:
        out = lt.run_relaxed(build, train, test, cfg, ctx.stage_dir, method.split("_")[1], lam,
                             hp["rounds"], hp["eps"], hp["alpha"], hp["prune"], hp["rate"],
                             hp["m0"], hp["ticket_every_round"], val=val,
                             rewind_iter=rewind_iter)
    wall = time.perf_counter() - t0
    rows = out["rounds"]
    final = rows[-1]
    history = [dict(h, stage=name) for name, hs in out["histories"].items() for h in hs]
    metrics = {
        "method": method, "lam": lam, "final_density": final["density"],
        "final_sparsity": final["sparsity"], "final_test_acc": final.get("test_acc"),
        "find_train_s": out["find_train_s"], "ticket_train_s": out["ticket_train_s"],
        "wall_s": wall, "params": count_params(build()), "n_train": len(train),
        "test_n": len(test),
        "steps_per_training": spec.epochs * math.ceil(len(train) / hp["batch_size"]),
    }
    if method == "imp":
        metrics["dense_test_acc"] = rows[0]["test_acc"]
    artifacts = {"rounds": rows}
    if "mask_histograms" in out:
        artifacts["mask_histograms"] = out["mask_histograms"]
    return {"history": history, "metrics": metrics, "artifacts": artifacts}


# --------------------------------------------------------------------------- Table III

STEP_TIME_DEFAULTS = {"batch_size": 128, "steps": 5, "warmup": 1, "lam": 3e-6}


@task("lottery_step_time", defaults=STEP_TIME_DEFAULTS, models=TICKET_MODELS,
      datasets=("cifar10", "cifar100"))
def lottery_step_time(spec, ctx):
    """Seconds per SGD step (batch of random CIFAR-shaped inputs) of the three kinds of training
    the paper's pipeline runs: dense, search with a relaxed mask (penalty + projection), and a
    ticket with a hard mask. ``spec.epochs`` is unused (1).

    The three are timed in turn, step by step (repeat *r* of each before repeat *r + 1* of any),
    and each reports its median step. On the CPU the clock is the process's CPU time, which a
    machine shared with other jobs does not inflate as it does the wall clock; on CUDA it is the
    wall clock after a synchronization."""
    hp = spec.hp
    seed_everything(spec.seed)
    ncls = 100 if spec.dataset == "cifar100" else 10
    x = torch.randn(hp["batch_size"], *models.input_shape(spec.model), device=ctx.device)
    y = torch.randint(0, ncls, (hp["batch_size"],), device=ctx.device)
    R = lt.mask_regularizer("l1")
    cuda = ctx.device.type == "cuda"
    clock = time.perf_counter if cuda else time.process_time
    runs = {}
    for kind in ("dense", "relaxed", "hard"):
        model = build_model(spec.model, ncls).to(ctx.device)
        if kind == "relaxed":
            masks_mod.add_relaxed_masks(model)
        elif kind == "hard":
            from ..sparsity.prune import magnitude_masks
            masks_mod.apply_hard_masks(model, magnitude_masks(model, 10.0))
        opt = torch.optim.SGD(lt.mask_param_groups(model, 1e-4), lr=0.1, momentum=0.9)
        runs[kind] = (model, opt, [])
    for i in range(hp["warmup"] + hp["steps"]):
        for kind, (model, opt, times) in runs.items():
            t0 = clock()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            if kind == "relaxed":
                loss = loss + hp["lam"] * masks_mod.mask_penalty(model, R)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if kind == "relaxed":
                masks_mod.project_masks_(model)
            if cuda:
                torch.cuda.synchronize()
            if i >= hp["warmup"]:
                times.append(clock() - t0)
    out = {}
    for kind, (_, _, times) in runs.items():
        times.sort()
        out[f"{kind}_step_s"] = times[len(times) // 2]
    out["clock"] = "wall (synchronized)" if cuda else "process CPU time"
    out["params"] = count_params(runs["dense"][0])
    return {"history": [], "metrics": out}


# --------------------------------------------------------------------------- budgets

# Per-budget settings of the CIFAR experiments (notebooks 02-05 build their specs here, so the
# same run is shared between notebooks and loaded from its record).
PAPER_EPOCHS = {"resnet20": 85, "resnet56": 85, "wrn20": 120, "vgg11": 120}
PAPER_MILESTONES = {"resnet20": [56 / 85, 71 / 85], "resnet56": [56 / 85, 71 / 85],
                    "wrn20": [0.5, 0.75], "vgg11": [0.5, 0.75]}
CPU_PLAN = {
    # model: (train_subset, epochs per training, first-stage width; 0: the paper's network).
    # WRN-20 and VGG-11 (Figs. 6-7) on ResNet-20's cut, 160 SGD steps per training. VGG-11 at
    # full width (about 4x ResNet-20's time per step on one core); WRN-20 at width 32, half the
    # paper's 64 (at 64 it is about 10x ResNet-20's time per step, some 4 core-hours for the
    # three methods): still twice ResNet-20's width.
    "resnet20": (4000, 5, 0),
    "resnet56": (4000, 5, 0),
    "wrn20": (4000, 5, 32),
    "vgg11": (4000, 5, 0),
}
CPU_LAM_SCALE = 25.0
"""lambda multiplier at the cpu budget (both regularizers, keeping the paper's 3:1 ratio).
With the mask learning rate scaled by the ratio of SGD steps (below), the paper's lambda prunes
under 1% of the weights in a round; x25 prunes about two thirds in round 1 of mask-log (pilot
on the training set, notebook 02 says more)."""
CPU_ALPHA = 0.01
CPU_RESNET56_METHODS: tuple[str, ...] = ("mask_l1", "mask_log")
"""The regularizers notebook 03 trains on ResNet-56 at the cpu budget (with the dense
baseline), each with a ticket after every round (6 trainings at 3.1x ResNet-20's cost; the
committed records took 25 wall-minutes per regularizer and 4 for the dense baseline on two
workers) so that Table II's unpruned rates can be read between rounds."""


def ticket_spec(budget: str, method: str, model: str = "resnet20", dataset: str = "cifar10",
                seed: int = 0, **overrides):
    """The ``lottery_tickets`` spec of ``method`` at ``budget`` (smoke / cpu / paper).

    Reduced budgets (cpu, smoke) train each stage ``CPU_PLAN[model]`` (images, epochs; width), scale
    the mask's learning rate by the ratio of SGD steps (paper / ours, so that the loss and the
    regularizer move ``m`` as far per round as in the paper), multiply lambda by
    ``CPU_LAM_SCALE`` and train only the final ticket. ``smoke`` trains one epoch on 128
    images (:func:`smoke_images`: 32 of Tiny ImageNet's 64x64) for 2 rounds.
    """
    from ..experiments import make_spec

    if budget == "paper":
        kw = dict(epochs=PAPER_EPOCHS[model], train_subset=0, lam_scale=1.0,
                  mask_lr_scale=1.0, ticket_every_round=True)
    else:
        if model not in CPU_PLAN:
            raise ValueError(f"model={model!r} has no cpu plan; allowed: {sorted(CPU_PLAN)}")
        n, ep, width = (CPU_PLAN[model] if budget == "cpu"
                        else (smoke_images(dataset, 128), 1, CPU_PLAN[model][2]))
        scale = lt.drift_matched_scale(ep, n, paper_epochs=PAPER_EPOCHS[model])
        kw = dict(epochs=ep, train_subset=n, lam_scale=CPU_LAM_SCALE,
                  mask_lr_scale=round(scale, 1), ticket_every_round=False)
        if width:
            kw["width"] = width
        if budget == "smoke":
            kw["rounds"] = 2
    kw.update(milestones=PAPER_MILESTONES[model], alpha=CPU_ALPHA, method=method)
    kw.update(overrides)
    epochs = kw.pop("epochs")
    return make_spec("lottery", "lottery_tickets", dataset=dataset, model=model, epochs=epochs,
                     seed=seed, budget=budget, **kw)


def imp_rate_for(density: float, rounds: int = 3) -> float:
    """IMP's per-round rate that reaches ``density`` after ``rounds`` rounds, rounded to 0.01
    (so that IMP is compared with the concave method at the same final sparsity)."""
    if not 0 < density <= 1:
        raise ValueError(f"density={density} must lie in (0, 1]")
    return round(1.0 - density ** (1.0 / rounds), 2)


def imp_rounds_for(density: float, rate: float = 0.2) -> int:
    """The fewest rounds of IMP at ``rate`` per round whose density ``(1 - rate) ** rounds``
    reaches ``density`` or less (open_lth's fixed 20% per round, run until IMP is at least as
    sparse as the concave method it is compared with)."""
    if not 0 < density <= 1:
        raise ValueError(f"density={density} must lie in (0, 1]")
    if not 0 < rate < 1:
        raise ValueError(f"rate={rate} must lie in (0, 1)")
    return max(1, math.ceil(math.log(density) / math.log(1.0 - rate) - 1e-9))


CONCAVE = ("mask_l1", "mask_log")


IMP_KEY = {"mask_log": "imp", "mask_l1": "imp_l1"}  # ticket_runs' key of IMP matched to each


def ticket_runs(budget: str, model_names, dataset: str = "cifar10", n_seeds: int = 1,
                rerun: bool = False, out: dict | None = None,
                imp_at: tuple[str, ...] = ("mask_log",), **overrides) -> dict:
    """Run (or look up) the tickets of Figs. 5-7 for each network on ``dataset``: mask-l1 and
    mask-log (``n_seeds`` seeds each), then IMP at the rate that makes its rounds end at
    mask-log's final sparsity (:func:`imp_rate_for`, the sparsest seed). ``{model: {method:
    [record per seed]}}``; every network's concave runs come before any IMP run (whose rate
    needs their results), and each record goes into ``out`` (a new dict by default, returned)
    as soon as it exists, so that the planner of ``make reproduce`` sees every run that does
    not wait on another. ``overrides`` go to :func:`ticket_spec` (``ticket_every_round``).

    ``imp_at`` lists the concave methods IMP is matched to: with ``("mask_log", "mask_l1")`` a
    second IMP run ends at mask-l1's final sparsity, under the key ``"imp_l1"`` (the same
    records as ``"imp"`` when both rates round alike), so that each regularizer meets IMP at its
    own sparsity rather than at the nearest ticket of another."""
    unknown = sorted(set(imp_at) - set(IMP_KEY))
    if unknown or "mask_log" not in imp_at:
        raise ValueError(f"imp_at={imp_at!r}: must include 'mask_log'; allowed: {list(IMP_KEY)}")
    from .. import experiments as ex

    out = {} if out is None else out
    models_ = list(model_names)
    for model in models_:
        per = out.setdefault(model, {})
        for m in CONCAVE:
            per[m] = []
            for s in range(n_seeds):
                per[m].append(ex.run(ticket_spec(budget, m, model=model, dataset=dataset,
                                                 seed=s, **overrides), rerun=rerun))
    for model in models_:
        per = out[model]
        rounds = per["mask_log"][0].spec.hp["rounds"]
        for m in ("mask_log", *[m for m in imp_at if m != "mask_log"]):
            rate = imp_rate_for(min(r.metrics["final_density"] for r in per[m]), rounds)
            key = IMP_KEY[m]
            if key != "imp" and rate == per["imp"][0].spec.hp["rate"]:
                per[key] = per["imp"]
                continue
            per[key] = []
            for s in range(n_seeds):
                per[key].append(ex.run(ticket_spec(budget, "imp", model=model, dataset=dataset,
                                                   seed=s, rate=rate, **overrides), rerun=rerun))
    return out
