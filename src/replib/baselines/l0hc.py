"""L0 regularization with hard-concrete gates on neurons (Louizos, Welling & Kingma, ICLR 2018).

Each ``nn.Linear`` layer of an MLP gets one gate ``z_j in [0, 1]`` per *input* unit, so a
closed gate removes an input feature or a hidden neuron (the group-sparse MLP of the paper and
of ``AMLab-Amsterdam/L0_regularization``'s ``L0MLP``; facts in ``references.md``):

- hard concrete: ``u ~ U(0, 1)``, ``s = sigmoid((log u - log(1 - u) + log_alpha) / beta)``,
  ``z = min(1, max(0, s (zeta - gamma) + gamma))`` with temperature ``beta = 2/3`` and
  stretch ``(gamma, zeta) = (-0.1, 1.1)``; one noise draw per example and gate in training;
- test time: ``z = min(1, max(0, sigmoid(log_alpha) (zeta - gamma) + gamma))``;
- expected L0 of a gate: ``P(z != 0) = sigmoid(log_alpha - beta log(-gamma / zeta))``;
- penalty (AMLab's form, divided by the training-set size N):
  ``sum_j P(z_j != 0) (lam_l / N + wd / 2 ||W[:, j]||^2) + wd / 2 ||b||^2``;
- ``log_alpha`` starts at ``log(1 - d) - log(d)`` plus N(0, 0.01^2) noise, with drop rate
  ``d = 0.2`` for the input layer and 0.5 elsewhere.

The parameter EMA of the AMLab code (``beta_ema``) is not used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from replib.models.mlp import MLP

LIMIT_L, LIMIT_R = -0.1, 1.1
TEMPERATURE = 2.0 / 3.0


class HardConcreteGate(nn.Module):
    """``n`` hard-concrete gates with learnable ``log_alpha``."""

    def __init__(self, n: int, droprate_init: float = 0.5, temperature: float = TEMPERATURE,
                 limits: tuple[float, float] = (LIMIT_L, LIMIT_R)) -> None:
        super().__init__()
        if not 0.0 < droprate_init < 1.0:
            raise ValueError(f"droprate_init={droprate_init} must lie in (0, 1)")
        if not temperature > 0:
            raise ValueError(f"temperature={temperature} must be > 0")
        self.temperature = temperature
        self.limit_l, self.limit_r = limits
        if not (self.limit_l < 0.0 and self.limit_r > 1.0):
            raise ValueError(f"limits={limits} must satisfy gamma < 0 < 1 < zeta")
        init = math.log(1 - droprate_init) - math.log(droprate_init)
        self.log_alpha = nn.Parameter(torch.empty(n).normal_(init, 1e-2))

    def prob_nonzero(self) -> Tensor:
        """``P(z_j != 0)``, the expected L0 norm per gate."""
        shift = self.temperature * math.log(-self.limit_l / self.limit_r)
        return torch.sigmoid(self.log_alpha - shift)

    def deterministic(self) -> Tensor:
        """The test-time gate values."""
        s = torch.sigmoid(self.log_alpha)
        return (s * (self.limit_r - self.limit_l) + self.limit_l).clamp(0.0, 1.0)

    def sample(self, batch: int) -> Tensor:
        """Gates for a batch, one noise draw per example and gate."""
        eps = 1e-6
        u = torch.empty(batch, self.log_alpha.numel(), device=self.log_alpha.device)
        u.uniform_(eps, 1 - eps)
        s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + self.log_alpha) / self.temperature)
        return (s * (self.limit_r - self.limit_l) + self.limit_l).clamp(0.0, 1.0)

    def forward(self, x: Tensor) -> Tensor:
        z = self.sample(x.shape[0]) if self.training else self.deterministic()
        return x * z


class L0GatedMLP(nn.Module):
    """A ReLU MLP ``sizes[0]-...-sizes[-1]`` with a hard-concrete gate on every layer's inputs."""

    def __init__(self, sizes: Sequence[int], droprate_init: tuple[float, float] = (0.2, 0.5),
                 temperature: float = TEMPERATURE) -> None:
        super().__init__()
        self.sizes = tuple(int(s) for s in sizes)
        self.flatten = nn.Flatten()
        self.gates = nn.ModuleList()
        self.linears = nn.ModuleList()
        for i, (fan_in, fan_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:])):
            d = droprate_init[0] if i == 0 else droprate_init[1]
            self.gates.append(HardConcreteGate(fan_in, d, temperature))
            self.linears.append(nn.Linear(fan_in, fan_out))

    def forward(self, x: Tensor) -> Tensor:
        h = self.flatten(x)
        last = len(self.linears) - 1
        for i, (gate, lin) in enumerate(zip(self.gates, self.linears)):
            h = lin(gate(h))
            if i < last:
                h = torch.relu(h)
        return h

    def regularization(self, lam: float | Sequence[float], n_train: int,
                       weight_decay: float) -> Tensor:
        """AMLab's L0 + gated-L2 penalty, already divided by ``n_train`` (see module doc)."""
        lams = [lam] * len(self.linears) if isinstance(lam, (int, float)) else list(lam)
        if len(lams) != len(self.linears):
            raise ValueError(f"lam has {len(lams)} entries for {len(self.linears)} layers")
        total = torch.zeros((), device=self.linears[0].weight.device)
        for lam_l, gate, lin in zip(lams, self.gates, self.linears):
            q = gate.prob_nonzero()
            col_sq = lin.weight.pow(2).sum(dim=0)
            total = total + (q * (lam_l / n_train + 0.5 * weight_decay * col_sq)).sum()
            total = total + 0.5 * weight_decay * lin.bias.pow(2).sum()
        return total

    def expected_l0(self) -> list[float]:
        """Expected number of open gates per layer."""
        with torch.no_grad():
            return [float(g.prob_nonzero().sum()) for g in self.gates]

    @torch.no_grad()
    def to_mlp(self) -> MLP:
        """The deterministic test-time network as a plain :class:`~replib.models.MLP`.

        Gate values are folded into the columns of each weight (a closed gate gives an exactly
        zero column), so :func:`~replib.baselines.structure.shrink_sparse_mlp` removes the
        neurons.
        """
        mlp = MLP(self.sizes).to(self.linears[0].weight.device)
        for gate, lin, new in zip(self.gates, self.linears, mlp.hidden_layers()):
            z = gate.deterministic()
            new.weight.copy_(lin.weight * z.unsqueeze(0))
            new.bias.copy_(lin.bias)
        return mlp
