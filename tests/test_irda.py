"""iRDA paper: thresholds of Sec. 3.3, initialization of Sec. 3.5, networks, the task, the toy."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from replib import experiments as ex
from replib import irda as IR
from replib.tasks import irda as T

f64 = torch.float64

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- Sec. 3.3 thresholds


def test_thresholds_are_eqs_18_and_20() -> None:
    t = torch.tensor([1.0, 4.0, 100.0, 10_000.0], dtype=f64)
    lam, gamma = 1e-6, 0.5
    pg = IR.prox_sgd_threshold(lam, gamma, t)
    rda = IR.rda_threshold(lam, gamma, t)
    # alpha_t lam = lam / (gamma sqrt t) and (t / beta_t) lam = lam sqrt(t) / gamma, by hand:
    assert torch.allclose(pg, torch.tensor([2e-6, 1e-6, 2e-7, 2e-8], dtype=f64), rtol=1e-12)
    assert torch.allclose(rda, torch.tensor([2e-6, 4e-6, 2e-5, 2e-4], dtype=f64), rtol=1e-12)
    # their ratio is exactly t: RDA's threshold grows, prox-SGD's decays (Sec. 3.3)
    assert torch.allclose(rda / pg, t, rtol=1e-12)


def test_sqrt_prox_effective_lam_grows_linearly_eq_23() -> None:
    t = torch.tensor([1.0, 10.0, 1000.0], dtype=f64)
    assert torch.allclose(IR.sqrt_prox_effective_lam(1e-3, 2.0, t), 1e-3 * t, rtol=1e-12)


def test_thresholds_refuse_bad_arguments() -> None:
    with pytest.raises(ValueError, match="gamma"):
        IR.rda_threshold(1e-6, 0.0, 5)
    with pytest.raises(ValueError, match="t "):
        IR.prox_sgd_threshold(1e-6, 1.0, 0)


# ---------------------------------------------------------------- Sec. 3.5 initialization


def test_irda_init_is_uniform_with_std_s_over_sqrt_fan_in_eq_25() -> None:
    conv = nn.Conv2d(64, 128, 3, bias=False)
    lin = nn.Linear(512, 10)
    bias_before = lin.bias.detach().clone()
    model = nn.Sequential(conv, nn.Flatten(), lin)
    gen = torch.Generator().manual_seed(0)
    assert IR.init_irda_(model, s=10.0, generator=gen) == 2
    n = 9 * 64  # k^2 c
    a = math.sqrt(3) * 10 / math.sqrt(n)
    w = conv.weight.detach()
    assert w.abs().max() <= a
    assert w.abs().max() > 0.99 * a  # 73,728 draws reach the edge of U(-a, a)
    assert abs(w.std().item() - 10 / math.sqrt(n)) < 0.01 * 10 / math.sqrt(n)
    assert abs(w.mean().item()) < 0.01 * a
    assert lin.weight.abs().max() <= math.sqrt(3) * 10 / math.sqrt(512)
    assert torch.equal(lin.bias.detach(), bias_before)  # biases keep their init
    with pytest.raises(ValueError, match="s must be"):
        IR.init_irda_(model, s=0.0)


def test_build_model_widths_and_mnist_stem() -> None:
    full = IR.build_model("resnet18", 10)
    assert sum(p.numel() for p in full.parameters()) == 11_173_962  # ResNet-18, CIFAR stem
    quarter = IR.build_model("resnet18", 10, in_channels=1, width_div=4)
    convs = [m for m in quarter.modules() if isinstance(m, nn.Conv2d)]
    assert convs[0].in_channels == 1 and convs[0].out_channels == 16
    assert quarter.fc.in_features == 128
    assert quarter(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    vgg = IR.build_model("vgg19", 100, width_div=4)
    assert [m.out_channels for m in vgg.modules() if isinstance(m, nn.Conv2d)][-1] == 128
    with pytest.raises(ValueError, match="model="):
        IR.build_model("lenet300", 10)


# ---------------------------------------------------------------- optimizers built by the task


def test_irda_optimizer_anchors_only_the_l1_weights_at_zero() -> None:
    model = IR.build_model("resnet18", 10, width_div=16)
    hp = dict(T.IRDA_DEFAULTS, anchor="zero")
    opt, sched = T.make_irda_optimizer(model, hp)
    assert sched is None
    assert [g["anchor"] for g in opt.param_groups] == ["zero", "init"]
    assert [g["lam"] for g in opt.param_groups] == [1e-6, 0.0]
    bn = model.stem.bn.weight
    model(torch.randn(4, 3, 32, 32)).sum().backward()
    opt.step()
    # BN scales (no l1) move from their init 1.0 by -(sqrt(1)/gamma) gbar = -grad, not to -grad
    assert torch.allclose(bn.detach(), 1.0 - bn.grad, atol=1e-6)


def test_prox_sgd_task_optimizer_uses_the_paper_step_size() -> None:
    model = IR.build_model("resnet18", 10, width_div=16)
    opt, sched = T.make_irda_optimizer(model, dict(T.IRDA_DEFAULTS, method="prox_sgd",
                                                   lam=1e-5, gamma=0.8))
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()  # no gradients yet: a no-op, in the order schedulers expect
        sched.step()
    assert lrs == pytest.approx([1 / (0.8 * math.sqrt(t)) for t in (1, 2, 3, 4)], rel=1e-12)
    assert T.current_threshold(opt, dict(T.IRDA_DEFAULTS, method="prox_sgd", lam=1e-5,
                                         gamma=0.8)) == pytest.approx(1e-5 / (0.8 * math.sqrt(5)))


# ---------------------------------------------------------------- the task


def _spec(**kw):
    base = dict(dataset="mnist", model="resnet18", epochs=1, budget="smoke", train_subset=256,
                val_size=128, width_div=16, augment=False, batch_size=64)
    base.update(kw)
    return ex.make_spec("irda", "irda", **base)


def test_task_refuses_bad_choices() -> None:
    with pytest.raises(ValueError, match="method"):
        T.check_hparams(dict(T.IRDA_DEFAULTS, method="adam"))
    with pytest.raises(ValueError, match="anchor"):
        T.check_hparams(dict(T.IRDA_DEFAULTS, anchor="w1"))
    with pytest.raises(ValueError, match="retrain_epochs"):
        T.check_hparams(dict(T.IRDA_DEFAULTS, method="sgd", retrain_epochs=2))
    with pytest.raises(ValueError, match="unknown parameter"):
        _spec(beta=1.0)


@pytest.mark.slow
def test_irda_task_step_2_never_revives_a_zero(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("REPLIB_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("REPLIB_CHECKPOINTS", str(tmp_path / "ckpt"))
    spec = _spec(method="irda", lam=0.05, gamma=1.0, retrain_epochs=2)
    rec = ex.execute(spec)
    h = rec["history"]
    assert [r["stage"] for r in h] == [1, 2, 2]
    assert [r["iterations"] for r in h] == [4, 8, 12]  # 256 training images / batch 64
    step1 = rec["artifacts"]["layers_step1"]
    final = rec["artifacts"]["layers_final"]
    # lam = 0.05: the threshold lam sqrt(t) already zeroes some weights in Step 1
    assert 0 < h[0]["sparsity"] < 1
    # Step 2 freezes the zero pattern: no layer becomes denser, sparsity never decreases
    assert all(f["sparsity"] >= s["sparsity"] for s, f in zip(step1, final))
    assert h[0]["sparsity"] <= h[1]["sparsity"] <= h[2]["sparsity"]
    # the reported epoch is Step 2's best validation epoch
    vals = [r["val_acc"] for r in h if r["stage"] == 2]
    assert rec["metrics"]["val_acc"] == max(vals)
    assert rec["metrics"]["chosen_epoch"] in (2, 3)


# ---------------------------------------------------------------- the convex toy


def _toy(n_per_class: int = 60) -> IR.L1Logistic:
    return IR.load_l1_logistic((3, 8), "train", n_per_class=n_per_class)


def test_fista_reaches_the_l1_optimality_conditions() -> None:
    prob = _toy()
    lam = 0.01
    w, b = IR.fista_l1_logistic(prob, lam, iters=3000)
    assert T.kkt_violation(prob, w, b, lam) < 1e-4
    assert 0.5 < float((w == 0).double().mean()) < 1.0  # sparse, but not empty
    # a random perturbation of the support violates them clearly: the check can fail
    assert T.kkt_violation(prob, w + 0.01 * (w != 0), b, lam) > 1e-3


def test_toy_rda_is_sparser_than_prox_sgd_and_sqrt_prox_collapses() -> None:
    prob = _toy(200)
    lam, gamma = 3e-3, 1.0
    paths = {m: IR.l1_logistic_path(prob, m, lam, gamma, steps=3000, eval_every=1000)
             for m in IR.TOY_METHODS}
    assert paths["rda"]["t"] == [1000, 2000, 3000]
    assert paths["rda"]["sparsity"][-1] > paths["prox_sgd"]["sparsity"][-1]
    # sqrt(t)-prox-SGD minimizes lam * t * ||w||_1 (Eq. (23)): every weight ends at zero
    assert paths["sqrt_prox_sgd"]["sparsity"][-1] == 1.0
    assert paths["rda"]["threshold"][-1] == pytest.approx(lam * math.sqrt(3000) / gamma)
    assert paths["prox_sgd"]["threshold"][-1] == pytest.approx(lam / (gamma * math.sqrt(3000)))
    with pytest.raises(ValueError, match="method"):
        IR.l1_logistic_path(prob, "sgd", lam, gamma, steps=1)


def test_far_sparser_needs_comparable_accuracy_and_a_margin() -> None:
    # the paper's Table 7: iRDA 90.67 / 0.94 against prox-SGD's sweep -> true
    prox = [(17.90, 1.00), (75.11, 0.97), (88.74, 0.52), (88.20, 0.01), (89.02, 0.00)]
    assert IR.far_sparser([(90.67, 0.94), (38.73, 1.00)], prox)
    # a very sparse but useless iRDA point does not count
    assert not IR.far_sparser([(38.73, 1.00)], prox)
    # comparable accuracy but not sparser by the margin than the comparable prox point
    assert not IR.far_sparser([(88.0, 0.70)], prox)
    assert IR.far_sparser([(88.0, 0.83)], prox)
    assert not IR.far_sparser([], prox)


def test_far_sparser_why_gives_the_deciding_numbers() -> None:
    prox = [(88.74, 0.52), (89.02, 0.00)]
    why = IR.far_sparser_judged([(90.67, 0.94), (38.73, 1.00)], prox)[1]
    assert why.startswith("best prox-SGD top-1 89.0% at sigma 0.000")
    assert "90.7% at sigma 0.940 against 0.520" in why and "+0.420" in why
    assert "38.7" not in why  # outside the 2-point window
    why = IR.far_sparser_judged([(30.0, 0.9), (20.0, 0.99)], prox)[1]
    assert "no iRDA point within 2 points" in why and "best iRDA top-1 30.0% at sigma 0.900" in why


GAMMAS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
# the paper's Table 8 (sparsity by gamma); lambda = 1e-7, gamma = 0.8 is N/A there
TABLE8 = {1e-6: (GAMMAS, [0.78, 0.81, 0.82, 0.84, 0.89, 0.83, 0.92, 0.94, 0.94, 0.94]),
          1e-7: (GAMMAS, [0.41, 0.45, 0.49, 0.55, 0.53, 0.55, 0.60, None, 0.61, 0.61]),
          1e-8: (GAMMAS, [0.09, 0.12, 0.14, 0.12, 0.13, 0.14, 0.13, 0.15, 0.16, 0.16])}


def test_spearman_ranks_with_ties() -> None:
    assert IR.spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert IR.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # ties share their mean rank: ranks (1, 2.5, 2.5, 4) against (1, 2, 3, 4)
    assert IR.spearman([1, 2, 3, 4], [0.1, 0.5, 0.5, 0.9]) == pytest.approx(
        4.5 / math.sqrt(4.5 * 5.0))
    assert math.isnan(IR.spearman([1, 2, 3], [5, 5, 5]))
    with pytest.raises(ValueError, match="length"):
        IR.spearman([1, 2], [1, 2, 3])


def test_gamma_trend_holds_on_the_papers_table_8_and_not_on_a_falling_series() -> None:
    trends = IR.gamma_trends(TABLE8)
    assert set(trends) == {1e-6, 1e-7, 1e-8}
    assert all(t["rho"] > 0.7 and t["holds"] for t in trends.values())
    assert trends[1e-7]["last"] == 0.61  # the N/A entry is dropped, not read as 0
    assert IR.gamma_trend_holds(TABLE8)
    # the paper's table is not monotone (0.89 -> 0.83 at 1e-6): a trend test, not a monotone one
    sp = TABLE8[1e-6][1]
    assert any(b < a for a, b in zip(sp, sp[1:]))
    # a falling series (ours at cpu looks like this) fails, and one failing lambda is enough
    falling = {1e-6: (GAMMAS, [0.016, 0.012, 0.009, 0.007, 0.007, 0.006, 0.006, 0.0055,
                               0.0048, 0.0045])}
    assert not IR.gamma_trend_holds(falling)
    assert IR.gamma_trends(falling)[1e-6]["rho"] < -0.9
    assert not IR.gamma_trend_holds({**TABLE8, **falling, 1e-7: TABLE8[1e-7]})
    # rising in rank but ending where it started, or flat: no trend
    assert not IR.gamma_trend_holds({1e-6: ([0.1, 0.5, 1.0], [0.3, 0.9, 0.3])})
    # lambdas where nothing sparsifies are not judged; none judged at all is False
    dense = {1e-8: (GAMMAS, [0.0001] * 10)}
    assert IR.gamma_trends(dense) == {}
    assert not IR.gamma_trend_holds(dense)
    assert IR.gamma_trend_holds({**TABLE8, **dense})


def test_setting_is_shared_and_refuses_unknown_data() -> None:
    cpu = IR.setting("cifar10", "cpu")
    assert cpu["width_div"] == 8 and cpu["train_subset"] == 5000 and cpu["augment"]
    assert IR.for_method(cpu, "sgd")["retrain_epochs"] == 0
    assert IR.for_method(cpu, "irda")["retrain_epochs"] == cpu["retrain_epochs"]
    assert not IR.setting("mnist", "paper")["augment"]
    net = IR.setting("imagenet", "paper")  # the CIFAR tables' length, 10,000 held out
    assert net["epochs"] == 120 and net["retrain_epochs"] == 40 and net["val_size"] == 10000
    assert net["width_div"] == 1 and net["augment"] and net["train_subset"] == 0
    with pytest.raises(ValueError, match="dataset"):
        IR.setting("tinyimagenet", "cpu")
    with pytest.raises(ValueError, match="budget"):
        IR.setting("mnist", "gpu")


def test_paper_budget_specs_are_the_papers_settings() -> None:
    cfg = IR.setting("cifar10", "paper")
    assert (cfg["width_div"], cfg["train_subset"], cfg["epochs"]) == (1, 0, 120)
    for model, dataset in [("resnet18", "cifar10"), ("vgg16", "cifar10"), ("vgg19", "cifar10"),
                           ("resnet18", "mnist"), ("resnet18", "cifar100")]:
        spec = ex.make_spec("irda", "irda", dataset=dataset, model=model, budget="paper",
                            method="irda", lam=1e-6, gamma=1.0, s=10.0,
                            **IR.setting(dataset, "paper"))
        assert spec.hp["batch_size"] == 128 and spec.hp["retrain_epochs"] == 40
        assert spec.hp["augment"] == (dataset != "mnist")


def test_long_setting_is_longer_than_the_cut_on_all_training_images():
    cut, long = IR.setting("cifar10", "cpu"), IR.long_setting("cifar10", "cpu")
    assert long["train_subset"] == 0 and long["val_size"] == 5000
    assert long["width_div"] == cut["width_div"] and long["augment"]
    assert long["epochs"] * 45000 > 20 * cut["epochs"] * cut["train_subset"]
    assert IR.long_setting("cifar10", "paper") is None
    with pytest.raises(ValueError, match="longer run exists for"):
        IR.long_setting("cifar100", "cpu")
    with pytest.raises(ValueError):
        IR.long_setting("cifar10", "gpu")


def test_mnist_long_setting_is_longer_than_the_mnist_cut_and_keeps_its_data_and_width():
    cut, long = IR.setting("mnist", "cpu"), IR.long_setting("mnist", "cpu")
    for key in ("train_subset", "val_size", "width_div"):
        assert long[key] == cut[key]
    assert not long["augment"] and long["epochs"] >= 3 * cut["epochs"]
    assert long["retrain_epochs"] > cut["retrain_epochs"]
    assert IR.long_setting("mnist", "paper") is None and IR.long_settings("mnist", "paper") == []
    runs = IR.long_settings("mnist", "cpu")
    assert runs[-1] == long and len(runs) == 2
    assert [r["epochs"] for r in runs] == sorted({r["epochs"] for r in runs})  # shortest first
    assert all(r["epochs"] > cut["epochs"] and not r["augment"] for r in runs)
    assert [r["epochs"] for r in IR.long_settings("cifar10", "cpu")] == [24]
    smoke = IR.long_settings("mnist", "smoke")
    assert len(smoke) == 2 and all(0 < r["train_subset"] <= 512 and r["epochs"] <= 3
                                   for r in smoke)
