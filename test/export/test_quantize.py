"""INT8 static quantization (ONNX Runtime, QDQ) of an exported model."""
import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from cen_perception.model_card import METADATA_KEY
from cen_training import CliError
from cen_training.bench import load_frames
from cen_training.card import default_card
from cen_training.export import export_onnx
from cen_training.models import ModelConfig, build_model
from cen_training.onnx_ops import check_engine_contract, check_tensorrt_ops
from cen_training.quantize import (_data_reader, classifier_convs, float_head, float_tail,
                                   frame_batches, quantize_int8, stem_convs)

H, W = 64, 64


@pytest.fixture(scope="module")
def fp32_model(tmp_path_factory, trained_like):
    torch.manual_seed(0)
    model = trained_like(build_model(ModelConfig(arch="cen", backbone="resnet18",
                                                 decoder="light", num_classes=5)),
                         gamma_std=0.5)
    model.card = default_card(5)
    path = tmp_path_factory.mktemp("quantize") / "fp32.onnx"
    export_onnx(model, path, H, W)
    return path


@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory):
    """A small dataset in the generic layout (rgb/, depth/ 16-bit mm) of smooth scenes."""
    root = tmp_path_factory.mktemp("calib")
    (root / "rgb").mkdir()
    (root / "depth").mkdir()
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0:48, 0:80]
    for i in range(3):
        rgb = np.stack([(xs * 3 + 40 * i) % 256, (ys * 5) % 256,
                        rng.integers(0, 256, (48, 80))], -1).astype(np.uint8)
        depth_mm = (800 + 30 * xs + 100 * i).astype(np.uint16)
        depth_mm[:5] = 0
        cv2.imwrite(str(root / "rgb" / f"f{i}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(root / "depth" / f"f{i}.png"), depth_mm)
    (root / "rgb" / "unmatched.png").write_bytes((root / "rgb" / "f0.png").read_bytes())
    return root


@pytest.fixture(scope="module")
def int8_model(fp32_model, calib_dir):
    path = fp32_model.with_name("int8.onnx")
    proto = quantize_int8(fp32_model, path, load_frames(calib_dir, (H, W)))
    return path, proto


def test_calibration_reader_over_a_generic_layout_folder(calib_dir):
    frames = load_frames(calib_dir, (H, W))
    assert [name for name, _, _ in frames] == ["f0", "f1", "f2"]  # unmatched rgb skipped
    reader = _data_reader(frames)
    batches = []
    while (batch := reader.get_next()) is not None:
        batches.append(batch)
    assert len(batches) == 3
    for batch, (_, rgb, depth) in zip(batches, frames):
        assert batch["rgb"].dtype == np.uint8 and batch["rgb"].shape == (1, H, W, 3)
        assert batch["depth"].dtype == np.float32 and batch["depth"].shape == (1, H, W)
        assert np.array_equal(batch["rgb"][0], rgb)
    assert (batches[0]["depth"][0, :4] == 0).all()  # invalid depth stays 0
    assert batches[1]["depth"].max() == pytest.approx((800 + 30 * 79 + 100) / 1000, abs=0.05)
    assert len(list(frame_batches(load_frames(calib_dir, (H, W), limit=2)))) == 2


def test_int8_model_is_qdq_with_per_channel_int8_weights(int8_model):
    path, proto = int8_model
    ops = [n.op_type for n in proto.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    inits = {t.name: t for t in proto.graph.initializer}
    dq_by_output = {n.output[0]: n for n in proto.graph.node if n.op_type == "DequantizeLinear"}
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    assert convs
    for conv in convs:
        dq = dq_by_output[conv.input[1]]  # every conv weight comes through a DequantizeLinear
        weight = inits[dq.input[0]]
        assert weight.data_type == onnx.TensorProto.INT8
        scale = numpy_helper.to_array(inits[dq.input[1]])
        assert scale.shape == (weight.dims[0],)  # one scale per output channel
        assert not numpy_helper.to_array(inits[dq.input[2]]).any()  # symmetric weights
        # Activations are uint8 with a zero point.
        act_dq = dq_by_output[conv.input[0]]
        assert inits[act_dq.input[2]].data_type == onnx.TensorProto.UINT8


def test_int8_model_keeps_the_engine_contract_and_card(int8_model, fp32_model):
    path, proto = int8_model
    assert check_engine_contract(proto) == []
    # uint8 activations are for ONNX Runtime; TensorRT builds its own INT8 from the fp32 file.
    assert {"DequantizeLinear(uint8)", "QuantizeLinear(uint8)"} <= set(check_tensorrt_ops(proto))
    assert check_tensorrt_ops(fp32_model) == []
    on_disk = onnx.load(str(path))
    assert check_engine_contract(on_disk) == []
    card = {p.key: p.value for p in on_disk.metadata_props}[METADATA_KEY]
    assert card == {p.key: p.value for p in onnx.load(str(fp32_model)).metadata_props}[METADATA_KEY]
    assert [i.name for i in on_disk.graph.input] == ["rgb", "depth"]
    assert [o.name for o in on_disk.graph.output] == ["labels"]


def test_ort_runs_the_int8_model_and_agrees_with_fp32(int8_model, fp32_model, calib_dir):
    path, _ = int8_model
    int8 = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    fp32 = ort.InferenceSession(str(fp32_model), providers=["CPUExecutionProvider"])
    agree = []
    for _, rgb, depth in load_frames(calib_dir, (H, W)):
        feed = {"rgb": rgb[None], "depth": depth[None]}
        labels = int8.run(["labels"], feed)[0]
        assert labels.dtype == np.uint8 and labels.shape == (1, H, W)
        agree.append((labels == fp32.run(["labels"], feed)[0]).mean())
    # A broken quantization (wrong scales, a lost zero point) gives chance level: 20% here.
    assert np.mean(agree) > 0.9


def test_post_processing_stays_in_float(fp32_model, int8_model):
    _, proto = int8_model
    fp32 = onnx.load(str(fp32_model))
    tail = float_tail(fp32)
    tail_ops = {n.op_type for n in fp32.graph.node if n.name in tail}
    assert {"Resize", "ArgMax"} <= tail_ops and "Conv" not in tail_ops
    assert len(classifier_convs(fp32)) >= 1
    # In the INT8 model nothing is quantized after the classifier: the upsampling to input
    # size and the argmax read float tensors that no QuantizeLinear touches.
    producers = {o: n for n in proto.graph.node for o in n.output}
    argmax = next(n for n in proto.graph.node if n.op_type == "ArgMax")
    resize = producers[argmax.input[0]]
    assert resize.op_type == "Resize"
    assert producers[resize.input[0]].op_type not in ("DequantizeLinear", "QuantizeLinear")
    quantized_inputs = {n.input[0] for n in proto.graph.node if n.op_type == "QuantizeLinear"}
    assert resize.output[0] not in quantized_inputs and resize.input[0] not in quantized_inputs


def test_input_preparation_stays_in_float(fp32_model, int8_model):
    _, proto = int8_model
    fp32 = onnx.load(str(fp32_model))
    head = float_head(fp32)
    head_ops = {n.op_type for n in fp32.graph.node if n.name in head}
    assert {"Mul", "Add"} <= head_ops and "Conv" not in head_ops
    assert len(stem_convs(fp32)) == 2  # one per modality
    # The normalisation reads and writes float: the first QuantizeLinear comes after it.
    producers = {o: n for n in proto.graph.node for o in n.output}
    for node in proto.graph.node:
        if node.name in head:
            assert all(producers[i].op_type != "DequantizeLinear"
                       for i in node.input if i in producers), node.name


def test_bad_calibration_input_is_refused(fp32_model, tmp_path, calib_dir):
    with pytest.raises(CliError, match="at least one frame"):
        quantize_int8(fp32_model, tmp_path / "q.onnx", [])
    with pytest.raises(CliError, match="not 64x64"):
        quantize_int8(fp32_model, tmp_path / "q.onnx", load_frames(calib_dir, (32, 32)))
    with pytest.raises(CliError, match="calibration must be one of"):
        quantize_int8(fp32_model, tmp_path / "q.onnx", load_frames(calib_dir, (H, W)),
                      calibration="median")
    assert not (tmp_path / "q.onnx").exists()
