"""The RefineNet decoder of the official CEN / AsymFusion code, branch-parallel.

``official``: 3x3 convolutions in every position (dimred, RCU, CRP, joint), widths 512 at the
top stage and 256 below, as the official code has it (heavy: most of the 1.1 TFLOP of a
ResNet-50 CEN at 480x640). ``light``: the original Light-Weight RefineNet choice of 1x1
convolutions in those positions, and half the widths (256 / 128), for robots. Same topology
and parameter names in both; the classifier is a 3x3 conv with bias in both.

Stage (for l4, then l3, l2, l1): ``dimred -> RCU(2 blocks) [-> joint 3x3 -> + upsampled
previous] -> relu -> CRP(4) -> RCU(3 blocks) -> joint -> bilinear up (align_corners=True)``;
the last stage has no joint conv and no upsampling. Dropout(0.5) on l4, l3 and the final
features (training only). Output stride 4.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from .parallel import Branches, Parallel, SharedConv2d, add, relu

DECODERS = ("official", "light")
# The official numbering of the stages that take a skip input (from l3, l2, l1).
REFINE_STAGES = (2, 3, 4)
_RCU_SUFFIXES = ("_conv", "_conv_relu_varout_dimred")


class RCUBlock(nn.Module):
    """Residual conv units. Because the official ReLU is in place, the skip carries the relu'd
    input: ``block(x) = relu(x) + conv_b(relu(conv_a(relu(x))))``."""

    def __init__(self, in_ch: int, out_ch: int, num_blocks: int, num_stages: int, k: int) -> None:
        super().__init__()
        self.num_blocks, self.num_stages = num_blocks, num_stages
        for i in range(num_blocks):
            for j in range(num_stages):
                setattr(self, f"{i + 1}{_RCU_SUFFIXES[j]}",
                        SharedConv2d(in_ch if (i == 0 and j == 0) else out_ch, out_ch, k,
                                     bias=(j == 0)))

    def forward(self, xs: Branches) -> Branches:
        for i in range(self.num_blocks):
            xs = relu(xs)
            residual = xs
            for j in range(self.num_stages):
                if j > 0:
                    xs = relu(xs)
                xs = getattr(self, f"{i + 1}{_RCU_SUFFIXES[j]}")(xs)
            xs = add(xs, residual)
        return xs


class CRPBlock(nn.Module):
    """Chained residual pooling: ``x + sum_i conv_i(maxpool5x5(... ))``, chained."""

    def __init__(self, in_ch: int, out_ch: int, num_stages: int, k: int) -> None:
        super().__init__()
        self.num_stages = num_stages
        for i in range(num_stages):
            setattr(self, f"{i + 1}_outvar_dimred",
                    SharedConv2d(in_ch if i == 0 else out_ch, out_ch, k))
        self.maxpool = Parallel(nn.MaxPool2d(kernel_size=5, stride=1, padding=2))

    def forward(self, xs: Branches) -> Branches:
        top = xs
        for i in range(self.num_stages):
            top = getattr(self, f"{i + 1}_outvar_dimred")(self.maxpool(top))
            xs = add(xs, top)
        return xs


def upsample_to(xs: Branches, like: Branches) -> Branches:
    size = like[0].shape[-2:]
    return [F.interpolate(x, size=size, mode="bilinear", align_corners=True) for x in xs]


def decoder_widths(decoder: str) -> tuple[int, int]:
    if decoder not in DECODERS:
        raise ValueError(f"unknown decoder {decoder!r} (choose from {', '.join(DECODERS)})")
    return (512, 256) if decoder == "official" else (256, 128)


class RefineNetDecoder(nn.Module):
    """The decoder's layers under their official names (``clf_conv``, ``adapt_stage1_b``, ...),
    in the official order; ``kind`` is one of ``DECODERS``. ``forward(l1, l2, l3, l4)`` maps
    the encoder's four layer outputs (branch lists) to each branch's logits at stride 4.

    The official code keeps these layers on the segmenter itself, so an official state dict
    names them without the ``decoder.`` prefix this module adds (see
    ``cen_training.checkpoint.flat_decoder_keys``).
    """

    def __init__(self, encoder_channels: tuple[int, int, int, int], num_classes: int,
                 kind: str = "official") -> None:
        super().__init__()
        top, width = decoder_widths(kind)
        k = 3 if kind == "official" else 1
        c1, c2, c3, c4 = encoder_channels
        self.dropout = Parallel(nn.Dropout(p=0.5))
        # Stage 1 (l4): no skip input yet.
        self.p_ims1d2_outl1_dimred = SharedConv2d(c4, top, k)
        self.adapt_stage1_b = nn.Sequential(RCUBlock(top, top, 2, 2, k))
        self.mflow_conv_g1_pool = nn.Sequential(CRPBlock(top, top, 4, k))
        self.mflow_conv_g1_b = nn.Sequential(RCUBlock(top, top, 3, 2, k))
        self.mflow_conv_g1_b3_joint_varout_dimred = SharedConv2d(top, width, k)
        # Stages 2, 3, 4 (l3, l2, l1): the skip input joins the upsampled previous stage.
        for stage, channels in zip(REFINE_STAGES, (c3, c2, c1)):
            self.add_module(f"p_ims1d2_outl{stage}_dimred", SharedConv2d(channels, width, k))
            self.add_module(f"adapt_stage{stage}_b", nn.Sequential(RCUBlock(width, width, 2, 2, k)))
            self.add_module(f"adapt_stage{stage}_b2_joint_varout_dimred",
                            SharedConv2d(width, width, k))
            self.add_module(f"mflow_conv_g{stage}_pool",
                            nn.Sequential(CRPBlock(width, width, 4, k)))
            self.add_module(f"mflow_conv_g{stage}_b",
                            nn.Sequential(RCUBlock(width, width, 3, 2, k)))
            if stage != REFINE_STAGES[-1]:
                self.add_module(f"mflow_conv_g{stage}_b3_joint_varout_dimred",
                                SharedConv2d(width, width, k))
        self.clf_conv = SharedConv2d(width, num_classes, 3, bias=True)

    def forward(self, l1: Branches, l2: Branches, l3: Branches, l4: Branches) -> Branches:
        l4 = self.dropout(l4)
        l3 = self.dropout(l3)
        x = self.p_ims1d2_outl1_dimred(l4)
        x = relu(self.adapt_stage1_b(x))
        x = self.mflow_conv_g1_b(self.mflow_conv_g1_pool(x))
        x = upsample_to(self.mflow_conv_g1_b3_joint_varout_dimred(x), l3)
        for stage, skip, nxt in zip(REFINE_STAGES, (l3, l2, l1), (l2, l1, None)):
            x = self._refine(stage, skip, x)
            if nxt is not None:
                x = upsample_to(getattr(self, f"mflow_conv_g{stage}_b3_joint_varout_dimred")(x),
                                nxt)
        return self.clf_conv(self.dropout(x))

    def _refine(self, stage: int, skip: Branches, previous: Branches) -> Branches:
        """One refinement stage: the skip input through its RCUs, plus the previous stage."""
        y = getattr(self, f"p_ims1d2_outl{stage}_dimred")(skip)
        y = getattr(self, f"adapt_stage{stage}_b")(y)
        y = getattr(self, f"adapt_stage{stage}_b2_joint_varout_dimred")(y)
        y = relu(add(y, previous))
        y = getattr(self, f"mflow_conv_g{stage}_pool")(y)
        return getattr(self, f"mflow_conv_g{stage}_b")(y)
