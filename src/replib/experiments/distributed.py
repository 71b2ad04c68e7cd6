"""``run_many(specs, workers=...)``: execute the missing runs of a sweep, here or on a Ray cluster.

The book's ``paper`` budget is hundreds of independent training runs. :func:`run_many` takes
their specs (from :func:`.plan.plan`, or built by hand), skips those whose record exists, and
executes the rest:

* **serially, in this process** by default (``workers=1`` and no ``RAY_ADDRESS``);
* **as Ray tasks** when ``workers > 1`` (a local Ray instance with that many task slots is
  started and stopped again), when ``address=`` or the ``RAY_ADDRESS`` environment variable
  names an existing cluster (``ray://head:10001`` with ``ray[client]``, or ``head:6379`` on a
  cluster node), or when the caller already called ``ray.init()``. Each task asks Ray for
  ``num_cpus`` CPUs, and on a cluster with GPUs for a share of one GPU
  (:func:`gpu_fraction`: a quarter for MNIST-scale networks, a half for small CIFAR ResNets, a
  whole GPU otherwise).

Guarantees:

* **A record is written once and whole, by the driver.** A task returns its record; the
  driver writes it to ``data/results/<paper>/<run-id>.json`` through a temporary file and a
  hard link, which fails when the record already exists, so two drivers sweeping the same
  specs never tear or overwrite a record: the second keeps the first one's and says so.
* **Worker death is survived.** Ray resubmits a task whose worker or node died, up to
  ``max_retries`` times; the task resumes from its last epoch checkpoint
  (:func:`replib.train.fit` checkpoints every epoch into ``REPLIB_CHECKPOINTS``, which on a
  cluster must be storage every node sees). The record's provenance then says
  ``resumed_from_checkpoint: true``. A run's checkpoints are deleted by the driver only
  after its record is written, so a finished run whose record could not be written (or was
  never fetched: the driver was killed) resumes from its last epoch instead of starting over.
* **A corrupt record is a failure of its run, not of the sweep.** A record file that exists
  but cannot be read is not counted as done; the run is reported in
  :attr:`SweepResult.failures` (``kind="record"``) naming the file, which is never
  overwritten: delete it and sweep again.
* **A run that fails for its own reasons** (a bad parameter, a NaN loss:
  :class:`replib.train.NonFiniteLossError`) is not retried; it is reported with its spec and
  error in :attr:`SweepResult.failures`, leaves no record, and does not stop the other runs.
  A record that cannot be *written* (a full disk, say) does stop the sweep, since every later
  run would fail the same way; its checkpoints stay, so the next sweep resumes it.
* **Provenance says where a run ran**: ``host`` and ``node_ip`` (``REPLIB_NODE``, set to the
  Ray node's IP) as for every record, plus ``ray_node_id`` and ``worker_pid`` for Ray tasks.

The driver's ``REPLIB_*`` environment variables (data, checkpoint and results folders,
offline mode, threads) are set in every task, so a task sees the paths the driver sees; on a
cluster whose nodes mount shared storage elsewhere, set them on the nodes and pass
``forward_env=()`` (the driver then deletes a finished run's checkpoints only where it sees
them: ``checkpoint_dir`` under its own ``REPLIB_CHECKPOINTS``).

A local Ray instance is started without its dashboard; Ray's usage statistics are off unless
``RAY_USAGE_STATS_ENABLED`` says otherwise (the book is built offline).

One tqdm bar covers the sweep: runs done, running (Ray: estimated from the cluster's busy CPU
and GPU slots), failed, remaining, and the ETA.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .runner import Record, execute, lookup
from .spec import RunSpec
from .store import RecordCorruptError, _jsonable, checkpoint_dir, read_record, record_path

log = logging.getLogger(__name__)

# Share of one GPU a task asks for, by model (MNIST-scale nets leave a GPU mostly idle, so
# four share one; small CIFAR ResNets two). Anything not listed asks for a whole GPU.
GPU_SHARE = {
    "lenet300": 0.25, "lenet5_caffe": 0.25, "mlp3072": 0.25,
    "resnet20": 0.5, "resnet56": 0.5, "wrn20": 0.5, "densenet40": 0.5,
}
FORWARD_PREFIX = "REPLIB_"
NOT_FORWARDED = {"REPLIB_NODE", "REPLIB_PLAN_ONLY"}


def gpu_fraction(spec: RunSpec) -> float:
    """The share of one GPU a Ray task of ``spec`` asks for (``GPU_SHARE``, default 1)."""
    return GPU_SHARE.get(spec.model, 1.0)


@dataclass
class Failure:
    """A run that left no record: its spec, the error, and whether the run itself raised
    (``kind="task"``), its worker/node was lost more often than ``max_retries`` allows
    (``kind="system"``), or its record file exists but is corrupt (``kind="record"``)."""

    spec: RunSpec
    error: str
    kind: str = "task"
    traceback: str = ""

    def __str__(self) -> str:
        return f"{self.spec.run_id} ({describe(self.spec)}): {self.error}"


@dataclass
class SweepResult:
    """What :func:`run_many` did."""

    records: dict[str, Record] = field(default_factory=dict)  # run id -> record (new ones)
    skipped: list[str] = field(default_factory=list)          # run ids whose record existed
    failures: list[Failure] = field(default_factory=list)
    nodes: dict[str, str] = field(default_factory=dict)       # run id -> node that ran it
    wall_time_s: float = 0.0
    mode: str = "serial"

    @property
    def ok(self) -> bool:
        return not self.failures

    def failed_ids(self) -> set[str]:
        return {f.spec.run_id for f in self.failures}

    def summary(self) -> str:
        s = (f"{len(self.records)} run(s) recorded, {len(self.skipped)} already recorded, "
             f"{len(self.failures)} failed ({self.mode}, {self.wall_time_s:.1f} s)")
        return "\n".join([s, *(f"  FAILED {f}" for f in self.failures)])

    def raise_for_failures(self) -> None:
        if self.failures:
            raise RuntimeError(self.summary())


def describe(spec: RunSpec) -> str:
    hp = ", ".join(f"{k}={v}" for k, v in spec.hparams)
    return (f"{spec.paper}/{spec.task} {spec.model}/{spec.dataset} seed {spec.seed}, "
            f"{spec.epochs} epochs, {spec.budget}; {hp}")


def write_record_once(spec: RunSpec, record: Mapping[str, Any]) -> bool:
    """Write ``record`` at ``record_path(spec)`` unless a record is there already.

    The JSON goes to a temporary file in the same folder, is flushed to disk, and is then
    hard-linked to the final name: ``link`` fails if the name exists, so of two concurrent
    writers exactly one wins and readers never see a partial file. Returns True when this call
    wrote the record. (Filesystems without hard links fall back to check-then-rename.)
    """
    path = record_path(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "w") as f:
            json.dump(dict(record), f, indent=1, sort_keys=True, default=_jsonable)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        except OSError:  # no hard links here (some network/FUSE filesystems)
            if path.exists():
                return False
            os.replace(tmp, path)
            return True
    finally:
        tmp.unlink(missing_ok=True)


def _import_task_modules(modules: Iterable[str]) -> None:
    for m in modules:
        importlib.import_module(m)


def execute_one(spec: RunSpec, *, task_modules: Sequence[str] = (), device=None) -> Record:
    """Execute ``spec`` (resuming from its checkpoint when one exists) and return its record,
    without writing it. This is what a worker runs. The checkpoints stay: the driver deletes
    them once the record is written (:func:`_store`), so a record that cannot be written
    leaves the run resumable."""
    _import_task_modules(task_modules)
    resumed = checkpoint_exists(spec)
    rec = execute(spec, device)
    rec["provenance"]["resumed_from_checkpoint"] = resumed
    return rec


def _ray_task(spec_json: dict, env: dict[str, str], task_modules: Sequence[str],
              threads: int) -> dict:
    """The body of a Ray task: set the driver's REPLIB_* variables, run, label the node."""
    import ray

    node_ip = ray.util.get_node_ip_address()
    changed = {**env, "REPLIB_NODE": node_ip}
    if "REPLIB_THREADS" not in env:
        changed["REPLIB_THREADS"] = str(threads)
    saved = {k: os.environ.get(k) for k in changed}
    os.environ.update(changed)
    try:
        rec = execute_one(RunSpec.from_json(spec_json), task_modules=task_modules)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    rec["provenance"]["ray_node_id"] = ray.get_runtime_context().get_node_id()
    rec["provenance"]["worker_pid"] = os.getpid()
    return dict(rec)


class _Bar:
    """One tqdm bar over the sweep: done / running / failed / remaining, with tqdm's ETA."""

    def __init__(self, total: int, show: bool | None, desc: str):
        from tqdm import tqdm

        self.total, self.done, self.failed, self.running = total, 0, 0, 0
        self.bar = tqdm(total=total, desc=desc, unit="run", disable=None if show is None
                        else not show, dynamic_ncols=True)
        self._post()

    def _post(self, refresh: bool = True) -> None:
        remaining = self.total - self.done - self.failed
        self.bar.set_postfix_str(f"done={self.done} running={self.running} "
                                 f"failed={self.failed} remaining={remaining}", refresh=refresh)

    def finish(self, ok: bool) -> None:
        if ok:
            self.done += 1
        else:
            self.failed += 1
        self.running = max(0, self.running - 1)
        self._post(refresh=False)
        self.bar.update(1)

    def set_running(self, n: int) -> None:
        if n != self.running:
            self.running = n
            self._post()

    def close(self) -> None:
        self.bar.close()


def _forwarded_env(forward_env: Sequence[str] | Mapping[str, str] | None) -> dict[str, str]:
    if forward_env is None:
        return {k: v for k, v in os.environ.items()
                if k.startswith(FORWARD_PREFIX) and k not in NOT_FORWARDED}
    if isinstance(forward_env, Mapping):
        return {str(k): str(v) for k, v in forward_env.items()}
    return {k: os.environ[k] for k in forward_env if k in os.environ}


def _check_args(workers, max_retries, num_cpus, num_gpus) -> None:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers={workers!r} must be an integer >= 1")
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ValueError(f"max_retries={max_retries!r} must be an integer >= 0")
    if num_cpus is not None and not (isinstance(num_cpus, (int, float)) and num_cpus > 0):
        raise ValueError(f"num_cpus={num_cpus!r} must be a number > 0 or None")
    if num_gpus is not None and not callable(num_gpus) and not (
            isinstance(num_gpus, (int, float)) and num_gpus >= 0):
        raise ValueError(f"num_gpus={num_gpus!r} must be a number >= 0, a function of the "
                         "spec, or None (automatic)")


def run_many(
    specs: Iterable[RunSpec],
    workers: int = 1,
    *,
    address: str | None = None,
    num_gpus: float | Callable[[RunSpec], float] | None = None,
    num_cpus: float | None = None,
    resources: Mapping[str, float] | Callable[[RunSpec], Mapping[str, float]] | None = None,
    max_retries: int = 2,
    keep_checkpoints: bool = False,
    task_modules: Sequence[str] = (),
    forward_env: Sequence[str] | Mapping[str, str] | None = None,
    progress: bool | None = None,
    ray_init: Mapping[str, Any] | None = None,
) -> SweepResult:
    """Execute the specs that have no record yet; return what happened (see the module doc).

    ``workers``: task slots of a local Ray instance (1: serial, in this process). ``address``
    (or ``RAY_ADDRESS``): an existing Ray cluster. ``num_gpus``: share of a GPU per task (None:
    :func:`gpu_fraction` when the cluster has GPUs, else 0). ``num_cpus``: CPUs per task (None:
    1 with a GPU, else the local CPUs divided among the workers, 1 on a cluster); torch uses
    that many threads unless ``REPLIB_THREADS`` says otherwise. ``resources``: extra Ray
    resources per task (a dict, or a function of the spec: to pin runs to nodes).
    ``max_retries``: resubmissions after a worker/node death. ``task_modules``: modules to
    import before running (tasks registered outside ``replib.tasks``). ``progress``: show the
    bar (None: when stderr is a terminal).
    """
    _check_args(workers, max_retries, num_cpus, num_gpus)
    t0 = time.time()
    unique: dict[str, RunSpec] = {}
    for s in specs:
        if not isinstance(s, RunSpec):
            raise TypeError(f"run_many needs RunSpec objects, got {type(s).__name__}")
        unique.setdefault(s.run_id, s)
    result = SweepResult()
    todo = []
    for s in unique.values():
        path = record_path(s)
        if not path.exists():
            todo.append(s)
            continue
        try:
            read_record(path)
        except RecordCorruptError as exc:
            result.failures.append(_corrupt(s, exc))
        else:
            result.skipped.append(s.run_id)
    if result.skipped:
        log.info("%d of %d runs already recorded", len(result.skipped), len(unique))
    address = address or os.environ.get("RAY_ADDRESS") or None
    use_ray = workers > 1 or address is not None or _ray_initialized()
    if todo:
        if use_ray:
            result.mode = "ray"
            _run_ray(todo, result, workers=workers, address=address, num_gpus=num_gpus,
                     num_cpus=num_cpus, resources=resources, max_retries=max_retries,
                     keep_checkpoints=keep_checkpoints, task_modules=task_modules,
                     env=_forwarded_env(forward_env), progress=progress,
                     ray_init=dict(ray_init or {}))
        else:
            _run_serial(todo, result, keep_checkpoints=keep_checkpoints,
                        task_modules=task_modules, progress=progress)
    result.wall_time_s = time.time() - t0
    for f in result.failures:
        log.error("run failed: %s", f)
    log.info("%s", result.summary().splitlines()[0])
    return result


def _ray_initialized() -> bool:
    """True when this process already called ``ray.init()`` (never imports Ray itself)."""
    import sys

    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def _corrupt(spec: RunSpec, exc: RecordCorruptError) -> Failure:
    return Failure(spec, f"{type(exc).__name__}: {exc} (run_many never overwrites a record: "
                   "delete the file, then run the sweep again)", "record")


def _store(spec: RunSpec, rec: Mapping[str, Any], result: SweepResult, node: str,
           keep_checkpoints: bool) -> bool:
    """Write the record of a finished run, then delete its checkpoints (never before: a run
    whose record could not be written must stay resumable). Returns False, with the run in
    ``result.failures``, when a corrupt record file holds its place."""
    if write_record_once(spec, rec):
        result.records[spec.run_id] = Record(rec)
    else:  # another driver recorded it first: keep that one, whole
        log.warning("%s was recorded meanwhile by another driver; keeping that record",
                    spec.run_id)
        try:
            result.records[spec.run_id] = lookup(spec)
        except RecordCorruptError as exc:
            result.failures.append(_corrupt(spec, exc))
            return False
    result.nodes[spec.run_id] = node
    if not keep_checkpoints:
        shutil.rmtree(checkpoint_dir(spec), ignore_errors=True)
    return True


def _run_serial(todo: list[RunSpec], result: SweepResult, *, keep_checkpoints: bool,
                task_modules: Sequence[str], progress: bool | None) -> None:
    import traceback

    bar = _Bar(len(todo), progress, "sweep (serial)")
    try:
        for spec in todo:
            bar.set_running(1)
            try:
                rec = execute_one(spec, task_modules=task_modules)
            except Exception as exc:  # the run's own failure: report it, go on
                result.failures.append(Failure(spec, f"{type(exc).__name__}: {exc}", "task",
                                               traceback.format_exc()))
                bar.finish(False)
                continue
            bar.finish(_store(spec, rec, result, rec["provenance"].get("host", ""),
                              keep_checkpoints))
    finally:
        bar.close()


def _run_ray(todo: list[RunSpec], result: SweepResult, *, workers: int, address: str | None,
             num_gpus, num_cpus, resources, max_retries: int, keep_checkpoints: bool,
             task_modules: Sequence[str], env: dict[str, str], progress: bool | None,
             ray_init: dict[str, Any]) -> None:
    try:
        import ray
        from ray.exceptions import RayError, RayTaskError
    except ImportError as exc:
        raise ImportError("workers > 1 or RAY_ADDRESS needs Ray: pip install 'replib[ray]' "
                          "(or 'ray[client]' for ray:// addresses)") from exc

    started = False
    if not ray.is_initialized():
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        kwargs: dict[str, Any] = {"log_to_driver": False}  # task logs stay in Ray's log files
        if address:
            kwargs["address"] = address
        else:
            cpus_each = num_cpus or max(1, (os.cpu_count() or 1) // workers)
            kwargs.update(num_cpus=int(math.ceil(workers * cpus_each)), include_dashboard=False)
        kwargs.update(ray_init)
        ray.init(**kwargs)
        started = True
        local = not address
    else:
        local = False
    try:
        cluster = ray.cluster_resources()
        has_gpu = cluster.get("GPU", 0) > 0
        remote = ray.remote(_ray_task)
        bar = _Bar(len(todo), progress, f"sweep (ray, {int(cluster.get('CPU', 0))} CPUs, "
                                        f"{int(cluster.get('GPU', 0))} GPUs)")
        pending: dict[Any, RunSpec] = {}
        asks: dict[str, tuple[float, float]] = {}
        for spec in todo:
            if callable(num_gpus):
                gpus = float(num_gpus(spec))
            elif num_gpus is not None:
                gpus = float(num_gpus)
            else:
                gpus = gpu_fraction(spec) if has_gpu else 0.0
            if num_cpus is not None:
                cpus = float(num_cpus)
            elif gpus > 0 or not local:
                cpus = 1.0
            else:
                cpus = float(max(1, (os.cpu_count() or 1) // workers))
            opts: dict[str, Any] = {"num_cpus": cpus, "max_retries": max_retries,
                                    "retry_exceptions": False}
            if gpus > 0:
                opts["num_gpus"] = gpus
            res = resources(spec) if callable(resources) else resources
            if res:
                opts["resources"] = dict(res)
            ref = remote.options(**opts).remote(spec.to_json(), env, tuple(task_modules),
                                                max(1, int(cpus)))
            pending[ref] = spec
            asks[spec.run_id] = (cpus, gpus)
        last_poll = 0.0
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                for ref in ready:
                    spec = pending.pop(ref)
                    try:
                        rec = ray.get(ref)
                    except RayTaskError as exc:
                        cause = getattr(exc, "cause", None) or exc
                        result.failures.append(Failure(
                            spec, f"{type(cause).__name__}: {cause}", "task", str(exc)))
                        bar.finish(False)
                        continue
                    except RayError as exc:  # worker/node lost more often than max_retries
                        result.failures.append(Failure(
                            spec, f"{type(exc).__name__}: {exc}", "system", str(exc)))
                        bar.finish(False)
                        continue
                    bar.finish(_store(spec, rec, result,
                                      rec["provenance"].get("ray_node_id", ""),
                                      keep_checkpoints))
                if pending and time.time() - last_poll > 2.0:
                    last_poll = time.time()
                    bar.set_running(_estimate_running(ray, pending, asks))
        except KeyboardInterrupt:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        finally:
            bar.close()
    finally:
        if started:
            ray.shutdown()


def _estimate_running(ray, pending: Mapping[Any, RunSpec], asks: Mapping[str, tuple]) -> int:
    """Runs in flight that hold resources: busy CPU (or GPU) slots / the per-task ask."""
    try:
        total, free = ray.cluster_resources(), ray.available_resources()
    except Exception:  # the estimate is cosmetic; never let it break the sweep
        return 0
    cpus = min((a[0] for a in asks.values()), default=1.0) or 1.0
    gpu_asks = [a[1] for a in asks.values() if a[1] > 0]
    busy = (total.get("CPU", 0) - free.get("CPU", 0)) / cpus
    if gpu_asks:
        busy = max(busy, (total.get("GPU", 0) - free.get("GPU", 0)) / min(gpu_asks))
    return int(min(len(pending), max(0, round(busy))))


def checkpoint_exists(spec: RunSpec) -> bool:
    """True when ``spec`` has an epoch checkpoint to resume from."""
    ck = checkpoint_dir(spec)
    return ck.exists() and any(Path(ck).rglob("*.pt"))
