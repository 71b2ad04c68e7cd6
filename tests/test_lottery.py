"""The lottery paper's machinery: the Sec. IV-C logistic example, Algorithm 1's rounds (projected
relaxed mask, threshold / percentage pruning, rewinding), IMP and the sigmoid mask."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from replib import lottery as lt
from replib.data import DatasetInfo, Split
from replib.metrics import count_params
from replib.sparsity import masks as M

f64 = torch.float64


# --------------------------------------------------------------------------- Sec. IV-C


def test_mnist01_pool_crop_and_resize():
    imgs = torch.zeros(6, 28, 28, dtype=torch.uint8)
    imgs[:, 4:24, 4:24] = 255  # a white 20x20 centre
    labels = torch.tensor([0, 1, 2, 1, 0, 7])
    X, y = lt.mnist01_pool(imgs, labels, 20, "crop")
    assert X.shape == (4, 400) and torch.equal(y, torch.tensor([0.0, 1, 1, 0]))
    assert torch.all(X == 1.0)  # the crop is exactly the central 20x20
    Xr, _ = lt.mnist01_pool(imgs, labels, 14, "resize")
    # area averaging by 2x2: a 20x20 white square at offset 4 covers blocks 2..11 fully
    assert Xr.shape == (4, 196)
    img = Xr[0].view(14, 14)
    assert torch.all(img[2:12, 2:12] == 1.0) and torch.all(img[:2] == 0) and img.sum() == 100
    with pytest.raises(ValueError, match="mode"):
        lt.mnist01_pool(imgs, labels, 20, "bilinear")


def test_draw_mnist01_counts_and_disjoint():
    X = torch.rand(1000, 16)
    y = (torch.arange(1000) % 2).float()
    d = lt.draw_mnist01(X, y, runs=3, n_per_digit=50, n_train=40, seed=1)
    assert d.X_train.shape == (3, 80, 17) and d.X_val.shape == (3, 20, 17)
    assert torch.all(d.X_train[..., -1] == 1) and torch.all(d.X_val[..., -1] == 1)
    assert torch.all(d.y_train.sum(1) == 40) and torch.all(d.y_val.sum(1) == 10)
    for r in range(3):
        assert len(set(d.idx_train[r].tolist()) & set(d.idx_val[r].tolist())) == 0
        assert len(set(d.idx_train[r].tolist())) == 80
    d2 = lt.draw_mnist01(X, y, runs=3, n_per_digit=50, n_train=40, seed=1)
    assert torch.equal(d.idx_train, d2.idx_train)
    assert not torch.equal(d.idx_train[0], d.idx_train[1])  # runs differ
    with pytest.raises(ValueError, match="n_train"):
        lt.draw_mnist01(X, y, runs=1, n_per_digit=50, n_train=50)


def test_logistic_gradient_matches_autograd():
    torch.manual_seed(0)
    X = torch.randn(2, 30, 5, dtype=f64)
    y = (torch.rand(2, 30) > 0.5).to(f64)
    theta = torch.randn(2, 5, 3, dtype=f64, requires_grad=True)
    lt.logistic_loss(X, y, theta).sum().backward()
    assert torch.allclose(lt._loss_grad(X, y, theta.detach()), theta.grad)


def test_lipschitz_step_closed_form():
    # X^T X / N = diag(4, 1): L = 4 / 4 = 1 -> step 1
    X = torch.tensor([[[2.0, 0.0], [0.0, 1.0]]], dtype=f64) * math.sqrt(2)
    assert torch.allclose(lt.lipschitz_step(X), torch.ones(1, 1, 1, dtype=f64))


def _separable(runs=2, n=40, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(runs, n, d, generator=g, dtype=f64)
    X[..., 0] = 0.0  # a dead pixel: zero in every image
    y = (X[..., 1] > 0.5).to(f64)
    return lt.add_intercept(X), y


def test_subgradient_l1_keeps_dead_pixel_zero_and_decreases_loss():
    X, y = _separable()
    th = lt.fit_logistic(X, y, 200)
    th_l1 = lt.fit_logistic(X, y, 200, torch.tensor([0.0, 0.05]), reg="l1_subgrad")
    assert th.shape == (2, 7, 1) and th_l1.shape == (2, 7, 2)
    assert torch.all(th[:, 0] == 0) and torch.all(th_l1[:, 0] == 0)
    assert torch.allclose(th_l1[..., 0], th[..., 0])  # lambda = 0 is plain LR
    zero = torch.zeros(2, 7, 1, dtype=f64)
    assert torch.all(lt.logistic_loss(X, y, th) < lt.logistic_loss(X, y, zero))
    with pytest.raises(ValueError, match="reg"):
        lt.fit_logistic(X, y, 10, reg="l2")


def test_fit_mask_projected_gradient():
    X, y = _separable()
    th = lt.fit_logistic(X, y, 300)
    lams = torch.tensor([0.0, 1e-3, 100.0])
    for reg in ("l1", "log"):
        m = lt.fit_mask(X, y, th, lams, reg, 300)
        assert m.shape == (2, 6, 3)
        assert torch.all((m >= 0) & (m <= 1))
        if reg == "l1":  # dead pixel: only the regularizer acts, m = max(1/2 - k step lam, 0)
            step = lt.lipschitz_step(lt.mask_design(X, th)[0]).view(-1, 1)
            expect = (0.5 - 300 * step * lams.view(1, -1)).clamp(min=0)
            assert torch.allclose(m[:, 0, :], expect)
        assert torch.all(m[:, 0, 1:] < 0.5) and torch.all(m[:, 0, 0] == 0.5)
        assert torch.all(m[..., 2] == 0)   # a huge lambda prunes everything
        assert torch.all(m[:, 1, 0] == 1)  # the informative pixel saturates at 1 without lambda
        full = lt.masked_theta(th, m)
        assert torch.equal(full[:, -1, :], th[:, -1, :].expand(-1, 3))  # intercept unmasked
    with pytest.raises(ValueError, match="m0"):
        lt.fit_mask(X, y, th, lams, "l1", 1, m0=2.0)


def test_one_projected_step_equals_formula():
    X, y = _separable(runs=1)
    th = lt.fit_logistic(X, y, 50)
    lam, eps = 0.3, 0.1
    Z, b = lt.mask_design(X, th)
    m0 = torch.full((1, 6, 1), 0.5, dtype=f64)
    resid = torch.sigmoid(Z @ m0 + b.unsqueeze(-1)) - y.unsqueeze(-1)
    g = Z.transpose(1, 2) @ resid / Z.shape[1] + lam / ((m0 + eps) * math.log((1 + eps) / eps))
    expect = (m0 - lt.lipschitz_step(Z) * g).clamp(0, 1)
    got = lt.fit_mask(X, y, th, torch.tensor([lam]), "log", 1, eps)
    assert torch.allclose(got, expect)


def test_sparsity_and_accuracy_counts():
    th = torch.tensor([[[0.0], [1.0], [0.0], [-2.0], [5.0]]])  # 4 pixels + intercept
    assert lt.pixel_sparsity(th).item() == 0.5
    assert lt.pixel_sparsity(th, tol=1.0).item() == 0.75
    X = torch.tensor([[[0.0, 0, 0, 1, 1], [0, 1, 0, 0, 0]]])  # logits 3, 1 -> both class 1
    assert lt.accuracy(X, torch.tensor([[1.0, 0.0]]), th).item() == 0.5


def test_find_k_sparse_mask_hits_k():
    g = torch.Generator().manual_seed(0)
    X = torch.rand(1, 60, 12, generator=g, dtype=f64)
    y = (X[..., :4].sum(-1) > 2).to(f64)
    X = lt.add_intercept(X)
    th = lt.fit_logistic(X, y, 500)
    lam, m = lt.find_k_sparse_mask(X, y, th, 3, 500, lam_lo=1e-5, lam_hi=10.0)
    assert int((lt.masked_theta(th, m)[:, :-1] != 0).sum()) == 3 and 1e-5 < lam < 10


# --------------------------------------------------------------------------- Algorithm 1


def test_mask_regularizers_and_scale():
    m = torch.tensor([0.0, 0.5, 1.0])
    assert lt.mask_regularizer("l1")(m).item() == pytest.approx(1.5)
    r = lt.mask_regularizer("log", 0.1)
    assert r(torch.tensor([0.0])).item() == 0 and r(torch.tensor([1.0])).item() == pytest.approx(1)
    assert r(torch.tensor([0.5])).item() == pytest.approx(math.log(6) / math.log(11))
    with pytest.raises(ValueError, match="reg"):
        lt.mask_regularizer("l2")
    with pytest.raises(ValueError, match="eps"):
        lt.mask_regularizer("log", 0.0)
    assert lt.drift_matched_scale(85, 50_000) == 1.0
    assert lt.drift_matched_scale(5, 5000) == pytest.approx(85 * 391 / (5 * 40))


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x):
        return self.fc(F.relu(self.conv(x)).flatten(1))


def _tiny_split(n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    info = DatasetInfo("tiny", "tiny", (), 3, (1, 8, 8), (0.5,), (0.25,))
    images = torch.randint(0, 256, (n, 1, 8, 8), generator=g, dtype=torch.uint8)
    labels = (images.float().mean((1, 2, 3)) > 127).long() + (images[:, 0, 0, 0] > 200).long()
    return Split("tiny", "train", images, labels, info, {})


def _set_masks(model, values):
    for (name, _), p in zip(M.prunable_layers(model).items(), M.mask_parameters(model)):
        with torch.no_grad():
            p.copy_(values[name])


def test_threshold_and_percentage_pruning_exact():
    torch.manual_seed(0)
    model = Tiny()
    M.add_relaxed_masks(model)
    vals = {n: torch.rand_like(w) for n, w in {n: m.weight for n, m in
                                              M.prunable_layers(model).items()}.items()}
    _set_masks(model, vals)
    kept = lt.prune_relaxed(model, "threshold", alpha=0.3)
    for n, v in vals.items():
        assert torch.equal(kept[n], v >= 0.3)
    rv = lt.relaxed_values(model)
    for n, v in vals.items():
        assert torch.equal(rv[n], torch.where(v >= 0.3, v, torch.zeros_like(v)))
    remaining = sum(int(k.sum()) for k in kept.values())
    kept2 = lt.prune_relaxed(model, "percentage", rate=0.25)
    left = sum(int(k.sum()) for k in kept2.values())
    assert left == remaining - math.ceil(0.25 * remaining)
    alive = torch.cat([rv[n][kept2[n]] for n in kept2])
    dead = torch.cat([rv[n][kept[n] & ~kept2[n]] for n in kept2])
    assert dead.max() <= alive.min()  # the smallest mask values went
    with pytest.raises(ValueError, match="rule"):
        lt.prune_relaxed(model, "magnitude")


def test_rewind_keeps_relaxed_mask_and_resets_theta():
    torch.manual_seed(0)
    model = Tiny()
    theta0 = M.snapshot(model)
    M.add_relaxed_masks(model)
    opt = torch.optim.SGD(lt.mask_param_groups(model, 1e-4), lr=0.5)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 3, (16,))
    for _ in range(3):
        loss = F.cross_entropy(model(x), y) + 0.1 * M.mask_penalty(model, lt.mask_regularizer("l1"))
        opt.zero_grad()
        loss.backward()
        opt.step()
        M.project_masks_(model)
    assert opt.param_groups[1]["weight_decay"] == 0.0
    kept = lt.prune_relaxed(model, "threshold", alpha=0.45)
    m_before = lt.relaxed_values(model)
    M.rewind(model, theta0)
    assert torch.equal(M.theta(model.conv), theta0["conv.weight"])
    assert torch.equal(model.conv.bias, theta0["conv.bias"])
    for n, v in lt.relaxed_values(model).items():
        assert torch.equal(v, m_before[n])
        assert torch.all(v[~kept[n]] == 0)
        assert torch.all((v >= 0) & (v <= 1))


def test_run_relaxed_and_imp_rounds_and_resume(tmp_path):
    split = _tiny_split()
    cfg = lt.TrainConfig(epochs=2, batch_size=16, pad=0, flip=False, lr=0.05)

    def build():
        return Tiny()

    def stages(root):
        return lambda name: tmp_path / root / name

    torch.manual_seed(0)
    out = lt.run_relaxed(build, split, split, cfg, stages("r"), "log", lam=0.05, rounds=2,
                         alpha=0.3)
    rows = out["rounds"]
    assert [r["round"] for r in rows] == [1, 2]
    assert rows[0]["density"] >= rows[1]["density"]
    total = 4 * 9 + 3 * 256  # prunable weights of Tiny
    assert all(r["kept"] == round(r["density"] * total) and "test_acc" in r for r in rows)
    assert len(out["mask_histograms"]) == 2 and sum(out["mask_histograms"][0]) == total
    torch.manual_seed(0)
    again = lt.run_relaxed(build, split, split, cfg, stages("r"), "log", lam=0.05, rounds=2,
                           alpha=0.3)  # every stage is loaded from its checkpoint
    assert again["rounds"][1]["test_acc"] == rows[1]["test_acc"]
    assert again["rounds"][1]["density"] == rows[1]["density"]

    torch.manual_seed(0)
    imp = lt.run_imp(build, split, split, cfg, stages("i"), rounds=2, rate=0.2)
    kept = [r["kept"] for r in imp["rounds"]]
    assert kept[0] is None and kept[1] == total - math.ceil(0.2 * total)
    assert kept[2] == kept[1] - math.ceil(0.2 * kept[1])
    assert imp["find_train_s"] > 0 and len(imp["histories"]) == 3


def test_late_rewinding_takes_the_weights_after_k_steps_and_survives_resume(tmp_path):
    split = _tiny_split()  # 48 images, batches of 16: 3 steps per epoch, 6 per stage
    cfg = lt.TrainConfig(epochs=2, batch_size=16, pad=0, flip=False, lr=0.05)
    torch.manual_seed(0)
    model = Tiny()
    theta0 = M.snapshot(model)
    seen = {}

    def spy(mdl, step):  # the caller's hook still runs, and tells what step 4 left
        if step == 3:
            seen.update(M.snapshot(mdl))

    into = dict(theta0)
    lt.train_stage(model, split, split, cfg, "dense", tmp_path / "s", after_step=spy,
                   rewind_iter=4, rewind_into=into)
    assert set(into) == set(theta0) and all(torch.equal(into[k], seen[k]) for k in seen)
    assert not torch.equal(into["conv.weight"], theta0["conv.weight"])
    assert not torch.equal(into["conv.weight"], model.conv.weight)  # 2 more steps followed
    # a completed stage is loaded from its checkpoint, and the rewinding point from its file
    again = {}
    lt.train_stage(Tiny(), split, split, cfg, "dense", tmp_path / "s", rewind_iter=4,
                   rewind_into=again)
    assert all(torch.equal(again[k], into[k]) for k in into)
    with pytest.raises(ValueError, match=r"rewind_iter=6 must lie in \(0, 6\)"):
        lt.train_stage(Tiny(), split, split, cfg, "x", tmp_path / "x", rewind_iter=6,
                       rewind_into={})
    # IMP and Algorithm 1 rewind every ticket to that point instead of theta_0
    torch.manual_seed(0)
    imp = lt.run_imp(Tiny, split, split, cfg, lambda n: tmp_path / "i" / n, rounds=1,
                     rate=0.5, rewind_iter=4)
    dense_ckpt = torch.load(tmp_path / "i" / "train0" / "rewind_point.pt", weights_only=True)
    ticket = torch.load(next((tmp_path / "i" / "train1").glob("*.pt")), weights_only=False)
    assert imp["rounds"][1]["density"] == pytest.approx(0.5, abs=0.01)
    assert not torch.equal(dense_ckpt["conv.weight"], theta0["conv.weight"])
    assert ticket["epoch"] == 1  # the ticket trained its two epochs from there
    torch.manual_seed(0)
    rel = lt.run_relaxed(Tiny, split, split, cfg, lambda n: tmp_path / "r" / n, "log",
                         lam=0.05, rounds=2, alpha=0.3, rewind_iter=2)
    assert (tmp_path / "r" / "search1" / "rewind_point.pt").exists()
    assert not (tmp_path / "r" / "search2" / "rewind_point.pt").exists()
    assert [r["round"] for r in rel["rounds"]] == [1, 2]


def test_rewind_iter_is_left_out_of_run_ids_at_zero():
    from replib.experiments import RunSpec
    from replib.tasks import lottery as tasks

    spec = tasks.ticket_spec("cpu", "mask_log")
    assert spec.hp["rewind_iter"] == 0 and "rewind_iter" not in spec.to_json()["hparams"]
    back = RunSpec.from_json(spec.to_json())
    assert back == spec and back.run_id == spec.run_id
    # the committed cpu record of the ResNet-20 mask-log tickets keeps its id
    from replib import repo_root

    assert (repo_root() / "data" / "results" / "lottery" / f"{spec.run_id}.json").exists()
    late = tasks.ticket_spec("cpu", "mask_log", rewind_iter=5)
    assert late.run_id != spec.run_id and late.to_json()["hparams"]["rewind_iter"] == 5
    assert RunSpec.from_json(late.to_json()) == late
    with pytest.raises(ValueError, match="rewind_iter"):
        tasks.ticket_spec("cpu", "mask_log", rewind_iter=-1)


def test_sigmoid_mask_pieces():
    assert lt.sigmoid_beta(0, 5) == 1.0 and lt.sigmoid_beta(4, 5) == pytest.approx(200.0)
    assert lt.sigmoid_beta(2, 5) == pytest.approx(200 ** 0.5)
    torch.manual_seed(0)
    model = Tiny()
    w = model.conv.weight.detach().clone()
    lt.add_sigmoid_masks(model, s0=0.0)
    assert torch.allclose(model.conv.weight, 0.5 * w)
    with torch.no_grad():
        model.conv.parametrizations.weight[0].s.copy_(torch.randn_like(w))
    lt.set_sigmoid_beta(model, 3.0)
    s = model.conv.parametrizations.weight[0].s.detach()
    assert torch.allclose(model.conv.weight, w * torch.sigmoid(3 * s))
    assert torch.equal(lt.sigmoid_ticket(model)["conv.weight"], s > 0)
    lt.reset_sigmoid_scores(model, 0.0)
    s2 = model.conv.parametrizations.weight[0].s.detach()
    assert torch.equal(s2, s.clamp(max=0.0))
    assert model.conv.parametrizations.weight[0].beta.item() == 1.0
    assert len(lt.mask_parameters(model)) == 2
    with pytest.raises(ValueError, match="unmasked"):
        lt.add_sigmoid_masks(model)


def test_run_sigmoid_tickets(tmp_path):
    split = _tiny_split()
    cfg = lt.TrainConfig(epochs=2, batch_size=16, pad=0, flip=False, lr=0.05)
    torch.manual_seed(0)
    out = lt.run_sigmoid(Tiny, split, split, cfg, lambda n: tmp_path / n, lam=1e-3, rounds=2)
    assert [r["round"] for r in out["rounds"]] == [1, 2]
    assert all(0.0 <= r["density"] <= 1.0 for r in out["rounds"])


def test_task_rejects_bad_method():
    from replib import experiments as ex

    spec = ex.make_spec("lottery", "lottery_tickets", dataset="cifar10", model="resnet20",
                        epochs=1, budget="smoke", method="random")
    with pytest.raises(ValueError, match="method"):
        ex.get_task("lottery_tickets").fn(spec, None)
    with pytest.raises(ValueError, match="model"):
        ex.make_spec("lottery", "lottery_tickets", dataset="cifar10", model="lenet300",
                     epochs=1)


# --------------------------------------------------------------------------- reading results


def test_interp_accuracy_log_density():
    pts = [(1.0, 0.9), (0.1, 0.7), (0.01, 0.3)]
    acc, inside = lt.interp_accuracy(pts, math.sqrt(0.1 * 0.01))  # halfway in log density
    assert inside and acc == pytest.approx(0.5)
    assert lt.interp_accuracy(pts, 0.1) == (pytest.approx(0.7), True)
    assert lt.interp_accuracy(pts, 0.001) == (0.3, False)  # beyond the sparsest ticket
    ok, note = lt.compare_at([(0.05, 0.6)], pts, 0.05)
    b = 0.7 - 0.4 * math.log(2) / math.log(10)  # 0.5796 at 0.05
    assert ok and note == f"a 60.0% vs b {100 * b:.1f}% at density 5.00%"
    with pytest.raises(ValueError):
        lt.interp_accuracy([], 0.5)


def test_imp_rate_and_ticket_spec():
    from replib.tasks import lottery as tasks

    assert tasks.imp_rate_for(0.125) == 0.5 and tasks.imp_rate_for(1.0) == 0.0
    assert tasks.imp_rate_for(0.02) == pytest.approx(1 - 0.02 ** (1 / 3), abs=0.005)
    with pytest.raises(ValueError, match="density"):
        tasks.imp_rate_for(0.0)
    # open_lth's 20% per round: 0.8**15 = 3.52%, 0.8**16 = 2.81% of the weights remain
    assert tasks.imp_rounds_for(0.0317) == 16 and tasks.imp_rounds_for(0.036) == 15
    assert tasks.imp_rounds_for(0.8 ** 16) == 16  # reached exactly: no extra round
    assert tasks.imp_rounds_for(0.25, rate=0.5) == 2 and tasks.imp_rounds_for(1.0) == 1
    with pytest.raises(ValueError, match="rate"):
        tasks.imp_rounds_for(0.5, rate=1.0)
    with pytest.raises(ValueError, match="density"):
        tasks.imp_rounds_for(1.5)
    cpu = tasks.ticket_spec("cpu", "mask_log")
    assert cpu.hp["mask_lr_scale"] == pytest.approx(85 * 391 / (5 * 32), abs=0.05)
    assert cpu.hp["train_subset"] == 4000 and cpu.epochs == 5 and cpu.hp["rounds"] == 3
    paper = tasks.ticket_spec("paper", "imp", model="vgg11", rate=0.2)
    assert paper.epochs == 120 and paper.hp["milestones"] == (0.5, 0.75)
    assert paper.hp["lam_scale"] == 1.0 and paper.hp["train_subset"] == 0
    wrn = tasks.ticket_spec("cpu", "mask_l1", model="wrn20")   # Fig. 6 at the ResNet-20 cut
    assert wrn.hp["train_subset"] == 4000 and wrn.epochs == 5 and wrn.hp["width"] == 32
    assert tasks.ticket_spec("paper", "imp", model="wrn20").hp["width"] == 0
    assert tasks.ticket_spec("cpu", "imp", model="vgg11").hp["width"] == 0
    assert count_params(tasks.build_model("wrn20", 10, 32)) * 3.5 < count_params(
        tasks.build_model("wrn20", 10))
    assert wrn.hp["mask_lr_scale"] == pytest.approx(120 * 391 / (5 * 32), abs=0.06)
    assert wrn.hp["milestones"] == (0.5, 0.75)
    with pytest.raises(ValueError, match="cpu plan"):
        tasks.ticket_spec("cpu", "imp", model="resnet18")


def test_tiny_imagenet_tickets_keep_the_recipe_and_smoke_its_cost():
    from replib.tasks import lottery as tasks

    # cpu and paper: the CIFAR recipe unchanged (same hyperparameters, only the data set differs)
    for budget in ("cpu", "paper"):
        c10 = tasks.ticket_spec(budget, "mask_log", model="vgg11")
        tin = tasks.ticket_spec(budget, "mask_log", model="vgg11", dataset="tinyimagenet")
        assert tin.dataset == "tinyimagenet" and tin.hp == c10.hp and tin.epochs == c10.epochs
        assert tin.run_id != c10.run_id
    # smoke: a quarter of the images at four times the pixels (CIFAR-10's spec is unchanged)
    assert tasks.smoke_images("cifar10", 128) == 128 and tasks.smoke_images("cifar100", 200) == 200
    assert tasks.smoke_images("tinyimagenet", 128) == 32
    assert tasks.smoke_images("tinyimagenet", 200) == 50
    assert tasks.ticket_spec("smoke", "imp").hp["train_subset"] == 128
    assert tasks.ticket_spec("smoke", "imp", dataset="tinyimagenet").hp["train_subset"] == 32
    # Tiny ImageNet's 64x64 inputs and 200 classes go through all three networks
    x = torch.randn(2, 3, 64, 64)
    for name in ("resnet20", "wrn20", "vgg11"):
        assert tasks.build_model(name, 200, 8 if name == "wrn20" else 0)(x).shape == (2, 200)
    with pytest.raises(ValueError, match="dataset='svhn'"):
        tasks.ticket_spec("cpu", "imp", dataset="svhn")


def test_compare_at_equal_sparsity_within_5_percent_else_only_by_dominance():
    curve = [(1.0, 0.90), (0.1, 0.80), (0.01, 0.60)]
    # inside: interpolated; at 0.0316 (half-way in log between 0.1 and 0.01) 0.70
    assert lt.compare_at([(10 ** -1.5, 0.70)], curve, 10 ** -1.5)[0] is True
    assert lt.compare_at([(10 ** -1.5, 0.69)], curve, 10 ** -1.5)[0] is False
    # the other curve's nearest ticket within 5% of the density: compared as equally sparse
    ok, note = lt.compare_at([(0.0098, 0.59)], curve, 0.0098, ("x", "y"))
    assert ok is False and note.endswith("(y's nearest ticket at 1.00%: within 5%)")
    # beyond 5%: only a dominating ticket decides
    ok, note = lt.compare_at([(0.005, 0.61)], curve, 0.005, ("x", "y"))  # sparser, more accurate
    assert ok is True and "x at most as dense and at least as accurate" in note
    ok, note = lt.compare_at([(0.005, 0.59)], curve, 0.005, ("x", "y"))  # sparser, less accurate
    assert ok is None and note.startswith("inconclusive: x 59.0% vs y 60.0% at density 0.50%")
    # a curve evaluated beyond its own sparsest ticket (the anchor is the other one's)
    ok, note = lt.compare_at(curve, [(0.005, 0.61)], 0.005, ("x", "y"))  # y sparser, better
    assert ok is False and "y at most as dense and more accurate" in note
    assert lt.compare_at(curve, [(0.005, 0.55)], 0.005)[0] is None  # y sparser, worse
    assert lt.compare_at(curve, [(2.0, 0.95)], 2.0)[0] is None  # x sparser, worse
    assert lt.compare_at(curve, [(2.0, 0.85)], 2.0)[0] is True  # x sparser, better


def test_concave_vs_imp_needs_both_regularizers_and_interpolates():
    imp = [(1.0, 0.90), (0.1, 0.80), (0.01, 0.60)]
    # at density 0.0316 (half-way in log between 0.1 and 0.01) IMP interpolates to 0.70
    pts = {"imp": imp, "mask_l1": [(0.5, 0.9), (10 ** -1.5, 0.71)],
           "mask_log": [(0.5, 0.9), (10 ** -1.5, 0.69)]}
    ok, note = lt.concave_vs_imp(pts)
    assert ok is False and "mask_log 69.0% vs IMP 70.0%" in note and "mask_l1 71.0%" in note
    pts["mask_log"] = [(10 ** -1.5, 0.70)]
    assert lt.concave_vs_imp(pts)[0] is True
    # beyond IMP's sparsest ticket (0.01 at 0.60): sparser and more accurate dominates,
    # sparser and less accurate is not testable, and one untestable half leaves it untested
    ok, note = lt.concave_vs_imp({"imp": imp, "mask_l1": [(0.001, 0.61)],
                                  "mask_log": [(0.001, 0.62)]})
    assert ok is True and note.count("IMP's nearest ticket at 1.00%") == 2
    ok, note = lt.concave_vs_imp({"imp": imp, "mask_l1": [(0.001, 0.61)],
                                  "mask_log": [(0.001, 0.59)]})
    assert ok is None and "inconclusive: mask_log 59.0%" in note
    ok, _ = lt.concave_vs_imp({"imp": imp, "mask_l1": [(0.001, 0.59)],
                               "mask_log": [(10 ** -1.5, 0.69)]})
    assert ok is False  # a failed half fails the statement


def test_fig5_checks_compare_each_mask_with_its_imp_point():
    imp = [(1.0, 0.90), (0.1, 0.80), (0.01, 0.60)]
    imp_l1 = [(1.0, 0.90), (0.05, 0.75), (0.005, 0.50)]
    pts = {"imp": imp, "imp_l1": imp_l1, "mask_l1": [(0.5, 0.9), (0.02, 0.66)],
           "mask_log": [(0.5, 0.9), (10 ** -1.5, 0.69)]}
    # mask-log against imp at its final density (half-way in log: 0.70), mask-l1 against imp_l1
    name, dens, acc, inside = lt.fig5_imp_point(pts, "mask_log")
    assert name == "imp" and dens == 10 ** -1.5 and acc == pytest.approx(0.70) and inside
    name, dens, acc, inside = lt.fig5_imp_point(pts, "mask_l1")
    assert name == "imp_l1" and dens == 0.02 and inside
    # log-linear between (0.05, 0.75) and (0.005, 0.50): 0.75 - 0.25 log(2.5) / log(10)
    assert acc == pytest.approx(0.75 - 0.25 * math.log10(2.5))
    checks, notes = lt.fig5_checks(pts)
    # the notes print those same IMP values (what a notebook's text states)
    assert "vs IMP 70.0% at density 3.16%" in notes["F5-r20-c10-log-vs-imp-high"]
    assert "vs IMP (rate for l1's sparsity) 65.1% at density 2.00%" in \
        notes["F5-r20-c10-l1-vs-imp-high"]
    assert checks["F5-r20-c10-matching"] is None
    # without a run to mask-l1's sparsity, mask-l1 meets imp
    del pts["imp_l1"]
    assert lt.fig5_imp_point(pts, "mask_l1")[0] == "imp"
    # beyond IMP's sparsest ticket: its nearest ticket's accuracy, flagged as outside
    pts["mask_log"] = [(0.5, 0.9), (0.001, 0.55)]
    assert lt.fig5_imp_point(pts, "mask_log") == ("imp", 0.001, 0.60, False)
    assert "vs IMP " in lt.fig5_checks(pts)[1]["F5-r20-c10-l1-vs-imp-high"]


def test_concave_vs_sigmoid_compares_at_the_sigmoids_final_sparsity():
    # at 0.0316 (half-way in log between 0.1 and 0.01) mask-log interpolates to 0.70
    thr = {"mask_log": [(1.0, 0.9), (0.1, 0.80), (0.01, 0.60)],
           "sigmoid": [(0.5, 0.85), (10 ** -1.5, 0.70)]}
    ok, note = lt.concave_vs_sigmoid(thr)
    assert ok and note == "mask-log 70.0% vs sigmoid 70.0% at density 3.16%"
    thr["sigmoid"] = [(10 ** -1.5, 0.71)]
    assert lt.concave_vs_sigmoid(thr)[0] is False
    # the sigmoid is sparser than mask-log's sparsest ticket (0.01 at 0.60): that ticket decides
    # only when it dominates; denser and more accurate is not evidence either way
    thr["sigmoid"] = [(0.001, 0.55)]
    ok, note = lt.concave_vs_sigmoid(thr)
    assert ok is None and note.startswith("inconclusive: mask-log 60.0% vs sigmoid 55.0%")
    thr["sigmoid"] = [(0.001, 0.65)]  # sparser and more accurate than mask-log's: fails
    assert lt.concave_vs_sigmoid(thr)[0] is False
    thr["sigmoid"] = [(0.001, 0.55)]
    checks, notes = lt.ablation_checks(thr | {"mask_l1": thr["mask_log"]},
                                       {m: [(0.1, 0.5)] for m in ("mask_l1", "mask_log")})
    cid = "F9-c10-concave-beats-sigmoid"
    assert checks[cid] is None and notes[cid].startswith("inconclusive")
    assert checks["F8-threshold-beats-percentage-log"] is True  # 0.80 >= 0.5 at density 0.1


def test_plot_tickets_joins_the_seed_means_and_dots_each_seed():
    import matplotlib
    import pandas as pd

    matplotlib.use("Agg")
    df = pd.DataFrame({"label": ["log"] * 4 + ["IMP"] * 2, "seed": [0, 0, 1, 1, 0, 0],
                       "round": [1, 2, 1, 2, 1, 2],
                       "density": [0.4, 0.1, 0.2, 0.1, 0.5, 0.1],
                       "test_acc": [0.8, 0.6, 0.7, 0.5, 0.9, 0.4]})
    fig = lt.plot_tickets(df)
    lines = {ln.get_label(): ln for ln in fig.axes[0].get_lines()}
    mean = lines["log (mean of 2 seeds)"]
    assert list(mean.get_xdata()) == pytest.approx([30.0, 10.0])  # per-round mean density, %
    assert list(mean.get_ydata()) == pytest.approx([75.0, 55.0])
    assert list(lines["IMP"].get_ydata()) == pytest.approx([90.0, 40.0])  # one seed: as is
    dots = fig.axes[0].collections
    assert len(dots) == 1 and len(dots[0].get_offsets()) == 4  # each seed's ticket
    import matplotlib.pyplot as plt

    plt.close(fig)


class _Rec(dict):
    """A record stand-in with the attributes ticket_runs reads."""

    def __init__(self, spec, density):
        super().__init__(spec=spec)
        self.spec, self.metrics = spec, {"final_density": density}


def test_ticket_runs_run_every_concave_method_before_imp_at_mask_logs_sparsity(monkeypatch):
    from replib import experiments as ex
    from replib.tasks import lottery as tasks

    calls = []
    dens = {("resnet20", "mask_log", 0): 0.125, ("resnet20", "mask_log", 1): 0.2,
            ("vgg11", "mask_log", 0): 0.5, ("vgg11", "mask_log", 1): 0.4}

    def fake_run(spec, rerun=False):
        calls.append((spec.model, spec.hp["method"], spec.seed, spec.dataset))
        if spec.hp["method"] == "imp" and spec.model == "vgg11":
            raise RuntimeError("stop")  # the planner stops where a result is missing
        return _Rec(spec, dens.get((spec.model, spec.hp["method"], spec.seed), 0.3))

    monkeypatch.setattr(ex, "run", fake_run)
    out = {}
    with pytest.raises(RuntimeError, match="stop"):
        tasks.ticket_runs("cpu", ["resnet20", "vgg11"], dataset="cifar100", n_seeds=2, out=out)
    concave = [(m, meth, s, "cifar100") for m in ("resnet20", "vgg11")
               for meth in ("mask_l1", "mask_log") for s in (0, 1)]
    assert calls[:8] == concave  # every concave run first
    assert calls[8:] == [("resnet20", "imp", 0, "cifar100"), ("resnet20", "imp", 1, "cifar100"),
                         ("vgg11", "imp", 0, "cifar100")]
    # kept as they came: ResNet-20's IMP at the rate ending at mask-log's sparsest seed (1/8
    # after 3 rounds: 50% per round); VGG-11's concave runs, its IMP not
    assert [r.spec.hp["rate"] for r in out["resnet20"]["imp"]] == [0.5, 0.5]
    assert list(out["vgg11"]) == ["mask_l1", "mask_log", "imp"]
    assert len(out["vgg11"]["mask_log"]) == 2 and out["vgg11"]["imp"] == []
    with pytest.raises(ValueError, match="cpu plan"):
        tasks.ticket_runs("cpu", ["resnet18"])


def _row(method, lam, acc, sp, tol=None, nnz=200.0):
    return {"method": method, "lam": lam, "acc_mean": acc, "sparsity_mean": sp,
            "sparsity_tol_mean": sp if tol is None else tol, "nonzero_mean": nnz}


def test_logistic_fig3_checks_flags():
    rows = []
    for lam in (1e-3, 1e-2, 1e-1):
        rows.append(_row("lr", lam, 0.99, 0.30, tol=0.40))
    rows += [_row("l1_theta", 1e-3, 0.99, 0.30, 0.5), _row("l1_theta", 1e-2, 0.985, 0.30, 0.6),
             _row("l1_theta", 1e-1, 0.80, 0.30, 0.35)]
    rows += [_row("mask_l1", 1e-3, 0.99, 0.50, nnz=200), _row("mask_l1", 1e-2, 0.985, 0.92, nnz=32),
             _row("mask_l1", 1e-1, 0.5, 1.0, nnz=0)]
    rows += [_row("mask_log", 1e-3, 0.99, 0.60, nnz=160), _row("mask_log", 1e-2, 0.99, 0.94,
                                                                nnz=24),
             _row("mask_log", 1e-1, 0.5, 1.0, nnz=0)]
    c = lt.logistic_fig3_checks(rows, k_sparse_acc=0.95, k_nonzero=8)
    assert c["F3-subgrad-not-sparse"] and not c["F3-subgrad-less-sparse-exact"]
    assert c["F3-subgrad-less-sparse-tol"]  # 0.35 < 0.40 at the largest lambda
    assert c["F3-mask-sparsifies"] and c["F3-comparable-accuracy"]
    assert c["F3-log-sparser"] and c["F3-log-more-accurate"] and c["F4-8pixel-mask"]
    assert not lt.logistic_fig3_checks(rows, 0.95, 9)["F4-8pixel-mask"]
    rows[4] = _row("l1_theta", 1e-2, 0.95, 0.30)  # a 4-point drop where masks keep >= 20 pixels
    assert not lt.logistic_fig3_checks(rows, 0.95, 8)["F3-comparable-accuracy"]


def test_table2_checks_interpolates_inside_only():
    def rec(points):
        return {"artifacts": {"rounds": [{"density": d, "test_acc": a} for d, a in points]}}

    recs = {"dense": {"metrics": {"final_test_acc": 0.90}},
            "mask_l1": rec([(0.5, 0.91), (0.2, 0.90), (0.04, 0.85)]),
            "mask_log": rec([(0.3, 0.92), (0.1, 0.89)])}
    meas, notes = lt.table2_checks(recs)
    assert meas["T2-baseline"] == pytest.approx(90.0)
    assert meas["T2-l1-1.79"] is None and "not 1.79%" in notes["T2-l1-1.79"]
    assert meas["T2-l1-5.36"] == pytest.approx(100 * (lt.interp_accuracy(
        [(0.2, 0.90), (0.04, 0.85)], 0.0536)[0] - 0.90))
    assert meas["T2-log-23.2"] is not None and meas["T2-log-5.12"] is None
    assert meas["T2-no-loss-at-23"] is True  # the l1 ticket at 20% matches the baseline


def test_table2_caveat_flags_rising_accuracy_and_test_noise():
    def rec(points):
        return {"artifacts": {"rounds": [{"density": d, "test_acc": a} for d, a in points]}}

    # our cpu records: each regularizer's tickets more accurate at every sparser round
    recs = {"dense": {"metrics": {"final_test_acc": 0.40, "test_n": 1000}},
            "mask_l1": rec([(0.047, 0.341), (0.0157, 0.396), (0.0093, 0.418)]),
            "mask_log": rec([(0.338, 0.354), (0.0338, 0.397), (0.0167, 0.431)])}
    cav = lt.table2_caveat(recs)
    # sqrt(2 * 0.4 * 0.6 / 1000) = 0.0219 -> 2.2 points
    assert "under-training" in cav and "2.2 points on 1000 test images" in cav
    meas, notes = lt.table2_checks(recs)
    assert meas["T2-l1-1.79"] is not None and cav in notes["T2-l1-1.79"]
    assert cav not in notes["T2-baseline"]
    # the noise figure follows the dense accuracy
    recs["dense"]["metrics"]["final_test_acc"] = 0.90
    assert "1.3 points" in lt.table2_caveat(recs)
    # one regularizer not monotone: no flag; no test_n: nothing at all
    recs["dense"]["metrics"] = {"final_test_acc": 0.30}
    recs["mask_log"] = rec([(0.338, 0.354), (0.0338, 0.33)])
    assert lt.table2_caveat(recs) == ""


def test_lottery_logistic_task_end_to_end():
    pytest.importorskip("torchvision")
    from replib import experiments as ex
    from replib.data import DatasetMissingError

    spec = ex.make_spec("lottery", "lottery_logistic", dataset="mnist", model="logreg",
                        epochs=30, budget="smoke", runs=2, lams=[1e-3, 1.0], k_sparse=5)
    try:
        rec = ex.execute(spec, device="cpu")
    except DatasetMissingError:
        pytest.skip("MNIST not available")
    m = rec.metrics
    assert m["runs"] == 2 and m["n_train_total"] == 320 and m["n_val_total"] == 80
    assert m["pixels"] == 400 and len(rec.history) == 4 * 2
    assert len(rec.artifacts["k_mask"]) == 400 and len(rec.artifacts["samples"]) == 8
    assert sorted(rec.artifacts["sample_labels"]) == [0.0] * 4 + [1.0] * 4
    full = [r for r in rec.history if r["lam"] == 1.0 and r["method"].startswith("mask")]
    assert all(r["sparsity_mean"] == 1.0 for r in full)  # lambda = 1 prunes every pixel
