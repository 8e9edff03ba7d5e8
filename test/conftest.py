"""Shared test set-up: keep ROS 2 traffic local and give each run its own DDS domain."""
import os
import pathlib
import random

# Set before rclpy is imported anywhere, and inherited by node subprocesses.
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(1, 100)))

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
SAMPLES = REPO.parent / "shared" / "samples"


@pytest.fixture(scope="session")
def repo_root() -> pathlib.Path:
    return REPO


@pytest.fixture(scope="session")
def samples_dir() -> pathlib.Path:
    """Real RGB-D frames in ../shared/samples (NYUv2 frame 0, a Kinect v2 frame)."""
    if not SAMPLES.is_dir():
        pytest.skip("../shared/samples is not present beside the repository")
    return SAMPLES


def make_toy_onnx(path, height: int, width: int, num_classes: int = 3, confidence: bool = True,
                  card_overrides: dict | None = None) -> pathlib.Path:
    """Write a tiny ONNX model that satisfies the engine contract, without torch.

    ``labels = clip(floor(depth_metres), 0, C-1)``; ``confidence = 0.5 + mean(rgb) / 510``.
    Predictable outputs let node and engine tests check exactly what comes back.
    """
    import onnx
    from onnx import TensorProto, helper

    from cen_perception.model_card import METADATA_KEY, OFFICIAL_NORMALIZATION, ModelCard

    h, w = height, width
    nodes = [
        helper.make_node("Floor", ["depth"], ["d_floor"]),
        helper.make_node("Clip", ["d_floor", "lo", "hi"], ["d_clip"]),
        helper.make_node("Cast", ["d_clip"], ["labels"], to=TensorProto.UINT8),
    ]
    inits = [helper.make_tensor("lo", TensorProto.FLOAT, [], [0.0]),
             helper.make_tensor("hi", TensorProto.FLOAT, [], [float(num_classes - 1)])]
    outputs = [helper.make_tensor_value_info("labels", TensorProto.UINT8, [1, h, w])]
    if confidence:
        nodes += [
            helper.make_node("Cast", ["rgb"], ["rgb_f"], to=TensorProto.FLOAT),
            helper.make_node("ReduceMean", ["rgb_f"], ["rgb_mean"], axes=[3], keepdims=0),
            helper.make_node("Div", ["rgb_mean", "k510"], ["rgb_scaled"]),
            helper.make_node("Add", ["rgb_scaled", "half"], ["confidence"]),
        ]
        inits += [helper.make_tensor("k510", TensorProto.FLOAT, [], [510.0]),
                  helper.make_tensor("half", TensorProto.FLOAT, [], [0.5])]
        outputs.append(helper.make_tensor_value_info("confidence", TensorProto.FLOAT, [1, h, w]))
    graph = helper.make_graph(
        nodes, "toy_segmenter",
        [helper.make_tensor_value_info("rgb", TensorProto.UINT8, [1, h, w, 3]),
         helper.make_tensor_value_info("depth", TensorProto.FLOAT, [1, h, w])],
        outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    card = dict(arch="toy", backbone="none", modalities=["rgb", "depth"],
                num_classes=num_classes, class_names=[f"class{i}" for i in range(num_classes)],
                palette=[[(37 * i) % 256, (91 * i + 60) % 256, (151 * i + 120) % 256]
                         for i in range(num_classes)],
                input_size=[h, w], normalization=OFFICIAL_NORMALIZATION,
                outputs=["labels"] + (["confidence"] if confidence else []))
    card.update(card_overrides or {})
    helper.set_model_props(model, {METADATA_KEY: ModelCard.from_dict(card).to_json()})
    onnx.checker.check_model(model)
    path = pathlib.Path(path)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def toy_onnx_factory(tmp_path_factory):
    """``factory(height, width, num_classes=3, confidence=True) -> path`` of a toy engine."""
    base = tmp_path_factory.mktemp("toy_onnx")

    def factory(height: int = 48, width: int = 64, **kwargs) -> pathlib.Path:
        name = f"toy_{height}x{width}_{abs(hash(repr(sorted(kwargs.items()))))}.onnx"
        return make_toy_onnx(base / name, height, width, **kwargs)

    return factory
