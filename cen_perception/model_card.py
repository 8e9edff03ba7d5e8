"""The model card: what an engine is, what it expects and what it returns.

Training writes the card into the ONNX file (``metadata_props`` under
``cen_perception.model_card``) and beside a TensorRT engine as ``<engine>.json``. The runtime
reads it, checks it against the engine's real inputs and outputs, and refuses an engine whose
card is missing or disagrees (see docs/DESIGN.md, "The engine contract").

Normalisation (applied *inside* the graph; recorded here so people and tools know it):
``rgb``: ``(x * scale - mean) / std`` per channel on RGB-ordered uint8 input;
``depth``: for ``mode == "linear"``, ``(d_metres * scale - mean) / std``; for ``"minmax"``,
``(d - min) * 255 / (max - min)`` per image (SUN-RGBD convention); repeated to ``channels``
channels. The official CEN convention (millimetres / 5000) is ``linear`` with ``scale=0.2``.
"""
from __future__ import annotations

import json
import pathlib
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import CenPerceptionError

METADATA_KEY = "cen_perception.model_card"
CARD_VERSION = 1

# Engine I/O names and element types (numpy dtype names) fixed by the contract.
INPUTS = {"rgb": "uint8", "depth": "float32"}
OUTPUTS = {"labels": "uint8", "confidence": "float32", "logits": "float32"}
PRECISIONS = ("fp32", "fp16", "int8")

OFFICIAL_NORMALIZATION: dict[str, Any] = {
    "rgb": {"scale": 1.0 / 255.0, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
    "depth": {"mode": "linear", "scale": 0.2, "mean": 0.0, "std": 1.0, "channels": 3},
}
SUNRGBD_NORMALIZATION: dict[str, Any] = {
    "rgb": OFFICIAL_NORMALIZATION["rgb"],
    "depth": {"mode": "minmax", "scale": 1.0, "mean": 0.0, "std": 1.0, "channels": 3},
}

_REQUIRED = ("arch", "backbone", "modalities", "num_classes", "class_names", "palette",
             "input_size", "normalization")


class ModelCardError(CenPerceptionError, ValueError):
    """A model card is missing, malformed, or disagrees with its engine."""


@dataclass
class ModelCard:
    arch: str
    backbone: str
    modalities: list[str]
    num_classes: int
    class_names: list[str]
    palette: list[list[int]]
    input_size: list[int]  # [H, W] of the engine's inputs
    normalization: dict[str, Any]
    decoder: str = "official"
    outputs: list[str] = field(default_factory=lambda: ["labels"])
    dataset: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    # Arithmetic inside the graph: fp32, fp16 (float16 inside, contract I/O types kept) or
    # int8 (signed symmetric Q/DQ). The I/O types are the same for all three.
    precision: str = "fp32"
    # [low, high] metres: the 1st and 99th percentile of valid depth in the training data,
    # where known; the node warns when a camera's depth falls far outside it.
    depth_range_m: list[float] = field(default_factory=list)
    version: int = CARD_VERSION

    def __post_init__(self) -> None:
        self.validate()

    # -- validation --------------------------------------------------------------------
    def validate(self) -> None:
        if not isinstance(self.num_classes, int) or not 1 <= self.num_classes <= 255:
            raise ModelCardError(
                f"model card: num_classes must be 1..255, got {self.num_classes!r}")
        if len(self.class_names) != self.num_classes:
            raise ModelCardError(
                f"model card: {len(self.class_names)} class_names "
                f"for num_classes={self.num_classes}")
        if len(self.palette) != self.num_classes or any(
                len(c) != 3 or any(not 0 <= int(v) <= 255 for v in c) for c in self.palette):
            raise ModelCardError(
                f"model card: palette must hold {self.num_classes} RGB triples in 0..255")
        if len(self.input_size) != 2 or any(int(v) <= 0 for v in self.input_size):
            raise ModelCardError(f"model card: input_size must be [H, W], got {self.input_size!r}")
        if not self.modalities:
            raise ModelCardError("model card: modalities is empty")
        unknown = [o for o in self.outputs if o not in OUTPUTS]
        if "labels" not in self.outputs or unknown:
            raise ModelCardError(
                f"model card: outputs must include 'labels' and only {sorted(OUTPUTS)}, "
                f"got {self.outputs!r}")
        if self.precision not in PRECISIONS:
            raise ModelCardError(f"model card: precision must be one of {', '.join(PRECISIONS)}, "
                                 f"got {self.precision!r}")
        if self.depth_range_m and not (
                len(self.depth_range_m) == 2
                and 0 <= float(self.depth_range_m[0]) < float(self.depth_range_m[1])):
            raise ModelCardError("model card: depth_range_m must be [low, high] metres with "
                                 f"0 <= low < high, got {self.depth_range_m!r}")
        for key in ("rgb", "depth"):
            if key not in self.normalization:
                raise ModelCardError(f"model card: normalization has no '{key}' entry")

    @property
    def height(self) -> int:
        return int(self.input_size[0])

    @property
    def width(self) -> int:
        return int(self.input_size[1])

    # -- serialisation -----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelCard":
        if not isinstance(data, dict):
            raise ModelCardError("model card: expected a JSON object")
        missing = [k for k in _REQUIRED if k not in data]
        if missing:
            raise ModelCardError(f"model card: missing field(s) {', '.join(missing)}")
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_json(cls, text: str, source: str = "model card") -> "ModelCard":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelCardError(
                f"{source}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        try:
            return cls.from_dict(data)
        except TypeError as exc:
            raise ModelCardError(f"{source}: {exc}") from None

    @classmethod
    def from_metadata(cls, metadata: dict[str, str], source: str) -> "ModelCard":
        """From ONNX ``metadata_props`` (as ONNX Runtime's ``custom_metadata_map`` gives them)."""
        if METADATA_KEY not in metadata:
            raise ModelCardError(
                f"{source}: no model card (metadata key '{METADATA_KEY}'); "
                "export it with `cen-train export`")
        return cls.from_json(metadata[METADATA_KEY], source=f"{source}: model card")

    @classmethod
    def load_sidecar(cls, engine_path: str | pathlib.Path) -> "ModelCard":
        """The ``<engine>.json`` card written beside a TensorRT engine."""
        path = sidecar_path(engine_path)
        if not path.is_file():
            raise ModelCardError(
                f"{engine_path}: model card {path.name} not found beside the engine; "
                "build engines with `cen-train build-engine`")
        return cls.from_json(path.read_text(encoding="utf-8"), source=str(path))

    def save_sidecar(self, engine_path: str | pathlib.Path) -> pathlib.Path:
        path = sidecar_path(engine_path)
        path.write_text(self.to_json() + "\n", encoding="utf-8")
        return path

    # -- checks against a real engine -------------------------------------------------
    def check_io(self, inputs: dict[str, tuple[tuple[int, ...], str]],
                 outputs: dict[str, tuple[tuple[int, ...], str]], source: str) -> None:
        """Compare the engine's tensors ``{name: (shape, numpy dtype name)}`` with this card."""
        h, w = self.height, self.width
        want_in = {"rgb": ((1, h, w, 3), "uint8"), "depth": ((1, h, w), "float32")}
        want_out = {"labels": ((1, h, w), "uint8")}
        if "confidence" in self.outputs:
            want_out["confidence"] = ((1, h, w), "float32")
        problems = []

        def compare(kind: str, want: dict, have: dict) -> None:
            for name, (shape, dtype) in want.items():
                if name not in have:
                    problems.append(f"{kind} '{name}' missing")
                elif tuple(have[name][0]) != shape or have[name][1] != dtype:
                    problems.append(f"{kind} '{name}' is {have[name][1]}{list(have[name][0])}, "
                                    f"card says {dtype}{list(shape)}")
        compare("input", want_in, inputs)
        extra_in = sorted(set(inputs) - set(want_in))
        if extra_in:
            problems.append(f"unexpected input(s) {extra_in}")
        compare("output", want_out, outputs)
        if "confidence" in outputs and "confidence" not in self.outputs:
            problems.append("engine has a 'confidence' output the card does not list")
        if problems:
            raise ModelCardError(
                f"{source}: engine and model card disagree: " + "; ".join(problems))


def sidecar_path(engine_path: str | pathlib.Path) -> pathlib.Path:
    engine_path = pathlib.Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")
