"""Plan, execute, render: listing a notebook's runs, and sweeps run serially or on Ray.

The Ray tests start real Ray processes on this machine: a local instance started by
``run_many(workers=2)``, and a two-node cluster started with ``ray start`` (a head and a
second node, different ports, one CPU and one custom resource each). Every Ray process lives
under a temporary ``--temp-dir``; teardown ends exactly those processes (by pid) and the
tests assert that none is left.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import nbformat
import pytest
from conftest import have_data

from replib import experiments as ex
from replib.experiments.distributed import checkpoint_exists, run_many, write_record_once
from replib.experiments.plan import PendingRecord, PlanPending, plan
from replib.train import NonFiniteLossError

ROOT = Path(__file__).resolve().parents[1]
HOUSE_NOTEBOOK = ROOT / "notebooks" / "compare" / "00_dense_baselines.ipynb"


class _LazyRay:
    """Ray, imported on first use: only the Ray tests touch it.

    Importing Ray loads its native libraries and gRPC's threads into the process, and the
    process that runs ``-m "not ray"`` is meant to be free of Ray (see :func:`needs_ray`);
    importing it at collection defeated that."""

    def __getattr__(self, name):
        return getattr(importlib.import_module("ray"), name)


# without Ray, the Ray tests are skipped; planning and serial sweeps still run
ray = _LazyRay() if importlib.util.find_spec("ray") is not None else None


def needs_ray(test):
    """Skip without Ray; mark ``ray`` so ``make unit`` runs these tests in a process of their own.

    A process that has hosted a Ray driver (``ray.init`` ... ``ray.shutdown``) keeps Ray's
    native threads, and a later test in the same process can die of a segmentation fault
    (ray-project/ray#31145 describes the mechanism; a CI run of this project died of one in the
    unit tests that followed these), so the other tests never share a process with them."""
    skip = pytest.mark.skipif(ray is None, reason="ray is not installed (pip install '.[ray]')")
    return pytest.mark.ray(skip(test))


needs_mnist = pytest.mark.skipif(not have_data("mnist"), reason="MNIST not available offline")


def tiny(seed: int = 0, **kw):
    """A seconds-long real training run: LeNet-300-100 on 256 MNIST images."""
    task = kw.pop("task", "dense")
    args = dict(dataset="mnist", model="lenet300", epochs=2, seed=seed, budget="smoke",
                train_subset=256, batch_size=64)
    args.update(kw)
    return ex.make_spec("compare", task, **args)


def same_numbers(a: dict, b: dict) -> None:
    """Histories and metrics equal, wall-clock timings aside."""
    def strip(d):
        return {k: v for k, v in d.items() if not k.endswith("time_s")}

    assert [strip(h) for h in a["history"]] == [strip(h) for h in b["history"]]
    assert strip(a["metrics"]) == strip(b["metrics"])


# ---------------------------------------------------------------------------------------------
# Records are written once and whole.


def test_record_is_written_once_and_whole(tmp_path):
    spec = tiny()
    assert write_record_once(spec, {"run_id": spec.run_id, "who": "first"})
    assert not write_record_once(spec, {"run_id": spec.run_id, "who": "second"})
    path = ex.record_path(spec)
    assert json.loads(path.read_text())["who"] == "first"
    # many concurrent writers of one new record: exactly one wins, the file is whole
    other = tiny(seed=7)
    wins, barrier = [], threading.Barrier(8)

    def write(i):
        barrier.wait()
        wins.append(write_record_once(other, {"run_id": other.run_id, "who": i,
                                              "pad": "x" * 200_000}))

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins) == [False] * 7 + [True]
    rec = json.loads(ex.record_path(other).read_text())
    assert rec["run_id"] == other.run_id and len(rec["pad"]) == 200_000
    assert not list(ex.record_path(other).parent.glob(".*.tmp"))  # no temporary left


def test_run_many_refuses_bad_arguments():
    for kwargs, pattern in [({"workers": 0}, "workers=0"), ({"max_retries": -1}, "max_retries"),
                            ({"num_gpus": -0.5}, "num_gpus"), ({"num_cpus": 0}, "num_cpus")]:
        with pytest.raises(ValueError, match=pattern):
            run_many([tiny()], **kwargs)
    with pytest.raises(TypeError, match="RunSpec"):
        run_many(["not a spec"])


def test_pending_record_answers_only_its_identity():
    spec = tiny()
    rec = PendingRecord(spec)
    assert rec["run_id"] == rec.run_id == spec.run_id and rec.spec == spec
    for read in (lambda: rec["metrics"], lambda: rec.metrics, lambda: rec.get("history"),
                 lambda: list(rec), lambda: rec.items()):
        with pytest.raises(PlanPending, match=spec.run_id):
            read()


# ---------------------------------------------------------------------------------------------
# Plan: a notebook's runs, listed without training.

WAVES_NOTEBOOK = [
    ("parameters", 'budget = "cpu"\nlrs = [0.1]'),
    ("", "from replib import experiments as ex"),
    ("", "first = [ex.make_spec('compare', 'dense', dataset='mnist', model='lenet300', "
         "epochs=1, budget=budget, train_subset=128, lr=lr) for lr in lrs]\n"
         "recs = [ex.run(s) for s in first]"),
    # depends on the results of the first runs: found in the second wave
    ("specs", "best = max(recs, key=lambda r: r['metrics']['test_acc'])\n"
              "second = ex.make_spec('compare', 'dense', dataset='mnist', model='lenet300', "
              "epochs=1, budget=budget, train_subset=128, seed=1, "
              "lr=best['spec']['hparams']['lr'])\n"
              "rec2 = ex.run(second)"),
    # independent of any result: found in the first wave although the cell above waits
    ("specs", "indep = ex.run(ex.make_spec('compare', 'dense', dataset='mnist', "
              "model='lenet300', epochs=1, budget=budget, train_subset=128, seed=2))"),
    ("", "import os\n"
         "assert os.environ.get('REPLIB_PLAN_ONLY') != '1', 'planning went past the specs cells'\n"
         "print('rendered', rec2.run_id, rec2['metrics']['test_acc'], len(recs))"),
]
BAD_NOTEBOOK = [
    ("parameters", 'budget = "cpu"'),
    ("", "from replib import experiments as ex\n"
         "ex.run(ex.make_spec('compare', 'dense', dataset='mnist', model='lenet300', "
         "epochs=1, budget=budget, lr=-1.0))"),
]


def write_notebook(path: Path, cells) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    for tag, src in cells:
        c = nbformat.v4.new_code_cell(src)
        if tag:
            c.metadata["tags"] = [tag]
        nb.cells.append(c)
    nbformat.write(nb, str(path))
    return path


@needs_mnist
@pytest.mark.slow
def test_plan_lists_runs_without_training_and_reproduce_plans_in_waves(tmp_path, monkeypatch):
    from replib.experiments import reproduce

    plan_mod = importlib.import_module("replib.experiments.plan")  # (the name is the function)

    nbdir = tmp_path / "sec"
    nbdir.mkdir()
    waves = write_notebook(nbdir / "01_waves.ipynb", WAVES_NOTEBOOK)
    bad = write_notebook(nbdir / "02_bad.ipynb", BAD_NOTEBOOK)
    results = Path(os.environ["REPLIB_RESULTS"])

    p = plan([HOUSE_NOTEBOOK, waves, bad], "smoke", {"lrs": [0.1, 0.05]})
    house, w, b = p.notebooks
    # the house pattern: every run is listed, none trained, nothing written
    assert len(house.specs) >= 4 and house.missing == house.specs
    assert {(s.paper, s.budget) for s in house.specs} == {("compare", "smoke")}
    assert ("lenet300", "mnist") in [(s.model, s.dataset) for s in house.specs]
    assert not house.complete  # its table cells wait on results
    assert not results.exists()
    # injected parameters; the dependent cell waits, the independent one is still found
    assert sorted(s.hp["lr"] for s in w.specs if s.seed == 0) == [0.05, 0.1]
    assert w.budget == "smoke" and sorted(s.seed for s in w.missing) == [0, 0, 2]
    assert w.blocked_cells == [3] and w.error is None and not w.complete
    # a real error of a notebook is reported, naming the parameter
    assert b.error is not None and "lr=-1.0 must be >= 0" in b.error
    assert p.errors == {bad: b.error}

    # make reproduce: plan, execute (serially here), plan again, execute, render
    plans = []

    def spy(*args, **kwargs):
        plans.append(plan(*args, **kwargs))
        return plans[-1]

    monkeypatch.setattr(plan_mod, "plan", spy)
    monkeypatch.setenv("REPLIB_ROOT", str(tmp_path))
    # (at cpu: reproduce refuses to render at smoke; these runs cost the same at any budget)
    rc = reproduce.main(["--budget", "cpu", str(waves), str(bad)])
    assert rc == 1  # the bad notebook is not rendered
    first, second = plans  # two waves, then the plan was complete
    assert len(first.missing) == 1 + 1  # default lrs=[0.1]: one first run + the independent
    (dependent,) = second.missing
    assert second.complete and dependent.seed == 1 and dependent.hp["lr"] == 0.1
    for spec in (*first.missing, dependent):
        assert ex.record_path(spec).exists()
    rendered = nbformat.read(str(tmp_path / "book" / "sec" / "01_waves.ipynb"), as_version=4)
    out = "".join(o.get("text", "") for c in rendered.cells for o in c.get("outputs", []))
    assert f"rendered {dependent.run_id}" in out
    assert not (tmp_path / "book" / "sec" / "02_bad.ipynb").exists()


# ---------------------------------------------------------------------------------------------
# Ray process hygiene helpers.


def _proc_table() -> dict[int, tuple[int, str, str]]:
    """pid -> (parent pid, state, command line) of every live process."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
            cmd = Path(f"/proc/{name}/cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        out[int(name)] = (int(fields[1]), fields[0], cmd)
    return out


def ray_processes(temp_dir: str) -> set[int]:
    """Live (non-zombie) Ray processes of the cluster under ``temp_dir``, with their children
    (workers are raylet's children and do not name the folder)."""
    table = _proc_table()
    me, mine = os.getpid(), set()
    while me > 1 and me in table:  # never this process or its ancestors
        mine.add(me)
        me = table[me][0]
    pids = {p for p, (_, st, cmd) in table.items()
            if temp_dir in cmd and "ray" in cmd and p not in mine and st != "Z"}
    grew = True
    while grew:
        kids = {p for p, (pp, st, _) in table.items() if pp in pids and st != "Z"} - pids
        pids |= kids
        grew = bool(kids)
    return pids


def alive(pids) -> set[int]:
    table = _proc_table()
    return {p for p in pids if p in table and table[p][1] != "Z"}


def end_processes(pids: set[int], grace: float = 3.0) -> None:
    """SIGTERM the given pids, then SIGKILL what is left after ``grace`` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        for p in alive(pids):
            try:
                os.kill(p, sig)
            except OSError:
                pass
        deadline = time.time() + wait
        while alive(pids) and time.time() < deadline:
            time.sleep(0.2)


def short_temp_dir() -> str:
    # Ray's unix sockets live under the temp dir: keep the path short (108-byte limit)
    return tempfile.mkdtemp(prefix="rl", dir="/tmp")


# ---------------------------------------------------------------------------------------------
# A local Ray instance (2 CPU workers) gives the serial numbers; a failing run is reported.


@needs_ray
@needs_mnist
@pytest.mark.slow
def test_local_ray_sweep_equals_serial_and_reports_a_failing_run(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    good = [tiny(seed=s) for s in range(4)]
    nan = tiny(seed=0, lr=1e12)  # the loss overflows in the first epoch
    sweep = [good[0], nan, *good[1:]]

    monkeypatch.setenv("REPLIB_RESULTS", str(tmp_path / "serial"))
    serial = run_many(sweep, progress=False)
    assert serial.mode == "serial" and len(serial.records) == 4
    assert [f.spec for f in serial.failures] == [nan]
    again = run_many(good, progress=False)  # recorded runs are not run again
    assert sorted(again.skipped) == sorted(s.run_id for s in good) and not again.records

    monkeypatch.setenv("REPLIB_RESULTS", str(tmp_path / "ray"))
    td = short_temp_dir()
    try:
        res = run_many(sweep, workers=2, progress=False, ray_init={"_temp_dir": td})
        leftovers = ray_processes(td)
        deadline = time.time() + 15
        while leftovers and time.time() < deadline:
            time.sleep(0.5)
            leftovers = ray_processes(td)
        assert not leftovers, "run_many left Ray processes running"
    finally:
        end_processes(ray_processes(td))
        shutil.rmtree(td, ignore_errors=True)
    assert not ray.is_initialized()
    assert res.mode == "ray" and len(res.records) == 4
    for s in good:
        same_numbers(res.records[s.run_id], serial.records[s.run_id])
        on_disk = json.loads(ex.record_path(s).read_text())
        assert on_disk["provenance"]["ray_node_id"] == res.nodes[s.run_id]
        assert on_disk["provenance"]["resumed_from_checkpoint"] is False
    # the failing run: reported with its error and spec, no record, did not stop the others
    (fail,) = res.failures
    assert fail.spec == nan and fail.kind == "task"
    assert fail.error.startswith(NonFiniteLossError.__name__) and "nan" in fail.error
    assert "lr=1000000000000.0" in str(fail)
    assert not ex.record_path(nan).exists()


# ---------------------------------------------------------------------------------------------
# A two-node cluster simulated on this machine.

KILLABLE_TASK = '''
"""A test task: the dense task, plus a hook that waits to be killed after the first epoch
checkpoint (once, while REPLIB_TEST_MARKERS/armed exists and .../killed does not)."""
import os
import time
from pathlib import Path

from replib import models
from replib.experiments.spec import task
from replib.tasks.common import TRAIN_DEFAULTS, load_splits, make_optimizer, make_schedule
from replib.train import fit, seed_everything


@task("dense_killable", defaults=dict(TRAIN_DEFAULTS))
def dense_killable(spec, ctx):
    hp = spec.hp
    seed_everything(spec.seed)
    train, val, test = load_splits(spec, ctx)
    model = models.get(spec.model, num_classes=10).to(ctx.device)
    opt = make_optimizer(model.parameters(), hp)
    sched = make_schedule(opt, hp, spec.epochs)
    ckpt = ctx.stage_dir("train")
    marks = os.environ.get("REPLIB_TEST_MARKERS")

    def hook(model):  # runs after each epoch, before that epoch's checkpoint is written
        if marks and (ckpt / "last.pt").exists():
            m = Path(marks)
            if (m / "armed").exists() and not (m / "killed").exists():
                (m / "ready").write_text(str(os.getpid()))
                time.sleep(120)
                raise RuntimeError("the test did not kill this worker")
            (m / "resumed_in").write_text(str(os.getpid()))
        return {}

    history = fit(model, train, epochs=spec.epochs, optimizer=opt, scheduler=sched,
                  batch_size=hp["batch_size"], test=test, seed=spec.seed, ckpt_dir=ckpt,
                  device=ctx.device, epoch_metrics=hook)
    return {"history": history, "metrics": {"test_acc": history[-1]["test_acc"],
                                            "train_loss": history[-1]["train_loss"]}}
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_range(n: int = 20) -> int:
    for _ in range(200):
        base = random.randrange(30000, 60000 - n)
        try:
            socks = []
            for p in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range")


def node_args(name: str) -> list[str]:
    w = free_range()
    args = ["--num-cpus=1", f"--resources={json.dumps({name: 1})}",
            "--node-ip-address=127.0.0.1", "--object-store-memory=100000000",
            f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}",
            f"--min-worker-port={w}", f"--max-worker-port={w + 19}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}",
            "--disable-usage-stats"]
    return args


@pytest.fixture(scope="module")
def two_node_cluster(tmp_path_factory):
    """A head (resource node_a) and a second node (node_b), 1 CPU each, started with
    ``ray start``; yields (address, helper module folder); ends its own processes only."""
    helper = tmp_path_factory.mktemp("killable")
    (helper / "replib_killable.py").write_text(KILLABLE_TASK)
    td = short_temp_dir()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "PYTHONPATH": os.pathsep.join([str(helper), os.environ.get("PYTHONPATH", "")])}
    env.pop("RAY_ADDRESS", None)
    ray_cli = str(Path(sys.executable).parent / "ray")
    port = free_port()
    head = [ray_cli, "start", "--head", f"--port={port}", f"--temp-dir={td}",
            "--include-dashboard=false", f"--dashboard-port={free_port()}", *node_args("node_a")]
    if importlib.util.find_spec("grpc") is not None:  # ray[client] installed: own port too
        head.append(f"--ray-client-server-port={free_port()}")
    second = [ray_cli, "start", f"--address=127.0.0.1:{port}", f"--temp-dir={td}",
              *node_args("node_b")]
    try:
        for cmd in (head, second):
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
            assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        assert ray_processes(td)
        yield f"127.0.0.1:{port}", helper
    finally:
        pids = ray_processes(td)
        end_processes(pids)
        left = alive(pids) | ray_processes(td)
        shutil.rmtree(td, ignore_errors=True)
        assert not left, f"Ray processes left behind: {sorted(left)}"


@needs_ray
@needs_mnist
@pytest.mark.slow
def test_two_node_sweep_records_nodes_and_survives_a_killed_worker(two_node_cluster, tmp_path,
                                                                   monkeypatch):
    address, helper = two_node_cluster
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.syspath_prepend(str(helper))
    import replib_killable  # noqa: F401  (registers the task "dense_killable" here too)

    marks = tmp_path / "marks"
    marks.mkdir()
    (marks / "armed").touch()
    monkeypatch.setenv("REPLIB_TEST_MARKERS", str(marks))

    pinned = [tiny(seed=s, epochs=1) for s in range(4)]
    killable = tiny(seed=5, epochs=3, task="dense_killable")
    where = {s.run_id: ("node_a" if i % 2 == 0 else "node_b") for i, s in enumerate(pinned)}
    where[killable.run_id] = "node_b"

    killed = {}

    def killer():  # SIGKILL the worker once it has written its first epoch checkpoint
        deadline = time.time() + 240
        while time.time() < deadline and not (marks / "ready").exists():
            time.sleep(0.05)
        if (marks / "ready").exists():
            pid = int((marks / "ready").read_text())
            os.kill(pid, signal.SIGKILL)
            killed["pid"] = pid
            (marks / "killed").touch()

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    res = run_many([killable, *pinned], address=address, max_retries=2, progress=False,
                   task_modules=("replib_killable",),
                   resources=lambda s: {where[s.run_id]: 0.01})
    t.join(timeout=5)
    assert not ray.is_initialized()
    assert res.ok, res.summary()
    assert "pid" in killed, "the killable run never reached its checkpoint"

    # the records say which node ran each spec, and the placement was the one asked for
    with ray_driver(address):
        node_of = {n["NodeID"]: name for n in ray.nodes() if n["Alive"]
                   for name in ("node_a", "node_b") if name in n["Resources"]}
    assert set(node_of.values()) == {"node_a", "node_b"}
    for s in [*pinned, killable]:
        prov = json.loads(ex.record_path(s).read_text())["provenance"]
        assert node_of[prov["ray_node_id"]] == where[s.run_id]
        assert prov["node_ip"]  # REPLIB_NODE, set in the worker to the node's IP

    # the killed run was retried, resumed from its epoch-1 checkpoint, and equals a run that
    # was never interrupted
    rec = json.loads(ex.record_path(killable).read_text())
    assert rec["provenance"]["resumed_from_checkpoint"] is True
    assert rec["provenance"]["worker_pid"] != killed["pid"]
    assert int((marks / "resumed_in").read_text()) == rec["provenance"]["worker_pid"]
    assert not checkpoint_exists(killable)  # removed once the run was recorded
    monkeypatch.delenv("REPLIB_TEST_MARKERS")
    monkeypatch.setenv("REPLIB_RESULTS", str(tmp_path / "uninterrupted"))
    monkeypatch.setenv("REPLIB_CHECKPOINTS", str(tmp_path / "uninterrupted-ckpt"))
    ref = run_many([killable], progress=False)
    assert ref.ok and ref.mode == "serial"
    same_numbers(rec, ref.records[killable.run_id])
    assert len(rec["history"]) == 3


class ray_driver:
    """Connect this process to a running cluster for a moment."""

    def __init__(self, address):
        self.address = address

    def __enter__(self):
        ray.init(address=self.address, log_to_driver=False)

    def __exit__(self, *exc):
        ray.shutdown()


def test_collecting_these_tests_does_not_import_ray():
    """``make unit`` runs the non-Ray tests in a process that must never load Ray (see
    :class:`_LazyRay`): importing this module and the package's sweep code leaves Ray out."""
    code = ("import sys; sys.path[:0] = [sys.argv[1]]; import conftest, test_distributed; "
            "from replib.experiments import distributed, reproduce; "
            "sys.exit(3 if 'ray' in sys.modules else 0)")
    done = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr or "importing the tests loaded Ray"
