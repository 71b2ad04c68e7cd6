"""Render the Compute page's generated parts from committed records (no timing, no training).

``python benchmarks/report.py [book_dir]`` writes

* ``<book>/_generated/compute_table.md``: the newest full (non ``--quick``) record in
  ``benchmarks/results/`` per device type, as Markdown tables (machine, loop ratios, input
  pipeline, optimizer overheads, implied per-epoch times, GPU epochs when recorded);
* ``<book>/_generated/compute_reproduce.md``: the wall time of ``make reproduce`` per budget:
  the **measured** training time summed over the run records in ``data/results/`` (what a
  from-scratch rerun retrains), and for the ``paper`` budget an **estimate** from the ProxNS
  paper's RTX 2080 epoch times (see :func:`paper_estimate`); whether a GPU was used at all is
  said from the records (:func:`gpu_sentence`: a ``cuda`` benchmark record, run records on a
  CUDA device).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from bench import find_item, reference_variant  # benchmarks/bench.py, beside this file

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

OPT_NAMES = {
    "sgd": "SGD (momentum 0.9, wd 1e-4)",
    "prox_sgd": "ProxSGD",
    "sqrt_prox_sgd": "SqrtProxSGD",
    "rda": "RDA (w0 = 0)",
    "rda_init_anchor": "RDA (w0 = init)",
    "irda_step2": "IRDA, step 2 (retraining)",
    "masked_sgd": "MaskedSGD",
    "adam": "Adam",
    "prox_adam": "ProxAdam",
    "sgd+proximal_slimming": "SGD + ProximalSlimming",
}
MODEL_NAMES = {"lenet300": "LeNet-300-100", "lenet5_caffe": "LeNet-5-Caffe",
               "resnet20": "ResNet-20", "mlp3072": "MLP 3072-1024-1024", "vgg19": "VGG-19",
               "resnet18": "ResNet-18", "preresnet164": "ResNet-164 (pre-act.)",
               "resnet56": "ResNet-56", "wrn20": "WRN-20", "vgg11": "VGG-11",
               "vgg16": "VGG-16", "densenet40": "DenseNet-40",
               "preresnet110": "ResNet-110 (pre-act. bottleneck)"}
# The CPU calibration of the design notes (shared/design/experiments.md, "2 cores, batch 128"),
# shown beside our own measurement so the reader sees whether it holds.
DESIGN_CALIBRATION_S = {("lenet300", True): 2.0, ("lenet300", False): 2.0,
                        ("lenet5_caffe", True): 27.0, ("mlp3072", False): 15.0,
                        ("mlp3072", True): 15.0, ("resnet20", True): 170.0,
                        ("resnet20", False): 450.0}


# The goal of `make bench` against the usual DataLoader recipe: `fit` this many times faster on
# a whole training step of the MNIST-scale networks (and on the MNIST input pipeline alone).
DATALOADER_GOAL = 5.0
DATALOADER_GOAL_MODELS = ("lenet300", "lenet5_caffe")


def _m(name: str) -> str:
    return MODEL_NAMES.get(name, name)


def _f(v, spec: str = ".2f") -> str:
    return "—" if v is None else format(v, spec)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def newest_records(results: Path = RESULTS) -> dict[str, dict]:
    """The newest full record per device type (``cpu``, ``cuda``), by its ``date``."""
    best: dict[str, dict] = {}
    for path in sorted(results.glob("*.json")):
        rec = json.loads(path.read_text())
        if rec.get("settings", {}).get("quick"):
            continue
        kind = rec["machine"]["device"].split(":")[0]
        if kind not in best or rec["date"] > best[kind]["date"]:
            best[kind] = dict(rec, _file=path.name)
    return best


def render(rec: dict) -> str:
    """One benchmark record as Markdown (machine, then one table per section)."""
    m = rec["machine"]
    where = m.get("gpu") or m["cpu"]
    out = [
        f"**Record** `{rec.get('_file', '')}`: {rec['date']}, {where}, {m['cpu_count']} CPU "
        f"cores, {m['threads']} torch thread(s), torch {m['torch']}"
        f"{', torchvision ' + m['torchvision'] if 'torchvision' in m else ''}; "
        f"load average (1, 5, 15 min) {rec.get('loadavg_start')} at the start and "
        f"{rec.get('loadavg_end')} at the end; {rec['settings']['repeats']} repeats; "
        f"total {rec['wall_s']:.0f} s. {rec['method']}\n",
        goals(rec),
    ]
    clock_note = ("CPU time of the process" if rec.get("clock", "cpu") == "cpu"
                  else "wall clock")
    if "loops" in rec:
        items = rec["loops"]["items"]

        def med(model, variant):
            for it in items:
                if it["model"] == model and it["variant"] == variant:
                    return it["median_s"] * 1e3
            return None

        rows = []
        for r in rec["loops"]["ratios"]:
            n = r["model"]
            rows.append([_m(n), _f(med(n, "bare"), ".1f"), _f(med(n, "replib"), ".1f"),
                         _f(med(n, "replib_aug"), ".1f"), _f(med(n, "dataloader_w0"), ".1f"),
                         _f(med(n, "dataloader_w2"), ".1f"), _f(r["replib_over_bare"]),
                         _f(r["dataloader_w0_over_replib"]),
                         _f(r["dataloader_w2_over_replib_wall"]),
                         _f(r["contiguous_over_channels_last"])])
        out += [f"\n**Training step** (ms per step of batch 128, forward + backward + SGD; "
                f"medians; {clock_note}). *bare*: hand-written loop over pre-normalized, "
                f"pre-shuffled tensors; *replib*: `fit`; *+aug*: `fit` with pad-4 crop and "
                f"flip; *DL w0 / w2*: torchvision dataset + per-sample transforms + "
                f"`DataLoader` with 0 / 2 worker processes (with the same augmentation on "
                f"CIFAR-10, so there it is compared with *+aug*; *DL w2* on the wall clock). "
                f"Ratios: replib / bare (goal <= 1.10), DataLoader / replib (goal >= "
                f"{DATALOADER_GOAL:g} on MNIST nets), contiguous / channels_last (how much "
                f"faster channels_last is).\n\n",
                _table(["model", "bare", "replib", "+aug", "DL w0", "DL w2 (wall)",
                        "replib/bare", "DL w0/replib", "DL w2/replib (wall)", "contig./CL"],
                       rows)]
    if "data" in rec:
        rows = [[r["dataset"], _f(1e3 * r["replib_batch_s"], ".2f"),
                 _f(r["dataloader_w0_over_replib"], ".1f"),
                 _f(r["dataloader_w2_over_replib_wall"], ".1f")]
                for r in rec["data"]["ratios"]]
        out += [f"\n**Input pipeline alone** (no model: producing one normalized batch of 128; "
                f"CIFAR-10 with pad-4 crop and flip; {clock_note}).\n\n",
                _table(["dataset", "replib ms/batch", "DL w0 / replib",
                        "DL w2 / replib (wall)"], rows)]
    if "optim" in rec:
        rows = []
        for r in rec["optim"]["ratios"]:
            rows.append([_m(r["model"]), OPT_NAMES.get(r["optimizer"], r["optimizer"]),
                         _f(1e3 * r["step_s"], ".3f"), _f(r["step_over_sgd"]),
                         _f(r["train_step_over_sgd_derived"], ".3f"),
                         _f(r["train_step_over_sgd_measured"], ".3f"),
                         _f(r["step_over_adam"])])
        out += [f"\n**Sparse optimizers** (ms per `step()` on fixed gradients, median of "
                f"individually timed steps, {clock_note}; *step/SGD*: the step alone "
                "(goal <= 1.30); "
                "*train step/SGD*: forward + backward + step, derived as (fwd_bwd + step) / "
                "(fwd_bwd + SGD step), and measured directly on LeNet-300-100).\n\n",
                _table(["model", "optimizer", "step ms", "step/SGD", "train step/SGD",
                        "measured", "step/Adam"], rows)]
    if "loops" in rec:
        rows = []
        for r in rec["loops"]["epoch_estimates"]:
            design = DESIGN_CALIBRATION_S.get((r["model"], r["channels_last"]))
            if r["variant"] == "replib_aug":
                design = None
            label = {"replib": "", "replib_contiguous": " (contiguous)",
                     "replib_aug": " (+aug)"}[r["variant"]]
            rows.append([_m(r["model"]) + label, r["dataset"],
                         "yes" if r["channels_last"] else "no", str(r["steps_per_epoch"]),
                         _f(r["epoch_s"], ".1f"), _f(design, ".0f")])
        out += ["\n**CPU seconds per epoch** implied by the steady-state step time above "
                "(whole training split, batch 128, this machine at this load), beside the "
                "design notes' calibration for a free 2-core machine.\n\n",
                _table(["model", "dataset", "channels_last", "steps", "measured s/epoch",
                        "design notes s/epoch"], rows)]
    if rec.get("gpu_epochs"):
        rows = [[_m(r["model"]), str(r["batch_size"]), _f(r["epoch_s"], ".1f"),
                 _f(r["first_epoch_s"], ".1f")] for r in rec["gpu_epochs"]]
        out += ["\n**GPU epochs** (CIFAR-10, whole split and augmentation on the GPU, bf16, "
                "channels_last).\n\n",
                _table(["model", "batch", "s/epoch", "first epoch s"], rows)]
    return "".join(out)


def goals(rec: dict) -> str:
    """The issue's three goals, each judged on this record (a verdict per row)."""
    rows = []
    factors = dataloader_factors(rec)
    if "loops" in rec:
        for r in rec["loops"]["ratios"]:
            v = r["replib_over_bare"]
            rows.append(["replib's loop within 10% of the bare loop", _m(r["model"]),
                         f"{v:.3f}x", "met" if v <= 1.10 else "not met"])
        for g in factors:
            rows.append([f">= {DATALOADER_GOAL:g}x faster than the DataLoader pipeline (its "
                         "faster worker setting), whole training step", _m(g.model),
                         f"{g.fit.value:.2f}x against {_setting(g.fit)} (the bare loop: "
                         f"{g.bare.value:.2f}x against {_setting(g.bare)}, "
                         f"{BARE_WORDS[g.bare.verdict(DATALOADER_GOAL)]})",
                         g.fit.verdict(DATALOADER_GOAL)])
    if "data" in rec:
        v = faster_setting(setting_factors(rec["data"].get("items", []), "replib",
                                           dataset="mnist"))
        if v is not None:
            rows.append([f">= {DATALOADER_GOAL:g}x faster than the DataLoader pipeline (its "
                         "faster worker setting), input pipeline alone", "MNIST",
                         f"{v.value:.1f}x against {_setting(v)}", v.verdict(DATALOADER_GOAL)])
    if "optim" in rec:
        sparse = [r for r in rec["optim"]["ratios"] if r["optimizer"] not in ("sgd", "adam")]
        for key, what in (("step_over_sgd", "optimizer step alone"),
                          ("train_step_over_sgd_derived", "whole training step")):
            bad = sorted((r for r in sparse if r[key] > 1.3), key=lambda r: -r[key])
            worst = ", ".join(f"{OPT_NAMES.get(r['optimizer'], r['optimizer'])} on "
                              f"{_m(r['model'])} {r[key]:.2f}x" for r in bad[:3])
            rows.append([f"each sparse optimizer within 1.3x of SGD ({what})",
                         f"{len(sparse) - len(bad)} of {len(sparse)} (optimizer, model) pairs",
                         f"over: {worst}{', ...' if len(bad) > 3 else ''}" if bad
                         else f"worst {max(r[key] for r in sparse):.2f}x",
                         "met" if not bad else "not met"])
    if not rows:
        return ""
    return "\n**Goals of the benchmark, judged on this record.**\n\n" + _table(
        ["goal", "where", "value", "verdict"], rows) + dataloader_verdict(rec, factors)


# The DataLoader pipeline's worker settings, and the clocks' names in the text.
WORKER_SETTINGS = {"dataloader_w0": "0 workers", "dataloader_w2": "2 workers"}
CLOCK_NAMES = {"cpu": "CPU time", "wall": "wall clock"}
# The least noise band of a factor against the DataLoader (relative): a factor is within the
# noise of the goal where the goal lies within the range of its per-repeat ratios, widened to
# at least this much either side of the factor (three repeats say little about the spread).
NOISE_FLOOR = 0.05


@dataclass(frozen=True)
class Factor:
    """How many times faster a loop (or input pipeline) is than one DataLoader setting.

    ``value``: the ratio of the two medians, both on ``clock`` (the DataLoader item's clock:
    CPU time of the process with 0 workers on the CPU, wall clock with workers or on CUDA).
    ``lo``/``hi``: its noise band, the range of the per-repeat ratios (repeat r of the
    DataLoader over repeat r of the loop; repeats are interleaved, so the two ran back to
    back), widened to at least ``NOISE_FLOOR`` either side of ``value``."""

    setting: str
    clock: str
    value: float
    lo: float
    hi: float
    repeats: tuple[float, ...] = ()

    def verdict(self, goal: float) -> str:
        """``met``, ``not met``, or ``undecided`` where ``goal`` lies within the noise band."""
        if self.lo > goal:
            return "met"
        if self.hi < goal:
            return "not met"
        return "undecided (within noise)"


def setting_factors(items: list[dict], against: str, **match) -> list[Factor]:
    """The factor of the item ``variant=against`` (among ``items`` matching ``match``) against
    each DataLoader worker setting the items hold, each on that setting's own clock."""
    ref = find_item(items, variant=against, **match)
    out = []
    for setting in WORKER_SETTINGS:
        dl = find_item(items, variant=setting, **match)
        if ref is None or dl is None:
            continue
        clock = dl.get("clock", "cpu")
        value = dl[f"median_{clock}_s"] / ref[f"median_{clock}_s"]
        per = tuple(a / b for a, b in zip(dl.get(f"times_{clock}", []),
                                          ref.get(f"times_{clock}", [])))
        out.append(Factor(setting, clock, value,
                          min((*per, value * (1 - NOISE_FLOOR))),
                          max((*per, value * (1 + NOISE_FLOOR))), per))
    return out


def faster_setting(factors: list[Factor]) -> Factor | None:
    """The factor against the DataLoader's faster worker setting: the smallest factor (None
    where no setting was measured)."""
    return min(factors, key=lambda f: f.value, default=None)


@dataclass(frozen=True)
class GoalFactors:
    """One MNIST-scale network: `fit`'s and the bare loop's factor against the DataLoader's
    faster worker setting, and against every setting measured."""

    model: str
    fit: Factor
    bare: Factor
    fit_settings: list[Factor]
    bare_settings: list[Factor]


def dataloader_factors(rec: dict) -> list[GoalFactors]:
    """Per MNIST-scale network of the record's loops: how many times faster `fit`'s training
    step is than the DataLoader pipeline's (its faster worker setting), and the same for the
    bare loop, the fastest loop one can write: what any training loop could reach at most."""
    items = rec.get("loops", {}).get("items", [])
    out = []
    for r in rec.get("loops", {}).get("ratios", []):
        if r["model"] not in DATALOADER_GOAL_MODELS:
            continue
        fit = setting_factors(items, reference_variant(items, r["model"]), model=r["model"])
        bare = setting_factors(items, "bare", model=r["model"])
        if fit and bare:
            out.append(GoalFactors(r["model"], faster_setting(fit), faster_setting(bare),
                                   fit, bare))
    return out


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _setting(f: Factor) -> str:
    return f"{WORKER_SETTINGS[f.setting]}, {CLOCK_NAMES[f.clock]}"


BARE_WORDS = {"met": f"over {DATALOADER_GOAL:g}x", "not met": f"under {DATALOADER_GOAL:g}x",
              "undecided (within noise)": f"within the noise of {DATALOADER_GOAL:g}x"}


def _described(f: Factor, settings: list[Factor]) -> str:
    """``4.93x against 2 workers (wall clock; per repeat 4.61-5.16x; against 0 workers, CPU
    time: 6.26x)``."""
    lo, hi = (f"{x:.2f}" for x in (min(f.repeats, default=0), max(f.repeats, default=0)))
    extra = [] if not f.repeats else [f"per repeat {lo}–{hi}x" if lo != hi
                                      else f"every repeat {lo}x"]
    extra += [f"against {WORKER_SETTINGS[o.setting]}, {CLOCK_NAMES[o.clock]}: {o.value:.2f}x"
              for o in settings if o.setting != f.setting]
    return (f"{f.value:.2f}x against {WORKER_SETTINGS[f.setting]} ({CLOCK_NAMES[f.clock]}"
            + "".join(f"; {e}" for e in extra) + ")")


def dataloader_verdict(rec: dict, fac: list | None = None) -> str:
    """The DataLoader goal on a whole training step, judged on this record in words: per
    network whether `fit` reaches it, and, where not, whether any loop could (the bare loop's
    factor: under the goal, within the noise of it, or over it) and what share of the
    DataLoader step the network's own step (the bare loop's) takes. ``fac``: the record's
    :func:`dataloader_factors`, where the caller has them."""
    fac = dataloader_factors(rec) if fac is None else fac
    if not fac:
        return ""
    goal, share = f"{DATALOADER_GOAL:g}x", f"{100 / DATALOADER_GOAL:g}%"
    out = [f"\n**The {goal} goal on a whole training step**, judged on this record against the "
           f"DataLoader pipeline's faster worker setting (the one with the smaller factor). "
           f"Each factor is a ratio of medians on one clock, the one its DataLoader setting "
           f"is timed on (named with it; the wall clock where worker processes do the work). "
           f"A factor is within the noise of {goal} where {goal} lies within the range of its "
           f"per-repeat "
           f"ratios (repeat r of the DataLoader over repeat r of the loop, timed back to "
           f"back), widened to at least {NOISE_FLOOR:.0%} either side of the factor, and "
           f"there the record cannot decide."]
    for g in fac:
        fit = _described(g.fit, g.fit_settings)
        bare = _described(g.bare, g.bare_settings)
        own = f"{100 / g.bare.value:.1f}%"
        fit_v, bare_v = g.fit.verdict(DATALOADER_GOAL), g.bare.verdict(DATALOADER_GOAL)
        if fit_v == "met":
            out.append(f"{_m(g.model)}: reached, `fit` {fit}.")
        elif fit_v != "not met":
            out.append(f"{_m(g.model)}: undecided, `fit` {fit}, within the noise of {goal}.")
        elif bare_v == "not met":
            out.append(f"{_m(g.model)}: not reached, `fit` {fit}, and no training loop could "
                       f"reach it: even the bare loop, the fastest one can write, is {bare}, "
                       f"because the network's own forward, backward and update (the bare "
                       f"loop's step), which no input pipeline shortens, take {own} of the "
                       f"DataLoader pipeline's step, more than the {share} the goal allows.")
        elif bare_v == "met":
            out.append(f"{_m(g.model)}: not reached, `fit` {fit}, although the bare loop "
                       f"reaches it, at {bare}: there `fit`'s own overhead over the bare loop "
                       f"is what is missing.")
        else:
            out.append(f"{_m(g.model)}: not reached, `fit` {fit}, and the record cannot "
                       f"decide whether any training loop could reach it: the bare loop, the "
                       f"fastest one can write, is {bare}, within the noise of {goal} (the "
                       f"network's own step, which no input pipeline shortens, takes {own} of "
                       f"the DataLoader pipeline's step, against at most {share} for the goal).")
    return " ".join(out) + "\n"


# ---------------------------------------------------------------- make reproduce


def measured_training(results_root: Path) -> dict[str, dict]:
    """Per budget: the number of run records and the sum of their recorded wall times."""
    out: dict[str, dict] = {}
    for path in sorted(results_root.rglob("*.json")):
        try:
            rec = json.loads(path.read_text())
            budget = rec["spec"]["budget"]
            wall = float(rec["provenance"]["wall_time_s"])
        except (KeyError, ValueError, TypeError, json.JSONDecodeError):
            continue
        b = out.setdefault(budget, {"runs": 0, "wall_s": 0.0, "papers": {}, "devices": set()})
        b["runs"] += 1
        b["wall_s"] += wall
        paper = rec["spec"].get("paper", "?")
        b["papers"][paper] = b["papers"].get(paper, 0.0) + wall
        b["devices"].add(rec["provenance"].get("device", "?"))
    return out


# Per-epoch seconds of the ProxNS paper's baselines on an RTX 2080 (Table 2a, batch 64).
PAPER_EPOCH_S = {"vgg19": 38.10, "densenet40": 117.45, "preresnet164": 146.41}
# Which measured net each other net is scaled from (by forward FLOPs): plain / wide nets from
# VGG-19, thin deep residual nets from ResNet-164.
SCALE_FROM = {"vgg11": "vgg19", "vgg16": "vgg19", "resnet18": "vgg19", "wrn20": "vgg19",
              "resnet20": "preresnet164", "resnet56": "preresnet164",
              "preresnet110": "preresnet164"}
# Cost of one epoch of each data set in CIFAR epochs (50,000 images of 32x32), the unit of the
# per-epoch seconds above: the networks' FLOPs grow with the pixels (they end in a global pool).
# MNIST's 60,000 images of 28x28 cost about the same with a conv net (0.92x the pixels); Tiny
# ImageNet's 100,000 images of 64x64 eight times as much; an ILSVRC2012 epoch of ResNet-18
# with its ImageNet stem (1,281,167 images, 3.63 GFLOPs each against the CIFAR ResNet-18's
# 1.11) about 84 times as much, JPEG decoding not counted.
EPOCH_DATASETS = {"cifar10": 1.0, "cifar100": 1.0, "mnist": 1.0, "fashionmnist": 1.0,
                  "tinyimagenet": 8.0, "imagenet": 84.0}


def _forward_flops(names) -> dict[str, float]:
    import torch

    from replib import metrics, models

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {n: float(metrics.flops(models.get(n), models.input_shape(n))) for n in names}
    finally:
        torch.set_num_threads(threads)


def paper_epoch_s(flops: dict[str, float]) -> dict[str, float]:
    """Estimated RTX 2080 seconds per CIFAR epoch: Table 2a where measured, else scaled."""
    est = dict(PAPER_EPOCH_S)
    for n, ref in SCALE_FROM.items():
        est[n] = PAPER_EPOCH_S[ref] * flops[n] / flops[ref]
    return est


def paper_workload(plan=None) -> tuple[list[tuple], list[str], dict[str, str]]:
    """The conv-net trainings ``make reproduce BUDGET=paper`` would run, read off the planner
    (:func:`replib.experiments.plan.plan` of every notebook at the ``paper`` budget): rows of
    (paper, notebook, model, dataset, runs, training epochs with every stage of a run counted
    by :func:`~replib.experiments.plan.training_epochs`). A run shared by two notebooks counts
    once, under the first. Also returns the notebooks whose plan is incomplete (later runs
    depend on results of earlier ones, so only the first wave is counted) and planning
    errors per notebook."""
    from replib.experiments.plan import plan as make_plan
    from replib.experiments.plan import training_epochs

    if plan is None:
        plan = make_plan(sorted((ROOT / "notebooks").glob("*/[0-9]*.ipynb")), "paper")
    known = set(PAPER_EPOCH_S) | set(SCALE_FROM)
    groups: dict[tuple, list[int]] = {}
    seen: set[str] = set()
    for nb in plan.notebooks:
        for spec in nb.specs:
            if spec.run_id in seen or spec.model not in known:
                continue
            if spec.dataset not in EPOCH_DATASETS:
                continue
            seen.add(spec.run_id)
            g = groups.setdefault((spec.paper, nb.notebook.stem, spec.model, spec.dataset),
                                  [0, 0])
            g[0] += 1
            g[1] += training_epochs(spec)
    rows = [(*k, runs, epochs) for k, (runs, epochs) in groups.items()]
    partial = [f"{nb.notebook.parent.name}/{nb.notebook.stem}" for nb in plan.notebooks
               if nb.blocked_cells and any(k[1] == nb.notebook.stem for k in groups)]
    errors = {f"{nb.notebook.parent.name}/{nb.notebook.stem}": nb.error.splitlines()[-1]
              for nb in plan.notebooks if nb.error}
    return rows, partial, errors


def paper_estimate(plan=None) -> tuple[list[list[str]], float, list[str], dict[str, str]]:
    rows_in, partial, errors = paper_workload(plan)
    per_epoch = paper_epoch_s(_forward_flops(sorted(set(PAPER_EPOCH_S) | set(SCALE_FROM))))
    rows, total = [], 0.0
    for paper, nb, model, dataset, runs, epochs in rows_in:
        factor = EPOCH_DATASETS[dataset]
        hours = epochs * per_epoch[model] * factor / 3600
        total += hours
        src = "Table 2a" if model in PAPER_EPOCH_S else f"scaled from {_m(SCALE_FROM[model])}"
        if factor != 1:
            src += f", x{factor:g} for {dataset}"
        rows.append([paper, nb, _m(model), dataset, str(runs), str(epochs),
                     f"{per_epoch[model] * factor:.0f} ({src})", f"{hours:.1f}"])
    return rows, total, partial, errors


def unloadable_datasets() -> list[str]:
    """The data sets of ``replib.data`` that are not on disk (intact) here; nothing is
    downloaded to find out."""
    from replib import data

    return [n for n in data.names() if not data.available(n, download=False)[0]]


def gpu_sentence(gpu_record: dict | None, devices: list[str]) -> str:
    """Whether a GPU was used to build this book, from the records: the newest ``cuda``
    benchmark record (:func:`newest_records`) and the devices of the run records."""
    gpu_runs = [d for d in devices if d.startswith("cuda")]
    if gpu_record is None and not gpu_runs:
        return ("No GPU was used to build this book (no `cuda` record in `benchmarks/results/`, "
                "no run record on a CUDA device).")
    used = []
    if gpu_record is not None:
        m = gpu_record["machine"]
        used.append(f"the benchmark record `{gpu_record.get('_file', '')}` "
                    f"({m.get('gpu') or m['device']}, the GPU section of the tables above)")
    if gpu_runs:
        used.append(f"run records on {', '.join(gpu_runs)} (in the measured table)")
    return (f"A GPU was used for {_and(used)}; the estimate below still rests on the ProxNS "
            f"paper's RTX 2080 times, not on those measurements.")


def render_reproduce(results_root: Path, n_notebooks: int, gpu_record: dict | None = None) -> str:
    """The reproduce estimate; ``gpu_record``: the newest cuda benchmark record, if any."""
    meas = measured_training(results_root)
    out = []
    rows = []
    for budget in ("smoke", "cpu", "paper"):
        b = meas.get(budget)
        if b is None:
            rows.append([budget, "0", "—", "—"])
            continue
        per_paper = ", ".join(f"{p} {w / 3600:.2f} h" for p, w in sorted(b["papers"].items()))
        rows.append([budget, str(b["runs"]), f"{b['wall_s'] / 3600:.2f} h", per_paper])
    out += [f"**Measured**: training time recorded in the run records now in `data/results/` "
            f"({n_notebooks} notebooks in `notebooks/`). A from-scratch `make reproduce` at "
            f"a budget retrains these runs (less any record no notebook asks for yet, such "
            f"as the first half of an unfinished pair kept to resume from), so their summed "
            f"wall time, on the machine "
            f"and under the load each record names, is the estimate for that budget (plus "
            f"notebook execution and the book build, minutes). Smoke records are git-ignored "
            f"and only present where `make test` ran.\n\n",
            _table(["budget", "runs recorded", "training wall time", "by paper"], rows)]
    devices = sorted(set().union(*(b["devices"] for b in meas.values()))) if meas else []
    if devices:
        out.append(f"\nDevices in these records: {', '.join(devices)}.\n")
    rows, total, partial, errors = paper_estimate()
    out += [f"\n**Estimated, not measured: the `paper` budget on a GPU.** "
            f"{gpu_sentence(gpu_record, devices)} The runs are those the planner finds in the "
            f"notebooks at the `paper` budget (`python -m replib.experiments.reproduce "
            f"--budget paper --plan-only notebooks/*/*.ipynb`), one seed per setting where the "
            f"notebooks use one (the papers average up to five); *epochs* counts every stage of "
            f"a run (IMP's and the masks' rounds and tickets, iRDA's Step 2, fine-tuning). "
            f"Seconds per epoch "
            f"are the ProxNS paper's own RTX 2080 measurements (Table 2a, baselines, batch 64) "
            f"where it reports the network, else scaled from VGG-19 (plain and wide nets) or "
            f"ResNet-164 (thin residual nets) by forward FLOPs; an MNIST epoch is taken to cost "
            f"a CIFAR one. Total: **about {total:.0f} GPU-hours on an RTX 2080**, i.e. "
            f"{total / 24:.0f} GPU-days; MNIST-scale and MLP networks add minutes (their `cpu` "
            f"budget already runs the paper's settings, see the measured table). A current GPU "
            f"with replib's whole-dataset, bf16, channels_last path should be several times "
            f"faster than the 2080 figures, but that factor was "
            f"{'not measured' if gpu_record is None else 'not applied'} here.\n"]
    if partial:
        out.append(f"\nA lower bound: the planner sees only the first wave of runs. Runs "
                   f"that depend on results of earlier ones (IMP at a rate matched to a mask's "
                   f"sparsity, original NS at proximal NS's pruned fraction, a value chosen on "
                   f"validation) appear only once those results exist; the notebooks whose "
                   f"cells waited on a result while planning are {', '.join(partial)}.\n")
    absent = unloadable_datasets()
    if absent:
        out.append(f"\nAlso a lower bound because the notebooks ask for no run of a data set "
                   f"that cannot be loaded where they run (`replib.data.available`), and "
                   f"{', '.join(absent)} could not be loaded where this book was built: "
                   f"their runs are not in the table (a machine with the data, or with internet, "
                   f"plans those of iRDA Table 3, ProxNS Tables 1 and 2b and the lottery "
                   f"paper's Figs. 5-7 and 9).\n")
    if errors:
        out.append("\nPlanning failed for " + "; ".join(f"{k} ({v})" for k, v in errors.items())
                   + ": its runs are missing from the table.\n")
    out += ["\n", _table(["paper", "notebook", "model", "dataset", "runs", "epochs",
                          "s/epoch (RTX 2080)", "GPU-hours"], rows)]
    return "".join(out)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    book = Path(argv[0]) if argv else ROOT / "book"
    out_dir = book / "_generated"
    out_dir.mkdir(parents=True, exist_ok=True)
    recs = newest_records()
    parts = []
    for kind in ("cpu", "cuda"):
        if kind in recs:
            parts.append(f"### {'CPU' if kind == 'cpu' else 'GPU'}\n\n" + render(recs[kind]))
        elif kind == "cuda":
            parts.append("### GPU\n\nNo GPU record yet: `python benchmarks/bench.py --device "
                         "cuda` on a CUDA machine writes one (per-epoch times of ResNet-20, "
                         "VGG-19, ResNet-18 and ResNet-164 on CIFAR-10 included).\n")
    if not recs:
        parts.append("_No benchmark record in `benchmarks/results/` yet: run `make bench`._\n")
    (out_dir / "compute_table.md").write_text("\n".join(parts))
    results_root = ROOT / "data" / "results"
    n_nb = len(list((ROOT / "notebooks").glob("*/[0-9]*.ipynb")))
    (out_dir / "compute_reproduce.md").write_text(
        render_reproduce(results_root, n_nb, recs.get("cuda")))
    for name in ("compute_table.md", "compute_reproduce.md"):
        print(out_dir / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
