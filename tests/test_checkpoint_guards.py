"""fit resumes only its own checkpoints: other settings or unreadable bytes are clear errors."""

import os

import pytest
import torch

from replib import data, models
from replib import train as T
from replib.train import CheckpointCorruptError, CheckpointMismatchError, checkpoint_path, fit


def _split():
    return data.load("mnist", "test").subset(torch.arange(64))


def _fit(ckpt_dir, epochs, batch_size=32, after_step=None, schedule=False, **kw):
    torch.manual_seed(0)
    model = models.get("lenet300")
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = T.multistep_schedule(opt, epochs) if schedule else None
    hist = fit(model, _split(), epochs=epochs, optimizer=opt, scheduler=sched,
               batch_size=batch_size, seed=0, ckpt_dir=ckpt_dir, after_step=after_step,
               progress=False, **kw)
    return [{k: v for k, v in row.items() if k != "epoch_time_s"} for row in hist]


def test_resume_with_other_settings_is_refused_naming_the_file(tmp_path):
    assert len(_fit(tmp_path, 3)) == 3
    ckpt = str(checkpoint_path(tmp_path))
    # the review's case: 3 epochs in the folder, then epochs=1 returned 3 rows
    with pytest.raises(CheckpointMismatchError, match="epochs=3 there but 1 here") as err:
        _fit(tmp_path, 1)
    assert ckpt in str(err.value) and "delete it" in str(err.value)
    assert isinstance(err.value, ValueError)
    with pytest.raises(CheckpointMismatchError, match="epochs=3 there but 2 here"):
        _fit(tmp_path, 2)
    with pytest.raises(CheckpointMismatchError, match="batch_size=32 there but 16 here"):
        _fit(tmp_path, 3, batch_size=16)
    assert len(_fit(tmp_path, 3)) == 3  # the same settings still load it


def test_more_epochs_continue_a_shorter_run_unless_a_scheduler_was_built_for_it(tmp_path):
    ref = _fit(tmp_path / "ref", 3)
    assert len(_fit(tmp_path / "run", 2)) == 2
    assert _fit(tmp_path / "run", 3) == ref  # a second call continues the first
    _fit(tmp_path / "sched", 2, schedule=True)
    with pytest.raises(CheckpointMismatchError, match=r"epochs \(with a scheduler\)=2 there"):
        _fit(tmp_path / "sched", 3, schedule=True)  # its milestones belong to 2 epochs
    assert len(_fit(tmp_path / "sched", 2, schedule=True)) == 2


def test_interrupted_run_resumes_to_the_uninterrupted_history(tmp_path):
    ref = _fit(tmp_path / "ref", 3)

    def crash(_model, step):  # dies in the second epoch (2 steps per epoch)
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path / "run", 3, after_step=crash)
    assert torch.load(checkpoint_path(tmp_path / "run"), weights_only=False)["epoch"] == 0
    assert _fit(tmp_path / "run", 3) == ref


def test_old_checkpoint_without_settings_is_resumed_unless_it_holds_more_epochs(tmp_path):
    _fit(tmp_path, 2)
    path = checkpoint_path(tmp_path)
    state = torch.load(path, weights_only=False)
    del state["run"]  # as written before the settings were stored
    torch.save(state, path)
    with pytest.raises(CheckpointMismatchError, match="epochs \\(finished\\)=2 there but 1"):
        _fit(tmp_path, 1)
    assert len(_fit(tmp_path, 2)) == 2
    assert len(_fit(tmp_path, 3)) == 3  # accepted: it trains the third epoch


@pytest.mark.parametrize("damage", ["garbage", "truncated", "not_a_checkpoint", "gone_class"])
def test_unreadable_checkpoint_is_one_clear_error_naming_the_file(tmp_path, damage):
    _fit(tmp_path, 1)
    path = checkpoint_path(tmp_path)
    if damage == "garbage":
        path.write_bytes(b"this is not a checkpoint")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:1000])
    elif damage == "gone_class":  # pickled with a class whose module no longer exists
        import sys
        import types

        mod = types.ModuleType("replib_gone_module")
        exec("class Gone:\n    pass", mod.__dict__)
        mod.Gone.__module__ = "replib_gone_module"
        sys.modules["replib_gone_module"] = mod
        try:
            torch.save({"epoch": 1, "extra": mod.Gone()}, path)
        finally:
            del sys.modules["replib_gone_module"]
    else:
        torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(CheckpointCorruptError) as err:
        _fit(tmp_path, 1)
    assert str(path) in str(err.value) and "delete it" in str(err.value)


def test_atomic_save_fsyncs_before_the_rename(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append("replace"),
                                                      real_replace(a, b))[1])
    T._atomic_save({"x": torch.arange(3)}, tmp_path / "sub" / "last.pt")
    assert calls == ["fsync", "replace"]
    assert torch.equal(torch.load(tmp_path / "sub" / "last.pt")["x"], torch.arange(3))
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["last.pt"]
