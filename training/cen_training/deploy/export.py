"""Export a trained model to the engine contract of docs/DESIGN.md (ONNX, opset 17, static
shapes).

Inputs ``rgb`` uint8 [1,H,W,3] and ``depth`` float32 [1,H,W] (metres); outputs ``labels`` uint8
[1,H,W] (the ensemble logits upsampled bilinearly, align_corners=False, then argmax), optionally
``confidence`` float32 [1,H,W] (max softmax probability) and ``logits_<branch>`` /
``logits_ensemble`` float32 [1,C,H/4,W/4]. The graph is the folded inference graph of
``fused.py``; the model card goes into ``metadata_props``. Before an export is reported as good,
the file passes the ONNX checker, the engine-contract and TensorRT-operator checks, and ONNX
Runtime reproduces the PyTorch training graph on random and real frames.

``precision`` other than fp32 (``quantize.PRECISIONS``): the verified fp32 graph is converted
(``quantize.convert_precision``: fp16, or INT8 calibrated on dataset frames), checked the same
way, and must give the fp32 graph's labels on at least ``MIN_PRECISION_AGREEMENT`` of the
pixels of real frames (or the ``min_agreement`` the caller sets: ``cen-train export
--min-agreement PCT``), all in ONNX Runtime, before it is written; the card records the
precision.
"""
from __future__ import annotations

import contextlib
import io
import pathlib
import warnings
from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn

from cen_perception.model_card import METADATA_KEY, ModelCard

from ..errors import ConfigError, ExportError
from .fused import fuse
from .onnx_ops import OPSET, check_engine_contract, check_tensorrt_ops
from .quantize import (
    INT8_PRECISIONS,
    MAX_PLAUSIBLE_DEPTH_M,
    PRECISIONS,
    Frame,
    convert_precision,
    median_depth_m,
)

# Parity thresholds: labels identical on at least this fraction of pixels; logits within
# this absolute tolerance relative to their largest magnitude.
MIN_LABEL_AGREEMENT = 0.999
LOGIT_RTOL = 1e-3
# A reduced-precision export: its labels against the fp32 export's, share of the pixels of the
# real frames (all of them together).
MIN_PRECISION_AGREEMENT = {"fp16": 0.995, "int8": 0.98, "int8-ort": 0.98}


class ExportGraph(nn.Module):
    """Network logits -> the contract's outputs, everything inside the graph."""

    def __init__(self, network: nn.Module, height: int, width: int, confidence: bool,
                 logits: bool) -> None:
        super().__init__()
        self.network, self.size = network, (height, width)
        self.confidence, self.logits = confidence, logits

    def forward(self, rgb: torch.Tensor, depth: torch.Tensor):
        outs = self.network(rgb, depth)
        ensemble = outs[-1]
        modalities = self.network.modalities
        # Both inputs are part of the contract even where a model reads only one (a single-
        # modality baseline): tie the unused one in with an exact zero so no exporter or
        # TensorRT parser drops it. The comparison keeps NaN input from leaking into it.
        for name, unused in (("rgb", rgb), ("depth", depth)):
            needed = {"rgb": ("rgb",), "depth": ("depth", "normals")}[name]
            if not any(m in needed for m in modalities):
                # Cast first: TensorRT lets a uint8 input feed only a cast to float.
                ensemble = ensemble + (unused.float().reshape(-1)[:1] > 1e30).float() * 0.0
        full = F.interpolate(ensemble, size=self.size, mode="bilinear", align_corners=False)
        # Through float: TensorRT casts to uint8 only from float32 / float16.
        results = [full.argmax(dim=1).float().to(torch.uint8)]
        if self.confidence:
            results.append(torch.softmax(full, dim=1).amax(dim=1))
        if self.logits:
            results.extend(outs)
        return tuple(results)


def output_names(branch_names: list[str], confidence: bool, logits: bool) -> list[str]:
    names = ["labels"] + (["confidence"] if confidence else [])
    if logits:
        names += [f"logits_{b}" for b in branch_names] + ["logits_ensemble"]
    return names


def model_card(model: nn.Module, height: int, width: int, confidence: bool,
               logits: bool) -> ModelCard:
    """The card of an export: the checkpoint's card plus what the export fixes."""
    config, card = model.config, dict(getattr(model, "card", {}) or {})
    from ..card import default_card
    defaults = default_card(config.num_classes)
    return ModelCard(
        arch=config.arch, backbone=config.backbone, decoder=config.decoder,
        modalities=list(config.modalities), num_classes=config.num_classes,
        class_names=card.get("class_names", defaults["class_names"]),
        palette=card.get("palette", defaults["palette"]),
        input_size=[height, width], normalization=config.normalization,
        outputs=(["labels"] + (["confidence"] if confidence else [])
                 + (["logits"] if logits else [])),
        dataset=card.get("dataset", {}), metrics=card.get("metrics", {}),
        depth_range_m=list(card.get("depth_range_m", [])))


def _quiet_export(module: nn.Module, args: tuple, path: pathlib.Path, names: list[str]) -> None:
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), dynamo=False, opset_version=OPSET,
                          input_names=["rgb", "depth"], output_names=names,
                          do_constant_folding=True)


def export_onnx(model: nn.Module, path: str | pathlib.Path, height: int, width: int,
                confidence: bool = False, logits: bool = False,
                fused: bool = True) -> onnx.ModelProto:
    """Write the ONNX file (without verification; see ``export_and_verify``)."""
    path = pathlib.Path(path)
    if height % 32 or width % 32:
        raise ConfigError(f"--height and --width must be multiples of 32 (got {height}x{width})")
    model = model.eval()
    network = fuse(model) if fused else model
    graph = ExportGraph(network, height, width, confidence, logits).eval()
    rgb = torch.zeros(1, height, width, 3, dtype=torch.uint8)
    depth = torch.ones(1, height, width, dtype=torch.float32)
    names = output_names(model.branch_names, confidence, logits)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        shapes = [tuple(t.shape) for t in graph(rgb, depth)]
        _quiet_export(graph, (rgb, depth), path, names)
    proto = onnx.load(str(path))
    # Static shapes everywhere: the tracer can leave symbolic output dims behind slices/pads.
    for value, shape in zip(proto.graph.output, shapes):
        dims = value.type.tensor_type.shape.dim
        del dims[:]
        for size in shape:
            dims.add().dim_value = int(size)
    card = model_card(model, height, width, confidence, logits)
    onnx.helper.set_model_props(proto, {METADATA_KEY: card.to_json()})
    proto.producer_name = "cen_perception"
    onnx.save(proto, str(path))
    return proto


def check_onnx(proto: onnx.ModelProto, source: str, tensorrt: bool = True) -> None:
    """ONNX checker, the engine contract and (``tensorrt``) TensorRT's parser coverage;
    ``ExportError`` if not."""
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"{source}: ONNX checker: {str(exc).splitlines()[0]}") from None
    problems = check_engine_contract(proto)
    if tensorrt:
        problems += [f"operator not supported by the TensorRT ONNX parser: {op}"
                     for op in check_tensorrt_ops(proto)]
    if problems:
        raise ExportError(f"{source}: " + "; ".join(problems))


@dataclass
class PrecisionReport:
    """Labels of a reduced-precision export against those of the fp32 export (ONNX Runtime)."""
    precision: str
    required: Optional[float] = None  # the share asked for; None: MIN_PRECISION_AGREEMENT's
    frames: list[str] = field(default_factory=list)
    label_agreement: list[float] = field(default_factory=list)  # per frame
    counted: list[int] = field(default_factory=list)  # frames in the overall figure
    median_depth_m: list[float] = field(default_factory=list)

    @property
    def minimum(self) -> float:
        return MIN_PRECISION_AGREEMENT[self.precision] if self.required is None else self.required

    @property
    def agreement(self) -> float:
        """Share of the counted frames' pixels (equal-size frames) with the fp32 label."""
        if not self.counted:
            return 1.0
        return float(np.mean([self.label_agreement[i] for i in self.counted]))

    @property
    def ok(self) -> bool:
        return self.agreement >= self.minimum

    def summary(self) -> str:
        lines = []
        for i, name in enumerate(self.frames):
            line = f"  {name:<28} labels agree {100 * self.label_agreement[i]:8.4f}%"
            if i not in self.counted:
                line += (f"  (left out: median depth {self.median_depth_m[i]:.1f} m, beyond "
                         f"{MAX_PLAUSIBLE_DEPTH_M:g} m, so not millimetres)")
            lines.append(line)
        lines.append(f"  {'overall':<28} labels agree {100 * self.agreement:8.4f}% "
                     f"(need {100 * self.minimum:.1f}%)")
        return "\n".join(lines)


def exact_session(path: str | pathlib.Path, threads: int = 0):
    """An ONNX Runtime CPU session whose integer products are exact on every x86 CPU (those
    without VNNI saturate u8 x s8 sums of full-range int8 weights otherwise), so that a
    comparison judges the quantization, not the CPU."""
    import onnxruntime as ort
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.add_session_config_entry("session.x64quantprecision", "1")
    options.log_severity_level = 4  # a refusal below is handled, not an error to print
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Fail:
        # ONNX Runtime's extended graph optimisations refuse some signed-int8 graphs in this
        # mode ("Attempt to replace the existing tensor", seen with untrained weights); the
        # basic ones compute the same numbers.
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Fail as exc:
        raise ExportError(f"{path}: ONNX Runtime cannot open the model: "
                          f"{' '.join(str(exc).split())[-300:]}") from None


def compare_precision(fp32_path: str | pathlib.Path, other_path: str | pathlib.Path,
                      precision: str, frames: Sequence[Frame], threads: int = 0,
                      min_agreement: Optional[float] = None) -> PrecisionReport:
    """Labels of ``other_path`` (a ``precision`` version of ``fp32_path``) against the fp32
    model's on ``frames``, both in ONNX Runtime on the CPU. A frame whose median depth is beyond
    ``MAX_PLAUSIBLE_DEPTH_M`` (a depth file not in millimetres, outside any calibration range)
    is reported but left out of the overall figure, unless all are. ``min_agreement``: the
    share the report asks for (default ``MIN_PRECISION_AGREEMENT[precision]``)."""

    sessions = [exact_session(p, threads) for p in (fp32_path, other_path)]
    report = PrecisionReport(precision, required=min_agreement)
    for name, rgb, depth in frames:
        feed = {"rgb": rgb[None], "depth": depth[None]}
        want, got = (s.run(["labels"], feed)[0] for s in sessions)
        report.frames.append(name)
        report.label_agreement.append(float((want == got).mean()))
        report.median_depth_m.append(median_depth_m(depth))
    plausible = [i for i, m in enumerate(report.median_depth_m) if m <= MAX_PLAUSIBLE_DEPTH_M]
    report.counted = plausible or list(range(len(report.frames)))
    return report


@dataclass
class ParityReport:
    frames: list[str] = field(default_factory=list)
    label_agreement: list[float] = field(default_factory=list)
    logit_error: list[float] = field(default_factory=list)      # max |diff| / max |ref|
    confidence_error: list[float] = field(default_factory=list)  # max |diff|
    # A reduced-precision export: its labels against the fp32 export's.
    precision: Optional[PrecisionReport] = None

    @property
    def ok(self) -> bool:
        return (min(self.label_agreement, default=1.0) >= MIN_LABEL_AGREEMENT
                and max(self.logit_error, default=0.0) <= LOGIT_RTOL
                and max(self.confidence_error, default=0.0) <= 1e-3)

    def summary(self) -> str:
        lines = []
        for i, name in enumerate(self.frames):
            line = f"  {name:<28} labels agree {100 * self.label_agreement[i]:8.4f}%"
            if self.logit_error:
                line += f"  logits rel. err {self.logit_error[i]:.2e}"
            if self.confidence_error:
                line += f"  confidence err {self.confidence_error[i]:.2e}"
            lines.append(line)
        return "\n".join(lines)


def random_frames(height: int, width: int, count: int = 2,
                  seed: int = 0) -> Iterable[tuple[str, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    for i in range(count):
        rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        depth = rng.uniform(0.3, 6.0, (height, width)).astype(np.float32)
        depth[rng.random((height, width)) < 0.05] = 0.0  # holes
        yield f"random-{i}", rgb, depth


def verify_parity(model: nn.Module, onnx_path: str | pathlib.Path,
                  frames: Iterable[tuple[str, np.ndarray, np.ndarray]],
                  threads: int = 0) -> ParityReport:
    """Run ONNX Runtime on the export and the PyTorch *training* graph (eval mode) on the same
    frames and compare labels, confidence and logits where the export has them."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    h, w = session.get_inputs()[0].shape[1:3]
    reference = ExportGraph(model.eval(), h, w, "confidence" in names,
                            any(n.startswith("logits_") for n in names)).eval()
    report = ParityReport()
    for name, rgb, depth in frames:
        got = dict(zip(names, session.run(names, {"rgb": rgb[None], "depth": depth[None]})))
        with torch.no_grad():
            want = dict(zip(names, (t.numpy() for t in reference(torch.from_numpy(rgb[None]),
                                                                   torch.from_numpy(depth[None]).float()))))
        report.frames.append(name)
        report.label_agreement.append(float((got["labels"] == want["labels"]).mean()))
        if "confidence" in names:
            report.confidence_error.append(
                float(np.abs(got["confidence"] - want["confidence"]).max()))
        logit_names = [n for n in names if n.startswith("logits_")]
        if logit_names:
            report.logit_error.append(max(
                float(np.abs(got[n] - want[n]).max() / max(np.abs(want[n]).max(), 1e-6))
                for n in logit_names))
    return report


def check_min_agreement(precision: str, min_agreement: Optional[float]) -> None:
    """``ConfigError`` for a ``min_agreement`` that is not a share in (0, 1] of a
    reduced-precision export."""
    if min_agreement is None:
        return
    if precision == "fp32":
        raise ConfigError("--min-agreement sets the bar of a reduced-precision export "
                          "(--precision fp16, int8 or int8-ort); an fp32 export has none")
    if not 0.0 < min_agreement <= 1.0:
        raise ConfigError(f"--min-agreement must be a percentage above 0 and at most 100, got "
                          f"{100 * min_agreement:g}")


def disagreement_message(path: pathlib.Path, report: PrecisionReport) -> str:
    """The one line for a reduced-precision export whose labels agree too little with fp32."""
    hint = ("calibrate on more frames like these, or try --calib-method percentile; "
            if report.precision in INT8_PRECISIONS else "")
    return (f"{path}: the {report.precision} model gives the fp32 model's labels on "
            f"{100 * report.agreement:.2f}% of pixels, below the {100 * report.minimum:.1f}% "
            f"required ({hint}--min-agreement PCT writes it anyway, to inspect)")


def export_and_verify(model: nn.Module, path: str | pathlib.Path, height: int, width: int,
                      confidence: bool = False, logits: bool = False,
                      real_frames: Optional[Iterable[Frame]] = None,
                      fused: bool = True, precision: str = "fp32",
                      calib_frames: Optional[Sequence[Frame]] = None,
                      precision_frames: Optional[Sequence[Frame]] = None,
                      calibration: str = "minmax", progress: bool = False,
                      min_agreement: Optional[float] = None
                      ) -> tuple[onnx.ModelProto, ParityReport]:
    """Export, check, and verify parity; on any failure the file is removed and an
    ``ExportError`` raised, so a file at ``path`` is always a verified export.

    ``precision`` (``quantize.PRECISIONS``): fp32, or a version of the verified fp32 graph
    whose labels must agree with it on ``precision_frames`` (default: ``real_frames``, else
    ``calib_frames``, else random frames); INT8 is calibrated on ``calib_frames`` (required)
    with ``calibration`` (minmax | percentile | entropy). ``min_agreement``: the share of
    pixels the labels must agree on, in (0, 1] (default ``MIN_PRECISION_AGREEMENT[precision]``).
    The report's ``precision`` field holds that comparison.
    """
    path = pathlib.Path(path)
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision in INT8_PRECISIONS and not calib_frames:
        raise ConfigError(f"--precision {precision} needs calibration frames like the robot's "
                          "camera sees (--calib-data DIR)")
    check_min_agreement(precision, min_agreement)
    real_frames = list(real_frames or [])
    tmp = path.with_name(path.name + ".partial")
    fp32_tmp = path.with_name(path.name + ".fp32.partial") if precision != "fp32" else tmp
    try:
        proto = export_onnx(model, fp32_tmp, height, width, confidence, logits, fused)
        check_onnx(proto, str(path))
        frames = list(random_frames(height, width)) + real_frames
        report = verify_parity(model, fp32_tmp, frames)
        if not report.ok:
            raise ExportError(
                f"{path}: ONNX Runtime does not reproduce the PyTorch model: labels agree on "
                f"{100 * min(report.label_agreement):.3f}% of pixels (need "
                f"{100 * MIN_LABEL_AGREEMENT:.1f}%), logits rel. error "
                f"{max(report.logit_error, default=0.0):.1e}, confidence error "
                f"{max(report.confidence_error, default=0.0):.1e}")
        if precision != "fp32":
            del proto
            proto = convert_precision(fp32_tmp, tmp, precision, calib_frames, calibration,
                                      progress=progress)
            # int8-ort is for ONNX Runtime only: TensorRT takes no uint8 Q/DQ.
            check_onnx(proto, str(path), tensorrt=precision != "int8-ort")
            compared = (list(precision_frames or []) or real_frames or list(calib_frames or [])
                        or list(random_frames(height, width)))
            report.precision = compare_precision(fp32_tmp, tmp, precision, compared,
                                                 min_agreement=min_agreement)
            if not report.precision.ok:
                raise ExportError(disagreement_message(path, report.precision))
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
        fp32_tmp.unlink(missing_ok=True)
    return proto, report
