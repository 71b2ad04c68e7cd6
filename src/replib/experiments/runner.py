"""``run(spec)``: load the record when it exists, otherwise train, measure and record.

This is what lets ``make book`` render real numbers without training, lets a notebook resume
after a crash (the task checkpoints every epoch under ``data/checkpoints/``), and lets a
sweep execute on other machines before the notebooks render (see :mod:`.distributed`).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import data as data_mod
from .. import default_device
from ..train import flush_denormals
from .spec import RunSpec, get_task
from .store import checkpoint_dir, provenance, read_record, record_path, write_json_atomic

log = logging.getLogger(__name__)


@dataclass
class RunContext:
    """What a task receives besides its spec: device, checkpoint folder, data access."""

    spec: RunSpec
    device: torch.device
    ckpt_dir: Path
    datasets: list[dict] = field(default_factory=list)

    def load(self, name: str, split: str) -> data_mod.Split:
        """Load a dataset split and remember which copy was read (for provenance)."""
        s = data_mod.load(name, split, device=self.device)
        if s.provenance not in self.datasets:
            self.datasets.append(s.provenance)
        return s

    def stage_dir(self, name: str) -> Path:
        """A checkpoint sub-folder for one stage of a multi-stage task (train, finetune...)."""
        return self.ckpt_dir / name


class Record(dict):
    """A run record (a plain dict as stored in JSON) with attribute access."""

    @property
    def spec(self) -> RunSpec:
        return RunSpec.from_json(self["spec"])

    @property
    def metrics(self) -> dict[str, Any]:
        return self["metrics"]

    @property
    def history(self) -> list[dict[str, Any]]:
        return self["history"]

    @property
    def artifacts(self) -> dict[str, Any]:
        return self.get("artifacts", {})

    @property
    def run_id(self) -> str:
        return self["run_id"]

    def history_frame(self):
        import pandas as pd

        return pd.DataFrame(self.history)


def env_threads() -> int | None:
    """``REPLIB_THREADS``: torch threads per run (None when unset or empty)."""
    text = os.environ.get("REPLIB_THREADS", "").strip()
    if not text:
        return None
    try:
        threads = int(text)
    except ValueError:
        threads = 0
    if threads < 1:
        raise ValueError(f"REPLIB_THREADS={text!r} must be an integer >= 1 (torch threads per "
                         "run); set it to one, or unset it for torch's default")
    return threads


def execute(spec: RunSpec, device: torch.device | str | None = None) -> Record:
    """Run the task of ``spec`` and return its record, without writing it."""
    task = get_task(spec.task)
    threads = env_threads()
    if threads:
        torch.set_num_threads(threads)
    flush_denormals()
    device = torch.device(device) if device is not None else default_device()
    ctx = RunContext(spec, device, checkpoint_dir(spec))
    t0 = time.time()
    out = task.fn(spec, ctx)
    missing = {"history", "metrics"} - set(out)
    if missing:
        raise RuntimeError(f"task {spec.task!r} returned no {sorted(missing)}")
    return Record(
        run_id=spec.run_id,
        spec=spec.to_json(),
        history=out["history"],
        metrics=out["metrics"],
        artifacts=out.get("artifacts", {}),
        provenance=provenance(device, time.time() - t0, ctx.datasets),
    )


def lookup(spec: RunSpec) -> Record | None:
    """The stored record of ``spec``, or None."""
    path = record_path(spec)
    return Record(read_record(path)) if path.exists() else None


def save(record: Record, spec: RunSpec, keep_checkpoints: bool = False) -> Path:
    path = record_path(spec)
    write_json_atomic(path, dict(record))
    if not keep_checkpoints:
        shutil.rmtree(checkpoint_dir(spec), ignore_errors=True)
    return path


def run(spec: RunSpec, *, rerun: bool = False, device: torch.device | str | None = None,
        keep_checkpoints: bool = False) -> Record:
    """Load the record of ``spec`` if it exists (unless ``rerun``), else run and record it."""
    if not rerun:
        rec = lookup(spec)
        if rec is not None:
            return rec
    if rerun:
        shutil.rmtree(checkpoint_dir(spec), ignore_errors=True)
    rec = execute(spec, device)
    save(rec, spec, keep_checkpoints)
    log.info("recorded %s", record_path(spec))
    return rec
