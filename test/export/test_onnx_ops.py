import onnx
import pytest
from onnx import TensorProto, helper

from cen_training.deploy.onnx_ops import (
    OPSET,
    TENSORRT_OPS,
    check_engine_contract,
    check_tensorrt_ops,
)


def _model(nodes, inputs, outputs, opset=OPSET, extra_opsets=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    imports = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in extra_opsets]
    return helper.make_model(graph, opset_imports=imports)


def _vec(name, elem=TensorProto.FLOAT, shape=(4,)):
    return helper.make_tensor_value_info(name, elem, list(shape))


@pytest.fixture
def toy_model(toy_onnx_factory):
    return onnx.load(str(toy_onnx_factory(48, 64)))


def test_conforming_model_passes_both_checks(toy_onnx_factory):
    path = toy_onnx_factory(48, 64)
    assert check_tensorrt_ops(path) == []
    assert check_engine_contract(path) == []
    assert check_engine_contract(toy_onnx_factory(32, 40, confidence=False)) == []


def test_supported_list_covers_a_segmentation_network_and_excludes_known_gaps():
    segnet_ops = {"Conv", "BatchNormalization", "Relu", "MaxPool", "Add", "Mul", "Resize",
                  "ArgMax", "Softmax", "ReduceMax", "Cast", "Concat", "Slice", "Pad", "Where"}
    assert segnet_ops <= TENSORRT_OPS
    assert not {"Unique", "BitShift", "Hardmax", "StringNormalizer", "CastLike"} & TENSORRT_OPS


def test_unsupported_default_domain_ops_are_reported_once(tmp_path):
    model = _model([helper.make_node("Unique", ["x"], ["u"]),
                    helper.make_node("Hardmax", ["x"], ["h"]),
                    helper.make_node("Hardmax", ["h"], ["h2"]),
                    helper.make_node("Relu", ["x"], ["r"])],
                   [_vec("x")], [_vec("u"), _vec("h2"), _vec("r")])
    assert check_tensorrt_ops(model) == ["Hardmax", "Unique"]
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    assert check_tensorrt_ops(path) == ["Hardmax", "Unique"]


def test_custom_domain_ops_are_reported_with_their_domain():
    model = _model([helper.make_node("Gelu", ["x"], ["y"], domain="com.microsoft"),
                    helper.make_node("Relu", ["y"], ["z"], domain="ai.onnx")],
                   [_vec("x")], [_vec("z")], extra_opsets=["com.microsoft"])
    assert check_tensorrt_ops(model) == ["com.microsoft::Gelu"]


def test_ops_inside_subgraphs_are_checked():
    then_branch = helper.make_graph([helper.make_node("Unique", ["x"], ["t"])], "then", [],
                                    [_vec("t")])
    else_branch = helper.make_graph([helper.make_node("Relu", ["x"], ["e"])], "else", [],
                                    [_vec("e")])
    model = _model([helper.make_node("If", ["c"], ["y"], then_branch=then_branch,
                                     else_branch=else_branch)],
                   [_vec("x"), _vec("c", TensorProto.BOOL, ())], [_vec("y")])
    assert check_tensorrt_ops(model) == ["Unique"]


def test_documented_resize_restriction_is_reported():
    scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 2, 2])
    nodes = [helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="cubic")]
    graph = helper.make_graph(nodes, "g", [_vec("x", shape=(1, 1, 4, 4))],
                              [_vec("y", shape=(1, 1, 8, 8))], initializer=[scales])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    assert check_tensorrt_ops(model) == ["Resize(mode=cubic)"]
    model.graph.node[0].attribute[0].s = b"linear"
    assert check_tensorrt_ops(model) == []


def test_contract_catches_wrong_opset(toy_model):
    toy_model.opset_import[0].version = 13
    assert any("opset is 13" in p for p in check_engine_contract(toy_model))


def test_contract_catches_dynamic_shapes(toy_model):
    toy_model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    problems = check_engine_contract(toy_model)
    assert any("input 'rgb'" in p and "dynamic" in p for p in problems), problems


def test_contract_catches_wrong_dtypes(toy_model):
    toy_model.graph.input[1].type.tensor_type.elem_type = TensorProto.UINT16  # depth in mm
    toy_model.graph.output[0].type.tensor_type.elem_type = TensorProto.INT64  # raw argmax
    problems = check_engine_contract(toy_model)
    assert "'depth' is uint16, the contract needs float32" in problems
    assert "'labels' is int64, the contract needs uint8" in problems


def test_contract_catches_missing_or_bad_card(toy_model):
    card_entry = toy_model.metadata_props[0].value
    del toy_model.metadata_props[:]
    assert any("no model card" in p for p in check_engine_contract(toy_model))
    helper.set_model_props(toy_model, {"cen_perception.model_card": card_entry[:-5]})
    assert any("not valid JSON" in p for p in check_engine_contract(toy_model))


def test_contract_catches_card_disagreeing_with_graph(toy_onnx_factory):
    path = toy_onnx_factory(48, 64, card_overrides={"input_size": [32, 32]})
    problems = check_engine_contract(path)
    assert len(problems) == 1 and "disagree" in problems[0]


def test_contract_catches_wrong_names_and_layout(toy_model):
    toy_model.graph.input[0].name = "image"
    toy_model.graph.output[0].type.tensor_type.shape.dim[0].dim_value = 2
    problems = check_engine_contract(toy_model)
    assert "input 'rgb' is missing" in problems
    assert "unexpected input 'image'" in problems
    assert "'labels' has shape [2, 48, 64], the contract needs [1,H,W]" in problems


def test_uint8_casts_only_from_and_to_float():
    def cast_model(source, target):
        return _model([helper.make_node("Cast", ["x"], ["y"], to=target)],
                      [_vec("x", source)], [_vec("y", target)])
    # ArgMax gives int64: straight to uint8 is what TensorRT refuses.
    assert check_tensorrt_ops(cast_model(TensorProto.INT64, TensorProto.UINT8)) == [
        "Cast(int64 to uint8)"]
    assert check_tensorrt_ops(cast_model(TensorProto.UINT8, TensorProto.INT32)) == [
        "Cast(uint8 to int32)"]
    for source, target in ((TensorProto.FLOAT, TensorProto.UINT8),
                           (TensorProto.UINT8, TensorProto.FLOAT16),
                           (TensorProto.INT64, TensorProto.FLOAT)):
        assert check_tensorrt_ops(cast_model(source, target)) == []


def test_uint8_quantization_is_not_for_tensorrt():
    def q_model(zero_type):
        zero = helper.make_tensor("zero", zero_type, [], [0])
        scale = helper.make_tensor("scale", TensorProto.FLOAT, [], [0.1])
        graph = helper.make_graph(
            [helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["y"])],
            "g", [_vec("x")], [_vec("y")], initializer=[zero, scale])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    assert check_tensorrt_ops(q_model(TensorProto.UINT8)) == [
        "DequantizeLinear(uint8)", "QuantizeLinear(uint8)"]
    assert check_tensorrt_ops(q_model(TensorProto.INT8)) == []


def test_uint8_inputs_feed_only_a_cast():
    image = helper.make_tensor_value_info("rgb", TensorProto.UINT8, [1, 4, 4, 3])
    transposed = helper.make_tensor_value_info("t", TensorProto.UINT8, [1, 3, 4, 4])
    model = _model([helper.make_node("Transpose", ["rgb"], ["t"], perm=[0, 3, 1, 2])],
                   [image], [transposed])
    assert check_tensorrt_ops(model) == ["Transpose(uint8 input)"]
    as_float = helper.make_tensor_value_info("f", TensorProto.FLOAT, [1, 3, 4, 4])
    model = _model([helper.make_node("Cast", ["rgb"], ["c"], to=TensorProto.FLOAT),
                    helper.make_node("Transpose", ["c"], ["f"], perm=[0, 3, 1, 2])],
                   [image], [as_float])
    assert check_tensorrt_ops(model) == []


def test_uint8_made_inside_the_graph_must_be_a_graph_output():
    """TensorRT's parser rejects a node whose uint8 output is not a network output: here the
    labels are cast to uint8 and then resized (nearest), as an export might do."""
    scores = helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 1, 4, 4])
    labels = helper.make_tensor_value_info("labels", TensorProto.UINT8, [1, 1, 8, 8])
    scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 2, 2])

    def model(nodes):
        graph = helper.make_graph(nodes, "g", [scores], [labels], initializer=[scales])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])

    rejected = model([helper.make_node("Cast", ["scores"], ["small"], to=TensorProto.UINT8),
                      helper.make_node("Resize", ["small", "", "scales"], ["labels"],
                                       mode="nearest")])
    assert check_tensorrt_ops(rejected) == ["Cast(uint8 output)", "Resize(uint8 input)"]
    accepted = model([helper.make_node("Resize", ["scores", "", "scales"], ["big"],
                                       mode="nearest"),
                      helper.make_node("Cast", ["big"], ["labels"], to=TensorProto.UINT8)])
    assert check_tensorrt_ops(accepted) == []


def test_uint8_output_of_any_op_inside_the_graph_is_reported():
    """A uint8 tensor between two casts is still one TensorRT cannot hold."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    round_trip = _model([helper.make_node("Cast", ["x"], ["u"], to=TensorProto.UINT8),
                         helper.make_node("Cast", ["u"], ["y"], to=TensorProto.FLOAT)], [x], [y])
    assert check_tensorrt_ops(round_trip) == ["Cast(uint8 output)"]


def test_graph_precision(toy_model):
    from cen_training.deploy.onnx_ops import graph_precision

    assert graph_precision(toy_model) == "fp32"
    x, y = _vec("x"), _vec("y")
    half = _model([helper.make_node("Cast", ["x"], ["h"], to=TensorProto.FLOAT16),
                   helper.make_node("Cast", ["h"], ["y"], to=TensorProto.FLOAT)], [x], [y])
    assert graph_precision(half) == "fp16"
    scale = helper.make_tensor("s", TensorProto.FLOAT, [], [0.1])
    zero = helper.make_tensor("z", TensorProto.INT8, [], [0])
    graph = helper.make_graph([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
                               helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])],
                              "g", [x], [y], initializer=[scale, zero])
    qdq = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    assert graph_precision(qdq) == "int8"
    weights = helper.make_tensor("w", TensorProto.FLOAT16, [4], [1, 2, 3, 4])
    graph = helper.make_graph([helper.make_node("Cast", ["w"], ["wf"], to=TensorProto.FLOAT),
                               helper.make_node("Add", ["x", "wf"], ["y"])], "g", [x], [y],
                              initializer=[weights])
    assert graph_precision(helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)])) == "fp16"
