"""``cen-train build-engine``: cache key, trtexec line, calibration data, engine + card files,
and the command's refusals. Building itself needs a GPU and TensorRT."""
import dataclasses
import hashlib
import shlex
import subprocess

import cv2
import numpy as np
import onnx
import pytest

from cen_perception.model_card import ModelCard
from cen_training import CliError
from cen_training.tensorrt_build import (BuildFacts, cached_paths, calibration_batches,
                                         calibration_sha256, card_from_onnx, file_sha256,
                                         find_calibration_pairs, load_calibration_frame,
                                         trtexec_command, write_engine)

FACTS = BuildFacts(onnx_sha256="ab" * 32, tensorrt_version="10.3.0", gpu_name="NVIDIA Orin",
                   compute_capability=(8, 7), precision="fp16", input_size=(480, 640))


# -- cache key --------------------------------------------------------------------------
def test_same_facts_give_the_same_key():
    assert FACTS.key() == dataclasses.replace(FACTS).key()
    assert len(FACTS.key()) == 64 and int(FACTS.key(), 16) >= 0


@pytest.mark.parametrize("change", [
    {"onnx_sha256": "cd" * 32}, {"tensorrt_version": "8.6.1"}, {"gpu_name": "NVIDIA H100"},
    {"compute_capability": (8, 6)}, {"precision": "fp32"}, {"precision": "int8"},
    {"input_size": (480, 641)}, {"input_size": (640, 480)}, {"calibration_sha256": "ef" * 32},
])
def test_changing_any_fact_changes_the_key(change):
    assert dataclasses.replace(FACTS, **change).key() != FACTS.key()


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision"):
        dataclasses.replace(FACTS, precision="bf16")


def test_file_sha256_and_cache_paths(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"x" * 3_000_000)
    assert file_sha256(path) == hashlib.sha256(b"x" * 3_000_000).hexdigest()
    paths = cached_paths(tmp_path / "cache", FACTS.key())
    assert paths["engine"].name == FACTS.key() + ".engine"
    assert len({p.parent for p in paths.values()}) == 1 and len(set(paths.values())) == 3


# -- trtexec ----------------------------------------------------------------------------
def test_trtexec_command_per_precision(tmp_path):
    onnx_path, engine = tmp_path / "my model.onnx", tmp_path / "m.engine"
    fp32 = shlex.split(trtexec_command(onnx_path, engine, "fp32", 4))
    assert fp32 == ["trtexec", f"--onnx={onnx_path}", f"--saveEngine={engine}",
                    "--memPoolSize=workspace:4096M"]
    assert "--fp16" in shlex.split(trtexec_command(onnx_path, engine, "fp16", 0.5))
    assert "--memPoolSize=workspace:512M" in trtexec_command(onnx_path, engine, "fp16", 0.5)
    int8 = shlex.split(trtexec_command(onnx_path, engine, "int8", 2, tmp_path / "c.calib"))
    assert "--int8" in int8 and f"--calib={tmp_path / 'c.calib'}" in int8
    assert "--fp16" not in int8
    with pytest.raises(ValueError):
        trtexec_command(onnx_path, engine, "int4")


# -- calibration data -------------------------------------------------------------------
def _write_frame(root, name, rgb, depth_mm):
    cv2.imwrite(str(root / "rgb" / f"{name}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert cv2.imwrite(str(root / "depth" / f"{name}.png"), depth_mm)


@pytest.fixture
def calib_dir(tmp_path):
    root = tmp_path / "calib"
    (root / "rgb").mkdir(parents=True)
    (root / "depth").mkdir()
    red = np.zeros((40, 60, 3), np.uint8)
    red[..., 0] = 255
    for i in range(5):
        depth = np.full((40, 60), 1500 + i, np.uint16)
        depth[:, :30] = 0  # invalid
        depth[:20, 30:] = 65535  # invalid (Kinect-style)
        _write_frame(root, f"frame{i:02d}", red, depth)
    cv2.imwrite(str(root / "rgb" / "no_depth.png"), red)  # unmatched: skipped
    return root


def test_calibration_pairs_match_by_name_and_spread_over_the_folder(calib_dir):
    pairs = find_calibration_pairs(calib_dir)
    assert [r.stem for r, _ in pairs] == [f"frame{i:02d}" for i in range(5)]
    assert all(r.stem == d.stem and d.parent.name == "depth" for r, d in pairs)
    assert [r.stem for r, _ in find_calibration_pairs(calib_dir, limit=3)] == \
        ["frame00", "frame02", "frame04"]


def test_calibration_frame_matches_the_engine_inputs(calib_dir):
    rgb_path, depth_path = find_calibration_pairs(calib_dir)[1]
    batch = load_calibration_frame(rgb_path, depth_path, (24, 32))
    rgb, depth = batch["rgb"], batch["depth"]
    assert rgb.dtype == np.uint8 and rgb.shape == (1, 24, 32, 3) and rgb.flags.c_contiguous
    assert depth.dtype == np.float32 and depth.shape == (1, 24, 32) and depth.flags.c_contiguous
    assert (rgb[..., 0] == 255).all() and (rgb[..., 1:] == 0).all()  # RGB order, not BGR
    assert np.isclose(depth[0, 20:, 20:], 1.501).all()  # millimetres -> metres
    assert (depth[0, :, :14] == 0).all() and (depth[0, :10, 18:] == 0).all()  # both invalids
    assert set(np.unique(depth)) == {np.float32(0), np.float32(1.501)}  # nearest: no blending
    assert len(list(calibration_batches(find_calibration_pairs(calib_dir), (24, 32)))) == 5


def test_bad_calibration_folders_are_refused(tmp_path, calib_dir):
    with pytest.raises(CliError, match="rgb/ and depth/"):
        find_calibration_pairs(tmp_path / "nothing")
    empty = tmp_path / "empty"
    (empty / "rgb").mkdir(parents=True)
    (empty / "depth").mkdir()
    with pytest.raises(CliError, match="no rgb/depth image pairs"):
        find_calibration_pairs(empty)
    rgb_path, depth_path = find_calibration_pairs(calib_dir)[0]
    cv2.imwrite(str(depth_path), np.zeros((40, 60), np.uint8))  # 8-bit depth
    with pytest.raises(CliError, match="16-bit PNG in millimetres"):
        load_calibration_frame(rgb_path, depth_path, (24, 32))


def test_calibration_digest_follows_the_images(calib_dir):
    pairs = find_calibration_pairs(calib_dir)
    before = calibration_sha256(pairs)
    assert calibration_sha256(pairs) == before
    assert calibration_sha256(pairs[:-1]) != before
    cv2.imwrite(str(pairs[0][1]), np.full((40, 60), 900, np.uint16))
    assert calibration_sha256(pairs) != before


# -- engine and sidecar card ----------------------------------------------------------------
def test_engine_and_sidecar_card_are_written(tmp_path, toy_onnx_factory):
    card = card_from_onnx(onnx.load(str(toy_onnx_factory(48, 64))))
    out = write_engine(b"\x01serialized", tmp_path / "deep" / "dir" / "m.engine", card)
    assert out.read_bytes() == b"\x01serialized"
    loaded = ModelCard.load_sidecar(out)
    assert loaded == card and loaded.input_size == [48, 64]
    # From a cached engine file: a copy, with the card beside it.
    copy = write_engine(out, tmp_path / "copy.plan", card)
    assert copy.read_bytes() == b"\x01serialized" and ModelCard.load_sidecar(copy) == card
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.plan", "copy.plan.json", "deep"]


def test_card_from_onnx_without_card_is_a_cli_error():
    model = onnx.helper.make_model(onnx.helper.make_graph([], "g", [], []))
    with pytest.raises(CliError, match="no model card"):
        card_from_onnx(model)


# -- the command ---------------------------------------------------------------------------
def _cli(repo_root, *args):
    return subprocess.run([str(repo_root / ".venv" / "bin" / "cen-train"), "build-engine",
                           *map(str, args)], capture_output=True, text=True, timeout=120)


def _assert_one_line_error(result, *expected):
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("cen-train build-engine: error:")
    assert any(e in lines[0] for e in expected), lines[0]


def test_cli_refuses_a_model_breaking_the_contract(repo_root, tmp_path, toy_onnx_factory):
    model = onnx.load(str(toy_onnx_factory(48, 64)))
    del model.metadata_props[:]
    path = tmp_path / "no_card.onnx"
    onnx.save(model, str(path))
    result = _cli(repo_root, path, "-o", tmp_path / "m.engine", "--cache-dir", tmp_path / "c")
    _assert_one_line_error(result, "no model card")
    assert not (tmp_path / "m.engine").exists()


def test_cli_refuses_bad_options(tmp_path, toy_onnx_factory, capsys):
    """In-process through the same entry point, to keep the suite fast."""
    from cen_training.cli import main

    def refused(*args):
        assert main(["build-engine", *map(str, args)]) == 2
        return capsys.readouterr().err.strip()

    onnx_path = toy_onnx_factory(48, 64)
    assert "--int8 needs --calib-data" in refused(onnx_path, "--int8")
    assert "only used with --int8" in refused(onnx_path, "--calib-data", tmp_path)
    assert "rgb/ and depth/" in refused(onnx_path, "--int8", "--calib-data", tmp_path)
    assert "must be positive" in refused(onnx_path, "--workspace-gb", "0")
    assert "file not found" in refused(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\xff\x00 not protobuf")
    message = refused(tmp_path / "junk.onnx")
    assert "not an ONNX model" in message and len(message.splitlines()) == 1


def test_cli_builds_or_names_what_the_machine_lacks(repo_root, tmp_path, toy_onnx_factory):
    """With a GPU and TensorRT this builds the toy engine; without, one clean line."""
    out = tmp_path / "toy.engine"
    result = _cli(repo_root, toy_onnx_factory(48, 64), "-o", out, "--cache-dir", tmp_path / "c")
    assert "trtexec --onnx=" in result.stdout  # printed before the GPU is needed
    if result.returncode == 0:
        assert out.stat().st_size > 0 and ModelCard.load_sidecar(out).input_size == [48, 64]
    else:
        assert result.returncode > 0  # an error exit, not a crash by signal
        _assert_one_line_error(result, "no usable CUDA GPU", "no CUDA GPU found",
                               "cuda-python is not installed", "TensorRT is not installed")
        assert not out.exists()
