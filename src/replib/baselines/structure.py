"""Which neurons of a sparse MLP are structurally alive, and the physically smaller network.

Regularization baselines (CGES, L0 gates) leave exact zeros in the weight matrices; a neuron
can be removed when nothing flows out of it, and a hidden neuron whose incoming weights are
all zero outputs a constant ``relu(b_j)`` that can be folded into the next layer's bias. This
module finds those neurons exactly and builds the shrunk network, so every method's "Layers"
column and NCR (ACNN Tables 1, 3, 5) is counted the same way.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from replib.sparsity.prune import linear_chain
from replib.sparsity.shrink import shrink_mlp


@torch.no_grad()
def fold_constant_neurons_(model: nn.Module) -> list[Tensor]:
    """Fold hidden neurons with no live input into the next bias; return the constant masks.

    Forward pass over the chain: neuron ``j`` of hidden layer ``t`` is constant when its
    incoming weights from every non-constant neuron of layer ``t - 1`` are zero; its value is
    ``relu(b_j + sum_i W[j, i] c_i)`` over the constant neurons ``i``. Its contribution
    ``W_next[:, j] * value`` is added to the next bias and its outgoing column zeroed, which
    leaves the network's function unchanged. Input features are never constant.
    """
    chain = [m for _, m in linear_chain(model)]
    const = [torch.zeros(chain[0].in_features, dtype=torch.bool, device=chain[0].weight.device)]
    values = [torch.zeros(chain[0].in_features, device=chain[0].weight.device)]
    for t in range(1, len(chain)):
        prev = chain[t - 1]
        live = ~const[-1]
        is_const = ~(prev.weight[:, live] != 0).any(dim=1)
        bias = prev.bias if prev.bias is not None else torch.zeros(prev.out_features)
        val = torch.relu(bias + prev.weight[:, const[-1]] @ values[-1][const[-1]])
        val = torch.where(is_const, val, torch.zeros_like(val))
        nxt = chain[t]
        if is_const.any():
            if nxt.bias is None:
                raise ValueError("folding a constant neuron needs a bias in the next layer")
            nxt.bias += nxt.weight[:, is_const] @ val[is_const]
            nxt.weight[:, is_const] = 0.0
        const.append(is_const)
        values.append(val)
    return const


@torch.no_grad()
def alive_neurons(model: nn.Module) -> dict[str, Tensor]:
    """Kept input indices per ``nn.Linear`` after :func:`fold_constant_neurons_` (in place).

    Backward pass: the outputs are all used; neuron ``j`` of neuron layer ``t`` is used when
    it is not constant and some used neuron of the next layer reads it with a nonzero weight.
    At least one neuron per layer is kept (the one with the largest outgoing L1 norm), so the
    network never disconnects. Returns ``{linear_name: sorted kept indices}`` for
    :func:`replib.sparsity.shrink.shrink_mlp`.
    """
    const = fold_constant_neurons_(model)
    chain = linear_chain(model)
    used_next = torch.ones(chain[-1][1].out_features, dtype=torch.bool,
                           device=chain[-1][1].weight.device)
    kept: dict[str, Tensor] = {}
    for t in range(len(chain) - 1, -1, -1):
        name, layer = chain[t]
        w = layer.weight[used_next]
        used = (w != 0).any(dim=0) & ~const[t]
        if not used.any():
            used[int(w.abs().sum(dim=0).argmax())] = True
        kept[name] = torch.nonzero(used).flatten()
        used_next = used
    return {name: kept[name] for name, _ in chain}


def shrink_sparse_mlp(model: nn.Module, check_input: Tensor | None = None,
                      atol: float = 1e-4) -> tuple[nn.Module, list[int]]:
    """The physically smaller MLP computing what ``model`` computes, and its kept counts.

    Works on a copy. With ``check_input`` the shrunk network's outputs are compared with the
    original's (a ``RuntimeError`` if they differ by more than ``atol``).
    """
    work = copy.deepcopy(model)
    kept = alive_neurons(work)
    small = shrink_mlp(work, kept)
    if check_input is not None:
        with torch.no_grad():
            model.eval()
            small.eval()
            ref, out = model(check_input), small(check_input)
        if not torch.allclose(ref, out, atol=atol, rtol=atol):
            raise RuntimeError(f"shrunk MLP differs from the sparse one by "
                               f"{float((ref - out).abs().max()):.3g}")
    return small, [int(idx.numel()) for idx in kept.values()]
