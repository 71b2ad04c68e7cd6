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


def test_channels_last_on_cpu_keeps_the_convs_onednn_corrupts_contiguous():
    """ResNet-18 at 1/16 width has one 1x1 stride-2 conv with 4 input channels (the projection
    shortcut of layer2): on the CPU it stays contiguous, everything else goes channels_last,
    twice calling is harmless, and the gradients are those of the all-contiguous network."""
    from replib import irda as IR
    from replib.train import onednn_unsafe_convs, to_channels_last

    torch.manual_seed(0)
    ref = IR.build_model("resnet18", 10, in_channels=1, width_div=16)
    net = IR.build_model("resnet18", 10, in_channels=1, width_div=16)
    net.load_state_dict(ref.state_dict())
    bad = onednn_unsafe_convs(net)
    names = [n for n, m in net.named_modules() if any(m is b for b in bad)]
    assert names == ["stages.layer2.0.shortcut.conv"]
    assert onednn_unsafe_convs(IR.build_model("resnet18", 10, in_channels=1, width_div=8)) == []

    to_channels_last(net, "cpu")
    to_channels_last(net, "cpu")  # idempotent: one hook, same layouts
    cl = torch.channels_last
    for n, m in net.named_modules():
        if isinstance(m, torch.nn.Conv2d):
            # (a 1x1 weight's strides fit both layouts; its input's do not, checked below)
            assert m.weight.is_contiguous(memory_format=cl) or n in names, n
            assert m.weight.is_contiguous() or n not in names, n
    assert len(bad[0]._forward_pre_hooks) == 1
    seen = []
    bad[0].register_forward_pre_hook(lambda _m, a: seen.append(
        (a[0].is_contiguous(), a[0].is_contiguous(memory_format=cl))))

    x = torch.randn(16, 1, 28, 28)
    for model, inp in ((ref, x), (net, x.contiguous(memory_format=cl))):
        model.train()
        model(inp).logsumexp(1).mean().backward()
    for (n, p), q in zip(ref.named_parameters(), net.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-5, msg=n)  # float32 order
    assert seen == [(True, False)]  # the shortcut conv saw a contiguous (NCHW) input


def test_training_a_narrow_projection_shortcut_channels_last_survives():
    """The crash itself, in a process of its own (one thread: there it was deterministic on the
    AVX2 machine): 20 steps of Conv2d(4, 8, 1, stride=2) channels_last. Before the guard this
    process died of heap corruption on that machine; with it, it ends normally."""
    code = """if True:
        import torch
        from replib.train import to_channels_last
        conv = to_channels_last(torch.nn.Sequential(torch.nn.Conv2d(4, 8, 1, stride=2)), "cpu")
        x = torch.randn(64, 4, 28, 28).contiguous(memory_format=torch.channels_last)
        for _ in range(20):
            conv.zero_grad()
            conv(x).square().sum().backward()
        print("survived")
    """
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.returncode == 0 and "survived" in done.stdout, done.stderr[-2000:]
