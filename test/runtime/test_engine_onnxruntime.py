import numpy as np
import pytest

from cen_perception.engines import EngineError, open_engine
from cen_perception.model_card import ModelCardError


def test_toy_engine_runs_with_card(toy_onnx_factory):
    engine = open_engine(toy_onnx_factory(48, 64))
    assert engine.backend == "onnxruntime"
    assert engine.input_size == (48, 64)
    depth = np.full((48, 64), 1.5, np.float32)
    depth[:, :10] = 0.2
    labels, conf = engine.infer(np.zeros((48, 64, 3), np.uint8), depth)
    assert labels.dtype == np.uint8 and labels.shape == (48, 64)
    assert (labels[:, :10] == 0).all() and (labels[:, 10:] == 1).all()
    assert np.allclose(conf, 0.5)


@pytest.mark.parametrize("spin_wait", [True, False])
def test_thread_options_reach_the_session_and_keep_results(toy_onnx_factory, spin_wait):
    engine = open_engine(toy_onnx_factory(48, 64), threads=2, spin_wait=spin_wait)
    options = engine.session.get_session_options()
    assert options.intra_op_num_threads == 2
    if not spin_wait:
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    depth = np.full((48, 64), 1.5, np.float32)
    labels, _ = engine.infer(np.zeros((48, 64, 3), np.uint8), depth)
    assert (labels == 1).all()


def test_missing_file_is_clear(tmp_path):
    with pytest.raises(EngineError, match="not found"):
        open_engine(tmp_path / "nope.onnx")


def test_corrupt_file_is_clear(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00not an onnx model")
    with pytest.raises(EngineError, match="not a loadable ONNX model"):
        open_engine(bad)


def test_card_disagreeing_with_graph_is_refused(toy_onnx_factory):
    path = toy_onnx_factory(48, 64, card_overrides={"input_size": [32, 32]})
    with pytest.raises(ModelCardError, match="disagree"):
        open_engine(path)
