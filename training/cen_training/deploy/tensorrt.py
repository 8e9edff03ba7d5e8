"""Build TensorRT engines from exported ONNX models, with a cache.

Precision comes from the ONNX file (``cen-train export --precision fp32|fp16|int8``; int8 is
signed symmetric Q/DQ). What the builder is asked for depends on the installed TensorRT
(``build_plan``):

* 10.x and 11.x: a strongly typed network (``NetworkDefinitionCreationFlag.STRONGLY_TYPED``):
  every layer runs in the type the ONNX graph gives it, no precision flags;
* 8.6 (no strong typing): explicit batch, with ``BuilderFlag.FP16`` for an fp16 graph and
  ``BuilderFlag.INT8`` for a Q/DQ graph (explicit quantization needs it there);
* an fp32 graph, on every version: ``BuilderFlag.TF32`` cleared (TensorRT enables it by
  default, rounding float32 inputs of convolutions and matrix products to 10-bit mantissas), so
  an engine whose card says fp32 computes in fp32;
* legacy weak typing, 8.6 to 10.x only, on an fp32 graph: ``--fp16`` (TensorRT picks FP16
  kernels where it likes) and ``--legacy-int8`` (implicit INT8 with an entropy calibrator on
  ``--calib-data``; the calibrator is deprecated since 10.1, weak typing since 10.12).
  TensorRT 11 removed both; asking for them there is an error that names the ONNX route.

An engine is tied to the TensorRT version and the GPU that built it, so built engines are
cached under a key of the ONNX file's sha256, the TensorRT version and pip distribution (the
CUDA 12 and 13 builds of one version share a version number), the GPU name, compute capability
and multiprocessor count (Jetson Orin modules share a name), the precision and the input shape
(plus the calibration images for ``--legacy-int8``); building again with the same facts reuses
the cached engine, ``force`` discards it and its calibration cache. Each engine gets the model
card from the ONNX metadata, with the engine's precision, as its ``<engine>.json`` sidecar.

Calibration frames are all read and checked before the build starts. TensorRT calls the
calibrator from C++ and, where a Python callback raises, only prints the error and takes it for
"no more frames"; the calibrator therefore keeps the first error, hands TensorRT nothing more,
writes no calibration cache, and ``build_engine`` raises it after the build.

The parts that need neither a GPU nor TensorRT (build plan, cache key, ``trtexec`` command,
calibration frames and the calibrator's logic, writing the engine and its card) are plain
functions; ``build_engine`` ties them to TensorRT's builder.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import shlex
import shutil
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Iterator, NamedTuple, Optional, Sequence

import numpy as np
import onnx

from cen_perception.engines import tensorrt as trt_runtime
from cen_perception.engines.base import EngineError
from cen_perception.model_card import ModelCard, ModelCardError

from ..data.frames import find_rgbd_pairs, load_rgbd_frame
from ..errors import EngineBuildError, TrainingError
from ..files import atomic_write
from .onnx_ops import check_engine_contract, check_tensorrt_ops, graph_precision

PRECISIONS = ("fp32", "fp16", "int8")
# Kinect-style sensors mark invalid depth with the largest 16-bit value; the contract uses 0.
STRONG_TYPING_FROM = 10  # TensorRT major version: strongly typed networks
WEAK_TYPING_REMOVED_IN = 11  # BuilderFlag.FP16/INT8 and the INT8 calibrator are gone
# Cleared for an fp32 engine: on by default in every version (8.6, 10.x and 11.x).
FP32_CLEARED_FLAGS = ("TF32",)
TRTEXEC_CLEARED = {"TF32": "--noTF32"}
CALIBRATOR_DEPRECATED_FROM = (10, 1)
WEAK_TYPING_DEPRECATED_FROM = (10, 12)


def default_cache_dir() -> pathlib.Path:
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "cen_perception" / "engines"


# -- what to ask the builder for ------------------------------------------------------------
@dataclass(frozen=True)
class BuildPlan:
    """How TensorRT builds one engine: network flags, builder flags, calibrator."""

    tensorrt_version: str
    precision: str  # the engine's arithmetic: fp32 | fp16 | int8
    strongly_typed: bool  # NetworkDefinitionCreationFlag.STRONGLY_TYPED
    explicit_batch: bool  # NetworkDefinitionCreationFlag.EXPLICIT_BATCH (8.6)
    builder_flags: tuple[str, ...] = ()  # BuilderFlag member names to set
    cleared_flags: tuple[str, ...] = ()  # BuilderFlag member names to clear (on by default)
    calibrator: bool = False  # implicit INT8 calibrated on --calib-data
    notes: tuple[str, ...] = ()  # lines worth printing (deprecations)

    def describe(self) -> str:
        typing = "strongly typed" if self.strongly_typed else "weakly typed"
        flags = f", BuilderFlag {'+'.join(self.builder_flags)}" if self.builder_flags else ""
        cleared = "".join(f", no {name}" for name in self.cleared_flags)
        calibration = ", entropy calibrator" if self.calibrator else ""
        return f"{self.precision}, {typing}{flags}{cleared}{calibration}"

    def trtexec_flags(self, calibration_cache: Optional[str | pathlib.Path] = None) -> list[str]:
        flags = ["--stronglyTyped"] if self.strongly_typed else []
        flags += [f"--{name.lower()}" for name in self.builder_flags]
        flags += [TRTEXEC_CLEARED[name] for name in self.cleared_flags]
        if self.calibrator and calibration_cache is not None:
            flags.append(f"--calib={calibration_cache}")
        return flags


def onnx_route(precision: str) -> str:
    calibration = " --calib-data DIR" if precision == "int8" else ""
    return (f"cen-train export CKPT -o model_{precision}.onnx --height H --width W "
            f"--precision {precision}{calibration}")


def build_plan(tensorrt_version: str, onnx_precision: str, legacy_int8: bool = False,
               fp16: bool = False) -> BuildPlan:
    """What to ask TensorRT ``tensorrt_version`` for to build a graph of ``onnx_precision``.

    ``fp16`` / ``legacy_int8``: the legacy weak-typing requests (an fp32 graph only; TensorRT
    8.6 to 10.x). Raises ``EngineBuildError`` (one line) for a combination TensorRT cannot build.
    """
    if onnx_precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {onnx_precision!r}")
    try:
        major, minor, _ = trt_runtime.tensorrt_version(tensorrt_version)
    except EngineError as exc:
        raise EngineBuildError(str(exc)) from None
    if (major, minor) < trt_runtime.MIN_TENSORRT:
        raise EngineBuildError(
            f"TensorRT {tensorrt_version} is too old; 8.6, 10.x or 11.x is needed")
    if major == 9:
        raise EngineBuildError(
            f"TensorRT {tensorrt_version} (a 9.x release for large language models) "
            "is not supported; use 8.6, 10.x or 11.x")
    if fp16 and legacy_int8:
        raise EngineBuildError("--fp16 and --legacy-int8 exclude each other")
    legacy = "--legacy-int8" if legacy_int8 else "--fp16" if fp16 else None
    wanted = "int8" if legacy_int8 else "fp16"
    if legacy and onnx_precision != "fp32":
        raise EngineBuildError(
            f"{legacy} lowers an fp32 model's precision, but this model is already "
            f"{onnx_precision}: build it without {legacy}")
    if legacy and major >= WEAK_TYPING_REMOVED_IN:
        removed = ("BuilderFlag.INT8 and the INT8 calibrator" if legacy_int8
                   else "BuilderFlag.FP16")
        raise EngineBuildError(f"TensorRT {tensorrt_version} has no weak typing ({legacy} needs "
                       f"{removed}, removed in TensorRT 11): put the precision in the ONNX "
                       f"model instead ({onnx_route(wanted)}) and build that without {legacy}")
    if legacy:
        notes = []
        if legacy_int8 and (major, minor) >= CALIBRATOR_DEPRECATED_FROM:
            notes.append(f"note: INT8 calibration is deprecated since TensorRT 10.1 and removed "
                         f"in 11; the lasting route is {onnx_route('int8')}")
        elif (major, minor) >= WEAK_TYPING_DEPRECATED_FROM:
            notes.append(f"note: weak typing ({legacy}) is deprecated since TensorRT 10.12 and "
                         f"removed in 11; the lasting route is {onnx_route(wanted)}")
        return BuildPlan(tensorrt_version, wanted, strongly_typed=False,
                         explicit_batch=major < STRONG_TYPING_FROM,
                         builder_flags=("INT8",) if legacy_int8 else ("FP16",),
                         calibrator=legacy_int8, notes=tuple(notes))
    cleared = FP32_CLEARED_FLAGS if onnx_precision == "fp32" else ()
    if major >= STRONG_TYPING_FROM:
        return BuildPlan(tensorrt_version, onnx_precision, strongly_typed=True,
                         explicit_batch=False, cleared_flags=cleared)
    # 8.6 has no strong typing: the graph's float16 tensors need FP16 allowed, and its Q/DQ
    # layers (explicit quantization) need INT8 allowed.
    flags = {"fp32": (), "fp16": ("FP16",), "int8": ("INT8",)}[onnx_precision]
    return BuildPlan(tensorrt_version, onnx_precision, strongly_typed=False,
                     explicit_batch=True, builder_flags=flags, cleared_flags=cleared)


# -- cache key ---------------------------------------------------------------------------
@dataclass(frozen=True)
class BuildFacts:
    """Everything an engine depends on besides the builder's own choices."""

    onnx_sha256: str
    tensorrt_version: str
    # tensorrt-cu12, tensorrt-cu13, ... (trt_runtime.tensorrt_distribution)
    tensorrt_distribution: str
    gpu_name: str
    compute_capability: tuple[int, int]
    multiprocessors: int  # cudaDeviceProp.multiProcessorCount
    precision: str
    input_size: tuple[int, int]  # (H, W)
    calibration_sha256: str = ""  # --legacy-int8 only: the calibration images

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")

    def as_json(self) -> str:
        """The facts as canonical JSON (sorted keys), what ``key`` hashes."""
        facts = asdict(self)
        facts["compute_capability"] = list(self.compute_capability)
        facts["input_size"] = list(self.input_size)
        return json.dumps(facts, sort_keys=True)

    def key(self) -> str:
        """A sha256 over the facts; any change gives another key."""
        return hashlib.sha256(self.as_json().encode()).hexdigest()


def file_sha256(path: str | pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cached_paths(cache_dir: str | pathlib.Path, key: str) -> dict[str, pathlib.Path]:
    """Where a key's engine, INT8 calibration cache and build facts live."""
    base = pathlib.Path(cache_dir) / key
    return {"engine": base.with_suffix(".engine"), "calibration": base.with_suffix(".calib"),
            "facts": base.with_suffix(".json")}


def discard_cached(cached: dict[str, pathlib.Path]) -> list[pathlib.Path]:
    """Remove a key's engine, calibration cache and facts (``--force``); returns what was there."""
    removed = [path for path in cached.values() if path.exists()]
    for path in removed:
        path.unlink()
    return removed


# -- trtexec ----------------------------------------------------------------------------
def trtexec_command(onnx_path: str | pathlib.Path, engine_path: str | pathlib.Path,
                    plan: BuildPlan, workspace_gb: float = 4.0,
                    calibration_cache: Optional[str | pathlib.Path] = None) -> str:
    """The ``trtexec`` command line that builds the same engine (for people who use trtexec)."""
    args = ["trtexec", f"--onnx={onnx_path}", f"--saveEngine={engine_path}"]
    args += plan.trtexec_flags(calibration_cache)
    args.append(f"--memPoolSize=workspace:{int(round(workspace_gb * 1024))}M")
    return shlex.join(args)


# -- calibration images -------------------------------------------------------------------
def calibration_batches(pairs: Sequence[tuple[pathlib.Path, pathlib.Path]],
                        input_size: Sequence[int]) -> Iterator[dict[str, np.ndarray]]:
    for rgb_path, depth_path in pairs:
        yield load_rgbd_frame(rgb_path, depth_path, input_size)


def calibration_sha256(pairs: Sequence[tuple[pathlib.Path, pathlib.Path]]) -> str:
    """A digest of the calibration images' names and bytes (part of the INT8 cache key)."""
    digest = hashlib.sha256()
    for rgb_path, depth_path in pairs:
        for path in (rgb_path, depth_path):
            digest.update(path.name.encode() + b"\0" + file_sha256(path).encode())
    return digest.hexdigest()


def check_calibration_frames(pairs: Sequence[tuple[pathlib.Path, pathlib.Path]],
                             input_size: Sequence[int], progress: bool = True) -> None:
    """Read every calibration frame once before a build, so an unreadable one stops it early
    with its name (a ``EngineBuildError``) instead of surfacing inside TensorRT's callback."""
    from tqdm import tqdm

    for rgb_path, depth_path in tqdm(pairs, desc="checking calibration frames", unit="frame",
                                     disable=not progress, leave=False):
        load_rgbd_frame(rgb_path, depth_path, input_size)


class CalibrationFeed:
    """What an INT8 calibrator does, without TensorRT's base class: hands out one frame at a
    time, reads and writes the calibration cache, and keeps the first error in ``error``
    instead of raising it (see ``calibrator_class``)."""

    def __init__(self, batches: Iterable[dict[str, np.ndarray]], count: int,
                 cache_file: pathlib.Path,
                 upload: Callable[[dict[str, np.ndarray], list[str]], list[int]],
                 progress: bool = True) -> None:
        from tqdm import tqdm

        self.error: Optional[BaseException] = None
        self.delivered = 0
        self.count = int(count)
        self.cache_file = pathlib.Path(cache_file)
        self._batches = iter(batches)
        self._upload = upload
        self._progress = tqdm(total=count, desc="INT8 calibration", unit="frame",
                              disable=not progress, leave=False)

    def next_pointers(self, names) -> Optional[list[int]]:
        """The next frame's device addresses in ``names``' order; None when there are no more
        frames or an error was kept."""
        if self.error is not None:
            return None
        try:
            batch = next(self._batches, None)
            if batch is None:
                self._progress.close()
                return None
            missing = [name for name in names if name not in batch]
            if missing:
                raise EngineBuildError(f"calibration frame {self.delivered + 1} has no input "
                                       f"{', '.join(map(repr, missing))}")
            pointers = [int(p) for p in self._upload(batch, list(names))]
            self.delivered += 1
            self._progress.update(1)
            return pointers
        except BaseException as exc:
            self.error = exc
            self._progress.close()
            return None

    def read_cache(self) -> Optional[bytes]:
        try:
            return self.cache_file.read_bytes() if self.cache_file.is_file() else None
        except BaseException as exc:
            self.error = self.error or exc
            return None

    def write_cache(self, cache) -> None:
        if self.error is not None or self.delivered < self.count:
            return  # a failed or shortened calibration must not be reused
        try:
            atomic_write(self.cache_file, lambda tmp: tmp.write_bytes(bytes(cache)))
        except BaseException as exc:
            self.error = exc

    def raise_if_failed(self) -> None:
        """Raise the first error a callback kept, as a ``EngineBuildError`` naming the frame."""
        if self.error is None:
            return
        error = self.error
        message = str(error) if isinstance(error, (TrainingError, EngineError)) else (
            f"{type(error).__name__}: {error}")
        raise EngineBuildError(
            f"INT8 calibration failed after {self.delivered} of {self.count} "
            f"frames: {message}") from error


def calibrator_class(base: type) -> type:
    """An INT8 calibrator class on ``base`` (``tensorrt.IInt8EntropyCalibrator2``).

    ``cls(batches, count, cache_file, upload)``: ``batches`` yields one frame at a time
    (``{"rgb": [1,H,W,3] uint8, "depth": [1,H,W] float32}``); ``upload(batch, names)`` puts a
    frame's inputs on the GPU and returns their device addresses in ``names``' order; the
    calibration cache is read from and written to ``cache_file``.

    TensorRT calls these methods from C++; where one raises, TensorRT's Python binding prints
    the error and carries on as if calibration had ended, so a bad frame would silently shorten
    calibration. Each method here therefore keeps the first error in its ``CalibrationFeed``
    (``feed.error``), after which ``get_batch`` reports no more frames and no cache is written
    (nor one that saw fewer than ``count`` frames); ``raise_if_failed()`` raises it once the
    build returns.
    """

    class EntropyCalibrator(base):
        def __init__(self, batches: Iterable[dict[str, np.ndarray]], count: int,
                     cache_file: pathlib.Path,
                     upload: Callable[[dict[str, np.ndarray], list[str]], list[int]],
                     progress: bool = True) -> None:
            base.__init__(self)
            self.feed = CalibrationFeed(batches, count, cache_file, upload, progress)

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names, *args):
            return self.feed.next_pointers(names)

        def read_calibration_cache(self, *args):
            return self.feed.read_cache()

        def write_calibration_cache(self, cache, *args) -> None:
            self.feed.write_cache(cache)

        def raise_if_failed(self) -> None:
            self.feed.raise_if_failed()

    return EntropyCalibrator


class CalibrationUploader:
    """Device buffers for one calibration frame; ``upload(batch, names)`` for the calibrator."""

    def __init__(self, input_size: Sequence[int]) -> None:
        h, w = int(input_size[0]), int(input_size[1])
        cudart = trt_runtime.import_cudart()
        self.buffers = trt_runtime.CudaBuffers(
            cudart, {"rgb": ((1, h, w, 3), "uint8"), "depth": ((1, h, w), "float32")})

    def __call__(self, batch: dict[str, np.ndarray], names: list[str]) -> list[int]:
        for name in names:
            np.copyto(self.buffers.host[name], batch[name])
            self.buffers.to_device(name)
        self.buffers.synchronize()
        return [self.buffers.device[name] for name in names]

    def close(self) -> None:
        self.buffers.close()


# -- the model card and writing files -----------------------------------------------------
def card_from_onnx(model) -> ModelCard:
    """The model card stored in an ``onnx.ModelProto``'s ``metadata_props``."""
    metadata = {p.key: p.value for p in model.metadata_props}
    try:
        return ModelCard.from_metadata(metadata, source="ONNX model")
    except ModelCardError as exc:
        raise EngineBuildError(str(exc)) from None


def write_engine(engine: bytes | memoryview | str | pathlib.Path, output: str | pathlib.Path,
                 card: ModelCard) -> pathlib.Path:
    """Write an engine (serialized bytes, or a cached engine file to copy) and its sidecar card."""
    output = pathlib.Path(output)
    if isinstance(engine, (str, pathlib.Path)):
        atomic_write(output, lambda tmp: shutil.copyfile(engine, tmp))
    else:
        atomic_write(output, lambda tmp: tmp.write_bytes(bytes(engine)))
    card.save_sidecar(output)
    return output


# -- GPU and TensorRT -----------------------------------------------------------------------
class GpuFacts(NamedTuple):
    name: str
    compute_capability: tuple[int, int]
    multiprocessors: int


def gpu_facts(device: int = 0) -> GpuFacts:
    """Name, compute capability and multiprocessor count of a CUDA device, made current;
    ``EngineBuildError`` where there is none. Checked before TensorRT is imported: without a
    driver TensorRT can crash at exit."""
    try:
        cudart = trt_runtime.import_cudart()
        trt_runtime.require_cuda_device(cudart, device)
        props = trt_runtime.cuda_call(cudart, cudart.cudaGetDeviceProperties(device),
                                      "cudaGetDeviceProperties")
    except EngineError as exc:
        raise EngineBuildError(str(exc)) from None
    name = props.name
    name = name.split(b"\0", 1)[0].decode() if isinstance(name, bytes) else str(name)
    return GpuFacts(name.strip(), (int(props.major), int(props.minor)),
                    int(props.multiProcessorCount))


def import_tensorrt():
    """The ``tensorrt`` module (8.6 or newer); ``EngineBuildError`` where it is missing."""
    try:
        return trt_runtime.import_tensorrt()
    except EngineError as exc:
        raise EngineBuildError(str(exc)) from None


def _member(owner, name: str, what: str, plan: BuildPlan):
    value = getattr(owner, name, None)
    if value is None:
        raise EngineBuildError(f"TensorRT {plan.tensorrt_version} has no {what}.{name}; put the "
                       f"precision in the ONNX model instead ({onnx_route(plan.precision)})")
    return value


def network_flags(trt, plan: BuildPlan) -> int:
    """The ``create_network`` flags of a plan, as this TensorRT spells them."""
    creation, flags = trt.NetworkDefinitionCreationFlag, 0
    if plan.explicit_batch:
        flags |= 1 << int(_member(creation, "EXPLICIT_BATCH", "NetworkDefinitionCreationFlag",
                                  plan))
    if plan.strongly_typed:
        strongly_typed = getattr(creation, "STRONGLY_TYPED", None)
        # TensorRT 11 networks are always strongly typed; the flag is kept there, but a build
        # without it would be too.
        if strongly_typed is None and trt_runtime.tensorrt_version(
                plan.tensorrt_version)[0] < WEAK_TYPING_REMOVED_IN:
            raise EngineBuildError(f"TensorRT {plan.tensorrt_version} has no "
                           "NetworkDefinitionCreationFlag.STRONGLY_TYPED")
        if strongly_typed is not None:
            flags |= 1 << int(strongly_typed)
    return flags


def new_builder(trt, logger):
    """``trt.Builder(logger)``; one ``EngineBuildError`` line naming the driver's CUDA version
    and the installed TensorRT variant where TensorRT cannot initialise CUDA."""
    try:
        return trt_runtime.construct_tensorrt(trt.Builder, logger, "trt.Builder failed",
                                              trt_runtime.import_cudart(), trt.__version__)
    except EngineError as exc:
        raise EngineBuildError(str(exc)) from None


def build_serialized(trt, onnx_path: pathlib.Path, plan: BuildPlan, workspace_gb: float,
                     calibrator=None) -> bytes:
    """Parse the ONNX file and build a serialized engine as ``plan`` says."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = new_builder(trt, logger)
    network = builder.create_network(network_flags(trt, plan))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(" ".join(str(parser.get_error(i)).split())
                           for i in range(parser.num_errors))
        raise EngineBuildError(
            f"{onnx_path}: TensorRT's ONNX parser failed: {errors or 'no details'}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    for name in plan.builder_flags:
        config.set_flag(_member(trt.BuilderFlag, name, "BuilderFlag", plan))
    for name in plan.cleared_flags:
        config.clear_flag(_member(trt.BuilderFlag, name, "BuilderFlag", plan))
    if plan.calibrator:
        config.int8_calibrator = calibrator
    serialized = builder.build_serialized_network(network, config)
    if calibrator is not None:
        calibrator.raise_if_failed()  # an engine from a cut-short calibration is not kept
    if serialized is None:
        raise EngineBuildError(
            f"{onnx_path}: TensorRT could not build an engine (see its log above)")
    return bytes(serialized)


def load_engine_model(onnx_path: pathlib.Path) -> tuple[ModelCard, str]:
    """The model card and graph precision of an ONNX file, after the engine contract and the
    TensorRT operator checks; ``EngineBuildError`` naming every problem."""
    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and friends for non-ONNX files
        raise EngineBuildError(f"{onnx_path}: not an ONNX model ({type(exc).__name__})") from None
    problems = check_engine_contract(model)
    unsupported = check_tensorrt_ops(model)
    problems += [f"TensorRT cannot parse {op}" for op in unsupported]
    if problems:
        hint = ""
        if any(op.endswith("Linear(uint8)") for op in unsupported):
            hint = (" (uint8 Q/DQ is ONNX Runtime's INT8 for CPUs; one INT8 model for both "
                    f"backends comes from {onnx_route('int8')})")
        raise EngineBuildError(
            f"{onnx_path}: not a valid engine model: " + "; ".join(problems) + hint)
    card = card_from_onnx(model)
    precision = graph_precision(model)
    if card.precision != precision:
        raise EngineBuildError(
            f"{onnx_path}: the model card says precision {card.precision} but the "
            f"graph is {precision}")
    return card, precision


def build_engine(onnx_path: str | pathlib.Path, output: str | pathlib.Path,
                 fp16: bool = False, legacy_int8: bool = False, workspace_gb: float = 4.0,
                 calib_data: Optional[str | pathlib.Path] = None, calib_limit: int = 500,
                 cache_dir: Optional[str | pathlib.Path] = None, force: bool = False,
                 device: int = 0, progress: bool = True,
                 log: Callable[[str], None] = print) -> pathlib.Path:
    """Build (or take from the cache) the engine for ``onnx_path`` and write it to ``output``
    with its ``<output>.json`` card. The precision is the ONNX graph's; ``fp16`` and
    ``legacy_int8`` are the legacy weak-typing requests (see ``build_plan``). Raises
    ``EngineBuildError`` with one line on any failure."""
    onnx_path, output = pathlib.Path(onnx_path), pathlib.Path(output)
    if not onnx_path.is_file():
        raise EngineBuildError(f"{onnx_path}: file not found")
    if legacy_int8 and calib_data is None:
        raise EngineBuildError(
            "--legacy-int8 needs --calib-data DIR (a dataset folder with rgb/ and depth/)")
    if calib_data is not None and not legacy_int8:
        raise EngineBuildError("--calib-data is only used with --legacy-int8 (an int8 ONNX model "
                       "carries its own scales)")
    if workspace_gb <= 0:
        raise EngineBuildError(f"--workspace-gb must be positive, got {workspace_gb}")
    card, onnx_precision = load_engine_model(onnx_path)
    pairs = find_rgbd_pairs(calib_data, calib_limit) if legacy_int8 else []
    cache_dir = pathlib.Path(cache_dir) if cache_dir else default_cache_dir()
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EngineBuildError(
            f"{cache_dir}: cannot create the engine cache ({exc.strerror})") from None

    gpu = gpu_facts(device)
    trt = import_tensorrt()
    plan = build_plan(trt.__version__, onnx_precision, legacy_int8=legacy_int8, fp16=fp16)
    for note in plan.notes:
        log(note)
    if pairs:
        check_calibration_frames(pairs, card.input_size, progress=progress)
    facts = BuildFacts(onnx_sha256=file_sha256(onnx_path), tensorrt_version=trt.__version__,
                       tensorrt_distribution=trt_runtime.tensorrt_distribution(),
                       gpu_name=gpu.name, compute_capability=gpu.compute_capability,
                       multiprocessors=gpu.multiprocessors,
                       precision=plan.precision, input_size=(card.height, card.width),
                       calibration_sha256=calibration_sha256(pairs) if pairs else "")
    cached = cached_paths(cache_dir, facts.key())
    if force:
        discard_cached(cached)
    if cached["engine"].is_file():
        log(f"using the cached engine {cached['engine']} (TensorRT {facts.tensorrt_version} "
            f"{facts.tensorrt_distribution}, {gpu.name} with {gpu.multiprocessors} SMs, "
            f"{plan.describe()}); --force rebuilds")
    else:
        _build_into_cache(trt, onnx_path, facts, plan, card, cached, workspace_gb, pairs,
                          progress, log)
    log("equivalent trtexec command: " + trtexec_command(
        onnx_path, output, plan, workspace_gb, cached["calibration"] if pairs else None))
    return write_engine(cached["engine"], output, dataclasses.replace(card,
                                                                      precision=plan.precision))


def _build_into_cache(trt, onnx_path: pathlib.Path, facts: BuildFacts, plan: BuildPlan,
                      card: ModelCard, cached: dict[str, pathlib.Path], workspace_gb: float,
                      pairs: Sequence[tuple[pathlib.Path, pathlib.Path]], progress: bool,
                      log: Callable[[str], None]) -> None:
    major, minor = facts.compute_capability
    log(f"building a {plan.describe()} engine for {facts.gpu_name} (sm_{major}{minor}, "
        f"{facts.multiprocessors} SMs) with TensorRT {facts.tensorrt_version} "
        f"({facts.tensorrt_distribution}); this takes minutes")
    calibrator = uploader = None
    if plan.calibrator:
        base = _member(trt, "IInt8EntropyCalibrator2", "tensorrt", plan)
        uploader = CalibrationUploader(card.input_size)
        calibrator = calibrator_class(base)(calibration_batches(pairs, card.input_size),
                                            len(pairs), cached["calibration"], uploader,
                                            progress=progress)
    try:
        serialized = build_serialized(trt, onnx_path, plan, workspace_gb, calibrator)
    finally:
        if uploader is not None:
            uploader.close()
    card = dataclasses.replace(card, precision=plan.precision)
    write_engine(serialized, cached["engine"], card)
    cached["facts"].write_text(json.dumps({**asdict(facts), "plan": plan.describe()}, indent=2)
                               + "\n", encoding="utf-8")


__all__ = ["PRECISIONS", "BuildPlan", "build_plan", "BuildFacts", "file_sha256", "cached_paths",
           "discard_cached", "trtexec_command", "find_rgbd_pairs",
           "load_rgbd_frame", "calibration_batches", "check_calibration_frames",
           "calibration_sha256", "CalibrationFeed", "calibrator_class", "card_from_onnx",
           "write_engine", "gpu_facts", "GpuFacts", "new_builder", "build_engine",
           "load_engine_model", "default_cache_dir", "onnx_route"]
