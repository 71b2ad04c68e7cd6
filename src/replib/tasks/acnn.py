"""Tasks of the ACNN paper (Wang et al., Mathematics 2023; see notebooks/acnn/).

- ``acnn_search``: train the dense network (cached), search a layer-wise neuron-pruning
  strategy with the DDPG agent of :mod:`replib.rl` (``lam > 0``: ACNN, L1-proximal actor and
  critic; ``lam = 0``: the AMC-style agent, "ACNN without pro"), shrink the network to the kept
  neurons, fine-tune it, and measure error, Layers, NCR, FLOPs, search time and the agent's
  sparsity (Tables 1-7, Figs. 3-7).
- ``acnn_cges``: train the same MLP from scratch with CGES proximal steps (Table 1, 3, 5 rows).
- ``acnn_l0``: train the same MLP from scratch with L0 hard-concrete gates on neurons.

Every network is trained on the training split minus a 5,000-image validation split (AMC's
CIFAR validation size, used for all three datasets); the validation split feeds the agent's
reward and the choice of every setting the paper leaves open; the test set is only used for the
reported numbers. "Error" is the paper's accuracy loss: dense test accuracy minus the pruned
network's, in points.

The paper's tables are in :data:`PAPER` (used by the notebooks for "quoted" rows and by
``data/claims/acnn.csv``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import statistics
import time
from collections.abc import Callable, Sequence

import torch
from torch import nn

from .. import models
from ..baselines.cges import CGESStep
from ..baselines.l0hc import L0GatedMLP
from ..baselines.structure import shrink_sparse_mlp
from ..data import Split, train_val_split
from ..experiments.spec import task
from ..experiments.store import checkpoints_root, write_json_atomic
from ..metrics import count_params, evaluate, flops, neuron_compression_rate, spearman
from ..rl import (
    DDPGAgent,
    DDPGConfig,
    NeuronPruningEnv,
    check_choice,
    run_search,
    weight_sparsity,
    weight_zero_counts,
)
from ..rl.env import P_READINGS, READINGS
from ..sparsity.shrink import shrink_mlp
from ..train import _atomic_save, fit, multistep_schedule, seed_everything

log = logging.getLogger(__name__)

DATASETS = ("mnist", "fashionmnist", "cifar10")
MODEL_OF = {"mnist": "lenet300", "fashionmnist": "lenet300", "cifar10": "mlp3072"}

# --------------------------------------------------------------------------- the paper
# Tables 1-7 as printed. Layers are kept input features - kept hidden neurons.
PAPER = {
    "mnist": {
        "table": "Table 1", "table_drl": "Table 2",
        "rows": {
            "CGES": dict(error=0.36, layers=(221, 97, 94), ncr=2.87, flops=35),
            "L0": dict(error=0.23, layers=(266, 88, 33), ncr=3.06, flops=33),
            "AutoPrune": dict(error=0.22, layers=(244, 85, 37), ncr=3.23, flops=31),
            "AMC": dict(error=0.30, layers=(225, 88, 45), ncr=3.30, flops=30),
            "ACNN": dict(error=0.20, layers=(219, 81, 43), ncr=3.46, flops=28),
        },
        "drl": {
            "AMC": dict(error=(0.30, 0.12), ncr=(3.30, 0.20), time=(1835.00, 15.72),
                        spa=(0.00, 0.00)),
            "ACNN": dict(error=(0.20, 0.16), ncr=(3.46, 0.14), time=(455.00, 2.88),
                         spa=(96.00, 0.74)),
        },
        "ablation": {"ACNN without pro": dict(error=(0.21, 0.08), ncr=(3.25, 0.07)),
                     "ACNN": dict(error=(0.20, 0.16), ncr=(3.46, 0.14))},
    },
    "fashionmnist": {
        "table": "Table 3", "table_drl": "Table 4",
        "rows": {
            "CGES": dict(error=13.50, layers=(702, 15, 7), ncr=1.64, flops=60),
            "L0": dict(error=6.25, layers=(295, 80, 25), ncr=2.96, flops=34),
            "AutoPrune": dict(error=4.33, layers=(285, 85, 19), ncr=3.04, flops=32),
            "AMC": dict(error=2.40, layers=(141, 81, 42), ncr=4.48, flops=23),
            "ACNN": dict(error=2.22, layers=(185, 35, 20), ncr=4.92, flops=20),
        },
        "drl": {
            "AMC": dict(error=(2.40, 0.10), ncr=(4.48, 0.05), time=(4210.00, 11.40),
                        spa=(0.00, 0.00)),
            "ACNN": dict(error=(2.22, 0.08), ncr=(4.92, 0.04), time=(544.00, 4.15),
                         spa=(97.00, 0.50)),
        },
        "ablation": {"ACNN without pro": dict(error=(2.75, 0.62), ncr=(3.62, 0.22)),
                     "ACNN": dict(error=(2.22, 0.08), ncr=(4.92, 0.04))},
    },
    "cifar10": {
        "table": "Table 5", "table_drl": "Table 6",
        "rows": {
            "CGES": dict(error=28.70, layers=(3035, 142, 3), ncr=1.61, flops=62),
            "L0": dict(error=26.04, layers=(1036, 260, 290), ncr=3.23, flops=31),
            "AutoPrune": dict(error=24.04, layers=(900, 240, 282), ncr=3.60, flops=28),
            "AMC": dict(error=7.63, layers=(890, 317, 235), ncr=3.55, flops=27),
            "ACNN": dict(error=7.10, layers=(857, 256, 245), ncr=3.77, flops=25),
        },
        "drl": {
            "AMC": dict(error=(7.63, 0.65), ncr=(3.55, 0.25), time=(4157.00, 11.30),
                        spa=(0.00, 0.00)),
            "ACNN": dict(error=(7.10, 0.26), ncr=(3.77, 0.21), time=(756.00, 5.94),
                         spa=(97.00, 0.60)),
        },
        "ablation": {"ACNN without pro": dict(error=(7.71, 0.35), ncr=(3.60, 0.06)),
                     "ACNN": dict(error=(7.10, 0.26), ncr=(3.77, 0.21))},
    },
}
PAPER_NCR = {d: PAPER[d]["rows"]["ACNN"]["ncr"] for d in DATASETS}

# --------------------------------------------------------------------------- settings
# Dense recipes: the same as notebooks/compare/00_dense_baselines (open_lth's LeNet-300-100
# recipe; our choice for the CIFAR MLP), trained on train minus the validation split.
DENSE_RECIPES = {
    "lenet300": dict(dense_epochs=40, dense_lr=0.1, dense_momentum=0.0, dense_wd=1e-4,
                     dense_schedule="multistep"),
    "mlp3072": dict(dense_epochs=30, dense_lr=0.01, dense_momentum=0.9, dense_wd=5e-4,
                    dense_schedule="cosine"),
}
COMMON = dict(
    input_scaling="unit",   # unit: pixels / 255 in [0, 1]; standardize: dataset mean / std
    val_size=5000,          # validation split carved from train (AMC: 5,000 for CIFAR)
    train_subset=0,         # 0: all of train minus val; n: a fixed subset (smoke budget)
    test_subset=0,          # 0: the whole test split
    dense_batch=128,
    dense_seed=0,           # one dense network per dataset; seeds vary the pruning method
    **DENSE_RECIPES["lenet300"],
)
SEARCH_DEFAULTS = dict(
    COMMON,
    lam=0.0,                # L1 weight of Eqs. (6)-(7); 0 = no proximal step (AMC-style)
    beta=1.0,               # Eq. (3)
    expect_acc=0.0,         # 0: the dense network's validation accuracy
    expect_ncr=3.46,        # the user's target NCR (notebooks pass the paper's ACNN value)
    reading="sensible",     # Eq. (3): sensible | printed
    p_reading="removed",    # state feature p: removed | cumulative
    reward_val_n=0,         # 0: the whole validation split scores the reward
    episodes=900,           # AMC: 100 warm-up + 800
    warmup=100,
    lr_actor=1e-3,          # ACNN Sec. 4.3
    lr_critic=1e-3,
    tau=0.01,
    discount=1.0,
    agent_batch=64,
    hidden=300,
    replay_per_layer=100,
    sigma0=0.5,
    sigma_decay=0.95,
    finetune_lr=0.01,       # our choice: SGD, momentum 0.9, cosine, on train minus val
    finetune_momentum=0.9,
    finetune_wd=1e-4,
)
CGES_DEFAULTS = dict(
    COMMON,
    lam=1e-4,
    mu=0.8,                 # CGES code
    chvar=0.2,              # CGES code
    exact_exclusive=False,  # CGES code: one-step exclusive threshold
    lr=0.05,                # CGES code
    lr_decay=0.9,           # CGES code: x0.9 every 5000 iterations
    decay_every=5000,
    batch_size=100,         # CGES code
)
L0_DEFAULTS = dict(
    COMMON,
    lam=0.1,                # per-layer lambda (divided by N inside the penalty)
    weight_decay=5e-4,
    lr=1e-3,                # AMLab: Adam 1e-3
    batch_size=100,         # AMLab
    temperature=2.0 / 3.0,
    droprate_input=0.2,
    droprate_hidden=0.5,
)

_SEARCH_CHOICES = {"reading": READINGS, "p_reading": P_READINGS,
                   "dense_schedule": ("multistep", "cosine", "constant"),
                   "input_scaling": ("unit", "standardize")}


def _check_choices(hp: dict) -> None:
    for k, allowed in _SEARCH_CHOICES.items():
        if k in hp:
            check_choice(k, hp[k], allowed)


def _check_sizes(hp: dict) -> None:
    """The data sizes a task reads: ``val_size > 0``, ``train_subset >= 0``, ``test_subset >= 0``
    and (``acnn_search``) ``reward_val_n >= 0`` (a negative count would slice off the *last*
    images instead of keeping the first)."""
    if hp["val_size"] <= 0:
        raise ValueError(f"val_size={hp['val_size']} must be > 0")
    for k in ("train_subset", "test_subset", "reward_val_n"):
        if k in hp and hp[k] < 0:
            raise ValueError(f"{k}={hp[k]} must be >= 0 (0: all)")


# --------------------------------------------------------------------------- data and dense
def unit_scaled(split: Split) -> Split:
    """The same split with inputs scaled to [0, 1] only (no mean / std standardization).

    With standardized inputs an always-black MNIST pixel is the constant -0.42, so removing an
    input feature shifts the next layer's bias; in [0, 1] it is exactly 0 and pruning it is
    free. The CGES and L0 reference codes feed MNIST in [0, 1] (references.md); the ACNN paper
    does not say. ``input_scaling="standardize"`` keeps replib's default.
    """
    c = split.info.shape[0]
    info = dataclasses.replace(split.info, mean=(0.0,) * c, std=(1.0,) * c)
    return Split(split.name, split.split, split.images, split.labels, info, split.provenance)


def load_data(spec, ctx) -> tuple[Split, Split, Split]:
    """Train minus validation, validation (5,000 from train, seed 0), test."""
    hp = spec.hp
    _check_choices(hp)
    _check_sizes(hp)
    train = ctx.load(spec.dataset, "train")
    test = ctx.load(spec.dataset, "test")
    if hp["input_scaling"] == "unit":
        train, test = unit_scaled(train), unit_scaled(test)
    train, val = train_val_split(train, hp["val_size"], seed=0)
    if hp["train_subset"]:
        g = torch.Generator().manual_seed(1234)
        idx = torch.randperm(len(train), generator=g)[:hp["train_subset"]]
        train = train.subset(idx.to(train.labels.device), "train subset")
    if hp["test_subset"]:
        test = test.subset(torch.arange(min(len(test), hp["test_subset"]),
                                        device=test.labels.device), "test subset")
    return train, val, test


def flat_inputs(split: Split, n: int = 0) -> torch.Tensor:
    """Normalized images of a split as one ``(N, C*H*W)`` float tensor (first ``n`` if > 0)."""
    if n < 0:
        raise ValueError(f"n={n} must be >= 0 (0: all)")
    images = split.images[:n] if n else split.images
    return split.normalize(images).flatten(1)


def _dense_key(spec) -> str:
    hp = spec.hp
    keys = sorted(k for k in COMMON if k != "test_subset")
    blob = json.dumps({"dataset": spec.dataset, "model": spec.model, "budget": spec.budget,
                       **{k: hp[k] for k in keys}}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def dense_network(spec, ctx, train: Split, val: Split, test: Split) -> tuple[nn.Module, dict]:
    """The trained dense network of ``spec``'s dataset (trained once, cached on disk)."""
    hp = spec.hp
    folder = checkpoints_root() / "acnn" / f"dense-{spec.model}-{spec.dataset}-{_dense_key(spec)}"
    model = models.get(spec.model, num_classes=train.info.num_classes)
    weights = folder / "model.pt"
    if weights.exists():
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        history = json.loads((folder / "history.json").read_text())
    else:
        seed_everything(hp["dense_seed"])
        model = models.get(spec.model, num_classes=train.info.num_classes)
        opt = torch.optim.SGD(model.parameters(), lr=hp["dense_lr"],
                              momentum=hp["dense_momentum"], weight_decay=hp["dense_wd"])
        epochs = hp["dense_epochs"]
        sched = {"multistep": lambda: multistep_schedule(opt, epochs),
                 "cosine": lambda: torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs),
                 "constant": lambda: None}[hp["dense_schedule"]]()
        history = fit(model, train, epochs=epochs, optimizer=opt, scheduler=sched,
                      batch_size=hp["dense_batch"], seed=hp["dense_seed"],
                      ckpt_dir=folder / "train", device=ctx.device,
                      desc=f"dense {spec.model}/{spec.dataset}")
        folder.mkdir(parents=True, exist_ok=True)
        # two workers may train the same dense network at once (deterministic, so either copy
        # is right): per-process temporary names keep each write whole
        write_json_atomic(folder / "history.json", history)
        _atomic_save(model.state_dict(), weights)
    model = model.to(ctx.device).eval()
    info = {
        "dense_val_acc": evaluate(model, val, device=ctx.device)["acc"],
        "dense_test_acc": evaluate(model, test, device=ctx.device)["acc"],
        "dense_params": count_params(model),
        "dense_flops": flops(model, models.input_shape(spec.model)),
        "dense_neurons": list(model.sizes[:-1]),
        "dense_epochs": len(history),
        "dense_key": _dense_key(spec),
    }
    return model, info


def finetune(model: nn.Module, train: Split, epochs: int, lr: float, momentum: float, wd: float,
             batch_size: int, seed: int, device) -> tuple[list[dict], float]:
    """SGD fine-tuning of a shrunk network (cosine schedule); returns history and CPU time."""
    if epochs <= 0:
        return [], 0.0
    t0 = time.process_time()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=wd)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    hist = fit(model, train, epochs=epochs, optimizer=opt, scheduler=sched,
               batch_size=batch_size, seed=seed, device=device, desc="fine-tune")
    return hist, time.process_time() - t0


def layers_string(kept: Sequence[int]) -> str:
    """The paper's "Layers" column: kept inputs - kept hidden neurons, e.g. ``219-81-43``."""
    return "-".join(str(int(k)) for k in kept)


def _hist(values: torch.Tensor, lo: float = -0.3, hi: float = 0.3, bins: int = 60) -> dict:
    v = values.detach().flatten().float().cpu()
    counts = torch.histc(v.clamp(lo, hi), bins=bins, min=lo, max=hi)
    return {"lo": lo, "hi": hi, "counts": [int(c) for c in counts],
            "zeros": int((v == 0).sum()), "n": int(v.numel())}


def pruned_metrics(small: nn.Module, kept: Sequence[int], dense: dict, test: Split,
                   model_name: str, device) -> dict:
    """Error, NCR, FLOPs of a shrunk network against the dense one (test set)."""
    acc = evaluate(small, test, device=device)["acc"]
    f = flops(small, models.input_shape(model_name))
    ncr = neuron_compression_rate(dense["dense_neurons"], kept)
    return {
        "test_acc": acc,
        "error_pct": 100.0 * (dense["dense_test_acc"] - acc),
        "kept": [int(k) for k in kept],
        "layers": layers_string(kept),
        "ncr": ncr,
        "neurons_kept_pct": 100.0 / ncr,
        "flops": f,
        "flops_pct": 100.0 * f / dense["dense_flops"],
        "params": count_params(small),
    }


# --------------------------------------------------------------------------- acnn_search
@task("acnn_search", defaults=SEARCH_DEFAULTS, models=("lenet300", "mlp3072"),
      datasets=DATASETS)
def acnn_search(spec, ctx):
    """DDPG neuron-pruning search (ACNN if ``lam > 0``, AMC-style if 0), then fine-tuning.

    ``spec.epochs`` is the number of fine-tuning epochs of the pruned network; ``spec.seed``
    seeds the agent (the dense network is the same for every seed).
    """
    hp = spec.hp  # choices and sizes are checked by load_data, before any data is read
    if hp["warmup"] >= hp["episodes"]:
        raise ValueError(f"warmup={hp['warmup']} must be < episodes={hp['episodes']}")
    train, val, test = load_data(spec, ctx)
    dense_model, dense = dense_network(spec, ctx, train, val, test)
    expect_acc = hp["expect_acc"] or dense["dense_val_acc"]
    x_val = flat_inputs(val, hp["reward_val_n"])
    y_val = val.labels[:hp["reward_val_n"]] if hp["reward_val_n"] else val.labels
    env = NeuronPruningEnv(dense_model, x_val, y_val, beta=hp["beta"], expect_acc=expect_acc,
                           expect_ncr=hp["expect_ncr"], reading=hp["reading"],
                           p_reading=hp["p_reading"])
    cfg = DDPGConfig(hidden=hp["hidden"], lr_actor=hp["lr_actor"], lr_critic=hp["lr_critic"],
                     lam=hp["lam"], tau=hp["tau"], discount=hp["discount"],
                     batch_size=hp["agent_batch"], replay_per_layer=hp["replay_per_layer"],
                     warmup=hp["warmup"], sigma0=hp["sigma0"], sigma_decay=hp["sigma_decay"])
    agent = DDPGAgent(4, len(env.layers), cfg, seed=spec.seed)
    res = run_search(env, agent, hp["episodes"], desc=f"search {spec.dataset} s{spec.seed}")

    final = res["final"]
    kept_idx = env.net.kept_indices(final["kept"])
    small = shrink_mlp(dense_model, kept_idx).to(ctx.device)
    before = pruned_metrics(small, final["kept"], dense, test, spec.model, ctx.device)
    weights_before_ft = [m.weight.detach().clone() for m in small.modules()
                         if isinstance(m, nn.Linear)]
    ft_hist, ft_cpu = finetune(small, train, spec.epochs, hp["finetune_lr"],
                               hp["finetune_momentum"], hp["finetune_wd"], hp["dense_batch"],
                               spec.seed, ctx.device)
    after = pruned_metrics(small, final["kept"], dense, test, spec.model, ctx.device)
    best = res["best"]
    best_ncr = neuron_compression_rate(dense["dense_neurons"], best["kept"])

    dense_linears = [m for m in dense_model.modules() if isinstance(m, nn.Linear)]
    small_linears = [m for m in small.modules() if isinstance(m, nn.Linear)]
    metrics = {
        **dense,
        "expect_acc": expect_acc,
        **{k: after[k] for k in ("test_acc", "error_pct", "kept", "layers", "ncr",
                                 "neurons_kept_pct", "flops", "flops_pct", "params")},
        "error_noft_pct": before["error_pct"],
        "test_acc_noft": before["test_acc"],
        "val_acc_search": final["acc"],
        "val_return": final["return"],
        "fractions": final["fractions"],
        "search_time_s": res["time_s"],
        "search_cpu_s": res["cpu_time_s"],
        "finetune_cpu_s": ft_cpu,
        "agent_sparsity_pct": 100.0 * res["agent_sparsity"],
        "agent_updates": res["updates"],
        "evaluations": res["evaluations"],
        "best_episode": best["episode"],
        "best_kept": best["kept"],
        "best_ncr": best_ncr,
        "best_val_acc": best["acc"],
        "best_return": best["return"],
    }
    artifacts = {
        "kept_indices": {k: v.tolist() for k, v in kept_idx.items()},
        "agent_layer_sparsity": {
            f"{net}.{n}": float((p == 0).float().mean())
            for net, mod in (("actor", agent.actor), ("critic", agent.critic))
            for n, p in mod.named_parameters() if p.dim() > 1},
        "agent_actor_fc2_density": _block_density(agent.actor.fc2.weight, 30),
        "weight_hist_dense": [_hist(m.weight) for m in dense_linears],
        "weight_hist_pruned": [_hist(w) for w in weights_before_ft],
        "weight_hist_finetuned": [_hist(m.weight) for m in small_linears],
        "finetune_history": ft_hist,
    }
    history = [_compact_row(row) for row in res["history"]]
    return {"history": history, "metrics": metrics, "artifacts": artifacts}


def _compact_row(row: dict) -> dict:
    """One episode of the search history for the record: floats rounded, lists as strings."""
    out = {}
    for k, v in row.items():
        if k == "kept":
            v = layers_string(v)
        elif k == "actions":
            v = ",".join(f"{a:.4f}" for a in v)
        elif isinstance(v, float):
            v = round(v, 6)
        out[k] = v
    return out


def _block_density(w: torch.Tensor, blocks: int) -> list[list[float]]:
    """Fraction of nonzeros of ``w`` in a ``blocks x blocks`` grid (for sparsity pictures)."""
    w = (w.detach() != 0).float()
    r = torch.linspace(0, w.shape[0], blocks + 1).long()
    c = torch.linspace(0, w.shape[1], blocks + 1).long()
    return [[round(float(w[r[i]:r[i + 1], c[j]:c[j + 1]].mean()), 4) for j in range(blocks)]
            for i in range(blocks)]


# --------------------------------------------------------------------------- baselines
def _baseline_result(spec, ctx, sparse: nn.Module, dense: dict, test: Split, val: Split,
                     history: list[dict], cpu_s: float, wall_s: float, extra: dict) -> dict:
    example = flat_inputs(val, 64).view(-1, *models.input_shape(spec.model))
    small, kept = shrink_sparse_mlp(sparse.eval(), example.to(ctx.device))
    m = pruned_metrics(small, kept, dense, test, spec.model, ctx.device)
    val_acc = evaluate(small, val, device=ctx.device)["acc"]
    linears = [mod for mod in sparse.modules() if isinstance(mod, nn.Linear)]
    zeros, total = weight_zero_counts(sparse)  # the MLP's weight matrices are its Linear weights
    metrics = {**dense, **m, "val_acc": val_acc,
               "val_ncr": m["ncr"],
               "train_cpu_s": cpu_s, "train_time_s": wall_s,
               "weight_sparsity_pct": 100.0 * zeros / total, **extra}
    artifacts = {"weight_hist": [_hist(mod.weight) for mod in linears]}
    return {"history": history, "metrics": metrics, "artifacts": artifacts}


@task("acnn_cges", defaults=CGES_DEFAULTS, models=("lenet300", "mlp3072"), datasets=DATASETS)
def acnn_cges(spec, ctx):
    """CGES (Yoon & Hwang 2017) from scratch on the MLP; ``spec.epochs`` training epochs."""
    hp = spec.hp
    train, val, test = load_data(spec, ctx)
    _, dense = dense_network(spec, ctx, train, val, test)
    seed_everything(spec.seed)
    model = models.get(spec.model, num_classes=train.info.num_classes)
    opt = torch.optim.SGD(model.parameters(), lr=hp["lr"])
    hook = CGESStep(opt, hp["lam"], hp["mu"], hp["chvar"], hp["exact_exclusive"],
                    decay_every=hp["decay_every"], decay_rate=hp["lr_decay"])
    t_cpu, t_wall = time.process_time(), time.perf_counter()
    history = fit(model, train, epochs=spec.epochs, optimizer=opt, batch_size=hp["batch_size"],
                  val=val, after_step=hook, seed=spec.seed, ckpt_dir=ctx.stage_dir("train"),
                  device=ctx.device, desc=f"CGES {spec.dataset}",
                  epoch_metrics=lambda m: {"weight_sparsity": weight_sparsity(m)})
    cpu_s, wall_s = time.process_time() - t_cpu, time.perf_counter() - t_wall
    return _baseline_result(spec, ctx, model, dense, test, val, history, cpu_s, wall_s, {})


@task("acnn_l0", defaults=L0_DEFAULTS, models=("lenet300", "mlp3072"), datasets=DATASETS)
def acnn_l0(spec, ctx):
    """L0 hard-concrete gates on neurons (Louizos et al. 2018) from scratch; Adam."""
    hp = spec.hp
    train, val, test = load_data(spec, ctx)
    _, dense = dense_network(spec, ctx, train, val, test)
    seed_everything(spec.seed)
    sizes = models.get(spec.model, num_classes=train.info.num_classes).sizes
    model = L0GatedMLP(sizes, (hp["droprate_input"], hp["droprate_hidden"]), hp["temperature"])
    opt = torch.optim.Adam(model.parameters(), lr=hp["lr"])
    n_train = len(train)

    def penalty(m):
        return m.regularization(hp["lam"], n_train, hp["weight_decay"])

    def epoch_metrics(m):
        with torch.no_grad():
            open_gates = [int((g.deterministic() > 0).sum()) for g in m.gates]
        return {"expected_l0": sum(m.expected_l0()), "open_gates": sum(open_gates)}

    t_cpu, t_wall = time.process_time(), time.perf_counter()
    history = fit(model, train, epochs=spec.epochs, optimizer=opt, batch_size=hp["batch_size"],
                  penalty=penalty, seed=spec.seed, ckpt_dir=ctx.stage_dir("train"),
                  device=ctx.device, desc=f"L0 {spec.dataset}", epoch_metrics=epoch_metrics)
    cpu_s, wall_s = time.process_time() - t_cpu, time.perf_counter() - t_wall
    sparse = model.eval().to_mlp()
    return _baseline_result(spec, ctx, sparse, dense, test, val, history, cpu_s, wall_s,
                            {"expected_l0": sum(model.expected_l0())})


# --------------------------------------------------------------------------- helpers for notebooks
def recipe(dataset: str, budget: str) -> dict:
    """Dense recipe and data sizes of ``dataset`` at ``budget`` (smoke: tiny subsets)."""
    r = dict(DENSE_RECIPES[MODEL_OF[dataset]])
    if budget == "smoke":
        r.update(dense_epochs=1, train_subset=512, val_size=500, test_subset=500)
    return r


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    vals = [float(v) for v in values]
    if not vals:
        return math.nan, math.nan
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def fmt_pm(values: Sequence[float], digits: int = 2) -> str:
    m, s = mean_std(values)
    return f"{m:.{digits}f} ± {s:.{digits}f}" if len(values) > 1 else f"{m:.{digits}f}"


# --------------------------------------------------------------------------- Figs. 3-5 (01)
SETTLE_WINDOW, SETTLE_TOL = 20, 0.02   # Fig. 5: a rolling mean of the return, relative band
LOSS_BLOCK = 100                        # Fig. 3: the critic's loss averaged per 100 episodes
PAPER_SETTLE = 100                      # Sec. 4.5: "the rewards converge after about 100
# iterations"; read as training episodes after the warm-up, judged with a factor 2 of slack


def settle_episode(rec, window: int = SETTLE_WINDOW, tol: float = SETTLE_TOL) -> int:
    """The first episode after which the ``window``-episode rolling mean of the return stays
    within ``tol`` (relative) of its final value (1 where it always does)."""
    h = rec["history"]
    ret = [e["return"] for e in h]
    roll = [statistics.fmean(ret[max(0, i - window + 1):i + 1]) for i in range(len(ret))]
    end = roll[-1]
    bad = [i for i, v in enumerate(roll) if abs(v - end) > tol * abs(end)]
    return 1 if not bad else int(h[min(bad[-1] + 1, len(h) - 1)]["episode"])


def critic_loss_blocks(rec, size: int = LOSS_BLOCK) -> list[tuple[int, int, float]]:
    """Mean critic loss over consecutive blocks of ``size`` training episodes (warm-up episodes
    make no update and have no loss), counted back from the last episode, so that the last
    block is whole and only the first may be shorter: ``[(first episode, last episode, mean)]``
    in episode order."""
    h = [e for e in rec["history"] if e.get("critic_loss") is not None]
    starts = list(range(len(h) - size, -size, -size))[::-1]
    return [(int(b[0]["episode"]), int(b[-1]["episode"]),
             statistics.fmean(e["critic_loss"] for e in b))
            for b in (h[max(0, i):i + size] for i in starts)]


def convergence_claims(sweeps: dict[str, list], runs: dict[str, dict]) -> tuple[dict, dict]:
    """The claims of Figs. 3-5 per dataset (``sweeps``: the beta sweep's records, ``runs``: the
    run at the chosen beta), as booleans with a note each:

    * ``F3-<ds>-critic-loss-settles``: the critic's TD loss (Fig. 3's "training loss"; the
      actor's -Q is a value, not a loss that converges) converges and stabilizes: its mean over
      the last :data:`LOSS_BLOCK` training episodes is at most a tenth of the first block's and
      at most twice the lowest block's;
    * ``F4-<ds>-beta-raises-ncr`` / ``-beta-raises-error``: Spearman's rank correlation of the
      NCR / the fine-tuned accuracy loss against the dense network (``error_pct``, the paper's
      "error") with beta is positive, over the sweep's runs that do not collapse (every layer
      keeps at least :data:`COLLAPSE_UNITS` units; a collapse to a few neurons would make any
      trend look monotone); None where fewer than two runs are left;
    * ``F5-<ds>-reward-settles``: the return settles (:func:`settle_episode`: its
      :data:`SETTLE_WINDOW`-episode mean stays within :data:`SETTLE_TOL` of its final value)
      within 2 x :data:`PAPER_SETTLE` training episodes after the warm-up. The decay of the
      exploration noise (AMC's schedule; the paper gives none) largely sets when that happens.
    """
    values, notes = {}, {}
    for ds, rec in runs.items():
        b = critic_loss_blocks(rec)
        first, last, low = b[0][2], b[-1][2], min(x[2] for x in b)
        cid = f"F3-{ds}-critic-loss-settles"
        values[cid] = bool(last <= first / 10 and last <= 2 * low)
        notes[cid] = (f"mean critic loss {first:.3g} over episodes {b[0][0]}-{b[0][1]}, "
                      f"{last:.3g} over {b[-1][0]}-{b[-1][1]}, lowest block {low:.3g} "
                      f"(converges: last <= first / 10; stabilizes: last <= 2 x lowest); "
                      f"run {rec['run_id']}")
        warm = rec["spec"]["hparams"]["warmup"]
        ep = settle_episode(rec)
        cid = f"F5-{ds}-reward-settles"
        values[cid] = bool(ep - warm <= 2 * PAPER_SETTLE)
        notes[cid] = (f"the {SETTLE_WINDOW}-episode mean return stays within "
                      f"{100 * SETTLE_TOL:g}% of its final value from episode {ep} of "
                      f"{len(rec['history'])}, {ep - warm} training episodes after the "
                      f"{warm}-episode warm-up (paper: about {PAPER_SETTLE}; judged: at most "
                      f"{2 * PAPER_SETTLE}; the exploration noise's decay, AMC's schedule, "
                      f"largely sets it); run {rec['run_id']}")
    for ds, recs in sweeps.items():
        recs = sorted(recs, key=lambda r: r["spec"]["hparams"]["beta"])
        kept = [r for r in recs if min(r["metrics"]["kept"]) >= COLLAPSE_UNITS]
        gone = [r["spec"]["hparams"]["beta"] for r in recs if r not in kept]
        betas = [r["spec"]["hparams"]["beta"] for r in kept]
        left_out = (f"; left out, collapsed to fewer than {COLLAPSE_UNITS} units in a layer: "
                    f"beta {_fmt_list(gone)}" if gone else "")
        for what, key, label in (("ncr", "ncr", "NCR"),
                                 ("error", "error_pct", "accuracy loss, points")):
            cid = f"F4-{ds}-beta-raises-{what}"
            if len(kept) < 2:
                values[cid] = None
                notes[cid] = f"fewer than two searches of the sweep do not collapse{left_out}"
                continue
            ys = [r["metrics"][key] for r in kept]
            rho = spearman(betas, ys)
            values[cid] = None if rho != rho else bool(rho > 0)
            notes[cid] = (f"Spearman's rank correlation with beta {rho:.2f} over the seed-0 "
                          f"searches at beta {_fmt_list(betas)} ({label}: {_fmt_list(ys)})"
                          + left_out)
    return values, notes


def select_beta(records: Sequence, expect_ncr: float) -> float:
    """The beta whose searched policy comes closest to the NCR target (log ratio).

    Our rule for the unstated beta (Sec. 4.4: beta trades compression for accuracy): the user
    asks for ``expect_ncr``, and we take the beta whose agent delivers the compression closest
    to it, the rule we also use for the baselines' lambda (:func:`select_by_ncr`). Ties go to
    the smaller beta. ``records`` are ``acnn_search`` runs differing in beta; the NCR is the
    searched policy's (no test data involved). (A first rule, "the smallest beta reaching the
    target", can pick a beta at which the agent prunes a layer to one neuron: on earlier
    records it picked beta = 3 on MNIST; notebook 01 shows its pick on the current ones.)
    """
    if not records:
        raise ValueError("no records to select beta from")
    rows = sorted((r["spec"]["hparams"]["beta"], r["metrics"]["ncr"]) for r in records)
    return float(min(rows, key=lambda x: (abs(math.log(x[1] / expect_ncr)), x[0]))[0])


def select_by_return(records: Sequence, key: str = "lam") -> float:
    """The value of hparam ``key`` with the highest mean validation return of the final policy."""
    groups: dict[float, list[float]] = {}
    for r in records:
        groups.setdefault(r["spec"]["hparams"][key], []).append(r["metrics"]["val_return"])
    return float(max(groups, key=lambda k: statistics.fmean(groups[k])))


def select_by_ncr(records: Sequence, target: float, key: str = "lam") -> float:
    """The value of ``key`` whose *validation-selected* run has NCR closest to ``target``.

    Matched-compression rule for the baselines' unstated lambda: among the runs of a sweep,
    the one whose NCR is closest (in log ratio) to the NCR the paper reports for that method.
    The NCR is a property of the trained network alone (no test data involved).
    """
    if not records:
        raise ValueError("no records to select from")
    best = min(records, key=lambda r: abs(math.log(r["metrics"]["ncr"] / target)))
    return float(best["spec"]["hparams"][key])


# --------------------------------------------------------------------------- claims ledger
NOTEBOOK_OF = {"mnist": "02_mnist", "fashionmnist": "03_fashion_mnist", "cifar10": "04_cifar10_mlp"}
DS_NAME = {"mnist": "MNIST", "fashionmnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}
RUN_BY_US = ("CGES", "L0", "AMC", "ACNN")   # AutoPrune: quoted only (see 02_mnist)
# error tolerance floors (points): seed noise; CIFAR-10 has 1,000 offline test images (SE ~1.6)
ERROR_FLOOR = {"mnist": 0.2, "fashionmnist": 0.5, "cifar10": 2.0}
NCR_FLOOR = 0.2


def _row(cid, where, setting, metric, value, compare, tol, notebook):
    return {"claim_id": cid, "where": where, "setting": setting, "metric": metric,
            "paper_value": value, "compare": compare, "tolerance": round(tol, 4),
            "notebook": f"acnn/{notebook}", "not_run_reason": ""}


def flops_tolerance(flops_col: float, ncr: float, ncr_tol: float) -> float:
    """Tolerance (points) of a FLOPs % entry judged as 100/NCR: what the NCR claim's own tolerance
    ``ncr_tol`` allows for 100/NCR, plus how far the printed column sits from 100/NCR (its
    rounding; at most 1.5 points in Tables 1, 3, 5)."""
    return round(100 / (ncr - ncr_tol) - 100 / ncr + abs(flops_col - 100 / ncr), 1)


def claim_rows() -> list[dict]:
    """Every entry of Tables 1-7 for ACNN and the baselines we run, plus the speed-up claims.

    Comparison rules: ACNN's own entries are claims of quality (error at most, NCR at least,
    FLOPs and time at most, agent sparsity at least the paper's, within tolerance); entries of
    the baselines (CGES, L0, AMC, ACNN without the prox) are measurements we check with
    ``abs`` (time with ``max`` as for ACNN). Tolerances: twice the paper's standard
    deviation where it gives one, floors per dataset otherwise (:data:`ERROR_FLOOR`,
    :data:`NCR_FLOOR`); kept neurons per layer within 15%.

    The FLOPs % column is judged as what it measures: in every row of Tables 1, 3 and 5 it is
    100/NCR within 1.5 points, while the Layers column beside it implies far fewer FLOPs (e.g.
    8% for MNIST's ACNN row against the printed 28%). Our FLOPs (2 x MACs) judged against it
    would "reproduce" any network that keeps fewer neurons in the wide first layer; so ours is
    the same 100/NCR, with :func:`flops_tolerance`, and the true FLOPs are in the note.
    """
    rows = []
    for ds in DATASETS:
        p, nb, name = PAPER[ds], NOTEBOOK_OF[ds], DS_NAME[ds]
        t, td = p["table"], p["table_drl"]
        tn = t.replace("Table ", "T")
        for meth in RUN_BY_US:
            r = p["rows"][meth]
            sd = p["drl"].get(meth, {})
            own = meth == "ACNN"
            err_sd = sd.get("error", (0, 0))[1]
            ncr_sd = sd.get("ncr", (0, 0))[1]
            setting = f"{name}, {'LeNet-300-100' if ds != 'cifar10' else 'MLP 3072-1024-1024-10'}"
            w = f"{t}, {meth}"
            rows.append(_row(f"{tn}-{ds}-{meth}-error", w, setting, "error % (accuracy loss)",
                             r["error"], "max" if own else "abs",
                             max(2 * err_sd, ERROR_FLOOR[ds]), nb))
            for i, part in enumerate(("in", "h1", "h2")):
                v = r["layers"][i]
                rows.append(_row(f"{tn}-{ds}-{meth}-layers-{part}", w, setting,
                                 f"kept neurons, layer {part}", v, "abs",
                                 max(3, math.ceil(0.15 * v)), nb))
            rows.append(_row(f"{tn}-{ds}-{meth}-ncr", w, setting, "NCR", r["ncr"],
                             "min" if own else "abs", max(2 * ncr_sd, NCR_FLOOR), nb))
            rows.append(_row(f"{tn}-{ds}-{meth}-flops", w, setting,
                             "FLOPs % column (it follows 100/NCR in every row; ours: 100/NCR)",
                             r["flops"], "max" if own else "abs",
                             flops_tolerance(r["flops"], r["ncr"], max(2 * ncr_sd, NCR_FLOOR)),
                             nb))
        tdn = td.replace("Table ", "T")
        for meth in ("AMC", "ACNN"):
            d = p["drl"][meth]
            own = meth == "ACNN"
            w = f"{td}, {meth}"
            setting = f"{name}, 5 seeds"
            rows.append(_row(f"{tdn}-{ds}-{meth}-error", w, setting, "error % (mean)",
                             d["error"][0], "max" if own else "abs",
                             max(2 * d["error"][1], ERROR_FLOOR[ds]), nb))
            rows.append(_row(f"{tdn}-{ds}-{meth}-ncr", w, setting, "NCR (mean)", d["ncr"][0],
                             "min" if own else "abs", max(2 * d["ncr"][1], NCR_FLOOR), nb))
            rows.append(_row(f"{tdn}-{ds}-{meth}-time", w, setting,
                             "search time s (mean; ours: CPU time, 1 thread)", d["time"][0],
                             "max", 0, nb))
            rows.append(_row(f"{tdn}-{ds}-{meth}-spa", w, setting, "DRL SPA % (mean)",
                             d["spa"][0], "min" if own else "abs",
                             max(2 * d["spa"][1], 1.0) if own else 0.0, nb))
        ratio = p["drl"]["AMC"]["time"][0] / p["drl"]["ACNN"]["time"][0]
        rows.append(_row(f"{tdn}-{ds}-speedup", f"{td}, Time", f"{name}, 5 seeds",
                         "search time AMC / ACNN", round(ratio, 2), "min", 1.0, nb))
    for ds in DATASETS:
        name = DS_NAME[ds]
        for meth, key in (("ACNN without pro", "noprox"), ("ACNN", "acnn")):
            d = PAPER[ds]["ablation"][meth]
            own = key == "acnn"
            w = f"Table 7, {name}, {meth}"
            rows.append(_row(f"T7-{ds}-{key}-error", w, f"{name}, 5 seeds", "error % (mean)",
                             d["error"][0], "max" if own else "abs",
                             max(2 * d["error"][1], ERROR_FLOOR[ds]), "05_ablation"))
            rows.append(_row(f"T7-{ds}-{key}-ncr", w, f"{name}, 5 seeds", "NCR (mean)",
                             d["ncr"][0], "min" if own else "abs",
                             max(2 * d["ncr"][1], NCR_FLOOR), "05_ablation"))
        rows.append(_row(f"T7-{ds}-prox-helps", f"Table 7 / Sec. 4.7, {name}",
                         f"{name}, 5 seeds",
                         "ACNN has lower mean error and higher mean NCR than without prox",
                         1, "bool", 0, "05_ablation"))
    for ds in DATASETS:  # Figs. 3-5 (Secs. 4.3-4.5), rules in :func:`convergence_claims`
        name = DS_NAME[ds]
        setting = f"{name}, seed 0"
        nb = "01_agent_convergence"
        rows.append(_row(f"F3-{ds}-critic-loss-settles", f"Fig. 3, {name}", setting,
                         "the agent's training (critic TD) loss converges and stabilizes: last "
                         "100-episode mean <= first / 10 and <= 2 x lowest", 1, "bool", 0, nb))
        rows.append(_row(f"F4-{ds}-beta-raises-ncr", f"Fig. 4, {name}", setting,
                         "raising beta raises the NCR (rank correlation > 0 over the searches "
                         "that do not collapse)", 1, "bool", 0, nb))
        rows.append(_row(f"F4-{ds}-beta-raises-error", f"Fig. 4, {name}", setting,
                         "raising beta lowers the accuracy: the fine-tuned accuracy loss against "
                         "the dense network has rank correlation > 0 with beta (searches that "
                         "do not collapse)", 1, "bool", 0, nb))
        rows.append(_row(f"F5-{ds}-reward-settles", f"Fig. 5 / Sec. 4.5, {name}", setting,
                         "the rewards converge after about 100 iterations: the 20-episode mean "
                         "return stays within 2% of its final value from at most 200 training "
                         "episodes after the warm-up", 1, "bool", 0, nb))
    return rows


def write_claims_csv(path) -> None:
    """Write :func:`claim_rows` as ``data/claims/acnn.csv``."""
    import csv

    from ..experiments.claims import COLUMNS

    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for r in claim_rows():
            w.writerow(r)


def _vals(records, key):
    return [r["metrics"][key] for r in records]


def table_measurements(dataset: str, groups: dict[str, list]) -> dict[str, float]:
    """Claim id -> our value for the dataset's method table and DRL table.

    ``groups`` maps ``"ACNN"``, ``"AMC"``, ``"CGES"``, ``"L0"`` to their records (several
    seeds: the mean is used).
    """
    p = PAPER[dataset]
    tn = p["table"].replace("Table ", "T")
    tdn = p["table_drl"].replace("Table ", "T")
    out: dict[str, float] = {}
    for meth, recs in groups.items():
        if not recs:
            continue
        out[f"{tn}-{dataset}-{meth}-error"] = mean_std(_vals(recs, "error_pct"))[0]
        kept = [r["metrics"]["kept"] for r in recs]
        for i, part in enumerate(("in", "h1", "h2")):
            out[f"{tn}-{dataset}-{meth}-layers-{part}"] = mean_std([k[i] for k in kept])[0]
        out[f"{tn}-{dataset}-{meth}-ncr"] = mean_std(_vals(recs, "ncr"))[0]
        # the paper's FLOPs column follows 100/NCR (claim_rows): 100 over the NCR claim's value,
        # so that the two claims judge one statistic; our true FLOPs go in the note
        out[f"{tn}-{dataset}-{meth}-flops"] = 100.0 / out[f"{tn}-{dataset}-{meth}-ncr"]
        if meth in ("AMC", "ACNN"):
            out[f"{tdn}-{dataset}-{meth}-error"] = out[f"{tn}-{dataset}-{meth}-error"]
            out[f"{tdn}-{dataset}-{meth}-ncr"] = out[f"{tn}-{dataset}-{meth}-ncr"]
            out[f"{tdn}-{dataset}-{meth}-time"] = mean_std(_vals(recs, "search_cpu_s"))[0]
            out[f"{tdn}-{dataset}-{meth}-spa"] = mean_std(_vals(recs, "agent_sparsity_pct"))[0]
    if groups.get("AMC") and groups.get("ACNN"):
        out[f"{tdn}-{dataset}-speedup"] = (out[f"{tdn}-{dataset}-AMC-time"]
                                           / out[f"{tdn}-{dataset}-ACNN-time"])
    return out


OUT_UNITS = 10  # the ten classes: the output layer is never pruned


def layer_flops_pct(layers: Sequence[int], dense_flops: float) -> float:
    """FLOPs of an MLP with ``layers`` (kept inputs - kept hidden neurons) and ten outputs, in %
    of ``dense_flops`` (both 2 x MACs, biases not counted, as :func:`replib.metrics.flops`)."""
    sizes = [int(v) for v in layers] + [OUT_UNITS]
    return 100 * 2 * sum(a * b for a, b in zip(sizes, sizes[1:])) / dense_flops


def _fmt_list(values: Sequence[float]) -> str:
    return ", ".join(f"{v:.4g}" for v in values)


MATCHED_NCR = 1.1  # a baseline's NCR within this factor of the paper's counts as matched


def _source_note(dataset: str, meth: str, recs: list) -> str:
    """Where a method's row comes from: the seeds behind a mean (and any collapsed seed), or the
    one baseline run and how its lambda was chosen."""
    if meth in ("CGES", "L0"):
        grid = CGES_GRID[dataset] if meth == "CGES" else L0_GRID[dataset]
        lam = recs[0]["spec"]["hparams"]["lam"]
        target, ncr = PAPER[dataset]["rows"][meth]["ncr"], recs[0]["metrics"]["ncr"]
        text = (f"one run at lambda {lam:g}, the value of the grid ({_fmt_list(grid)}) whose NCR "
                f"is closest to the paper's {target} (the paper gives no lambda)")
        if abs(math.log(ncr / target)) > math.log(MATCHED_NCR):
            text += (f"; compression not matched: its NCR {ncr:.3g} is more than "
                     f"{MATCHED_NCR:g} times from the paper's, so its error is not at the "
                     f"paper's compression")
        return text
    text = f"mean of {len(recs)} seed{'s' if len(recs) > 1 else ''}"
    bad = [r for r in recs if min(r["metrics"]["kept"]) < COLLAPSE_UNITS]
    if bad and len(bad) < len(recs):
        text += "; " + ", ".join(f"seed {r['spec']['seed']} collapses to {r['metrics']['layers']}"
                                 for r in bad)
        text += " (Eq. (3) caps the NCR term, so the collapse can out-score mild pruning)"
    hp = recs[0]["spec"]["hparams"]
    if meth in ("ACNN", "AMC") and "expect_ncr" in hp and "beta" in hp:
        target = hp["expect_ncr"]
        text += (f"; the reward's E_ncr is the paper's ACNN NCR ({target:g}) and beta "
                 f"{hp['beta']:g} is the value of 01's sweep whose seed-0 ACNN search came "
                 "closest to it")
        s0 = next((r for r in recs if r["spec"]["seed"] == 0), None)
        if meth == "AMC":
            text += ", so AMC is rewarded toward the same compression"
        elif s0 is not None:
            ncr0 = s0["metrics"]["ncr"]
            if abs(math.log(ncr0 / target)) <= math.log(MATCHED_NCR):
                text += (f" (NCR {ncr0:.3g}), a run that is also seed 0 here, so the NCR is "
                         "matched to the paper's by construction and its agreement tests little")
            else:
                text += (f", but reached NCR {ncr0:.3g} only, not within {MATCHED_NCR:g} times "
                         "of it (that run is seed 0 here)")
    return text


def _per_seed(recs: list, values: Sequence[float]) -> str:
    if len(recs) < 2:
        return ""
    return (f"; median {statistics.median(values):.4g}; per seed {_fmt_list(values)}")


def _flag_median(values: dict, notes: dict, medians: dict) -> None:
    """Leave a claim unjudged (None: not run, inconclusive) where the median over seeds gets the
    other verdict than the mean, the paper's statistic: a seed collapsing to a few neurons moves
    the mean of an NCR or an error far from every typical run, so the verdict would rest on the
    choice of statistic (the mean's value and both verdicts stay in the note)."""
    from ..experiments.claims import judge, load_claims

    ledger = {c["claim_id"]: c for c in load_claims("acnn")}
    for cid, med in medians.items():
        v = values.get(cid)
        if v is None or cid not in ledger:
            continue
        on_mean, on_median = judge(ledger[cid], v), judge(ledger[cid], med)
        if on_mean != on_median:
            values[cid] = None
            notes[cid] = (f"inconclusive: the mean over seeds (the paper's statistic), {v:.4g}, "
                          f"would be {'reproduced' if on_mean else 'not reproduced'}, the median, "
                          f"{med:.4g}, {'reproduced' if on_median else 'not reproduced'}: one "
                          f"seed decides; {notes[cid]}")


def table_claims(dataset: str, groups: dict[str, list]) -> tuple[dict, dict]:
    """:func:`table_measurements` with a note per claim, for ``claims.record_claims``.

    The absolute search times are recorded as not measured (None): they are seconds of the
    paper's machine against CPU seconds of ours, which the notebooks themselves call
    incomparable; the AMC / ACNN ratio (``-speedup``) is the claim about time that we judge.
    Every other note says where the number comes from (seeds and their median, or the baseline's
    lambda) and, for FLOPs, what the paper's column measures.
    """
    values = table_measurements(dataset, groups)
    p = PAPER[dataset]
    tn = p["table"].replace("Table ", "T")
    tdn = p["table_drl"].replace("Table ", "T")
    notes: dict[str, str] = {}
    medians: dict[str, float] = {}
    for meth, recs in groups.items():
        if not recs:
            continue
        src = _source_note(dataset, meth, recs)
        kept = [r["metrics"]["kept"] for r in recs]
        if len(recs) > 1:
            for key, metric in (("error", "error_pct"), ("ncr", "ncr")):
                medians[f"{tn}-{dataset}-{meth}-{key}"] = statistics.median(_vals(recs, metric))
            medians[f"{tn}-{dataset}-{meth}-flops"] = 100.0 / medians[f"{tn}-{dataset}-{meth}-ncr"]
            for i, part in enumerate(("in", "h1", "h2")):
                medians[f"{tn}-{dataset}-{meth}-layers-{part}"] = statistics.median(
                    k[i] for k in kept)
        dense = statistics.fmean(100 * r["metrics"]["dense_test_acc"] for r in recs)
        err = _vals(recs, "error_pct")
        ft = (f"after {recs[0]['spec']['epochs']} epochs of fine-tuning; "
              if meth in ("AMC", "ACNN") else "")
        notes[f"{tn}-{dataset}-{meth}-error"] = (
            f"{src}; {ft}points below our dense network's {dense:.2f}% test accuracy"
            + _per_seed(recs, err))
        for part in ("in", "h1", "h2"):
            notes[f"{tn}-{dataset}-{meth}-layers-{part}"] = (
                src + ("; per seed " + ", ".join(layers_string(k) for k in kept)
                       if len(recs) > 1 else ""))
        notes[f"{tn}-{dataset}-{meth}-ncr"] = src + _per_seed(recs, _vals(recs, "ncr"))
        paper_layers = layer_flops_pct(p["rows"][meth]["layers"], recs[0]["metrics"]["dense_flops"])
        true_flops = statistics.fmean(_vals(recs, "flops_pct"))
        notes[f"{tn}-{dataset}-{meth}-flops"] = (
            f"{src}; ours: 100/NCR, as the paper's {p['rows'][meth]['flops']}% follows its "
            f"100/NCR ({100 / p['rows'][meth]['ncr']:.1f}%) while its own Layers column needs "
            f"{paper_layers:.1f}% of the FLOPs; our true FLOPs (2 x MACs of the kept layers) "
            f"{true_flops:.3g}%" + _per_seed(recs, _vals(recs, "neurons_kept_pct")))
        if meth in ("AMC", "ACNN"):
            for key in ("error", "ncr"):
                notes[f"{tdn}-{dataset}-{meth}-{key}"] = notes[f"{tn}-{dataset}-{meth}-{key}"]
                if f"{tn}-{dataset}-{meth}-{key}" in medians:
                    medians[f"{tdn}-{dataset}-{meth}-{key}"] = medians[
                        f"{tn}-{dataset}-{meth}-{key}"]
            cpu = _vals(recs, "search_cpu_s")
            values[f"{tdn}-{dataset}-{meth}-time"] = None
            notes[f"{tdn}-{dataset}-{meth}-time"] = (
                f"not comparable on any budget: the paper's seconds on its machine against our "
                f"CPU seconds (1 thread) on this one; ours: {statistics.fmean(cpu):.4g} CPU s "
                f"({src}); the AMC / ACNN ratio ({tdn}-{dataset}-speedup) is judged instead")
            lam = recs[0]["spec"]["hparams"]["lam"]
            notes[f"{tdn}-{dataset}-{meth}-spa"] = (
                (f"agent weights exactly zero after the prox steps at lambda {lam:g} (ours, "
                 f"chosen on MNIST validation in 05_ablation; the paper gives no lambda)"
                 if lam > 0 else "no prox step: the agent stays dense")
                + f"; {src}" + _per_seed(recs, _vals(recs, "agent_sparsity_pct")))
    if groups.get("AMC") and groups.get("ACNN"):
        amc_t, acnn_t = _vals(groups["AMC"], "search_cpu_s"), _vals(groups["ACNN"], "search_cpu_s")
        notes[f"{tdn}-{dataset}-speedup"] = (
            f"ratio of the mean search CPU times, {statistics.fmean(amc_t):.4g} s / "
            f"{statistics.fmean(acnn_t):.4g} s; both agents run dense kernels (a sparse agent "
            f"is not faster per step) and accuracy is memoized, so only the number of distinct "
            f"networks each agent asks to evaluate can differ")
    _flag_median(values, notes, medians)
    return values, notes


def ablation_measurements(dataset: str, acnn: list, noprox: list,
                          stat: Callable | None = None) -> dict[str, float]:
    """Claim id -> our value for the dataset's rows of Table 7: ``stat`` over the seeds (the
    mean, the paper's statistic, unless told otherwise)."""
    stat = stat or (lambda v: mean_std(v)[0])
    out = {}
    for key, recs in (("acnn", acnn), ("noprox", noprox)):
        out[f"T7-{dataset}-{key}-error"] = stat(_vals(recs, "error_pct"))
        out[f"T7-{dataset}-{key}-ncr"] = stat(_vals(recs, "ncr"))
    out[f"T7-{dataset}-prox-helps"] = bool(
        out[f"T7-{dataset}-acnn-error"] < out[f"T7-{dataset}-noprox-error"]
        and out[f"T7-{dataset}-acnn-ncr"] > out[f"T7-{dataset}-noprox-ncr"])
    return out


def ablation_claims(dataset: str, acnn: list, noprox: list) -> tuple[dict, dict]:
    """:func:`ablation_measurements` with a note per claim (seeds, medians, collapses)."""
    values = ablation_measurements(dataset, acnn, noprox)
    notes, medians = {}, {}
    for key, recs, meth in (("acnn", acnn, "ACNN"), ("noprox", noprox, "AMC")):
        src = _source_note(dataset, meth, recs)
        for what, metric in (("error", "error_pct"), ("ncr", "ncr")):
            notes[f"T7-{dataset}-{key}-{what}"] = src + _per_seed(recs, _vals(recs, metric))
            if len(recs) > 1:
                medians[f"T7-{dataset}-{key}-{what}"] = statistics.median(_vals(recs, metric))
    med = ablation_measurements(dataset, acnn, noprox, stat=statistics.median)
    helps = med[f"T7-{dataset}-prox-helps"]
    notes[f"T7-{dataset}-prox-helps"] = (
        f"on the means; medians over seeds: with prox error {med[f'T7-{dataset}-acnn-error']:.2f}"
        f" points at NCR {med[f'T7-{dataset}-acnn-ncr']:.3g}, without "
        f"{med[f'T7-{dataset}-noprox-error']:.2f} at {med[f'T7-{dataset}-noprox-ncr']:.3g}"
        f" (on the medians the claim {'holds' if helps else 'fails'})")
    if helps != values[f"T7-{dataset}-prox-helps"]:  # the two statistics disagree: not judged
        values[f"T7-{dataset}-prox-helps"] = None
        notes[f"T7-{dataset}-prox-helps"] = "inconclusive: " + notes[f"T7-{dataset}-prox-helps"]
    _flag_median(values, notes, medians)
    return values, notes


# --------------------------------------------------------------------------- run specifications
# The settings every notebook shares (so that a record computed by one is found by the others).
ACNN_LAMBDA = 0.01                       # chosen on MNIST validation in 05_ablation


def check_acnn_lambda(chosen: float) -> float:
    """Raise ``ValueError`` unless ``chosen`` (05_ablation's validation pick of lambda,
    :func:`select_by_return` on :func:`lambda_sweep_specs`) is :data:`ACNN_LAMBDA`, the value
    every notebook runs with; returns it when they agree."""
    if not math.isclose(float(chosen), ACNN_LAMBDA, rel_tol=1e-9, abs_tol=0.0):
        raise ValueError(f"05_ablation selects lambda = {float(chosen):g} but ACNN_LAMBDA = "
                         f"{ACNN_LAMBDA:g} is used everywhere: update ACNN_LAMBDA and rerun")
    return float(chosen)


LAMBDA_GRID = (0.0, 0.01, 0.1, 1.0)      # 05_ablation: lambda sweep (0 = no prox)
BETA_GRID = (0.1, 0.3, 1.0, 1.5, 2.0, 2.5, 3.0)  # 01_agent_convergence: Fig. 4 (1.5, 2.5: the
# CIFAR-10 agent jumped from no pruning at 1 to every layer at one neuron at 2)
# Baseline lambda grids per dataset (matched compression: the grid should bracket the NCR the
# paper reports for the method). CGES's NCR grows slowly with lambda: at 4e-3 MNIST reached
# 2.19 (paper 2.87) and Fashion-MNIST at 2e-3 1.42 (paper 1.64), so both grids were extended
# by one value (MNIST's 8e-3 collapsed to 10-unit layers, so 6e-3 too); :func:`_source_note`
# says where the chosen run's NCR is still not within MATCHED_NCR of the paper's.
CGES_GRID = {"mnist": (5e-4, 1e-3, 2e-3, 4e-3, 6e-3, 8e-3),
             "fashionmnist": (5e-4, 1e-3, 2e-3, 4e-3),
             "cifar10": (5e-4, 1e-3, 2e-3)}
# L0: lambda = 1 still kept 928 of 1,184 gates open after 29 of 50 epochs on MNIST (NCR 1.3,
# far from the paper's 3.06), so it was dropped from the grids (each L0 run costs ~10 ms per
# step on one core). 10 and 100 bracket the paper's NCR on MNIST (2.33, 4.70 against 3.06) and
# Fashion-MNIST (1.75, 4.61 against 2.96) but neither is within 1.1x of it: 30 is added there
# (MNIST 2.96; Fashion-MNIST 2.53, so 50 too).
L0_GRID = {"mnist": (10.0, 30.0, 100.0), "fashionmnist": (10.0, 30.0, 50.0, 100.0),
           "cifar10": (10.0, 100.0)}


def _pick(budget: str, smoke, cpu, paper):
    from ..experiments.budgets import pick

    return pick(budget, smoke=smoke, cpu=cpu, paper=paper)


def search_spec(dataset: str, budget: str, *, lam: float, beta: float, seed: int = 0, **over):
    """An ``acnn_search`` spec with the shared settings of ``dataset`` at ``budget``.

    cpu budget = paper budget: AMC's 900 episodes (100 warm-up + 800) and the whole
    5,000-image validation split as the reward set, on all three datasets (a CIFAR-10 search
    takes a few CPU minutes; until 2026-12 the cpu budget cut it to 400 episodes and 2,000
    reward images).
    """
    from ..experiments import make_spec

    search = _pick(budget, smoke=dict(episodes=8, warmup=4, reward_val_n=0),
                   cpu=dict(episodes=900, warmup=100, reward_val_n=0),
                   paper=dict(episodes=900, warmup=100, reward_val_n=0))
    kw = {**recipe(dataset, budget), **search, "lam": float(lam), "beta": float(beta),
          "expect_ncr": PAPER_NCR[dataset], **over}
    return make_spec("acnn", "acnn_search", dataset=dataset, model=MODEL_OF[dataset],
                     epochs=_pick(budget, 1, 10, 10), seed=seed, budget=budget, **kw)


def cges_spec(dataset: str, budget: str, *, lam: float, seed: int = 0, **over):
    """An ``acnn_cges`` spec: the code's 30k iterations at batch 100 (55 epochs of 55k images,
    67 of CIFAR-10's 45k) at the cpu and paper budgets."""
    from ..experiments import make_spec

    cifar = dataset == "cifar10"
    epochs = _pick(budget, 1, 67 if cifar else 55, 67 if cifar else 55)
    return make_spec("acnn", "acnn_cges", dataset=dataset, model=MODEL_OF[dataset],
                     epochs=epochs, seed=seed, budget=budget, lam=float(lam),
                     **recipe(dataset, budget), **over)


def l0_spec(dataset: str, budget: str, *, lam: float, seed: int = 0, **over):
    """An ``acnn_l0`` spec: AMLab trains 200 epochs, and so does every budget but smoke (about
    3-5 s per LeNet-300-100 epoch and about 50 s per MLP-3072 epoch on one core)."""
    from ..experiments import make_spec

    epochs = _pick(budget, 1, 200, 200)
    return make_spec("acnn", "acnn_l0", dataset=dataset, model=MODEL_OF[dataset],
                     epochs=epochs, seed=seed, budget=budget, lam=float(lam),
                     **recipe(dataset, budget), **over)


def beta_sweep_specs(dataset: str, budget: str, lam: float = ACNN_LAMBDA) -> list:
    """Fig. 4: one ACNN search per beta of :data:`BETA_GRID` (seed 0)."""
    return [search_spec(dataset, budget, lam=lam, beta=b) for b in grid(BETA_GRID, budget)]


def chosen_beta(dataset: str, budget: str, rerun: bool = False) -> float:
    """The beta of ``dataset`` at ``budget``: run (or look up) the sweep of
    :func:`beta_sweep_specs` and apply :func:`select_beta` with the paper's NCR as target."""
    from ..experiments import run

    recs = [run(s, rerun=rerun) for s in beta_sweep_specs(dataset, budget)]
    return select_beta(recs, PAPER_NCR[dataset])


def seed_specs(dataset: str, budget: str, beta: float, lam: float, n_seeds: int) -> list:
    """The 5-seed runs of Tables 2, 4, 6 and 7 (``lam=0``: AMC-style / without prox)."""
    return [search_spec(dataset, budget, lam=lam, beta=beta, seed=s) for s in range(n_seeds)]


# --------------------------------------------------------------------------- tables and figures
def _layers_mean(recs) -> str:
    kept = [r["metrics"]["kept"] for r in recs]
    if len(kept) == 1:
        return layers_string(kept[0])
    return "-".join(f"{mean_std([k[i] for k in kept])[0]:.0f}" for i in range(len(kept[0])))


def fmt_inverse_ncr(records: Sequence, digits: int = 1) -> str:
    """``100 / mean NCR`` over the seeds (the statistic the ledger's FLOPs claim judges, see
    :func:`table_measurements`), with the range of the per-seed ``100 / NCR`` in brackets.

    Not the mean of the per-seed ``100 / NCR``: with one seed collapsed to a few neurons the two
    differ widely (e.g. per-seed 80, 0.06, 81 give 100 / mean NCR 0.18 but a mean of 54)."""
    ncr = _vals(records, "ncr")
    text = f"{100.0 / statistics.fmean(ncr):.{digits}f}"
    if len(ncr) > 1:
        per_seed = [100.0 / v for v in ncr]
        text += f" [{min(per_seed):.{digits}f}, {max(per_seed):.{digits}f}]"
    return text


def method_table(dataset: str, groups: dict[str, list]):
    """Tables 1, 3, 5: our rows (mean over seeds) beside the paper's, AutoPrune quoted.

    ``100/NCR % (ours)`` is ``100 / mean NCR`` (the ledger's value for the FLOPs claim) with the
    range of the per-seed values in brackets (:func:`fmt_inverse_ncr`)."""
    import pandas as pd

    rows = []
    for meth, paper in PAPER[dataset]["rows"].items():
        recs = groups.get(meth) or []
        row = {"method": meth, "source": "ours" if recs else "quoted only"}
        if recs:
            row.update({
                "runs": len(recs),
                "error % (ours)": fmt_pm(_vals(recs, "error_pct")),
                "Layers (ours)": _layers_mean(recs),
                "NCR (ours)": fmt_pm(_vals(recs, "ncr")),
                "FLOPs % (ours)": fmt_pm(_vals(recs, "flops_pct"), 1),
                "100/NCR % (ours)": fmt_inverse_ncr(recs, 1),
            })
        row.update({"error % (paper)": paper["error"],
                    "Layers (paper)": layers_string(paper["layers"]),
                    "NCR (paper)": paper["ncr"], "FLOPs % (paper)": paper["flops"],
                    "100/NCR % (paper)": round(100 / paper["ncr"], 1)})
        rows.append(row)
    return pd.DataFrame(rows).fillna("")


def drl_table(dataset: str, acnn: list, amc: list):
    """Tables 2, 4, 6: AMC-style agent vs ACNN, mean ± std over seeds, beside the paper."""
    import pandas as pd

    rows = []
    for meth, recs in (("AMC", amc), ("ACNN", acnn)):
        p = PAPER[dataset]["drl"][meth]
        rows.append({
            "method": meth, "seeds": len(recs),
            "error % (ours)": fmt_pm(_vals(recs, "error_pct")),
            "error % (paper)": f"{p['error'][0]:.2f} ± {p['error'][1]:.2f}",
            "NCR (ours)": fmt_pm(_vals(recs, "ncr")),
            "NCR (paper)": f"{p['ncr'][0]:.2f} ± {p['ncr'][1]:.2f}",
            "time s, CPU (ours)": fmt_pm(_vals(recs, "search_cpu_s"), 1),
            "time s, wall (ours)": fmt_pm(_vals(recs, "search_time_s"), 1),
            "fine-tune CPU s (ours)": fmt_pm(_vals(recs, "finetune_cpu_s"), 1),
            "time s (paper)": f"{p['time'][0]:.2f} ± {p['time'][1]:.2f}",
            "DRL SPA % (ours)": fmt_pm(_vals(recs, "agent_sparsity_pct")),
            "DRL SPA % (paper)": f"{p['spa'][0]:.2f} ± {p['spa'][1]:.2f}",
        })
    return pd.DataFrame(rows)


COLLAPSE_UNITS = 10  # a seed "collapses" when some layer keeps fewer units than this


def seed_summary(name: str, records: Sequence, min_units: int = COLLAPSE_UNITS) -> str:
    """One sentence on how a method's seeds split: those that keep at least ``min_units``
    inputs / neurons in every layer (mean ± std of their NCR and error) and those that collapse
    below it (each listed), so that a bimodal mean ± std is not read as one typical run."""
    ok = [r for r in records if min(r["metrics"]["kept"]) >= min_units]
    bad = [r for r in records if min(r["metrics"]["kept"]) < min_units]
    parts = [f"{name}: {len(ok)} of {len(records)} seeds keep at least {min_units} units in "
             f"every layer"]
    if ok:
        parts[0] += (f" (NCR {fmt_pm(_vals(ok, 'ncr'))}, error {fmt_pm(_vals(ok, 'error_pct'))}"
                     f" points)")
    for r in bad:
        m = r["metrics"]
        parts.append(f"seed {r['spec']['seed']} collapses to {m['layers']} (NCR {m['ncr']:.2f}, "
                     f"error {m['error_pct']:.2f} points, validation return "
                     f"{m['val_return']:.3f})")
    text = "; ".join(parts) + "."
    if bad and ok:
        best_ok = max(r["metrics"]["val_return"] for r in ok)
        above = [r for r in bad if r["metrics"]["val_return"] > best_ok]
        text += (f" {len(above)} of the {len(bad)} collapsed policies score a higher validation "
                 f"return than the best of the others ({best_ok:.3f})"
                 + (": Eq. (3) prefers the collapse to the milder pruning the other seeds"
                    " found." if len(above) == len(bad) else "."))
    return text


def sweep_table(records: list, key: str = "lam"):
    """One row per run of a sweep: the swept value, validation and test numbers."""
    import pandas as pd

    rows = []
    for r in records:
        m = r["metrics"]
        rows.append({key: r["spec"]["hparams"][key], "seed": r["spec"]["seed"],
                     "Layers": m["layers"], "NCR": m["ncr"],
                     "val acc": m.get("val_acc", m.get("val_acc_search")),
                     "error %": m["error_pct"],
                     "error % no fine-tune": m.get("error_noft_pct"),
                     "agent SPA %": m.get("agent_sparsity_pct"),
                     "val return": m.get("val_return"),
                     "CPU s": m.get("search_cpu_s", m.get("train_cpu_s"))})
    digits = {"NCR": 3, "val acc": 4, "error %": 2, "error % no fine-tune": 2,
              "agent SPA %": 1, "val return": 4, "CPU s": 1}
    return pd.DataFrame(rows).round(digits)


def plot_methods(dataset: str, groups: dict[str, list]):
    """Figs. 6-11: test error, kept neurons (100/NCR) and time per method, ours vs paper.

    Error and time: mean ± std over seeds. Kept neurons: ``100 / mean NCR`` (the ledger's and
    :func:`method_table`'s statistic), the error bar spanning the per-seed ``100 / NCR``."""
    import matplotlib.pyplot as plt

    names = [m for m in PAPER[dataset]["rows"] if groups.get(m)]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    x = range(len(names))
    panels = (("error_pct", "error", "accuracy loss (points)"),
              ("neurons_kept_pct", None, "neurons kept % (100 / NCR)"),
              ("time", None, "time s (CPU, search or training)"))
    for ax, (key, paper_key, title) in zip(axes, panels):
        vals = []  # (height, error below, error above)
        for m in names:
            recs = groups[m]
            if key == "neurons_kept_pct":
                per_seed = [100.0 / v for v in _vals(recs, "ncr")]
                h = 100.0 / statistics.fmean(_vals(recs, "ncr"))
                vals.append((h, h - min(per_seed), max(per_seed) - h))
                continue
            if key == "time":
                v = [r["metrics"].get("search_cpu_s", r["metrics"].get("train_cpu_s"))
                     for r in recs]
            else:
                v = _vals(recs, key)
            mean, std = mean_std(v)
            vals.append((mean, std, std))
        ax.bar(x, [v[0] for v in vals], yerr=[[v[1] for v in vals], [v[2] for v in vals]],
               color="C0", label="ours")
        if paper_key is not None or key == "neurons_kept_pct":
            pv = [PAPER[dataset]["rows"][m]["error"] if paper_key else
                  100 / PAPER[dataset]["rows"][m]["ncr"] for m in names]
            ax.scatter(x, pv, color="C3", zorder=3, marker="D", label="paper")
        ax.set_xticks(list(x), names)
        ax.set_title(title)
        ax.legend()
    fig.suptitle(f"{DS_NAME[dataset]}: our runs (bars) and the paper's values (diamonds)")
    fig.tight_layout()
    return fig


LAMBDA_SWEEP_BETA = 1.0   # the lambda sweep runs before beta is chosen (05_ablation)
LAMBDA_SWEEP_SEEDS = 2


def grid(values: Sequence[float], budget: str) -> tuple:
    """A sweep grid at ``budget``: the first two values at the smoke budget, all otherwise."""
    return tuple(values[:2]) if budget == "smoke" else tuple(values)


def lambda_sweep_specs(budget: str, dataset: str = "mnist") -> list:
    """05_ablation: ACNN's lambda on MNIST, beta = 1, 2 seeds per value (0 = no prox)."""
    seeds = 1 if budget == "smoke" else LAMBDA_SWEEP_SEEDS
    return [search_spec(dataset, budget, lam=lam, beta=LAMBDA_SWEEP_BETA, seed=s)
            for lam in grid(LAMBDA_GRID, budget) for s in range(seeds)]
