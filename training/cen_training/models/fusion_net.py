"""Multimodal RefineNet segmenters: CEN, AsymFusion and the baselines, from one config.

``FusionSegmenter`` is the official CEN/AsymFusion network (shared convs, private BNs, learned
ensemble ``alpha``) with the input normalisation of the engine contract inside ``forward``.
Its ``state_dict`` keys are those of the official code without the ``module.`` prefix, except
that the decoder's sit under ``decoder.`` (``cen_training.checkpoint`` maps the official layout).
The encoder is the stem (``conv1``, ``bn1``) and the ResNet layers (``LAYER_NAMES``); the
decoder is ``decoder`` and the ensemble weights ``alpha``, each trained with its own
optimiser in the official recipe.

Archs:
- ``cen``: channel exchange in every residual block (``|gamma| < bn_threshold``).
- ``asymfusion``: channel shuffle + pixel shift in the last block of each layer.
- ``shared``: shared convs, private BNs, no exchange (what exchange adds is ``cen`` - this).
- ``single``: one branch on one modality.
- ``early``: one branch on the modalities concatenated (the stem conv takes 3 x M channels).
- ``late``: an independent single-modality network per branch, logits averaged.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cen_perception.model_card import OFFICIAL_NORMALIZATION

from .parallel import BatchNormParallel, Branches, Parallel, SharedConv2d, relu
from .refinenet import DECODERS, RefineNetDecoder
from .resnet import LAYERS, BasicBlock, Bottleneck, make_layer

ARCHS = ("cen", "asymfusion", "shared", "single", "early", "late")
BACKBONES = tuple(LAYERS)
# "normals": surface normals estimated from the depth input inside the graph (a third
# modality for M = 3 without another sensor input).
MODALITIES = ("rgb", "depth", "normals")
_BLOCK_FUSION = {"cen": "exchange", "asymfusion": "shuffle"}
# The ResNet stages (official names), in order; l1..l4 are their outputs.
LAYER_NAMES = ("layer1", "layer2", "layer3", "layer4")


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model; stored in every checkpoint."""

    arch: str = "cen"
    backbone: str = "resnet101"
    modalities: list[str] = field(default_factory=lambda: ["rgb", "depth"])
    num_classes: int = 40
    decoder: str = "official"
    bn_threshold: float = 2e-2
    normalization: dict[str, Any] = field(
        default_factory=lambda: copy.deepcopy(OFFICIAL_NORMALIZATION))

    def __post_init__(self) -> None:
        if self.normalization is None:
            self.normalization = copy.deepcopy(OFFICIAL_NORMALIZATION)
        self.modalities = list(self.modalities)
        problems = []
        if self.arch not in ARCHS:
            problems.append(f"arch {self.arch!r} (choose from {', '.join(ARCHS)})")
        if self.backbone not in BACKBONES:
            problems.append(f"backbone {self.backbone!r} (choose from {', '.join(BACKBONES)})")
        if self.decoder not in DECODERS:
            problems.append(f"decoder {self.decoder!r} (choose from {', '.join(DECODERS)})")
        bad = [m for m in self.modalities if m not in MODALITIES]
        if bad or not self.modalities or len(set(self.modalities)) != len(self.modalities):
            problems.append(f"modalities {self.modalities!r} (distinct names from "
                            f"{', '.join(MODALITIES)})")
        if self.arch == "single" and len(self.modalities) != 1:
            problems.append("arch 'single' takes exactly one modality")
        if self.arch in ("early", "late") and len(self.modalities) < 2:
            problems.append(f"arch {self.arch!r} needs at least two modalities")
        if not 1 <= int(self.num_classes) <= 255:
            problems.append(f"num_classes {self.num_classes} (1..255)")
        if problems:
            raise ValueError("invalid model config: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


class InputNormalizer(nn.Module):
    """Raw engine-contract inputs to the network's per-modality 3-channel float tensors."""

    def __init__(self, normalization: dict[str, Any]) -> None:
        super().__init__()
        rgb, depth = normalization["rgb"], normalization["depth"]
        std = torch.tensor(rgb["std"], dtype=torch.float32)
        mean = torch.tensor(rgb["mean"], dtype=torch.float32)
        # (x * scale - mean) / std == x * a + b; not persistent: official state dicts lack them.
        self.register_buffer("rgb_a", (float(rgb["scale"]) / std).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("rgb_b", (-mean / std).view(1, 3, 1, 1), persistent=False)
        self.depth_mode = depth.get("mode", "linear")
        if self.depth_mode not in ("linear", "minmax"):
            raise ValueError(f"unknown depth normalisation mode {self.depth_mode!r}")
        self.depth_a = float(depth.get("scale", 1.0)) / float(depth.get("std", 1.0))
        self.depth_b = -float(depth.get("mean", 0.0)) / float(depth.get("std", 1.0))
        self.depth_channels = int(depth.get("channels", 3))
        self.focal_px = float(normalization.get("normals", {}).get("focal_px", 525.0))

    def rgb(self, rgb: torch.Tensor) -> torch.Tensor:
        """uint8 [N,H,W,3] -> float [N,3,H,W]."""
        # Cast before the permute: TensorRT lets uint8 inputs feed only a cast to float.
        return rgb.float().permute(0, 3, 1, 2) * self.rgb_a + self.rgb_b

    def depth(self, depth: torch.Tensor) -> torch.Tensor:
        """float metres [N,H,W] -> float [N,channels,H,W]."""
        d = depth.unsqueeze(1).float()
        if self.depth_mode == "minmax":  # per image, to 0..255 (official SUN-RGBD variant)
            lo = d.amin(dim=(2, 3), keepdim=True)
            hi = d.amax(dim=(2, 3), keepdim=True)
            d = (d - lo) * (255.0 / torch.clamp(hi - lo, min=1e-6))
        else:
            d = d * self.depth_a + self.depth_b
        return d.expand(-1, self.depth_channels, -1, -1)

    def normals(self, depth: torch.Tensor) -> torch.Tensor:
        """float metres [N,H,W] -> unit surface normals [N,3,H,W] (0 where depth is invalid).

        Pinhole approximation with focal length ``focal_px``:
        ``n ~ (-f/z dz/du, -f/z dz/dv, 1)`` from central differences.
        """
        d = depth.unsqueeze(1).float()
        p = F.pad(d, (1, 1, 1, 1))
        gx = (p[:, :, 1:-1, 2:] - p[:, :, 1:-1, :-2]) * 0.5
        gy = (p[:, :, 2:, 1:-1] - p[:, :, :-2, 1:-1]) * 0.5
        k = self.focal_px / torch.clamp(d, min=1e-3)
        n = torch.cat([-gx * k, -gy * k, torch.ones_like(d)], dim=1)
        n = n / torch.sqrt((n * n).sum(dim=1, keepdim=True))
        return n * (d > 0).float()

    def forward(self, modalities: list[str], rgb: torch.Tensor, depth: torch.Tensor) -> Branches:
        convert = {"rgb": lambda: self.rgb(rgb), "depth": lambda: self.depth(depth),
                   "normals": lambda: self.normals(depth)}
        return [convert[m]() for m in modalities]


class FusionSegmenter(nn.Module):
    """Shared-conv / private-BN RefineNet over M branches; returns M + 1 logit maps."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        arch = config.arch
        self.modalities = list(config.modalities)
        if arch == "early":
            self.branch_names = ["_".join(self.modalities)]
        else:
            self.branch_names = list(self.modalities)
        num = len(self.branch_names)
        self.num_branches = num
        self.normalizer = InputNormalizer(config.normalization)

        kind, depths = LAYERS[config.backbone]
        block = Bottleneck if kind == "bottleneck" else BasicBlock
        fusion = _BLOCK_FUSION.get(arch, "none")
        stem_in = 3 * len(self.modalities) if arch == "early" else 3
        self.conv1 = SharedConv2d(stem_in, 64, 7, stride=2)
        self.bn1 = BatchNormParallel(64, num)
        self.maxpool = Parallel(nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
        inplanes, channels = 64, []
        for i, (name, planes, n) in enumerate(zip(LAYER_NAMES, (64, 128, 256, 512), depths)):
            self.add_module(name, make_layer(block, inplanes, planes, n, num,
                                             stride=1 if i == 0 else 2, fusion=fusion,
                                             bn_threshold=config.bn_threshold))
            inplanes = planes * block.expansion
            channels.append(inplanes)
        self.decoder = RefineNetDecoder(tuple(channels), config.num_classes, config.decoder)
        self.alpha = nn.Parameter(torch.ones(num))

    # -- forward ----------------------------------------------------------------------
    def branch_inputs(self, rgb: torch.Tensor, depth: torch.Tensor) -> Branches:
        xs = self.normalizer(self.modalities, rgb, depth)
        if self.config.arch == "early":
            return [torch.cat(xs, dim=1)]
        return xs

    def features(self, xs: Branches) -> tuple[Branches, Branches, Branches, Branches]:
        x = self.maxpool(relu(self.bn1(self.conv1(xs))))
        l1 = self.layer1(x)
        l2 = self.layer2(l1)
        l3 = self.layer3(l2)
        l4 = self.layer4(l3)
        return l1, l2, l3, l4

    def forward_branches(self, xs: Branches) -> list[torch.Tensor]:
        """The official network on already-normalised branch inputs ``[N,3,H,W]`` each."""
        outs = self.decoder(*self.features(xs))
        weights = F.softmax(self.alpha, dim=0)
        ensemble = sum(weights[m] * out.detach() for m, out in enumerate(outs))
        return list(outs) + [ensemble]

    def forward(self, rgb: torch.Tensor, depth: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_branches(self.branch_inputs(rgb, depth))

    # -- parts ------------------------------------------------------------------------
    def layers(self) -> list[nn.Sequential]:
        """The four ResNet layers, in order."""
        return [getattr(self, name) for name in LAYER_NAMES]

    def encoder_modules(self) -> dict[str, nn.Module]:
        """The modules with encoder parameters (stem and layers), by their names."""
        return {"conv1": self.conv1, "bn1": self.bn1,
                **{name: getattr(self, name) for name in LAYER_NAMES}}

    # -- what training needs ----------------------------------------------------------
    def blocks(self):
        for layer in self.layers():
            yield from layer

    def scaling_factors(self) -> list[torch.Tensor]:
        """The exchange-BN scaling factors (gamma), per block and branch, in parameter order."""
        return [blk.exchange_bn[m].weight
                for blk in self.blocks() for m in range(self.num_branches)]

    def sparsity_penalty(self) -> torch.Tensor:
        """CEN's L1 term: sum of |gamma| over a disjoint portion of each branch's exchange BN.

        Branch m of M is penalised on the m-th of M equal channel slices (M = 2: branch 0 on the
        first half, branch 1 on the second, as the official code's alternation gives). Zero for
        archs without exchange.
        """
        if self.config.arch != "cen" or self.num_branches < 2:
            return self.alpha.new_zeros(())
        total = self.alpha.new_zeros(())
        for blk in self.blocks():
            for m in range(self.num_branches):
                gamma = blk.exchange_bn[m].weight
                c = gamma.numel()
                own = gamma[m * c // self.num_branches:(m + 1) * c // self.num_branches]
                total = total + own.abs().sum()
        return total

    def slim_fraction(self, threshold: float | None = None) -> float:
        threshold = self.config.bn_threshold if threshold is None else threshold
        gammas = torch.cat([g.detach().abs().flatten() for g in self.scaling_factors()])
        return float((gammas < threshold).float().mean())

    def encoder_parameters(self) -> list[nn.Parameter]:
        """Stem and ResNet layers, in parameter order."""
        return [p for module in self.encoder_modules().values() for p in module.parameters()]

    def decoder_parameters(self) -> list[nn.Parameter]:
        """The ensemble weights ``alpha``, then the decoder (``named_parameters`` order, which
        the optimiser states in checkpoints follow)."""
        return [self.alpha, *self.decoder.parameters()]

    def freeze_bn_stats(self) -> None:
        """Official recipe: BN running statistics frozen (gamma/beta still learn)."""
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eval()


class LateFusionSegmenter(nn.Module):
    """Independent single-modality networks; the ensemble is the mean of their logits."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.modalities = list(config.modalities)
        self.branch_names = list(self.modalities)
        self.num_branches = len(self.modalities)
        self.normalizer = InputNormalizer(config.normalization)
        self.nets = nn.ModuleList(
            FusionSegmenter(
                ModelConfig(**{**config.to_dict(), "arch": "single", "modalities": [m]}))
            for m in self.modalities)

    def forward(self, rgb: torch.Tensor, depth: torch.Tensor) -> list[torch.Tensor]:
        xs = self.normalizer(self.modalities, rgb, depth)
        outs = [net.forward_branches([x])[0] for net, x in zip(self.nets, xs)]
        return outs + [torch.stack(outs).mean(0)]

    def scaling_factors(self) -> list[torch.Tensor]:
        return [g for net in self.nets for g in net.scaling_factors()]

    def sparsity_penalty(self) -> torch.Tensor:
        return self.nets[0].alpha.new_zeros(())

    slim_fraction = FusionSegmenter.slim_fraction
    freeze_bn_stats = FusionSegmenter.freeze_bn_stats

    def encoder_parameters(self) -> list[nn.Parameter]:
        return [p for net in self.nets for p in net.encoder_parameters()]

    def decoder_parameters(self) -> list[nn.Parameter]:
        return [p for net in self.nets for p in net.decoder_parameters()]


def build_model(config: ModelConfig | dict[str, Any]) -> nn.Module:
    """The network for ``config`` (a ``ModelConfig`` or its dict), in training mode."""
    if isinstance(config, dict):
        config = ModelConfig.from_dict(config)
    if config.arch == "late":
        return LateFusionSegmenter(config)
    return FusionSegmenter(config)
