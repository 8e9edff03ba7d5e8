"""TensorRT backend: everything up to the GPU, on any machine.

Running an engine needs an NVIDIA GPU and TensorRT; here the tests check the refusals that
come before (file, sidecar card, options, routing) and that a machine without a GPU, driver
or TensorRT gets one clean error line instead of a crash.
"""
import subprocess
import sys
import textwrap

import onnx
import pytest

from cen_perception.engines import EngineError, open_engine
from cen_perception.engines.tensorrt import TensorRTEngine, cuda_call, import_cudart
from cen_perception.model_card import METADATA_KEY, ModelCard, ModelCardError, sidecar_path

# The clean refusals a machine may give, depending on what it lacks.
ENVIRONMENT_ERRORS = ("cuda-python is not installed", "no usable CUDA GPU", "no CUDA GPU found",
                      "TensorRT is not installed", "is too old",
                      "not an engine TensorRT")  # the last: GPU and TensorRT present


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
    if "GPU" in lines[-1] or "cuda-python" in lines[-1]:
        # The device check comes before TensorRT is touched.
        assert "tensorrt imported: False" in result.stdout
        assert len(lines) == 1


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
