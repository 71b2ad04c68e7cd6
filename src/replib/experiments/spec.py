"""Run specifications: a frozen dataclass whose hash names its record.

A *task* (registered with :func:`task`) is the function that trains and measures; it declares
its hyperparameters with their defaults, so an unknown or malformed parameter is refused with
a ``ValueError`` naming it and the allowed values *before* any training starts.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from .budgets import check_budget

PAPERS = ("acnn", "lottery", "irda", "l0", "proxns", "compare")

# Hyperparameters that are negative only by mistake (learning rates, penalty weights, ...).
NONNEGATIVE = {
    "lr", "lam", "lambda", "lam_l1", "lam_l2", "alpha", "alpha_l0", "alpha_l2", "beta", "gamma",
    "eps", "weight_decay", "momentum", "s", "threshold", "rate", "scale", "dropout", "rewind_iter",
    # sizes and counts (images, epochs, rounds, steps...): 0 means none, or all where the task
    # says so (``train_subset=0``: the whole split)
    "train_subset", "val_size", "test_subset", "finetune_subset", "reward_val_n", "n_train",
    "n_per_digit", "dense_epochs", "finetune_epochs", "retrain_epochs", "ft_epochs", "rounds",
    "episodes", "warmup", "steps", "runs", "inner", "replay_per_layer", "k_sparse",
    "fista_iters", "width",
}
# Hyperparameters that must be > 0 (a batch of no examples trains nothing).
POSITIVE = {"batch_size", "dense_batch", "agent_batch", "eval_every", "decay_every", "threads"}


@dataclass(frozen=True)
class Task:
    name: str
    fn: Callable
    defaults: Mapping[str, Any]
    models: tuple[str, ...] | None = None  # None: any model of the registry
    datasets: tuple[str, ...] | None = None  # None: any dataset of replib.data
    doc: str = ""
    # epochs of training one run performs, every stage counted, from (hparams, epochs); None:
    # just ``epochs`` (for cost estimates, ``replib.experiments.plan.training_epochs``)
    train_epochs: Callable[[Mapping[str, Any], int], int] | None = None


TASKS: dict[str, Task] = {}


def task(name: str, *, defaults: Mapping[str, Any], models=None, datasets=None,
         train_epochs: Callable[[Mapping[str, Any], int], int] | None = None):
    """Register a training task: ``fn(spec, ctx) -> {"history": [...], "metrics": {...}}``.
    ``train_epochs(hp, epochs)``: the epochs one run trains, all stages counted (default:
    ``epochs``)."""

    def wrap(fn: Callable) -> Callable:
        TASKS[name] = Task(name, fn, dict(defaults), tuple(models) if models else None,
                           tuple(datasets) if datasets else None, fn.__doc__ or "",
                           train_epochs)
        return fn

    return wrap


def get_task(name: str) -> Task:
    from .. import tasks  # noqa: F401  (registers the built-in tasks)

    if name not in TASKS:
        raise ValueError(f"task={name!r} is not known; allowed values: {sorted(TASKS)}")
    return TASKS[name]


# Hyperparameters added to a task after records of it were committed: ``to_json`` (and so the
# run id) leaves one out while it has the value given here, and ``from_json`` puts it back, so
# the older records keep their ids and every spec in memory carries the task's full set.
ADDED_HPARAMS: dict[str, dict[str, Any]] = {
    "lottery_tickets": {"rewind_iter": 0},
}


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines a run. Build it with :func:`make_spec` (which validates)."""

    paper: str
    task: str
    dataset: str
    model: str
    epochs: int
    seed: int = 0
    budget: str = "cpu"
    hparams: tuple[tuple[str, Any], ...] = field(default_factory=tuple)

    @property
    def hp(self) -> dict[str, Any]:
        return dict(self.hparams)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        added = ADDED_HPARAMS.get(self.task, {})
        d["hparams"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.hparams
                        if not (k in added and v == added[k])}
        return d

    @property
    def digest(self) -> str:
        blob = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha1(blob.encode()).hexdigest()[:12]

    @property
    def run_id(self) -> str:
        return f"{self.task}-{self.model}-{self.dataset}-s{self.seed}-{self.digest}"

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> RunSpec:
        hparams = dict(ADDED_HPARAMS.get(d["task"], {}), **d["hparams"])
        hp = tuple(sorted((k, _freeze(v)) for k, v in hparams.items()))
        return cls(d["paper"], d["task"], d["dataset"], d["model"], d["epochs"], d["seed"],
                   d["budget"], hp)


def _freeze(v: Any) -> Any:
    return tuple(_freeze(x) for x in v) if isinstance(v, list) else v


def _check_hparam(name: str, value: Any, default: Any) -> Any:
    """``value`` checked against the type of ``default`` (a bool default takes only bools, an
    int default only ints, a float default any number, made a float; a list default any
    sequence but a string), and against ``NONNEGATIVE`` and ``POSITIVE``."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{name}={value!r} must be a bool")
        return value
    if isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name}={value!r} must be a number")
        if isinstance(default, int) and not isinstance(value, int):
            raise ValueError(f"{name}={value!r} must be an integer (write {name}="
                             f"{int(value) if float(value).is_integer() else '...'})")
        if not math.isfinite(float(value)):
            raise ValueError(f"{name}={value!r} must be finite")
        if name in NONNEGATIVE and value < 0:
            raise ValueError(f"{name}={value!r} must be >= 0")
        if name in POSITIVE and value <= 0:
            raise ValueError(f"{name}={value!r} must be > 0")
        return float(value) if isinstance(default, float) else value
    if isinstance(default, (list, tuple)):
        if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__iter__"):
            raise ValueError(f"{name}={value!r} must be a list (e.g. {list(default)!r})")
        return _freeze(list(value))
    if default is not None and not isinstance(value, type(default)):
        raise ValueError(f"{name}={value!r} must be of type {type(default).__name__}")
    return value


def make_spec(
    paper: str,
    task: str,
    *,
    dataset: str,
    model: str,
    epochs: int,
    seed: int = 0,
    budget: str = "cpu",
    **hparams: Any,
) -> RunSpec:
    """Validate and build a :class:`RunSpec`; defaults of the task fill missing hparams."""
    from .. import data, models

    if paper not in PAPERS:
        raise ValueError(f"paper={paper!r} is not known; allowed values: {list(PAPERS)}")
    check_budget(budget)
    t = get_task(task)
    allowed_datasets = list(t.datasets) if t.datasets else data.names()
    if dataset not in allowed_datasets:
        raise ValueError(f"dataset={dataset!r} is not known to task {task!r}; "
                         f"allowed values: {allowed_datasets}")
    allowed_models = list(t.models) if t.models else models.names()
    if model not in allowed_models:
        raise ValueError(f"model={model!r} is not known to task {task!r}; "
                         f"allowed values: {allowed_models}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs={epochs!r} must be an integer >= 1")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed={seed!r} must be an integer >= 0")
    unknown = sorted(set(hparams) - set(t.defaults))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for task {task!r}; "
                         f"allowed values: {sorted(t.defaults)}")
    merged = {k: _check_hparam(k, hparams.get(k, v), v) for k, v in t.defaults.items()}
    return RunSpec(paper, task, dataset, model, epochs, seed, budget,
                   tuple(sorted(merged.items())))
