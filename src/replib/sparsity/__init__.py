"""Sparsity core shared by the five papers: penalties, proximal operators, sparse optimizers,
masks, pruning strategies and physical removal of pruned neurons and channels."""

# A plain list of re-exports: every name imported here is public API.
# ruff: noqa: F401

from replib.sparsity.masks import (
    HardMask,
    RelaxedMask,
    add_relaxed_masks,
    apply_hard_masks,
    current_masks,
    mask_parameters,
    mask_penalty,
    network_parameters,
    project_masks_,
    remove_masks,
    rewind,
    snapshot,
    threshold_masks,
)
from replib.sparsity.optim import (
    IRDA,
    RDA,
    MaskedSGD,
    ProxAdam,
    ProximalSlimming,
    ProxSGD,
    SqrtProxSGD,
    apply_l1_prox,
    inverse_sqrt_lr,
    l1_param_groups,
    rda_step,
    sqrt_prox_threshold,
)
from replib.sparsity.penalties import (
    exclusive_l12,
    group_l21,
    l0_exp,
    l0_exp_grad,
    l1,
    l1_grad,
    l2,
    l2_grad,
    log_reg,
    log_reg_grad,
)
from replib.sparsity.prox import (
    exclusive_l12_prox,
    exclusive_l12_prox_,
    group_soft_threshold,
    group_soft_threshold_,
    project_box,
    project_box_,
    soft_threshold,
    soft_threshold_,
)
from replib.sparsity.prune import (
    bn_channel_masks,
    imp_round,
    iterative_magnitude_pruning,
    magnitude_masks,
    neuron_l1_scores,
    neuron_masks,
    prune_neurons,
    zero_bn_channels_,
)
from replib.sparsity.shrink import (
    InputSelectBatchNorm2d,
    InputSelectLinear,
    shrink_channels,
    shrink_mlp,
)
