"""TensorRT backend: an engine from ``cen-train build-engine`` with its ``<engine>.json`` card.

Uses TensorRT's name-based I/O API (TensorRT 8.6, 10.x and 11.x) and cuda-python for pinned
host buffers, device buffers and one CUDA stream. The CUDA device is checked before TensorRT is
imported: on a machine without a driver, creating a TensorRT runtime can crash the process
at exit, so such machines get a clean ``EngineError`` instead, one that says what is missing
(no driver, a driver too old for the installed cuda-python, no GPU).

cuda-python must match the driver: cuda-python 13 needs a CUDA 13 driver (580 or newer), so
JetPack 6 and other CUDA 12 machines need ``cuda-python>=12,<13`` (the ``tensorrt`` extra).
Both of its module layouts work: ``cuda.bindings.runtime`` (12.6 and newer, 13) and
``cuda.cudart`` (before 13).

TensorRT's pip packages come per CUDA major version too (``tensorrt-cu12``, ``tensorrt-cu13``;
the bare ``tensorrt`` takes the CUDA 13 one): one built for a newer CUDA than the driver cannot
initialise CUDA, and opening an engine then raises one ``EngineError`` line naming the driver's
CUDA version and the installed variant (``construct_tensorrt``).
"""
from __future__ import annotations

import ctypes
import importlib
import math
import pathlib
import re
import warnings
from importlib import metadata
from typing import Callable, Optional

import numpy as np

from ..model_card import ModelCard
from .base import Engine, EngineError

MIN_TENSORRT = (8, 6)
# TensorRT data type names -> the numpy dtype names the model card uses.
_TRT_DTYPES = {"FLOAT": "float32", "HALF": "float16", "INT8": "int8", "INT32": "int32",
               "INT64": "int64", "BOOL": "bool", "UINT8": "uint8"}
# Options of the ONNX Runtime backend: accepted and ignored, so one call site can open either.
_ONNXRUNTIME_OPTIONS = ("threads", "providers", "spin_wait")
USE_ONNX_RUNTIME = "use the ONNX model with ONNX Runtime instead"


# -- cuda-python helpers (also used by the engine builder and gpu-check) -------------------
# cuda-python's runtime module: the layout of 12.6 and newer (the only one in 13), then the
# layout before 13 (12.x keeps it, with a FutureWarning).
CUDART_MODULES = ("cuda.bindings.runtime", "cuda.cudart")


def import_cudart(modules: tuple[str, ...] = CUDART_MODULES):
    """The CUDA runtime module of cuda-python, the first of ``modules`` that imports."""
    for name in modules:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                return importlib.import_module(name)
        except ImportError:
            continue
    raise EngineError("cuda-python is not installed (pip install 'cuda-python>=12,<13' for a "
                      "CUDA 12 driver, 'cuda-python>=13,<14' for CUDA 13); the TensorRT backend "
                      "needs it for GPU buffers")


def bindings_version() -> str:
    """The installed cuda-python bindings' version, e.g. ``12.9.10``."""
    for distribution in ("cuda-bindings", "cuda-python"):
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


def cuda_version_text(version: int) -> str:
    """A CUDA version number as the runtime reports it (12020) as text ("12.2")."""
    return f"{version // 1000}.{version % 1000 // 10}"


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


def cuda_environment_error(error_name: str, driver_version: int, runtime_version: int,
                           bindings: str, engine_advice: bool = True) -> str:
    """The one line for a machine whose CUDA devices cannot be used.

    ``error_name``: what ``cudaGetDeviceCount`` returned (``cudaSuccess`` with a count of 0
    means no GPU); ``driver_version``: ``cudaDriverGetVersion`` (0 = no driver);
    ``runtime_version``: ``cudaRuntimeGetVersion`` (the CUDA version cuda-python is built for);
    ``bindings``: cuda-python's version. ``engine_advice``: end with what to use instead of
    TensorRT (the fix for a driver older than the bindings is always given).
    """
    python = f"cuda-python {bindings}, CUDA {cuda_version_text(runtime_version)} runtime"
    driver = f"driver for CUDA {cuda_version_text(driver_version)}"
    if error_name == "cudaErrorInsufficientDriver" and driver_version > 0:
        major = driver_version // 1000
        return (f"the NVIDIA {driver} is older than {python} ({error_name}): install the "
                f"bindings for this driver (pip install 'cuda-python>={major},<{major + 1}'; "
                "JetPack 6 has CUDA 12) or update the driver")
    if error_name == "cudaErrorInsufficientDriver":
        cause = (f"no NVIDIA driver found (cudaGetDeviceCount: {error_name}, driver version 0; "
                 f"{python})")
        advice = "TensorRT needs an NVIDIA GPU and its driver"
    elif error_name in ("cudaErrorNoDevice", "cudaSuccess"):
        cause = f"no CUDA GPU found ({error_name}; NVIDIA {driver}, {python})"
        advice = "TensorRT needs an NVIDIA GPU"
    else:
        cause = f"no usable CUDA GPU (cudaGetDeviceCount: {error_name}; NVIDIA {driver}, {python})"
        advice = "TensorRT needs a working NVIDIA GPU and driver"
    return f"{cause}: {advice}; {USE_ONNX_RUNTIME}" if engine_advice else cause


def cuda_device_problem(cudart) -> Optional[str]:
    """Why no CUDA device can be used (``cuda_environment_error`` without the engine advice),
    or None where at least one can."""
    error, count = cudart.cudaGetDeviceCount()
    if error == cudart.cudaError_t.cudaSuccess and count > 0:
        return None
    return _environment_error(cudart, error, engine_advice=False)


def _environment_error(cudart, error, engine_advice: bool = True) -> str:
    _, driver = cudart.cudaDriverGetVersion()
    _, runtime = cudart.cudaRuntimeGetVersion()
    return cuda_environment_error(cuda_error_name(cudart, error), int(driver or 0),
                                  int(runtime or 0), bindings_version(), engine_advice)


def require_cuda_device(cudart, device: int = 0) -> None:
    """Make ``device`` current; one clear line where there is no driver or no such GPU."""
    error, count = cudart.cudaGetDeviceCount()
    if error != cudart.cudaError_t.cudaSuccess or count == 0:
        raise EngineError(_environment_error(cudart, error))
    if not 0 <= device < count:
        raise EngineError(f"CUDA device {device} does not exist ({count} GPU(s) found)")
    cuda_call(cudart, cudart.cudaSetDevice(device), f"cudaSetDevice({device})")


def stream_handle(stream) -> int:
    """The address of a cuda-python stream, as TensorRT's ``execute_async_v3`` takes it.

    ``int(stream)`` is deprecated in cuda-python; ``get_cuda_native_handle`` replaces it
    (12.9.1 and newer, 13.x), but raises ``TypeError`` for a type it has no handler for (a
    plain address, or a stream type of another cuda-python layout): those take ``int``.
    """
    try:
        from cuda.bindings.utils import get_cuda_native_handle
    except ImportError:
        return int(stream)
    try:
        return int(get_cuda_native_handle(stream))
    except TypeError:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the deprecation of int(stream)
            return int(stream)


# pip's CUDA variants of TensorRT (the bare ``tensorrt`` package pulls in one of them: the CUDA
# 13 one for recent releases). JetPack's apt package (python3-libnvinfer) is none of them.
TENSORRT_VARIANTS = ("tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu11")
NOT_FROM_PIP = "not from pip: JetPack's apt package or a local build"


def tensorrt_distribution(version_of: Callable[[str], str] = metadata.version) -> str:
    """Which TensorRT is installed, as pip knows it: ``tensorrt-cu12``, ``tensorrt-cu13``
    (several joined with "+" where more than one is installed), ``tensorrt`` for the bare
    package without a variant on record, or ``NOT_FROM_PIP``. Part of the engine cache key:
    the CUDA 12 and 13 builds of one version report the same ``__version__``."""
    found = []
    for name in TENSORRT_VARIANTS:
        try:
            version_of(name)
        except metadata.PackageNotFoundError:
            continue
        found.append(name)
    if found:
        return "+".join(found)
    try:
        version_of("tensorrt")
        return "tensorrt"
    except metadata.PackageNotFoundError:
        return NOT_FROM_PIP


def variant_cuda_major(distribution: str) -> Optional[int]:
    """The CUDA major version a pip variant is built for (``tensorrt-cu12`` -> 12), or None."""
    majors = [int(m) for m in re.findall(r"tensorrt-cu(\d+)", distribution)]
    return max(majors) if majors else None


def cuda_init_failure(what: str, tensorrt: str, distribution: str, driver_version: int) -> str:
    """The one line for a TensorRT that cannot initialise CUDA (``trt.Runtime`` or
    ``trt.Builder`` returned nothing; TensorRT logs "CUDA initialization failure" above it).

    ``driver_version``: ``cudaDriverGetVersion`` (12040 for CUDA 12.4, 0 for none). Where the
    installed pip variant needs a newer CUDA than the driver offers, the line names the variant
    that fits the driver.
    """
    driver = (f"the NVIDIA driver supports CUDA {cuda_version_text(driver_version)}"
              if driver_version > 0 else "no NVIDIA driver was found")
    line = f"TensorRT {tensorrt} ({distribution}) cannot initialise CUDA ({what}); {driver}"
    needs, major = variant_cuda_major(distribution), driver_version // 1000
    if needs is not None and 0 < major < needs:
        installed = " ".join(f"{name} {name}-bindings {name}-libs"
                             for name in distribution.split("+"))
        return (f"{line}, but {distribution} is built for CUDA {needs}: pip uninstall tensorrt "
                f"{installed}, then pip install tensorrt-cu{major} (or update the driver)")
    return f"{line}: see TensorRT's log above for the CUDA error"


def driver_cuda_version(cudart) -> int:
    """``cudaDriverGetVersion`` as a number (12040 = CUDA 12.4; 0 where there is no driver)."""
    error, version = cudart.cudaDriverGetVersion()
    return int(version or 0) if error == cudart.cudaError_t.cudaSuccess else 0


def construct_tensorrt(factory: Callable, logger, what: str, cudart, tensorrt: str,
                       distribution: Optional[str] = None):
    """``factory(logger)`` (``trt.Runtime`` or ``trt.Builder``); ``EngineError`` with
    ``cuda_init_failure``'s line where TensorRT cannot initialise CUDA.

    TensorRT's bindings then raise pybind's ``TypeError: ... factory function returned
    nullptr`` (some versions return None); any other ``TypeError`` is a real one and passes.
    """
    try:
        made = factory(logger)
    except TypeError as exc:
        if "nullptr" not in str(exc):
            raise
        made = None
    if made is None:
        raise EngineError(cuda_init_failure(what, tensorrt, distribution or
                                            tensorrt_distribution(), driver_cuda_version(cudart)))
    return made


def tensorrt_version(text: str) -> tuple[int, int, int]:
    """(major, minor, patch) of a TensorRT version string ("10.3.0.26", "8.6.1.post1")."""
    match = re.match(r"\s*(\d+)(?:\.(\d+))?(?:\.(\d+))?", str(text))
    if not match:
        raise EngineError(f"cannot read the TensorRT version {text!r}")
    return tuple(int(part or 0) for part in match.groups())  # type: ignore[return-value]


def import_tensorrt():
    """The ``tensorrt`` module, checked to be recent enough for the name-based I/O API."""
    try:
        import tensorrt as trt
    except ImportError:
        raise EngineError("TensorRT is not installed (its Python package `tensorrt` comes with "
                          f"JetPack or NVIDIA's pip index); {USE_ONNX_RUNTIME}") from None
    if tensorrt_version(trt.__version__)[:2] < MIN_TENSORRT:
        raise EngineError(f"TensorRT {trt.__version__} is too old; "
                          f"{'.'.join(map(str, MIN_TENSORRT))} or newer is needed")
    return trt


def tensorrt_dtype_name(dtype) -> str:
    name = getattr(dtype, "name", str(dtype).rsplit(".", 1)[-1])
    return _TRT_DTYPES.get(name, name.lower())


class CudaBuffers:
    """Pinned host arrays and device buffers of fixed shapes, copied on one CUDA stream.

    ``host[name]`` is a numpy view of page-locked memory (fast, asynchronous copies);
    ``device[name]`` the device address. The calling thread's current device must be the one
    the buffers live on.
    """

    def __init__(self, cudart, tensors: dict[str, tuple[tuple[int, ...], str]]) -> None:
        self._cudart = cudart
        self.host: dict[str, np.ndarray] = {}
        self.device: dict[str, int] = {}
        self._host_ptrs: list[int] = []
        self.stream = None
        try:
            self.stream = cuda_call(cudart, cudart.cudaStreamCreate(), "cudaStreamCreate")
            for name, (shape, dtype) in tensors.items():
                nbytes = max(1, math.prod(shape) * np.dtype(dtype).itemsize)
                host_ptr = cuda_call(cudart, cudart.cudaMallocHost(nbytes), "cudaMallocHost")
                self._host_ptrs.append(host_ptr)
                raw = (ctypes.c_uint8 * nbytes).from_address(host_ptr)
                self.host[name] = np.frombuffer(raw, dtype=dtype,
                                                count=math.prod(shape)).reshape(shape)
                self.device[name] = cuda_call(cudart, cudart.cudaMalloc(nbytes), "cudaMalloc")
        except BaseException:
            self.close()
            raise

    @property
    def stream_handle(self) -> int:
        return stream_handle(self.stream)

    def _copy(self, name: str, to_device: bool) -> None:
        cudart, host = self._cudart, self.host[name]
        kinds = cudart.cudaMemcpyKind
        if to_device:
            args = (self.device[name], host.ctypes.data, host.nbytes,
                    kinds.cudaMemcpyHostToDevice, self.stream)
        else:
            args = (host.ctypes.data, self.device[name], host.nbytes,
                    kinds.cudaMemcpyDeviceToHost, self.stream)
        cuda_call(cudart, cudart.cudaMemcpyAsync(*args),
                  f"copying '{name}' {'to' if to_device else 'from'} the GPU")

    def to_device(self, name: str) -> None:
        """Queue a copy of ``host[name]`` to the GPU on the stream."""
        self._copy(name, True)

    def to_host(self, name: str) -> None:
        """Queue a copy of the GPU buffer into ``host[name]`` on the stream."""
        self._copy(name, False)

    def synchronize(self) -> None:
        cuda_call(self._cudart, self._cudart.cudaStreamSynchronize(self.stream),
                  "cudaStreamSynchronize")

    def close(self) -> None:
        """Wait for the stream, free everything. Safe to call twice."""
        cudart = self._cudart
        self.host = {}
        if self.stream is not None:
            cudart.cudaStreamSynchronize(self.stream)
        for ptr in self.device.values():
            cudart.cudaFree(ptr)
        for ptr in self._host_ptrs:
            cudart.cudaFreeHost(ptr)
        if self.stream is not None:
            cudart.cudaStreamDestroy(self.stream)
        self.device, self._host_ptrs, self.stream = {}, [], None


class TensorRTEngine(Engine):
    """A serialized TensorRT engine with its sidecar model card.

    ``device``: the CUDA device index; every call makes it current in the calling thread, so
    ``infer`` may run on any thread (the node runs it on its worker). ``threads``,
    ``providers`` and ``spin_wait`` (ONNX Runtime options) are accepted and ignored.
    """

    backend = "tensorrt"

    def __init__(self, path: str | pathlib.Path, device: int = 0, **options) -> None:
        # Everything close() touches exists from the start, so a half-built engine closes cleanly.
        self._cudart = None
        self._device = int(device)
        self._runtime = self._engine = self._context = None
        self._buffers: Optional[CudaBuffers] = None
        unknown = sorted(set(options) - set(_ONNXRUNTIME_OPTIONS))
        if unknown:
            raise EngineError(f"unknown TensorRT backend option(s): {', '.join(unknown)}")

        path = pathlib.Path(path)
        if not path.is_file():
            raise EngineError(f"engine file not found: {path}")
        super().__init__(ModelCard.load_sidecar(path))
        cudart = import_cudart()
        require_cuda_device(cudart, self._device)
        self._cudart = cudart
        try:
            self._load(path, import_tensorrt())
        except BaseException:
            self.close()
            raise

    def _use_device(self) -> None:
        # The current device is per thread: set it wherever the engine is touched (~1 us).
        cuda_call(self._cudart, self._cudart.cudaSetDevice(self._device),
                  f"cudaSetDevice({self._device})")

    def _load(self, path: pathlib.Path, trt) -> None:
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = construct_tensorrt(trt.Runtime, self._logger, "trt.Runtime failed",
                                           self._cudart, trt.__version__)
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
        # Every I/O tensor needs a device address, including outputs nobody reads (logits).
        self._buffers = CudaBuffers(self._cudart, {**inputs, **outputs})
        for name, address in self._buffers.device.items():
            # Addresses stay valid for the engine's life, so they are set once.
            if not self._context.set_tensor_address(name, address):
                raise EngineError(f"{path}: TensorRT refused the buffer for tensor '{name}'")
        self._outputs = ("labels",) + (("confidence",) if self.has_confidence else ())

    def infer(self, rgb: np.ndarray, depth: np.ndarray) -> tuple[np.ndarray, Optional[np.ndarray]]:
        if self._context is None:
            raise EngineError("TensorRT engine is closed")
        self.check_inputs(rgb, depth)
        self._use_device()
        buffers = self._buffers
        np.copyto(buffers.host["rgb"][0], rgb)
        np.copyto(buffers.host["depth"][0], depth)
        buffers.to_device("rgb")
        buffers.to_device("depth")
        if not self._context.execute_async_v3(buffers.stream_handle):
            raise EngineError("TensorRT inference failed (see the TensorRT log above)")
        for name in self._outputs:
            buffers.to_host(name)
        buffers.synchronize()
        # Copies: the pinned buffers are overwritten by the next call.
        labels = buffers.host["labels"][0].copy()
        confidence = buffers.host["confidence"][0].copy() if self.has_confidence else None
        return labels, confidence

    def close(self) -> None:
        """Free the TensorRT objects, then the buffers and the stream. Safe to call twice."""
        # Context before engine before runtime: each depends on the next.
        self._context = None
        self._engine = None
        self._runtime = None
        if self._cudart is None or self._buffers is None:
            return
        try:
            self._use_device()
        except EngineError:
            pass  # free what can be freed
        self._buffers.close()
        self._buffers = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown may have torn down the modules already
            pass


__all__ = ["TensorRTEngine", "CudaBuffers", "import_cudart", "import_tensorrt",
           "require_cuda_device", "cuda_call", "cuda_error_name", "cuda_environment_error",
           "cuda_device_problem",
           "bindings_version", "stream_handle", "tensorrt_version", "tensorrt_dtype_name",
           "tensorrt_distribution", "variant_cuda_major", "cuda_init_failure",
           "driver_cuda_version", "construct_tensorrt", "TENSORRT_VARIANTS"]
