"""One training loop for every experiment: ``fit``.

What it guarantees, and why the book needs it:

* **Deterministic**: batch order and augmentation of epoch ``e`` come from a generator seeded
  with ``(seed, e)``, and the global torch RNG state is saved with every checkpoint. The same
  seed twice gives the same history on CPU.
* **Resumable**: an atomic checkpoint (model, optimizer, scheduler, extra state objects, RNG,
  history) is written after every epoch. A run killed at any point and started again resumes
  from the last finished epoch and ends with the same history as an uninterrupted run.
* **Fast paths** where they pay: whole-split tensors on the device, ``channels_last`` and bf16
  autocast for conv nets on CUDA.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .data import Split, batches, num_batches
from .metrics import evaluate

log = logging.getLogger(__name__)

Penalty = Callable[[nn.Module], torch.Tensor]
StepHook = Callable[[nn.Module, int], None]
EpochMetrics = Callable[[nn.Module], dict[str, float]]


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


class CheckpointCorruptError(ValueError):
    """A checkpoint file exists but cannot be read back (truncated or corrupt)."""


class CheckpointMismatchError(ValueError):
    """A checkpoint was written by a run with other settings than the one resuming it."""


def seed_everything(seed: int) -> None:
    """Seed python and torch RNGs (the data order has its own generators)."""
    random.seed(seed)
    torch.manual_seed(seed)


def multistep_schedule(
    optimizer: torch.optim.Optimizer, epochs: int, fractions=(0.5, 0.75), gamma: float = 0.1
) -> torch.optim.lr_scheduler.MultiStepLR:
    """Step the LR by ``gamma`` at the given fractions of training (per-epoch scheduler)."""
    milestones = sorted({max(1, int(round(f * epochs))) for f in fractions})
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma)


def _progress_enabled() -> bool | None:
    env = os.environ.get("REPLIB_PROGRESS")
    if env is None:
        return None  # tqdm: show on a terminal, hide when output is not a TTY
    return env == "1"


def _atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())  # the bytes are on disk before the rename makes them the checkpoint
    os.replace(tmp, path)


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_path(ckpt_dir: Path | str) -> Path:
    return Path(ckpt_dir) / "last.pt"


_CHECKPOINT_KEYS = ("epoch", "model", "optimizer", "extra", "history", "rng")


def _load_checkpoint(ckpt: Path, device: torch.device, run: dict[str, Any],
                     scheduler: bool) -> dict:
    """Read ``ckpt`` and check that it belongs to the run described by ``run`` (the settings
    :func:`fit` stores with every checkpoint): the same settings, and no more epochs. Fewer
    epochs continue a shorter run, but only without a ``scheduler`` (its state, e.g. the
    milestones, would come from the shorter run). Checkpoints written before those settings
    were stored are accepted unless they hold more epochs than ``run["epochs"]``."""
    try:
        state = torch.load(ckpt, map_location=device, weights_only=False)
    except torch.cuda.OutOfMemoryError:
        raise
    except (pickle.UnpicklingError, EOFError, RuntimeError, ValueError, ModuleNotFoundError,
            AttributeError) as exc:  # the last two: a pickle naming a class that is gone
        raise CheckpointCorruptError(
            f"checkpoint {ckpt} cannot be read ({type(exc).__name__}: {exc}); it is truncated "
            f"or corrupt: delete it to restart that run from its first epoch"
        ) from exc
    missing = ([k for k in _CHECKPOINT_KEYS if k not in state] if isinstance(state, dict)
               else list(_CHECKPOINT_KEYS))
    if missing:
        raise CheckpointCorruptError(
            f"checkpoint {ckpt} is not a training checkpoint of replib.train.fit (it lacks "
            f"{missing}): delete it to restart that run from its first epoch"
        )
    stored = state.get("run") or {}
    differ = {k: (v, run.get(k)) for k, v in stored.items() if k != "epochs" and v != run.get(k)}
    if "epochs" not in stored:  # written before the settings were stored
        if state["epoch"] + 1 > run["epochs"]:
            differ["epochs (finished)"] = (state["epoch"] + 1, run["epochs"])
    elif stored["epochs"] > run["epochs"]:
        differ["epochs"] = (stored["epochs"], run["epochs"])
    elif stored["epochs"] < run["epochs"] and scheduler:
        differ["epochs (with a scheduler)"] = (stored["epochs"], run["epochs"])
    if differ:
        what = ", ".join(f"{k}={old!r} there but {new!r} here" for k, (old, new) in differ.items())
        raise CheckpointMismatchError(
            f"checkpoint {ckpt} was written by a run with other settings ({what}); delete it "
            f"(or rerun with rerun=True) to train from scratch, or call fit with that run's "
            f"settings to resume it"
        )
    return state


def flush_denormals() -> bool:
    """Treat subnormal floats (|x| < 1.2e-38) as zero on the CPU (flush-to-zero).

    Regularizers that drive weights towards zero (L0 gates, weight decay on gated-off columns,
    proximal steps) leave many weights subnormal; x86 CPUs then run matrix products tens of
    times slower (a 3072-1024-1024-10 MLP whose weights were 10-13% subnormal: 1.0 s per
    forward pass instead of 0.014 s). Flushing changes values below 1.2e-38 only. Returns
    whether the CPU supports it.
    """
    return bool(torch.set_flush_denormal(True))


def onednn_unsafe_convs(model: nn.Module) -> list[nn.Conv2d]:
    """The convolutions whose ``channels_last`` backward corrupts memory on some CPUs.

    With torch 2.14.1 on an AVX2-only x86 CPU (AMD EPYC, no AVX-512), oneDNN's channels_last
    weight-gradient kernel for a 1x1 convolution with stride > 1 and 2-7 input channels writes
    out of bounds: the process dies of ``free(): invalid pointer`` or ``double free``, or
    hangs, a few steps later. We measured it in isolation (``Conv2d(c, 2c, 1, stride=2)``, one
    thread): every c in 2..7 crashed; c = 1 and c >= 8, stride 1, 3x3 kernels and the
    contiguous layout did not, nor did the forward pass. Narrow networks hit it through a
    projection shortcut (ResNet-18 at a sixteenth of its width: ``4 -> 8`` channels). This
    lists those convolutions (``in_channels < 8`` is a superset of what we saw fail)."""
    return [m for m in model.modules()
            if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and max(m.stride) > 1
            and m.in_channels < 8]


def _contiguous_input(_module: nn.Module, args: tuple) -> tuple:
    return tuple(a.contiguous() if isinstance(a, torch.Tensor) else a for a in args)


def to_channels_last(model: nn.Module, device: torch.device | str | None = None) -> nn.Module:
    """``model.to(memory_format=torch.channels_last)``, except, on the CPU, the convolutions of
    :func:`onednn_unsafe_convs`: those keep the contiguous layout (weight and input), so oneDNN
    takes its NCHW kernels there. The function is the same (the gradients agree with an
    all-contiguous network's to float32 rounding, tested); only those layers lose the
    channels_last speed-up. Idempotent."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(memory_format=torch.channels_last)
    if device.type != "cpu":
        return model
    for conv in onednn_unsafe_convs(model):
        conv.to(memory_format=torch.contiguous_format)
        if not getattr(conv, "_replib_contiguous_input", False):
            conv.register_forward_pre_hook(_contiguous_input)
            conv._replib_contiguous_input = True
    return model


def fit(
    model: nn.Module,
    train: Split,
    *,
    epochs: int,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    batch_size: int = 128,
    test: Split | None = None,
    val: Split | None = None,
    penalty: Penalty | None = None,
    after_step: StepHook | None = None,
    epoch_metrics: EpochMetrics | None = None,
    extra_state: dict[str, Any] | None = None,
    pad: int = 0,
    flip: bool = False,
    seed: int = 0,
    ckpt_dir: Path | str | None = None,
    device: torch.device | str | None = None,
    channels_last: bool | None = None,
    amp: bool | None = None,
    progress: bool | None = None,
    desc: str = "train",
) -> list[dict[str, float]]:
    """Train ``model`` for ``epochs`` epochs; return the per-epoch history.

    ``penalty(model)`` is added to the loss (subgradient regularization); ``after_step`` runs
    after every optimizer step (projections, proximal steps on extra variables);
    ``epoch_metrics(model)`` adds columns (e.g. sparsity) to the history. ``extra_state``
    holds objects with ``state_dict``/``load_state_dict`` that are checkpointed too.

    A checkpoint in ``ckpt_dir`` is resumed only if it was written with the same
    ``batch_size``, ``seed`` and training-set size (the folder itself is named by the run's id
    or a hash of its settings), for at most ``epochs`` epochs (a second call with more epochs
    continues a finished run, but only without a ``scheduler``); otherwise
    :class:`CheckpointMismatchError`. An unreadable one raises :class:`CheckpointCorruptError`.
    """
    if epochs < 1:
        raise ValueError(f"epochs={epochs} must be >= 1")
    flush_denormals()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    is_conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
    cuda = device.type == "cuda"
    channels_last = (cuda and is_conv) if channels_last is None else channels_last
    amp = cuda if amp is None else amp
    model.to(device)
    if channels_last:
        to_channels_last(model, device)
    train = train.to(device)
    extra_state = extra_state or {}

    history: list[dict[str, float]] = []
    start_epoch = 0
    ckpt = checkpoint_path(ckpt_dir) if ckpt_dir is not None else None
    run = {"epochs": epochs, "batch_size": batch_size, "seed": seed, "train_size": len(train)}
    if ckpt is not None and ckpt.exists():
        state = _load_checkpoint(ckpt, device, run, scheduler is not None)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
        for name, obj in extra_state.items():
            obj.load_state_dict(state["extra"][name])
        history = state["history"]
        start_epoch = state["epoch"] + 1
        _set_rng_state(state["rng"])
        log.info("resumed %s from %s at epoch %d", desc, ckpt, start_epoch)

    steps_per_epoch = num_batches(len(train), batch_size)
    show = _progress_enabled() if progress is None else progress
    from tqdm import tqdm

    for epoch in range(start_epoch, epochs):
        model.train()
        t0 = time.perf_counter()
        total_loss = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
        it = batches(train, batch_size, shuffle=True, seed=seed * 100_003 + epoch, pad=pad,
                     flip=flip)
        bar = tqdm(it, total=steps_per_epoch, desc=f"{desc} {epoch + 1}/{epochs}",
                   disable=not show if show is not None else None, leave=False)
        for step, (x, y) in enumerate(bar):
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                out = model(x)
                loss = F.cross_entropy(out.float(), y)
            obj = loss + penalty(model) if penalty is not None else loss
            optimizer.zero_grad(set_to_none=True)
            obj.backward()
            optimizer.step()
            if after_step is not None:
                after_step(model, epoch * steps_per_epoch + step)
            total_loss += loss.detach() * len(y)
            correct += (out.argmax(1) == y).sum()
            seen += len(y)
        train_loss = float(total_loss) / seen
        if not math.isfinite(train_loss):
            raise NonFiniteLossError(f"{desc}: training loss is {train_loss} at epoch {epoch + 1}")
        row: dict[str, float] = {
            "epoch": epoch + 1,
            "lr": float(optimizer.param_groups[0].get("lr", float("nan"))),
            "train_loss": train_loss,
            "train_acc": float(correct) / seen,
            "epoch_time_s": time.perf_counter() - t0,
        }
        if scheduler is not None:
            scheduler.step()
        for name, split in (("val", val), ("test", test)):
            if split is not None:
                ev = evaluate(model, split, device=device, channels_last=channels_last, amp=amp)
                row.update({f"{name}_{k}": v for k, v in ev.items()})
        if epoch_metrics is not None:
            row.update(epoch_metrics(model))
        history.append(row)
        log.info("%s epoch %d: %s", desc, epoch + 1, row)
        if ckpt is not None:
            _atomic_save(
                {
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    "extra": {k: v.state_dict() for k, v in extra_state.items()},
                    "history": history,
                    "rng": _rng_state(),
                    "run": run,
                },
                ckpt,
            )
    if channels_last:
        model.to(memory_format=torch.contiguous_format)
    return history
