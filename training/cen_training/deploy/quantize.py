"""Reduced-precision versions of an exported fp32 model, inside the same engine contract.

Every version keeps the contract's inputs and outputs exactly (uint8 ``rgb``, float32
``depth``; uint8 ``labels``, float32 ``confidence`` and ``logits``) and records its arithmetic
in the model card's ``precision``:

- ``convert_fp16``: the graph in float16 inside (ONNX Runtime's float16 converter with
  ``keep_io_types``): weights and activations float16, a cast after the ``depth`` input and
  before each float output; ``rgb`` is cast from uint8 straight to float16 and labels come from
  float16 through a cast to uint8, as TensorRT allows. For TensorRT; ONNX Runtime runs it on a
  CPU too (where it has no float16 kernel it inserts casts to float32), so it can be checked.
- ``quantize_int8(..., precision="int8")``: explicit quantization as TensorRT wants it, which
  ONNX Runtime runs as well: QuantizeLinear / DequantizeLinear pairs, signed int8 with a zero
  point of 0 everywhere (symmetric), one weight scale per output channel (axis 0), one scale per
  activation tensor, biases left in float. The Q/DQ pairs sit where TensorRT's placement rules
  put them: on every input of the convolutions and of the additions (residual and exchange
  branches fuse into the convolution before them); convolution outputs, ReLU, pooling,
  concatenation and upsampling stay in float between them, and TensorRT fuses the quantize
  step into the convolution (and ReLU) before it.
- ``quantize_int8(..., precision="int8-ort")``: for ONNX Runtime on a CPU only: uint8
  activations with a zero point (a ReLU then costs nothing and every operator in
  ``QUANTIZED_OPS`` runs on integers; the u8 x s8 pair is what ONNX Runtime's x86 kernels and
  VNNI multiply), int8 weights symmetric per output channel on 7 bits, so that x86 CPUs
  without VNNI (AVX2, AVX-512 before VNNI) cannot saturate their 16-bit intermediate sums.
  TensorRT refuses uint8 Q/DQ.

Both INT8 schemes take activation ranges from running the fp32 model over calibration frames
(min/max by default): the frames must look like what the model will see, since inputs outside
the calibrated ranges saturate and labels drift. Both keep in float the input preparation before
the first convolutions (layout, normalisation: a broadcast add over the image is cheap in float
and slow quantized) and everything after the classifier convolution (ensemble weighting,
upsampling to input size, argmax, softmax), so labels come from float logits at full resolution.
"""
from __future__ import annotations

import pathlib
import tempfile
from typing import Any, Iterable, Iterator, Optional, Sequence

import numpy as np
import onnx

from cen_perception.model_card import METADATA_KEY, ModelCard

from ..errors import ConfigError, DatasetError, ExportError
from .onnx_ops import check_engine_contract, check_tensorrt_ops

Frame = tuple[str, np.ndarray, np.ndarray]  # (name, rgb uint8 [H,W,3], depth float32 [H,W] m)

# What ``cen-train export --precision`` accepts, and the model card precision each one records.
PRECISIONS = ("fp32", "fp16", "int8", "int8-ort")
CARD_PRECISION = {"fp32": "fp32", "fp16": "fp16", "int8": "int8", "int8-ort": "int8"}
INT8_PRECISIONS = ("int8", "int8-ort")

# int8-ort: operators inside the network that run in int8 between convolutions; leaving one in
# float costs a dequantize/quantize pair around it.
QUANTIZED_OPS = ("Conv", "Add", "Relu", "MaxPool", "Concat", "Where", "Resize", "Split", "Slice",
                 "Pad")
# int8 (TensorRT's placement): Q/DQ on the inputs of these only.
TENSORRT_QUANTIZED_OPS = ("Conv", "Add")
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
# Farther than indoor RGB-D cameras measure (Kinect v2 about 4.5 m, RealSense D400 about 10 m):
# a frame whose median depth lies beyond cannot have a depth file in millimetres.
MAX_PLAUSIBLE_DEPTH_M = 10.0


def median_depth_m(depth: np.ndarray) -> float:
    """Median of the valid (finite, positive) depth values, in metres; 0 when none."""
    valid = depth[np.isfinite(depth) & (depth > 0)]
    return float(np.median(valid)) if valid.size else 0.0


def frame_batches(frames: Iterable[Frame]) -> Iterator[dict[str, np.ndarray]]:
    """Engine input batches (``rgb`` [1,H,W,3], ``depth`` [1,H,W]) from ``(name, rgb, depth)``."""
    for _, rgb, depth in frames:
        yield {"rgb": np.ascontiguousarray(rgb[None], dtype=np.uint8),
               "depth": np.ascontiguousarray(depth[None], dtype=np.float32)}


def _data_reader(frames: Sequence[Frame], progress: bool = False):
    from onnxruntime.quantization import CalibrationDataReader
    from tqdm import tqdm

    class FrameReader(CalibrationDataReader):
        """Hands ONNX Runtime's calibrator one frame at a time."""

        def __init__(self) -> None:
            self._batches = frame_batches(tqdm(frames, desc="INT8 calibration", unit="frame",
                                               leave=False, disable=not progress))

        def get_next(self) -> Optional[dict[str, np.ndarray]]:
            return next(self._batches, None)

    return FrameReader()


def float_tail(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes that only post-process the classifier output (everything downstream
    of the last convolutions: ensemble weights, upsampling to input size, argmax, softmax)."""
    nodes = list(model.graph.node)  # ONNX keeps nodes in topological order
    consumers: dict[str, list[int]] = {}
    for i, node in enumerate(nodes):
        for name in node.input:
            consumers.setdefault(name, []).append(i)
    # Walk backwards: a node "feeds a conv" when one of its consumers is or does.
    feeds_conv = [False] * len(nodes)
    for i in reversed(range(len(nodes))):
        feeds_conv[i] = any(nodes[j].op_type == "Conv" or feeds_conv[j]
                            for out in nodes[i].output for j in consumers.get(out, []))
    heads = {i for i, n in enumerate(nodes) if n.op_type == "Conv" and not feeds_conv[i]}
    downstream = {out for i in heads for out in nodes[i].output}
    tail = []
    for i, node in enumerate(nodes):
        if i not in heads and any(name in downstream for name in node.input):
            tail.append(node.name)
            downstream.update(node.output)
    return tail


def float_head(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes that prepare the inputs before the first convolutions (layout, cast,
    normalisation). In float they cost little; quantized, a per-channel broadcast add over the
    whole image runs as a slow element-wise QLinearAdd."""
    after_conv: set[str] = set()
    head = []
    for node in model.graph.node:  # topological order
        if node.op_type == "Conv" or any(name in after_conv for name in node.input):
            after_conv.update(node.output)
        else:
            head.append(node.name)
    return head


def stem_convs(model: onnx.ModelProto) -> list[str]:
    """Names of the first convolutions, those that read the prepared inputs."""
    head = set(float_head(model))
    head_outputs = {out for n in model.graph.node if n.name in head for out in n.output}
    return [n.name for n in model.graph.node
            if n.op_type == "Conv" and any(name in head_outputs for name in n.input)]


def classifier_convs(model: onnx.ModelProto) -> list[str]:
    """Names of the last convolutions (the classifier), whose outputs feed the float tail."""
    tail = set(float_tail(model))
    tail_inputs = {name for n in model.graph.node if n.name in tail for name in n.input}
    return [n.name for n in model.graph.node
            if n.op_type == "Conv" and any(out in tail_inputs for out in n.output)]


def set_card_precision(model: onnx.ModelProto, precision: str) -> None:
    """Record ``precision`` (fp32 | fp16 | int8) in the model card in ``metadata_props``."""
    metadata = {p.key: p.value for p in model.metadata_props}
    card = ModelCard.from_metadata(metadata, source="ONNX model")
    card.precision = precision
    card.validate()
    onnx.helper.set_model_props(model, {**metadata, METADATA_KEY: card.to_json()})


def _uint8_casts_through_float(model: onnx.ModelProto) -> None:
    """Put a cast to float32 before every cast to uint8 from another type: TensorRT converts
    uint8 only from and to float, and ONNX Runtime's pre-processing merges the export's
    argmax -> float -> uint8 casts into one from int64."""
    from onnx import TensorProto, helper

    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type
             for v in list(inferred.graph.value_info) + list(inferred.graph.input)
             + list(inferred.graph.output)}
    nodes = []
    for node in model.graph.node:
        to = next((a.i for a in node.attribute if a.name == "to"), None)
        source = types.get(node.input[0]) if node.input else None
        if (node.op_type == "Cast" and to == TensorProto.UINT8 and source is not None
                and source not in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.UINT8)):
            as_float = node.input[0] + "_as_float"
            nodes.append(helper.make_node("Cast", [node.input[0]], [as_float], to=TensorProto.FLOAT,
                                          name=node.name + "_to_float"))
            node.input[0] = as_float
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def _sort_nodes(model: onnx.ModelProto) -> None:
    """Put the nodes in topological order, as ONNX requires (the float16 converter appends its
    input casts at the end)."""
    nodes = list(model.graph.node)
    producer = {out: i for i, n in enumerate(nodes) for out in n.output}
    order: list[int] = []
    state = [0] * len(nodes)  # 0 unvisited, 1 in progress, 2 placed
    for root in range(len(nodes)):
        stack = [(root, False)]
        while stack:
            i, expanded = stack.pop()
            if state[i] == 2 or (state[i] == 1 and not expanded):
                continue
            if expanded:
                state[i] = 2
                order.append(i)
                continue
            state[i] = 1
            stack.append((i, True))
            stack.extend((producer[name], False) for name in nodes[i].input
                         if name in producer and state[producer[name]] == 0)
    del model.graph.node[:]
    model.graph.node.extend(nodes[i] for i in order)


def _input_size(model: onnx.ModelProto) -> tuple[int, int]:
    dims = next(i for i in model.graph.input if i.name == "rgb").type.tensor_type.shape.dim
    return int(dims[1].dim_value), int(dims[2].dim_value)


def _finish(model: onnx.ModelProto, source: onnx.ModelProto, precision: str,
            out_path: pathlib.Path, for_tensorrt: bool) -> onnx.ModelProto:
    """Restore what the tools drop (card, producer), record the precision, check, write."""
    del model.metadata_props[:]
    model.metadata_props.extend(source.metadata_props)
    model.producer_name = source.producer_name
    set_card_precision(model, CARD_PRECISION[precision])
    problems = check_engine_contract(model)
    if for_tensorrt:
        problems += [f"not importable by TensorRT: {op}" for op in check_tensorrt_ops(model)]
    if problems:
        raise ExportError(f"{out_path}: the {precision} model breaks the engine contract: "
                          + "; ".join(problems))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out_path))
    return model


def convert_fp16(fp32_path: str | pathlib.Path, fp16_path: str | pathlib.Path) -> onnx.ModelProto:
    """Write the float16 version of an exported fp32 model (same inputs and outputs)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    fp32_path, fp16_path = pathlib.Path(fp32_path), pathlib.Path(fp16_path)
    source = onnx.load(str(fp32_path))
    # keep_io_types: the float32 input (depth) and float outputs keep their type through casts;
    # uint8 rgb and labels are untouched (their casts now go to and from float16).
    model = convert_float_to_float16(source, keep_io_types=True)
    _sort_nodes(model)
    return _finish(model, source, "fp16", fp16_path, for_tensorrt=True)


def _quantize_settings(for_tensorrt: bool) -> tuple[dict, tuple[str, ...], Any]:
    """``quantize_static``'s extra options, the op types to quantize and the activation type:
    TensorRT's signed symmetric Q/DQ, or ONNX Runtime's uint8 activations."""
    from onnxruntime.quantization import QuantType

    options = {"WeightSymmetric": True, "CalibMovingAverage": False}
    if for_tensorrt:
        options.update({
            "ActivationSymmetric": True,  # zero point 0: the only kind TensorRT takes
            "QuantizeBias": False,  # TensorRT takes no int32 DequantizeLinear
            # Outputs stay float: TensorRT fuses the quantize of the next convolution's or
            # addition's input into the convolution (and addition, ReLU) before it.
            "OpTypesToExcludeOutputQuantization": list(TENSORRT_QUANTIZED_OPS)})
        return options, TENSORRT_QUANTIZED_OPS, QuantType.QInt8
    options.update({"ActivationSymmetric": False, "CalibTensorRangeSymmetric": False})
    return options, QUANTIZED_OPS, QuantType.QUInt8


def _float_nodes(prepared: onnx.ModelProto, quantize_classifier: bool,
                 quantize_stem: bool) -> list[str]:
    """The nodes of the prepared model that stay in float."""
    exclude = float_head(prepared) + float_tail(prepared)
    if not quantize_classifier:
        exclude += classifier_convs(prepared)
    if not quantize_stem:
        exclude += stem_convs(prepared)
    return exclude


def quantize_int8(fp32_path: str | pathlib.Path, int8_path: str | pathlib.Path,
                  frames: Sequence[Frame], precision: str = "int8", per_channel: bool = True,
                  calibration: str = "minmax", quantize_classifier: bool = True,
                  quantize_stem: bool = True, progress: bool = False) -> onnx.ModelProto:
    """Write the INT8 (QDQ) version of an exported fp32 model, calibrated on ``frames``.

    ``precision``: ``"int8"`` (signed symmetric, TensorRT's Q/DQ placement; ONNX Runtime runs
    it too) or ``"int8-ort"`` (uint8 activations, for ONNX Runtime on CPUs); see the module
    docstring. ``frames`` should look like what the robot sees (dataset frames); their size must
    be the model's input size. ``calibration``: ``minmax`` (ranges seen), ``percentile`` or
    ``entropy`` (clip outliers; slower, far more memory). ``quantize_classifier=False`` keeps
    the last convolutions (the classifier) in float too; ``quantize_stem=False`` the first ones
    (more faithful on inputs outside the calibrated range, but slower with ONNX Runtime on x86:
    the max-pool after them then runs on uint8 in NCHW layout). ``progress``: a bar over the
    frames.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32_path, int8_path = pathlib.Path(fp32_path), pathlib.Path(int8_path)
    if precision not in INT8_PRECISIONS:
        raise ConfigError(f"INT8 precision must be one of {', '.join(INT8_PRECISIONS)}, "
                          f"got {precision!r}")
    if calibration not in CALIBRATION_METHODS:
        raise ConfigError(f"calibration must be one of {', '.join(CALIBRATION_METHODS)}, "
                          f"got {calibration!r}")
    if not frames:
        raise DatasetError("INT8 calibration needs at least one frame")
    source = onnx.load(str(fp32_path))
    h, w = _input_size(source)
    bad = [name for name, rgb, _ in frames if rgb.shape[:2] != (h, w)]
    if bad:
        raise DatasetError(f"calibration frame {bad[0]} is not {h}x{w}, the model's input size")
    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
              "entropy": CalibrationMethod.Entropy}[calibration]
    for_tensorrt = precision == "int8"
    options, op_types, activation_type = _quantize_settings(for_tensorrt)
    with tempfile.TemporaryDirectory(prefix="cen_quantize_") as tmp:
        # Shape inference and constant folding first, as ONNX Runtime recommends: quantization
        # needs every tensor's shape, and folded constants are not quantized twice.
        prepared = pathlib.Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=False)
        exclude = _float_nodes(onnx.load(str(prepared)), quantize_classifier, quantize_stem)
        quantized = pathlib.Path(tmp) / "int8.onnx"
        quantize_static(
            str(prepared), str(quantized), _data_reader(frames, progress),
            quant_format=QuantFormat.QDQ, op_types_to_quantize=list(op_types),
            per_channel=per_channel, reduce_range=not for_tensorrt,
            activation_type=activation_type, weight_type=QuantType.QInt8,
            nodes_to_exclude=exclude, calibrate_method=method,
            calibration_providers=["CPUExecutionProvider"], extra_options=options)
        model = onnx.load(str(quantized))
    _uint8_casts_through_float(model)
    return _finish(model, source, precision, int8_path, for_tensorrt)


def convert_precision(fp32_path: str | pathlib.Path, out_path: str | pathlib.Path,
                      precision: str, calib_frames: Optional[Sequence[Frame]] = None,
                      calibration: str = "minmax", progress: bool = False) -> onnx.ModelProto:
    """The ``precision`` version (see ``PRECISIONS``) of an exported fp32 model at ``out_path``;
    INT8 needs ``calib_frames``."""
    if precision not in PRECISIONS or precision == "fp32":
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS[1:])}, "
                          f"got {precision!r}")
    if precision == "fp16":
        return convert_fp16(fp32_path, out_path)
    return quantize_int8(fp32_path, out_path, calib_frames or [], precision=precision,
                         calibration=calibration, progress=progress)
