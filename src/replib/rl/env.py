"""The layer-by-layer neuron-pruning environment of ACNN (Sec. 3.1), with the gymnasium API.

One episode walks through the *neuron layers* of a trained MLP: the input features (784 for
LeNet-300-100) and each hidden layer (300, 100). At step ``t`` the agent sees the state of
layer ``t`` and answers with ``a_t``, the fraction of that layer's neurons to prune; the
neurons with the smallest L1 norm go first (Eqs. (1)-(2)). The environment then measures the
validation accuracy and the neuron compression rate of the network pruned so far (layers after
``t`` still intact) and pays the reward of Eq. (3).

Readings we chose (the paper is ambiguous; each is a named option):

- **Reward, Eq. (3)**: printed as ``min(-acc/E_acc, 1) + beta min(-ncr/E_ncr, 1)``, which is
  ``-acc/E_acc - beta ncr/E_ncr`` (negative everywhere, and maximized by *destroying* accuracy
  and pruning nothing). ``reading="sensible"`` (default) drops the minus signs:
  ``min(acc/E_acc, 1) + beta min(ncr/E_ncr, 1)``; ``reading="printed"`` keeps them.
- **State, Sec. 3.1.1**: ``[t, n, p, l_p]``; ``p`` is "the size of all parameters moved to the
  current layer". ``p_reading="removed"`` (default) reads it as the parameters *removed* so far
  (the only reading under which the state depends on earlier actions, like AMC's "reduced
  FLOPs" feature); ``"cumulative"`` as the parameters of the layers before ``t``. Every feature
  is scaled to [0, 1] (AMC normalizes its state features across layers).
- **Neuron L1 norm, Eq. (1)**: the norm of the neuron's *outgoing* weights
  (:func:`replib.sparsity.prune.neuron_l1_scores`), the reading that also ranks input features.
- **Pruned count, Eq. (2)**: ``round(a_t n)``, at most ``n - 1`` (a layer is never emptied);
  :func:`replib.sparsity.prune.neurons_to_prune`.

The network is never modified: weights stay those of the trained model (no fine-tuning inside
the search, as in AMC), so accuracy is a deterministic function of the kept counts and is
memoized. For speed, neurons are permuted once so that the kept neurons of every layer are a
*prefix* (same function, exactly), and the pruned network is evaluated as a smaller dense
network on whole validation tensors, with the activations of the first layers cached.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn

from replib.metrics import neuron_compression_rate
from replib.sparsity.prune import linear_chain, neuron_l1_scores, neurons_to_prune

READINGS = ("sensible", "printed")
P_READINGS = ("removed", "cumulative")


def check_choice(name: str, value, allowed: Sequence) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``allowed`` (the named option ``name``)."""
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not known; allowed values: {list(allowed)}")


def check_reward_options(reading: str, expect_acc: float, expect_ncr: float,
                         beta: float | None = None, p_reading: str | None = None) -> None:
    """The checks on the options of Eq. (3) and of the state, shared by :func:`acnn_reward` and
    :class:`NeuronPruningEnv` (the ``acnn_search`` task checks its choices with
    :func:`check_choice` too): a known ``reading`` (and ``p_reading`` if given),
    ``expect_acc > 0``, ``expect_ncr > 0`` and ``beta >= 0`` (if given)."""
    check_choice("reading", reading, READINGS)
    if p_reading is not None:
        check_choice("p_reading", p_reading, P_READINGS)
    if beta is not None and beta < 0:
        raise ValueError(f"beta={beta} must be >= 0")
    if expect_acc <= 0 or expect_ncr <= 0:
        raise ValueError(f"expect_acc={expect_acc} and expect_ncr={expect_ncr} must be > 0")


def acnn_reward(acc: float, ncr: float, beta: float, expect_acc: float, expect_ncr: float,
                reading: str = "sensible") -> float:
    """Eq. (3) of the ACNN paper in the chosen ``reading`` (see the module docstring).

    ``sensible``: ``min(acc/E_acc, 1) + beta min(ncr/E_ncr, 1)``;
    ``printed``: ``min(-acc/E_acc, 1) + beta min(-ncr/E_ncr, 1)``.
    """
    check_reward_options(reading, expect_acc, expect_ncr)
    sign = 1.0 if reading == "sensible" else -1.0
    return min(sign * acc / expect_acc, 1.0) + beta * min(sign * ncr / expect_ncr, 1.0)


class PrefixMLP:
    """A trained ReLU MLP whose neurons are sorted so that pruning keeps a prefix of each layer.

    Neuron layer ``t`` is the input of ``nn.Linear`` number ``t``. Its neurons are ordered by
    decreasing L1 norm of their outgoing weights (stable sort, Eq. (1)); for hidden layers the
    rows of the previous layer are permuted the same way, so the network computes exactly the
    same function. Keeping ``k_t`` neurons of layer ``t`` then means keeping the first ``k_t``.
    """

    def __init__(self, model: nn.Module) -> None:
        chain = linear_chain(model)
        self.names = [n for n, _ in chain]
        ws = [m.weight.detach().float().clone() for _, m in chain]
        bs = [m.bias.detach().float().clone() if m.bias is not None
              else torch.zeros(m.out_features) for _, m in chain]
        self.orders: list[Tensor] = []
        for _, layer in chain:
            scores = neuron_l1_scores(layer, "outgoing").float()
            order = torch.argsort(scores, descending=True, stable=True)
            self.orders.append(order)
        for t, order in enumerate(self.orders):
            ws[t] = ws[t][:, order]
            if t > 0:
                ws[t - 1] = ws[t - 1][order]
                bs[t - 1] = bs[t - 1][order]
        self.weights = [w.contiguous() for w in ws]
        self.biases = bs
        self.sizes = [w.shape[1] for w in ws]          # neurons per neuron layer
        self.out_features = ws[-1].shape[0]

    @property
    def num_layers(self) -> int:
        return len(self.sizes)

    def layer_params(self, kept: Sequence[int]) -> list[int]:
        """Parameters (weights + biases) of each ``nn.Linear`` when ``kept[t]`` neurons remain."""
        outs = list(kept[1:]) + [self.out_features]
        return [k_in * k_out + k_out for k_in, k_out in zip(kept, outs)]

    def kept_indices(self, kept: Sequence[int]) -> dict[str, Tensor]:
        """Original indices of the kept neurons per ``nn.Linear`` input (for ``shrink_mlp``)."""
        return {name: torch.sort(order[:k]).values
                for name, order, k in zip(self.names, self.orders, kept)}


class PrunedEvaluator:
    """Validation accuracy of the prefix-pruned network, memoized, with cached activations.

    ``x`` is the whole validation set as a float tensor ``(N, d)`` (normalized, flattened, in
    the original feature order), ``y`` its labels. ``accuracy(kept)`` accepts counts for the
    first ``len(kept)`` neuron layers (the later ones are intact). The hidden activations after
    layer ``t`` depend only on ``kept[:t+1]`` and are kept in an LRU cache of ``cache_size``
    entries.
    """

    def __init__(self, net: PrefixMLP, x: Tensor, y: Tensor, cache_size: int = 16) -> None:
        if x.dim() != 2 or x.shape[1] != net.sizes[0]:
            raise ValueError(f"x must be (N, {net.sizes[0]}), got {tuple(x.shape)}")
        self.net = net
        self.x = x.float()[:, net.orders[0].to(x.device)].contiguous()  # inputs in prefix order
        self.y = y
        self.cache_size = cache_size
        self._acts: OrderedDict[tuple[int, ...], Tensor] = OrderedDict()
        self._acc: dict[tuple[int, ...], float] = {}
        self.evaluations = 0   # forward passes actually computed (cache misses)
        self.lookups = 0

    def _activation(self, prefix: tuple[int, ...]) -> Tensor:
        """Input of neuron layer ``len(prefix)`` (all its neurons), given kept counts ``prefix``."""
        if not prefix:
            return self.x
        if prefix in self._acts:
            self._acts.move_to_end(prefix)
            return self._acts[prefix]
        h = self._activation(prefix[:-1])
        t, k = len(prefix) - 1, prefix[-1]
        w, b = self.net.weights[t], self.net.biases[t]
        z = torch.addmm(b, h[:, :k], w[:, :k].t())
        out = z if t == self.net.num_layers - 1 else torch.relu_(z)
        self._acts[prefix] = out
        if len(self._acts) > self.cache_size:
            self._acts.popitem(last=False)
        return out

    @torch.no_grad()
    def accuracy(self, kept: Sequence[int]) -> float:
        kept = tuple(int(k) for k in kept)
        full = kept + tuple(self.net.sizes[len(kept):])
        self.lookups += 1
        if full in self._acc:
            return self._acc[full]
        self.evaluations += 1
        # cache the activations of the pruned prefix; the intact suffix is computed once here
        h = self._activation(kept)
        for t in range(len(kept), self.net.num_layers):
            w, b = self.net.weights[t], self.net.biases[t]
            h = torch.addmm(b, h, w.t())
            if t < self.net.num_layers - 1:
                h = torch.relu_(h)
        acc = float((h.argmax(1) == self.y).float().mean())
        self._acc[full] = acc
        return acc


class NeuronPruningEnv(gym.Env):
    """ACNN's MDP (Sec. 3.1): one step per neuron layer, action = fraction pruned.

    Observation ``[t, n, p, l_p]`` scaled to [0, 1]; action ``a_t`` in [0, 1] (Box of shape
    (1,)); reward Eq. (3) (:func:`acnn_reward`) from the validation accuracy and the NCR of the
    network pruned so far; the episode terminates after the last neuron layer. ``info`` carries
    ``acc``, ``ncr``, ``kept`` (counts so far) and ``pruned`` (count at this step).

    ``include_inputs=False`` leaves the input features unpruned (hidden layers only).
    """

    metadata = {"render_modes": []}

    def __init__(self, model: nn.Module, x_val: Tensor, y_val: Tensor, *, beta: float,
                 expect_acc: float, expect_ncr: float, reading: str = "sensible",
                 p_reading: str = "removed", include_inputs: bool = True,
                 cache_size: int = 16) -> None:
        super().__init__()
        check_reward_options(reading, expect_acc, expect_ncr, beta=beta, p_reading=p_reading)
        self.net = PrefixMLP(model)
        self.evaluator = PrunedEvaluator(self.net, x_val, y_val, cache_size)
        self.beta, self.expect_acc, self.expect_ncr = beta, expect_acc, expect_ncr
        self.reading, self.p_reading = reading, p_reading
        self.first = 0 if include_inputs else 1
        self.layers = list(range(self.first, self.net.num_layers))
        self.total_neurons = sum(self.net.sizes)
        self.dense_params = sum(self.net.layer_params(self.net.sizes))
        self._static = self._static_features()
        self.observation_space = gym.spaces.Box(0.0, 1.0, shape=(4,), dtype=np.float32)
        self.action_space = gym.spaces.Box(0.0, 1.0, shape=(1,), dtype=np.float32)
        self.kept: list[int] = []
        self.step_index = 0

    # ------------------------------------------------------------------ state
    def _static_features(self) -> np.ndarray:
        sizes = self.net.sizes
        params = self.net.layer_params(sizes)
        rows = []
        for i, t in enumerate(self.layers):
            # "cumulative" p: the parameters of *every* layer below t, including those that are
            # not pruned (fc1 when include_inputs=False), not only the visited ones
            before = sum(params[:t])
            rows.append([i / max(1, len(self.layers) - 1), sizes[t] / max(sizes),
                         before / self.dense_params, params[t] / max(params)])
        return np.asarray(rows, dtype=np.float32)

    def _observation(self) -> np.ndarray:
        if self.step_index >= len(self.layers):
            removed = self.removed_params() / self.dense_params
            return np.asarray([1.0, 0.0, removed, 0.0], dtype=np.float32)
        obs = self._static[self.step_index].copy()
        if self.p_reading == "removed":
            obs[2] = self.removed_params() / self.dense_params
        return obs

    def full_counts(self) -> list[int]:
        """Kept neurons of every neuron layer (layers not yet visited are intact)."""
        sizes = self.net.sizes
        head = sizes[:self.first] + self.kept
        return head + sizes[len(head):]

    def removed_params(self) -> int:
        return self.dense_params - sum(self.net.layer_params(self.full_counts()))

    def ncr(self) -> float:
        """Neuron compression rate: original / kept neurons over input and hidden layers."""
        return neuron_compression_rate(self.net.sizes, self.full_counts())

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.kept = []
        self.step_index = 0
        return self._observation(), {}

    def step(self, action):
        if self.step_index >= len(self.layers):
            raise RuntimeError("episode is over; call reset()")
        a = float(np.clip(np.asarray(action, dtype=np.float64).reshape(-1)[0], 0.0, 1.0))
        t = self.layers[self.step_index]
        n = self.net.sizes[t]
        pruned = neurons_to_prune(n, a)
        self.kept.append(n - pruned)
        self.step_index += 1
        counts = self.net.sizes[:self.first] + self.kept
        acc = self.evaluator.accuracy(counts)
        ncr = self.ncr()
        reward = acnn_reward(acc, ncr, self.beta, self.expect_acc, self.expect_ncr, self.reading)
        done = self.step_index >= len(self.layers)
        info = {"acc": acc, "ncr": ncr, "kept": list(self.full_counts()), "pruned": pruned,
                "action": a}
        return self._observation(), float(reward), done, False, info

    # ------------------------------------------------------------------ helpers
    def evaluate_policy(self, fractions: Sequence[float]) -> dict:
        """Run one episode with the given fractions; return kept counts, acc, ncr, return."""
        self.reset()
        total, info = 0.0, {}
        for a in fractions:
            _, r, done, _, info = self.step([a])
            total += r
        if not done:
            raise ValueError(f"{len(fractions)} fractions for {len(self.layers)} layers")
        return {"kept": info["kept"], "acc": info["acc"], "ncr": info["ncr"], "return": total}
