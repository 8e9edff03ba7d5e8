"""TensorRT backend: an engine from ``cen-train build-engine`` with its ``<engine>.json`` card.

Uses TensorRT's name-based I/O API (TensorRT 8.6 or newer) and cuda-python for pinned host
buffers, device buffers and one CUDA stream. The CUDA device is checked before TensorRT is
imported: on a machine without a driver, creating a TensorRT runtime can crash the process
at exit, so such machines get a clean ``EngineError`` instead.
"""
from __future__ import annotations

import ctypes
import math
import pathlib
from typing import Optional

import numpy as np

from ..model_card import ModelCard
from .base import Engine, EngineError

MIN_TENSORRT = (8, 6)
# TensorRT data type names -> the numpy dtype names the model card uses.
_TRT_DTYPES = {"FLOAT": "float32", "HALF": "float16", "INT8": "int8", "INT32": "int32",
               "INT64": "int64", "BOOL": "bool", "UINT8": "uint8"}
# Options of the ONNX Runtime backend: accepted and ignored, so one call site can open either.
_ONNXRUNTIME_OPTIONS = ("threads", "providers")


# -- cuda-python helpers (also used by the engine builder) ---------------------------------
def import_cudart():
    """The CUDA runtime module of cuda-python, in its new (``cuda.bindings``) or old layout."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError:
            raise EngineError("cuda-python is not installed (pip install cuda-python); "
                              "the TensorRT backend needs it for GPU buffers") from None
    return cudart


def cuda_error_name(cudart, error) -> str:
    status, name = cudart.cudaGetErrorName(error)
    if status == cudart.cudaError_t.cudaSuccess and name:
        return name.decode() if isinstance(name, bytes) else str(name)
    return getattr(error, "name", str(error))


def cuda_call(cudart, result, what: str):
    """Unpack a cuda-python ``(error, *values)`` result; raise ``EngineError`` on a CUDA error."""
    error, *values = result
    if error != cudart.cudaError_t.cudaSuccess:
        raise EngineError(f"{what} failed: {cuda_error_name(cudart, error)}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def require_cuda_device(cudart, device: int = 0) -> None:
    """Make ``device`` current; one clear line where there is no driver or no such GPU."""
    error, count = cudart.cudaGetDeviceCount()
    if error != cudart.cudaError_t.cudaSuccess:
        raise EngineError(f"no usable CUDA GPU ({cuda_error_name(cudart, error)}): TensorRT needs "
                          "an NVIDIA GPU and driver; use the ONNX model with ONNX Runtime instead")
    if count == 0:
        raise EngineError("no CUDA GPU found: TensorRT needs an NVIDIA GPU; "
                          "use the ONNX model with ONNX Runtime instead")
    if not 0 <= device < count:
        raise EngineError(f"CUDA device {device} does not exist ({count} GPU(s) found)")
    cuda_call(cudart, cudart.cudaSetDevice(device), f"cudaSetDevice({device})")


def import_tensorrt():
    """The ``tensorrt`` module, checked to be recent enough for the name-based I/O API."""
    try:
        import tensorrt as trt
    except ImportError:
        raise EngineError("TensorRT is not installed (its Python package `tensorrt` comes with "
                          "JetPack or NVIDIA's pip index); use the ONNX model with ONNX Runtime "
                          "instead") from None
    version = tuple(int(p) for p in trt.__version__.split(".")[:2] if p.isdigit())
    if version < MIN_TENSORRT:
        raise EngineError(f"TensorRT {trt.__version__} is too old; "
                          f"{'.'.join(map(str, MIN_TENSORRT))} or newer is needed")
    return trt


def tensorrt_dtype_name(dtype) -> str:
    name = getattr(dtype, "name", str(dtype).rsplit(".", 1)[-1])
    return _TRT_DTYPES.get(name, name.lower())


class TensorRTEngine(Engine):
    """A serialized TensorRT engine with its sidecar model card.

    ``device``: the CUDA device index. ``threads``/``providers`` (ONNX Runtime options) are
    accepted and ignored.
    """

    backend = "tensorrt"

    def __init__(self, path: str | pathlib.Path, device: int = 0, **options) -> None:
        # Everything close() touches exists from the start, so a half-built engine closes cleanly.
        self._cudart = None
        self._runtime = self._engine = self._context = None
        self._stream = None
        self._host: dict[str, np.ndarray] = {}
        self._host_ptrs: list[int] = []
        self._device_ptrs: dict[str, int] = {}
        unknown = sorted(set(options) - set(_ONNXRUNTIME_OPTIONS))
        if unknown:
            raise EngineError(f"unknown TensorRT backend option(s): {', '.join(unknown)}")

        path = pathlib.Path(path)
        if not path.is_file():
            raise EngineError(f"engine file not found: {path}")
        super().__init__(ModelCard.load_sidecar(path))
        cudart = import_cudart()
        require_cuda_device(cudart, int(device))
        self._cudart = cudart
        try:
            self._load(path, import_tensorrt())
        except BaseException:
            self.close()
            raise

    def _load(self, path: pathlib.Path, trt) -> None:
        cudart = self._cudart
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        try:
            self._engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        except Exception:  # some versions raise instead of returning None
            self._engine = None
        if self._engine is None:
            raise EngineError(f"{path}: not an engine TensorRT {trt.__version__} can load on this "
                              "GPU (engines are tied to the TensorRT version and GPU that built "
                              "them; rebuild it with `cen-train build-engine`)")
        inputs, outputs = {}, {}
        for i in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(i)
            shape = tuple(int(d) for d in self._engine.get_tensor_shape(name))
            dtype = tensorrt_dtype_name(self._engine.get_tensor_dtype(name))
            is_input = self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (inputs if is_input else outputs)[name] = (shape, dtype)
        self.card.check_io(inputs, outputs, source=str(path))

        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise EngineError(f"{path}: TensorRT could not create an execution context "
                              "(out of GPU memory?)")
        self._stream = cuda_call(cudart, cudart.cudaStreamCreate(), "cudaStreamCreate")
        # Every I/O tensor needs a device address, including outputs nobody reads (logits).
        for name, (shape, dtype) in {**inputs, **outputs}.items():
            nbytes = math.prod(shape) * np.dtype(dtype).itemsize
            host_ptr = cuda_call(cudart, cudart.cudaMallocHost(nbytes), "cudaMallocHost")
            self._host_ptrs.append(host_ptr)
            raw = (ctypes.c_uint8 * nbytes).from_address(host_ptr)
            self._host[name] = np.frombuffer(raw, dtype=dtype).reshape(shape)
            self._device_ptrs[name] = cuda_call(cudart, cudart.cudaMalloc(nbytes), "cudaMalloc")
            # Addresses stay valid for the engine's life, so they are set once.
            if not self._context.set_tensor_address(name, self._device_ptrs[name]):
                raise EngineError(f"{path}: TensorRT refused the buffer for tensor '{name}'")
        self._inputs = ("rgb", "depth")
        self._outputs = ("labels",) + (("confidence",) if self.has_confidence else ())

    def _to_device(self, name: str) -> None:
        cudart, host = self._cudart, self._host[name]
        kind = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        cuda_call(cudart, cudart.cudaMemcpyAsync(self._device_ptrs[name], host.ctypes.data,
                                                 host.nbytes, kind, self._stream),
                  f"copying '{name}' to the GPU")

    def _to_host(self, name: str) -> None:
        cudart, host = self._cudart, self._host[name]
        kind = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        cuda_call(cudart, cudart.cudaMemcpyAsync(host.ctypes.data, self._device_ptrs[name],
                                                 host.nbytes, kind, self._stream),
                  f"copying '{name}' from the GPU")

    def infer(self, rgb: np.ndarray, depth: np.ndarray) -> tuple[np.ndarray, Optional[np.ndarray]]:
        if self._context is None:
            raise EngineError("TensorRT engine is closed")
        self.check_inputs(rgb, depth)
        cudart = self._cudart
        np.copyto(self._host["rgb"][0], rgb)
        np.copyto(self._host["depth"][0], depth)
        for name in self._inputs:
            self._to_device(name)
        if not self._context.execute_async_v3(int(self._stream)):
            raise EngineError("TensorRT inference failed (see the TensorRT log above)")
        for name in self._outputs:
            self._to_host(name)
        cuda_call(cudart, cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        # Copies: the pinned buffers are overwritten by the next call.
        labels = self._host["labels"][0].copy()
        confidence = self._host["confidence"][0].copy() if self.has_confidence else None
        return labels, confidence

    def close(self) -> None:
        """Free the TensorRT objects, then the buffers and the stream. Safe to call twice."""
        # Context before engine before runtime: each depends on the next.
        self._context = None
        self._engine = None
        self._runtime = None
        self._host = {}
        cudart = self._cudart
        if cudart is None:
            return
        if self._stream is not None:
            cudart.cudaStreamSynchronize(self._stream)
        for ptr in self._device_ptrs.values():
            cudart.cudaFree(ptr)
        for ptr in self._host_ptrs:
            cudart.cudaFreeHost(ptr)
        if self._stream is not None:
            cudart.cudaStreamDestroy(self._stream)
        self._device_ptrs, self._host_ptrs, self._stream = {}, [], None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown may have torn down the modules already
            pass


__all__ = ["TensorRTEngine", "import_cudart", "import_tensorrt", "require_cuda_device",
           "cuda_call", "cuda_error_name", "tensorrt_dtype_name"]
