"""The inference graph: a trained network with everything training no longer changes folded.

Once training ends, a CEN model's exchange masks (which channels a branch takes from the
others) and its BatchNorm statistics are constants. ``FusedSegmenter`` rebuilds the network
for inference from a trained ``FusionSegmenter``/``LateFusionSegmenter``:

- every BatchNorm is folded into the convolution before it. Convolutions are shared but BNs
  private, so a folded encoder conv becomes one conv per branch (same FLOPs, no BN pass);
- the exchange becomes ``where(constant_mask, own, other)`` (mean of the others for M > 2);
  no boolean-mask indexing and no data-dependent shapes. AsymFusion's shuffle and shift are
  fixed slices, pads and concatenations;
- the decoder has no BN: its shared convolutions run once on the branches stacked along the
  batch dimension (one call per conv instead of M);
- the ensemble weights ``softmax(alpha)`` are constants; dropout is gone.

The outputs equal the training graph's in eval mode up to float rounding.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .models import FusionSegmenter, LateFusionSegmenter
from .models.fusion import pixel_shift, shuffle_channels
from .models.parallel import BatchNormParallel, Branches, SharedConv2d
from .models.refinenet import decode
from .models.resnet import BasicBlock, Bottleneck

Logits = list[torch.Tensor]


class FoldedConv(nn.Module):
    """A shared conv followed by private BNs, folded into one conv (weight, bias) per branch."""

    def __init__(self, conv: SharedConv2d, bns: BatchNormParallel, num_branches: int) -> None:
        super().__init__()
        base = conv.module
        self.stride, self.padding = base.stride, base.padding
        weights, biases = [], []
        for m in range(num_branches):
            bn = bns[m]
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            bias = bn.bias - bn.running_mean * scale
            if base.bias is not None:
                bias = bias + base.bias * scale
            weights.append(base.weight * scale.view(-1, 1, 1, 1))
            biases.append(bias)
        self.weight = nn.Parameter(torch.stack(weights).detach().clone(), requires_grad=False)
        self.bias = nn.Parameter(torch.stack(biases).detach().clone(), requires_grad=False)

    def forward(self, xs: Branches) -> Branches:
        return [F.conv2d(x, self.weight[m], self.bias[m], self.stride, self.padding)
                for m, x in enumerate(xs)]


def _relu(xs: Branches) -> Branches:
    return [torch.relu(x) for x in xs]


class ConstantExchange(nn.Module):
    """CEN exchange with its masks frozen: ``where(keep_m, x_m, other)``."""

    def __init__(self, block) -> None:
        super().__init__()
        bn = block.exchange_bn
        self.num = bn.num_branches
        keep = torch.stack([bn[m].weight.detach().abs() >= block.bn_threshold
                            for m in range(self.num)])
        self.register_buffer("keep", keep.view(self.num, 1, -1, 1, 1))

    def forward(self, xs: Branches) -> Branches:
        if self.num == 2:
            return [torch.where(self.keep[0], xs[0], xs[1]), torch.where(self.keep[1], xs[1], xs[0])]
        total = sum(xs)
        return [torch.where(self.keep[m], x, (total - x) / (self.num - 1)) for m, x in enumerate(xs)]


class FusedBlock(nn.Module):
    """A residual block (Bottleneck or BasicBlock) with BNs folded and fusion constants fixed."""

    def __init__(self, block, num_branches: int) -> None:
        super().__init__()
        self.bottleneck = isinstance(block, Bottleneck)
        assert self.bottleneck or isinstance(block, BasicBlock)
        multi = num_branches > 1
        self.conv1 = FoldedConv(block.conv1, block.bn1, num_branches)
        self.conv2 = FoldedConv(block.conv2, block.bn2, num_branches)
        self.conv3 = FoldedConv(block.conv3, block.bn3, num_branches) if self.bottleneck else None
        self.downsample = (FoldedConv(block.downsample[0], block.downsample[1], num_branches)
                           if block.downsample is not None else None)
        self.exchange = ConstantExchange(block) if block.fusion == "exchange" and multi else None
        self.shuffle = block.fusion == "shuffle" and multi

    def _shuffle_shift(self, xs: Branches) -> tuple[Branches, Branches, int]:
        group = xs[0].shape[1] // 5
        return shuffle_channels(xs, 4 * group), [pixel_shift(x, group) for x in xs], 4 * group

    @staticmethod
    def _add_neighbour(xs: Branches, shifts: Branches) -> Branches:
        return [x + shifts[(m + 1) % len(xs)] for m, x in enumerate(xs)]

    def forward(self, xs: Branches) -> Branches:
        out = self.conv1(xs)
        if self.bottleneck:
            out = _relu(out)
            if self.shuffle:
                out, shifts, split = self._shuffle_shift(out)
                out = _relu(self.conv2(out))
                out = shuffle_channels(self._add_neighbour(out, shifts), split, inverse=True)
            else:
                out = self.conv2(out)
                if self.exchange is not None:
                    out = self.exchange(out)
                out = _relu(out)
            out = self.conv3(out)
        else:
            if self.exchange is not None:
                out = self.exchange(out)
            out = _relu(out)
            if self.shuffle:
                out, shifts, split = self._shuffle_shift(out)
                out = self.conv2(out)
                out = shuffle_channels(self._add_neighbour(out, shifts), split, inverse=True)
            else:
                out = self.conv2(out)
        residual = self.downsample(xs) if self.downsample is not None else xs
        return [torch.relu(o + r) for o, r in zip(out, residual)]


class FusedBranchNet(nn.Module):
    """One ``FusionSegmenter`` folded for inference: normalised branch inputs -> branch logits."""

    def __init__(self, model: FusionSegmenter) -> None:
        super().__init__()
        num = model.num_branches
        self.num_branches = num
        self.stem = FoldedConv(model.conv1, model.bn1, num)
        self.layers = nn.ModuleList(
            nn.Sequential(*[FusedBlock(b, num) for b in getattr(model, f"layer{i}")])
            for i in range(1, 5))
        # The decoder has no BN: keep its (shared) modules and run them on stacked branches.
        self.decoder = model
        self.register_buffer("ensemble_weights", torch.softmax(model.alpha.detach(), dim=0))

    def forward(self, xs: Branches) -> Logits:
        x = [F.max_pool2d(torch.relu(y), 3, 2, 1) for y in self.stem(xs)]
        feats = []
        for layer in self.layers:
            x = layer(x)
            feats.append(torch.cat(x, dim=0) if self.num_branches > 1 else x[0])
        logits = decode(self.decoder, *[[f] for f in feats])[0]
        branches = list(torch.chunk(logits, self.num_branches, dim=0))
        ensemble = sum(self.ensemble_weights[m] * b for m, b in enumerate(branches))
        return branches + [ensemble]


class FusedSegmenter(nn.Module):
    """Inference graph of a trained model: raw engine-contract inputs -> M + 1 logit maps."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        model = model.eval()
        self.branch_names = list(model.branch_names)
        self.normalizer = model.normalizer
        self.modalities = list(model.modalities)
        if isinstance(model, LateFusionSegmenter):
            self.late = True
            self.nets = nn.ModuleList(FusedBranchNet(net) for net in model.nets)
        elif isinstance(model, FusionSegmenter):
            self.late = False
            self.early = model.config.arch == "early"
            self.net = FusedBranchNet(model)
        else:
            raise TypeError(f"cannot fuse {type(model).__name__}")

    @torch.no_grad()
    def forward(self, rgb: torch.Tensor, depth: torch.Tensor) -> Logits:
        xs = self.normalizer(self.modalities, rgb, depth)
        if self.late:
            outs = [net([x])[0] for net, x in zip(self.nets, xs)]
            return outs + [torch.stack(outs).mean(0)]
        if self.early:
            xs = [torch.cat(xs, dim=1)]
        return self.net(xs)


def fuse(model: nn.Module) -> FusedSegmenter:
    """The inference graph of ``model`` (which is put in eval mode)."""
    return FusedSegmenter(model).eval()
