"""Combined group and exclusive sparsity (CGES; Yoon & Hwang, ICML 2017) for MLPs.

After every SGD step, each weight matrix gets two proximal steps (the public CGES code, facts
in ``references.md``):

1. group sparsity (l2,1): ``group_soft_threshold`` with threshold ``lr * lam * mu_l``, the
   groups being the outgoing weights of each input unit of the layer (the TF code's reduction
   over the last axis of a ``[in, out]`` matrix is ``group_dim=1`` for a PyTorch ``Linear``
   weight), so a zeroed group removes that neuron (or input feature);
2. exclusive sparsity (l1,2): ``exclusive_l12_prox`` with threshold ``lr * lam * (1 - mu_l)``
   along the same groups; by default the code's one-step form (``exact=False``: soft threshold
   by the input group's L1 norm times the threshold), or the exact prox (``exact=True``).

The group share changes with depth, ``mu_l = mu - l * chvar`` for layer ``l = 0, 1, ...`` and
the exclusive share is ``1 - mu_l`` (code defaults ``mu = 0.8``, ``chvar = 0.2``). The code's
per-layer normalizers (``glayerwise`` / ``elayerwise``) were set for its conv net and have no
counterpart for LeNet-300-100 or the CIFAR MLP; we use 1 for every layer. Biases are not
regularized (the code regularizes the variables named ``weight`` only).
"""

from __future__ import annotations

import torch
from torch import nn

from replib.sparsity.prox import exclusive_l12_prox, group_soft_threshold
from replib.sparsity.prune import linear_chain


def layer_shares(n_layers: int, mu: float = 0.8, chvar: float = 0.2) -> list[tuple[float, float]]:
    """``(mu_l, 1 - mu_l)`` per layer, with ``mu_l = mu - l * chvar`` (CGES code)."""
    shares = [(mu - l * chvar, 1.0 - mu + l * chvar) for l in range(n_layers)]
    bad = [s for s in shares if not (0.0 <= s[0] <= 1.0)]
    if bad:
        raise ValueError(f"mu={mu}, chvar={chvar} give group shares outside [0, 1] for "
                         f"{n_layers} layers: {[round(s[0], 3) for s in shares]}")
    return shares


@torch.no_grad()
def cges_prox_(model: nn.Module, lr: float, lam: float, mu: float = 0.8, chvar: float = 0.2,
               exact: bool = False) -> None:
    """One CGES proximal step on every ``nn.Linear`` weight of an MLP (in place)."""
    if lr < 0 or lam < 0:
        raise ValueError(f"lr={lr} and lam={lam} must be >= 0")
    chain = linear_chain(model)
    for (_, layer), (g_share, e_share) in zip(chain, layer_shares(len(chain), mu, chvar)):
        w = group_soft_threshold(layer.weight, lr * lam * g_share, group_dim=1)
        w = exclusive_l12_prox(w, lr * lam * e_share, group_dim=1, exact=exact)
        layer.weight.copy_(w)


class CGESStep:
    """``after_step`` hook for :func:`replib.train.fit`: the CGES prox, then the LR schedule.

    The prox uses the learning rate of the step just taken; afterwards the LR is set to
    ``base_lr * decay_rate ** ((step + 1) // decay_every)`` (the code's staircase exponential
    decay per iteration; ``decay_every=0`` keeps it constant).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, lam: float, mu: float = 0.8,
                 chvar: float = 0.2, exact: bool = False, decay_every: int = 0,
                 decay_rate: float = 0.9) -> None:
        self.optimizer, self.lam, self.mu, self.chvar, self.exact = optimizer, lam, mu, chvar, exact
        self.base_lr = float(optimizer.param_groups[0]["lr"])
        self.decay_every, self.decay_rate = decay_every, decay_rate

    def __call__(self, model: nn.Module, step: int) -> None:
        lr = float(self.optimizer.param_groups[0]["lr"])
        cges_prox_(model, lr, self.lam, self.mu, self.chvar, self.exact)
        if self.decay_every:
            new_lr = self.base_lr * self.decay_rate ** ((step + 1) // self.decay_every)
            for group in self.optimizer.param_groups:
                group["lr"] = new_lr
