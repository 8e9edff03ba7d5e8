"""ImageNet initialisation from a torchvision-layout ResNet state dict.

Each convolution is copied into the shared conv, each BatchNorm into every branch's private BN
(as the official ``expand_model_dict``); the classifier ``fc`` is ignored. The weights come from
a local file, or are downloaded with ``torch.hub`` only when the user names a URL or
``torchvision`` explicitly.
"""
from __future__ import annotations

import pathlib

import torch
from torch import nn

from ..errors import CheckpointError, one_line

# torchvision's released ImageNet weights (V1), fetched only on request.
TORCHVISION_URLS = {
    "resnet18": "https://download.pytorch.org/models/resnet18-f37072fd.pth",
    "resnet34": "https://download.pytorch.org/models/resnet34-b627a593.pth",
    "resnet50": "https://download.pytorch.org/models/resnet50-0676ba61.pth",
    "resnet101": "https://download.pytorch.org/models/resnet101-63fe2227.pth",
    "resnet152": "https://download.pytorch.org/models/resnet152-394f9c45.pth",
}


def read_imagenet_state_dict(source: str | pathlib.Path, backbone: str) -> dict[str, torch.Tensor]:
    """``source``: a local ``.pth`` file, an http(s) URL, or ``"torchvision"`` (download the
    torchvision weights for ``backbone`` through torch.hub's cache)."""
    source = str(source)
    if source == "torchvision":
        source = TORCHVISION_URLS[backbone]
    if source.startswith(("http://", "https://")):
        state = torch.hub.load_state_dict_from_url(source, map_location="cpu", weights_only=True)
    else:
        state = torch.load(source, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return {k.removeprefix("module."): v for k, v in state.items()}


def _targets(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(prefix, FusionSegmenter) pairs: the model itself, or each network of a late fusion."""
    nets = getattr(model, "nets", None)
    if nets is not None:
        return [(f"nets.{i}.", net) for i, net in enumerate(nets)]
    return [("", model)]


def load_imagenet(model: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Copy ImageNet encoder weights into ``model``; returns the model keys that were set.

    Raises ``ValueError`` naming the keys when the backbone does not match (missing encoder
    keys or shapes that disagree). An early-fusion stem (3 x M input channels) gets the RGB
    filters in every modality's slot, divided by M so activations keep their scale.
    """
    own = model.state_dict()
    loaded, missing, mismatched = {}, [], []
    for prefix, net in _targets(model):
        encoder_keys = [f"{name}.{key}" for name, module in net.encoder_modules().items()
                        for key in module.state_dict()]
        for key in encoder_keys:
            parts = key.split(".")
            if ".module." in f".{key}":
                src = key.replace(".module.", ".").replace("module.", "")
            else:
                src = ".".join(p for p in parts if not (p.startswith("bn_") and p[3:].isdigit()))
            full = prefix + key
            if src not in state:
                missing.append(src)
                continue
            value = state[src]
            target = own[full]
            if (key == "conv1.module.weight" and target.shape[1] != value.shape[1]
                    and target.shape[1] % value.shape[1] == 0):
                reps = target.shape[1] // value.shape[1]
                value = value.repeat(1, reps, 1, 1) / reps
            if value.shape != target.shape:
                mismatched.append(f"{src} {list(value.shape)} -> {full} {list(target.shape)}")
                continue
            loaded[full] = value
    if missing or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} encoder key(s) missing from the ImageNet weights "
                         f"(e.g. {', '.join(sorted(set(missing))[:3])})")
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatch(es) (e.g. {mismatched[0]})")
        raise ValueError("ImageNet weights do not fit this backbone: " + "; ".join(parts))
    own.update(loaded)
    model.load_state_dict(own)
    return sorted(loaded)


def init_from_imagenet(model: nn.Module, source: str | pathlib.Path, backbone: str) -> list[str]:
    """Read ImageNet weights from ``source`` (see ``read_imagenet_state_dict``) into ``model``'s
    encoder; returns the keys set. ``CheckpointError`` naming ``source`` when they cannot be
    read or do not fit."""
    try:
        return load_imagenet(model, read_imagenet_state_dict(source, backbone))
    except (OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{source}: {one_line(exc)}") from None
