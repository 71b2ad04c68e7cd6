"""The training loop: determinism, and resume after SIGKILL gives the uninterrupted history."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from replib import data, models
from replib.train import fit

SCRIPT = """
import json, logging, sys
logging.basicConfig(level=logging.INFO)
from replib import experiments as ex
spec = ex.make_spec("compare", "dense", model="lenet300", dataset="mnist", epochs=4,
                    train_subset=30000, schedule="multistep", budget="cpu")
rec = ex.run(spec)
print("HISTORY=" + json.dumps(rec["history"]))
"""


def _env(tmp: Path) -> dict:
    env = dict(os.environ, REPLIB_RESULTS=str(tmp / "results"),
               REPLIB_CHECKPOINTS=str(tmp / "ckpt"), REPLIB_THREADS="1", REPLIB_PROGRESS="0")
    return env


def _history(stdout: str) -> list[dict]:
    line = next(x for x in stdout.splitlines() if x.startswith("HISTORY="))
    hist = json.loads(line[len("HISTORY="):])
    for row in hist:
        row.pop("epoch_time_s")
    return hist


def _tiny_run(seed: int) -> list[dict]:
    torch.manual_seed(seed)
    split = data.load("mnist", "test").subset(torch.arange(512))
    model = models.get("lenet300")
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    hist = fit(model, split, epochs=2, optimizer=opt, batch_size=64, test=split, seed=seed,
               progress=False)
    for row in hist:
        row.pop("epoch_time_s")
    return hist


def test_same_seed_twice_gives_identical_history():
    assert _tiny_run(7) == _tiny_run(7)
    assert _tiny_run(7) != _tiny_run(8)


def test_zero_epochs_is_refused():
    split = data.load("mnist", "test").subset(torch.arange(64))
    model = models.get("lenet300")
    with pytest.raises(ValueError, match="epochs"):
        fit(model, split, epochs=0, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(tmp_path):
    # uninterrupted reference
    ref = subprocess.run([sys.executable, "-c", SCRIPT], env=_env(tmp_path / "ref"),
                         capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr
    # interrupted: SIGKILL once the first epoch checkpoint exists (i.e. during epoch 2)
    env = _env(tmp_path / "killed")
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    ckpts = tmp_path / "killed" / "ckpt"
    deadline = time.time() + 300
    while time.time() < deadline and not list(ckpts.rglob("last.pt")):
        time.sleep(0.02)
    assert list(ckpts.rglob("last.pt")), "no checkpoint appeared"
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not list((tmp_path / "killed" / "results").rglob("*.json")), "killed run left a record"
    resumed = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed" in resumed.stderr
    assert _history(resumed.stdout) == _history(ref.stdout)


def test_fit_flushes_subnormal_floats_to_zero():
    """Subnormal weights make CPU matmuls tens of times slower; fit turns on flush-to-zero."""
    try:
        torch.set_flush_denormal(False)
        tiny = torch.tensor([1e-39])               # created with the flag off (FTZ would zero it)
        assert (tiny * 1.0).item() != 0.0          # a subnormal survives without the flag
        if not torch.set_flush_denormal(True):
            pytest.skip("this CPU has no flush-to-zero mode")
        torch.set_flush_denormal(False)
        split = data.load("mnist", "test").subset(torch.arange(32))
        model = models.get("lenet300")
        fit(model, split, epochs=1, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            batch_size=16, progress=False)
        assert (tiny * 1.0).item() == 0.0          # and is flushed after fit
    finally:
        torch.set_flush_denormal(False)
