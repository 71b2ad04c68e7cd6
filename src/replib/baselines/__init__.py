"""Methods the papers compare against that are not one of the five, run by us.

- :mod:`replib.baselines.cges`: combined group and exclusive sparsity (Yoon & Hwang 2017).
- :mod:`replib.baselines.l0hc`: L0 hard-concrete gates on neurons (Louizos et al. 2018).
- :mod:`replib.baselines.structure`: alive neurons of a sparse MLP and its shrunk network.

AutoPrune (Xiao et al. 2019) is not implemented: its gradient rules for the auxiliary
parameters are not available offline and no public code exists (see notebooks/acnn/02_mnist).
"""

# ruff: noqa: F401
from replib.baselines.cges import CGESStep, cges_prox_, layer_shares
from replib.baselines.l0hc import HardConcreteGate, L0GatedMLP
from replib.baselines.structure import alive_neurons, fold_constant_neurons_, shrink_sparse_mlp
