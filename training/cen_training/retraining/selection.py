"""Frames worth labelling: how unsure a model is of each frame, and picks spread over time.

A frame's score (higher = less sure), over the pixels with valid depth (all pixels when a
frame has none):

* ``entropy``: the mean per-pixel entropy of the softmax of the ensemble logits, divided by
  ln C (0 = certain, 1 = every class equally likely). Needs the engine's ``logits`` output
  (``cen-train export --logits``), read through ONNX Runtime;
* ``confidence``: 1 - the mean of the engine's ``confidence`` output (the largest softmax
  probability per pixel).

``auto`` takes entropy where the engine has logits, else confidence; an engine with neither
is refused. Labels come from the same run, at the camera's size, as the node computes them
(``cen_perception.segmenter``). ``spread_picks`` then chooses greedily by score, never two
frames closer in time than a minimum gap.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

import cv2
import numpy as np

from cen_perception.camera_images import ColorImage, DepthImage, resize

from ..errors import ConfigError

SCORE_KINDS = ("auto", "entropy", "confidence")
LOGITS_OUTPUT = "logits_ensemble"


@dataclass
class FrameScore:
    """One frame's uncertainty and the model's labels for it."""
    score: float
    kind: str  # entropy | confidence
    valid_fraction: float  # share of the pixels scored that had valid depth
    labels: np.ndarray  # uint8 [H, W] at the camera's size

    @property
    def reason(self) -> str:
        """What the score is, in words, for the ranked list."""
        what = ("mean softmax entropy / ln C" if self.kind == "entropy"
                else "1 - mean confidence")
        where = (f"over the {100 * self.valid_fraction:.0f}% of pixels with valid depth"
                 if self.valid_fraction > 0 else "over all pixels (no valid depth)")
        return f"{what} {self.score:.4f} {where}"


def engine_logits_available(engine) -> bool:
    """Whether ``engine`` gives its ensemble logits (an ONNX file exported with them, run by
    ONNX Runtime)."""
    session = getattr(engine, "session", None)
    return ("logits" in engine.card.outputs and session is not None
            and LOGITS_OUTPUT in {o.name for o in session.get_outputs()})


def choose_score(engine, requested: str, source: str) -> str:
    """The score ``requested`` (auto | entropy | confidence) resolved for ``engine``;
    ``ConfigError`` when the engine lacks what it needs."""
    if requested not in SCORE_KINDS:
        raise ConfigError(f"unknown score {requested!r}; choose from {', '.join(SCORE_KINDS)}")
    has_logits = engine_logits_available(engine)
    if requested == "auto":
        if has_logits:
            return "entropy"
        if engine.has_confidence:
            return "confidence"
        raise ConfigError(f"{source}: the engine has neither a confidence nor a logits output, "
                          "so frames cannot be scored; export it with --confidence (or "
                          "--logits)")
    if requested == "entropy" and not has_logits:
        raise ConfigError(f"{source}: entropy needs the ensemble logits (an ONNX file exported "
                          "with --logits, run by ONNX Runtime); use --score confidence")
    if requested == "confidence" and not engine.has_confidence:
        raise ConfigError(f"{source}: the engine has no confidence output (export it with "
                          "--confidence)")
    return requested


class UncertaintyScorer:
    """Scores camera frames with ``engine`` (see the module docstring); ``scorer(rgb, depth)``
    -> :class:`FrameScore`."""

    def __init__(self, engine, kind: str = "auto", source: str = "engine") -> None:
        from cen_perception.segmenter import Segmenter

        self.engine = engine
        self.kind = choose_score(engine, kind, source)
        self.segmenter = Segmenter(engine)

    def __call__(self, rgb: np.ndarray, depth: np.ndarray) -> FrameScore:
        if self.kind == "confidence":
            result = self.segmenter.run(rgb, depth)
            score, valid_fraction = masked_mean(1.0 - result.confidence, valid_depth(result.depth))
            return FrameScore(score, "confidence", valid_fraction, result.labels)
        return self._entropy(rgb, depth)

    def _entropy(self, rgb: np.ndarray, depth: np.ndarray) -> FrameScore:
        # The segmenter's inputs, then one run for labels and logits together.
        rgb_in, depth_in = self.segmenter.engine_inputs(ColorImage(rgb), DepthImage(depth))
        self.engine.check_inputs(rgb_in, depth_in)
        labels, logits = self.engine.session.run(
            ["labels", LOGITS_OUTPUT], {"rgb": rgb_in[None], "depth": depth_in[None]})
        logits = logits[0].astype(np.float64)  # [C, h, w]
        entropy = softmax_entropy(logits) / math.log(max(logits.shape[0], 2))
        valid = cv2.resize(valid_depth(depth_in).astype(np.uint8),
                           (logits.shape[2], logits.shape[1]),
                           interpolation=cv2.INTER_NEAREST).astype(bool)
        score, valid_fraction = masked_mean(entropy, valid)
        labels = resize(labels[0], rgb.shape[:2], cv2.INTER_NEAREST)
        return FrameScore(score, "entropy", valid_fraction, labels)


def softmax_entropy(logits: np.ndarray) -> np.ndarray:
    """Per-pixel entropy (nats) of the softmax over axis 0 of ``[C, H, W]`` logits."""
    shifted = logits - logits.max(axis=0, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=0, keepdims=True))
    return -(np.exp(log_p) * log_p).sum(axis=0)


def valid_depth(depth: np.ndarray) -> np.ndarray:
    return np.isfinite(depth) & (depth > 0)


def masked_mean(values: np.ndarray, valid: np.ndarray) -> tuple[float, float]:
    """(mean of ``values`` where ``valid``, or over everything when nothing is; the valid
    share)."""
    fraction = float(valid.mean())
    return float(values[valid].mean() if fraction > 0 else values.mean()), fraction


def spread_picks(stamps_ns: list[int], scores: list[float], budget: int,
                 min_gap_s: float) -> list[int]:
    """Indices of up to ``budget`` frames, best score first: greedily the highest score whose
    stamp lies at least ``min_gap_s`` from every frame already picked (ties: the earlier)."""
    gap = round(min_gap_s * 1e9)
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], stamps_ns[i]))
    picked: list[int] = []
    picked_stamps: list[int] = []  # sorted, to find the nearest pick by bisection
    for index in order:
        if len(picked) >= budget:
            break
        stamp = stamps_ns[index]
        at = bisect.bisect_left(picked_stamps, stamp)
        near = [picked_stamps[j] for j in (at - 1, at) if 0 <= j < len(picked_stamps)]
        if all(abs(stamp - other) >= gap for other in near):
            picked.append(index)
            picked_stamps.insert(at, stamp)
    return picked


__all__ = ["SCORE_KINDS", "FrameScore", "UncertaintyScorer", "choose_score",
           "engine_logits_available", "masked_mean", "softmax_entropy", "spread_picks"]
