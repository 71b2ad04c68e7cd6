"""Run specs, records and the claims ledger."""

import json

import pytest

from replib import experiments as ex
from replib.experiments import claims, runner
from replib.experiments.spec import TASKS, task


@task("_toy", defaults={"lam": 1e-4, "lr": 0.1}, models=("lenet300",), datasets=("mnist",))
def _toy(spec, ctx):
    _toy.calls += 1
    return {"history": [{"epoch": 1, "loss": spec.hp["lam"]}], "metrics": {"value": 42.0}}


_toy.calls = 0


def _spec(**kw):
    args = dict(dataset="mnist", model="lenet300", epochs=1, budget="cpu")
    args.update(kw)
    return ex.make_spec("compare", "_toy", **args)


@pytest.mark.parametrize("kwargs, pattern", [
    ({"budget": "huge"}, r"budget='huge'.*allowed values.*smoke.*cpu.*paper"),
    ({"model": "alexnet"}, r"model='alexnet'.*allowed values.*lenet300"),
    ({"dataset": "svhn"}, r"dataset='svhn'.*allowed values.*mnist"),
    ({"lam": -1.0}, r"lam=-1.0 must be >= 0"),
    ({"epochs": 0}, r"epochs=0 must be an integer >= 1"),
    ({"lamda": 1.0}, r"unknown parameter.*lamda.*allowed values.*lam"),
    ({"lr": "fast"}, r"lr='fast' must be a number"),
])
def test_malformed_parameters_are_refused_before_training(kwargs, pattern):
    before = _toy.calls
    with pytest.raises(ValueError, match=pattern):
        _spec(**kwargs)
    assert _toy.calls == before


def test_unknown_task_and_paper():
    with pytest.raises(ValueError, match="task='nope'"):
        ex.make_spec("compare", "nope", dataset="mnist", model="lenet300", epochs=1)
    with pytest.raises(ValueError, match="paper='xyz'"):
        ex.make_spec("xyz", "_toy", dataset="mnist", model="lenet300", epochs=1)


def test_spec_hash_is_stable_and_sensitive():
    a, b = _spec(lam=1e-4), _spec(lam=1e-4)
    assert a.run_id == b.run_id and a == b
    assert _spec(lam=2e-4).run_id != a.run_id
    assert _spec(seed=1).run_id != a.run_id
    assert ex.RunSpec.from_json(json.loads(json.dumps(a.to_json()))) == a


def test_run_records_once_then_loads_without_training():
    spec = _spec()
    before = _toy.calls
    rec = ex.run(spec)
    assert _toy.calls == before + 1
    path = ex.record_path(spec)
    stored = json.loads(path.read_text())
    assert stored["metrics"] == {"value": 42.0}
    prov = stored["provenance"]
    assert {"git_commit", "versions", "device", "wall_time_s", "date", "datasets"} <= set(prov)
    again = ex.run(spec)
    assert _toy.calls == before + 1 and again == rec
    ex.run(spec, rerun=True)
    assert _toy.calls == before + 2


def test_smoke_records_are_kept_apart():
    assert "smoke" in ex.record_path(_spec(budget="smoke")).parts
    assert "smoke" not in ex.record_path(_spec(budget="cpu")).parts


def test_corrupt_record_gives_clear_error():
    spec = _spec(lam=0.5)
    path = ex.record_path(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"spec": ')
    with pytest.raises(ex.RecordCorruptError, match="not valid JSON"):
        ex.run(spec)


def test_task_registry_has_dense():
    assert "dense" in ex.get_task("dense").name and "_toy" in TASKS


@pytest.fixture
def ledger(tmp_path, monkeypatch):
    path = tmp_path / "toy.csv"
    path.write_text(
        "claim_id,where,setting,metric,paper_value,compare,tolerance,notebook,not_run_reason\n"
        "err,Table 1,s,error %,1.64,abs,0.25,nb,\n"
        "cr,Table 1,s,compression x,90,min,5,nb,\n"
        "err-max,Table 1,s,error %,2.0,max,0,nb,\n"
        "ordering,Fig. 5,s,statement,1,bool,0,nb,\n"
        "c100,Table 2b,s,error %,25,abs,1,nb,data not available offline: CIFAR-100\n"
    )
    monkeypatch.setattr(claims, "claims_path", lambda paper: path)
    return path


def test_claim_judging_rules():
    c = {"paper_value": 1.64, "tolerance": 0.25, "compare": "abs"}
    assert claims.judge(c, 1.89) and not claims.judge(c, 1.90)
    assert claims.judge({"paper_value": 90, "tolerance": 5, "compare": "min"}, 85)
    assert not claims.judge({"paper_value": 90, "tolerance": 5, "compare": "min"}, 84.9)
    assert claims.judge({"paper_value": 2, "tolerance": 0, "compare": "max"}, 1.5)
    assert not claims.judge({"paper_value": 1, "tolerance": 0, "compare": "bool"}, False)


def test_status_table_joins_measurements_and_prefers_paper_budget(ledger):
    claims.record_claims("l0", "nb", "cpu", {"err": 1.80, "cr": 70.0, "ordering": True})
    claims.record_claims("l0", "nb2", "paper", {"cr": 95.0, "err-max": None},
                         notes={"err-max": "crashed"})
    t = claims.status_table("l0").set_index("claim")
    assert t.loc["err", "status"] == "reproduced" and t.loc["err", "budget"] == "cpu"
    assert t.loc["cr", "status"] == "reproduced" and t.loc["cr", "budget"] == "paper"
    assert t.loc["ordering", "status"] == "reproduced"
    assert t.loc["err-max", "status"] == "not run" and t.loc["err-max", "note"] == "crashed"
    assert t.loc["c100", "status"] == "not run" and "CIFAR-100" in t.loc["c100", "note"]
    claims.record_claims("l0", "nb", "cpu", {"err": 2.5})
    assert claims.status_table("l0").set_index("claim").loc["err", "status"] == "not reproduced"


def test_smoke_measurements_never_reproduce(ledger):
    claims.record_claims("l0", "nb", "smoke", {"err": 1.64})
    t = claims.status_table("l0", include_smoke=True).set_index("claim")
    assert t.loc["err", "status"] == "not run" and t.loc["err", "budget"] == "smoke"


def test_cut_magnitudes_show_as_not_run_with_our_value(ledger):
    values = {"err": 1.70, "cr": float("nan"), "ordering": True, "err-max": None}
    notes = {"err": "width 1/8, 8 epochs", "err-max": "crashed"}
    meas, out = claims.gate_cut("cpu", values, judged_at_cut=["ordering"], notes=notes)
    # a magnitude inside the tolerance is still not judged at a cut: it is not the paper's run
    assert meas == {"err": None, "cr": None, "ordering": True, "err-max": None}
    assert out["err"] == "not comparable at the cpu budget (width 1/8, 8 epochs); ours: 1.7"
    assert out["cr"].endswith("(a reduced cpu setting); ours: undefined (NaN)")
    assert out["err-max"] == "crashed" and "ordering" not in out
    claims.record_claims("l0", "nb", "cpu", meas, notes=out)
    t = claims.status_table("l0").set_index("claim")
    assert t.loc["err", "status"] == "not run" and t.loc["err", "note"] == out["err"]
    assert t.loc["ordering", "status"] == "reproduced"
    # cut texts per network (a claim id's second field): test_proxns
    assert claims.gate_cut("paper", values, [], "cut", notes) == (values, notes)


def test_unknown_claim_id_is_refused(ledger):
    with pytest.raises(ValueError, match="unknown claim id"):
        claims.record_claims("l0", "nb", "cpu", {"nope": 1.0})


def test_runner_execute_returns_record_without_writing():
    spec = _spec(lam=0.25)
    rec = runner.execute(spec, device="cpu")
    assert rec.metrics["value"] == 42.0 and not ex.record_path(spec).exists()
