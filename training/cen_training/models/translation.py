"""Multimodal image-to-image translation: the official CEN generator and discriminator.

``TranslationGenerator`` is the pix2pix U-Net of the official CEN code (``ngf`` = 64, 8
halvings for 256x256 images), one branch per input modality: every convolution and transposed
convolution is shared by the branches, every InstanceNorm is private to its branch
(``affine=True, track_running_stats=True``). CEN exchanges channels after the InstanceNorms of
the encoder blocks conv2 .. conv7: branch m keeps channel c where ``|gamma_{m,c}| >= theta``
(1e-2) and otherwise takes the other branch's value (for more than two branches, the mean of
the others). A learned ``alpha`` (M values, init 1) weighs the ensemble
``sum_m softmax(alpha)_m * out_m.detach()``.

The generator takes the M input images as raw uint8 ``[B, H, W, 3]`` tensors and normalises
them inside (``x / 255``, mean 0.5, std 0.5: [-1, 1]); it returns M + 1 images
``[B, 3, H, W]`` in [-1, 1]: each branch's, then the ensemble.

InstanceNorm always uses each image's own statistics, in ``eval()`` mode too: the official
code never calls ``G.eval()``, so its validation normalises that way (the running statistics
are kept, updated in training, and never used). Dropout (p = 0.5 in deconv1..deconv3) is off in
``eval()`` unless the config asks for pix2pix's test-time dropout (``test_dropout``).

Every block owns its private InstanceNorms even where they never run (conv1, the innermost
conv, the last deconv), so that the state-dict keys and the parameter count are the official
ones: 54,431,633 parameters for two inputs. Keys: ``conv2.conv.module.weight``,
``conv2.insnorm_conv.insnorm_0.weight``, ``deconv1.deconv.module.weight``,
``deconv1.insnorm_deconv.insnorm_1.bias``, ``alpha``.

``size`` below 256 gives fewer halvings (log2(size)); that is *not* the official generator
and is meant for quick experiments on a CPU.

Archs: ``cen`` (exchange), ``shared`` (shared convs, private INs, no exchange), ``single`` (one
input), ``early`` (the inputs concatenated into conv1), ``late`` (an independent generator per
input, outputs averaged).

``TranslationDiscriminator`` is the official conditional PatchGAN (``ndf`` = 64), run per
branch on ``concat(input_m, image)``; its convs *and* InstanceNorms are shared by the branches
(keys ``conv2.conv.module.weight``, ``conv2.insnorm.module.weight``).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .fusion import channel_exchange, exchange_masks
from .parallel import Branches, Parallel

TRANSLATION_ARCHS = ("cen", "shared", "single", "early", "late")
OFFICIAL_SIZE = 256


@dataclass
class TranslationConfig:
    """Everything needed to rebuild a generator; stored in every translation checkpoint."""

    task: ClassVar[str] = "translation"

    arch: str = "cen"
    # Input domains (one branch each) and the target domain, by name.
    inputs: list[str] = field(default_factory=lambda: ["reshading", "edge_texture"])
    target: str = "rgb"
    ngf: int = 64
    size: int = OFFICIAL_SIZE  # square input side; 2 ** (number of halvings)
    exchange_threshold: float = 1e-2
    test_dropout: bool = False  # pix2pix's dropout at inference (random outputs)

    def __post_init__(self) -> None:
        self.inputs = list(self.inputs)
        problems = []
        if self.arch not in TRANSLATION_ARCHS:
            problems.append(f"arch {self.arch!r} (choose from {', '.join(TRANSLATION_ARCHS)})")
        if not self.inputs or len(set(self.inputs)) != len(self.inputs):
            problems.append(f"inputs {self.inputs!r} (one or more distinct domains)")
        if self.arch == "single" and len(self.inputs) != 1:
            problems.append("arch 'single' takes exactly one input")
        if self.arch in ("cen", "shared", "early", "late") and len(self.inputs) < 2:
            problems.append(f"arch {self.arch!r} needs at least two inputs")
        if self.size < 32 or self.size & (self.size - 1):
            problems.append(f"size {self.size} (a power of two, at least 32; official: 256)")
        if self.ngf < 1:
            problems.append(f"ngf {self.ngf}")
        if problems:
            raise ValueError("invalid translation config: " + "; ".join(problems))

    @property
    def levels(self) -> int:
        """Encoder blocks (halvings): 8 for the official 256."""
        return int(math.log2(self.size))

    @property
    def official(self) -> bool:
        return self.size == OFFICIAL_SIZE and self.ngf == 64

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TranslationConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class InstanceNorm(nn.InstanceNorm2d):
    """``InstanceNorm2d(affine=True, track_running_stats=True)`` that always normalises with
    each image's own statistics, as the official code does at validation (it never calls
    ``eval()``); the running statistics are updated in training mode only and never used."""

    def __init__(self, num_features: int) -> None:
        super().__init__(num_features, affine=True, track_running_stats=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = self.training
        return F.instance_norm(x, self.running_mean if update else None,
                               self.running_var if update else None, self.weight, self.bias,
                               use_input_stats=True, momentum=self.momentum, eps=self.eps)


class InstanceNormParallel(nn.Module):
    """One private InstanceNorm per branch (``insnorm_0``, ``insnorm_1``, ...)."""

    def __init__(self, num_features: int, num_branches: int) -> None:
        super().__init__()
        for m in range(num_branches):
            setattr(self, f"insnorm_{m}", InstanceNorm(num_features))

    def __getitem__(self, m: int) -> InstanceNorm:
        return getattr(self, f"insnorm_{m}")

    def forward(self, xs: Branches) -> Branches:
        return [self[m](x) for m, x in enumerate(xs)]


class ConvBlock(nn.Module):
    """Encoder block: ``[LeakyReLU 0.2] -> shared Conv 4x4/2 -> [private IN] -> [exchange]``."""

    def __init__(self, in_ch: int, out_ch: int, num_branches: int, activation: bool = True,
                 norm: bool = True, exchange: bool = False, threshold: float = 1e-2) -> None:
        super().__init__()
        self.conv = Parallel(nn.Conv2d(in_ch, out_ch, 4, 2, 1))
        self.insnorm_conv = InstanceNormParallel(out_ch, num_branches)  # present even if unused
        self.activation, self.norm = activation, norm
        self.exchange, self.threshold = exchange and num_branches > 1, threshold

    def gammas(self) -> list[torch.Tensor]:
        return [norm.weight for norm in self.insnorm_conv.children()]

    def forward(self, xs: Branches) -> Branches:
        if self.activation:
            xs = [F.leaky_relu(x, 0.2) for x in xs]
        xs = self.conv(xs)
        if self.norm:
            xs = self.insnorm_conv(xs)
            if self.exchange:
                xs = channel_exchange(xs, exchange_masks(self.gammas(), self.threshold))
        return xs


class DeconvBlock(nn.Module):
    """Decoder block: ``ReLU -> shared ConvTranspose 4x4/2 -> [private IN] -> [Dropout 0.5]``."""

    def __init__(self, in_ch: int, out_ch: int, num_branches: int, norm: bool = True,
                 dropout: bool = False) -> None:
        super().__init__()
        self.deconv = Parallel(nn.ConvTranspose2d(in_ch, out_ch, 4, 2, 1))
        self.insnorm_deconv = InstanceNormParallel(out_ch, num_branches)  # present even if unused
        self.norm, self.dropout = norm, dropout
        self.test_dropout = False

    def forward(self, xs: Branches) -> Branches:
        xs = self.deconv([torch.relu(x) for x in xs])
        if self.norm:
            xs = self.insnorm_deconv(xs)
        if self.dropout:
            active = self.training or self.test_dropout
            xs = [F.dropout(x, 0.5, training=active) for x in xs]
        return xs


def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[B, H, W, 3]`` -> float ``[B, 3, H, W]`` in [-1, 1] (``x / 255``, mean 0.5,
    std 0.5, as the official transforms)."""
    # Cast before the permute: TensorRT lets uint8 inputs feed only a cast to float.
    return images.float().permute(0, 3, 1, 2) * (2.0 / 255.0) - 1.0


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float ``[B, 3, H, W]`` in [-1, 1] -> uint8 ``[B, H, W, 3]`` (rounded, clipped)."""
    return ((images + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def encoder_channels(ngf: int, levels: int) -> list[int]:
    """Output channels of conv1 .. conv<levels>: 64, 128, 256, 512, 512, ... for ngf 64."""
    return [ngf * min(2 ** k, 8) for k in range(levels)]


class TranslationGenerator(nn.Module):
    """The official multi-branch U-Net generator (archs cen, shared, single, early)."""

    def __init__(self, config: TranslationConfig) -> None:
        super().__init__()
        self.config = config
        self.inputs = list(config.inputs)
        early = config.arch == "early"
        self.branch_names = ["+".join(self.inputs)] if early else list(self.inputs)
        num = len(self.branch_names)
        self.num_branches = num
        levels, ngf = config.levels, config.ngf
        channels = encoder_channels(ngf, levels)
        in_ch = 3 * len(self.inputs) if early else 3
        exchange = config.arch == "cen"
        for k in range(1, levels + 1):  # conv1 .. conv<levels>
            self.add_module(f"conv{k}", ConvBlock(
                in_ch if k == 1 else channels[k - 2], channels[k - 1], num,
                activation=k > 1, norm=1 < k < levels, exchange=exchange and 1 < k < levels,
                threshold=config.exchange_threshold))
        for k in range(1, levels + 1):  # deconv1 .. deconv<levels>
            block_in = channels[levels - 1] if k == 1 else 2 * channels[levels - k]
            block_out = 3 if k == levels else channels[levels - k - 1]
            block = DeconvBlock(block_in, block_out, num, norm=k < levels, dropout=k <= 3)
            block.test_dropout = config.test_dropout
            self.add_module(f"deconv{k}", block)
        self.alpha = nn.Parameter(torch.ones(num))

    @property
    def levels(self) -> int:
        return self.config.levels

    def encoder_blocks(self) -> list[ConvBlock]:
        return [getattr(self, f"conv{k}") for k in range(1, self.levels + 1)]

    def decoder_blocks(self) -> list[DeconvBlock]:
        return [getattr(self, f"deconv{k}") for k in range(1, self.levels + 1)]

    # -- forward ----------------------------------------------------------------------
    def branch_inputs(self, images: list[torch.Tensor]) -> Branches:
        """The M raw uint8 images -> the normalised branch inputs ``[B, 3, H, W]`` each (one
        ``[B, 3M, H, W]`` for early fusion)."""
        if len(images) != len(self.inputs):
            raise ValueError(f"expected {len(self.inputs)} input images "
                             f"({', '.join(self.inputs)}), got {len(images)}")
        xs = [normalize_images(x) for x in images]
        return [torch.cat(xs, dim=1)] if self.config.arch == "early" else xs

    def forward_branches(self, xs: Branches) -> list[torch.Tensor]:
        """The network on normalised branch inputs; each branch's image, then the ensemble."""
        skips = []
        for block in self.encoder_blocks():
            xs = block(xs)
            skips.append(xs)
        skips.pop()  # the innermost output feeds deconv1 only
        for block in self.decoder_blocks():
            xs = block(xs)
            if skips:
                skip = skips.pop()
                xs = [torch.cat([x, s], dim=1) for x, s in zip(xs, skip)]
        outs = [torch.tanh(x) for x in xs]
        weights = F.softmax(self.alpha, dim=0)
        ensemble = sum(weights[m] * out.detach() for m, out in enumerate(outs))
        return outs + [ensemble]

    def forward(self, *images: torch.Tensor) -> list[torch.Tensor]:
        """uint8 ``[B, H, W, 3]`` per input -> M + 1 images ``[B, 3, H, W]`` in [-1, 1]."""
        return self.forward_branches(self.branch_inputs(list(images)))

    # -- what training needs ----------------------------------------------------------
    def scaling_factors(self) -> list[torch.Tensor]:
        """The InstanceNorm scaling factors (gamma) that decide exchanges (conv2 .. conv7 of
        the official generator), per block and branch."""
        return [g for blk in self.encoder_blocks() if blk.norm for g in blk.gammas()]

    def sparsity_penalty(self) -> torch.Tensor:
        """The official L1 term: over the encoder blocks' InstanceNorm weights in parameter
        order (conv1 .. conv8, each branch in turn, the never-used ones of conv1 and conv8
        included), alternately the sum of |gamma| over the first and over the second half of
        the channels (two branches: branch 0 on the first half, branch 1 on the second). Zero
        for archs without exchange. The never-used InstanceNorms add their value but no
        gradient: they affect no output, and under DistributedDataParallel a parameter that
        only a loss term outside the forward pass reaches cannot be synchronised."""
        total = self.alpha.new_zeros(())
        if self.config.arch != "cen":
            return total
        index = 0
        for blk in self.encoder_blocks():
            for gamma in blk.gammas():
                half = gamma.numel() // 2
                part = gamma[:half] if index % 2 == 0 else gamma[half:]
                total = total + (part if blk.norm else part.detach()).abs().sum()
                index += 1
        return total

    def slim_fraction(self, threshold: float | None = None) -> float:
        """Share of the exchange InstanceNorms' channels with ``|gamma| < threshold``: for
        CEN, the share of channels that take another branch's values."""
        threshold = self.config.exchange_threshold if threshold is None else threshold
        gammas = torch.cat([g.detach().abs().flatten() for g in self.scaling_factors()])
        return float((gammas < threshold).float().mean())

    def init_weights(self, std: float = 0.02) -> None:
        """Official initialisation: conv and transposed-conv weights N(0, std); biases and
        InstanceNorms keep PyTorch's defaults."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.normal_(module.weight, 0.0, std)


class LateFusionGenerator(nn.Module):
    """An independent single-input generator per input; the ensemble is their mean."""

    def __init__(self, config: TranslationConfig) -> None:
        super().__init__()
        self.config = config
        self.inputs = list(config.inputs)
        self.branch_names = list(self.inputs)
        self.num_branches = len(self.inputs)
        self.nets = nn.ModuleList(
            TranslationGenerator(TranslationConfig(**{**_fields(config), "arch": "single",
                                                      "inputs": [name]}))
            for name in self.inputs)

    def branch_inputs(self, images: list[torch.Tensor]) -> Branches:
        if len(images) != len(self.inputs):
            raise ValueError(f"expected {len(self.inputs)} input images, got {len(images)}")
        return [normalize_images(x) for x in images]

    def forward_branches(self, xs: Branches) -> list[torch.Tensor]:
        outs = [net.forward_branches([x])[0] for net, x in zip(self.nets, xs)]
        return outs + [torch.stack(outs).mean(0)]

    def forward(self, *images: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_branches(self.branch_inputs(list(images)))

    def scaling_factors(self) -> list[torch.Tensor]:
        return [g for net in self.nets for g in net.scaling_factors()]

    def sparsity_penalty(self) -> torch.Tensor:
        return self.nets[0].alpha.new_zeros(())

    slim_fraction = TranslationGenerator.slim_fraction

    def init_weights(self, std: float = 0.02) -> None:
        for net in self.nets:
            net.init_weights(std)


def _fields(config: TranslationConfig) -> dict[str, Any]:
    return {k: v for k, v in config.to_dict().items() if k != "task"}


class SharedConvBlock(nn.Module):
    """Discriminator block: ``[LeakyReLU 0.2] -> Conv 4x4 -> [IN]``, conv and IN shared."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 2, activation: bool = True,
                 norm: bool = True) -> None:
        super().__init__()
        self.conv = Parallel(nn.Conv2d(in_ch, out_ch, 4, stride, 1))
        self.insnorm = Parallel(InstanceNorm(out_ch))  # present even if unused
        self.activation, self.norm = activation, norm

    def forward(self, xs: Branches) -> Branches:
        if self.activation:
            xs = [F.leaky_relu(x, 0.2) for x in xs]
        xs = self.conv(xs)
        return self.insnorm(xs) if self.norm else xs


class TranslationDiscriminator(nn.Module):
    """The official conditional PatchGAN, shared by the branches. ``forward`` returns the
    per-branch, per-patch logits (what the loss uses, for numerical stability);
    ``probabilities`` the official output, their sigmoid."""

    def __init__(self, ndf: int = 64, in_channels: int = 6) -> None:
        super().__init__()
        self.conv1 = SharedConvBlock(in_channels, ndf, activation=False, norm=False)
        self.conv2 = SharedConvBlock(ndf, ndf * 2)
        self.conv3 = SharedConvBlock(ndf * 2, ndf * 4)
        self.conv4 = SharedConvBlock(ndf * 4, ndf * 8, stride=1)
        self.conv5 = SharedConvBlock(ndf * 8, 1, stride=1, norm=False)

    def forward(self, inputs: Branches, images: Branches) -> Branches:
        """Per branch: the condition ``inputs[m]`` and the image ``images[m]`` (normalised,
        ``[B, 3, H, W]``) -> logits ``[B, 1, h, w]``."""
        xs = [torch.cat([x, y], dim=1) for x, y in zip(inputs, images)]
        for block in (self.conv1, self.conv2, self.conv3, self.conv4, self.conv5):
            xs = block(xs)
        return xs

    def probabilities(self, inputs: Branches, images: Branches) -> Branches:
        return [torch.sigmoid(x) for x in self(inputs, images)]

    def init_weights(self, std: float = 0.02) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, std)


def build_translation_model(config: TranslationConfig | dict[str, Any]) -> nn.Module:
    """The generator for ``config`` (a ``TranslationConfig`` or its dict), in training mode."""
    if isinstance(config, dict):
        config = TranslationConfig.from_dict(config)
    if config.arch == "late":
        return LateFusionGenerator(config)
    return TranslationGenerator(config)


def build_discriminator(config: TranslationConfig, ndf: int = 64) -> TranslationDiscriminator:
    """The official discriminator for ``config``'s generator: conditioned on one 3-channel
    input per branch (early fusion: on all inputs, concatenated, as its one branch sees)."""
    cond = 3 * len(config.inputs) if config.arch == "early" else 3
    return TranslationDiscriminator(ndf, in_channels=cond + 3)


def discriminator_inputs(generator: nn.Module, images: list[torch.Tensor]) -> Branches:
    """What the discriminator is conditioned on for each branch output: the branch's own
    normalised input (early fusion: all inputs concatenated)."""
    generator = getattr(generator, "module", generator)
    xs = [normalize_images(x) for x in images]
    return [torch.cat(xs, dim=1)] if generator.config.arch == "early" else xs
