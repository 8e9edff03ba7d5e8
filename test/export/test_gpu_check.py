"""``cen-train gpu-check``: the refusal on a machine without a CUDA GPU (exactly), the report's
decisions, and the node runner with the real node over a real bag (ONNX Runtime here; the
TensorRT backend on a GPU). The whole check runs only where there is an NVIDIA GPU."""
import subprocess
from importlib import metadata, util

import pytest

from cen_perception.engines.tensorrt import cuda_environment_error
from cen_training.commands.gpu_check import (
    EXIT_FAILED,
    EXIT_NO_GPU,
    EXIT_PARTIAL,
    EXIT_PASSED,
    FAIL,
    NOT_RUN,
    PASS,
    OrtLabels,
    Probe,
    Row,
    agreement,
    check,
    exit_code,
    judge_engine,
    lacking,
    legacy_int8_available,
    markdown_table,
    no_gpu_report,
    run_node,
    timings,
    torch_line,
)

CPU_TORCH = "PyTorch {}: a CPU-only build (no CUDA), so no CUDA training with AMP and no fp16 " \
            "parity check"
NO_TENSORRT = ("TensorRT: not installed (JetPack or NVIDIA's pip index), so no engines, label "
               "agreement, timing or node run")


def _cpu_only_machine() -> str | None:
    """Why this machine is not the CPU-only one the exact lines are written for (or None)."""
    import torch

    if torch.version.cuda is not None:
        return "PyTorch here is a CUDA build"
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        return "cuda-python is not installed here"
    if cudart.cudaDriverGetVersion()[1] != 0:
        return "this machine has an NVIDIA driver"
    if util.find_spec("tensorrt") is not None:
        return "TensorRT is installed here"
    return None


@pytest.mark.skipif(_cpu_only_machine() is not None, reason=str(_cpu_only_machine()))
def test_cpu_only_machine_names_what_it_lacks_and_exits_3(repo_root, tmp_path):
    import torch
    from cuda.bindings import runtime as cudart

    result = subprocess.run([str(repo_root / ".venv" / "bin" / "cen-train"), "gpu-check",
                             "--out", str(tmp_path / "report")], capture_output=True, text=True,
                            timeout=120)
    runtime = cudart.cudaRuntimeGetVersion()[1]
    expected = [
        "cen-train gpu-check: no CUDA GPU here, nothing checked (exit code 3)",
        f"- {CPU_TORCH.format(torch.__version__)}",
        "- CUDA: no NVIDIA driver found (cudaGetDeviceCount: cudaErrorInsufficientDriver, "
        f"driver version 0; cuda-python {metadata.version('cuda-bindings')}, CUDA "
        f"{runtime // 1000}.{runtime % 1000 // 10} runtime)",
        f"- {NO_TENSORRT}",
    ]
    assert result.returncode == EXIT_NO_GPU == 3, result.stderr
    assert result.stdout.splitlines() == expected
    assert result.stderr == ""
    assert (tmp_path / "report" / "gpu_check.md").read_text() == result.stdout


def test_what_each_machine_lacks_one_line_each():
    jetson_cpu_torch = Probe("2.5.0", None, torch_line("2.5.0", None, False), "12.6.2", None,
                             "10.3.0", gpu="Orin")
    assert lacking(jetson_cpu_torch) == [CPU_TORCH.format("2.5.0")]
    # cuda-python 13 on a CUDA 12 driver: the fix, not "no GPU".
    old_driver = cuda_environment_error("cudaErrorInsufficientDriver", 12020, 13000, "13.0.1",
                                        engine_advice=False)
    desktop = Probe("2.8.0+cu128", "12.8", None, "13.0.1", old_driver, None)
    assert lacking(desktop) == [
        "CUDA: the NVIDIA driver for CUDA 12.2 is older than cuda-python 13.0.1, CUDA 13.0 "
        "runtime (cudaErrorInsufficientDriver): install the bindings for this driver (pip "
        "install 'cuda-python>=12,<13'; JetPack 6 has CUDA 12) or update the driver",
        NO_TENSORRT]
    no_bindings = Probe("2.8.0+cu128", "12.8", None, None, None, "8.5.3",
                        "TensorRT 8.5.3 is too old; 8.6 or newer is needed")
    assert lacking(no_bindings) == [
        "CUDA: cuda-python is not installed (pip install 'cuda-python>=12,<13'), so no engine "
        "buffer check and no TensorRT",
        "TensorRT 8.5.3: TensorRT 8.5.3 is too old; 8.6 or newer is needed"]
    busy = Probe("2.8.0+cu128", "12.8", torch_line("2.8.0+cu128", "12.8", False), "12.9.10",
                 "no CUDA GPU found (cudaErrorNoDevice; ...)", "10.13.0")
    assert lacking(busy) == [
        "PyTorch 2.8.0+cu128 (CUDA 12.8): no usable CUDA device (torch.cuda.is_available() is "
        "False)",
        "CUDA: no CUDA GPU found (cudaErrorNoDevice; ...)",
        "TensorRT 10.13.0: installed, but there is no usable GPU to build for"]
    assert not busy.any_gpu and jetson_cpu_torch.any_gpu and desktop.any_gpu
    assert no_gpu_report(busy)[0] == ("cen-train gpu-check: no CUDA GPU here, nothing checked "
                                      "(exit code 3)")
    assert len(no_gpu_report(busy)) == 4


def test_exit_code_follows_the_rows():
    passed, skipped, failed = Row("a"), Row("b", result=NOT_RUN), Row("c", result=FAIL)
    assert exit_code([passed]) == EXIT_PASSED == 0
    assert exit_code([passed, skipped]) == EXIT_PARTIAL == 4
    assert exit_code([passed, skipped, failed]) == EXIT_FAILED == 1


def test_markdown_table():
    rows = [Row("TensorRT engine", "ResNet-50 official", "int8", agree=0.99871,
                agree_fp32=0.9712, median_ms=3.104, p90_ms=3.3, fps=322.2,
                detail="build 85 s (int8, strongly typed)"),
            Row("node, TensorRT backend", result=NOT_RUN, detail="a | b")]
    assert markdown_table(rows).splitlines() == [
        "| part | model | precision | result | labels = ORT (same ONNX) | labels = ORT fp32 | "
        "median ms | p90 ms | FPS | detail |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---|",
        "| TensorRT engine | ResNet-50 official | int8 | pass | 99.87% | 97.12% | 3.10 | 3.30 | "
        "322 | build 85 s (int8, strongly typed) |",
        "| node, TensorRT backend | - | - | not run | - | - | - | - | - | a / b |"]


def test_engine_verdicts():
    assert judge_engine("fp32", 0.996, 0.996) == (PASS, [])
    assert judge_engine("fp32", 0.99, 0.99) == (FAIL, [
        "labels agree with ONNX Runtime on the same ONNX file on 99.00% of pixels, below 99.5%"])
    # ONNX Runtime could not run the fp16 file on the CPU: the fp32 one is the reference.
    assert judge_engine("fp16", None, 0.992) == (PASS, [])
    assert judge_engine("int8", None, 0.95)[1] == [
        "labels agree with ONNX Runtime on the fp32 ONNX file on 95.00% of pixels, below 98.0%"]
    assert judge_engine("int8", 0.999, None, "infer on a worker thread gave other labels") == (
        FAIL, ["infer on a worker thread gave other labels"])
    assert judge_engine("fp16", None, None) == (FAIL, [
        "no ONNX Runtime labels to compare with"])


def test_agreement_and_timings():
    import numpy as np

    a, b = np.zeros((4, 5), np.uint8), np.zeros((4, 5), np.uint8)
    b[0, :2] = 1
    assert agreement([a, a], [a, b]) == pytest.approx(38 / 40)
    calls = []
    median, p90, fps = timings(lambda: calls.append(1), warmup=3, iters=7)
    assert len(calls) == 10 and 0 < median <= p90 and fps == pytest.approx(1000 / median)


def test_legacy_int8_row_only_where_tensorrt_has_implicit_int8():
    assert [legacy_int8_available(v) for v in ("8.6.1", "10.3.0", "10.13.3.9")] == [True] * 3
    assert [legacy_int8_available(v) for v in ("11.1.0", "installed", None)] == [False] * 3


def test_without_cuda_torch_or_tensorrt_every_part_is_named_not_run(tmp_path):
    from types import SimpleNamespace

    probe = Probe("2.8.0", None, torch_line("2.8.0", None, False), None, None, None)
    args = SimpleNamespace(work=tmp_path, models=["resnet18-light"], device=0, frames=1,
                           iters=1)
    said = []
    rows = check(probe, args, said.append)
    assert [(r.part, r.result) for r in rows] == [
        ("cuda-python buffers", NOT_RUN), ("training, 50 steps, CUDA + AMP", NOT_RUN),
        ("PyTorch fp16 autocast vs fp32", NOT_RUN), ("TensorRT engines", NOT_RUN),
        ("node, TensorRT backend", NOT_RUN)]
    assert rows[3].detail == NO_TENSORRT and rows[1].detail == CPU_TORCH.format("2.8.0")
    assert said == [] and list(tmp_path.iterdir()) == []


def test_onnx_runtime_reference_is_the_exports_exact_session(toy_onnx_factory):
    """The engines are compared with the session the export's own check uses
    (session.x64quantprecision), on the frames as gpu-check loads them."""
    import numpy as np

    from cen_perception.engines.onnxruntime import OnnxRuntimeEngine

    depth = np.tile(np.linspace(0, 3.5, 64, dtype=np.float32), (48, 1))
    frames = [{"rgb": np.full((1, 48, 64, 3), 102, np.uint8), "depth": depth[None]}]
    path = toy_onnx_factory(48, 64)
    labels = OrtLabels(frames)(path)
    assert len(labels) == 1 and labels[0].shape == (48, 64)
    assert np.array_equal(labels[0], OnnxRuntimeEngine(path).infer(frames[0]["rgb"][0],
                                                                   depth)[0])
    assert np.array_equal(labels[0], np.clip(np.floor(depth), 0, 2).astype(np.uint8))


def test_usage_errors_are_one_line(capsys):
    from cen_training.cli import main

    assert main(["gpu-check", "--frames", "0"]) == 2
    assert capsys.readouterr().err.strip() == (
        "cen-train gpu-check: error: --frames and --iters must be >= 1 and --device >= 0")


def test_node_runner_with_the_real_node(tmp_path, toy_onnx_factory):
    """The runner gpu-check uses for the TensorRT node, here with ONNX Runtime: the real node
    over a real bag, its labels and /diagnostics read back over DDS."""
    row = run_node(toy_onnx_factory(480, 640), tmp_path, device=0, frames=6,
                   backend="onnxruntime", model="toy", precision="fp32")
    assert row.result == PASS, row.detail
    assert row.part == "node, ONNX Runtime backend"
    assert row.median_ms is not None and row.median_ms > 0
    labelled = int(row.detail.split(" label images")[0])
    skipped = int(row.detail.split("(")[1].split(" pairs")[0])
    assert labelled >= 1 and labelled + skipped == 6, row.detail


def _gpu_missing() -> str | None:
    import torch

    if not torch.cuda.is_available():
        return "needs a CUDA GPU and a CUDA build of PyTorch"
    return None


@pytest.mark.skipif(_gpu_missing() is not None, reason=str(_gpu_missing()))
def test_gpu_check_on_a_gpu(repo_root, tmp_path):
    """The whole check, one model, few frames (minutes)."""
    result = subprocess.run([str(repo_root / ".venv" / "bin" / "cen-train"), "gpu-check",
                             "--models", "resnet18-light", "--frames", "2", "--iters", "10",
                             "--out", str(tmp_path)], capture_output=True, text=True,
                            timeout=900)
    assert result.returncode in (EXIT_PASSED, EXIT_PARTIAL), result.stdout + result.stderr
    report = (tmp_path / "gpu_check.md").read_text()
    assert "| cuda-python buffers | - | - | pass |" in report
    assert "| training, 50 steps, CUDA + AMP | ResNet-18 light | fp16 autocast | pass |" in report
