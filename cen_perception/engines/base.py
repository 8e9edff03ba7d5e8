"""The one small interface every inference backend implements."""
from __future__ import annotations

import abc
from typing import Optional

import numpy as np

from ..errors import CenPerceptionError
from ..model_card import ModelCard


class EngineError(CenPerceptionError, RuntimeError):
    """An engine could not be loaded or run; the message is one readable line."""


class Engine(abc.ABC):
    """Runs a segmentation engine on one RGB-D frame at the engine's input size.

    ``infer(rgb, depth)`` takes ``rgb`` uint8 ``[H, W, 3]`` (RGB order) and ``depth`` float32
    ``[H, W]`` in metres (0 = invalid) with ``(H, W) == input_size`` and returns
    ``(labels uint8 [H, W], confidence float32 [H, W] or None)``.
    """

    backend: str = "?"
    closed: bool = False

    def __init__(self, card: ModelCard) -> None:
        self.card = card

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) the engine expects."""
        return self.card.height, self.card.width

    @property
    def has_confidence(self) -> bool:
        return "confidence" in self.card.outputs

    def check_inputs(self, rgb: np.ndarray, depth: np.ndarray) -> None:
        h, w = self.input_size
        if rgb.shape != (h, w, 3) or rgb.dtype != np.uint8:
            raise ValueError(f"rgb must be uint8 [{h}, {w}, 3], got {rgb.dtype}{list(rgb.shape)}")
        if depth.shape != (h, w) or depth.dtype != np.float32:
            raise ValueError(
                f"depth must be float32 [{h}, {w}], got {depth.dtype}{list(depth.shape)}")

    @abc.abstractmethod
    def infer(self, rgb: np.ndarray, depth: np.ndarray) -> tuple[np.ndarray, Optional[np.ndarray]]:
        ...

    def close(self) -> None:
        """Release the engine's resources; ``infer`` refuses to run afterwards."""
        self.closed = True
