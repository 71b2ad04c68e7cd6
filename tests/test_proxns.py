"""Proximal / original network slimming: widths, penalties, counts, physical pruning, tasks."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import fake_cifar100, have_data
from torch import nn

from replib import data, proxns
from replib import experiments as ex
from replib.experiments import claims
from replib.metrics import count_params
from replib.models.vgg import VGG
from replib.sparsity.prune import bn_channel_masks

# ---------------------------------------------------------------- networks at a width


def test_vgg19_width_scales_every_conv_and_keeps_the_pools() -> None:
    cfg = proxns.vgg_cfg(0.25)
    assert cfg == [16, 16, "M", 32, 32, "M", 64, 64, 64, 64, "M", 128, 128, 128, 128, "M",
                   128, 128, 128, 128]
    net = proxns.build_model("vgg19", 10, 0.25)
    assert proxns.total_channels(net) == 5504 // 4  # Table 1's 5504 scaling factors / 4
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_full_width_is_the_registry_network() -> None:
    net = proxns.build_model("densenet40", 10, 1.0)
    assert proxns.total_channels(net) == 9360
    assert count_params(net) == 1_059_298


@pytest.mark.parametrize("name,full", [("densenet40", 9360), ("preresnet164", 12112),
                                       ("preresnet110", 8080)])
def test_width_quarter_has_a_quarter_of_the_scaling_factors(name: str, full: int) -> None:
    net = proxns.build_model(name, 10, 0.25)
    # every width of these nets is a multiple of 4 (DenseNet: growth 12 -> 3, stem 24 -> 6)
    assert proxns.total_channels(net) == full // 4
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    bns = proxns.batchnorms(net).values()
    assert all(torch.all(bn.weight == 0.5) for bn in bns)  # Algorithm 1: gamma init 0.5


def test_narrowed_preresnet_is_freshly_initialized() -> None:
    net = proxns.build_model("preresnet110", 10, 0.5)
    conv = net.conv1
    assert conv.out_channels == 8
    # slimming init: N(0, sqrt(2 / (k^2 * out))) for the 3x3 stem with 8 outputs
    std = (2.0 / (9 * 8)) ** 0.5
    assert 0.5 * std < float(conv.weight.detach().std()) < 1.5 * std


def test_bad_model_and_width_are_refused() -> None:
    with pytest.raises(ValueError, match="model"):
        proxns.build_model("resnet20", 10, 0.5)
    with pytest.raises(ValueError, match="width"):
        proxns.build_model("vgg19", 10, 0.0)
    with pytest.raises(ValueError, match="model"):
        proxns.paper_settings("vgg16")


# ---------------------------------------------------------------- penalty and counts


def test_slimming_penalty_gradient_is_s_sign_gamma_with_sign_0_is_0() -> None:
    net = VGG([3, "M", 4], 10)
    bn = net.features.bn2
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([0.5, -0.2, 0.0, 1e-9]))
    s = 1e-4
    loss = proxns.slimming_penalty(s)(net)
    loss.backward()
    torch.testing.assert_close(bn.weight.grad, s * torch.tensor([1.0, -1.0, 0.0, 1.0]))
    torch.testing.assert_close(loss.detach(), torch.tensor(s * (3 * 0.5 + 0.7 + 1e-9)))
    with pytest.raises(ValueError, match="s="):
        proxns.slimming_penalty(-1.0)


def test_count_zeros_and_log_histogram_account_for_every_value() -> None:
    x = torch.tensor([0.0, 0.0, -1e-12, 2e-5, 0.3, -0.3, 20.0])
    assert proxns.count_zeros([x, torch.zeros(3)]) == 5
    h = proxns.log_histogram([x], lo=-8.0, hi=1.0, bins=9)
    assert h["zeros"] == 2 and h["below"] == 1 and h["above"] == 1
    assert sum(h["counts"]) == 3  # 2e-5 and the two |0.3|
    assert h["counts"][3] == 1  # log10(2e-5) = -4.7 falls in [-5, -4)
    assert h["counts"][7] == 2  # log10(0.3) = -0.52 falls in [-1, 0)
    assert len(h["edges"]) == 10


# ---------------------------------------------------------------- physical pruning


def test_prune_channels_removes_exactly_the_masked_channels() -> None:
    torch.manual_seed(0)
    net = VGG([4, "M", 6], 10).eval()
    masks = {"features.bn1": torch.tensor([True, False, True, False]),
             "features.bn2": torch.tensor([False, True, True, False, True, False])}
    shrunk, stats = proxns.prune_channels(net, masks, (3, 32, 32))
    # conv1 3x2x9 + bn1 2x2 + conv2 2x3x9 + bn2 2x3 + fc 3x10+10
    assert stats["params_after"] == count_params(shrunk) == 54 + 4 + 54 + 6 + 40
    assert stats["params"] == 3 * 4 * 9 + 8 + 4 * 6 * 9 + 12 + 70
    assert stats["channels"] == 10 and stats["channels_pruned"] == 5
    assert stats["channels_pruned_pct"] == pytest.approx(50.0)
    # FLOPs = 2 x MACs: conv1 32x32x(2*27), conv2 16x16x(3*18), fc 3*10
    assert stats["flops_after"] == 2 * (1024 * 2 * 27 + 256 * 3 * 18 + 30)
    x = torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(shrunk(x), proxns.masked_copy(net, masks)(x))


def test_percent_pruning_never_empties_a_layer_and_the_net_still_runs() -> None:
    torch.manual_seed(0)
    net = proxns.build_model("vgg19", 10, 0.125).eval()
    with torch.no_grad():
        for i, bn in enumerate(proxns.batchnorms(net).values()):
            bn.weight.copy_(torch.rand(bn.num_features) * (0.01 if i < 8 else 1.0))
    masks = bn_channel_masks(net, percent=0.6)
    assert all(int(m.sum()) >= 1 for m in masks.values())
    shrunk, stats = proxns.prune_channels(net, masks, (3, 32, 32))
    kept = [bn.num_features for bn in proxns.batchnorms(shrunk).values()]
    assert kept == [int(m.sum()) for m in masks.values()]
    assert stats["channels_pruned"] == 688 - sum(kept)
    assert shrunk(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_preresnet_first_bn_is_pruned_by_selection_not_by_the_residual_stream() -> None:
    """A pre-activation block's bn1 reads the residual stream shared with the shortcut: its
    masked channels are dropped from bn1 and conv1 only (a channel selection in front), the
    stream keeps its width, and the shrunk net computes what the masked net computes."""
    torch.manual_seed(0)
    net = proxns.build_model("preresnet110", 10, 0.25).eval()
    masks = {n: torch.ones(bn.num_features, dtype=torch.bool)
             for n, bn in proxns.batchnorms(net).items()}
    name = "stages.layer2.3.bn1"
    masks[name][::2] = False
    width = masks[name].numel()
    shrunk, stats = proxns.prune_channels(net, masks, (3, 32, 32))
    assert stats["channels_pruned"] == width // 2
    block = shrunk.stages.layer2[3]
    assert block.conv1.in_channels == width // 2
    assert block.conv3.out_channels == width  # residual stream untouched
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(shrunk(x), proxns.masked_copy(net, masks)(x), atol=1e-5,
                               rtol=1e-5)


def test_folding_keeps_the_constant_output_of_a_zero_scale_channel() -> None:
    """gamma = 0 leaves relu(beta): folding it into the consumer's bias before removal gives
    exactly the gamma-zeroed net when the consumer is the classifier (after global pooling)."""
    torch.manual_seed(0)
    net = VGG([4, "M", 6], 10).eval()
    bn = net.features.bn2
    with torch.no_grad():
        bn.bias.copy_(torch.tensor([0.3, -0.2, 0.5, 0.1, 0.0, 0.7]))
        bn.running_mean.uniform_(-0.1, 0.1)
        bn.weight[[0, 2, 5]] = 0.0  # zero scaling factors, nonzero shifts
    masks = {"features.bn2": bn.weight.detach() != 0}
    x = torch.randn(4, 3, 32, 32)
    reference = net(x)
    folded = proxns.masked_copy(proxns.fold_pruned_constants_(proxns.masked_copy(net, {}),
                                                              masks), masks)
    torch.testing.assert_close(folded(x), reference)
    removed = proxns.masked_copy(net, masks)  # the official removal drops relu(beta)
    assert not torch.allclose(removed(x), reference)


def test_folding_is_exact_for_1x1_consumers_in_the_preresnet() -> None:
    torch.manual_seed(0)
    net = proxns.build_model("preresnet110", 10, 0.25).eval()
    masks = {n: torch.ones(bn.num_features, dtype=torch.bool)
             for n, bn in proxns.batchnorms(net).items()}
    with torch.no_grad():
        for name in ("stages.layer2.3.bn3", "stages.layer3.0.bn1"):  # read by 1x1 convs
            bn = net.get_submodule(name)
            bn.bias.uniform_(-0.5, 0.5)
            bn.weight[::2] = 0.0
            masks[name] = bn.weight.detach() != 0
    x = torch.randn(2, 3, 32, 32)
    folded = proxns.masked_copy(proxns.fold_pruned_constants_(proxns.masked_copy(net, {}),
                                                              masks), masks)
    torch.testing.assert_close(folded(x), net(x), atol=1e-5, rtol=1e-5)


def test_every_bn_of_the_slimming_nets_has_one_consumer_layer() -> None:
    from replib.proxns import _consumer_after

    dn = proxns.build_model("densenet40", 10, 0.25)
    assert _consumer_after(dn, "blocks.block1.0.bn") is dn.blocks.block1[0].conv
    assert _consumer_after(dn, "blocks.trans1.bn") is dn.blocks.trans1.conv
    assert _consumer_after(dn, "bn") is dn.fc
    for name in ("vgg19", "preresnet164"):
        net = proxns.build_model(name, 10, 0.25)
        for bn_name in proxns.batchnorms(net):
            layer = _consumer_after(net, bn_name)
            assert layer.weight.shape[1] == net.get_submodule(bn_name).num_features


def test_drift_steps_match_algorithm_1_with_a_zero_gradient() -> None:
    from replib.sparsity.optim import ProximalSlimming

    lam, beta, lr = 0.05, 100.0, 0.1
    gamma = nn.Parameter(torch.full((1,), 0.5, dtype=torch.float64))
    sgd = torch.optim.SGD([gamma], lr=lr)
    slim = ProximalSlimming([gamma], lam=lam, beta=beta, base_optimizer=sgd)
    slim.state[gamma]["xi"].fill_(0.5)
    steps = 0
    while slim.state[gamma]["xi"].item() > 0:
        gamma.grad = torch.zeros_like(gamma)
        sgd.step()
        slim.step()
        steps += 1
    assert steps == pytest.approx(proxns.drift_steps(lam, beta, 1 / lr), rel=0.01)  # 1200


def test_penalties_are_the_official_ones_at_the_paper_length_and_scaled_when_cut() -> None:
    paper = proxns.penalty_settings("vgg19", 50_000, 160)
    assert paper == {"lam": 0.0045, "beta": 100.0, "s": 1e-4, "kappa": 1.0}
    cut = proxns.penalty_settings("vgg19", 10_000, 6)  # 3 x 157 steps before the LR drop
    assert cut["beta"] == 100.0  # beta stays the paper's
    assert proxns.drift_steps(cut["lam"], cut["beta"], 10.0) == pytest.approx(471)
    assert cut["s"] / 1e-4 == pytest.approx(cut["kappa"]) == pytest.approx(13_333.33 / 471)
    ablation = proxns.run_spec("vgg19", "proximal", "cpu", beta=1.0, drift_fraction=0.5)
    assert ablation.hp["beta"] == 1.0
    assert proxns.drift_steps(ablation.hp["lam"], 1.0, 10.0) == pytest.approx(0.5 * 471)
    spec = proxns.run_spec("preresnet164", "original", "paper", percent=0.71)
    assert spec.hp["s"] == 1e-5 and spec.hp["percent"] == 0.71 and spec.epochs == 160
    with pytest.raises(ValueError, match="percent"):
        proxns.run_spec("vgg19", "original", "cpu")
    assert proxns.matched_percent({"channels_pruned_pct": 74.59}) == 0.74


def test_train_steps_count_the_training_stage_against_the_papers_125120() -> None:
    assert proxns.paper_train_steps() == 160 * 782 == 125_120
    sched = proxns.paper_schedule()
    assert sched == {"epochs": 160, "batches_per_epoch": 782, "batch_size": 64}
    assert proxns.paper_schedule(128)["batches_per_epoch"] == 391  # ceil(50,000 / 128)
    vgg = proxns.run_spec("vgg19", "proximal", "cpu")  # 6 epochs x 157 batches of 64
    assert proxns.train_steps(vgg) == 942
    assert proxns.train_steps(proxns.run_spec("densenet40", "proximal", "cpu")) == 4 * 79
    longer = proxns.run_spec("preresnet164", "proximal", "cpu",
                             **proxns.LONG["cpu"]["preresnet164"])
    assert proxns.train_steps(longer) == 24 * 157
    # the paper budget's own spec is the paper's length; fine-tuning epochs are not counted
    assert proxns.train_steps(proxns.run_spec("vgg19", "proximal", "paper")) == 125_120
    # a record (or its spec) gives the same count; a held-out split is not trained on
    rec = {"spec": {"epochs": 6, "hparams": dict(vgg.hp)}}
    assert proxns.train_steps(rec) == proxns.train_steps(rec["spec"]) == 942
    rec["spec"]["hparams"].update(train_subset=0, val_size=5_000)
    assert proxns.train_steps(rec) == 6 * 704
    # run_length counts the images train_steps trains on: 45,000, not 50,000
    assert proxns.train_images(rec) == 45_000
    assert proxns.run_length(rec) == "6 epochs, 45,000 images"
    assert proxns.run_length({"spec": {"epochs": 24, "hparams": dict(longer.hp)}}) == (
        "24 epochs, 10,000 images")
    assert (proxns.paper_train_steps(100), proxns.paper_train_steps(128)) == (80_000, 62_560)


def test_steps_vs_paper_states_the_steps_and_their_share_of_the_papers() -> None:
    vgg = proxns.run_spec("vgg19", "proximal", "cpu")  # 942 / 125,120 = 0.753%
    assert proxns.steps_vs_paper(vgg) == "942 SGD steps (0.75% of the paper's)"
    longer = proxns.run_spec("preresnet164", "proximal", "cpu",
                             **proxns.LONG["cpu"]["preresnet164"])  # 3,768 / 125,120 = 3.012%
    assert proxns.steps_vs_paper({"spec": {"epochs": longer.epochs,
                                           "hparams": dict(longer.hp)}}) == (
        "3,768 SGD steps (3.01% of the paper's)")
    assert proxns.steps_vs_paper(proxns.run_spec("densenet40", "proximal", "paper")) == (
        "125,120 SGD steps (100.00% of the paper's)")


def test_slow_epochs_flags_epochs_over_three_medians() -> None:
    times = [96.0, 90.0, 742.0, 100.0, 288.0]  # median 100: 742 > 300, 288 is not
    rec = {"history": [{"epoch": i + 1, "epoch_time_s": t} for i, t in enumerate(times)]}
    assert proxns.slow_epochs(rec) == ([(3, 742.0)], 100.0)
    assert proxns.slow_epochs(rec, factor=2.5) == ([(3, 742.0), (5, 288.0)], 100.0)
    slow, med = proxns.slow_epochs({"history": []})
    assert slow == [] and math.isnan(med)


def _tiny_split(n: int = 40) -> data.Split:
    g = torch.Generator().manual_seed(0)
    info = data.check_name("cifar10")
    return data.Split("cifar10", "test", torch.randint(0, 256, (n, 3, 32, 32), generator=g,
                                                       dtype=torch.uint8),
                      torch.randint(0, 10, (n,), generator=g), info, {})


def test_prune_curve_at_zero_percent_is_the_unpruned_accuracy() -> None:
    from replib.metrics import evaluate

    torch.manual_seed(0)
    net = proxns.build_model("vgg19", 10, 0.125)
    with torch.no_grad():  # distinct scales (at init they all tie at 0.5)
        for bn in proxns.batchnorms(net).values():
            bn.weight.uniform_(0.1, 1.0)
    split = _tiny_split()
    curve = proxns.prune_curve(net, split, [0.0, 0.5])
    assert curve[0]["acc"] == evaluate(net, split)["acc"]
    assert curve[0]["channels_pruned_pct"] == 0.0
    assert curve[1]["channels_pruned_pct"] == pytest.approx(50.0)


# ---------------------------------------------------------------- tasks


def test_tasks_refuse_bad_settings_before_training() -> None:
    with pytest.raises(ValueError, match="model"):
        ex.make_spec("proxns", "proxns_proximal_ns", dataset="cifar10", model="resnet20",
                     epochs=1)
    spec = ex.make_spec("proxns", "proxns_original_ns", dataset="cifar10", model="vgg19",
                        epochs=1, budget="smoke", percent=1.5)
    with pytest.raises(ValueError, match="percent"):
        ex.run(spec)
    spec = ex.make_spec("proxns", "proxns_proximal_ns", dataset="cifar10", model="vgg19",
                        epochs=1, budget="smoke", width=1.5)
    with pytest.raises(ValueError, match="width"):
        ex.run(spec)


@pytest.mark.skipif(not have_data("cifar10"), reason="CIFAR-10 not available")
def test_proximal_ns_with_a_huge_lambda_zeroes_all_but_one_channel_per_layer() -> None:
    """lam / (alpha + beta) = 60 / 110 > 0.53 >= xi: one step sets every xi to exactly 0.
    Every layer would be emptied, so exactly one channel per BN layer (16 in VGG-19) stays,
    and the pruned VGG is a chain of one-channel convs: 27 + 15 x 9 + 16 x 2 + 20 parameters."""
    spec = ex.make_spec("proxns", "proxns_proximal_ns", dataset="cifar10", model="vgg19",
                        epochs=1, budget="smoke", width=0.125, train_subset=64,
                        test_subset=20, curve=[0.5], lam=60.0, beta=100.0,
                        finetune_epochs=1)
    m = ex.run(spec)["metrics"]
    assert m["zero_xi"] == m["channels"] == 688
    assert m["channels_pruned"] == 688 - 16
    assert m["params_after"] == 27 + 15 * 9 + 16 * 2 + 20
    assert m["test_n"] == 20 and "test_acc_finetuned" in m


def _fake(task: str, model: str = "vgg19", **metrics) -> dict:
    return {"spec": {"task": task, "model": model, "dataset": "cifar10",
                     "hparams": {"width": 0.25}}, "metrics": metrics}


def _vgg_pair(px: tuple[float, float, float, float], ns: tuple[float, float, float, float]
              ) -> tuple[dict, dict]:
    """Fake VGG-19 proximal / original NS records from (trained acc, drop in points,
    % params pruned, pruned acc) each; 70% of the channels pruned, no exact zeros in NS."""
    common = dict(channels_pruned_pct=70.0, test_n=1000)
    keys = ("test_acc_trained", "acc_drop_pruning_pts", "params_pruned_pct", "test_acc_pruned")
    return (_fake("proxns_proximal_ns", **dict(zip(keys, px)), flops_pruned_pct=50.0, **common),
            _fake("proxns_original_ns", **dict(zip(keys, ns)), flops_pruned_pct=55.0,
                  zero_gamma=0, channels=1376, **common))


def test_table2_claims_compare_the_two_methods_and_skip_untrained_runs() -> None:
    px, ns = _vgg_pair((0.60, 0.3, 80.0, 0.597), (0.62, 52.0, 75.5, 0.10))
    values, notes = proxns.table2_claims({("vgg19", "proximal"): px, ("vgg19", "original"): ns})
    assert values["C-vgg19-c10-px-prune-drop"] == 0.3
    assert values["C-vgg19-c10-ns-collapse"] is True  # 52.0 - 0.3 >= 10 points
    assert values["C-vgg19-c10-params-ge"] == pytest.approx(4.5)
    assert values["S1-vgg19-c10-ns-zero-pct"] == 0.0
    assert list(notes) == ["C-vgg19-c10-ns-collapse"]  # the gap and its standard error
    assert notes["C-vgg19-c10-ns-collapse"].startswith("original NS lost 51.7 points more")
    px["metrics"]["test_acc_trained"] = 0.15  # below twice chance: nothing to lose
    values, notes = proxns.table2_claims({("vgg19", "proximal"): px, ("vgg19", "original"): ns})
    assert values["C-vgg19-c10-ns-collapse"] is None and "15.0%" in notes["C-vgg19-c10-ns-collapse"]
    meas, notes = claims.gate_cut("cpu", values, ["C-vgg19-c10-px-prune-drop"], "cut", notes)
    assert meas["T2-vgg19-c10-px-params"] is None and "80" in notes["T2-vgg19-c10-px-params"]
    assert meas["C-vgg19-c10-px-prune-drop"] is None  # degenerate wins over "judged at cut"


def _full_table2(dataset: str) -> dict:
    """Fake Table 2 records of every network on ``dataset``: a baseline, original NS and
    proximal NS each, with fine-tuning, so that every claim table2_claims can emit is."""
    recs = {}
    for model in ("vgg19", "densenet40", "preresnet164"):
        px, ns = _vgg_pair((0.60, 0.3, 80.0, 0.597), (0.62, 52.0, 75.5, 0.10))
        for r in (px, ns):
            r["spec"].update(model=model, dataset=dataset)
            r["metrics"].update(epoch_time_s=10.0, finetune_epoch_time_s=7.0,
                                test_acc_finetuned=0.61)
        base = _fake("proxns_baseline", model=model, test_acc=0.63, epoch_time_s=8.0)
        base["spec"]["dataset"] = dataset
        recs |= {(model, "proximal"): px, (model, "original"): ns, (model, "baseline"): base}
    return recs


@pytest.mark.parametrize("dataset,ds", [("cifar10", "c10"), ("cifar100", "c100")])
def test_table2_claims_of_either_data_set_are_all_in_the_ledger(dataset: str, ds: str) -> None:
    from replib.experiments import claims

    values, _ = proxns.table2_claims(_full_table2(dataset))
    ledger = {c["claim_id"]: c for c in claims.load_claims("proxns")}
    assert set(values) <= set(ledger)
    assert all(f"-{ds}-" in cid for cid in values)
    # every Table 2 row of this data set (not Table 1's, not ResNet-110's Table 3) is emitted
    want = {cid for cid, c in ledger.items() if c["notebook"] == "02_cifar_results"
            and f"-{ds}-" in cid and "resnet110" not in cid}
    assert set(values) == want
    assert values[f"T2-vgg19-{ds}-px-time-ratio"] == pytest.approx(10.0 / 8.0)
    assert values[f"T2-vgg19-{ds}-ns-ft-time-ratio"] == pytest.approx(0.7)
    assert values[f"T2-densenet40-{ds}-base-acc"] == pytest.approx(63.0)


def test_table2_claims_refuse_mixed_data_sets_and_a_wrong_ds() -> None:
    recs = _full_table2("cifar100")
    assert proxns.table2_claims(recs, ds="c100")[0] == proxns.table2_claims(recs)[0]
    with pytest.raises(ValueError, match="ds='c10'"):
        proxns.table2_claims(recs, ds="c10")
    recs[("vgg19", "baseline")]["spec"]["dataset"] = "cifar10"
    with pytest.raises(ValueError, match="one data set"):
        proxns.table2_claims(recs)
    assert proxns.table2_claims({}) == ({}, {})


def test_paper_rows_of_table_2b_are_cifar_100s() -> None:
    row = proxns.paper_row("preresnet164", "original", "cifar100")
    assert row["acc pruned"] == 2.39 and row["acc fine-tuned"] == 76.68
    assert row["% params"] == 26.66 and row["s / epoch"] == 150.65
    assert proxns.paper_row("vgg19", "baseline", "cifar100")["acc trained"] == 72.73
    assert proxns.paper_row("vgg19", "proximal")["% channels"] == 74.59  # Table 2a by default
    assert set(proxns.TABLE2B) == set(proxns.TABLE2A)
    with pytest.raises(ValueError, match="dataset="):
        proxns.paper_row("vgg19", "baseline", "tiny_imagenet")


def test_fill_missing_leaves_the_ledgers_reason_unless_the_data_were_loaded() -> None:
    values, notes = proxns.fill_missing("02_cifar_results", {}, {}, "why")
    assert "T2-vgg19-c10-base-acc" in values and values["T2-vgg19-c10-base-acc"] is None
    assert notes["T2-vgg19-c10-base-acc"] == "why"
    assert not any("-c100-" in cid for cid in values)  # the ledger says why they are not run
    values, notes = proxns.fill_missing("02_cifar_results", {"T2-vgg19-c100-base-acc": 70.0},
                                        {}, "why", loaded=["cifar100"])
    assert values["T2-vgg19-c100-base-acc"] == 70.0  # a measured value stays
    assert values["T2-resnet164-c100-ns-acc-finetuned"] is None
    assert notes["T2-resnet164-c100-ns-acc-finetuned"] == "why"
    assert not any(cid.startswith("T1-") for cid in values)  # notebook 01's
    with pytest.raises(ValueError, match="loaded="):
        proxns.fill_missing("02_cifar_results", {}, {}, "why", loaded=["c100"])


@pytest.mark.skipif(not have_data("cifar10"), reason="CIFAR-10 not available")
def test_table_2b_runs_and_is_judged_where_cifar100_can_be_loaded(tmp_path, monkeypatch) -> None:
    """The CIFAR-100 path of notebooks 01 and 02 (run only where the data load), end to end on
    a tiny stand-in: 100-class networks, Table 2b's claim ids, the ledger's reason replaced."""
    from replib.experiments import claims

    assert data.available("cifar100", download=False)[0] is False  # offline here
    monkeypatch.setenv("REPLIB_DATA", str(fake_cifar100(tmp_path / "data")))
    assert data.available("cifar100") == (True, "")
    recs = proxns.table2_records(["vgg19"], "smoke", dataset="cifar100")
    assert sorted(recs) == [("vgg19", "baseline"), ("vgg19", "original"), ("vgg19", "proximal")]
    assert all(r["spec"]["dataset"] == "cifar100" for r in recs.values())
    # a 100-class classifier: the unpruned network's parameters are those of build_model's
    assert recs[("vgg19", "proximal")]["metrics"]["params"] == count_params(
        proxns.build_model("vgg19", num_classes=100, width=0.125))
    # the same specs again are looked up, not retrained, into the caller's dict
    again = {}
    assert proxns.table2_records(["vgg19"], "smoke", dataset="cifar100", out=again) is again
    assert {k: r["run_id"] for k, r in again.items()} == {k: r["run_id"] for k, r in recs.items()}
    values, notes = proxns.table2_claims(recs)
    assert values and all("-c100-" in cid for cid in values)
    meas, notes = claims.gate_cut("smoke", values, [], "cut", notes)
    meas, notes = proxns.fill_missing("02_cifar_results", meas, notes, "not measured",
                                      loaded=["cifar100"])
    claims.record_claims("proxns", "02_cifar_results", "smoke", meas,
                         run_ids=[r["run_id"] for r in recs.values()], notes=notes)
    st = claims.status_table("proxns", include_smoke=True).set_index("claim")
    row = st.loc["T2-vgg19-c100-px-acc-pruned"]
    assert "offline" not in str(row["note"])  # the ledger's reason no longer applies
    assert st.loc["T2-densenet40-c100-base-acc", "note"] == "not measured"


def test_table2_records_keep_the_runs_made_before_an_error(monkeypatch) -> None:
    """A record goes into ``out`` as soon as it exists: what the planner of make reproduce
    needs when it stops at original NS's fraction, which needs proximal NS's result."""
    calls = []

    def fake_run(spec, rerun=False):
        calls.append(spec.task)
        if spec.task == "proxns_original_ns":
            raise RuntimeError("stop")
        return {"spec": spec, "metrics": {"channels_pruned_pct": 42.7}}

    monkeypatch.setattr(ex, "run", fake_run)
    out = {}
    with pytest.raises(RuntimeError, match="stop"):
        proxns.table2_records(["vgg19", "densenet40"], "smoke", out=out)
    assert list(out) == [("vgg19", "proximal"), ("vgg19", "baseline")]
    assert calls == ["proxns_proximal_ns", "proxns_baseline", "proxns_original_ns"]


def test_table2_records_refuse_a_data_set_table_2_has_not() -> None:
    with pytest.raises(ValueError, match="dataset="):
        proxns.table2_records(["vgg19"], "smoke", dataset="mnist")


def test_gate_notes_give_each_claim_its_own_networks_cut() -> None:
    cuts = proxns.cut_texts(["densenet40", "preresnet110"], "cpu")
    assert list(cuts) == ["densenet40", "resnet110"]
    assert cuts["resnet110"].startswith("ResNet-110: width x0.25, 5000 images, 4+0 epochs")
    values = {"T3-resnet110-params": 91.04, "T3-densenet40-params": 95.05, "other": 1.0}
    meas, notes = claims.gate_cut("cpu", values, [], cuts)
    assert meas == dict.fromkeys(values)
    assert notes["T3-resnet110-params"] == (
        f"not comparable at the cpu budget ({cuts['resnet110']}); ours: 91.04")
    assert "DenseNet-40" not in notes["T3-resnet110-params"]
    assert "ResNet-110" not in notes["T3-densenet40-params"]
    assert "DenseNet-40" in notes["other"] and "ResNet-110" in notes["other"]  # no network: all
    assert claims.gate_cut("paper", values, [], cuts) == (values, {})


def test_longer_pair_replaces_only_its_networks_statements_and_keeps_the_short_value() -> None:
    px, ns = _vgg_pair((0.80, 0.2, 81.0, 0.798), (0.81, 40.0, 80.0, 0.41))
    px["spec"]["epochs"] = 24
    px["spec"]["hparams"]["train_subset"] = 10_000
    short = {"C-vgg19-c10-px-prune-drop": 40.7, "C-vgg19-c10-ns-collapse": False,
             "C-resnet164-c10-px-prune-drop": 18.6, "T2-vgg19-c10-px-params": None,
             "C-densenet40-c10-px-prune-drop": None}
    values, notes = proxns.judge_on_long(short, {}, {"proximal": px, "original": ns})
    assert values["C-vgg19-c10-px-prune-drop"] == 0.2
    assert values["C-vgg19-c10-ns-collapse"] is True  # 40.0 - 0.2 >= 10 points
    assert values["C-vgg19-c10-params-ge"] == pytest.approx(1.0)
    assert values["C-resnet164-c10-px-prune-drop"] == 18.6  # other networks untouched
    assert values["C-densenet40-c10-px-prune-drop"] is None
    assert values["T2-vgg19-c10-px-params"] is None  # magnitudes stay the cut's
    assert "longer VGG-19 pair, 24 epochs, 10,000 images" in notes["C-vgg19-c10-px-prune-drop"]
    assert "40.70" in notes["C-vgg19-c10-px-prune-drop"]
    assert proxns.judge_on_long(short, {}, None) == (short, {})
    # a DenseNet-40 pair replaces DenseNet-40's statements, "not testable" ones included
    for r in (px, ns):
        r["spec"]["model"] = "densenet40"
    values, notes = proxns.judge_on_long(short, {}, {"proximal": px, "original": ns})
    assert values["C-densenet40-c10-px-prune-drop"] == 0.2
    assert values["C-densenet40-c10-ns-collapse"] is True
    assert values["C-vgg19-c10-px-prune-drop"] == 40.7
    assert "not testable" in notes["C-densenet40-c10-px-prune-drop"]
    assert "longer DenseNet-40 pair" in notes["C-densenet40-c10-px-prune-drop"]
    ns["spec"]["model"] = "vgg19"
    with pytest.raises(ValueError, match="one network"):
        proxns.judge_on_long(short, {}, {"proximal": px, "original": ns})
    with pytest.raises(ValueError, match="proximal NS run"):
        proxns.judge_on_long(short, {}, {"original": ns})
    with pytest.raises(ValueError, match="proximal NS run"):
        proxns.judge_on_long(short, {}, {"proximal": px, "baseline": ns})


def test_a_longer_proximal_run_alone_judges_only_the_pruning_drop() -> None:
    """Notebook 03's ResNet-110: a longer proximal NS run and no original NS run."""
    px, _ = _vgg_pair((0.65, 1.5, 40.0, 0.635), (0.6, 30.0, 40.0, 0.3))
    px["spec"].update(model="preresnet110", epochs=24)
    px["spec"]["hparams"]["train_subset"] = 10_000
    short = {"C-resnet110-c10-px-prune-drop": 12.4, "T3-resnet110-params": 91.0,
             "C-vgg19-c10-px-prune-drop": 0.2}
    values, notes = proxns.judge_on_long(short, {}, {"proximal": px})
    assert values == {**short, "C-resnet110-c10-px-prune-drop": 1.5}
    assert list(notes) == ["C-resnet110-c10-px-prune-drop"]
    assert notes["C-resnet110-c10-px-prune-drop"] == (
        "judged on the longer ResNet-110 run, 24 epochs, 10,000 images; "
        "the shorter cut's value: 12.40")
    px["metrics"]["test_acc_trained"] = 0.15  # a longer run that learned nothing is not judged
    values, notes = proxns.judge_on_long(short, {}, {"proximal": px})
    assert values["C-resnet110-c10-px-prune-drop"] is None
    assert "15.0%" in notes["C-resnet110-c10-px-prune-drop"]


def test_long_pairs_are_those_of_the_budget_and_reject_bad_input() -> None:
    assert proxns.long_records("preresnet110", "smoke") is None  # no longer run: nothing is run
    assert proxns.long_records("vgg19", "paper") is None
    with pytest.raises(ValueError, match="not known"):
        proxns.long_records("vgg16", "cpu")
    with pytest.raises(ValueError):
        proxns.long_records("vgg19", "gpu")
    # DenseNet-40's pair: as many SGD steps as VGG-19's (24 epochs on 10,000 images)
    v = proxns.run_spec("vgg19", "proximal", "cpu", **proxns.LONG["cpu"]["vgg19"])
    assert (v.epochs, dict(v.hparams)["train_subset"]) == (24, 10_000)
    for deep in ("densenet40", "preresnet164", "preresnet110"):  # the same steps as VGG-19's
        sp = proxns.run_spec(deep, "proximal", "cpu", **proxns.LONG["cpu"][deep])
        assert (sp.epochs, dict(sp.hparams)["train_subset"]) == (24, 10_000)
    d = proxns.run_spec("densenet40", "proximal", "cpu", **proxns.LONG["cpu"]["densenet40"])
    cut = proxns.run_spec("densenet40", "proximal", "cpu")
    # kappa ~ 1 / (steps before the first LR drop): 2 epochs of 79 vs 12 epochs of 157 steps
    assert dict(cut.hparams)["lam"] / dict(d.hparams)["lam"] == pytest.approx(12 * 157 / (2 * 79))
    with pytest.raises(ValueError, match="n_train"):
        proxns.run_spec("densenet40", "proximal", "cpu", n_train=0)
    assert dict(proxns.run_spec("vgg19", "baseline", "cpu", n_train=50_000).hparams)[
        "train_subset"] == 0  # all images


def test_run_spec_epochs_override_rescales_the_penalty() -> None:
    short = proxns.run_spec("vgg19", "proximal", "cpu")
    long = proxns.run_spec("vgg19", "proximal", "cpu", epochs=24)
    assert short.epochs == 6 and long.epochs == 24
    # kappa ~ 1 / (steps before the first LR drop): 12 vs 3 epochs of 157 steps
    assert dict(short.hparams)["lam"] / dict(long.hparams)["lam"] == pytest.approx(4.0)
    with pytest.raises(ValueError, match="epochs"):
        proxns.run_spec("vgg19", "proximal", "cpu", epochs=0)


def test_collapse_gap_and_its_standard_error() -> None:
    px, ns = _vgg_pair((0.65, 12.2, 48.3, 0.529), (0.72, 22.5, 48.1, 0.495))  # 1,000 images
    gap, se = proxns.collapse_gap(px, ns)
    assert gap == pytest.approx(10.3)
    # sqrt(2 * .65 * .35 / 1000 + 2 * .72 * .28 / 1000), in points
    assert se == pytest.approx(100 * math.sqrt((2 * .65 * .35 + 2 * .72 * .28) / 1000))
    values, _ = proxns.table2_claims({("vgg19", "proximal"): px, ("vgg19", "original"): ns})
    assert values["C-vgg19-c10-ns-collapse"] is True  # 10.3 >= COLLAPSE_POINTS


def test_collapse_words_states_the_gap_by_its_sign() -> None:
    assert proxns.collapse_words(0.2) == "lost 0.2 points more than proximal NS"
    assert proxns.collapse_words(-0.2) == "lost 0.2 points fewer than proximal NS"
    assert proxns.collapse_words(0.0) == "lost as many points as proximal NS"
    assert proxns.collapse_words(-0.04) == "lost as many points as proximal NS"  # rounds to 0.0
    assert proxns.collapse_words(10.3, verb="loses") == "loses 10.3 points more than proximal NS"
    # the claim notes use it: a negative gap is "fewer", never "-0.2 points more"
    px, ns = _vgg_pair((0.65, 12.2, 48.3, 0.529), (0.72, 12.0, 48.1, 0.495))
    _, notes = proxns.table2_claims({("vgg19", "proximal"): px, ("vgg19", "original"): ns})
    assert notes["C-vgg19-c10-ns-collapse"].startswith(
        "original NS lost 0.2 points fewer than proximal NS (threshold")


def test_table3_puts_a_longer_run_under_ours_labelled_with_its_length() -> None:
    px = _vgg_pair((0.65, 12.2, 48.3, 0.529), (0.72, 22.5, 48.1, 0.495))[0]
    short = _vgg_pair((0.19, 7.9, 95.1, 0.112), (0.36, 27.2, 93.9, 0.088))[0]
    for r, (e, n) in ((px, (24, 10_000)), (short, (4, 5_000))):
        r["spec"].update(model="densenet40", epochs=e)
        r["spec"]["hparams"]["train_subset"] = n
    assert proxns.run_length(px) == "24 epochs, 10,000 images"
    rows = proxns.table3_rows({"densenet40": short}, "cpu", longer={"densenet40": px})
    dense = [r["method"] for r in rows if r["network"] == "DenseNet-40"]
    assert dense[-3:] == ["Proximal NS (ours, cpu)",
                          "Proximal NS (ours, cpu, 24 epochs, 10,000 images)",
                          "Proximal NS (paper)"]
    assert [r["% params"] for r in rows if "ours" in r["method"]] == [95.1, 48.3]
    # without a longer run: one row of ours per network run, none for ResNet-110 (not run)
    rows = proxns.table3_rows({"densenet40": short}, "cpu")
    assert sum("ours" in r["method"] for r in rows) == 1


def test_pruned_channels_are_counted_per_layer_group_in_network_order() -> None:
    assert proxns.layer_group("stages.layer3.11.bn2") == "stages.layer3.*.bn2"
    assert proxns.layer_group("features.1") == "features.1"  # no block index
    assert proxns.layer_group("bn") == "bn"

    def rec(kept):
        names = ["stages.layer1.0.bn1", "stages.layer1.0.bn2", "stages.layer1.1.bn1",
                 "stages.layer1.1.bn2", "bn"]
        return {"run_id": "r", "artifacts": {"layers": [
            {"layer": n, "channels": 8, "kept": k} for n, k in zip(names, kept)]}}

    rows = proxns.pruned_by_layer_group({"px": rec([8, 3, 5, 8, 8]), "ns": rec([7, 7, 7, 1, 8])})
    assert rows == [
        {"layers": "stages.layer1.*.bn1", "channels": 16, "px": 3, "ns": 2},
        {"layers": "stages.layer1.*.bn2", "channels": 16, "px": 5, "ns": 8},
        {"layers": "bn", "channels": 8, "px": 0, "ns": 0}]
    other = rec([8] * 5)
    other["artifacts"]["layers"][0]["channels"] = 16
    with pytest.raises(ValueError, match="one network"):
        proxns.pruned_by_layer_group({"px": rec([8] * 5), "ns": other})
    with pytest.raises(ValueError, match="no per-layer counts"):
        proxns.pruned_by_layer_group({"px": {"run_id": "x", "artifacts": {}}})


def test_several_seeds_of_a_longer_pair_are_judged_on_their_mean() -> None:
    """Two seeds of DenseNet-40's longer pair: each number is the mean, the collapse statement
    is judged on the mean gap (with the standard error of a mean of two independent gaps), and
    the note gives each seed's value."""
    def pair(seed, px, ns):
        p, n = _vgg_pair(px, ns)
        for r in (p, n):
            r["spec"].update(model="densenet40", epochs=24, seed=seed)
            r["spec"]["hparams"]["train_subset"] = 10_000
        return {"proximal": p, "original": n}

    # seed 0: gap 22.3 - 12.0 = 10.3 (collapse); seed 1: 17.0 - 9.0 = 8.0 (no collapse)
    a = pair(0, (0.651, 12.0, 48.0, 0.531), (0.719, 22.3, 47.5, 0.496))
    b = pair(1, (0.640, 9.0, 47.0, 0.550), (0.700, 17.0, 48.0, 0.530))
    short = {"C-densenet40-c10-px-prune-drop": None, "C-vgg19-c10-px-prune-drop": 2.0}
    values, notes = proxns.judge_on_long(short, {}, [a, b])
    assert values["C-densenet40-c10-px-prune-drop"] == pytest.approx(10.5)
    assert values["C-densenet40-c10-params-ge"] == pytest.approx((0.5 - 1.0) / 2)
    assert values["C-densenet40-c10-ns-collapse"] is False  # mean gap 9.15 < 10
    assert values["C-vgg19-c10-px-prune-drop"] == 2.0
    per_seed = [proxns.collapse_gap(lg["proximal"], lg["original"]) for lg in (a, b)]
    se = [e for _, e in per_seed]
    gap, gap_se, gaps = proxns.mean_collapse_gap([a, b])
    assert (gap, gap_se) == pytest.approx((9.15, math.hypot(*se) / 2))
    assert gaps == per_seed  # each seed's own (gap, se), in the pairs' order
    one = proxns.collapse_gap(a["proximal"], a["original"])
    assert proxns.mean_collapse_gap([a]) == (*one, [one])
    with pytest.raises(ValueError, match="at least one"):
        proxns.mean_collapse_gap([])
    note = notes["C-densenet40-c10-ns-collapse"]
    assert "longer DenseNet-40 pair, 24 epochs, 10,000 images, seeds 0, 1" in note
    assert "lost 9.2 points more than proximal NS on average" in note
    assert f"at most {math.hypot(*se) / 2:.1f}" in note and "seed 0 10.3, seed 1 8.0" in note
    assert "per seed: seed 0 12.00, seed 1 9.00" in notes["C-densenet40-c10-px-prune-drop"]
    # one pair in a list is judged exactly as the pair itself
    assert proxns.judge_on_long(short, {}, [a]) == proxns.judge_on_long(short, {}, a)
    assert proxns.judge_on_long(short, {}, []) == (short, {})
    # a seed whose network learned nothing leaves the statements unmeasured, saying why
    b["proximal"]["metrics"]["test_acc_trained"] = 0.15
    values, notes = proxns.judge_on_long(short, {}, [a, b])
    assert values["C-densenet40-c10-px-prune-drop"] is None
    assert "seed 1:" in notes["C-densenet40-c10-px-prune-drop"]
    assert "15.0%" in notes["C-densenet40-c10-px-prune-drop"]
    b["proximal"]["metrics"]["test_acc_trained"] = 0.64
    with pytest.raises(ValueError, match="distinct seeds"):
        proxns.judge_on_long(short, {}, [a, a])
    with pytest.raises(ValueError, match="alike"):
        proxns.judge_on_long(short, {}, [a, {"proximal": b["proximal"]}])
    b["original"]["spec"]["model"] = b["proximal"]["spec"]["model"] = "vgg19"
    with pytest.raises(ValueError, match="one network"):
        proxns.judge_on_long(short, {}, [a, b])


def test_long_seeds_default_to_seed_zero() -> None:
    assert proxns.long_seeds("densenet40", "cpu") == (0, 1)
    assert proxns.long_seeds("preresnet164", "cpu") == (0, 1)
    assert proxns.long_seeds("preresnet110", "cpu") == (0,)
    assert proxns.long_seeds("vgg19", "cpu") == (0,)
    assert proxns.long_seeds("vgg19", "smoke") == (0,)
    assert proxns.long_pairs("preresnet110", "smoke") == []  # no longer run: nothing is run
