"""Inference benchmark: the training graph, the folded graph, its ONNX export in each precision.

``run_bench(model, height, width, threads=...)`` times, on the same machine, with the same
number of threads and the same input frame, raw engine inputs -> labels through

1. the PyTorch training graph (eval mode),
2. the PyTorch folded inference graph (``fused.fuse``),
3. ONNX Runtime on the fp32 export of the folded graph (the file ``cen-train export`` writes),
   through the runtime's own engine (``cen_perception.engines.onnxruntime``, the node's settings),
4. optionally the same on its fp16 version and on its two INT8 versions, ``int8-ort`` (uint8
   activations, for ONNX Runtime) and ``int8`` (signed symmetric, TensorRT's Q/DQ), made by
   ``quantize.convert_precision`` as ``cen-train export --precision`` makes them,

and reports per row the latency (median and 90th percentile after warm-up), the arithmetic
per frame, the rate achieved, that rate as a share of the machine's SGEMM rate, the peak memory
of inference and the speed relative to the training graph.

How the columns are measured:

- GFLOP per frame: counted on the ONNX graph of each row (the training graph is exported
  without folding for this count only), with shapes from ONNX Runtime's symbolic shape
  inference. Convolutions and matrix products count 2 FLOP per multiply-add (bias ignored);
  element-wise arithmetic (Add, Mul, Relu, Where, ...) 1 FLOP per output element; pooling
  and reductions (MaxPool, ArgMax, ReduceMax, Softmax) 1 per element they read (a pooling
  window counts its area); Resize 4 per output element (bilinear: 2 per tap pair, or 1 for
  nearest). Layout and copy operators (Transpose, Concat, Slice, Cast, Reshape, Quantize- /
  DequantizeLinear, ...) count nothing, so the fp16 and INT8 rows count the same operations as
  fp32 (in float16 or as integer operations).
- SGEMM ceiling: the best of a few 4096 x 4096 x 4096 single-precision matrix products
  (``torch.mm``, MKL) at the same thread count, measured in the same run.
- Peak memory: the growth of the process's resident set during the row's warm-up and timed
  runs over what it was just before them (Linux ``VmHWM`` after resetting it through
  ``/proc/self/clear_refs``, freed heap returned with ``malloc_trim`` first). It covers
  activations, workspaces and arenas; the weights are loaded before and not counted.
- Labels agree: the share of pixels with the same label as the reference row (the training
  graph for the folded graph and the fp32 export; the fp32 export for the others), on the real
  frames. A frame whose median valid depth lies beyond ``MAX_PLAUSIBLE_DEPTH_M`` cannot come
  from an indoor RGB-D camera read in millimetres (its depth file has another unit); it is
  reported on its own and left out of the column.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import os
import pathlib
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
import onnx
import torch
from torch import nn

from ..data.datasets import RGB_SUFFIXES
from ..data.frames import find_rgbd_pairs, load_rgbd_frame
from ..deploy.export import ExportGraph, check_onnx, export_onnx
from ..deploy.fused import fuse
from ..deploy.quantize import MAX_PLAUSIBLE_DEPTH_M, Frame, convert_precision, median_depth_m
from ..errors import ConfigError, DatasetError, ExportError

# Real frames used when none are given: the RGB-D samples kept beside the source repository
# (``<repository>/../shared/samples``: sub-folders with rgb.jpg|png and depth.png), if present.
DEFAULT_SAMPLES = pathlib.Path(__file__).resolve().parents[4] / "shared" / "samples"

SGEMM_SIZE = 4096
# Share of the CPU time other processes may take during a row before the report warns.
BUSY_MACHINE = 0.10
# The reduced-precision rows: (precision, row name), in table order.
PRECISION_ROWS = (("fp16", "ONNX Runtime fp16 (--precision fp16)"),
                  ("int8-ort", "ONNX Runtime INT8 (--precision int8-ort)"),
                  ("int8", "ONNX Runtime INT8 (--precision int8)"))

_ELEMENTWISE_OPS = frozenset("""
    Add Sub Mul Div Relu LeakyRelu Clip Where Max Min Sum Mean Neg Abs Sqrt Exp Log Sigmoid Tanh
    Erf Pow Reciprocal Floor Ceil Round Equal Less Greater Not And Or Sign PRelu HardSigmoid
""".split())
_READ_OPS = frozenset("ArgMax ArgMin ReduceMax ReduceMin ReduceMean ReduceSum Softmax LogSoftmax "
                      "GlobalAveragePool GlobalMaxPool".split())


# -- arithmetic -------------------------------------------------------------------------------
def _shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    inferred = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    shapes: dict[str, tuple[int, ...]] = {}
    for value in (list(inferred.graph.value_info) + list(inferred.graph.input)
                  + list(inferred.graph.output)):
        dims = value.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = tuple(int(d.dim_value) for d in dims)
    for tensor in inferred.graph.initializer:
        shapes[tensor.name] = tuple(int(d) for d in tensor.dims)
    return shapes


def _node_flop(node: onnx.NodeProto, shapes: dict[str, tuple[int, ...]]) -> int:
    def size(name: str) -> int:
        if name not in shapes:
            raise ExportError(f"cannot count FLOP: the shape of '{name}' (input or output of "
                           f"{node.op_type} node '{node.name}') is unknown")
        return int(np.prod(shapes[name], dtype=np.int64))

    op = node.op_type
    if op in ("Conv", "QLinearConv", "ConvInteger"):
        weight = node.input[3] if op == "QLinearConv" else node.input[1]
        out = node.output[0]
        kernel = shapes[weight][1:]  # [Cin / groups, kh, kw]: MACs per output element
        return 2 * size(out) * int(np.prod(kernel, dtype=np.int64))
    if op in ("MatMul", "Gemm", "MatMulInteger"):
        a = shapes[node.input[0]]
        transposed = op == "Gemm" and any(
            at.name == "transA" and at.i for at in node.attribute)
        inner = a[-2] if transposed else a[-1]
        return 2 * size(node.output[0]) * int(inner)
    if op in _ELEMENTWISE_OPS:
        return size(node.output[0])
    if op in ("MaxPool", "AveragePool"):
        kernel = next(at.ints for at in node.attribute if at.name == "kernel_shape")
        return size(node.output[0]) * int(np.prod(kernel))
    if op in _READ_OPS:
        return size(node.input[0])
    if op == "Resize":
        mode = next((at.s.decode() for at in node.attribute if at.name == "mode"), "nearest")
        return size(node.output[0]) * (1 if mode == "nearest" else 4)
    return 0  # layout, copies, casts, (de)quantization, shape arithmetic


def count_gflop(model: onnx.ModelProto | str | pathlib.Path) -> float:
    """Arithmetic of one run of an ONNX model with static input shapes, in GFLOP (see the
    module docstring for what counts)."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    shapes = _shapes(model)
    return sum(_node_flop(n, shapes) for n in model.graph.node) / 1e9


def sgemm_gflops(threads: int, size: int = SGEMM_SIZE, repeats: int = 3) -> float:
    """The machine's single-precision matrix-product rate (GFLOP/s) at ``threads`` threads:
    the best of ``repeats`` ``size``-cubed ``torch.mm`` calls after one warm-up call."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        generator = torch.Generator().manual_seed(0)
        a = torch.randn(size, size, generator=generator)
        b = torch.randn(size, size, generator=generator)
        out = torch.empty(size, size)
        torch.mm(a, b, out=out)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, b, out=out)
            best = min(best, time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)
    return 2.0 * size ** 3 / best / 1e9


# -- memory -----------------------------------------------------------------------------------
def _status_kib(field_name: str) -> Optional[int]:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _release_free_heap() -> None:
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@contextlib.contextmanager
def peak_memory() -> "contextlib.AbstractContextManager[dict]":
    """Measures the resident-set growth (MiB) of the block: ``result["mib"]`` (None where the
    kernel offers no resettable peak)."""
    result: dict[str, Optional[float]] = {"mib": None}
    _release_free_heap()
    before = _status_kib("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")  # reset VmHWM to the current resident set
        resettable = True
    except OSError:
        resettable = False
    yield result
    peak = _status_kib("VmHWM")
    if resettable and before is not None and peak is not None:
        result["mib"] = max(peak - before, 0) / 1024.0


class OtherLoad:
    """Share of the machine's CPU time that other processes used between ``start()`` and
    ``stop()`` (from ``/proc/stat`` minus this process's own time); None where unavailable.
    Contention from other processes inflates latencies, so the report states it."""

    def __init__(self) -> None:
        self.fraction: Optional[float] = None
        self._start: Optional[tuple[int, int]] = None

    @staticmethod
    def _sample() -> Optional[tuple[int, int]]:
        try:
            with open("/proc/stat", encoding="ascii") as f:
                fields = [int(v) for v in f.readline().split()[1:9]]
            with open("/proc/self/stat", encoding="ascii") as f:
                own = f.read().rsplit(")", 1)[1].split()
        except (OSError, ValueError, IndexError):
            return None
        total = sum(fields)
        busy = total - fields[3] - fields[4]  # minus idle and iowait
        return total, busy - int(own[11]) - int(own[12])  # minus our utime + stime

    def start(self) -> "OtherLoad":
        self._start = self._sample()
        return self

    def stop(self) -> Optional[float]:
        end = self._sample()
        if self._start is not None and end is not None and end[0] > self._start[0]:
            self.fraction = max(0.0, (end[1] - self._start[1]) / (end[0] - self._start[0]))
        return self.fraction


# -- frames -----------------------------------------------------------------------------------
def _sample_pairs(folder: pathlib.Path) -> list[tuple[pathlib.Path, pathlib.Path]]:
    """Sub-folders holding ``rgb.<png|jpg>`` and ``depth.png`` (the samples layout)."""
    pairs = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        rgb = next((sub / f"rgb{s}" for s in RGB_SUFFIXES if (sub / f"rgb{s}").is_file()), None)
        if rgb is not None and (sub / "depth.png").is_file():
            pairs.append((rgb, sub / "depth.png"))
    return pairs


def load_frames(folder: str | pathlib.Path, size: Sequence[int],
                limit: Optional[int] = None) -> list[Frame]:
    """Frames of a folder resized to ``size`` (H, W): a dataset in the generic layout
    (``rgb/``, ``depth/`` 16-bit mm PNG), or sub-folders each with ``rgb.png|jpg`` and
    ``depth.png``. ``DatasetError`` when there are none."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: folder not found")
    if (folder / "rgb").is_dir() and (folder / "depth").is_dir():
        pairs = find_rgbd_pairs(folder, limit=limit)
    else:
        pairs = _sample_pairs(folder)
        if not pairs:
            raise DatasetError(f"{folder}: no frames (expected rgb/ and depth/ folders, or "
                           "sub-folders with rgb.png|jpg and depth.png)")
        if limit is not None and 0 < limit < len(pairs):
            pairs = [pairs[int(i)] for i in np.linspace(0, len(pairs) - 1, limit)]
    frames = []
    for rgb_path, depth_path in pairs:
        batch = load_rgbd_frame(rgb_path, depth_path, size)
        name = rgb_path.stem if rgb_path.parent.name == "rgb" else rgb_path.parent.name
        frames.append((name, batch["rgb"][0], batch["depth"][0]))
    return frames


def synthetic_frames(size: Sequence[int], count: int, seed: int = 0) -> list[Frame]:
    """Rendered RGB-D scenes (``cen_training.data.synthetic``) of ``size`` (H, W)."""
    from ..data.synthetic import render_scene

    h, w = int(size[0]), int(size[1])
    frames = []
    for i, stream in enumerate(np.random.SeedSequence([seed, h, w]).spawn(count)):
        rgb, depth_mm, _ = render_scene(np.random.default_rng(stream), h, w)
        frames.append((f"synthetic-{i}", rgb, depth_mm.astype(np.float32) / 1000.0))
    return frames


# -- runners ----------------------------------------------------------------------------------
class TorchRunner:
    """Raw engine inputs -> labels through a PyTorch network (the export's post-processing)."""

    def __init__(self, network: nn.Module, height: int, width: int) -> None:
        self.graph = ExportGraph(network, height, width, confidence=False, logits=False).eval()

    def __call__(self, rgb: np.ndarray, depth: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            labels = self.graph(torch.from_numpy(rgb[None]), torch.from_numpy(depth[None]))[0]
            return labels[0].numpy()


class OrtRunner:
    """The runtime's own ONNX Runtime engine (the node's settings; it also checks the card)."""

    def __init__(self, path: str | pathlib.Path, threads: int) -> None:
        from cen_perception.engines.onnxruntime import OnnxRuntimeEngine

        self.engine = OnnxRuntimeEngine(path, threads=threads)

    def __call__(self, rgb: np.ndarray, depth: np.ndarray) -> np.ndarray:
        return self.engine.infer(rgb, depth)[0]


# -- the report -------------------------------------------------------------------------------
@dataclass
class BenchRow:
    name: str
    latencies_ms: list[float]
    gflop: float
    peak_mib: Optional[float] = None
    agreement: Optional[float] = None  # fraction of pixels whose label matches the reference
    frame_agreement: list[float] = field(default_factory=list)  # the same, per frame
    other_load: Optional[float] = None  # CPU share other processes used during the timed runs

    @property
    def median_ms(self) -> float:
        return float(np.median(self.latencies_ms))

    @property
    def p90_ms(self) -> float:
        return float(np.percentile(self.latencies_ms, 90))

    @property
    def gflops(self) -> float:
        return self.gflop / (self.median_ms / 1000.0)


@dataclass
class BenchReport:
    title: str
    threads: int
    sgemm_gflops: float
    warmup: int
    iters: int
    sgemm_size: int = SGEMM_SIZE
    rows: list[BenchRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        base = self.rows[0].median_ms if self.rows else float("nan")
        lines = [f"### {self.title}", "",
                 "| graph | median ms | p90 ms | GFLOP | GFLOP/s | % SGEMM | peak MiB | "
                 "speed vs training | labels agree |",
                 "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for row in self.rows:
            memory = "n/a" if row.peak_mib is None else f"{row.peak_mib:.0f}"
            agree = "-" if row.agreement is None else f"{100 * row.agreement:.2f}%"
            lines.append(
                f"| {row.name} | {row.median_ms:.1f} | {row.p90_ms:.1f} | {row.gflop:.1f} | "
                f"{row.gflops:.1f} | {100 * row.gflops / self.sgemm_gflops:.0f}% | {memory} | "
                f"{base / row.median_ms:.2f}x | {agree} |")
        lines += ["", f"SGEMM ceiling: {self.sgemm_gflops:.1f} GFLOP/s ({self.sgemm_size}^3 "
                      f"torch.mm, {self.threads} threads, best at the start and end of the "
                      f"run). Latency over {self.iters} runs after "
                      f"{self.warmup} warm-up runs, {self.threads} threads everywhere."]
        lines += self.notes
        return "\n".join(lines) + "\n"


def _time_runs(run: Callable[[], object], warmup: int, iters: int,
               progress: Optional[Callable[[], None]]) -> list[float]:
    for _ in range(warmup):
        run()
        if progress:
            progress()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000.0)
        if progress:
            progress()
    return times


def _agree(row: BenchRow, labels: list[np.ndarray], reference: list[np.ndarray],
           counted: Sequence[int]) -> None:
    """Per-frame agreement; the row's figure averages the frames in ``counted``."""
    row.frame_agreement = [float((x == y).mean()) for x, y in zip(labels, reference)]
    row.agreement = float(np.mean([row.frame_agreement[i] for i in counted]))


def run_bench(model: nn.Module, height: int, width: int, threads: int = 2, warmup: int = 1,
              iters: int = 5, int8: bool = False, calib_frames: Optional[Sequence[Frame]] = None,
              real_frames: Optional[Sequence[Frame]] = None, calib_count: int = 8,
              workdir: Optional[str | pathlib.Path] = None, progress: bool = True,
              title: Optional[str] = None, sgemm_size: int = SGEMM_SIZE,
              fp16: bool = False) -> BenchReport:
    """Benchmark ``model`` at ``height`` x ``width`` (see the module docstring).

    ``fp16``: add the fp16 row; ``int8``: the two INT8 rows (``int8-ort``, ``int8``).
    ``real_frames`` give the input of every timed run (the first with plausible depth) and
    the label agreement; ``calib_frames`` calibrate the INT8 models (rendered synthetic scenes
    when None). The ONNX files go to ``workdir`` (a temporary folder when None).
    """
    from tqdm import tqdm

    if threads < 1 or warmup < 0 or iters < 1:
        raise ConfigError("--threads and --iters must be >= 1, --warmup >= 0")
    model = model.eval()
    notes: list[str] = []
    real_frames, depth_medians, counted = _input_frames(real_frames, height, width, notes)
    precisions = [(p, name) for p, name in PRECISION_ROWS
                  if (p == "fp16" and fp16) or (p != "fp16" and int8)]
    steps = 4 + len(precisions) + (3 + len(precisions)) * (1 + warmup + iters)
    bar = tqdm(total=steps, desc="bench", unit="step", disable=not progress)

    def step(what: str) -> None:
        bar.set_postfix_str(what)
        bar.update()

    with contextlib.ExitStack() as stack:
        previous_threads = torch.get_num_threads()
        torch.set_num_threads(threads)
        stack.callback(torch.set_num_threads, previous_threads)
        if workdir is None:
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="cen_bench_"))
        workdir = pathlib.Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        stack.enter_context(contextlib.closing(bar))

        ceiling = sgemm_gflops(threads, sgemm_size)
        step("SGEMM ceiling")
        runners = _row_runners(model, height, width, threads, workdir, precisions, int8,
                               calib_frames, calib_count, notes, progress, step)
        report = BenchReport(title or _title(model, height, width), threads, ceiling, warmup,
                             iters, sgemm_size, notes=notes)
        _, rgb, depth = real_frames[counted[0]]
        labels = _time_rows(runners, rgb, depth, real_frames, report, step)
        # The ceiling is the machine's best: measured again, now that everything is warm.
        report.sgemm_gflops = max(ceiling, sgemm_gflops(threads, sgemm_size))
        step("SGEMM ceiling")
        # Folded graph and fp32 export against the training graph; the others against fp32.
        for i in (1, 2):
            _agree(report.rows[i], labels[i], labels[0], counted)
        for i in range(3, len(report.rows)):
            _agree(report.rows[i], labels[i], labels[2], counted)
    _agreement_notes(notes, real_frames, depth_medians, counted, bool(precisions), int8,
                     report)
    _machine_notes(notes, model, report)
    return report


def _input_frames(real_frames: Optional[Sequence[Frame]], height: int, width: int,
                  notes: list[str]) -> tuple[Sequence[Frame], list[float], list[int]]:
    """The frames to run (rendered scenes when none are given), their median depths and the
    indices of those counted in the agreement: the ones with plausible depth."""
    if not real_frames:
        real_frames = synthetic_frames((height, width), 2, seed=1)
        notes.append("No real frames given: inputs and label agreement use rendered "
                     "synthetic scenes.")
    depth_medians = [median_depth_m(d) for _, _, d in real_frames]
    plausible = [i for i, m in enumerate(depth_medians) if m <= MAX_PLAUSIBLE_DEPTH_M]
    counted = plausible or list(range(len(real_frames)))  # none plausible: count them all
    return real_frames, depth_medians, counted


def _row_runners(model: nn.Module, height: int, width: int, threads: int,
                 workdir: pathlib.Path, precisions: list[tuple[str, str]], int8: bool,
                 calib_frames: Optional[Sequence[Frame]], calib_count: int, notes: list[str],
                 progress: bool, step: Callable[[str], None]
                 ) -> list[tuple[str, Callable[[], Callable], float]]:
    """The rows' ``(name, make runner, GFLOP per frame)``: the training graph, the folded
    graph, its fp32 export and the ``precisions`` made from that export (in ``workdir``)."""
    fp32_path = workdir / f"model_{height}x{width}.onnx"
    proto = export_onnx(model, fp32_path, height, width)
    check_onnx(proto, str(fp32_path))
    fused_gflop = count_gflop(proto)
    del proto
    step("fp32 export")
    training_path = workdir / f"training_graph_{height}x{width}.onnx"
    training_gflop = count_gflop(export_onnx(model, training_path, height, width, fused=False))
    training_path.unlink()
    step("training-graph FLOP count")
    if int8:
        if not calib_frames:
            calib_frames = synthetic_frames((height, width), calib_count)
            notes.append(f"INT8 calibrated on {len(calib_frames)} rendered synthetic "
                         "scenes (no --calib-data given).")
        else:
            notes.append(f"INT8 calibrated on {len(calib_frames)} dataset frames.")
    converted: list[tuple[str, pathlib.Path, float]] = []
    for precision, name in precisions:
        path = workdir / f"model_{height}x{width}_{precision}.onnx"
        gflop = count_gflop(convert_precision(fp32_path, path, precision, calib_frames,
                                              progress=progress))
        converted.append((name, path, gflop))
        step(f"{precision} model")
    runners: list[tuple[str, Callable[[], Callable], float]] = [
        ("PyTorch training graph", lambda: TorchRunner(model, height, width), training_gflop),
        ("PyTorch fused graph", lambda: TorchRunner(fuse(model), height, width), fused_gflop),
        ("ONNX Runtime fp32 (fused export)", lambda: OrtRunner(fp32_path, threads), fused_gflop),
    ]
    return runners + [(name, lambda path=path: OrtRunner(path, threads), gflop)
                      for name, path, gflop in converted]


def _time_rows(runners: list[tuple[str, Callable[[], Callable], float]], rgb: np.ndarray,
               depth: np.ndarray, real_frames: Sequence[Frame], report: BenchReport,
               step: Callable[[str], None]) -> list[list[np.ndarray]]:
    """Time every row on ``rgb``/``depth`` into ``report``; each row's labels of every frame."""
    labels: list[list[np.ndarray]] = []
    for name, build, gflop in runners:
        runner = build()
        step(f"{name}: ready")
        with peak_memory() as memory:
            other = OtherLoad().start()
            times = _time_runs(functools.partial(runner, rgb, depth), report.warmup,
                               report.iters, functools.partial(step, name))
            other.stop()
        labels.append([runner(r, d) for _, r, d in real_frames])
        report.rows.append(BenchRow(name, times, gflop, memory["mib"],
                                    other_load=other.fraction))
        del runner
        gc.collect()
    return labels


def _agreement_notes(notes: list[str], real_frames: Sequence[Frame], depth_medians: list[float],
                     counted: list[int], other_precisions: bool, int8: bool,
                     report: BenchReport) -> None:
    """What the agreement column compares, the frames it leaves out, INT8 per frame."""
    left_out = [i for i in range(len(real_frames)) if i not in counted]
    notes.append(f"Labels agree: fraction of pixels with the same label on {len(counted)} "
                 f"frame(s) ({', '.join(real_frames[i][0] for i in counted)}); the folded graph "
                 "and the fp32 export against the training graph, "
                 + ("the other precisions" if other_precisions else "nothing else")
                 + " against the fp32 export.")
    if left_out:
        listed = ", ".join(f"{real_frames[i][0]} ({depth_medians[i]:.1f} m)" for i in left_out)
        notes.append(f"Left out of the agreement: frames whose median depth is beyond "
                     f"{MAX_PLAUSIBLE_DEPTH_M:g} m, farther than indoor RGB-D cameras measure, "
                     f"so their depth files are not in millimetres: {listed}. They are "
                     "outside any calibration range"
                     + ("; their per-frame figures follow." if int8 else "."))
    for row in report.rows[3:]:
        if "INT8" in row.name:
            per_frame = ", ".join(f"{name} {100 * a:.2f}%" for (name, _, _), a in
                                  zip(real_frames, row.frame_agreement))
            notes.append(f"{row.name} labels per frame: {per_frame}.")


def _machine_notes(notes: list[str], model: nn.Module, report: BenchReport) -> None:
    """CEN's exchanged channels, and how busy the machine was during the timed runs."""
    config = model.config
    if config.arch == "cen":
        notes.append(f"Exchanged channels (|gamma| < {config.bn_threshold:g}): "
                     f"{100 * model.slim_fraction():.1f}%.")
    loads = [f"{100 * r.other_load:.0f}%" for r in report.rows if r.other_load is not None]
    if loads:
        notes.append(f"CPU time other processes used during each row's runs (of {os.cpu_count()} "
                     f"CPUs; contention inflates latency): {', '.join(loads)}.")
    if max((r.other_load or 0.0) for r in report.rows) > BUSY_MACHINE:
        notes.append("Warning: the machine was busy with other work, so these latencies are "
                     "inflated, PyTorch's most (its OpenMP threads spin-wait for each other; "
                     "OMP_WAIT_POLICY=PASSIVE softens that). Compare figures from an idle machine.")


def _title(model: nn.Module, height: int, width: int) -> str:
    c = model.config
    return (f"{c.arch} {c.backbone}, {c.decoder} decoder, {'+'.join(c.modalities)}, "
            f"{c.num_classes} classes, {height}x{width}")
