"""``cen-train gpu-check``: everything that needs an NVIDIA GPU, checked in one run.

On a machine with a CUDA GPU (a few minutes; under 10 on a desktop GPU):

* cuda-python buffers: the TensorRT engine's own ``CudaBuffers`` (pinned host memory,
  ``cudaMalloc``, copies to and from the GPU on a stream), bytes compared after the round trip,
  from the main thread and from a worker thread, and the stream handle the engine gives
  TensorRT (``stream_handle``) synchronised as that stream;
* training: 50 optimiser steps of the real training loop (``cen_training.segmentation.train``)
  with CUDA and AMP (float16 autocast, GradScaler) on ``cen-train synth`` data, a ResNet-18 CEN
  with the light decoder; its checkpoint is the ResNet-18 model below;
* PyTorch fp16 parity: float16 autocast against float32 (TF32 off) logits on the GPU, labels
  compared, for both models;
* for the ResNet-18 light model (just trained) and a ResNet-50 official-decoder model (fresh
  weights, BatchNorm statistics measured on the synthetic frames, 40 classes), at 480x640:
  ``cen-train export --precision fp32|fp16|int8`` (int8 calibrated on the synthetic data),
  ``build-engine`` for each, labels of each engine against ONNX Runtime on the CPU running the
  same ONNX file (and the fp32 one; in the session the export's own check uses, with exact
  int8 products), latency through the runtime's TensorRT
  engine (median, p90, frames per second);
* on TensorRT 8.6 to 10.x, ``build-engine --legacy-int8`` (implicit INT8, TensorRT's entropy
  calibrator on the synthetic frames) for the first model's fp32 export, judged like an int8
  engine against the fp32 ONNX file (TensorRT 11 has no implicit INT8, so no row there);
* the node: ``cen_segmentation_node`` with the TensorRT backend (ResNet-18 fp16 engine) over a
  synthetic 480x640 sequence bag played at 10 Hz; its ``/diagnostics`` latency.

It prints one markdown table (and writes it to ``--out DIR/gpu_check.md``). A part that cannot
run here is named in one line and the rest runs. Exit status: 0 every part ran and passed;
1 a part failed; 2 a usage error; 3 no CUDA GPU here, nothing checked (each missing piece named
in one line); 4 what ran passed, but some parts could not run here (named in the table).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import math
import os
import pathlib
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from importlib import metadata, util
from typing import Callable, Optional

import numpy as np

from ..errors import one_line

EXIT_PASSED, EXIT_FAILED, EXIT_NO_GPU, EXIT_PARTIAL = 0, 1, 3, 4
PRECISIONS = ("fp32", "fp16", "int8")
HEIGHT, WIDTH = 480, 640
# Share of pixels whose TensorRT label must equal ONNX Runtime's on the same ONNX file.
MIN_AGREEMENT = {"fp32": 0.995, "fp16": 0.99, "int8": 0.98}
MIN_TORCH_FP16_AGREEMENT = 0.99
TRAIN_STEPS = 50
# --legacy-int8 (TensorRT 8.6-10.x): implicit INT8 calibrated on this many synthetic frames.
LEGACY_CALIB_FRAMES = 32
LEGACY_INT8_PART = "TensorRT engine, --legacy-int8"
PASS, FAIL, NOT_RUN = "pass", "FAIL", "not run"
TENSORRT_DISTRIBUTIONS = ("tensorrt", "tensorrt-cu12", "tensorrt-cu13", "tensorrt-cu11")
BACKEND_NAMES = {"tensorrt": "TensorRT", "onnxruntime": "ONNX Runtime"}


@dataclass(frozen=True)
class ModelSpec:
    key: str
    title: str
    backbone: str
    decoder: str
    num_classes: int
    trained: bool  # trained here for 50 steps; otherwise fresh weights


MODELS = {
    "resnet18-light": ModelSpec("resnet18-light", "ResNet-18 light", "resnet18", "light", 5,
                                True),
    "resnet50-official": ModelSpec("resnet50-official", "ResNet-50 official", "resnet50",
                                   "official", 40, False),
}


# -- what this machine has ---------------------------------------------------------------------
@dataclass
class Probe:
    """What the machine offers, each piece with why it cannot be used (None = usable)."""

    torch_version: str
    torch_cuda: Optional[str]  # torch.version.cuda; None for a CPU-only build
    torch_problem: Optional[str]
    cuda_python: Optional[str]  # bindings version; None when not installed
    cuda_problem: Optional[str]
    tensorrt: Optional[str]  # version ("installed" when unknown); None when not installed
    tensorrt_problem: Optional[str] = None
    gpu: str = ""  # name, compute capability, driver, as one text

    @property
    def torch_gpu(self) -> bool:
        return self.torch_problem is None

    @property
    def cuda_gpu(self) -> bool:
        return self.cuda_python is not None and self.cuda_problem is None

    @property
    def any_gpu(self) -> bool:
        return self.torch_gpu or self.cuda_gpu


def torch_line(version: str, cuda: Optional[str], available: bool) -> Optional[str]:
    if available:
        return None
    if cuda is None:
        return (f"PyTorch {version}: a CPU-only build (no CUDA), so no CUDA training with AMP "
                "and no fp16 parity check")
    return (f"PyTorch {version} (CUDA {cuda}): no usable CUDA device "
            "(torch.cuda.is_available() is False)")


def cuda_line(bindings: Optional[str], problem: Optional[str]) -> Optional[str]:
    if bindings is None:
        return ("CUDA: cuda-python is not installed (pip install 'cuda-python>=12,<13'), so no "
                "engine buffer check and no TensorRT")
    return f"CUDA: {problem}" if problem else None


def tensorrt_line(version: Optional[str], problem: Optional[str], gpu: bool) -> Optional[str]:
    if version is None:
        return ("TensorRT: not installed (JetPack or NVIDIA's pip index), so no engines, label "
                "agreement, timing or node run")
    if problem:
        return f"TensorRT {version}: {problem}"
    if not gpu:
        return f"TensorRT {version}: installed, but there is no usable GPU to build for"
    return None


def lacking(probe: Probe) -> list[str]:
    """One line per missing piece, in the order PyTorch, CUDA, TensorRT."""
    lines = [torch_line(probe.torch_version, probe.torch_cuda, probe.torch_gpu),
             cuda_line(probe.cuda_python, probe.cuda_problem),
             tensorrt_line(probe.tensorrt, probe.tensorrt_problem, probe.cuda_gpu)]
    return [line for line in lines if line]


def no_gpu_report(probe: Probe) -> list[str]:
    """What a machine without any usable CUDA GPU prints (exit code 3)."""
    return ([f"cen-train gpu-check: no CUDA GPU here, nothing checked (exit code {EXIT_NO_GPU})"]
            + [f"- {line}" for line in lacking(probe)])


def _installed_tensorrt() -> Optional[str]:
    """TensorRT's version from the package metadata, without importing it (importing TensorRT
    where there is no driver can crash the process at exit)."""
    if util.find_spec("tensorrt") is None:
        return None
    for name in TENSORRT_DISTRIBUTIONS:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return "installed"


def probe_machine(device: int) -> Probe:
    import torch

    from cen_perception.engines import tensorrt as trt_runtime
    from cen_perception.engines.base import EngineError

    from ..errors import EngineBuildError

    torch_available = torch.cuda.is_available() and device < torch.cuda.device_count()
    torch_problem = torch_line(torch.__version__, torch.version.cuda, torch_available)
    bindings = cuda_problem = None
    gpu = ""
    try:
        cudart = trt_runtime.import_cudart()
        bindings = trt_runtime.bindings_version()
        cuda_problem = trt_runtime.cuda_device_problem(cudart)
        if cuda_problem is None:
            from ..deploy.tensorrt import gpu_facts
            name, (major, minor), multiprocessors = gpu_facts(device)
            _, driver = cudart.cudaDriverGetVersion()
            _, runtime = cudart.cudaRuntimeGetVersion()
            gpu = (f"{name} (sm_{major}{minor}, {multiprocessors} SMs), driver for CUDA "
                   f"{trt_runtime.cuda_version_text(driver)}, cuda-python {bindings} (CUDA "
                   f"{trt_runtime.cuda_version_text(runtime)})")
    except EngineError:  # cuda-python is not installed
        bindings = None
    except EngineBuildError as exc:  # e.g. --device beyond the GPUs there are
        cuda_problem = str(exc)
    tensorrt, tensorrt_problem = _installed_tensorrt(), None
    if tensorrt is not None and cuda_problem is None and bindings is not None:
        try:
            tensorrt = trt_runtime.import_tensorrt().__version__
        except EngineError as exc:
            tensorrt_problem = str(exc)
    return Probe(torch.__version__, torch.version.cuda, torch_problem, bindings, cuda_problem,
                 tensorrt, tensorrt_problem, gpu)


# -- the report ----------------------------------------------------------------------------
@dataclass
class Row:
    part: str
    model: str = "-"
    precision: str = "-"
    result: str = PASS
    agree: Optional[float] = None  # share of pixels, against ONNX Runtime on the same ONNX
    agree_fp32: Optional[float] = None  # against ONNX Runtime on the fp32 ONNX
    median_ms: Optional[float] = None
    p90_ms: Optional[float] = None
    fps: Optional[float] = None
    detail: str = ""


def _percent(value: Optional[float]) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _ms(value: Optional[float]) -> str:
    return "-" if value is None else (f"{value:.2f}" if value < 100 else f"{value:.0f}")


def markdown_table(rows: list[Row]) -> str:
    lines = ["| part | model | precision | result | labels = ORT (same ONNX) | labels = ORT fp32 "
             "| median ms | p90 ms | FPS | detail |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        fps = "-" if r.fps is None else f"{r.fps:.0f}" if r.fps >= 10 else f"{r.fps:.1f}"
        detail = r.detail.replace("|", "/")
        lines.append(f"| {r.part} | {r.model} | {r.precision} | {r.result} | {_percent(r.agree)} "
                     f"| {_percent(r.agree_fp32)} | {_ms(r.median_ms)} | {_ms(r.p90_ms)} | {fps} "
                     f"| {detail} |")
    return "\n".join(lines)


def exit_code(rows: list[Row]) -> int:
    if any(r.result == FAIL for r in rows):
        return EXIT_FAILED
    if any(r.result == NOT_RUN for r in rows):
        return EXIT_PARTIAL
    return EXIT_PASSED


def _one_line(exc: BaseException) -> str:
    return one_line(exc, with_type=True)


def timings(run: Callable[[], object], warmup: int, iters: int) -> tuple[float, float, float]:
    """(median ms, p90 ms, frames per second at the median) of ``run``."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1e3)
    median, p90 = float(np.median(times)), float(np.percentile(times, 90))
    return median, p90, 1000.0 / median


def agreement(labels: list[np.ndarray], reference: list[np.ndarray]) -> float:
    equal = sum(int(np.count_nonzero(a == b)) for a, b in zip(labels, reference))
    return equal / sum(r.size for r in reference)


# -- the parts ---------------------------------------------------------------------------------
def cli(*args, log: Optional[pathlib.Path] = None, timeout: float = 900) -> None:
    """Run a cen-train sub-command in its own process; its last line on failure."""
    command = [sys.executable, "-m", "cen_training.cli", *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if log is not None:
        log.write_text(f"$ {' '.join(command)}\n{result.stdout}\n{result.stderr}",
                       encoding="utf-8")
    if result.returncode != 0:
        lines = (result.stderr.strip() or result.stdout.strip() or "no output").splitlines()
        raise RuntimeError(f"cen-train {args[0]} exited with {result.returncode}: {lines[-1]}")


BUFFER_SPECS = {"rgb": ((1, HEIGHT, WIDTH, 3), "uint8"), "depth": ((1, HEIGHT, WIDTH), "float32"),
                "labels": ((1, HEIGHT, WIDTH), "uint8")}


def _fill(buffers, rng) -> dict[str, np.ndarray]:
    for array in buffers.host.values():
        array[...] = rng.integers(0, 255, array.shape).astype(array.dtype)
    return {name: array.copy() for name, array in buffers.host.items()}


def _round_trip(buffers) -> None:
    for name in buffers.host:
        buffers.to_device(name)
    buffers.synchronize()
    for name, array in buffers.host.items():
        array[...] = 0
        buffers.to_host(name)
    buffers.synchronize()


def _differing(buffers, sent: dict[str, np.ndarray], where: str) -> set[str]:
    return {f"{name} ({where})" for name in sent
            if not np.array_equal(sent[name], buffers.host[name])}


def _stream_handle_problem(cudart, buffers) -> Optional[str]:
    """The engine hands TensorRT ``buffers.stream_handle``: a non-zero address that CUDA
    takes for the same stream."""
    from cen_perception.engines import tensorrt as trt_runtime

    handle = buffers.stream_handle
    if not isinstance(handle, int) or handle == 0:
        return f"stream_handle gave {handle!r}, not the stream's address"
    trt_runtime.cuda_call(cudart, cudart.cudaStreamSynchronize(handle),
                          "cudaStreamSynchronize(stream_handle)")
    return None


def _buffers_in_thread(cudart, device: int, rng) -> set[str]:
    """The round trip from a worker thread, as the node's worker runs the engine."""
    from cen_perception.engines import tensorrt as trt_runtime

    problems: set[str] = set()

    def work() -> None:
        try:
            trt_runtime.require_cuda_device(cudart, device)  # the engine does this per call
            worker = trt_runtime.CudaBuffers(cudart, BUFFER_SPECS)
            try:
                sent = _fill(worker, rng)
                _round_trip(worker)
                problems.update(_differing(worker, sent, "worker thread"))
            finally:
                worker.close()
        except Exception as exc:
            problems.add(f"worker thread: {_one_line(exc)}")

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(60)
    return problems


def check_buffers(device: int) -> Row:
    """The engine's buffer path with real device memory: bytes survive the round trip, from the
    main thread and a worker thread, and the stream handle given to TensorRT is the stream."""
    from cen_perception.engines import tensorrt as trt_runtime

    cudart = trt_runtime.import_cudart()
    rng = np.random.default_rng(0)
    trt_runtime.require_cuda_device(cudart, device)
    buffers = trt_runtime.CudaBuffers(cudart, BUFFER_SPECS)
    try:
        sent = _fill(buffers, rng)
        median, p90, _ = timings(lambda: _round_trip(buffers), 2, 20)
        problems = _differing(buffers, sent, "main thread")
        handle_problem = _stream_handle_problem(cudart, buffers)
    finally:
        buffers.close()
    problems |= _buffers_in_thread(cudart, device, rng)
    megabytes = sum(math.prod(s) * np.dtype(d).itemsize for s, d in BUFFER_SPECS.values()) / 1e6
    if problems or handle_problem:
        details = ([f"bytes differ after the round trip: {', '.join(sorted(problems))}"]
                   if problems else []) + ([handle_problem] if handle_problem else [])
        return Row("cuda-python buffers", result=FAIL, detail="; ".join(details))
    return Row("cuda-python buffers", median_ms=median, p90_ms=p90,
               detail=f"{megabytes:.1f} MB pinned host -> cudaMalloc -> host on one stream "
                      "(timed: both copies); bytes equal, also from a worker thread; "
                      "stream_handle synchronises the stream")


def train_on_gpu(data: pathlib.Path, run_dir: pathlib.Path,
                 device: int) -> tuple[Row, pathlib.Path]:
    """50 steps of the real training loop with CUDA and AMP; the checkpoint it wrote."""
    from ..segmentation.train import TrainConfig, train

    losses: list[float] = []
    config = TrainConfig(data=str(data), out=str(run_dir), arch="cen", backbone="resnet18",
                         decoder="light", optimizer="adam", stages=1, epochs=[10_000],
                         batch_size=8, workers=2, amp=True, max_steps=TRAIN_STEPS,
                         val_every=10_000, progress=False)
    # train() picks its GPU from LOCAL_RANK (torchrun's variable); one process here.
    previous = os.environ.get("LOCAL_RANK")
    os.environ["LOCAL_RANK"] = str(device)
    shutil.rmtree(run_dir, ignore_errors=True)  # a run left by an earlier check
    start = time.perf_counter()
    try:
        with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
            result = train(config, on_epoch_end=lambda state: losses.append(state["loss"]))
    finally:
        if previous is None:
            os.environ.pop("LOCAL_RANK", None)
        else:
            os.environ["LOCAL_RANK"] = previous
    seconds = time.perf_counter() - start
    steps = int(result.get("steps", 0))
    checkpoint = run_dir / "best.pt"
    if not checkpoint.is_file():
        checkpoint = run_dir / "last.pt"
    row = Row(f"training, {TRAIN_STEPS} steps, CUDA + AMP", MODELS["resnet18-light"].title,
              "fp16 autocast")
    if steps != TRAIN_STEPS or not losses or not all(math.isfinite(v) for v in losses):
        row.result = FAIL
        row.detail = f"{steps} of {TRAIN_STEPS} steps, mean loss per epoch {losses}"
    else:
        row.detail = (f"{steps} steps of batch 8 in {seconds:.0f} s ({1e3 * seconds / steps:.0f} "
                      "ms a step with data loading, validation and checkpoints), float16 "
                      f"autocast + GradScaler; mean loss per epoch {losses[0]:.3f} -> "
                      f"{losses[-1]:.3f}")
    return row, checkpoint


def torch_fp16_parity(spec: ModelSpec, checkpoint: pathlib.Path, frames, device: int) -> Row:
    """float16 autocast against float32 (TF32 off) on the GPU: labels and logits."""
    import torch

    from ..checkpoint import load_model

    model = load_model(checkpoint, task="segmentation").eval().to(f"cuda:{device}")
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    same = total = 0
    worst = 0.0
    try:
        with torch.inference_mode():
            for frame in frames:
                rgb = torch.from_numpy(frame["rgb"]).to(model_device(model))
                depth = torch.from_numpy(frame["depth"]).to(model_device(model))
                full = model(rgb, depth)[-1].float()
                with torch.autocast("cuda", dtype=torch.float16):
                    half = model(rgb, depth)[-1].float()
                same += int((full.argmax(1) == half.argmax(1)).sum())
                total += full.argmax(1).numel()
                scale = float(full.abs().max()) or 1.0
                worst = max(worst, float((full - half).abs().max()) / scale)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
        del model
        torch.cuda.empty_cache()
    share = same / total
    return Row("PyTorch fp16 autocast vs fp32", spec.title, "fp16", agree=None,
               result=PASS if share >= MIN_TORCH_FP16_AGREEMENT else FAIL,
               detail=f"ensemble labels equal on {100 * share:.2f}% of pixels "
                      f"(needs {100 * MIN_TORCH_FP16_AGREEMENT:.0f}%), largest logit difference "
                      f"{100 * worst:.2f}% of the largest logit; {len(frames)} frames")


def release_torch_memory() -> None:
    """Hand PyTorch's cached GPU memory back before TensorRT builds in the same process."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def model_device(model):
    return next(model.parameters()).device


def fresh_checkpoint(spec: ModelSpec, path: pathlib.Path, frames, device: str
                     ) -> pathlib.Path:
    """A checkpoint of the model factory's freshly initialised network, its BatchNorm
    statistics measured on ``frames``: with the initial ones (mean 0, variance 1) a deep
    network's activations grow far beyond float16's range, which would say nothing about the
    engines."""
    import torch
    from torch import nn

    from ..card import default_card
    from ..checkpoint import save_checkpoint
    from ..models import ModelConfig, build_model

    torch.manual_seed(0)
    config = ModelConfig(arch="cen", backbone=spec.backbone, decoder=spec.decoder,
                         num_classes=spec.num_classes)
    model = build_model(config).to(device)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a plain average over the frames
    model.train()
    with torch.no_grad():
        for frame in frames:
            model(torch.from_numpy(frame["rgb"]).to(device),
                  torch.from_numpy(frame["depth"]).to(device))
    model = model.eval().cpu()
    for norm in norms:
        norm.momentum = 0.1
    return save_checkpoint(path, model, config, default_card(spec.num_classes))


def export(spec: ModelSpec, precision: str, checkpoint: pathlib.Path, data: pathlib.Path,
           work: pathlib.Path) -> tuple[pathlib.Path, float]:
    onnx_path = work / f"{spec.key}_{precision}.onnx"
    args = ["export", checkpoint, "-o", onnx_path, "--height", HEIGHT, "--width", WIDTH,
            "--data", data, "--parity-frames", 2]
    if precision != "fp32":  # the default
        args += ["--precision", precision]
    if precision == "int8":
        args += ["--calib-data", data]
    start = time.perf_counter()
    cli(*args, log=work / f"{onnx_path.stem}.export.log")
    return onnx_path, time.perf_counter() - start


class OrtLabels:
    """ONNX Runtime's labels on the CPU for each ONNX file, computed once, in the session the
    export's own precision check uses (``session.x64quantprecision``: exact int8 products on
    every x86 CPU, so an int8 comparison judges the engine, not the CPU)."""

    def __init__(self, frames) -> None:
        self.frames, self.cache = frames, {}
        self.lock = threading.Lock()

    def __call__(self, onnx_path: pathlib.Path) -> list[np.ndarray]:
        from ..deploy.export import exact_session

        with self.lock:
            if onnx_path not in self.cache:
                session = exact_session(onnx_path)
                self.cache[onnx_path] = [
                    session.run(["labels"], {"rgb": f["rgb"], "depth": f["depth"]})[0][0]
                    for f in self.frames]
            return self.cache[onnx_path]


def build_timed(onnx_path: pathlib.Path, work: pathlib.Path, device: int,
                calib_data: Optional[pathlib.Path] = None) -> tuple[pathlib.Path, float, str]:
    """``build-engine`` (``--legacy-int8 --calib-data`` where ``calib_data`` is given): the
    engine, seconds taken, and the plan it logged."""
    from ..deploy.tensorrt import build_engine

    legacy = calib_data is not None
    notes: list[str] = []
    start = time.perf_counter()
    engine_path = build_engine(
        onnx_path, work / "engines" / f"{onnx_path.stem}{'_legacy_int8' if legacy else ''}.engine",
        legacy_int8=legacy, calib_data=calib_data, calib_limit=LEGACY_CALIB_FRAMES,
        cache_dir=work / "engine_cache", device=device, progress=False, log=notes.append)
    plan = next((n.split("building a ", 1)[1].split(" engine for")[0] for n in notes
                 if n.startswith("building a ")), "cached")
    return engine_path, time.perf_counter() - start, plan


def engine_row(spec: ModelSpec, precision: str, onnx_path: pathlib.Path, export_s: float,
               work: pathlib.Path, frames, ort: OrtLabels, device: int, iters: int,
               calib_data: Optional[pathlib.Path] = None) -> tuple[Row, pathlib.Path]:
    """Build the engine, compare its labels with ONNX Runtime's, time it. ``calib_data``:
    build the fp32 ``onnx_path`` with ``--legacy-int8`` calibrated on it."""
    from cen_perception.engines.tensorrt import TensorRTEngine

    engine_path, build_s, plan = build_timed(onnx_path, work, device, calib_data)
    engine = TensorRTEngine(engine_path, device=device)
    try:
        labels = [engine.infer(f["rgb"][0], f["depth"][0])[0] for f in frames]
        from_thread: dict = {}

        def infer_in_thread() -> None:  # as the node does, on its worker thread
            try:
                from_thread["labels"] = engine.infer(frames[0]["rgb"][0],
                                                     frames[0]["depth"][0])[0]
            except Exception as exc:
                from_thread["error"] = _one_line(exc)

        worker = threading.Thread(target=infer_in_thread)
        worker.start()
        worker.join(60)
        median, p90, fps = timings(lambda: engine.infer(frames[0]["rgb"][0],
                                                        frames[0]["depth"][0]), 10, iters)
    finally:
        engine.close()
    part = LEGACY_INT8_PART if calib_data is not None else "TensorRT engine"
    row = Row(part, spec.title, precision, median_ms=median, p90_ms=p90, fps=fps)
    details = [f"export {export_s:.0f} s, build {build_s:.0f} s ({plan})"]
    try:
        row.agree = agreement(labels, ort(onnx_path))
    except Exception as exc:
        details.append(f"ONNX Runtime cannot run this file on the CPU ({_one_line(exc)})")
    fp32_onnx = onnx_path.with_name(f"{spec.key}_fp32.onnx")
    if fp32_onnx.is_file():
        row.agree_fp32 = agreement(labels, ort(fp32_onnx))
    thread_problem = None
    if "error" in from_thread:
        thread_problem = f"infer on a worker thread failed: {from_thread['error']}"
    elif not np.array_equal(from_thread.get("labels"), labels[0]):
        thread_problem = "infer on a worker thread gave other labels"
    row.result, problems = judge_engine(precision, row.agree, row.agree_fp32, thread_problem)
    row.detail = "; ".join(details + problems)
    return row, engine_path


def judge_engine(precision: str, agree: Optional[float], agree_fp32: Optional[float],
                 thread_problem: Optional[str] = None) -> tuple[str, list[str]]:
    """PASS or FAIL for an engine, and why it failed. Its labels are compared with ONNX
    Runtime's on the same ONNX file, or on the fp32 one where ONNX Runtime cannot run it;
    ``thread_problem``: what went wrong running it from a worker thread, if anything."""
    problems = []
    reference = agree if agree is not None else agree_fp32
    if reference is None:
        problems.append("no ONNX Runtime labels to compare with")
    elif reference < MIN_AGREEMENT[precision]:
        against = "the same ONNX file" if agree is not None else "the fp32 ONNX file"
        problems.append(f"labels agree with ONNX Runtime on {against} on {100 * reference:.2f}% "
                        f"of pixels, below {100 * MIN_AGREEMENT[precision]:.1f}%")
    if thread_problem:
        problems.append(thread_problem)
    return (FAIL if problems else PASS), problems


def run_node(engine_path: pathlib.Path, work: pathlib.Path, device: int, frames: int = 40,
             backend: str = "tensorrt", model: str = MODELS["resnet18-light"].title,
             precision: str = "fp16") -> Row:
    """The node with ``backend`` over a synthetic 480x640 sequence bag played at 10 Hz."""
    row = Row(f"node, {BACKEND_NAMES[backend]} backend", model, precision)
    if util.find_spec("rclpy") is None:
        row.result, row.detail = NOT_RUN, "rclpy is not installed"
        return row
    from cen_perception_dev.rig import NodeProcess, Rig, bag_through_node, executable
    from cen_perception_dev.synthetic_sequence import (
        COLOR_TOPIC,
        DEPTH_TOPIC,
        write_synthetic_sequence,
    )

    for name in ("cen_segmentation_node", "cen-perception-play"):
        if executable(name) is None:
            row.result, row.detail = NOT_RUN, f"{name} not found (install cen_perception)"
            return row
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(1, 100)))
    shutil.rmtree(work / "sequence", ignore_errors=True)
    bag = write_synthetic_sequence(work / "sequence", frames=frames, height=HEIGHT, width=WIDTH,
                                   rate_hz=10.0, seed=1)
    env = dict(os.environ)
    if device:
        env["CUDA_VISIBLE_DEVICES"] = str(device)  # the node uses device 0 of what it sees
    rig = Rig(outputs=("labels",), background=True, name="cen_gpu_check")
    node = NodeProcess(["-p", f"engine_path:={engine_path}", "-p", f"backend:={backend}",
                        "-p", "qos:=reliable", "-p", "diagnostics_period:=0.5",
                        "-r", f"rgb/image:={COLOR_TOPIC}", "-r", f"depth/image:={DEPTH_TOPIC}"],
                       log_path=work / f"node_{backend}.log", env=env)
    try:
        bag_through_node(node, rig, bag, [COLOR_TOPIC, DEPTH_TOPIC], frames)
    finally:
        node.stop(timeout=20)
        rig.close()
    diag, labels = rig.values, rig.count("labels")

    def number(key: str) -> Optional[float]:
        value = diag.get(key)
        return float(value) if value not in (None, "") else None

    row.median_ms = number("infer_ms_median")
    row.detail = (f"{labels} label images for {frames} frames at 10 Hz "
                  f"({diag.get('pairs_dropped', '?')} pairs skipped while busy); infer p95 "
                  f"{_ms(number('infer_ms_p95'))} ms; end to end median "
                  f"{_ms(number('end_to_end_ms_median'))}, p95 "
                  f"{_ms(number('end_to_end_ms_p95'))} ms (node /diagnostics)")
    if diag.get("backend") != backend or labels == 0 or node.returncode != 0:
        row.result = FAIL
        row.detail = (f"backend {diag.get('backend')!r}, {labels} label images, node exit "
                      f"{node.returncode}; " + row.detail)
    return row


# -- the run -------------------------------------------------------------------------------------
def _cpu_name() -> str:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class GpuCheck:
    """Every part this machine can run, in order (``run()``); ``rows`` is the table.

    Fresh-weight models are exported first, on a thread pool, so that their (CPU-heavy)
    exports overlap training on the GPU; the engines are built once every export is done.
    """

    def __init__(self, probe: Probe, args, say: Callable[[str], None]) -> None:
        self.probe, self.args, self.say = probe, args, say
        self.work: pathlib.Path = args.work
        self.specs = [MODELS[key] for key in args.models]
        self.rows: list[Row] = []
        self.tensorrt_ok = (probe.cuda_gpu and probe.tensorrt is not None
                            and not probe.tensorrt_problem)
        self.tensorrt_reason = (tensorrt_line(probe.tensorrt, probe.tensorrt_problem,
                                              probe.cuda_gpu)
                                or cuda_line(probe.cuda_python, probe.cuda_problem) or "")
        self.torch_reason = probe.torch_problem or ""
        self.torch_device = f"cuda:{args.device}" if probe.torch_gpu else "cpu"
        self.checkpoints: dict[str, Optional[pathlib.Path]] = {}
        self.exports: dict[tuple[str, str], concurrent.futures.Future] = {}
        self.data = self.work / "data"
        self.frames: list = []
        self.node_engine: Optional[pathlib.Path] = None

    def part(self, name: str, run: Callable[[], object], **row) -> object:
        """``run()``'s result, or None with a FAIL row: one failing part must not hide the
        others."""
        self.say(f"{name} ...")
        try:
            return run()
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            self.rows.append(Row(name, result=FAIL, detail=_one_line(exc), **row))
            return None

    def add(self, result: Optional[Row]) -> None:
        if result is not None:
            self.rows.append(result)

    def run(self) -> list[Row]:
        self.check_buffers()
        if not (self.probe.torch_gpu or self.tensorrt_ok):
            self.nothing_else()
            return self.rows
        self.make_data()
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=2)
        try:
            self.checkpoints_and_exports(pool)
            self.torch_parity()
            release_torch_memory()
            ort = OrtLabels(self.frames)
            self.engines(ort)
            self.legacy_int8(ort)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        self.node()
        return self.rows

    def check_buffers(self) -> None:
        if self.probe.cuda_gpu:
            self.add(self.part("cuda-python buffers", lambda: check_buffers(self.args.device)))
        else:
            self.rows.append(Row("cuda-python buffers", result=NOT_RUN, detail=cuda_line(
                self.probe.cuda_python, self.probe.cuda_problem) or ""))

    def nothing_else(self) -> None:
        """Neither CUDA PyTorch nor TensorRT: every other part, not run."""
        self.rows += [Row(name, result=NOT_RUN, detail=self.torch_reason)
                      for name in (f"training, {TRAIN_STEPS} steps, CUDA + AMP",
                                   "PyTorch fp16 autocast vs fp32")]
        self.rows += [Row(name, result=NOT_RUN, detail=self.tensorrt_reason)
                      for name in ("TensorRT engines", "node, TensorRT backend")]

    def make_data(self) -> None:
        """Synthetic scenes for training, calibration and the label comparisons (the engines'
        inputs are these, resized to 480x640)."""
        from ..data.frames import find_rgbd_pairs, load_rgbd_frame

        if not (self.data / "val.txt").is_file():
            shutil.rmtree(self.data, ignore_errors=True)
            cli("synth", self.data, "--num-train", 32, "--num-val", 8, "--height", 240,
                "--width", 320, "--seed", 0, "--no-progress", log=self.work / "synth.log")
        pairs = find_rgbd_pairs(self.data, limit=self.args.frames)
        self.frames = [load_rgbd_frame(r, d, (HEIGHT, WIDTH)) for r, d in pairs]

    def make_fresh(self, spec: ModelSpec) -> None:
        from ..data.frames import find_rgbd_pairs, load_rgbd_frame

        bn_frames = [load_rgbd_frame(r, d, (240, 320))
                     for r, d in find_rgbd_pairs(self.data, limit=8)]
        self.checkpoints[spec.key] = self.part(
            "checkpoint with fresh weights", lambda: fresh_checkpoint(
                spec, self.work / f"{spec.key}.pt", bn_frames, self.torch_device),
            model=spec.title)

    def start_exports(self, spec: ModelSpec, pool) -> None:
        if self.tensorrt_ok and self.checkpoints.get(spec.key) is not None:
            for precision in PRECISIONS:
                self.exports[spec.key, precision] = pool.submit(
                    export, spec, precision, self.checkpoints[spec.key], self.data, self.work)

    def checkpoints_and_exports(self, pool) -> None:
        # Fresh-weight models first: their exports overlap training on the GPU.
        for spec in self.specs:
            if not spec.trained:
                self.make_fresh(spec)
                self.start_exports(spec, pool)
        for spec in self.specs:
            if spec.trained:
                self.train(spec)
                if self.checkpoints.get(spec.key) is None:  # no training on the GPU
                    self.make_fresh(spec)
                self.start_exports(spec, pool)

    def train(self, spec: ModelSpec) -> None:
        name = f"training, {TRAIN_STEPS} steps, CUDA + AMP"
        if not self.probe.torch_gpu:
            self.rows.append(Row(name, spec.title, result=NOT_RUN, detail=self.torch_reason))
            return
        result = self.part(name, lambda: train_on_gpu(self.data, self.work / "run",
                                                      self.args.device), model=spec.title)
        if result is not None:
            self.rows.append(result[0])
            self.checkpoints[spec.key] = result[1]

    def torch_parity(self) -> None:
        for spec in self.specs:
            if not self.probe.torch_gpu:
                self.rows.append(Row("PyTorch fp16 autocast vs fp32", spec.title, "fp16",
                                     result=NOT_RUN, detail=self.torch_reason))
            elif self.checkpoints.get(spec.key) is not None:
                self.add(self.part("PyTorch fp16 autocast vs fp32", lambda spec=spec:
                                   torch_fp16_parity(spec, self.checkpoints[spec.key],
                                                     self.frames, self.args.device),
                                   model=spec.title))

    def engines(self, ort: OrtLabels) -> None:
        for spec in self.specs:
            for precision in PRECISIONS:
                if not self.tensorrt_ok:
                    self.rows.append(Row("TensorRT engine", spec.title, precision,
                                         result=NOT_RUN, detail=self.tensorrt_reason))
                elif (spec.key, precision) not in self.exports:
                    self.rows.append(Row("TensorRT engine", spec.title, precision, result=FAIL,
                                         detail="no checkpoint to export (see above)"))
                else:
                    self.engine(spec, precision, ort)

    def engine(self, spec: ModelSpec, precision: str, ort: OrtLabels,
               legacy: bool = False) -> None:
        part = LEGACY_INT8_PART if legacy else "TensorRT engine"
        self.say(f"{part}: {spec.title} {precision} ...")
        try:
            onnx_path, export_s = self.exports[spec.key, "fp32" if legacy else precision].result()
            row, engine_path = engine_row(spec, precision, onnx_path, export_s, self.work,
                                          self.frames, ort, self.args.device, self.args.iters,
                                          calib_data=self.data if legacy else None)
            self.rows.append(row)
            if spec.key == "resnet18-light" and precision == "fp16":
                self.node_engine = engine_path
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            self.rows.append(Row(part, spec.title, precision, result=FAIL, detail=_one_line(exc)))

    def legacy_int8(self, ort: OrtLabels) -> None:
        """``build-engine --legacy-int8`` on the first model's fp32 export, where the installed
        TensorRT has it (8.6 to 10.x; TensorRT 11 removed implicit INT8: no row there)."""
        if not self.tensorrt_ok or not self.specs:
            return
        spec = self.specs[0]
        if legacy_int8_available(self.probe.tensorrt) and (spec.key, "fp32") in self.exports:
            self.engine(spec, "int8", ort, legacy=True)

    def node(self) -> None:
        if not self.tensorrt_ok:
            self.rows.append(Row("node, TensorRT backend", result=NOT_RUN,
                                 detail=self.tensorrt_reason))
        elif self.node_engine is None:
            self.rows.append(Row("node, TensorRT backend", result=NOT_RUN,
                                 detail="needs the ResNet-18 light fp16 engine (--models "
                                        "resnet18-light), which was not built"))
        else:
            self.add(self.part("node, TensorRT backend", lambda: run_node(
                self.node_engine, self.work, self.args.device)))


def legacy_int8_available(tensorrt: Optional[str]) -> bool:
    """Whether ``build-engine --legacy-int8`` exists in TensorRT ``tensorrt`` (8.6 to 10.x)."""
    from cen_perception.engines.base import EngineError
    from cen_perception.engines.tensorrt import tensorrt_version

    from ..deploy.tensorrt import WEAK_TYPING_REMOVED_IN

    try:
        return tensorrt_version(tensorrt or "")[0] < WEAK_TYPING_REMOVED_IN
    except EngineError:  # "installed": a version pip does not know
        return False


def check(probe: Probe, args, say: Callable[[str], None]) -> list[Row]:
    """Every part this machine can run, in order; the rows of the table."""
    return GpuCheck(probe, args, say).run()


def report(probe: Probe, rows: list[Row], seconds: float) -> str:
    from cen_perception.engines.tensorrt import tensorrt_distribution

    torch_text = f"PyTorch {probe.torch_version}" + (
        f" (CUDA {probe.torch_cuda})" if probe.torch_cuda else "")
    tensorrt_text = (f"{probe.tensorrt} ({tensorrt_distribution()})" if probe.tensorrt
                     else "not installed")
    lines = ["# cen-train gpu-check", "",
             f"GPU: {probe.gpu or 'none usable through cuda-python'}; TensorRT "
             f"{tensorrt_text}; {torch_text}; CPU (ONNX Runtime "
             f"reference): {_cpu_name()}; {HEIGHT}x{WIDTH} inputs; {seconds:.0f} s in all.", "",
             markdown_table(rows), ""]
    missing = [r for r in rows if r.result == NOT_RUN]
    lines.append(f"Exit code {exit_code(rows)}: "
                 + {EXIT_PASSED: "every part ran and passed.",
                    EXIT_FAILED: "a part failed.",
                    EXIT_PARTIAL: f"what ran passed; {len(missing)} part(s) could not run here."
                    }[exit_code(rows)])
    return "\n".join(lines) + "\n"


DESCRIPTION = f"""\
Check on this machine's NVIDIA GPU, in one run of a few minutes:
  cuda-python buffers  the TensorRT engine's pinned/device buffers, bytes after a round trip
  training             {TRAIN_STEPS} steps of the training loop with CUDA and AMP (ResNet-18 light)
  PyTorch fp16         float16 autocast against float32 labels on the GPU
  TensorRT engines     ResNet-18 light (trained here) and ResNet-50 official (fresh weights)
                       at {HEIGHT}x{WIDTH}: export --precision fp32/fp16/int8, build-engine, labels
                       against ONNX Runtime on the CPU, latency (median, p90, FPS);
                       TensorRT 8.6-10.x: also build-engine --legacy-int8 on the fp32 export
  node                 cen_segmentation_node with the TensorRT backend over a sequence bag,
                       latency from its /diagnostics
and print one markdown table. A part that cannot run here is named and the rest runs."""

EPILOG = ("labels must agree with ONNX Runtime on the same ONNX file on at least\n  "
          + ", ".join(f"{100 * v:.1f}% ({k})" for k, v in MIN_AGREEMENT.items())
          + f" of pixels; PyTorch fp16 with fp32 on {100 * MIN_TORCH_FP16_AGREEMENT:.0f}%.\n"
          "exit status: 0 every part ran and passed; 1 a part failed; 2 a usage error;\n"
          "  3 no CUDA GPU here, nothing checked (each missing piece named in one line);\n"
          "  4 what ran passed, but some parts could not run here (named in the table).")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "gpu-check", help="check everything that needs an NVIDIA GPU, in one run",
        description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=pathlib.Path, metavar="DIR",
                   help="also write the report to DIR/gpu_check.md")
    p.add_argument("--work", type=pathlib.Path, metavar="DIR",
                   help="keep the data, checkpoints, ONNX files, engines and logs here "
                        "(default: a temporary folder, removed at the end)")
    p.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS),
                   help="models to export, build and time (default: both)")
    p.add_argument("--frames", type=int, default=4,
                   help="frames for the label comparisons (default 4)")
    p.add_argument("--iters", type=int, default=100,
                   help="timed inferences per engine (default 100, after 10 warm-up runs)")
    p.add_argument("--device", type=int, default=0, help="CUDA device index (default 0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .. import CliError

    if args.frames < 1 or args.iters < 1 or args.device < 0:
        raise CliError("--frames and --iters must be >= 1 and --device >= 0")
    start = time.perf_counter()
    probe = probe_machine(args.device)
    if not probe.any_gpu:
        text = "\n".join(no_gpu_report(probe)) + "\n"
        print(text, end="")
        _write_out(args.out, text)
        return EXIT_NO_GPU
    for line in lacking(probe):
        print(f"not checked here: {line}", flush=True)
    keep = args.work is not None
    args.work = args.work or pathlib.Path(tempfile.mkdtemp(prefix="cen_gpu_check_"))
    args.work.mkdir(parents=True, exist_ok=True)
    try:
        rows = check(probe, args, lambda text: print(text, flush=True))
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        rows = [Row("gpu-check", result=FAIL, detail=_one_line(exc))]
    finally:
        if not keep:
            shutil.rmtree(args.work, ignore_errors=True)
    text = report(probe, rows, time.perf_counter() - start)
    print("\n" + text, end="")
    _write_out(args.out, text)
    return exit_code(rows)


def _write_out(out: Optional[pathlib.Path], text: str) -> None:
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu_check.md").write_text(text, encoding="utf-8")
