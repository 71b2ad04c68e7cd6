"""ACNN's deep-reinforcement-learning pruner (Wang et al. 2023) and its AMC-style twin.

- :mod:`replib.rl.env`: :class:`NeuronPruningEnv`, the layer-by-layer neuron-pruning MDP
  (gymnasium API; state ``[t, n, p, l_p]``, action = fraction pruned by L1 norm, reward Eq. (3)).
- :mod:`replib.rl.ddpg`: :class:`DDPGAgent` with L1-proximal actor and critic (Eqs. (4)-(13));
  ``lam=0`` is the AMC-style agent without the proximal step.
- :mod:`replib.rl.search`: :func:`run_search`, the episode loop of Algorithm 1.
"""

# ruff: noqa: F401
from replib.rl.ddpg import (
    Actor,
    Critic,
    DDPGAgent,
    DDPGConfig,
    ReplayMemory,
    truncated_normal,
    weight_sparsity,
    weight_zero_counts,
)
from replib.rl.env import (
    NeuronPruningEnv,
    PrefixMLP,
    PrunedEvaluator,
    acnn_reward,
    check_choice,
)
from replib.rl.search import greedy_episode, run_search
