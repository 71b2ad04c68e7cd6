"""Guards of the sweep and render infrastructure: finished runs are never lost, corrupt records
are per-run failures, renders never replace a book notebook with a partial one, and bad CLI
input or hyperparameters are refused before anything is planned or trained."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import pytest

from replib import experiments as ex
from replib.experiments import distributed, reproduce, runner
from replib.experiments.distributed import checkpoint_exists, execute_one, run_many
from replib.experiments.spec import RunSpec, task
from replib.tasks.common import load_splits


@task("_guard_toy", defaults={"lr": 0.1, "corrupt_record": False}, models=("lenet300",),
      datasets=("mnist",))
def _guard_toy(spec, ctx):
    """Writes an epoch checkpoint like ``fit`` does; with ``corrupt_record`` another driver
    leaves a corrupt record at this run's name while it trains."""
    ctx.ckpt_dir.mkdir(parents=True, exist_ok=True)
    (ctx.ckpt_dir / "last.pt").write_bytes(b"checkpoint")
    if spec.hp["corrupt_record"]:
        path = ex.record_path(spec)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text('{"spec": ')
    return {"history": [{"epoch": 1}], "metrics": {"value": spec.hp["lr"]}}


def _spec(**kw):
    return ex.make_spec("compare", "_guard_toy", dataset="mnist", model="lenet300", epochs=1,
                        **kw)


# ---------------------------------------------------------------------------------------------
# Checkpoints go only after the record is written.


def test_a_record_that_cannot_be_written_leaves_the_checkpoints(monkeypatch):
    spec = _spec()
    rec = execute_one(spec)  # what a Ray worker runs: it must not delete the checkpoints
    assert rec.metrics["value"] == 0.1 and checkpoint_exists(spec)

    def disk_full(spec, record):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(distributed, "write_record_once", disk_full)
        with pytest.raises(OSError, match="No space left"):
            run_many([spec], progress=False)
    assert checkpoint_exists(spec) and not ex.record_path(spec).exists()
    res = run_many([spec], progress=False)  # written this time: then the checkpoints go
    assert res.ok and ex.record_path(spec).exists() and not checkpoint_exists(spec)
    assert res.records[spec.run_id]["provenance"]["resumed_from_checkpoint"] is True
    # keep_checkpoints keeps them
    other = _spec(lr=0.2)
    assert run_many([other], progress=False, keep_checkpoints=True).ok
    assert checkpoint_exists(other)


# ---------------------------------------------------------------------------------------------
# A corrupt record is a failure of its run, not of the sweep, and never counts as done.


def test_corrupt_record_is_a_per_run_failure_naming_the_file():
    bad, good = _spec(lr=0.3), _spec(lr=0.4)
    path = ex.record_path(bad)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"spec": ')
    res = run_many([bad, good], progress=False)
    assert bad.run_id not in res.skipped and bad.run_id not in res.records
    (fail,) = res.failures
    assert fail.spec == bad and fail.kind == "record"
    assert str(path) in fail.error and "delete" in fail.error
    assert good.run_id in res.records and ex.record_path(good).exists()
    assert path.read_text() == '{"spec": '  # never overwritten
    # a record with keys missing is corrupt too
    path.write_text(json.dumps({"spec": bad.to_json()}))
    res = run_many([bad], progress=False)
    assert [f.kind for f in res.failures] == ["record"] and not res.skipped


def test_corrupt_record_written_meanwhile_fails_that_run_only():
    meanwhile, after = _spec(lr=0.5, corrupt_record=True), _spec(lr=0.6)
    res = run_many([meanwhile, after], progress=False)
    (fail,) = res.failures
    assert fail.spec == meanwhile and fail.kind == "record"
    assert str(ex.record_path(meanwhile)) in fail.error
    assert checkpoint_exists(meanwhile)  # the training is not thrown away
    assert after.run_id in res.records and not checkpoint_exists(after)


def test_plan_reports_a_corrupt_record_as_an_error_even_after_a_missing_run(tmp_path):
    import nbformat

    from replib.experiments.plan import plan

    corrupt = _dense(seed=5, train_subset=128)
    path = ex.record_path(corrupt)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"spec": ')
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    make = ("ex.make_spec('compare', 'dense', dataset='mnist', model='lenet300', epochs=1, "
            "budget=budget, train_subset=128, seed={})")
    for src in ['budget = "cpu"', "from replib import experiments as ex",
                "first = ex.run(" + make.format(0) + ")",  # missing: planned, not run
                "second = ex.run(" + make.format(5) + ")"]:  # its record is corrupt
        nb.cells.append(nbformat.v4.new_code_cell(src))
    nb.cells[0].metadata["tags"] = ["parameters"]
    nbformat.write(nb, str(tmp_path / "01_corrupt.ipynb"))
    (p,) = plan(tmp_path / "01_corrupt.ipynb", "cpu").notebooks
    assert len(p.missing) == 1 and p.blocked_cells == []
    assert "RecordCorruptError" in p.error and str(path) in p.error and "delete it" in p.error


# ---------------------------------------------------------------------------------------------
# Rendering: a temporary file replaces the book's notebook only on success.


def _render_setup(tmp_path, monkeypatch):
    monkeypatch.setenv("REPLIB_ROOT", str(tmp_path))
    nb = tmp_path / "notebooks" / "sec" / "01_x.ipynb"
    nb.parent.mkdir(parents=True)
    nb.write_text("source")
    out = tmp_path / "book" / "sec" / "01_x.ipynb"
    out.parent.mkdir(parents=True)
    out.write_text("good committed render")
    return nb, out


def test_failed_render_keeps_the_book_notebook(tmp_path, monkeypatch):
    import papermill

    nb, out = _render_setup(tmp_path, monkeypatch)
    written = []

    def failing(src, dst, **kwargs):  # papermill saves at the start and on the error
        written.append(Path(dst))
        Path(dst).write_text("partial")
        raise RuntimeError("cell 3 failed")

    monkeypatch.setattr(papermill, "execute_notebook", failing)
    with pytest.raises(RuntimeError, match="cell 3"):
        reproduce.execute_notebook(nb, "cpu")
    assert out.read_text() == "good committed render"
    assert written[0] != out and written[0].parent == out.parent
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # no temporary left

    def succeeding(src, dst, **kwargs):
        assert kwargs["parameters"]["budget"] == "cpu"
        Path(dst).write_text("new render")

    monkeypatch.setattr(papermill, "execute_notebook", succeeding)
    assert reproduce.execute_notebook(nb, "cpu") == out
    assert out.read_text() == "new render"
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]


# ---------------------------------------------------------------------------------------------
# The CLI refuses bad input before planning.


@pytest.fixture
def no_planning(monkeypatch):
    plan_mod = importlib.import_module("replib.experiments.plan")

    def refuse(*args, **kwargs):
        raise AssertionError("planned despite bad input")

    monkeypatch.setattr(plan_mod, "plan", refuse)
    return plan_mod


NB = str(Path(__file__).resolve().parents[1] / "notebooks" / "compare" / "00_dense_baselines.ipynb")


@pytest.mark.parametrize("args, pattern", [
    (["--budget", "bogus"], r"--budget: invalid choice: 'bogus'"),
    (["--budget", "cpu", "--cpus-per-run", "-1"], r"--cpus-per-run: '-1' must be a number > 0"),
    (["--budget", "cpu", "--cpus-per-run", "nan"], r"--cpus-per-run: 'nan' must be"),
    (["--budget", "cpu", "--workers", "0"], r"--workers: '0' must be an integer >= 1"),
    (["--budget", "cpu", "--workers", "1.5"], r"--workers: '1.5' is not an integer"),
    (["--budget", "cpu", "--max-retries", "-1"], r"--max-retries: '-1' must be an integer >= 0"),
    (["--budget", "cpu", "--gpus-per-run", "-0.5"], r"--gpus-per-run: '-0.5' must be"),
    (["--budget", "smoke"], r"smoke would replace the book's notebooks.*nbval.*--plan-only"),
])
def test_cli_refuses_bad_flags_before_planning(no_planning, capsys, args, pattern):
    with pytest.raises(SystemExit) as exc:
        reproduce.main([*args, NB])
    assert exc.value.code == 2
    assert re.search(pattern, capsys.readouterr().err)


def test_cli_refuses_missing_notebooks_and_bad_threads(no_planning, capsys, monkeypatch):
    with pytest.raises(SystemExit):
        reproduce.main(["--budget", "cpu", "--plan-only", "notebooks/nope.ipynb"])
    assert "no such notebook" in capsys.readouterr().err
    monkeypatch.setenv("REPLIB_THREADS", "abc")
    with pytest.raises(SystemExit):
        reproduce.main(["--budget", "cpu", "--plan-only", NB])
    assert "REPLIB_THREADS='abc' must be an integer >= 1" in capsys.readouterr().err


def test_smoke_plan_only_is_allowed(monkeypatch, capsys):
    plan_mod = importlib.import_module("replib.experiments.plan")
    seen = []

    def fake_plan(notebooks, budget, *args, **kwargs):
        seen.append(budget)
        return plan_mod.Plan([])

    monkeypatch.setattr(plan_mod, "plan", fake_plan)
    assert reproduce.main(["--budget", "smoke", "--plan-only", NB]) == 0
    assert seen == ["smoke"] and "0 distinct runs" in capsys.readouterr().out


@pytest.mark.parametrize("value", ["abc", "0", "-2", "1.5"])
def test_bad_replib_threads_names_the_variable(monkeypatch, value):
    monkeypatch.setenv("REPLIB_THREADS", value)
    with pytest.raises(ValueError, match=rf"REPLIB_THREADS='{value}' must be an integer >= 1"):
        runner.execute(_spec(), device="cpu")


# ---------------------------------------------------------------------------------------------
# Malformed hyperparameters are refused by make_spec (and by load_splits as a backstop).


def _dense(**kw):
    return ex.make_spec("compare", "dense", dataset="mnist", model="lenet300", epochs=1, **kw)


@pytest.mark.parametrize("kwargs, pattern", [
    ({"batch_size": 64.0}, r"batch_size=64.0 must be an integer \(write batch_size=64\)"),
    ({"train_subset": 128.5}, r"train_subset=128.5 must be an integer"),
    ({"batch_size": True}, r"batch_size=True must be a number"),
    ({"nesterov": 1}, r"nesterov=1 must be a bool"),
    ({"milestones": "0.5"}, r"milestones='0.5' must be a list"),
    ({"milestones": 0.5}, r"milestones=0.5 must be a list"),
    ({"train_subset": -5}, r"train_subset=-5 must be >= 0"),
    ({"val_size": -1}, r"val_size=-1 must be >= 0"),
    ({"batch_size": 0}, r"batch_size=0 must be > 0"),
    ({"batch_size": -8}, r"batch_size=-8 must be > 0"),
])
def test_malformed_hparams_are_refused(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        _dense(**kwargs)


def test_count_hparams_of_other_tasks_are_bounded():
    with pytest.raises(ValueError, match=r"finetune_epochs=-1 must be >= 0"):
        ex.make_spec("l0", "l0_train_prune", dataset="mnist", model="lenet300", epochs=1,
                     finetune_epochs=-1)
    with pytest.raises(ValueError, match=r"rounds=-2 must be >= 0"):
        ex.make_spec("lottery", "lottery_tickets", dataset="cifar10", model="resnet20",
                     epochs=1, rounds=-2)


def test_valid_hparams_keep_their_run_ids():
    # a committed-style spec: its id must not move (records are keyed by it)
    spec = _dense(batch_size=64, train_subset=256, milestones=(0.5, 0.75), lr=0.05)
    assert spec.run_id == "dense-lenet300-mnist-s0-c9fab563f63f"
    assert spec == _dense(batch_size=64, train_subset=256, milestones=[0.5, 0.75], lr=0.05)
    assert _dense(lr=1).hp["lr"] == 1.0 and isinstance(_dense(lr=1).hp["lr"], float)


def test_load_splits_refuses_a_negative_train_subset():
    class Ctx:
        def load(self, name, split):
            return object()

    spec = RunSpec("compare", "dense", "mnist", "lenet300", 1, 0, "cpu",
                   (("train_subset", -5), ("val_size", 0)))
    with pytest.raises(ValueError, match=r"train_subset=-5 must be an integer >= 0"):
        load_splits(spec, Ctx())


# ---------------------------------------------------------------------------------------------
# A record made on another copy of its data set is loaded, but reproduce says so.


def test_records_made_on_another_data_copy_are_reported(monkeypatch, caplog):
    import replib.data

    spec, other, absent = _spec(lr=0.3), _spec(lr=0.4), _spec(lr=0.5)
    offline = {"dataset": "mnist", "copy": "manifest", "test_images": 1000, "split": "test"}
    for s, prov in ((spec, offline), (other, {**offline, "copy": "official",
                                               "test_images": None})):
        path = ex.record_path(s)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"spec": s.to_json(), "history": [], "metrics": {},
                                    "provenance": {"datasets": [prov]}}))
    monkeypatch.setattr(replib.data, "verify",
                        lambda name, root=None, download=True: {"dataset": name,
                                                                "copy": "official"})
    found = reproduce.data_mismatches([spec, other, absent])
    assert found == {"mnist": (1, ("manifest", 1000), ("official", None))}
    with caplog.at_level("WARNING"):
        reproduce.warn_data_mismatches([spec, other])
    assert ("mnist: 1 recorded run(s) were made on another copy of it (manifest copy, 1,000 "
            "test images) than the one configured now (official copy)") in caplog.text
    # a data set that cannot be checked here is not compared
    monkeypatch.setattr(replib.data, "verify", lambda *a, **k: (_ for _ in ()).throw(
        replib.data.DatasetMissingError("absent")))
    assert reproduce.data_mismatches([spec]) == {}


@pytest.mark.parametrize("text", ["5", "null", "[1, 2]"])
def test_a_record_that_is_not_a_json_object_is_corrupt(tmp_path, text):
    from replib.experiments.store import RecordCorruptError, read_record

    path = tmp_path / "r.json"
    path.write_text(text)
    with pytest.raises(RecordCorruptError, match="not an object"):
        read_record(path)
