"""ONNX export of a translation generator, checked against PyTorch with ONNX Runtime.

The graph: inputs ``input0`` .. ``input<M-1>``, uint8 ``[1, S, S, 3]`` RGB each (S = the
generator's size, 256 for the official one), in the order of the model's input domains;
output ``image``, uint8 ``[1, S, S, 3]`` RGB: the ensemble, ``round((y + 1) * 127.5)``. The
normalisation happens inside the graph. The InstanceNorms normalise each image with its own
statistics (as the official validation); CEN's exchange masks are constants of the graph.
Opset 17, static shapes. A card (JSON) in the ONNX metadata under
``cen_perception.translation_card`` names the inputs' domains, the target and the sizes.

``export_and_verify_translation`` writes the file only if ONNX Runtime reproduces the PyTorch
model: on every check frame, at least ``MIN_WITHIN_ONE`` (99.9%) of the output values within
one grey level of PyTorch's (rounding can fall the other way where float sums differ in their
last bits).
"""
from __future__ import annotations

import contextlib
import io
import json
import pathlib
import tempfile
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..errors import ExportError
from ..models.translation import to_uint8

OPSET = 17
CARD_KEY = "cen_perception.translation_card"
MIN_WITHIN_ONE = 0.999


class EnsembleImage(nn.Module):
    """The generator from raw uint8 inputs to the uint8 ensemble image."""

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, *images: torch.Tensor) -> torch.Tensor:
        return to_uint8(self.generator(*images)[-1])


def translation_card(generator: nn.Module) -> dict:
    config = generator.config
    card = getattr(generator, "card", {}) or {}
    return {"task": "translation", "arch": config.arch,
            "inputs": {f"input{m}": name for m, name in enumerate(config.inputs)},
            "target": config.target, "input_size": [config.size, config.size],
            "output": "image: the ensemble, uint8 RGB, round((y + 1) * 127.5) of the [-1, 1] "
                      "output",
            "normalization": "each input uint8 RGB, x / 255, mean 0.5, std 0.5",
            "official_generator": config.official,
            "dataset": card.get("dataset"), "metrics": card.get("metrics")}


def export_translation(generator: nn.Module, path: str | pathlib.Path):
    """Write the ONNX file (without verification; see ``export_and_verify_translation``)."""
    import onnx

    path = pathlib.Path(path)
    generator = generator.eval()
    if generator.config.test_dropout:
        raise ExportError("a generator with test-time dropout gives random images; export it "
                          "without (its config's test_dropout)")
    size = generator.config.size
    names = [f"input{m}" for m in range(len(generator.config.inputs))]
    example = tuple(torch.zeros(1, size, size, 3, dtype=torch.uint8) for _ in names)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(EnsembleImage(generator), example, str(path), dynamo=False,
                          opset_version=OPSET, input_names=names, output_names=["image"],
                          do_constant_folding=True)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    entry = proto.metadata_props.add()
    entry.key, entry.value = CARD_KEY, json.dumps(translation_card(generator))
    onnx.save(proto, str(path))
    return proto


def check_frames(generator: nn.Module, count: int = 2, seed: int = 0) -> list[list[np.ndarray]]:
    """Smooth random images (blurred noise plus gradients) for each input, ``count`` frames."""
    import cv2
    size = generator.config.size
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(count):
        images = []
        for _ in generator.config.inputs:
            noise = rng.random((size, size, 3)).astype(np.float32)
            smooth = cv2.GaussianBlur(noise, (0, 0), size / 32)
            smooth = (smooth - smooth.min()) / max(float(np.ptp(smooth)), 1e-6)
            ramp = np.linspace(0, 1, size, dtype=np.float32)[None, :, None]
            images.append(np.clip(255 * (0.7 * smooth + 0.3 * ramp), 0, 255).astype(np.uint8))
        frames.append(images)
    return frames


@dataclass
class TranslationParity:
    within_one: list[float] = field(default_factory=list)  # per frame
    max_difference: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return min(self.within_one, default=1.0) >= MIN_WITHIN_ONE

    def summary(self) -> str:
        return (f"values within 1 grey level of PyTorch: "
                f"{100 * min(self.within_one, default=1.0):.4f}% (worst frame; need "
                f"{100 * MIN_WITHIN_ONE:g}%), largest difference "
                f"{max(self.max_difference, default=0)}")


@torch.no_grad()
def verify_translation(generator: nn.Module, onnx_path: str | pathlib.Path,
                       frames: list[list[np.ndarray]]) -> TranslationParity:
    """Compare ONNX Runtime's images with PyTorch's on ``frames`` (per frame, one uint8
    ``[S, S, 3]`` image per input)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    wrapper = EnsembleImage(generator.eval())
    report = TranslationParity()
    for images in frames:
        feeds = {f"input{m}": im[None] for m, im in enumerate(images)}
        got = session.run(["image"], feeds)[0].astype(np.int16)
        want = wrapper(*[torch.from_numpy(im[None]) for im in images]).numpy().astype(np.int16)
        diff = np.abs(got - want)
        report.within_one.append(float((diff <= 1).mean()))
        report.max_difference.append(int(diff.max()))
    return report


def export_and_verify_translation(generator: nn.Module, path: str | pathlib.Path,
                                  frames: list[list[np.ndarray]] | None = None
                                  ) -> TranslationParity:
    """Export, check ONNX Runtime against PyTorch on ``frames`` (default: ``check_frames``),
    and only then move the file into place; ``ExportError`` if they disagree."""
    path = pathlib.Path(path)
    frames = frames or check_frames(generator)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        candidate = pathlib.Path(tmp) / path.name
        export_translation(generator, candidate)
        report = verify_translation(generator, candidate, frames)
        if not report.ok:
            raise ExportError(f"{path}: ONNX Runtime does not reproduce the PyTorch generator: "
                              + report.summary())
        candidate.replace(path)
    return report
