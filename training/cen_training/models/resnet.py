"""Multi-branch ResNet blocks: every convolution shared by the branches, every BatchNorm private.

Same structure as torchvision's ResNet (7x7/2 stem, 3x3/2 max-pool, stride on the 3x3 conv of a
Bottleneck, 1x1 conv + BN shortcut on each layer's first block, BN eps 1e-5) and the same
parameter names as the official CEN code, so official checkpoints load key for key.

Fusion inside a block (``fusion``):
- ``"exchange"`` (CEN): after the BN that follows the block's middle conv and precedes its ReLU:
  ``bn2`` of a Bottleneck, as in the paper; ``bn1`` of a BasicBlock (ResNet-18/34), the
  analogous position (the BN after the first 3x3 conv, before the ReLU that feeds the second
  conv). Which BN that is is ``block.exchange_bn``.
- ``"shuffle"`` (AsymFusion, used in the last block of each layer): channel shuffle + pixel
  shift around the middle conv, see ``Bottleneck.forward``.
- ``"none"``: plain shared-conv / private-BN block.
"""
from __future__ import annotations

from torch import nn

from .fusion import channel_exchange, exchange_masks, pixel_shift, shuffle_channels
from .parallel import BatchNormParallel, Branches, add, conv1x1, conv3x3, relu

LAYERS = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
    "resnet152": ("bottleneck", (3, 8, 36, 3)),
}


class _Block(nn.Module):
    expansion = 1
    exchange_bn_name = "bn2"

    def __init__(self, fusion: str, bn_threshold: float) -> None:
        super().__init__()
        if fusion not in ("none", "exchange", "shuffle"):
            raise ValueError(f"unknown block fusion {fusion!r}")
        self.fusion = fusion
        self.bn_threshold = bn_threshold

    @property
    def exchange_bn(self) -> BatchNormParallel:
        return getattr(self, self.exchange_bn_name)

    def _exchange(self, xs: Branches) -> Branches:
        bn = self.exchange_bn
        keep = exchange_masks([bn[m].weight for m in range(len(xs))], self.bn_threshold)
        return channel_exchange(xs, keep)

    @staticmethod
    def _shuffle_and_shifts(xs: Branches) -> tuple[Branches, Branches, int]:
        group = xs[0].shape[1] // 5
        return shuffle_channels(xs, 4 * group), [pixel_shift(x, group) for x in xs], 4 * group

    @staticmethod
    def _add_neighbour_shift(xs: Branches, shifts: Branches) -> Branches:
        # Branch m receives the shift map of the branch it took channels from (m+1).
        num = len(xs)
        return [x + shifts[(m + 1) % num] for m, x in enumerate(xs)]


class BasicBlock(_Block):
    expansion = 1
    exchange_bn_name = "bn1"

    def __init__(self, inplanes: int, planes: int, num_branches: int, stride: int = 1,
                 downsample: nn.Module | None = None, fusion: str = "none",
                 bn_threshold: float = 2e-2) -> None:
        super().__init__(fusion, bn_threshold)
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = BatchNormParallel(planes, num_branches)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = BatchNormParallel(planes, num_branches)
        self.downsample = downsample

    def forward(self, xs: Branches) -> Branches:
        multi = len(xs) > 1
        out = self.bn1(self.conv1(xs))
        if self.fusion == "exchange" and multi:
            out = self._exchange(out)
        out = relu(out)
        if self.fusion == "shuffle" and multi:
            out, shifts, split = self._shuffle_and_shifts(out)
            out = self.bn2(self.conv2(out))
            out = shuffle_channels(self._add_neighbour_shift(out, shifts), split, inverse=True)
        else:
            out = self.bn2(self.conv2(out))
        residual = self.downsample(xs) if self.downsample is not None else xs
        return relu(add(out, residual))


class Bottleneck(_Block):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, num_branches: int, stride: int = 1,
                 downsample: nn.Module | None = None, fusion: str = "none",
                 bn_threshold: float = 2e-2) -> None:
        super().__init__(fusion, bn_threshold)
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = BatchNormParallel(planes, num_branches)
        self.conv2 = conv3x3(planes, planes, stride=stride)
        self.bn2 = BatchNormParallel(planes, num_branches)
        self.conv3 = conv1x1(planes, planes * 4)
        self.bn3 = BatchNormParallel(planes * 4, num_branches)
        self.downsample = downsample

    def forward(self, xs: Branches) -> Branches:
        multi = len(xs) > 1
        out = relu(self.bn1(self.conv1(xs)))
        if self.fusion == "shuffle" and multi:
            # AsymFusion: shuffle (shifts from the pre-shuffle features) -> conv2 -> bn2 ->
            # relu -> add the neighbour's shift map -> shuffle back -> conv3.
            out, shifts, split = self._shuffle_and_shifts(out)
            out = relu(self.bn2(self.conv2(out)))
            out = shuffle_channels(self._add_neighbour_shift(out, shifts), split, inverse=True)
        else:
            out = self.bn2(self.conv2(out))
            if self.fusion == "exchange" and multi:
                out = self._exchange(out)
            out = relu(out)
        out = self.bn3(self.conv3(out))
        residual = self.downsample(xs) if self.downsample is not None else xs
        return relu(add(out, residual))


def make_layer(block: type[_Block], inplanes: int, planes: int, num_blocks: int,
               num_branches: int, stride: int, fusion: str, bn_threshold: float) -> nn.Sequential:
    """One ResNet stage. ``fusion`` "exchange" goes in every block, "shuffle" only in the last
    (index ``num_blocks - 1``, never the first block, as in the official AsymFusion code)."""
    downsample = None
    if stride != 1 or inplanes != planes * block.expansion:
        downsample = nn.Sequential(conv1x1(inplanes, planes * block.expansion, stride=stride),
                                   BatchNormParallel(planes * block.expansion, num_branches))
    blocks = []
    for i in range(num_blocks):
        if fusion == "shuffle":
            block_fusion = "shuffle" if (i == num_blocks - 1 and i > 0) else "none"
        else:
            block_fusion = fusion
        blocks.append(block(inplanes if i == 0 else planes * block.expansion, planes, num_branches,
                            stride=stride if i == 0 else 1,
                            downsample=downsample if i == 0 else None, fusion=block_fusion,
                            bn_threshold=bn_threshold))
    return nn.Sequential(*blocks)
