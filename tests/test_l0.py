"""The l0 paper: zero-attraction terms, the l2-l0 objective, NORM/SEP, pruning, fine-tuning."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from replib import l0 as L0
from replib import models
from replib.data import DatasetInfo, Split
from replib.sparsity import masks as M

f64 = torch.float64


def _tiny_mlp() -> nn.Module:
    torch.manual_seed(0)
    return models.MLP((16, 8, 4)).to(f64)


def _toy_split(n: int = 64, seed: int = 0) -> Split:
    """A 4x4 single-channel 'dataset' of 4 classes whose label is the brightest quadrant."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 1, 4, 4), generator=g, dtype=torch.uint8)
    q = x.float().view(n, 2, 2, 2, 2).sum(dim=(2, 4)).flatten(1)
    info = DatasetInfo("toy", "toy", (), 4, (1, 4, 4), (0.5,), (0.25,))
    return Split("toy", "train", x, q.argmax(1), info, {})


# --------------------------------------------------------------------------- Fig. 1 terms


def test_zero_attraction_closed_forms():
    w = torch.tensor([-0.5, -0.01, 0.0, 0.02, 1.0], dtype=f64)
    eta, alpha, beta = 0.04, 0.01, 10.0
    assert torch.allclose(L0.zero_attraction(w, "l2", eta, alpha), -2 * eta * alpha * w)
    assert torch.allclose(L0.zero_attraction(w, "l1", eta, alpha), -eta * alpha * torch.sign(w))
    expect = torch.tensor([eta * alpha * beta * math.exp(-5.0), eta * alpha * beta
                           * math.exp(-0.1), 0.0, -eta * alpha * beta * math.exp(-0.2),
                           -eta * alpha * beta * math.exp(-10.0)], dtype=f64)
    assert torch.allclose(L0.zero_attraction(w, "l0", eta, alpha, beta), expect)
    # the l0 term is strongest right next to zero and vanishes for large weights (Sec. 3.2)
    grid = torch.linspace(1e-4, 2.0, 1000, dtype=f64)
    mag = L0.zero_attraction(grid, "l0", eta, alpha, beta).abs()
    assert int(mag.argmax()) == 0 and mag[-1] < 1e-6 * mag[0]
    # ... and for small weights it exceeds the l1 term by beta (and l2 by much more)
    assert mag[0] > 9.9 * eta * alpha


def test_zero_attraction_rejects_bad_input():
    w = torch.zeros(3)
    with pytest.raises(ValueError, match="reg='l3'.*allowed values"):
        L0.zero_attraction(w, "l3", 0.1, 0.1)
    with pytest.raises(ValueError, match="beta=0.5 must be >= 1"):
        L0.zero_attraction(w, "l0", 0.1, 0.1, 0.5)
    with pytest.raises(ValueError, match="eta=0"):
        L0.zero_attraction(w, "l2", 0.0, 0.1)


# --------------------------------------------------------------------------- the objective


def test_penalty_gradient_is_eq15_term():
    """d/dw of the combined penalty = 2 a2 w + a0 beta sign(w) exp(-beta |w|) (Eq. (15))."""
    net = _tiny_mlp()
    coefs = L0.layer_coefs(net, "l2l0", "plain", alpha_l2=3e-3, alpha_l0=2e-2, beta=7.0)
    pen = L0.make_penalty(coefs)
    net.zero_grad()
    pen(net).backward()
    for layer in net.hidden_layers():
        w = layer.weight.detach()
        expect = 2 * 3e-3 * w + 2e-2 * 7.0 * torch.sign(w) * torch.exp(-7.0 * w.abs())
        assert torch.allclose(layer.weight.grad, expect, atol=1e-12)
        assert layer.bias.grad is None  # biases are not in phi


def test_sgd_step_with_penalty_is_eq15():
    """One plain-SGD step on CE + penalty moves each weight exactly as Eq. (15) says."""
    net = _tiny_mlp()
    x = torch.randn(5, 16, dtype=f64)
    y = torch.tensor([0, 1, 2, 3, 0])
    a2, a0, beta, eta = 1e-3, 5e-3, 20.0, 0.1
    coefs = L0.layer_coefs(net, "l2l0", "plain", alpha_l2=a2, alpha_l0=a0, beta=beta)
    w0 = [m.weight.detach().clone() for m in net.hidden_layers()]
    net.zero_grad()
    nn.functional.cross_entropy(net(x), y).backward()
    dj = [m.weight.grad.clone() for m in net.hidden_layers()]
    opt = torch.optim.SGD(net.parameters(), lr=eta)
    net.zero_grad()
    (nn.functional.cross_entropy(net(x), y) + L0.make_penalty(coefs)(net)).backward()
    opt.step()
    for m, w, g in zip(net.hidden_layers(), w0, dj):
        expect = w - 2 * eta * a2 * w - eta * a0 * beta * torch.sign(w) * torch.exp(
            -beta * w.abs()) - eta * g
        assert torch.allclose(m.weight.detach(), expect, atol=1e-12)


def test_penalty_value_closed_form_and_regs():
    net = _tiny_mlp()
    ws = [m.weight.detach() for m in net.hidden_layers()]
    coefs = L0.layer_coefs(net, "l1", "plain", alpha_l1=0.5, alpha_l2=9.0, alpha_l0=9.0)
    assert all(c.alpha_l2 == 0 and c.alpha_l0 == 0 for c in coefs)  # only l1 is on
    v = L0.penalty_value(net, coefs)
    assert torch.isclose(v, 0.5 * sum(w.abs().sum() for w in ws))
    coefs = L0.layer_coefs(net, "l0", "plain", alpha_l0=2.0, beta=3.0)
    v = L0.penalty_value(net, coefs)
    assert torch.isclose(v, 2.0 * sum((1 - torch.exp(-3 * w.abs())).sum() for w in ws))
    assert L0.make_penalty(L0.layer_coefs(net, "none", "plain", alpha_l2=1.0)) is None


def test_norm_factors_lenet300():
    net = models.get("lenet300")
    coefs = L0.layer_coefs(net, "l2l0", "norm", alpha_l2=1e-4, alpha_l0=1e-6, beta=5.0,
                           norm="sqrt")
    assert [c.n for c in coefs] == [235200, 30000, 1000]
    for c in coefs:
        f = math.sqrt(c.n / 524288)
        assert math.isclose(c.alpha_l0, 1e-6 * f) and math.isclose(c.alpha_l2, 1e-4 * f)
        assert c.beta == 5.0
    mean = L0.layer_coefs(net, "l2l0", "norm", alpha_l0=1e-6, beta=5.0, norm="mean")
    assert math.isclose(mean[2].alpha_l0, 1e-6 * 524288 / 1000)
    conv = L0.layer_coefs(models.get("lenet5_caffe"), "l0", "norm", alpha_l0=1.0, beta=2.0)
    assert math.isclose(conv[0].alpha_l0, math.sqrt(500 / 2_097_152))  # conv reference size
    assert conv[0].alpha_l2 == 0.0  # l2 is off for reg="l0"


def test_norm_factor_refuses_script_which_needs_the_kernel_shape():
    assert math.isclose(L0.norm_factor(1000, "linear", "sqrt"), math.sqrt(1000 / 524288))
    with pytest.raises(ValueError, match="script"):
        L0.norm_factor(1000, "linear", "script")


def test_norm_script_scales_only_alpha_l0_with_the_scripts_fan():
    """The authors' Keras script: alpha_l2 unscaled; alpha_l0 * sqrt(fan / n_ref), its fan of a
    dense layer in * out, of a conv kernel (kh, kw, in, out) kw * in * out (shape[1:])."""
    net = models.get("lenet300")
    coefs = L0.layer_coefs(net, "l2l0", "norm", alpha_l2=1e-4, alpha_l0=1e-6, beta=5.0,
                           norm="script")
    for c, fan in zip(coefs, (784 * 300, 300 * 100, 100 * 10)):
        assert c.alpha_l2 == 1e-4
        assert math.isclose(c.alpha_l0, 1e-6 * math.sqrt(fan / 524288))
    # LeNet-5-Caffe's first conv: 20 filters of 1 x 5 x 5; the script's fan is 5 * 1 * 20
    conv = L0.layer_coefs(models.get("lenet5_caffe"), "l2l0", "norm", alpha_l2=1e-4,
                          alpha_l0=1.0, beta=2.0, norm="script")
    ours = L0.layer_coefs(models.get("lenet5_caffe"), "l2l0", "norm", alpha_l2=1e-4,
                          alpha_l0=1.0, beta=2.0, norm="sqrt")
    assert math.isclose(conv[0].alpha_l0, math.sqrt(100 / 2_097_152))
    assert math.isclose(ours[0].alpha_l0 / conv[0].alpha_l0, math.sqrt(5))
    assert conv[0].alpha_l2 == 1e-4 and ours[0].alpha_l2 < 1e-4
    assert math.isclose(conv[-1].alpha_l0, ours[-1].alpha_l0)  # dense layers agree


def test_sep_values_and_errors():
    net = models.get("lenet300")
    sep = L0.sep_from_multipliers(net, alpha_l2=1e-4, alpha_l0=1e-5, beta=10.0, norm="sqrt",
                                  mult_l0=[1.0, 4.0, 0.25])
    coefs = L0.layer_coefs(net, "l2l0", "sep", **sep)
    norm = L0.layer_coefs(net, "l2l0", "norm", alpha_l2=1e-4, alpha_l0=1e-5, beta=10.0)
    assert [c.alpha_l0 for c in coefs] == pytest.approx(
        [norm[0].alpha_l0, 4 * norm[1].alpha_l0, 0.25 * norm[2].alpha_l0])
    assert [c.alpha_l2 for c in coefs] == pytest.approx([c.alpha_l2 for c in norm])
    with pytest.raises(ValueError, match="sep_alpha_l2 has 2 values.*one per prunable layer"):
        L0.layer_coefs(net, "l2l0", "sep", sep_alpha_l2=[1, 2], sep_alpha_l0=[1, 2, 3],
                       sep_beta=[5, 5, 5])
    with pytest.raises(ValueError, match="strategy='both'.*allowed values"):
        L0.layer_coefs(net, "l2l0", "both")
    with pytest.raises(ValueError, match="norm='log'.*allowed values"):
        L0.layer_coefs(net, "l2l0", "norm", norm="log")
    with pytest.raises(ValueError, match="beta=.*must be >= 1"):
        L0.layer_coefs(net, "l0", "plain", alpha_l0=1.0, beta=0.5)


# --------------------------------------------------------------------------- pruning


@pytest.mark.parametrize("scope", ["global", "layerwise", "random"])
def test_prune_to_10x_leaves_exactly_the_promised_nonzeros(scope):
    torch.manual_seed(0)
    net = models.get("lenet300")
    pruned, masks = L0.prune_copy(net, 10.0, scope, seed=3)
    nz = L0.nonzero_weights(pruned)
    if scope == "global":
        assert sum(nz.values()) == 26620 == L0.expected_kept(net, 10.0, scope)
    else:  # every layer at exactly 10x
        assert list(nz.values()) == [23520, 3000, 100]
        assert sum(nz.values()) == L0.expected_kept(net, 10.0, scope)
    # the original network is untouched
    assert sum(L0.nonzero_weights(net).values()) == 266200


def test_global_pruning_keeps_the_largest_weights():
    net = _tiny_mlp()
    pruned, _ = L0.prune_copy(net, 4.0, "global")
    kept = torch.cat([m.weight.detach().flatten() for m in pruned.hidden_layers()])
    orig = torch.cat([m.weight.detach().flatten() for m in net.hidden_layers()])
    k = L0.expected_kept(net, 4.0, "global")
    assert int((kept != 0).sum()) == k == round((16 * 8 + 8 * 4) / 4)
    thresh = orig.abs().sort(descending=True).values[k - 1]
    assert torch.equal(kept != 0, orig.abs() >= thresh)


def test_random_pruning_depends_on_seed_only():
    net = _tiny_mlp()
    a = L0.prune_copy(net, 2.0, "random", seed=1)[1]
    b = L0.prune_copy(net, 2.0, "random", seed=1)[1]
    c = L0.prune_copy(net, 2.0, "random", seed=2)[1]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
    with pytest.raises(ValueError, match="scope='neurons'.*allowed values"):
        L0.prune_copy(net, 2.0, "neurons")


@pytest.mark.parametrize("opt_name", ["adam", "sgd"])
def test_finetuning_keeps_zeros_zero(opt_name):
    torch.manual_seed(0)
    net = models.MLP((16, 8, 4))
    data = _toy_split()
    pruned, masks = L0.prune_copy(net, 5.0, "global")
    before = {n: m.weight.detach().clone() for n, m in M.prunable_layers(pruned).items()}

    def make_opt(ps):
        if opt_name == "adam":
            return torch.optim.Adam(ps, lr=1e-2, weight_decay=1e-3)
        return torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=1e-3)

    coefs = L0.layer_coefs(pruned, "l2l0", "plain", alpha_l2=1e-3, alpha_l0=1e-2, beta=10.0)
    hist = L0.finetune(pruned, data, epochs=2, make_opt=make_opt,
                       penalty=L0.make_penalty(coefs), batch_size=16, seed=0)
    assert len(hist) == 2
    for name, mod in M.prunable_layers(pruned).items():
        w = mod.weight.detach()
        assert torch.all(w[~masks[name]] == 0)  # pruned stay exactly zero
        assert not torch.equal(w[masks[name]], before[name][masks[name]])  # survivors trained
    assert sum(L0.nonzero_weights(pruned).values()) == L0.expected_kept(net, 5.0, "global")


def test_prune_curve_rows_and_operating_point():
    torch.manual_seed(0)
    net = models.MLP((16, 8, 4))
    data = _toy_split(128)
    calls = []

    def ft(model, scope, c):
        calls.append((scope, c))
        return L0.finetune(model, data, epochs=1, make_opt=lambda ps: torch.optim.SGD(ps, 0.1),
                           penalty=None, batch_size=32, seed=0)

    rows = L0.prune_curve(net, scopes=["global", "layerwise"], compressions=[2, 8], val=data,
                          test=None, finetune_fn=ft,
                          finetune_points=lambda s, c: s == "global" and c == 8)
    assert calls == [("global", 8.0)]
    assert [(r["scope"], r["compression"]) for r in rows] == [
        ("global", 2.0), ("global", 8.0), ("layerwise", 2.0), ("layerwise", 8.0)]
    for r in rows:
        assert r["nonzero"] == r["kept_promised"]
        assert r["params_incl_other"] == r["nonzero"] + 8 + 4  # biases
        assert math.isclose(r["compression_actual"], 160 / r["nonzero"])
    assert "ft_val_acc" in rows[1] and "ft_val_acc" not in rows[0]
    assert rows[1]["ft_nonzero"] == rows[1]["nonzero"]

    fake = [{"scope": "global", "compression": c, "ft_test_acc": a}
            for c, a in [(10, 0.99), (50, 0.985), (90, 0.9815), (100, 0.97)]]
    assert L0.operating_point(fake, 1.85)["compression"] == 90
    assert L0.operating_point(fake, 0.5) is None
    assert L0.error_at(fake, 50) == pytest.approx(1.5)
    assert L0.error_at(fake, 60) is None


def test_chance_gate_leaves_orderings_at_chance_unjudged():
    """F2-l0-worst-random: judged unless every mean accuracy is within 2 points of chance."""
    # all at chance (the cpu records: l2 9.7, l1 10.7, l0 10.6): inconclusive either way
    assert L0.chance_gate(False, [9.74, 10.7, 10.6], 10.0) is None
    assert L0.chance_gate(True, [9.74, 10.7, 10.6], 10.0) is None
    # one network off chance: the ordering is judged, and its verdict passes through
    assert L0.chance_gate(False, [9.74, 10.7, 18.0], 10.0) is False
    assert L0.chance_gate(True, [9.74, 10.7, 18.0], 10.0) is True
    assert L0.chance_gate(True, [12.0, 10.0], 10.0) is True  # 2 points off is not "within"
    assert L0.chance_gate(False, [7.9, 8.5], 10.0, within=2.5) is None
    assert L0.near_chance(11.99, 10.0) and not L0.near_chance(8.0, 10.0)
    with pytest.raises(ValueError, match="accs is empty"):
        L0.chance_gate(True, [], 10.0)


def test_weight_histogram_counts_every_weight():
    net = _tiny_mlp()
    pruned, _ = L0.prune_copy(net, 2.0, "global")
    h = L0.weight_histogram(pruned, [-8.0, -2.0, 0.0, 1.0])
    assert h["zeros"] == 80 and sum(h["counts"]) + h["zeros"] == 160
    assert 0.0 <= L0.small_fraction(pruned, 1e-3) and L0.small_fraction(pruned, 1e-3) >= 0.5


# --------------------------------------------------------------------------- the task


def test_task_refuses_bad_choices_before_training(monkeypatch):
    from replib import experiments as ex
    from replib.tasks import l0 as task_mod

    spec = ex.make_spec("l0", "l0_train_prune", dataset="mnist", model="lenet300", epochs=1,
                        budget="smoke", reg="l3")
    with pytest.raises(ValueError, match="reg='l3'.*allowed values"):
        task_mod._check_hp(spec.hp)
    spec = ex.make_spec("l0", "l0_train_prune", dataset="mnist", model="lenet300", epochs=1,
                        budget="smoke", scopes=["global", "channel"])
    with pytest.raises(ValueError, match="'channel' is not known"):
        task_mod._check_hp(spec.hp)
    spec = ex.make_spec("l0", "l0_train_prune", dataset="mnist", model="lenet300", epochs=1,
                        budget="smoke", compressions=[0.5])
    with pytest.raises(ValueError, match="must be a number >= 1"):
        task_mod._check_hp(spec.hp)


def test_runs_differing_after_training_share_the_trained_network():
    from replib import experiments as ex
    from replib.tasks.l0 import train_key

    kw = dict(dataset="mnist", model="lenet300", epochs=3, budget="cpu")
    a = ex.make_spec("l0", "l0_train_prune", compressions=[2, 4], **kw)
    b = ex.make_spec("l0", "l0_train_prune", compressions=[8], finetune_epochs=2, **kw)
    c = ex.make_spec("l0", "l0_train_prune", alpha_l0=1e-5, **kw)
    assert a.run_id != b.run_id and train_key(a) == train_key(b) != train_key(c)


# --------------------------------------------------------------------------- searching


def _fake_record(err_pct: float, rid: str) -> dict:
    curve = [{"scope": "global", "compression": 90.0, "val_acc": 0.5,
              "ft_val_acc": 1 - err_pct / 100}]
    return {"artifacts": {"curve": curve}, "metrics": {"dense_val_acc": 0.99}, "run_id": rid}


def test_grid_search_picks_lowest_validation_error():
    table = {1e-5: 3.0, 1e-4: 2.0, 1e-3: 2.5}
    rows, best = L0.grid_search(lambda o: _fake_record(table[o["alpha_l0"]], str(o)),
                                [{"alpha_l0": a} for a in table], 90)
    assert best == {"alpha_l0": 1e-4}
    assert [r["val_error"] for r in rows] == pytest.approx([3.0, 2.0, 2.5])
    assert L0.val_error(_fake_record(2.0, "x"), 45) == math.inf
    with pytest.raises(ValueError, match="grid is empty"):
        L0.grid_search(lambda o: None, [], 90)


def test_grid_search_asks_for_every_run_before_reading_one():
    """A planning pass sees the whole grid in one wave: every run is requested before the
    first result is read (a pending record raises when read, as in ``make reproduce``)."""
    from replib import experiments as ex
    from replib.experiments.plan import PendingRecord, PlanPending

    asked = []

    def run(over):
        spec = ex.make_spec("l0", "l0_train_prune", dataset="mnist", model="lenet300", epochs=1,
                            budget="smoke", **over)
        asked.append(over["alpha_l0"])
        return PendingRecord(spec)

    with pytest.raises(PlanPending):
        L0.grid_search(run, [{"alpha_l0": a} for a in (1e-5, 1e-4, 1e-3)], 90)
    assert asked == [1e-5, 1e-4, 1e-3]


def test_coordinate_search_moves_one_layer_at_a_time():
    # error is minimized at multipliers (3, 1, 1/3); ties keep the current value
    def err(m):
        return 2.0 + abs(math.log(m[0] / 3)) + abs(math.log(m[1])) + abs(math.log(m[2] * 3))

    seen = []

    def run(m):
        seen.append(tuple(m))
        return _fake_record(err(m), str(m))

    trail, mults = L0.coordinate_search(run, 3, [1 / 3, 3.0], 90)
    assert mults == pytest.approx([3.0, 1.0, 1 / 3])
    assert len(seen) == 1 + 3 * 2  # the start, then two candidates per layer
    assert seen[1] == (1 / 3, 1.0, 1.0) and seen[3][0] == 3.0  # layer 0 kept 3 before layer 1
    assert sum(t["kept"] for t in trail) == 1 + 2  # start + layers 0 and 2 changed


def test_val_error_mean_over_compressions():
    curve = [{"scope": "global", "compression": c, "val_acc": a}
             for c, a in [(8, 0.99), (32, 0.98), (128, 0.90)]]
    rec = {"artifacts": {"curve": curve}}
    assert L0.val_error(rec, [8, 32, 128], ft=False) == pytest.approx((1 + 2 + 10) / 3)
    assert L0.val_error(rec, [8, 64], ft=False) == math.inf
    assert L0.val_error(rec, 32, ft=False) == pytest.approx(2.0)


def test_expand_groups_resnet20():
    net = models.get("resnet20")
    names = [n for n, _, _ in L0.layer_info(net)]
    groups = [["stem", "stages.layer1"], ["stages.layer2"], ["stages.layer3", "fc"]]
    vals = L0.expand_groups(names, groups, [1.0, 2.0, 3.0])
    assert len(vals) == len(names) == 22  # 19 convs, 2 shortcut convs, fc
    assert vals[0] == 1.0 and vals[-1] == 3.0
    assert vals.count(1.0) == 7 and vals.count(2.0) == 7 and vals.count(3.0) == 8
    with pytest.raises(ValueError, match="matches no group"):
        L0.expand_groups(names, [["stem"]], [1.0])


def test_run_l0_rerun_retrains_once(monkeypatch):
    from replib import experiments as ex
    from replib.tasks import l0 as task_mod

    calls = []
    monkeypatch.setattr(ex, "run", lambda spec, rerun=False: calls.append(rerun) or spec)
    kw = dict(dataset="mnist", model="lenet300", epochs=1, budget="smoke")
    a = ex.make_spec("l0", "l0_train_prune", compressions=[2], **kw)
    b = ex.make_spec("l0", "l0_train_prune", compressions=[4], **kw)
    d = task_mod._train_dir(a)
    d.mkdir(parents=True)
    (d / "last.pt").write_text("x")
    task_mod._RETRAINED.discard(task_mod.train_key(a))
    task_mod.run_l0(a, rerun=True)
    assert not d.exists()  # first rerun of this trained network: its checkpoint is dropped
    d.mkdir(parents=True)
    task_mod.run_l0(b, rerun=True)
    assert d.exists()  # same network, already retrained in this process: shared again
    assert calls == [True, True]
