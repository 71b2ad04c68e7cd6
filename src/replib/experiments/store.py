"""Run records: ``data/results/<paper>/<run-id>.json``, written once, atomically.

A record holds the spec, the per-epoch history, the final metrics, anything small a notebook
plots (``artifacts``), and provenance: git commit, package versions, device, wall time, date,
host, and the dataset copies read. Smoke-budget records live under ``data/results/smoke/``
(git-ignored) so they never mix with the book's numbers.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any

from .. import repo_root
from .spec import RunSpec


class RecordCorruptError(ValueError):
    """A record file exists but cannot be read as a complete record."""


def results_root() -> Path:
    return Path(os.environ.get("REPLIB_RESULTS") or repo_root() / "data" / "results")


def checkpoints_root() -> Path:
    return Path(os.environ.get("REPLIB_CHECKPOINTS") or repo_root() / "data" / "checkpoints")


def record_path(spec: RunSpec) -> Path:
    base = results_root() / "smoke" if spec.budget == "smoke" else results_root()
    return base / spec.paper / f"{spec.run_id}.json"


def checkpoint_dir(spec: RunSpec) -> Path:
    return checkpoints_root() / spec.paper / spec.run_id


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write to a temporary file in the same folder, then rename: readers never see a torn
    file, and of two writers of the same record one complete version wins."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{id(obj)}.tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True, default=_jsonable)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _jsonable(x: Any) -> Any:
    if hasattr(x, "tolist"):
        return x.tolist()
    if isinstance(x, (set, tuple)):
        return list(x)
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serializable: {type(x).__name__}")


def read_record(path: Path) -> dict[str, Any]:
    try:
        rec = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RecordCorruptError(
            f"record {path} is not valid JSON ({exc}); delete it or rerun with rerun=True"
        ) from exc
    if not isinstance(rec, dict):
        raise RecordCorruptError(f"record {path} holds a JSON {type(rec).__name__}, not an "
                                 "object; delete it or rerun")
    missing = [k for k in ("spec", "metrics", "history", "provenance") if k not in rec]
    if missing:
        raise RecordCorruptError(f"record {path} lacks {missing}; delete it or rerun")
    return rec


def _git_commit() -> str:
    try:
        root = repo_root()
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, timeout=10).stdout
        return (commit or "unknown") + ("+dirty" if dirty.strip() else "")
    except Exception:
        return "unknown"


def _device_name(device) -> str:
    import torch

    if getattr(device, "type", str(device)) == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f" ({os.cpu_count()} cores)"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance(device, wall_time_s: float, datasets: list[dict]) -> dict[str, Any]:
    import numpy
    import torch
    import torchvision

    from .. import __version__

    return {
        "git_commit": _git_commit(),
        "versions": {"replib": __version__, "torch": torch.__version__,
                     "torchvision": torchvision.__version__, "numpy": numpy.__version__,
                     "python": platform.python_version()},
        "device": _device_name(device),
        "torch_threads": torch.get_num_threads(),
        "host": socket.gethostname(),
        "node_ip": os.environ.get("REPLIB_NODE", ""),
        "wall_time_s": wall_time_s,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "datasets": datasets,
    }


def load_records(paper: str, budget: str | None = None) -> list[dict[str, Any]]:
    """All records of a paper (of one budget when given)."""
    base = results_root() / "smoke" if budget == "smoke" else results_root()
    out = []
    for path in sorted((base / paper).glob("*.json")):
        if path.name.startswith("claims-"):
            continue
        rec = read_record(path)
        if budget is None or rec["spec"]["budget"] == budget:
            out.append(rec)
    return out
