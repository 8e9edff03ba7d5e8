"""Checkpoints: our own format, and import of checkpoints written by the official code.

Our checkpoint is a ``torch.save`` dict readable with ``weights_only=True``::

    {"format": "cen_perception.checkpoint", "version": 1,
     "config": ModelConfig.to_dict(), "card": {class_names, palette, dataset, metrics, ...},
     "model": state_dict, ...training state (optimisers, epoch, stage, RNG)...}

Official CEN / AsymFusion checkpoints are ``{"segmenter": state_dict, "best_val": ..,
"epoch_start": ..}`` (or a bare state dict) whose keys start with ``module.`` (DataParallel).
Our parameter names are the official ones, so the import strips that prefix and checks that
every key and shape matches; anything else is an error that names the keys.
"""
from __future__ import annotations

import pathlib
import pickle
import zipfile
from typing import Any

import torch
from torch import nn

from . import CliError
from .io import atomic_write
from .models import ModelConfig, build_model

FORMAT = "cen_perception.checkpoint"
VERSION = 1


def save_checkpoint(path: str | pathlib.Path, model: nn.Module, config: ModelConfig,
                    card: dict[str, Any], **extra: Any) -> pathlib.Path:
    """Write a checkpoint atomically (see ``cen_training.io.atomic_write``)."""
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    payload = {"format": FORMAT, "version": VERSION, "config": config.to_dict(), "card": dict(card),
               "model": model.state_dict(), **extra}
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def _torch_load(path: pathlib.Path) -> Any:
    if not path.is_file():
        raise CliError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CliError(f"{path}: not a readable checkpoint (truncated or corrupt?): {first}") from None


def load_checkpoint(path: str | pathlib.Path) -> dict[str, Any]:
    """Our checkpoint dict; ``CliError`` for a missing, corrupt or foreign file."""
    path = pathlib.Path(path)
    ckpt = _torch_load(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        hint = (" (an official CEN/AsymFusion checkpoint? convert it with "
                "`cen-train import-official`)") if isinstance(ckpt, dict) and "segmenter" in ckpt else ""
        raise CliError(f"{path}: not a cen_perception checkpoint{hint}")
    for key in ("config", "card", "model"):
        if key not in ckpt:
            raise CliError(f"{path}: checkpoint has no '{key}' entry")
    return ckpt


def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load every key with its exact shape, or raise ``CliError`` naming what disagrees."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [f"{k} {list(state[k].shape)} vs model {list(own[k].shape)}"
                  for k in sorted(set(own) & set(state))
                  if tuple(own[k].shape) != tuple(state[k].shape)]
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected),
                        ("mis-shaped", mismatched)):
        if keys:
            shown = ", ".join(keys[:4]) + (f", ... ({len(keys)} in all)" if len(keys) > 4 else "")
            problems.append(f"{label} key(s): {shown}")
    if problems:
        raise CliError(f"{source}: state dict does not match the model: " + "; ".join(problems))
    model.load_state_dict(state, strict=True)


def load_model(path: str | pathlib.Path) -> nn.Module:
    """The model stored in one of our checkpoints, weights loaded, in eval mode.

    ``model.card`` holds the checkpoint's card dict and ``model.config`` its ``ModelConfig``.
    """
    ckpt = load_checkpoint(path)
    try:
        config = ModelConfig.from_dict(ckpt["config"])
    except (ValueError, TypeError) as exc:
        raise CliError(f"{path}: bad model config in checkpoint: {exc}") from None
    model = build_model(config)
    load_state_strict(model, ckpt["model"], str(path))
    model.card = dict(ckpt["card"])
    return model.eval()


def official_state_dict(raw: Any, source: str) -> dict[str, torch.Tensor]:
    """The state dict inside an official checkpoint, ``module.`` prefixes removed."""
    state = raw.get("segmenter", raw) if isinstance(raw, dict) else raw
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise CliError(f"{source}: no state dict found (expected {{'segmenter': state_dict}} "
                       "or a bare state dict of tensors)")
    return {k.removeprefix("module."): v for k, v in state.items()}


def import_official(src: str | pathlib.Path, config: ModelConfig) -> tuple[nn.Module, dict[str, Any]]:
    """Build ``config``'s model and load an official checkpoint into it, strictly.

    Returns the model (eval mode) and the extra entries of the official file (``best_val``,
    ``epoch_start``) for the card.
    """
    src = pathlib.Path(src)
    raw = _torch_load(src)
    state = official_state_dict(raw, str(src))
    model = build_model(config)
    load_state_strict(model, state, str(src))
    info = {k: raw[k] for k in ("best_val", "epoch_start")
            if isinstance(raw, dict) and k in raw and isinstance(raw[k], (int, float))}
    return model.eval(), info
