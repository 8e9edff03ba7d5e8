"""INT8 static quantization of an exported model with ONNX Runtime, for CPUs with VNNI.

``quantize_int8(fp32_onnx, int8_onnx, frames)`` writes a QDQ model (QuantizeLinear /
DequantizeLinear pairs around the quantized operators, which ONNX Runtime fuses into
QLinearConv and friends when it loads the file):

- weights int8, symmetric, one scale per output channel (``per_channel``); activations uint8
  with a zero point (ONNX Runtime's fast u8 x s8 kernels; AVX512-VNNI multiplies exactly that
  pair), their ranges measured by running the fp32 model over calibration frames (min/max by
  default). The frames must look like what the model will see: inputs outside the calibrated
  ranges saturate, and labels drift;
- quantized: the network (convolutions, residual additions, exchange, pooling, concatenation,
  the decoder's upsampling). Kept in float: the input preparation before the first
  convolutions (layout, normalisation: a broadcast add over the image is cheap in float and
  slow quantized), and everything after the classifier convolution (the ensemble weighting,
  the upsampling to input size, argmax and softmax), so labels come from float logits at full
  resolution;
- the engine contract is unchanged: same inputs and outputs, same model card.

The result is meant for ONNX Runtime on a CPU. TensorRT builds its own INT8 engines from the
fp32 export with a calibrator (``cen-train build-engine --precision int8``).
"""
from __future__ import annotations

import pathlib
import tempfile
from typing import Iterable, Iterator, Optional, Sequence

import numpy as np
import onnx

from . import CliError
from .onnx_ops import check_engine_contract

Frame = tuple[str, np.ndarray, np.ndarray]  # (name, rgb uint8 [H,W,3], depth float32 [H,W] m)

# Operators inside the network that run in int8 between convolutions; leaving one in float
# costs a dequantize/quantize pair around it.
QUANTIZED_OPS = ("Conv", "Add", "Relu", "MaxPool", "Concat", "Where", "Resize", "Split", "Slice",
                 "Pad")
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")


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


def quantize_int8(fp32_path: str | pathlib.Path, int8_path: str | pathlib.Path,
                  frames: Sequence[Frame], per_channel: bool = True,
                  calibration: str = "minmax", quantize_classifier: bool = True,
                  quantize_stem: bool = True, progress: bool = False) -> onnx.ModelProto:
    """Write the INT8 (QDQ) version of an exported fp32 model, calibrated on ``frames``.

    ``frames`` should look like what the robot sees (dataset frames); their size must be the
    model's input size. ``calibration``: ``minmax`` (ranges seen), ``percentile`` or
    ``entropy`` (clip outliers; slower, more memory). ``quantize_classifier=False`` keeps the
    last convolutions (the classifier) in float too; ``quantize_stem=False`` the first ones
    (more faithful on inputs outside the calibrated range, but slower with ONNX Runtime on
    x86: the max-pool after them then runs on uint8 in NCHW layout). ``progress``: a bar over
    the frames.
    """
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32_path, int8_path = pathlib.Path(fp32_path), pathlib.Path(int8_path)
    if calibration not in CALIBRATION_METHODS:
        raise CliError(f"calibration must be one of {', '.join(CALIBRATION_METHODS)}, "
                       f"got {calibration!r}")
    if not frames:
        raise CliError("INT8 calibration needs at least one frame")
    source = onnx.load(str(fp32_path))
    h, w = (d.dim_value for d in
            next(i for i in source.graph.input if i.name == "rgb").type.tensor_type.shape.dim[1:3])
    bad = [name for name, rgb, _ in frames if rgb.shape[:2] != (h, w)]
    if bad:
        raise CliError(f"calibration frame {bad[0]} is not {h}x{w}, the model's input size")
    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
              "entropy": CalibrationMethod.Entropy}[calibration]
    int8_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cen_quantize_") as tmp:
        # Shape inference and constant folding first, as ONNX Runtime recommends: quantization
        # needs every tensor's shape, and folded constants are not quantized twice.
        prepared = pathlib.Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=False)
        prepared_model = onnx.load(str(prepared))
        exclude = float_head(prepared_model) + float_tail(prepared_model)
        if not quantize_classifier:
            exclude += classifier_convs(prepared_model)
        if not quantize_stem:
            exclude += stem_convs(prepared_model)
        quantized = pathlib.Path(tmp) / "int8.onnx"
        quantize_static(
            str(prepared), str(quantized), _data_reader(frames, progress), quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(QUANTIZED_OPS), per_channel=per_channel,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            nodes_to_exclude=exclude, calibrate_method=method,
            calibration_providers=["CPUExecutionProvider"],
            extra_options={"WeightSymmetric": True, "ActivationSymmetric": False,
                           "CalibTensorRangeSymmetric": False,
                           "CalibMovingAverage": False})
        model = onnx.load(str(quantized))
    # The calibrator and optimiser drop what they do not know: restore the card and producer.
    del model.metadata_props[:]
    model.metadata_props.extend(source.metadata_props)
    model.producer_name = source.producer_name
    # No TensorRT operator check: uint8 activations are for ONNX Runtime on CPUs (TensorRT
    # quantizes to int8 only, from the fp32 export).
    problems = check_engine_contract(model)
    if problems:
        raise CliError(f"{int8_path}: the INT8 model breaks the engine contract: "
                       + "; ".join(problems))
    onnx.save(model, str(int8_path))
    return model

