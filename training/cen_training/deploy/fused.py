"""The inference graph: a trained network with everything training no longer changes folded.

Once training ends, a CEN model's exchange masks (which channels a branch takes from the
others) and its BatchNorm statistics are constants. ``FusedSegmenter`` rebuilds the network
for inference from a trained ``FusionSegmenter``/``LateFusionSegmenter``:

- every BatchNorm is folded into the convolution before it. Convolutions are shared but BNs
  private, so a folded encoder conv becomes one conv per branch (same FLOPs, no BN pass);
- a depth input that the normalisation repeats to 3 channels enters as 1 channel, and the stem
  convolution of its branch gets its weights summed over the 3 input channels (the same
  result; no Expand, and a third of that convolution's work);
- the exchange is constant: ``own * keep + other * (1 - keep)`` per channel (other = the mean of
  the other branches for M > 2), written as 1x1 depthwise convolutions and additions, and
  left out of blocks where every channel keeps its own value. No boolean-mask indexing, no
  data-dependent shapes, and, unlike ``where``, operators that ONNX Runtime runs in its
  blocked CPU layout (NCHWc) and fuses with the following addition and ReLU, instead of
  converting both inputs out of that layout and back around every exchange. AsymFusion's
  shuffle and shift are fixed slices, pads and concatenations;
- the decoder has no BN: its shared convolutions run once on the branches stacked along the
  batch dimension (one call per conv instead of M). Its chained-residual-pooling 5x5 max-pools
  run as a 1x5 then a 5x1 max-pool: the same maximum with 10 comparisons per output instead
  of 25 (about twice as fast in PyTorch's and in ONNX Runtime's int8 kernels, the same in
  ONNX Runtime's fp32 one);
- the ensemble weights ``softmax(alpha)`` are constants; dropout is gone.

The outputs equal the training graph's in eval mode up to float rounding.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..models import FusionSegmenter, LateFusionSegmenter
from ..models.fusion import pixel_shift, shuffle_channels
from ..models.parallel import BatchNormParallel, Branches, Parallel, SharedConv2d
from ..models.refinenet import CRPBlock, RefineNetDecoder
from ..models.resnet import BasicBlock, Bottleneck

Logits = list[torch.Tensor]


class FoldedConv(nn.Module):
    """A shared conv followed by private BNs, folded into one conv (weight, bias) per branch.

    ``input_groups[m]``, when given, lists branch m's input channels as ``(count, repeated)``
    pieces in order: a repeated piece is one channel that the training graph repeated
    ``count`` times, so its weights are summed over those channels.
    """

    def __init__(self, conv: SharedConv2d, bns: BatchNormParallel, num_branches: int,
                 input_groups: Optional[list[Optional[list[tuple[int, bool]]]]] = None) -> None:
        super().__init__()
        base = conv.module
        self.stride, self.padding = base.stride, base.padding
        for m in range(num_branches):
            bn = bns[m]
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            bias = bn.bias - bn.running_mean * scale
            if base.bias is not None:
                bias = bias + base.bias * scale
            weight = base.weight * scale.view(-1, 1, 1, 1)
            if input_groups is not None and input_groups[m] is not None:
                weight = _sum_repeated_inputs(weight, input_groups[m])
            self.register_buffer(f"weight_{m}", weight.detach().clone())
            self.register_buffer(f"bias_{m}", bias.detach().clone())

    def forward(self, xs: Branches) -> Branches:
        return [F.conv2d(x, getattr(self, f"weight_{m}"), getattr(self, f"bias_{m}"),
                         self.stride, self.padding) for m, x in enumerate(xs)]


def _sum_repeated_inputs(weight: torch.Tensor, groups: list[tuple[int, bool]]) -> torch.Tensor:
    parts, start = [], 0
    for count, repeated in groups:
        piece = weight[:, start:start + count]
        parts.append(piece.sum(dim=1, keepdim=True) if repeated else piece)
        start += count
    if start != weight.shape[1]:
        raise ValueError(f"input groups cover {start} channels, the conv has {weight.shape[1]}")
    return torch.cat(parts, dim=1)


def _relu(xs: Branches) -> Branches:
    return [torch.relu(x) for x in xs]


class ConstantExchange(nn.Module):
    """CEN exchange with its masks frozen: branch m's channel c is ``x_m`` where it keeps its
    own value, else the (mean of the) other branches' value, as per-channel 0/1 weights
    (1x1 depthwise convolutions; see the module docstring for why not ``where``)."""

    def __init__(self, block) -> None:
        super().__init__()
        bn = block.exchange_bn
        self.num = bn.num_branches
        keep = torch.stack([bn[m].weight.detach().abs() >= block.bn_threshold
                            for m in range(self.num)]).float()
        channels = keep.shape[1]
        # A branch that keeps every channel passes its input through untouched.
        self.exchanging = [m for m in range(self.num) if not bool(keep[m].all())]
        self.register_buffer("own", keep.view(self.num, channels, 1, 1, 1))
        others = (1.0 - keep) / (self.num - 1)
        self.register_buffer("others", others.view(self.num, channels, 1, 1, 1))

    def forward(self, xs: Branches) -> Branches:
        out = list(xs)
        channels = xs[0].shape[1]
        for m in self.exchanging:
            total = F.conv2d(xs[m], self.own[m], groups=channels)
            for j, x in enumerate(xs):
                if j != m:
                    total = total + F.conv2d(x, self.others[m], groups=channels)
            out[m] = total
        return out


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


class SeparableMaxPool(nn.Module):
    """A k x k max-pool with stride 1 as a 1 x k then a k x 1 max-pool (exactly the same: the
    maximum over a window is the maximum over its rows' maxima, and padding never wins)."""

    def __init__(self, pool: nn.MaxPool2d) -> None:
        super().__init__()
        k, stride, pad = (v if isinstance(v, int) else v[0]
                          for v in (pool.kernel_size, pool.stride, pool.padding))
        if stride != 1 or pool.dilation not in (1, (1, 1)) or pool.ceil_mode:
            raise ValueError("only stride-1, undilated max-pools are separable here")
        self.kernel, self.padding = k, pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(x, (1, self.kernel), 1, (0, self.padding))
        return F.max_pool2d(x, (self.kernel, 1), 1, (self.padding, 0))


class _SeparablePoolingCRP(CRPBlock):
    """A chained-residual-pooling block sharing ``block``'s convolutions, pooling separably."""

    def __init__(self, block: CRPBlock) -> None:
        nn.Module.__init__(self)  # CRPBlock.__init__ would build new convolutions
        self.num_stages = block.num_stages
        for name, module in block.named_children():
            self.add_module(name, module)
        self.maxpool = Parallel(SeparableMaxPool(block.maxpool.module))


class _SeparablePoolingDecoder(RefineNetDecoder):
    """``decoder``'s modules (shared, not copied), except that each chained-residual-pooling
    block gets separable max-pools."""

    def __init__(self, decoder: RefineNetDecoder) -> None:
        nn.Module.__init__(self)  # RefineNetDecoder.__init__ would build new layers
        for name, child in decoder.named_children():
            if isinstance(child, nn.Sequential) and isinstance(child[0], CRPBlock):
                child = nn.Sequential(_SeparablePoolingCRP(child[0]))
            self.add_module(name, child)


class FusedBranchNet(nn.Module):
    """One ``FusionSegmenter`` folded for inference: normalised branch inputs -> branch logits.

    ``input_groups``: per branch, how its inputs pack into the stem's channels (see
    ``FoldedConv``), or None where they are the training graph's.
    """

    def __init__(self, model: FusionSegmenter,
                 input_groups: Optional[list[Optional[list[tuple[int, bool]]]]] = None) -> None:
        super().__init__()
        num = model.num_branches
        self.num_branches = num
        self.stem = FoldedConv(model.conv1, model.bn1, num, input_groups)
        self.layers = nn.ModuleList(
            nn.Sequential(*[FusedBlock(b, num) for b in layer]) for layer in model.layers())
        # The decoder has no BN: keep its (shared) modules and run them on stacked branches.
        self.decoder = _SeparablePoolingDecoder(model.decoder)
        self.register_buffer("ensemble_weights", torch.softmax(model.alpha.detach(), dim=0))

    def forward(self, xs: Branches) -> Logits:
        x = [F.max_pool2d(torch.relu(y), 3, 2, 1) for y in self.stem(xs)]
        feats = []
        for layer in self.layers:
            x = layer(x)
            feats.append(torch.cat(x, dim=0) if self.num_branches > 1 else x[0])
        logits = self.decoder(*[[f] for f in feats])[0]
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
        # Linear depth normalisation repeats one channel: feed it once (see FoldedConv).
        repeats = self.normalizer.depth_channels
        self.depth_once = self.normalizer.depth_mode == "linear" and repeats > 1
        pieces = {m: (repeats if m == "depth" else 3, m == "depth" and self.depth_once)
                  for m in self.modalities}
        if isinstance(model, LateFusionSegmenter):
            self.late = True
            self.nets = nn.ModuleList(FusedBranchNet(net, [[pieces[m]]])
                                      for net, m in zip(model.nets, self.modalities))
        elif isinstance(model, FusionSegmenter):
            self.late = False
            self.early = model.config.arch == "early"
            groups = ([[pieces[m] for m in self.modalities]] if self.early
                      else [[pieces[m]] for m in self.modalities])
            self.net = FusedBranchNet(model, groups)
        else:
            raise TypeError(f"cannot fuse {type(model).__name__}")

    def _inputs(self, rgb: torch.Tensor, depth: torch.Tensor) -> Branches:
        if not self.depth_once:
            return self.normalizer(self.modalities, rgb, depth)
        n = self.normalizer
        convert = {"rgb": lambda: n.rgb(rgb), "normals": lambda: n.normals(depth),
                   "depth": lambda: depth.unsqueeze(1).float() * n.depth_a + n.depth_b}
        return [convert[m]() for m in self.modalities]

    @torch.no_grad()
    def forward(self, rgb: torch.Tensor, depth: torch.Tensor) -> Logits:
        xs = self._inputs(rgb, depth)
        if self.late:
            outs = [net([x])[0] for net, x in zip(self.nets, xs)]
            return outs + [torch.stack(outs).mean(0)]
        if self.early:
            xs = [torch.cat(xs, dim=1)]
        return self.net(xs)


def fuse(model: nn.Module) -> FusedSegmenter:
    """The inference graph of ``model`` (which is put in eval mode)."""
    return FusedSegmenter(model).eval()
