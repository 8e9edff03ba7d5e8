"""Checks an exported ONNX model against the engine contract (docs/DESIGN.md) and TensorRT's
parser.

``check_engine_contract(model)`` and ``check_tensorrt_ops(model)`` return lists of problems
(empty when the model is fine); export refuses a model with any. ``graph_precision(model)``
says which arithmetic (fp32, fp16, int8) the graph holds. All take an ``onnx.ModelProto`` or a
path and need only ``onnx``.
"""
from __future__ import annotations

import pathlib

import onnx
from onnx import helper

from cen_perception.model_card import METADATA_KEY, ModelCard, ModelCardError

OPSET = 17
DEFAULT_DOMAINS = ("", "ai.onnx")

# Default-domain operators the ONNX parser of TensorRT 8.6 imports: the "Y" rows of
# onnx-tensorrt's docs/operators.md for TensorRT 8.5 (opset 17), plus LayerNormalization and
# IsInf, added in 8.6 (onnx-tensorrt changelog). Per-operator restrictions are the parser's
# business, except the few in _restriction() that a segmentation export can run into.
TENSORRT_OPS = frozenset("""
    Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization
    Cast Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum
    DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten
    Floor Gather GatherElements GatherND Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool
    Greater GreaterOrEqual GridSample GRU HardSigmoid HardSwish Identity If ImageScaler
    InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less LessOrEqual Log
    LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean
    MeanVarianceNormalization Min Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad
    ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform
    RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax
    ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence
    RNN RoiAlign Round ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Shrink
    Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze
    Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split())

_RESIZE_MODES = ("nearest", "linear")
_RESIZE_COORDINATES = ("half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric",
                       "align_corners")


def _load(model_or_path) -> onnx.ModelProto:
    if isinstance(model_or_path, onnx.ModelProto):
        return model_or_path
    # Weights are not needed for either check.
    return onnx.load(str(pathlib.Path(model_or_path)), load_external_data=False)


def _all_nodes(graph: onnx.GraphProto):
    """Every node, including those inside If/Loop/Scan bodies."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _all_nodes(g)


def _attribute(node: onnx.NodeProto, name: str, default):
    for attr in node.attribute:
        if attr.name == name:
            value = helper.get_attribute_value(attr)
            return value.decode() if isinstance(value, bytes) else value
    return default


_FLOATS = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor ONNX shape inference can type (weights not needed)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # an unknown operator: the op check reports it anyway
        inferred = model
    graph = inferred.graph
    types = {t.name: t.data_type for t in graph.initializer}
    for value in list(graph.input) + list(graph.value_info) + list(graph.output):
        if value.type.HasField("tensor_type"):
            types[value.name] = value.type.tensor_type.elem_type
    return types


def _type_name(elem_type: int) -> str:
    return onnx.helper.tensor_dtype_to_np_dtype(elem_type).name


_QDQ = ("QuantizeLinear", "DequantizeLinear")


def _restriction(node: onnx.NodeProto, types: dict[str, int],
                 graph_outputs: frozenset[str]) -> str | None:
    """A documented TensorRT restriction this supported node breaks, as ``Op(attr=value)``."""
    # TensorRT's uint8 tensors exist only at the network's edges: a uint8 input may only be
    # cast to float, and a uint8 tensor a layer produces must be a network output (made by a
    # cast from float); the ONNX parser rejects any other node that reads or writes uint8.
    if node.op_type not in _QDQ:
        if node.op_type not in ("Cast", "Identity") and any(
                types.get(name) == onnx.TensorProto.UINT8 for name in node.input if name):
            return f"{node.op_type}(uint8 input)"
        if any(types.get(name) == onnx.TensorProto.UINT8 and name not in graph_outputs
               for name in node.output if name):
            return f"{node.op_type}(uint8 output)"
    if node.op_type == "Cast":
        # TensorRT converts uint8 only to and from float32 / float16.
        source, target = types.get(node.input[0]), _attribute(node, "to", None)
        if source is not None and target is not None:
            pair = {source, target}
            if onnx.TensorProto.UINT8 in pair and len(pair) == 2 and not pair & set(_FLOATS):
                return f"Cast({_type_name(source)} to {_type_name(target)})"
    if node.op_type in _QDQ and len(node.input) > 2:
        # TensorRT quantizes to int8 with a zero point of 0 only.
        if types.get(node.input[2]) == onnx.TensorProto.UINT8:
            return f"{node.op_type}(uint8)"
    if node.op_type == "Resize":
        mode = _attribute(node, "mode", "nearest")
        if mode not in _RESIZE_MODES:
            return f"Resize(mode={mode})"
        coordinates = _attribute(node, "coordinate_transformation_mode", "half_pixel")
        if coordinates not in _RESIZE_COORDINATES:
            return f"Resize(coordinate_transformation_mode={coordinates})"
    if node.op_type == "MaxPool" and len(node.output) > 1 and node.output[1]:
        return "MaxPool(Indices output)"
    return None


def check_tensorrt_ops(model_or_path) -> list[str]:
    """Operators TensorRT's ONNX parser cannot import, sorted and without repeats.

    Entries: ``"OpType"`` for an unsupported default-domain operator,
    ``"domain::OpType"`` for an operator of any other domain (custom ops, ONNX-ML, local
    functions), ``"Op(attr=value)"`` for a supported operator used in a way TensorRT is
    documented not to support.
    """
    model = _load(model_or_path)
    types = _elem_types(model)
    graph_outputs = frozenset(v.name for v in model.graph.output)
    problems = set()
    for node in _all_nodes(model.graph):
        if node.domain not in DEFAULT_DOMAINS:
            problems.add(f"{node.domain}::{node.op_type}")
        elif node.op_type not in TENSORRT_OPS:
            problems.add(node.op_type)
        else:
            broken = _restriction(node, types, graph_outputs)
            if broken:
                problems.add(broken)
    return sorted(problems)


def graph_precision(model_or_path) -> str:
    """The arithmetic an exported graph asks for: ``int8`` (it holds Q/DQ nodes), ``fp16`` (it
    holds float16 tensors or casts to float16) or ``fp32``. TensorRT >= 10 builds exactly this
    (strong typing); the model card's ``precision`` must agree."""
    model = _load(model_or_path)
    nodes = list(_all_nodes(model.graph))
    if any(n.op_type in _QDQ and n.domain in DEFAULT_DOMAINS for n in nodes):
        return "int8"
    half = onnx.TensorProto.FLOAT16
    if (any(t.data_type == half for t in model.graph.initializer)
            or any(n.op_type == "Cast" and _attribute(n, "to", None) == half for n in nodes)
            or any(v == half for v in _elem_types(model).values())):
        return "fp16"
    return "fp32"


def _value_type(value: onnx.ValueInfoProto) -> tuple[str, list[int | str]]:
    """(numpy dtype name, dims): an int per fixed dimension, else its symbol or '?'."""
    tensor = value.type.tensor_type
    try:
        dtype = helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
    except (KeyError, ValueError, TypeError):
        dtype = f"onnx type {tensor.elem_type}"
    dims: list[int | str] = []
    for d in tensor.shape.dim:
        if d.HasField("dim_value") and d.dim_value > 0:
            dims.append(int(d.dim_value))
        else:
            dims.append(d.dim_param or "?")
    return dtype, dims


def check_engine_contract(model_or_path) -> list[str]:
    """Ways the model breaks the engine contract of docs/DESIGN.md; empty when it meets it.

    Checked: default-domain opset 17; inputs exactly ``rgb`` uint8 [1,H,W,3] and ``depth``
    float32 [1,H,W]; outputs ``labels`` uint8 [1,H,W], optionally ``confidence`` float32
    [1,H,W] and ``logits*`` float32, nothing else; every I/O dimension static; a valid model
    card in ``metadata_props`` that agrees with the graph's I/O.
    """
    model = _load(model_or_path)
    problems = []

    opsets = {o.domain: o.version for o in model.opset_import}
    default_opset = opsets.get("", opsets.get("ai.onnx"))
    if default_opset != OPSET:
        problems.append(f"opset is {default_opset}, the contract needs {OPSET}")

    initializers = {t.name for t in model.graph.initializer}
    inputs = {v.name: _value_type(v) for v in model.graph.input if v.name not in initializers}
    outputs = {v.name: _value_type(v) for v in model.graph.output}
    problems += _io_problems(inputs, outputs)
    problems += _card_problems(model, inputs, outputs, io_ok=not problems)
    return problems


def _io_problems(inputs: dict[str, tuple[str, list]],
                 outputs: dict[str, tuple[str, list]]) -> list[str]:
    """How the graph's inputs and outputs (``{name: (dtype, dims)}``) break the contract."""
    problems = []
    for where, values in (("input", inputs), ("output", outputs)):
        for name, (_, dims) in values.items():
            if not dims or any(not isinstance(d, int) for d in dims):
                problems.append(f"{where} '{name}' has a dynamic or unknown shape {dims}")

    # name -> (dtype, layout) fixed by the contract; logits* outputs only need to be float32.
    contract = {"rgb": ("uint8", "[1,H,W,3]"), "depth": ("float32", "[1,H,W]"),
                "labels": ("uint8", "[1,H,W]"), "confidence": ("float32", "[1,H,W]")}
    problems += [f"input '{n}' is missing" for n in ("rgb", "depth") if n not in inputs]
    if "labels" not in outputs:
        problems.append("output 'labels' is missing")
    problems += [f"unexpected input '{n}'" for n in inputs if n not in ("rgb", "depth")]
    problems += [f"unexpected output '{n}'" for n in outputs
                 if n not in ("labels", "confidence") and not n.startswith("logits")]
    for name, (dtype, dims) in {**inputs, **outputs}.items():
        want_dtype, layout = contract.get(name, ("float32", None))
        if name not in contract and not name.startswith("logits"):
            continue
        if dtype != want_dtype:
            problems.append(f"'{name}' is {dtype}, the contract needs {want_dtype}")
        static = bool(dims) and all(isinstance(d, int) for d in dims)  # else reported above
        rank = layout.count(",") + 1 if layout else None
        if layout and static and (len(dims) != rank or dims[0] != 1
                                  or (name == "rgb" and dims[-1] != 3)):
            problems.append(f"'{name}' has shape {dims}, the contract needs {layout}")
    return problems


def _card_problems(model: onnx.ModelProto, inputs: dict[str, tuple[str, list]],
                   outputs: dict[str, tuple[str, list]], io_ok: bool) -> list[str]:
    """How the model card in the metadata breaks the contract or disagrees with the graph's
    I/O (compared only when ``io_ok``: the graph's I/O is well formed)."""
    metadata = {p.key: p.value for p in model.metadata_props}
    if METADATA_KEY not in metadata:
        return [f"no model card in metadata_props['{METADATA_KEY}']"]
    try:
        card = ModelCard.from_metadata(metadata, source="ONNX metadata")
    except ModelCardError as exc:
        return [str(exc)]
    if "logits" in card.outputs and not any(n.startswith("logits") for n in outputs):
        return ["the model card lists 'logits' but the graph has no logits output"]
    if io_ok:
        try:
            card.check_io(_as_card_io(inputs), _as_card_io(outputs), source="ONNX model")
        except ModelCardError as exc:
            return [str(exc)]
    return []


def _as_card_io(values: dict[str, tuple[str, list]]) -> dict[str, tuple[tuple, str]]:
    """``{name: (dtype, dims)}`` in ``ModelCard.check_io``'s ``{name: (shape, dtype)}`` form."""
    return {name: (tuple(dims), dtype) for name, (dtype, dims) in values.items()}


__all__ = ["OPSET", "TENSORRT_OPS", "check_tensorrt_ops", "check_engine_contract",
           "graph_precision"]
