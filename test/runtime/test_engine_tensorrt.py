"""TensorRT backend: everything up to the GPU, on any machine; the engine itself where a GPU
and TensorRT are present (skipped elsewhere, with the reason).

The refusals that come before the GPU (file, sidecar card, options, routing), the one-line
messages for a machine without a driver, GPU or TensorRT (exactly, for the machine the tests
run on), and cuda-python's two module layouts and stream handles.
"""
import subprocess
import sys
import textwrap
import threading
import warnings
from importlib import metadata

import onnx
import pytest

from cen_perception.engines import EngineError, open_engine
from cen_perception.engines.tensorrt import (
    NOT_FROM_PIP,
    CudaBuffers,
    TensorRTEngine,
    bindings_version,
    construct_tensorrt,
    cuda_call,
    cuda_environment_error,
    cuda_init_failure,
    driver_cuda_version,
    import_cudart,
    require_cuda_device,
    stream_handle,
    tensorrt_distribution,
    variant_cuda_major,
)
from cen_perception.model_card import METADATA_KEY, ModelCard, ModelCardError, sidecar_path

# The clean refusals a machine may give, depending on what it lacks.
ENVIRONMENT_ERRORS = ("cuda-python is not installed", "no NVIDIA driver found",
                      "is older than cuda-python", "no CUDA GPU found", "no usable CUDA GPU",
                      "TensorRT is not installed", "is too old",
                      "not an engine TensorRT")  # the last: GPU and TensorRT present


def _runtime():
    cudart = import_cudart()
    return cudart, cudart.cudaRuntimeGetVersion()[1]


def no_driver_here() -> bool:
    cudart = import_cudart()
    return (cudart.cudaGetDeviceCount()[0] == cudart.cudaError_t.cudaErrorInsufficientDriver
            and cudart.cudaDriverGetVersion()[1] == 0)


def gpu_here() -> bool:
    cudart = import_cudart()
    error, count = cudart.cudaGetDeviceCount()
    return error == cudart.cudaError_t.cudaSuccess and count > 0


@pytest.fixture
def toy_card(toy_onnx_factory) -> ModelCard:
    model = onnx.load(str(toy_onnx_factory(48, 64)))
    return ModelCard.from_json({p.key: p.value for p in model.metadata_props}[METADATA_KEY])


@pytest.fixture
def engine_with_card(tmp_path, toy_card):
    """An engine file with a valid sidecar card; its bytes are no real engine."""
    path = tmp_path / "toy.engine"
    path.write_bytes(b"serialized engine bytes")
    toy_card.save_sidecar(path)
    return path


def test_missing_engine_file_is_clear(tmp_path):
    with pytest.raises(EngineError, match="engine file not found"):
        TensorRTEngine(tmp_path / "nope.engine")


def test_missing_sidecar_card_is_refused(tmp_path):
    path = tmp_path / "model.engine"
    path.write_bytes(b"serialized engine bytes")
    with pytest.raises(ModelCardError, match=r"model\.engine\.json not found beside the engine"):
        TensorRTEngine(path)


def test_corrupt_sidecar_json_is_refused(tmp_path, toy_card):
    path = tmp_path / "model.plan"
    path.write_bytes(b"serialized engine bytes")
    sidecar_path(path).write_text(toy_card.to_json()[:-20], encoding="utf-8")
    with pytest.raises(ModelCardError, match="not valid JSON"):
        TensorRTEngine(path)


def test_sidecar_missing_fields_is_refused(tmp_path):
    path = tmp_path / "model.engine"
    path.write_bytes(b"serialized engine bytes")
    sidecar_path(path).write_text('{"arch": "cen"}', encoding="utf-8")
    with pytest.raises(ModelCardError, match="missing field"):
        TensorRTEngine(path)


def test_unknown_option_is_refused_and_onnxruntime_options_are_ignored(engine_with_card):
    with pytest.raises(EngineError, match="unknown TensorRT backend option.*workers"):
        TensorRTEngine(engine_with_card, workers=2)
    # threads/providers pass the option check and fail later, on this machine's environment.
    with pytest.raises(EngineError) as info:
        TensorRTEngine(engine_with_card, threads=2, providers="gpu")
    assert "option" not in str(info.value)


def test_machine_without_gpu_or_tensorrt_gets_one_clean_line(engine_with_card):
    """In a subprocess, so a crash (e.g. TensorRT without a driver) fails the test."""
    script = textwrap.dedent(f"""
        import sys
        from cen_perception.engines import EngineError, open_engine
        try:
            open_engine({str(engine_with_card)!r})
        except EngineError as exc:
            print(exc, file=sys.stderr)
            print("tensorrt imported:", "tensorrt" in sys.modules)
            sys.exit(3)
        print("opened")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 3, (result.returncode, result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) >= 1 and any(e in lines[-1] for e in ENVIRONMENT_ERRORS), result.stderr
    if "TensorRT" not in lines[-1].split(":")[0]:
        # The device check comes before TensorRT is touched.
        assert "tensorrt imported: False" in result.stdout
        assert len(lines) == 1
    if no_driver_here():
        cudart, runtime = _runtime()
        assert lines == [cuda_environment_error("cudaErrorInsufficientDriver", 0, runtime,
                                                bindings_version())]


@pytest.mark.parametrize("suffix", [".engine", ".plan", ".trt"])
def test_open_engine_routes_engine_suffixes_to_tensorrt(tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    path.write_bytes(b"serialized engine bytes")
    # Only the TensorRT backend asks for a sidecar card.
    with pytest.raises(ModelCardError, match="not found beside the engine"):
        open_engine(path)


def test_open_engine_backend_overrides_the_suffix(tmp_path, toy_onnx_factory):
    onnx_path = toy_onnx_factory(48, 64)
    with pytest.raises(ModelCardError, match="not found beside the engine"):
        open_engine(onnx_path, backend="tensorrt")
    engine_path = tmp_path / "model.engine"
    engine_path.write_bytes(b"serialized engine bytes")
    with pytest.raises(EngineError, match="not a loadable ONNX model"):
        open_engine(engine_path, backend="onnxruntime")
    assert open_engine(onnx_path).backend == "onnxruntime"


def test_cuda_errors_become_engine_errors_naming_the_error():
    cudart = import_cudart()
    errors = cudart.cudaError_t
    assert cuda_call(cudart, (errors.cudaSuccess, 7), "x") == 7
    assert cuda_call(cudart, (errors.cudaSuccess,), "x") is None
    with pytest.raises(EngineError, match="cudaMalloc failed: cudaErrorMemoryAllocation"):
        cuda_call(cudart, (errors.cudaErrorMemoryAllocation, None), "cudaMalloc")


# -- the environment, exactly ----------------------------------------------------------------
def test_environment_messages_per_cuda_error():
    assert cuda_environment_error("cudaErrorInsufficientDriver", 0, 12090, "12.9.10") == (
        "no NVIDIA driver found (cudaGetDeviceCount: cudaErrorInsufficientDriver, driver "
        "version 0; cuda-python 12.9.10, CUDA 12.9 runtime): TensorRT needs an NVIDIA GPU and its "
        "driver; use the ONNX model with ONNX Runtime instead")
    # cuda-python 13 on JetPack 6 (a CUDA 12.2 driver): not "no GPU", but the bindings to pin.
    assert cuda_environment_error("cudaErrorInsufficientDriver", 12020, 13000, "13.0.1") == (
        "the NVIDIA driver for CUDA 12.2 is older than cuda-python 13.0.1, CUDA 13.0 runtime "
        "(cudaErrorInsufficientDriver): install the bindings for this driver (pip install "
        "'cuda-python>=12,<13'; JetPack 6 has CUDA 12) or update the driver")
    assert cuda_environment_error("cudaErrorNoDevice", 12040, 12090, "12.9.10") == (
        "no CUDA GPU found (cudaErrorNoDevice; NVIDIA driver for CUDA 12.4, cuda-python 12.9.10, "
        "CUDA 12.9 runtime): TensorRT needs an NVIDIA GPU; use the ONNX model with ONNX Runtime "
        "instead")
    assert cuda_environment_error("cudaErrorDevicesUnavailable", 12080, 12090, "12.9.10") == (
        "no usable CUDA GPU (cudaGetDeviceCount: cudaErrorDevicesUnavailable; NVIDIA driver for "
        "CUDA 12.8, cuda-python 12.9.10, CUDA 12.9 runtime): TensorRT needs a working NVIDIA GPU "
        "and driver; use the ONNX model with ONNX Runtime instead")


@pytest.mark.skipif(not no_driver_here(), reason="this machine has an NVIDIA driver")
def test_machine_without_driver_gets_the_no_driver_line():
    """The real CUDA call here (cuda-python installed, no NVIDIA driver) gives
    cudaErrorInsufficientDriver with driver version 0: the message says so, exactly."""
    cudart, runtime = _runtime()
    with pytest.raises(EngineError) as info:
        require_cuda_device(cudart, 0)
    assert str(info.value) == (
        "no NVIDIA driver found (cudaGetDeviceCount: cudaErrorInsufficientDriver, driver version "
        f"0; cuda-python {metadata.version('cuda-bindings')}, CUDA {runtime // 1000}."
        f"{runtime % 1000 // 10} runtime): TensorRT needs an NVIDIA GPU and its driver; use the "
        "ONNX model with ONNX Runtime instead")
    # Buffers fail with the CUDA error by name, and closing what was made is safe.
    with pytest.raises(EngineError) as info:
        CudaBuffers(cudart, {"x": ((4,), "uint8")})
    assert str(info.value) == "cudaStreamCreate failed: cudaErrorInsufficientDriver"


def test_both_cuda_python_layouts_import():
    """``cuda.bindings.runtime`` (12.6+, 13) first; else ``cuda.cudart`` (before 13), which
    12.x keeps beside the new one, without the FutureWarning it gives."""
    assert import_cudart().__name__ == "cuda.bindings.runtime"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        old = import_cudart(("cuda.no_such_layout", "cuda.cudart"))
    assert old.__name__ == "cuda.cudart"
    assert old.cudaGetDeviceCount()[0] == import_cudart().cudaGetDeviceCount()[0]
    with pytest.raises(EngineError, match=r"cuda-python is not installed \(pip install "
                                          r"'cuda-python>=12,<13' for a CUDA 12 driver"):
        import_cudart(("cuda.no_such_layout",))


def test_stream_handle_without_the_deprecated_int():
    cudart = import_cudart()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert stream_handle(cudart.cudaStream_t(0x7F00)) == 0x7F00
        assert stream_handle(cudart.cudaStream_t(0)) == 0
        # get_cuda_native_handle raises TypeError for a type it has no handler for.
        assert stream_handle(0x7F00) == 0x7F00


# -- a TensorRT built for another CUDA than the driver's --------------------------------------
def _installed(*names):
    """``metadata.version`` of a machine with these distributions installed."""
    def version_of(name):
        if name not in names:
            raise metadata.PackageNotFoundError(name)
        return "10.13.3.9"
    return version_of


def test_installed_tensorrt_distribution():
    # The bare package pulls in a CUDA variant; the variant is what matters.
    assert tensorrt_distribution(_installed("tensorrt", "tensorrt-cu13")) == "tensorrt-cu13"
    assert tensorrt_distribution(_installed("tensorrt-cu12")) == "tensorrt-cu12"
    assert tensorrt_distribution(_installed("tensorrt-cu12", "tensorrt-cu13")) == (
        "tensorrt-cu13+tensorrt-cu12")
    assert tensorrt_distribution(_installed("tensorrt")) == "tensorrt"
    assert tensorrt_distribution(_installed()) == NOT_FROM_PIP  # JetPack's apt package
    assert [variant_cuda_major(d) for d in ("tensorrt-cu12", "tensorrt-cu13+tensorrt-cu12",
                                            "tensorrt", NOT_FROM_PIP)] == [12, 13, None, None]


def test_cuda_init_failure_names_the_driver_and_the_variant():
    assert cuda_init_failure("trt.Runtime failed", "10.13.3.9", "tensorrt-cu13", 12040) == (
        "TensorRT 10.13.3.9 (tensorrt-cu13) cannot initialise CUDA (trt.Runtime failed); the "
        "NVIDIA driver supports CUDA 12.4, but tensorrt-cu13 is built for CUDA 13: pip "
        "uninstall tensorrt tensorrt-cu13 tensorrt-cu13-bindings tensorrt-cu13-libs, then pip "
        "install tensorrt-cu12 (or update the driver)")
    # The variant fits the driver: the cause is elsewhere, in TensorRT's log.
    assert cuda_init_failure("trt.Builder failed", "10.13.3.9", "tensorrt-cu12", 12080) == (
        "TensorRT 10.13.3.9 (tensorrt-cu12) cannot initialise CUDA (trt.Builder failed); the "
        "NVIDIA driver supports CUDA 12.8: see TensorRT's log above for the CUDA error")
    assert cuda_init_failure("trt.Runtime failed", "10.3.0", NOT_FROM_PIP, 12060) == (
        "TensorRT 10.3.0 (not from pip: JetPack's apt package or a local build) cannot "
        "initialise CUDA (trt.Runtime failed); the NVIDIA driver supports CUDA 12.6: see "
        "TensorRT's log above for the CUDA error")
    assert "no NVIDIA driver was found" in cuda_init_failure("x", "10.3.0", "tensorrt-cu12", 0)


def _runtime_returning_nullptr(logger):
    """``tensorrt.Runtime`` where it cannot initialise CUDA ("CUDA initialization failure
    with error: 35" in its log): pybind11 raises this for the null pointer it got."""
    raise TypeError("pybind11::init(): factory function returned nullptr")


def test_tensorrt_that_cannot_initialise_cuda_is_one_engine_error():
    cudart = import_cudart()
    with pytest.raises(EngineError) as info:
        construct_tensorrt(_runtime_returning_nullptr, None, "trt.Runtime failed", cudart,
                           "10.13.3.9", "tensorrt-cu13")
    assert str(info.value) == cuda_init_failure("trt.Runtime failed", "10.13.3.9",
                                                "tensorrt-cu13", driver_cuda_version(cudart))
    # Versions that return None instead of raising.
    with pytest.raises(EngineError, match=r"^TensorRT 8\.6\.1 \(tensorrt-cu12\) cannot "):
        construct_tensorrt(lambda logger: None, None, "trt.Runtime failed", cudart, "8.6.1",
                           "tensorrt-cu12")
    # Any other TypeError is a real one.
    def wrong_argument(logger):
        raise TypeError("__init__(): incompatible constructor arguments")
    with pytest.raises(TypeError, match="incompatible constructor arguments"):
        construct_tensorrt(wrong_argument, None, "trt.Runtime failed", cudart, "10.3.0")
    assert construct_tensorrt(lambda logger: ("runtime", logger), "log", "x", cudart,
                              "10.3.0") == ("runtime", "log")


# -- on a GPU with TensorRT ----------------------------------------------------------------
def _tensorrt_missing() -> str | None:
    if not gpu_here():
        return "needs an NVIDIA GPU (none usable here)"
    try:
        import tensorrt  # noqa: F401 - imported only to see whether it is installed
    except ImportError:
        return "needs TensorRT (not installed here)"
    return None


@pytest.mark.skipif(_tensorrt_missing() is not None, reason=str(_tensorrt_missing()))
def test_engine_runs_from_another_thread(tmp_path, toy_onnx_factory):
    """The node calls infer on its worker thread: the engine sets its device there."""
    import numpy as np

    from cen_training.deploy.tensorrt import build_engine

    engine_path = build_engine(toy_onnx_factory(48, 64), tmp_path / "toy.engine",
                               cache_dir=tmp_path / "cache", progress=False, log=lambda _: None)
    engine = TensorRTEngine(engine_path)
    depth = np.tile(np.linspace(0, 3.5, 64, dtype=np.float32), (48, 1))
    rgb = np.full((48, 64, 3), 102, np.uint8)
    results = {}
    worker = threading.Thread(target=lambda: results.update(out=engine.infer(rgb, depth)))
    worker.start()
    worker.join(60)
    labels, confidence = results["out"]
    assert np.array_equal(labels, np.clip(np.floor(depth), 0, 2).astype(np.uint8))
    assert np.allclose(confidence, 0.5 + 102 / 510, atol=1e-6)
    engine.close()
    engine.close()
