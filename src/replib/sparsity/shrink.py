"""Physical removal of pruned neurons and channels: a genuinely smaller dense model.

Masks only zero weights; FLOPs, parameter counts and latency fall only when the zeroed rows,
columns and channels are cut out of the tensors. Two cases:

- MLPs (ACNN): :func:`shrink_mlp` slices the ``nn.Linear`` layers to the kept neurons and, when
  input features are dropped, turns the first layer into an :class:`InputSelectLinear`.
- Conv nets (network slimming, proximal NS): :func:`shrink_channels` removes the channels
  switched off by BN channel masks, using Torch-Pruning's dependency graph (DepGraph) for
  residual additions and DenseNet concatenations.

Both functions work on a deep copy and return it; the shrunk model computes exactly what the
*masked* model computes (outgoing weights of dropped neurons zeroed, via
:func:`~replib.sparsity.prune.neuron_masks`; BN gamma and beta of dropped channels zeroed, via
:func:`~replib.sparsity.prune.zero_bn_channels_`).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping

import torch
import torch_pruning as tp
from torch import Tensor, nn

from replib.sparsity.masks import remove_masks
from replib.sparsity.prune import linear_chain, zero_bn_channels_

logger = logging.getLogger(__name__)

_BN = nn.modules.batchnorm._BatchNorm


class InputSelectLinear(nn.Linear):
    """``nn.Linear`` that reads only the input features ``input_idx`` (ACNN's kept inputs).

    Still an ``nn.Linear`` (so ``hidden_layers()``, FLOP counters and pruning code see it as
    one), with ``in_features = len(input_idx)``; the model keeps taking full-size inputs.
    """

    def __init__(
        self, input_idx: Tensor, out_features: int, bias: bool = True, device=None, dtype=None
    ) -> None:
        super().__init__(int(input_idx.numel()), out_features, bias, device, dtype)
        self.register_buffer("input_idx", input_idx.detach().clone().long().to(device))

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.index_select(-1, self.input_idx))


class InputSelectBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` that reads only the input channels ``input_idx``.

    Plays the role of the network-slimming code's ``channel_selection`` layer in
    pre-activation nets (BN -> ReLU -> conv on a shared input), under the BN's own name.
    """

    def __init__(
        self,
        input_idx: Tensor,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__(
            int(input_idx.numel()), eps, momentum, affine, track_running_stats, device, dtype
        )
        self.register_buffer("input_idx", input_idx.detach().clone().long().to(device))

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.index_select(1, self.input_idx))


def _select_inputs_linear(layer: nn.Linear, idx: Tensor) -> InputSelectLinear:
    """``layer`` restricted to the input features ``idx`` (composed if it already selects)."""
    w = layer.weight
    source = layer.input_idx[idx.to(w.device)] if isinstance(layer, InputSelectLinear) else idx
    new = InputSelectLinear(
        source.to(w.device),
        layer.out_features,
        layer.bias is not None,
        device=w.device,
        dtype=w.dtype,
    )
    with torch.no_grad():
        new.weight.copy_(w[:, idx.to(w.device)])
        if layer.bias is not None:
            new.bias.copy_(layer.bias)
    new.weight.requires_grad_(w.requires_grad)
    new.train(layer.training)
    return new


def _select_inputs_bn(bn: nn.BatchNorm2d, keep: Tensor) -> InputSelectBatchNorm2d:
    """``bn`` restricted to its channels ``keep``, selecting them from its full input."""
    dev = bn.weight.device if bn.affine else bn.running_mean.device
    keep = keep.to(dev)
    source = bn.input_idx[keep] if isinstance(bn, InputSelectBatchNorm2d) else keep
    new = InputSelectBatchNorm2d(
        source,
        bn.eps,
        bn.momentum,
        bn.affine,
        bn.track_running_stats,
        device=dev,
        dtype=bn.weight.dtype,
    )
    with torch.no_grad():
        if bn.affine:
            new.weight.copy_(bn.weight[keep])
            new.bias.copy_(bn.bias[keep])
        if bn.track_running_stats:
            new.running_mean.copy_(bn.running_mean[keep])
            new.running_var.copy_(bn.running_var[keep])
            new.num_batches_tracked.copy_(bn.num_batches_tracked)
    new.train(bn.training)
    return new


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


@torch.no_grad()
def _slice_linear_(
    layer: nn.Linear, rows: Tensor | None = None, cols: Tensor | None = None
) -> None:
    w = layer.weight
    if rows is not None:
        rows = rows.to(w.device)
        w = w[rows]
        if layer.bias is not None:
            layer.bias = nn.Parameter(
                layer.bias[rows].clone(), requires_grad=layer.bias.requires_grad
            )
        layer.out_features = int(rows.numel())
    if cols is not None:
        w = w[:, cols.to(w.device)]
        layer.in_features = int(cols.numel())
    layer.weight = nn.Parameter(w.clone(), requires_grad=layer.weight.requires_grad)


def shrink_mlp(model: nn.Module, kept: Mapping[str, Tensor]) -> nn.Module:
    """Rebuild the MLP with only the kept neurons (ACNN: "Layers" = kept inputs-hidden-hidden).

    ``kept`` maps an ``nn.Linear`` name to the kept indices of its *input* features, as returned
    by :func:`~replib.sparsity.prune.prune_neurons`: for a hidden layer, row ``j`` (and bias
    ``j``) of the previous layer and column ``j`` of this one go together; for the first layer
    (dropped input features) only columns go and the layer becomes an
    :class:`InputSelectLinear` that picks the kept features, so the shrunk model still takes
    full-size inputs and ``hidden_layers()`` still lists every layer. Activations between the layers
    must be elementwise (ReLU in every ``replib`` MLP). Mask parametrizations are baked in first.
    """
    new = copy.deepcopy(model)
    remove_masks(new, leave_masked=True)
    chain = linear_chain(new)
    names = [n for n, _ in chain]
    first = None
    for name, idx in kept.items():
        if name not in names:
            raise KeyError(f"{name!r} is not one of the Linear layers {names}")
        idx = torch.as_tensor(idx).long().flatten()
        if idx.numel() == 0:
            raise ValueError(f"{name}: keeping no input would empty the layer")
        i = names.index(name)
        if i == 0:
            first = idx
        else:
            _slice_linear_(chain[i][1], cols=idx)
            _slice_linear_(chain[i - 1][1], rows=idx)
    if first is not None:
        _set_submodule(new, names[0], _select_inputs_linear(chain[0][1], first))
    return new


# --------------------------------------------------------------------------- conv nets
# Unary ops through which an exactly-zero channel stays exactly zero (autograd node names):
# ReLU / ReLU6, max and average pooling, spatial means, flatten / view / reshape, copies.
_ZERO_PRESERVING = (
    "relu",
    "hardtanh",
    "threshold",
    "maxpool",
    "avgpool",
    "adaptiveavgpool",
    "adaptivemaxpool",
    "mean",
    "view",
    "reshape",
    "unsafeview",
    "clone",
)


def _op_name(node) -> str:
    fn = node.grad_fn
    if fn is not None and hasattr(fn, "name"):
        return fn.name().lower()
    return type(node.module).__name__.lower()


def _is_layer(node) -> bool:
    return isinstance(node.module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))


def _preserves_zero(node) -> bool:
    return (
        not _is_layer(node)
        and len(node.inputs) == 1
        and _op_name(node).startswith(_ZERO_PRESERVING)
    )


def _is_add(node) -> bool:
    return not _is_layer(node) and _op_name(node).startswith("addbackward")


def _unsupported(node) -> bool:
    """Ops whose channel index mapping DepGraph gets wrong; groups through them are left alone.

    Spatial slicing and channel padding (option-A ResNet shortcuts,
    ``F.pad(x[:, :, ::2, ::2], ...)``) and the input selection of an already shrunk model.
    """
    return isinstance(node.module, tp.ops._SliceOp) or _op_name(node).startswith(
        ("constantpad", "pad", "indexselect")
    )


def _data_inputs(node) -> list:
    """Input nodes carrying activations (drops e.g. the weight transpose feeding ``addmm``)."""
    return [i for i in node.inputs if i.inputs or _is_layer(i) or isinstance(i.module, _BN)]


_IN_CHANNEL_FNS = (tp.prune_conv_in_channels, tp.prune_linear_in_channels)


class _ChannelRemover:
    """State of one :func:`shrink_channels` call (graph, masks and index bookkeeping)."""

    def __init__(self, model: nn.Module, masks: Mapping[str, Tensor], example_input) -> None:
        self.model = model
        self.masks = {n: m.detach().bool().cpu() for n, m in masks.items()}
        with torch.enable_grad():
            self.dg = tp.DependencyGraph().build_dependency(
                model, example_inputs=example_input, verbose=False
            )
        self.name_of = {m: n for n, m in model.named_modules()}
        self.bns = {n: model.get_submodule(n) for n in self.masks}
        # alive[n][i] = original index of the channel now at position i of BN n
        self.alive = {n: list(range(m.numel())) for n, m in self.masks.items()}

    def is_masked(self, module: nn.Module, local: int) -> bool:
        name = self.name_of.get(module)
        if name not in self.masks or not 0 <= local < len(self.alive[name]):
            return False  # a BN without a mask keeps all its channels
        return not bool(self.masks[name][self.alive[name][local]])

    def _zero(self, node, root: int, bn_local: dict, seen: dict) -> bool:
        """Is the channel ``root`` of ``node``'s output exactly zero in the masked model?"""
        key = id(node)
        if key in seen:
            return seen[key]
        seen[key] = False  # cycles cannot occur in a forward graph; guard anyway
        if isinstance(node.module, _BN):
            local = bn_local.get(node.module)
            result = local is not None and self.is_masked(node.module, local)
        elif _preserves_zero(node):
            result = self._zero(node.inputs[0], root, bn_local, seen)
        elif _is_add(node) and node.inputs:
            result = all(self._zero(i, root, bn_local, seen) for i in _data_inputs(node))
        else:
            result = False
        seen[key] = result
        return result

    def removable(self, group) -> list[int]:
        """Root channels whose removal leaves the masked model's function unchanged.

        Rule: (a) every BN coupled to the channel has it masked (gamma = beta = 0), and (b)
        every conv/linear whose *input* channel would be cut reads an exactly-zero channel,
        traced backwards through ReLU / pooling / reshapes / residual additions to masked BNs.
        """
        roots = sorted({r for item in group.items for r in item.root_idxs})
        if any(_unsupported(item.dep.target) for item in group.items):
            return []
        ok = dict.fromkeys(roots, True)
        bn_local: dict[int, dict] = {r: {} for r in roots}
        for item in group.items:
            module = item.dep.target.module
            if isinstance(module, _BN):
                for i, r in zip(item.idxs, item.root_idxs):
                    bn_local[r][module] = i
                    if not self.is_masked(module, i):
                        ok[r] = False
        for item in group.items:
            module = item.dep.target.module
            if item.dep.handler not in _IN_CHANNEL_FNS:
                continue
            node = self.dg.module2node[module]
            for r in set(item.root_idxs):
                inputs = _data_inputs(node)
                if ok[r] and not (
                    inputs and all(self._zero(i, r, bn_local[r], {}) for i in inputs)
                ):
                    ok[r] = False
        return [r for r in roots if ok[r]]

    def _would_empty(self, group) -> bool:
        return not self.dg.check_pruning_group(group)

    def remove_coupled(self) -> int:
        """Step A: cut channels with their DepGraph group where the rule allows.

        Returns the number of BN channels removed.
        """
        removed = 0
        for name, bn in self.bns.items():
            cand = [i for i, o in enumerate(self.alive[name]) if not self.masks[name][o]]
            if not cand:
                continue
            group = self.dg.get_pruning_group(bn, tp.prune_batchnorm_out_channels, cand)
            roots = self.removable(group)
            while roots:
                group = self.dg.get_pruning_group(bn, tp.prune_batchnorm_out_channels, roots)
                if not self._would_empty(group):
                    break
                roots = roots[:-1]
            if not roots:
                continue
            drops: dict[str, set[int]] = {}
            for item in group.items:
                module = item.dep.target.module
                if isinstance(module, _BN) and self.name_of.get(module) in self.alive:
                    drops.setdefault(self.name_of[module], set()).update(item.idxs)
            for bn_name, drop in drops.items():
                alive = self.alive[bn_name]
                alive[:] = [o for i, o in enumerate(alive) if i not in drop]
                removed += len(drop)
            group.prune()
        return removed

    def _consumers(self, node, found: list, seen: set) -> bool:
        """Collect the conv/linear layers fed by ``node`` through zero-preserving unary ops."""
        for out in node.outputs:
            if id(out) in seen:
                continue
            seen.add(id(out))
            module = out.module
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                if isinstance(module, nn.Conv2d) and module.groups != 1:
                    return False
                found.append(module)
            elif _preserves_zero(out):
                if not self._consumers(out, found, seen):
                    return False
            else:
                return False
        return bool(found)

    def select_locally(self) -> int:
        """Step B: BN -> ReLU -> conv chains whose BN input is shared (pre-activation nets).

        A masked channel of such a BN outputs exactly 0 into its convs, so it is removed from
        this BN and from the input channels of those convs only; the BN becomes an
        :class:`InputSelectBatchNorm2d` that picks the kept channels out of the shared input
        tensor (the job of the ``channel_selection`` layer in the network-slimming code).
        """
        removed = 0
        for name, bn in self.bns.items():
            drop = [i for i, o in enumerate(self.alive[name]) if not self.masks[name][o]]
            if not drop:
                continue
            consumers: list[nn.Module] = []
            if not self._consumers(self.dg.module2node[bn], consumers, set()):
                continue
            width = bn.num_features
            if any(
                (c.in_channels if isinstance(c, nn.Conv2d) else c.in_features) != width
                for c in consumers
            ):
                continue
            keep = [i for i in range(width) if i not in set(drop)]
            for c in consumers:
                if isinstance(c, nn.Conv2d):
                    tp.prune_conv_in_channels(c, drop)
                else:
                    tp.prune_linear_in_channels(c, drop)
            self.alive[name] = [self.alive[name][i] for i in keep]
            # the BN's input has exactly the BN's current channels, so positions are ``keep``
            _set_submodule(self.model, name, _select_inputs_bn(bn, torch.tensor(keep)))
            removed += len(drop)
        return removed

    def run(self, select_inputs: bool) -> tuple[int, int]:
        """Both steps; returns the BN channels removed by step A and by step B."""
        coupled = self.remove_coupled()
        local = self.select_locally() if select_inputs else 0
        return coupled, local


def shrink_channels(
    model: nn.Module,
    channel_masks: Mapping[str, Tensor],
    example_input,
    select_inputs: bool = True,
    verify: bool = True,
    atol: float = 1e-4,
) -> nn.Module:
    """Remove the channels switched off by BN channel masks; returns a smaller deep copy.

    The masked model is the model with BN gamma and beta zeroed on masked channels
    (:func:`~replib.sparsity.prune.zero_bn_channels_`); the result computes the same function
    in eval mode, with fewer parameters and FLOPs. Rule for coupled channels (Torch-Pruning
    groups: residual additions, concatenations):

    1. A channel is cut from the whole coupled group (producer convs, BNs, consumer convs)
       only if *every* BN in the group masks it and every conv/linear whose input loses it
       reads an exactly-zero channel. So on a residual stream all BNs adding into it must
       agree, and a stream read by a BN-free shortcut conv is never cut.
    2. With ``select_inputs``, a BN whose output feeds only convs (through ReLU), as in
       pre-activation ResNets and DenseNets, additionally drops its remaining masked channels
       locally: the BN and its convs' input channels shrink, and the BN becomes an
       :class:`InputSelectBatchNorm2d` that picks the kept channels out of the shared input.

    No layer is emptied: BN masks from :func:`~replib.sparsity.prune.bn_channel_masks` keep at
    least one channel each, and a group that would empty a BN-free conv is cut short. Mask
    parametrizations are baked into the copy first. With ``verify`` the copy's output on
    ``example_input`` is checked against the masked model's (eval mode, tolerance ``atol``).
    """
    new = copy.deepcopy(model)
    remove_masks(new, leave_masked=True)
    training = new.training
    new.eval()
    zero_bn_channels_(new, channel_masks)
    with torch.no_grad():
        reference = new(example_input) if verify else None
    remover = _ChannelRemover(new, channel_masks, example_input)
    coupled, local = remover.run(select_inputs)
    total = sum(int((~m).sum()) for m in channel_masks.values())
    logger.info(
        "shrink_channels: %d masked BN channels; %d cut with their coupled layers, "
        "%d selected locally",
        total,
        coupled,
        local,
    )
    if verify:
        with torch.no_grad():
            out = new(example_input)
        if out.shape != reference.shape or not torch.allclose(out, reference, atol=atol, rtol=atol):
            raise RuntimeError(
                "shrunk model does not reproduce the masked model "
                f"(max diff {float((out - reference).abs().max()):.3g})"
            )
    new.train(training)
    return new
