"""Inference backends behind one interface (see ``base.Engine``).

``open_engine(path, backend="auto")`` picks TensorRT for ``.engine``/``.plan`` files and
ONNX Runtime for ``.onnx`` files. ``backend`` may force one: ``tensorrt`` needs a serialized
engine with its ``<engine>.json`` card; ``onnxruntime`` needs an ONNX file.
"""
from __future__ import annotations

import pathlib

from .base import Engine, EngineError

BACKENDS = ("auto", "tensorrt", "onnxruntime")
TENSORRT_SUFFIXES = (".engine", ".plan", ".trt")


def open_engine(path: str | pathlib.Path, backend: str = "auto", **options) -> Engine:
    """Load an engine; raises ``EngineError`` (or ``ModelCardError``) with one clear line."""
    path = pathlib.Path(path)
    if backend not in BACKENDS:
        raise EngineError(f"unknown backend '{backend}' (choose from {', '.join(BACKENDS)})")
    if not path.is_file():
        raise EngineError(f"engine file not found: {path}")
    if backend == "auto":
        backend = "tensorrt" if path.suffix in TENSORRT_SUFFIXES else "onnxruntime"
    if backend == "tensorrt":
        from .tensorrt import TensorRTEngine
        return TensorRTEngine(path, **options)
    from .onnxruntime import OnnxRuntimeEngine
    return OnnxRuntimeEngine(path, **options)


__all__ = ["Engine", "EngineError", "open_engine", "BACKENDS"]
