"""ONNX Runtime backend: the CPU default, with CUDA/TensorRT execution providers on request."""
from __future__ import annotations

import pathlib
from typing import Optional, Sequence

import numpy as np

from ..errors import one_line
from ..model_card import ModelCard, ModelCardError
from .base import Engine, EngineError

_ORT_TYPES = {"tensor(uint8)": "uint8", "tensor(float)": "float32", "tensor(int64)": "int64",
              "tensor(float16)": "float16", "tensor(int32)": "int32"}
# Asked for with providers="gpu": the first that this onnxruntime build offers wins, CPU last.
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


class OnnxRuntimeEngine(Engine):
    """An exported ``.onnx`` model run by ONNX Runtime.

    ``threads``: intra-op threads (0 = ONNX Runtime's default, all cores).
    ``providers``: ``"cpu"`` (default), ``"gpu"`` (TensorRT/CUDA providers when this build has
    them, then CPU), or an explicit list of provider names.
    ``spin_wait``: let idle intra-op threads spin between runs (ONNX Runtime's default, best
    for back-to-back runs). A process with other work between runs, such as the node's
    decoding and publishing, gets those cores back sooner with ``False``.
    """

    backend = "onnxruntime"

    def __init__(self, path: str | pathlib.Path, threads: int = 0,
                 providers: str | Sequence[str] = "cpu", spin_wait: bool = True) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise EngineError("onnxruntime is not installed (pip install onnxruntime)") from None
        path = pathlib.Path(path)
        if not path.is_file():
            raise EngineError(f"engine file not found: {path}")
        available = ort.get_available_providers()
        if providers == "cpu":
            chosen = ["CPUExecutionProvider"]
        elif providers == "gpu":
            chosen = [p for p in GPU_PROVIDERS if p in available] + ["CPUExecutionProvider"]
        else:
            chosen = list(providers)
            missing = [p for p in chosen if p not in available]
            if missing:
                raise EngineError(f"onnxruntime has no {', '.join(missing)} "
                                  f"(this build offers {', '.join(available)})")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        if not spin_wait:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=chosen)
        except Exception as exc:  # ORT raises its own exception types for corrupt files
            raise EngineError(f"{path}: not a loadable ONNX model ({one_line(exc)})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        card = ModelCard.from_metadata(meta, source=str(path))
        card.check_io(self._io(self.session.get_inputs()), self._io(self.session.get_outputs()),
                      source=str(path))
        super().__init__(card)
        self.providers = self.session.get_providers()
        self._outputs = ["labels"] + (["confidence"] if self.has_confidence else [])

    @staticmethod
    def _io(args) -> dict[str, tuple[tuple, str]]:
        out = {}
        for a in args:
            shape = tuple(d if isinstance(d, int) else -1 for d in a.shape)
            out[a.name] = (shape, _ORT_TYPES.get(a.type, a.type))
        return out

    def infer(self, rgb: np.ndarray, depth: np.ndarray) -> tuple[np.ndarray, Optional[np.ndarray]]:
        if self.closed:
            raise EngineError("the engine is closed")
        self.check_inputs(rgb, depth)
        result = self.session.run(self._outputs, {"rgb": rgb[None], "depth": depth[None]})
        labels = result[0][0]
        confidence = result[1][0] if self.has_confidence else None
        return labels, confidence

    def close(self) -> None:
        super().close()
        self.session = None  # the session's memory goes with it


__all__ = ["OnnxRuntimeEngine", "ModelCardError"]
