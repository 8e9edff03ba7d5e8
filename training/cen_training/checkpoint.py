"""Checkpoints: our own format, and import of checkpoints written by the official code.

Our checkpoint is a ``torch.save`` dict readable with ``weights_only=True``::

    {"format": "cen_perception.checkpoint", "version": 2, "task": "segmentation",
     "config": ModelConfig.to_dict(), "card": {class_names, palette, dataset, metrics, ...},
     "model": state_dict, ...training state (optimisers, epoch, stage, RNG)...}

Official CEN / AsymFusion checkpoints are ``{"segmenter": state_dict, "best_val": ..,
"epoch_start": ..}`` (or a bare state dict) whose keys start with ``module.`` (DataParallel).
Our parameter names are the official ones, except that the decoder's layers sit in a module of
their own: ``decoder.clf_conv.module.weight`` where the official code has
``clf_conv.module.weight`` (the *flat* layout, which our version 1 checkpoints have too).
Reading maps the flat layout to ours (``from_flat_layout``); the official import then checks
that every key and shape matches, and an error names the keys that do not, as the file names
them.

Translation checkpoints (``task: "translation"``, ``models.translation``) hold a
``TranslationConfig`` and the generator's state dict; a file without ``task`` is a
segmentation checkpoint. The official translation code saves the bare generator state dict
(``torch.save(G.state_dict())``, no ``module.`` prefix): ``import_official_translation``.
"""
from __future__ import annotations

import pathlib
import pickle
import zipfile
from typing import Any

import torch
from torch import nn

from .errors import CheckpointError, one_line
from .files import atomic_write
from .models import ModelConfig, RefineNetDecoder, build_model
from .models.translation import TranslationConfig, build_translation_model

FORMAT = "cen_perception.checkpoint"
# 2: the decoder's keys under "decoder."; 1: the flat layout (still read).
VERSION = 2


def save_checkpoint(path: str | pathlib.Path, model: nn.Module, config: ModelConfig,
                    card: dict[str, Any], **extra: Any) -> pathlib.Path:
    """Write a checkpoint atomically (see ``cen_training.files.atomic_write``); ``config`` is a
    ``ModelConfig`` or a ``TranslationConfig``."""
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    payload = {"format": FORMAT, "version": VERSION,
               "task": getattr(config, "task", "segmentation"), "config": config.to_dict(),
               "card": dict(card), "model": model.state_dict(), **extra}
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def _torch_load(path: pathlib.Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt?): "
                              f"{one_line(exc)}") from None


def _model_config(ckpt: dict[str, Any], path: pathlib.Path) -> ModelConfig:
    try:
        return ModelConfig.from_dict(ckpt["config"])
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: bad model config in checkpoint: {exc}") from None


def _translation_config(ckpt: dict[str, Any], path: pathlib.Path) -> TranslationConfig:
    try:
        return TranslationConfig.from_dict(ckpt["config"])
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: bad translation config in checkpoint: {exc}") from None


def load_checkpoint(path: str | pathlib.Path) -> dict[str, Any]:
    """Our checkpoint dict, its ``model`` state dict in the current layout (a version 1 file's
    is mapped); ``CheckpointError`` for a missing, corrupt or foreign file."""
    path = pathlib.Path(path)
    ckpt = _torch_load(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        official = isinstance(ckpt, dict) and "segmenter" in ckpt
        hint = (" (an official CEN/AsymFusion checkpoint? convert it with "
                "`cen-train import-official`)") if official else ""
        raise CheckpointError(f"{path}: not a cen_perception checkpoint{hint}")
    for key in ("config", "card", "model"):
        if key not in ckpt:
            raise CheckpointError(f"{path}: checkpoint has no '{key}' entry")
    if ckpt.get("version", 1) < 2 and ckpt.get("task", "segmentation") == "segmentation":
        with torch.device("meta"):  # the key names only: no memory, no initialisation cost
            skeleton = build_model(_model_config(ckpt, path))
        ckpt["model"] = from_flat_layout(skeleton, ckpt["model"])
    return ckpt


def _check_keys(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor], source: str) -> None:
    """``CheckpointError`` naming every key of ``state`` that is missing, unexpected or
    mis-shaped against ``own``."""
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
        raise CheckpointError(f"{source}: state dict does not match the model: "
                              + "; ".join(problems))


def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load every key with its exact shape, or raise ``CheckpointError`` naming what disagrees."""
    _check_keys(model.state_dict(), state, source)
    model.load_state_dict(state, strict=True)


def load_model(path: str | pathlib.Path, task: str | None = None) -> nn.Module:
    """The model stored in one of our checkpoints, weights loaded, in eval mode.

    ``model.card`` holds the checkpoint's card dict and ``model.config`` its ``ModelConfig``
    (``TranslationConfig``). ``task`` ("segmentation" or "translation"): the task the caller
    needs; a checkpoint of the other task is a ``CheckpointError``.
    """
    path = pathlib.Path(path)
    ckpt = load_checkpoint(path)
    stored = ckpt.get("task", "segmentation")
    if task is not None and stored != task:
        hint = ("cen-train translate eval|export" if stored == "translation"
                else "cen-train eval|export")
        raise CheckpointError(f"{path}: a {stored} checkpoint, not a {task} one (use "
                              f"`{hint}`)")
    if stored == "translation":
        model = build_translation_model(_translation_config(ckpt, path))
    else:
        model = build_model(_model_config(ckpt, path))
    load_state_strict(model, ckpt["model"], str(path))
    model.card = dict(ckpt["card"])
    return model.eval()


# -- the flat layout (official code, our version 1) --------------------------------------------

def flat_decoder_keys(model: nn.Module) -> dict[str, str]:
    """``{our key: its flat-layout key}`` for every state-dict key inside a decoder module of
    ``model``: the same key without the decoder's own name (``decoder.clf_conv.module.weight``
    -> ``clf_conv.module.weight``; ``nets.0.decoder.`` -> ``nets.0.`` in a late fusion)."""
    keys = {}
    for name, module in model.named_modules():
        if isinstance(module, RefineNetDecoder):
            parent = name.rpartition(".")[0]
            for key in module.state_dict():
                keys[f"{name}.{key}"] = f"{parent}.{key}" if parent else key
    return keys


def from_flat_layout(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with ``model``'s decoder keys in flat-layout form renamed to ours; every other
    key (encoder, ``alpha``, keys already in our layout, keys the model does not have) as it is,
    for the strict check to judge."""
    ours = {flat: key for key, flat in flat_decoder_keys(model).items()}
    renamed = {ours.get(key, key): value for key, value in state.items()}
    if len(renamed) != len(state):  # a key in both layouts: keep them apart, to be named
        return dict(state)
    return renamed


def official_state_dict(raw: Any, source: str) -> dict[str, torch.Tensor]:
    """The state dict inside an official checkpoint, ``module.`` prefixes removed (flat layout)."""
    state = raw.get("segmenter", raw) if isinstance(raw, dict) else raw
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise CheckpointError(f"{source}: no state dict found (expected {{'segmenter': "
                              "state_dict}} or a bare state dict of tensors)")
    return {k.removeprefix("module."): v for k, v in state.items()}


def import_official(src: str | pathlib.Path,
                    config: ModelConfig) -> tuple[nn.Module, dict[str, Any]]:
    """Build ``config``'s model and load an official checkpoint into it, strictly; keys that do
    not match are named as the official file names them.

    Returns the model (eval mode) and the extra entries of the official file (``best_val``,
    ``epoch_start``) for the card.
    """
    src = pathlib.Path(src)
    raw = _torch_load(src)
    state = official_state_dict(raw, str(src))
    model = build_model(config)
    flat = flat_decoder_keys(model)
    _check_keys({flat.get(k, k): v for k, v in model.state_dict().items()}, state, str(src))
    model.load_state_dict(from_flat_layout(model, state), strict=True)
    info = {k: raw[k] for k in ("best_val", "epoch_start")
            if isinstance(raw, dict) and k in raw and isinstance(raw[k], (int, float))}
    return model.eval(), info


def import_official_translation(src: str | pathlib.Path,
                                config: TranslationConfig) -> nn.Module:
    """Build ``config``'s generator and load a generator state dict saved by the official
    translation code (``torch.save(G.state_dict())``; a ``module.`` prefix is tolerated),
    strictly; keys that do not match are named. Returns the generator in eval mode."""
    src = pathlib.Path(src)
    state = official_state_dict(_torch_load(src), str(src))
    model = build_translation_model(config)
    load_state_strict(model, state, str(src))
    return model.eval()
