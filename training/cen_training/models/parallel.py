"""Building blocks that run one module over a list of branches.

A multi-branch network carries a *list* of tensors, one per modality. Convolutions are shared
(one weight for every branch: ``SharedConv2d``, key ``<name>.module.weight`` as in the official
code), BatchNorms are private (``BatchNormParallel``, keys ``<name>.bn_<m>.*``).
"""
from __future__ import annotations

import torch
from torch import nn

Branches = list[torch.Tensor]


class Parallel(nn.Module):
    """Apply one module (its parameters shared) to every branch."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, xs: Branches) -> Branches:
        return [self.module(x) for x in xs]


class SharedConv2d(Parallel):
    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1,
                 bias: bool = False) -> None:
        super().__init__(nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride,
                                   padding=kernel_size // 2, bias=bias))


def conv3x3(in_ch: int, out_ch: int, stride: int = 1, bias: bool = False) -> SharedConv2d:
    return SharedConv2d(in_ch, out_ch, 3, stride=stride, bias=bias)


def conv1x1(in_ch: int, out_ch: int, stride: int = 1, bias: bool = False) -> SharedConv2d:
    return SharedConv2d(in_ch, out_ch, 1, stride=stride, bias=bias)


class BatchNormParallel(nn.Module):
    """One private BatchNorm2d per branch (``bn_0``, ``bn_1``, ...)."""

    def __init__(self, num_features: int, num_branches: int) -> None:
        super().__init__()
        self.num_branches = num_branches
        for m in range(num_branches):
            setattr(self, f"bn_{m}", nn.BatchNorm2d(num_features))

    def __getitem__(self, m: int) -> nn.BatchNorm2d:
        return getattr(self, f"bn_{m}")

    def forward(self, xs: Branches) -> Branches:
        return [self[m](x) for m, x in enumerate(xs)]


def relu(xs: Branches) -> Branches:
    # Out of place: the official in-place ReLU only matters inside RCU, handled there.
    return [torch.relu(x) for x in xs]


def add(xs: Branches, ys: Branches) -> Branches:
    return [x + y for x, y in zip(xs, ys)]
