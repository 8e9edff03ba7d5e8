"""Build TensorRT engines from exported ONNX models, with a cache and INT8 calibration.

An engine is tied to the TensorRT version and the GPU that built it, so built engines are
cached under a key of the ONNX file's sha256, the TensorRT version, the GPU name and compute
capability, the precision and the input shape (plus the calibration images for INT8);
building again with the same facts reuses the cached engine. Each engine gets the model card
from the ONNX metadata as its ``<engine>.json`` sidecar.

The parts that need neither a GPU nor TensorRT (cache key, ``trtexec`` command, calibration
images, writing the engine and its card) are plain functions; ``build_engine`` ties them to
TensorRT's builder.
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shlex
import shutil
import tempfile
from dataclasses import asdict, dataclass
from typing import Callable, Iterator, Optional, Sequence

import cv2
import numpy as np
import onnx

from cen_perception.engines import tensorrt as trt_runtime
from cen_perception.engines.base import EngineError
from cen_perception.model_card import ModelCard, ModelCardError

from . import CliError
from .onnx_ops import check_engine_contract, check_tensorrt_ops

PRECISIONS = ("fp32", "fp16", "int8")
RGB_SUFFIXES = (".png", ".jpg", ".jpeg")
# Kinect-style sensors mark invalid depth with the largest 16-bit value; the contract uses 0.
DEPTH_INVALID_MM = 65535


def default_cache_dir() -> pathlib.Path:
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "cen_perception" / "engines"


# -- cache key ---------------------------------------------------------------------------
@dataclass(frozen=True)
class BuildFacts:
    """Everything an engine depends on besides the builder's own choices."""

    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: tuple[int, int]
    precision: str
    input_size: tuple[int, int]  # (H, W)
    calibration_sha256: str = ""  # INT8 only: the calibration images

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")

    def key(self) -> str:
        """A sha256 over the facts; any change gives another key."""
        facts = asdict(self)
        facts["compute_capability"] = list(self.compute_capability)
        facts["input_size"] = list(self.input_size)
        return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()


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


# -- trtexec ----------------------------------------------------------------------------
def trtexec_command(onnx_path: str | pathlib.Path, engine_path: str | pathlib.Path,
                    precision: str = "fp32", workspace_gb: float = 4.0,
                    calibration_cache: Optional[str | pathlib.Path] = None) -> str:
    """The ``trtexec`` command line that builds the same engine (for people who use trtexec)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    args = ["trtexec", f"--onnx={onnx_path}", f"--saveEngine={engine_path}"]
    if precision != "fp32":
        args.append(f"--{precision}")
    if precision == "int8" and calibration_cache is not None:
        args.append(f"--calib={calibration_cache}")
    args.append(f"--memPoolSize=workspace:{int(round(workspace_gb * 1024))}M")
    return shlex.join(args)


# -- calibration images -------------------------------------------------------------------
def find_calibration_pairs(folder: str | pathlib.Path,
                           limit: Optional[int] = None) -> list[tuple[pathlib.Path, pathlib.Path]]:
    """(rgb, depth) file pairs of a dataset in the generic layout, matched by file stem.

    ``folder/rgb/<name>.png|jpg`` and ``folder/depth/<name>.png`` (16-bit millimetres). Spread
    evenly over the dataset when ``limit`` is smaller than it.
    """
    folder = pathlib.Path(folder)
    rgb_dir, depth_dir = folder / "rgb", folder / "depth"
    if not rgb_dir.is_dir() or not depth_dir.is_dir():
        raise CliError(f"{folder}: calibration data needs rgb/ and depth/ folders "
                       "(the generic dataset layout)")
    depth_by_stem = {p.stem: p for p in depth_dir.glob("*.png")}
    pairs = sorted((p, depth_by_stem[p.stem]) for p in rgb_dir.iterdir()
                   if p.suffix.lower() in RGB_SUFFIXES and p.stem in depth_by_stem)
    if not pairs:
        raise CliError(f"{folder}: no rgb/depth image pairs with matching names")
    if limit is not None and 0 < limit < len(pairs):
        pairs = [pairs[int(i)] for i in np.linspace(0, len(pairs) - 1, limit)]
    return pairs


def load_calibration_frame(rgb_path: str | pathlib.Path, depth_path: str | pathlib.Path,
                           input_size: Sequence[int]) -> dict[str, np.ndarray]:
    """One engine input batch: ``rgb`` uint8 [1,H,W,3] (RGB order) and ``depth`` float32
    [1,H,W] in metres (0 = invalid), resized to ``input_size`` (H, W)."""
    h, w = int(input_size[0]), int(input_size[1])
    bgr = cv2.imread(str(rgb_path), cv2.IMREAD_COLOR)
    depth_mm = cv2.imread(str(depth_path), cv2.IMREAD_UNCHANGED)
    if bgr is None:
        raise CliError(f"{rgb_path}: not a readable image")
    if depth_mm is None or depth_mm.dtype != np.uint16 or depth_mm.ndim != 2:
        raise CliError(f"{depth_path}: depth must be a single-channel 16-bit PNG in millimetres")
    rgb = cv2.cvtColor(cv2.resize(bgr, (w, h), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
    # Nearest keeps invalid (0) pixels from bleeding into their neighbours.
    depth_mm = cv2.resize(depth_mm, (w, h), interpolation=cv2.INTER_NEAREST)
    depth = depth_mm.astype(np.float32) / 1000.0
    depth[depth_mm == DEPTH_INVALID_MM] = 0.0
    return {"rgb": np.ascontiguousarray(rgb[None]), "depth": np.ascontiguousarray(depth[None])}


def calibration_batches(pairs: Sequence[tuple[pathlib.Path, pathlib.Path]],
                        input_size: Sequence[int]) -> Iterator[dict[str, np.ndarray]]:
    for rgb_path, depth_path in pairs:
        yield load_calibration_frame(rgb_path, depth_path, input_size)


def calibration_sha256(pairs: Sequence[tuple[pathlib.Path, pathlib.Path]]) -> str:
    """A digest of the calibration images' names and bytes (part of the INT8 cache key)."""
    digest = hashlib.sha256()
    for rgb_path, depth_path in pairs:
        for path in (rgb_path, depth_path):
            digest.update(path.name.encode() + b"\0" + file_sha256(path).encode())
    return digest.hexdigest()


# -- the model card and writing files -----------------------------------------------------
def card_from_onnx(model) -> ModelCard:
    """The model card stored in an ``onnx.ModelProto``'s ``metadata_props``."""
    metadata = {p.key: p.value for p in model.metadata_props}
    try:
        return ModelCard.from_metadata(metadata, source="ONNX model")
    except ModelCardError as exc:
        raise CliError(str(exc)) from None


def _write_atomically(path: pathlib.Path, write: Callable[[pathlib.Path], None]) -> None:
    """Write through a temporary file, so a failure never leaves half a file at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(pathlib.Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def write_engine(engine: bytes | memoryview | str | pathlib.Path, output: str | pathlib.Path,
                 card: ModelCard) -> pathlib.Path:
    """Write an engine (serialized bytes, or a cached engine file to copy) and its sidecar card."""
    output = pathlib.Path(output)
    if isinstance(engine, (str, pathlib.Path)):
        _write_atomically(output, lambda tmp: shutil.copyfile(engine, tmp))
    else:
        _write_atomically(output, lambda tmp: tmp.write_bytes(bytes(engine)))
    card.save_sidecar(output)
    return output


# -- GPU and TensorRT -----------------------------------------------------------------------
def gpu_facts(device: int = 0) -> tuple[str, tuple[int, int]]:
    """(name, compute capability) of a CUDA device; ``CliError`` where there is none.

    Checked before TensorRT is imported: without a driver TensorRT can crash at exit.
    """
    try:
        cudart = trt_runtime.import_cudart()
        trt_runtime.require_cuda_device(cudart, device)
        props = trt_runtime.cuda_call(cudart, cudart.cudaGetDeviceProperties(device),
                                      "cudaGetDeviceProperties")
    except EngineError as exc:
        raise CliError(str(exc)) from None
    name = props.name
    name = name.split(b"\0", 1)[0].decode() if isinstance(name, bytes) else str(name)
    return name.strip(), (int(props.major), int(props.minor))


def import_tensorrt():
    """The ``tensorrt`` module (8.6 or newer); ``CliError`` where it is missing."""
    try:
        return trt_runtime.import_tensorrt()
    except EngineError as exc:
        raise CliError(str(exc)) from None


def make_calibrator(trt, batches: Sequence[dict[str, np.ndarray]] | Iterator,
                    count: int, cache_file: pathlib.Path):
    """An ``IInt8EntropyCalibrator2`` feeding ``batches`` (one frame each, N=1) from device
    buffers; it reads and writes TensorRT's calibration cache at ``cache_file``."""
    from tqdm import tqdm

    if not hasattr(trt, "IInt8EntropyCalibrator2"):
        raise CliError(f"TensorRT {trt.__version__} has no INT8 calibrator; use --fp16, or "
                       "quantize the ONNX model explicitly")
    cudart = trt_runtime.import_cudart()
    cuda_call = trt_runtime.cuda_call

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.batches = iter(batches)
            self.device_ptrs: dict[str, int] = {}
            self.progress = tqdm(total=count, desc="INT8 calibration", unit="frame")

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names, *args):
            batch = next(self.batches, None)
            if batch is None:
                self.progress.close()
                return []  # no more batches
            for name in names:
                array = batch[name]
                if name not in self.device_ptrs:
                    self.device_ptrs[name] = cuda_call(
                        cudart, cudart.cudaMalloc(array.nbytes), "cudaMalloc")
                cuda_call(cudart, cudart.cudaMemcpy(
                    self.device_ptrs[name], array.ctypes.data, array.nbytes,
                    cudart.cudaMemcpyKind.cudaMemcpyHostToDevice), f"copying '{name}'")
            self.progress.update(1)
            return [self.device_ptrs[name] for name in names]

        def read_calibration_cache(self):
            return cache_file.read_bytes() if cache_file.is_file() else None

        def write_calibration_cache(self, cache) -> None:
            _write_atomically(cache_file, lambda tmp: tmp.write_bytes(bytes(cache)))

        def free(self) -> None:
            for ptr in self.device_ptrs.values():
                cudart.cudaFree(ptr)
            self.device_ptrs = {}

    return EntropyCalibrator()


def build_serialized(trt, onnx_path: pathlib.Path, precision: str, workspace_gb: float,
                     calibrator=None) -> bytes:
    """Parse the ONNX file and build a serialized engine with TensorRT's builder."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    major = int(trt.__version__.split(".")[0])
    # TensorRT 10 networks are always explicit-batch; earlier versions need the flag.
    flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(" ".join(str(parser.get_error(i)).split())
                           for i in range(parser.num_errors))
        raise CliError(f"{onnx_path}: TensorRT's ONNX parser failed: {errors or 'no details'}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = calibrator
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise CliError(f"{onnx_path}: TensorRT could not build an engine (see its log above)")
    return bytes(serialized)


def build_engine(onnx_path: str | pathlib.Path, output: str | pathlib.Path,
                 precision: str = "fp32", workspace_gb: float = 4.0,
                 calib_data: Optional[str | pathlib.Path] = None, calib_limit: int = 500,
                 cache_dir: Optional[str | pathlib.Path] = None, force: bool = False,
                 device: int = 0, log: Callable[[str], None] = print) -> pathlib.Path:
    """Build (or take from the cache) the engine for ``onnx_path`` and write it to ``output``
    with its ``<output>.json`` card. Raises ``CliError`` with one line on any failure."""
    onnx_path, output = pathlib.Path(onnx_path), pathlib.Path(output)
    if precision not in PRECISIONS:
        raise CliError(f"precision must be one of {', '.join(PRECISIONS)}")
    if not onnx_path.is_file():
        raise CliError(f"{onnx_path}: file not found")
    if precision == "int8" and calib_data is None:
        raise CliError("--int8 needs --calib-data DIR (a dataset folder with rgb/ and depth/)")
    if workspace_gb <= 0:
        raise CliError(f"--workspace-gb must be positive, got {workspace_gb}")
    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and friends for non-ONNX files
        raise CliError(f"{onnx_path}: not an ONNX model ({type(exc).__name__})") from None
    problems = check_engine_contract(model)
    problems += [f"TensorRT cannot parse {op}" for op in check_tensorrt_ops(model)]
    if problems:
        raise CliError(f"{onnx_path}: not a valid engine model: " + "; ".join(problems))
    card = card_from_onnx(model)
    del model  # the builder reads the file itself
    pairs = find_calibration_pairs(calib_data, calib_limit) if precision == "int8" else []
    cache_dir = pathlib.Path(cache_dir) if cache_dir else default_cache_dir()
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"{cache_dir}: cannot create the engine cache ({exc.strerror})") from None
    if precision != "int8":  # the INT8 command needs the calibration cache, known later
        log("equivalent trtexec command: "
            + trtexec_command(onnx_path, output, precision, workspace_gb))

    gpu_name, capability = gpu_facts(device)
    trt = import_tensorrt()
    facts = BuildFacts(onnx_sha256=file_sha256(onnx_path), tensorrt_version=trt.__version__,
                       gpu_name=gpu_name, compute_capability=capability, precision=precision,
                       input_size=(card.height, card.width),
                       calibration_sha256=calibration_sha256(pairs) if pairs else "")
    cached = cached_paths(cache_dir, facts.key())
    if cached["engine"].is_file() and not force:
        log(f"using the cached engine {cached['engine']} "
            f"(TensorRT {facts.tensorrt_version}, {gpu_name}, {precision}); --force rebuilds")
    else:
        _build_into_cache(trt, onnx_path, facts, card, cached, workspace_gb, pairs, log)
    if precision == "int8":
        log("equivalent trtexec command: " + trtexec_command(
            onnx_path, output, precision, workspace_gb, cached["calibration"]))
    return write_engine(cached["engine"], output, card)


def _build_into_cache(trt, onnx_path: pathlib.Path, facts: BuildFacts, card: ModelCard,
                      cached: dict[str, pathlib.Path], workspace_gb: float,
                      pairs: Sequence[tuple[pathlib.Path, pathlib.Path]],
                      log: Callable[[str], None]) -> None:
    precision, (major, minor) = facts.precision, facts.compute_capability
    log(f"building a {precision} engine for {facts.gpu_name} (sm_{major}{minor}) "
        f"with TensorRT {facts.tensorrt_version}; this takes minutes")
    calibrator = None
    if precision == "int8":
        calibrator = make_calibrator(trt, calibration_batches(pairs, card.input_size),
                                     len(pairs), cached["calibration"])
    try:
        serialized = build_serialized(trt, onnx_path, precision, workspace_gb, calibrator)
    finally:
        if calibrator is not None:
            calibrator.free()
    write_engine(serialized, cached["engine"], card)
    cached["facts"].write_text(json.dumps(asdict(facts), indent=2) + "\n", encoding="utf-8")


__all__ = ["PRECISIONS", "BuildFacts", "file_sha256", "cached_paths", "trtexec_command",
           "find_calibration_pairs", "load_calibration_frame", "calibration_batches",
           "calibration_sha256", "card_from_onnx", "write_engine", "gpu_facts", "build_engine",
           "default_cache_dir"]
