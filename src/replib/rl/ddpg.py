"""DDPG with L1-proximal actor and critic (ACNN Sec. 3.2, Eqs. (4)-(13)), and its AMC twin.

The ACNN paper gives the losses and the proximal updates but not the agent's architecture or
its DDPG settings; those follow AMC (He et al. 2018; ``mit-han-lab/amc``, facts in
``references.md``), as the defaults of :class:`DDPGConfig` say field by field:

- actor ``state -> 300 -> 300 -> 1`` with ReLU and a sigmoid output (the pruning fraction);
  critic ``fc(state) + fc(action) -> ReLU -> 300 -> 1``; DDPG initialization (fan-in uniform
  for hidden layers, U(-3e-3, 3e-3) for the output layers);
- Adam, ``tau = 0.01``, discount 1.0, batch 64, replay memory of ``100 x layers`` transitions,
  100 warm-up episodes of uniform random actions, then truncated-normal exploration with
  ``sigma = 0.5 * 0.95^(episode - warmup)``; rewards are baselined by a moving average
  (``alpha = 0.5``) before the critic target; one update per stored transition after warm-up.

ACNN's addition is the proximal step: after each Adam step of the actor (Eq. (8), gradient
ascent on Q) and of the critic (Eq. (9), descent on the TD error), every weight matrix is
soft-thresholded by ``lam * lr`` (Eqs. (10)-(11)) with
:class:`replib.sparsity.optim.ProxAdam`. ``lam = 0`` gives the same agent without the proximal
step: our AMC-style baseline and the "ACNN without pro" row of Table 7. Biases are not
regularized (the paper puts the L1 norm "on the weights"). The learning rate is the paper's
0.001 (Sec. 4.3) for both networks; AMC uses 1e-4 for the actor.

Three places where the code does not follow the equations as printed (our readings):

1. **TD target and error, Eqs. (5) and (7)**: as printed, both Q terms take the actor's action,
   ``Q_w(S_i, mu_theta(S_i))``; the code regresses ``Q_w(S_i, a_i)`` on the *stored* action
   ``a_i`` of the transition (standard DDPG, Lillicrap et al. 2016, and AMC). With
   ``mu_theta(S_i)`` the critic would only ever see on-policy actions and could not rank the
   exploratory ones. The bootstrap term is as printed: ``Q_w'(S_{i+1}, mu_theta'(S_{i+1}))``
   with the target networks.
2. **Actor objective, Eq. (6)**: as printed it *minimizes* ``mean Q(S_i, mu_theta(S_i)) +
   ||theta||_1``, which would drive the policy towards the lowest value; Eq. (8) then writes a
   gradient *ascent* step. The code maximizes Q: Adam descends on ``-mean Q(S_i, mu(S_i))``
   (the ascent of Eq. (8)) and the prox of Eq. (10) handles ``lam ||theta||_1``, i.e. it
   minimizes ``-Q + lam ||theta||_1``.
3. **Algorithm 1, line 21 ("Clear replay")** is not followed: the replay memory is a ring buffer
   of ``100 x layers`` transitions that is never cleared (:func:`replib.rl.search.run_search`
   only pushes into it; AMC's memory). Relatedly, the targets are soft-updated (Eqs. (12)-(13))
   after every update, not once per training pass as in lines 19-20.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from statistics import NormalDist

import numpy as np
import torch
from torch import Tensor, nn

from replib.sparsity.optim import ProxAdam, l1_param_groups


@dataclass
class DDPGConfig:
    """Agent settings; every default is AMC's unless the comment says otherwise."""

    hidden: int = 300            # AMC: hidden1 = hidden2 = 300
    lr_actor: float = 1e-3       # ACNN Sec. 4.3 ("learning rate 0.001"); AMC: 1e-4
    lr_critic: float = 1e-3      # ACNN Sec. 4.3 and AMC
    lam: float = 0.0             # ACNN Eqs. (10)-(11); 0 = no proximal step (AMC)
    tau: float = 0.01            # Eqs. (12)-(13); AMC
    discount: float = 1.0        # AMC
    batch_size: int = 64         # AMC
    replay_per_layer: int = 100  # AMC: memory = 100 x number of prunable layers
    warmup: int = 100            # AMC: episodes of uniform random actions
    sigma0: float = 0.5          # AMC: initial exploration std
    sigma_decay: float = 0.95    # AMC: per-episode decay after warm-up
    baseline_alpha: float = 0.5  # AMC: moving average of rewards subtracted in the target
    init_w: float = 3e-3         # DDPG / AMC output-layer init range

    def to_dict(self) -> dict:
        return asdict(self)


def _fanin_init_(layer: nn.Linear) -> None:
    bound = 1.0 / math.sqrt(layer.weight.shape[1])
    nn.init.uniform_(layer.weight, -bound, bound)


class Actor(nn.Module):
    """``mu_theta(s)``: state -> hidden -> hidden -> 1, ReLU, sigmoid output in (0, 1)."""

    def __init__(self, n_states: int, hidden: int = 300, init_w: float = 3e-3) -> None:
        super().__init__()
        self.fc1 = nn.Linear(n_states, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, 1)
        _fanin_init_(self.fc1)
        _fanin_init_(self.fc2)
        nn.init.uniform_(self.fc3.weight, -init_w, init_w)

    def forward(self, s: Tensor) -> Tensor:
        h = torch.relu(self.fc1(s))
        h = torch.relu(self.fc2(h))
        return torch.sigmoid(self.fc3(h))


class Critic(nn.Module):
    """``Q_w(s, a)``: ``relu(fc(s) + fc(a)) -> hidden -> 1`` (AMC's critic)."""

    def __init__(self, n_states: int, hidden: int = 300, init_w: float = 3e-3) -> None:
        super().__init__()
        self.fc_s = nn.Linear(n_states, hidden)
        self.fc_a = nn.Linear(1, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, 1)
        _fanin_init_(self.fc_s)
        _fanin_init_(self.fc_a)
        _fanin_init_(self.fc2)
        nn.init.uniform_(self.fc3.weight, -init_w, init_w)

    def forward(self, s: Tensor, a: Tensor) -> Tensor:
        h = torch.relu(self.fc_s(s) + self.fc_a(a))
        h = torch.relu(self.fc2(h))
        return self.fc3(h)


class ReplayMemory:
    """A ring buffer of transitions ``(s, a, r, s', done)``, sampled uniformly."""

    def __init__(self, capacity: int, n_states: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity={capacity} must be >= 1")
        self.capacity = capacity
        self.s = np.zeros((capacity, n_states), np.float32)
        self.a = np.zeros((capacity, 1), np.float32)
        self.r = np.zeros((capacity, 1), np.float32)
        self.s2 = np.zeros((capacity, n_states), np.float32)
        self.done = np.zeros((capacity, 1), np.float32)
        self.size = 0
        self._next = 0

    def push(self, s, a, r, s2, done) -> None:
        i = self._next
        self.s[i], self.a[i], self.r[i], self.s2[i], self.done[i] = s, a, r, s2, float(done)
        self._next = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int, rng: np.random.Generator) -> tuple[Tensor, ...]:
        idx = rng.integers(0, self.size, size=batch_size)
        return tuple(torch.from_numpy(x[idx]) for x in (self.s, self.a, self.r, self.s2,
                                                           self.done))

    def __len__(self) -> int:
        return self.size


def truncated_normal(mu: float, sigma: float, lo: float, hi: float,
                     rng: np.random.Generator) -> float:
    """One draw of N(mu, sigma^2) truncated to [lo, hi] (inverse-CDF method; AMC's exploration)."""
    if sigma <= 0:
        return float(np.clip(mu, lo, hi))
    std = NormalDist()
    a, b = std.cdf((lo - mu) / sigma), std.cdf((hi - mu) / sigma)
    if b - a < 1e-12:  # the mass inside [lo, hi] underflows: take the nearer bound
        return float(lo if mu < lo else hi)
    u = float(np.clip(rng.uniform(a, b), 1e-300, 1 - 1e-16))
    return float(np.clip(mu + sigma * std.inv_cdf(u), lo, hi))


def _soft_update_(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Eqs. (12)-(13): ``target <- tau * source + (1 - tau) * target``."""
    with torch.no_grad():
        for pt, ps in zip(target.parameters(), source.parameters()):
            pt.mul_(1 - tau).add_(ps, alpha=tau)


def weight_zero_counts(*modules: nn.Module) -> tuple[int, int]:
    """Exactly-zero entries and all entries of the weight matrices (``dim > 1``) of the modules
    (for an MLP: the weights of its ``nn.Linear`` layers; biases are not counted)."""
    zeros = total = 0
    for m in modules:
        for p in m.parameters():
            if p.dim() > 1:
                zeros += int((p == 0).sum())
                total += p.numel()
    return zeros, total


def weight_sparsity(*modules: nn.Module) -> float:
    """Fraction of exactly-zero entries in the weight matrices (``dim > 1``) of the modules.

    The agent's "DRL SPA" of Tables 2, 4 and 6 (our reading: weights of the online actor and
    critic; biases are not regularized and not counted).
    """
    zeros, total = weight_zero_counts(*modules)
    return zeros / total


class DDPGAgent:
    """DDPG agent for a 1-D action in [0, 1] with optional L1-proximal updates (ACNN)."""

    def __init__(self, n_states: int, n_layers: int, config: DDPGConfig | None = None,
                 seed: int = 0) -> None:
        self.cfg = cfg = config or DDPGConfig()
        if cfg.lam < 0:
            raise ValueError(f"lam={cfg.lam} must be >= 0")
        torch.manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.actor = Actor(n_states, cfg.hidden, cfg.init_w)
        self.critic = Critic(n_states, cfg.hidden, cfg.init_w)
        self.actor_target = copy.deepcopy(self.actor)
        self.critic_target = copy.deepcopy(self.critic)
        self.actor_opt = ProxAdam(l1_param_groups(self.actor, cfg.lam), lr=cfg.lr_actor,
                                  lam=cfg.lam)
        self.critic_opt = ProxAdam(l1_param_groups(self.critic, cfg.lam), lr=cfg.lr_critic,
                                   lam=cfg.lam)
        self.memory = ReplayMemory(cfg.replay_per_layer * n_layers, n_states)
        self.moving_average: float | None = None
        self.updates = 0

    # ------------------------------------------------------------------ acting
    @torch.no_grad()
    def act(self, state: np.ndarray) -> float:
        """The actor's deterministic action ``mu(s)``."""
        s = torch.as_tensor(state, dtype=torch.float32).unsqueeze(0)
        return float(self.actor(s).item())

    def explore(self, state: np.ndarray, episode: int) -> float:
        """Warm-up: U(0, 1); afterwards ``mu(s)`` plus truncated-normal noise (AMC)."""
        cfg = self.cfg
        if episode < cfg.warmup:
            return float(self.rng.uniform(0.0, 1.0))
        sigma = cfg.sigma0 * cfg.sigma_decay ** (episode - cfg.warmup)
        return truncated_normal(self.act(state), sigma, 0.0, 1.0, self.rng)

    def observe(self, s, a, r, s2, done) -> None:
        self.memory.push(s, a, r, s2, done)

    # ------------------------------------------------------------------ learning
    def update(self) -> dict[str, float]:
        """One DDPG update of critic and actor (Eqs. (4)-(11)) and of the targets (12)-(13).

        Critic: TD error on the stored action ``a_i`` (not Eq. (5)/(7)'s printed
        ``mu_theta(S_i)``), Adam step (9), prox (11). Actor: ascent on ``Q(S_i, mu(S_i))`` as
        Eq. (8) (descent on ``-Q``; Eq. (6) as printed would minimize ``+Q``), prox (10). See
        the module docstring.
        """
        cfg = self.cfg
        s, a, r, s2, done = self.memory.sample(cfg.batch_size, self.rng)
        batch_mean = float(r.mean())
        if self.moving_average is None:
            self.moving_average = batch_mean
        else:
            self.moving_average += cfg.baseline_alpha * (batch_mean - self.moving_average)
        r = r - self.moving_average
        with torch.no_grad():
            q_next = self.critic_target(s2, self.actor_target(s2))
            target = r + cfg.discount * (1.0 - done) * q_next
        # critic: Eq. (5) / (7) on the stored action a_i (standard DDPG), step (9), prox (11)
        critic_loss = nn.functional.mse_loss(self.critic(s, a), target)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        # actor: Eq. (4) / (6) read as maximizing Q: ascent (8) = descent on -Q, prox (10)
        actor_loss = -self.critic(s, self.actor(s)).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()
        _soft_update_(self.actor_target, self.actor, cfg.tau)
        _soft_update_(self.critic_target, self.critic, cfg.tau)
        self.updates += 1
        return {"critic_loss": float(critic_loss.detach()),
                "actor_loss": float(actor_loss.detach())}

    def sparsity(self) -> float:
        """DRL SPA: exact zeros in the weight matrices of the actor and the critic."""
        return weight_sparsity(self.actor, self.critic)
