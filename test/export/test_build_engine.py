"""``cen-train build-engine``: cache key, trtexec line, calibration data, engine + card files,
and the command's refusals. Building itself needs a GPU and TensorRT."""
import dataclasses
import hashlib
import json
import shlex
import subprocess
from importlib import metadata

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from cen_perception.engines.base import EngineError
from cen_perception.model_card import METADATA_KEY, ModelCard
from cen_training.data.frames import find_rgbd_pairs, load_rgbd_frame
from cen_training.deploy.tensorrt import (
    BuildFacts,
    build_plan,
    cached_paths,
    calibration_batches,
    calibration_sha256,
    calibrator_class,
    card_from_onnx,
    check_calibration_frames,
    discard_cached,
    file_sha256,
    load_engine_model,
    trtexec_command,
    write_engine,
)
from cen_training.errors import DatasetError, EngineBuildError

FACTS = BuildFacts(onnx_sha256="ab" * 32, tensorrt_version="10.3.0",
                   tensorrt_distribution="tensorrt-cu12", gpu_name="NVIDIA Orin",
                   compute_capability=(8, 7), multiprocessors=16, precision="fp16",
                   input_size=(480, 640))


# -- cache key --------------------------------------------------------------------------
def test_same_facts_give_the_same_key():
    assert FACTS.key() == dataclasses.replace(FACTS).key()
    assert len(FACTS.key()) == 64 and int(FACTS.key(), 16) >= 0


@pytest.mark.parametrize("change", [
    {"onnx_sha256": "cd" * 32}, {"tensorrt_version": "8.6.1"}, {"gpu_name": "NVIDIA H100"},
    {"tensorrt_distribution": "tensorrt-cu13"}, {"multiprocessors": 8},
    {"compute_capability": (8, 6)}, {"precision": "fp32"}, {"precision": "int8"},
    {"input_size": (480, 641)}, {"input_size": (640, 480)}, {"calibration_sha256": "ef" * 32},
])
def test_changing_any_fact_changes_the_key(change):
    assert dataclasses.replace(FACTS, **change).key() != FACTS.key()


def test_key_holds_the_tensorrt_variant_and_the_multiprocessor_count():
    # The CUDA 12 and 13 builds of one TensorRT share __version__; Jetson AGX Orin (16 SMs)
    # and Orin NX (8 SMs) share the name "Orin" and sm_87.
    assert json.loads(FACTS.as_json()) == {
        "onnx_sha256": "ab" * 32, "tensorrt_version": "10.3.0",
        "tensorrt_distribution": "tensorrt-cu12", "gpu_name": "NVIDIA Orin",
        "compute_capability": [8, 7], "multiprocessors": 16, "precision": "fp16",
        "input_size": [480, 640], "calibration_sha256": ""}
    assert FACTS.key() == hashlib.sha256(FACTS.as_json().encode()).hexdigest()


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


# -- build plan per TensorRT version ------------------------------------------------------
def _plan(version, precision, **legacy):
    plan = build_plan(version, precision, **legacy)
    return (plan.precision, plan.strongly_typed, plan.explicit_batch, plan.builder_flags,
            plan.cleared_flags, plan.calibrator)


@pytest.mark.parametrize("version", ["10.0.1", "10.3.0.26", "11.1.0", "11.4.0"])
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_tensorrt_10_and_11_build_the_onnx_precision_strongly_typed(version, precision):
    assert _plan(version, precision) == (precision, True, False, (), (), False)


@pytest.mark.parametrize("version", ["8.6.1", "8.6.1.post1", "10.0.1", "10.3.0.26",
                                     "10.13.2", "11.1.0"])
def test_fp32_is_built_without_tf32_on_every_version(version):
    """TF32 is on by default in TensorRT (inputs rounded to 10-bit mantissas): an engine
    whose card says fp32 has it cleared."""
    strong = not version.startswith("8.")
    assert _plan(version, "fp32") == ("fp32", strong, not strong, (), ("TF32",), False)
    plan = build_plan(version, "fp32")
    assert plan.describe() == f"fp32, {'strongly' if strong else 'weakly'} typed, no TF32"


def test_tensorrt_8_6_allows_what_the_onnx_graph_holds():
    assert _plan("8.6.1.6", "fp32") == ("fp32", False, True, (), ("TF32",), False)
    assert _plan("8.6.1.post1", "fp16") == ("fp16", False, True, ("FP16",), (), False)
    assert _plan("8.6.1", "int8") == ("int8", False, True, ("INT8",), (), False)  # explicit Q/DQ


@pytest.mark.parametrize("version", ["8.6.1", "10.0.1", "10.3.0"])
def test_legacy_weak_typing_up_to_tensorrt_10(version):
    explicit_batch = version.startswith("8.")
    assert _plan(version, "fp32", fp16=True) == (
        "fp16", False, explicit_batch, ("FP16",), (), False)
    assert _plan(version, "fp32", legacy_int8=True) == (
        "int8", False, explicit_batch, ("INT8",), (), True)


def test_legacy_notes_follow_nvidia_deprecations():
    assert build_plan("10.0.1", "fp32", legacy_int8=True).notes == ()
    assert build_plan("8.6.1", "fp32", fp16=True).notes == ()
    assert build_plan("10.3.0", "fp32", legacy_int8=True).notes == (
        "note: INT8 calibration is deprecated since TensorRT 10.1 and removed in 11; the lasting "
        "route is cen-train export CKPT -o model_int8.onnx --height H --width W --precision int8 "
        "--calib-data DIR",)
    assert build_plan("10.3.0", "fp32", fp16=True).notes == ()
    assert build_plan("10.13.2", "fp32", fp16=True).notes == (
        "note: weak typing (--fp16) is deprecated since TensorRT 10.12 and removed in 11; the "
        "lasting route is cen-train export CKPT -o model_fp16.onnx --height H --width W "
        "--precision fp16",)


def test_tensorrt_11_refuses_weak_typing_naming_the_onnx_route():
    with pytest.raises(EngineBuildError) as info:
        build_plan("11.4.0", "fp32", fp16=True)
    assert str(info.value) == (
        "TensorRT 11.4.0 has no weak typing (--fp16 needs BuilderFlag.FP16, removed in TensorRT "
        "11): put the precision in the ONNX model instead (cen-train export CKPT -o "
        "model_fp16.onnx --height H --width W --precision fp16) and build that without --fp16")
    with pytest.raises(EngineBuildError) as info:
        build_plan("11.4.0", "fp32", legacy_int8=True)
    assert str(info.value) == (
        "TensorRT 11.4.0 has no weak typing (--legacy-int8 needs BuilderFlag.INT8 and the INT8 "
        "calibrator, removed in TensorRT 11): put the precision in the ONNX model instead "
        "(cen-train export CKPT -o model_int8.onnx --height H --width W --precision int8 "
        "--calib-data DIR) and build that without --legacy-int8")


@pytest.mark.parametrize("version", ["8.6.1", "10.3.0", "11.4.0"])
def test_legacy_flags_need_an_fp32_graph(version):
    with pytest.raises(EngineBuildError, match="--fp16 lowers an fp32 model's precision, but this "
                                       "model is already int8: build it without --fp16"):
        build_plan(version, "int8", fp16=True)
    with pytest.raises(EngineBuildError, match="already fp16: build it without --legacy-int8"):
        build_plan(version, "fp16", legacy_int8=True)
    with pytest.raises(EngineBuildError, match="exclude each other"):
        build_plan(version, "fp32", fp16=True, legacy_int8=True)


def test_unsupported_tensorrt_versions_are_refused():
    with pytest.raises(EngineBuildError,
                       match="TensorRT 8.5.3 is too old; 8.6, 10.x or 11.x is needed"):
        build_plan("8.5.3", "fp32")
    with pytest.raises(EngineBuildError, match="9.2.0 .* is not supported"):
        build_plan("9.2.0", "fp32")
    with pytest.raises(EngineBuildError, match="cannot read the TensorRT version"):
        build_plan("unknown", "fp32")
    with pytest.raises(ValueError):
        build_plan("10.3.0", "bf16")


# -- trtexec ----------------------------------------------------------------------------
def test_trtexec_command_per_plan(tmp_path):
    onnx_path, engine = tmp_path / "my model.onnx", tmp_path / "m.engine"
    strong = shlex.split(trtexec_command(onnx_path, engine, build_plan("10.3.0", "int8"), 4))
    assert strong == ["trtexec", f"--onnx={onnx_path}", f"--saveEngine={engine}",
                      "--stronglyTyped", "--memPoolSize=workspace:4096M"]
    old = trtexec_command(onnx_path, engine, build_plan("8.6.1", "fp16"), 0.5)
    assert "--fp16" in shlex.split(old) and "--stronglyTyped" not in old
    assert "--memPoolSize=workspace:512M" in old
    legacy = shlex.split(trtexec_command(onnx_path, engine,
                                         build_plan("10.3.0", "fp32", legacy_int8=True), 2,
                                         tmp_path / "c.calib"))
    assert "--int8" in legacy and f"--calib={tmp_path / 'c.calib'}" in legacy
    assert "--fp16" not in legacy and "--stronglyTyped" not in legacy
    for version in ("8.6.1", "10.3.0", "11.1.0"):
        fp32 = shlex.split(trtexec_command(onnx_path, engine, build_plan(version, "fp32"), 4))
        assert fp32[-2:] == ["--noTF32", "--memPoolSize=workspace:4096M"]
        assert "--noTF32" not in trtexec_command(onnx_path, engine, build_plan(version, "fp16"))


def test_discard_cached_removes_engine_calibration_and_facts(tmp_path):
    paths = cached_paths(tmp_path, FACTS.key())
    paths["engine"].write_bytes(b"engine")
    paths["calibration"].write_bytes(b"partial calibration")
    assert sorted(p.name for p in discard_cached(paths)) == sorted(
        [paths["engine"].name, paths["calibration"].name])
    assert list(tmp_path.iterdir()) == []
    assert discard_cached(paths) == []


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
    pairs = find_rgbd_pairs(calib_dir)
    assert [r.stem for r, _ in pairs] == [f"frame{i:02d}" for i in range(5)]
    assert all(r.stem == d.stem and d.parent.name == "depth" for r, d in pairs)
    assert [r.stem for r, _ in find_rgbd_pairs(calib_dir, limit=3)] == \
        ["frame00", "frame02", "frame04"]


def test_calibration_frame_matches_the_engine_inputs(calib_dir):
    rgb_path, depth_path = find_rgbd_pairs(calib_dir)[1]
    batch = load_rgbd_frame(rgb_path, depth_path, (24, 32))
    rgb, depth = batch["rgb"], batch["depth"]
    assert rgb.dtype == np.uint8 and rgb.shape == (1, 24, 32, 3) and rgb.flags.c_contiguous
    assert depth.dtype == np.float32 and depth.shape == (1, 24, 32) and depth.flags.c_contiguous
    assert (rgb[..., 0] == 255).all() and (rgb[..., 1:] == 0).all()  # RGB order, not BGR
    assert np.isclose(depth[0, 20:, 20:], 1.501).all()  # millimetres -> metres
    assert (depth[0, :, :14] == 0).all() and (depth[0, :10, 18:] == 0).all()  # both invalids
    assert set(np.unique(depth)) == {np.float32(0), np.float32(1.501)}  # nearest: no blending
    assert len(list(calibration_batches(find_rgbd_pairs(calib_dir), (24, 32)))) == 5


def test_bad_calibration_folders_are_refused(tmp_path, calib_dir):
    with pytest.raises(DatasetError, match="rgb/ and depth/"):
        find_rgbd_pairs(tmp_path / "nothing")
    empty = tmp_path / "empty"
    (empty / "rgb").mkdir(parents=True)
    (empty / "depth").mkdir()
    with pytest.raises(DatasetError, match="no rgb/depth image pairs"):
        find_rgbd_pairs(empty)
    rgb_path, depth_path = find_rgbd_pairs(calib_dir)[0]
    cv2.imwrite(str(depth_path), np.zeros((40, 60), np.uint8))  # 8-bit depth
    with pytest.raises(DatasetError, match="16-bit PNG in millimetres"):
        load_rgbd_frame(rgb_path, depth_path, (24, 32))


def test_every_calibration_frame_is_checked_before_the_build(calib_dir):
    pairs = find_rgbd_pairs(calib_dir)
    check_calibration_frames(pairs, (24, 32), progress=False)
    cv2.imwrite(str(pairs[3][1]), np.zeros((40, 60), np.uint8))  # 8-bit depth
    with pytest.raises(DatasetError) as info:
        check_calibration_frames(pairs, (24, 32), progress=False)
    assert str(info.value) == (f"{pairs[3][1]}: depth must be a single-channel 16-bit PNG in "
                               "millimetres")


# -- the INT8 calibrator's own logic (TensorRT's base class stood in for) ---------------------
class StandInCalibratorBase:
    """Takes the place of ``tensorrt.IInt8EntropyCalibrator2``, which is not installed here;
    the code under test is our subclass's Python logic, which TensorRT calls back."""

    def __init__(self):
        self.base_initialised = True


class RecordingUpload:
    """Stands in for the device copy: keeps what it was given, returns made-up addresses."""

    def __init__(self, fail_at=None):
        self.frames, self.fail_at = [], fail_at

    def __call__(self, batch, names):
        if self.fail_at is not None and len(self.frames) == self.fail_at:
            raise EngineError("copying 'rgb' to the GPU failed: cudaErrorIllegalAddress")
        self.frames.append({name: batch[name].copy() for name in names})
        return [0x1000 * (len(self.frames)) + i for i in range(len(names))]


def _calibrator(pairs, cache_file, upload, size=(24, 32)):
    cls = calibrator_class(StandInCalibratorBase)
    calibrator = cls(calibration_batches(pairs, size), len(pairs), cache_file, upload,
                     progress=False)
    assert calibrator.base_initialised and calibrator.get_batch_size() == 1
    return calibrator


def test_calibrator_feeds_every_frame_then_caches(calib_dir, tmp_path):
    pairs = find_rgbd_pairs(calib_dir)
    upload, cache = RecordingUpload(), tmp_path / "c.calib"
    calibrator = _calibrator(pairs, cache, upload)
    assert calibrator.read_calibration_cache() is None
    pointers = [calibrator.get_batch(["rgb", "depth"]) for _ in range(len(pairs))]
    assert pointers == [[0x1000 * i, 0x1000 * i + 1] for i in range(1, 6)]
    assert calibrator.get_batch(["rgb", "depth"]) is None  # no more frames
    expected = load_rgbd_frame(*pairs[2], (24, 32))
    assert all(np.array_equal(upload.frames[2][k], expected[k]) for k in ("rgb", "depth"))
    calibrator.write_calibration_cache(b"scales")
    calibrator.raise_if_failed()
    assert cache.read_bytes() == b"scales"
    assert _calibrator(pairs, cache, RecordingUpload()).read_calibration_cache() == b"scales"


def test_frame_unreadable_during_calibration_is_raised_after_the_build(calib_dir, tmp_path):
    pairs = find_rgbd_pairs(calib_dir)
    upload, cache = RecordingUpload(), tmp_path / "c.calib"
    calibrator = _calibrator(pairs, cache, upload)
    cv2.imwrite(str(pairs[2][1]), np.zeros((40, 60), np.uint8))  # changed after the check
    assert calibrator.get_batch(["rgb", "depth"]) is not None
    assert calibrator.get_batch(["rgb", "depth"]) is not None
    # What TensorRT sees: "no more frames", not an exception it would print and swallow.
    assert calibrator.get_batch(["rgb", "depth"]) is None
    assert calibrator.get_batch(["rgb", "depth"]) is None  # and nothing after the error
    assert len(upload.frames) == 2
    calibrator.write_calibration_cache(b"scales from two frames")
    assert not cache.exists()  # a cut-short calibration is never cached
    with pytest.raises(EngineBuildError) as info:
        calibrator.raise_if_failed()
    assert str(info.value) == (f"INT8 calibration failed after 2 of 5 frames: {pairs[2][1]}: "
                               "depth must be a single-channel 16-bit PNG in millimetres")


def test_device_copy_failure_is_kept_and_raised(calib_dir, tmp_path):
    pairs = find_rgbd_pairs(calib_dir)
    calibrator = _calibrator(pairs, tmp_path / "c.calib", RecordingUpload(fail_at=1))
    assert calibrator.get_batch(["rgb", "depth"]) is not None
    assert calibrator.get_batch(["rgb", "depth"]) is None
    with pytest.raises(EngineBuildError,
                       match=r"after 1 of 5 frames: copying 'rgb' to the GPU failed: "
                             r"cudaErrorIllegalAddress$"):
        calibrator.raise_if_failed()


def test_unknown_input_name_and_short_calibration_are_not_cached(calib_dir, tmp_path):
    pairs = find_rgbd_pairs(calib_dir)
    cache = tmp_path / "c.calib"
    calibrator = _calibrator(pairs, cache, RecordingUpload())
    assert calibrator.get_batch(["rgb", "depth", "normals"]) is None
    with pytest.raises(EngineBuildError, match="frame 1 has no input 'normals'"):
        calibrator.raise_if_failed()
    short = _calibrator(pairs, cache, RecordingUpload())
    short.get_batch(["rgb", "depth"])
    short.write_calibration_cache(b"one frame")  # TensorRT stopped after 1 of 5
    short.raise_if_failed()
    assert not cache.exists()


def test_calibration_digest_follows_the_images(calib_dir):
    pairs = find_rgbd_pairs(calib_dir)
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
    with pytest.raises(EngineBuildError, match="no model card"):
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
    assert "--legacy-int8 needs --calib-data" in refused(onnx_path, "--legacy-int8")
    assert "only used with --legacy-int8" in refused(onnx_path, "--calib-data", tmp_path)
    assert "rgb/ and depth/" in refused(onnx_path, "--legacy-int8", "--calib-data", tmp_path)
    assert "must be positive" in refused(onnx_path, "--workspace-gb", "0")
    assert "file not found" in refused(tmp_path / "missing.onnx")
    assert refused(onnx_path, "--int8") == (
        "cen-train build-engine: error: --int8 is gone: an int8 ONNX model carries its precision "
        "(cen-train export CKPT -o model_int8.onnx --height H --width W --precision int8 "
        "--calib-data DIR); --legacy-int8 keeps TensorRT's calibrator on TensorRT 8.6-10.x")
    (tmp_path / "junk.onnx").write_bytes(b"\xff\x00 not protobuf")
    message = refused(tmp_path / "junk.onnx")
    assert "not an ONNX model" in message and len(message.splitlines()) == 1


# -- precision from the ONNX graph --------------------------------------------------------
def _toy_variant(path, toy, kind, card_precision, zero_type=TensorProto.INT8):
    """The toy model with its depth input through Q/DQ (``int8``) or float16 (``fp16``)."""
    model = onnx.load(str(toy))
    graph = model.graph
    if kind == "int8":
        graph.initializer.extend([helper.make_tensor("scale", TensorProto.FLOAT, [], [0.05]),
                                  helper.make_tensor("zero", zero_type, [], [0])])
        extra = [helper.make_node("QuantizeLinear", ["depth", "scale", "zero"], ["depth_q"]),
                 helper.make_node("DequantizeLinear", ["depth_q", "scale", "zero"], ["depth_x"])]
    else:
        extra = [helper.make_node("Cast", ["depth"], ["depth_h"], to=TensorProto.FLOAT16),
                 helper.make_node("Cast", ["depth_h"], ["depth_x"], to=TensorProto.FLOAT)]
    graph.node[0].input[0] = "depth_x"  # the Floor
    for i, node in enumerate(extra):
        graph.node.insert(i, node)
    card = json.loads({p.key: p.value for p in model.metadata_props}[METADATA_KEY])
    card["precision"] = card_precision
    del model.metadata_props[:]
    helper.set_model_props(model, {METADATA_KEY: json.dumps(card)})
    onnx.save(model, str(path))
    return path


def test_precision_comes_from_the_graph_and_must_match_the_card(tmp_path, toy_onnx_factory):
    toy = toy_onnx_factory(48, 64)
    assert load_engine_model(toy)[1] == "fp32"
    for kind in ("fp16", "int8"):
        card, precision = load_engine_model(_toy_variant(tmp_path / f"{kind}.onnx", toy, kind,
                                                         kind))
        assert precision == kind == card.precision
    wrong = _toy_variant(tmp_path / "wrong.onnx", toy, "int8", "fp32")
    with pytest.raises(EngineBuildError) as info:
        load_engine_model(wrong)
    assert str(info.value) == (f"{wrong}: the model card says precision fp32 but the graph is "
                               "int8")


def test_onnx_runtime_uint8_int8_model_names_the_export_route(tmp_path, toy_onnx_factory):
    path = _toy_variant(tmp_path / "ort_int8.onnx", toy_onnx_factory(48, 64), "int8", "int8",
                        zero_type=TensorProto.UINT8)
    with pytest.raises(EngineBuildError) as info:
        load_engine_model(path)
    assert str(info.value) == (
        f"{path}: not a valid engine model: TensorRT cannot parse DequantizeLinear(uint8); "
        "TensorRT cannot parse QuantizeLinear(uint8) (uint8 Q/DQ is ONNX Runtime's INT8 for "
        "CPUs; one INT8 model for both backends comes from cen-train export CKPT -o "
        "model_int8.onnx --height H --width W --precision int8 --calib-data DIR)")


def test_cli_builds_or_names_what_the_machine_lacks(repo_root, tmp_path, toy_onnx_factory):
    """With a GPU and TensorRT this builds the toy engine; without, one clean line (exactly
    the no-driver line on a machine with cuda-python but no NVIDIA driver, like CI)."""
    out = tmp_path / "toy.engine"
    result = _cli(repo_root, toy_onnx_factory(48, 64), "-o", out, "--cache-dir", tmp_path / "c")
    if result.returncode == 0:
        assert "trtexec --onnx=" in result.stdout
        assert out.stat().st_size > 0 and ModelCard.load_sidecar(out).input_size == [48, 64]
        return
    assert result.returncode == 2, result.stderr  # an error exit, not a crash by signal
    _assert_one_line_error(result, "no NVIDIA driver found", "no CUDA GPU found",
                           "cuda-python is not installed", "TensorRT is not installed",
                           "is older than cuda-python")
    assert not out.exists()
    expected = no_driver_message()
    if expected is not None:
        assert result.stderr.strip() == f"cen-train build-engine: error: {expected}"


def no_driver_message():
    """The exact refusal on a machine with cuda-python and no NVIDIA driver; None elsewhere."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        return None
    error, _ = cudart.cudaGetDeviceCount()
    if (error != cudart.cudaError_t.cudaErrorInsufficientDriver
            or cudart.cudaDriverGetVersion()[1] != 0):
        return None
    runtime = cudart.cudaRuntimeGetVersion()[1]
    return ("no NVIDIA driver found (cudaGetDeviceCount: cudaErrorInsufficientDriver, driver "
            f"version 0; cuda-python {metadata.version('cuda-bindings')}, CUDA "
            f"{runtime // 1000}.{runtime % 1000 // 10} runtime): TensorRT needs an NVIDIA GPU "
            "and its driver; use the ONNX model with ONNX Runtime instead")


# -- a TensorRT that cannot initialise CUDA -----------------------------------------------
def _builder_returning_nullptr(logger):
    """What ``tensorrt.Builder`` does where it cannot initialise CUDA (a CUDA 13 build on a
    CUDA 12 driver): pybind11 raises this for the null pointer the factory returned."""
    raise TypeError("pybind11::init(): factory function returned nullptr")


def test_builder_that_cannot_initialise_cuda_is_one_build_error():
    from types import SimpleNamespace

    from cen_perception.engines import tensorrt as trt_runtime
    from cen_training.deploy.tensorrt import new_builder

    stand_in = SimpleNamespace(Builder=_builder_returning_nullptr, __version__="10.13.3.9")
    with pytest.raises(EngineBuildError) as info:
        new_builder(stand_in, logger=None)
    driver = trt_runtime.driver_cuda_version(trt_runtime.import_cudart())
    assert str(info.value) == trt_runtime.cuda_init_failure(
        "trt.Builder failed", "10.13.3.9", trt_runtime.tensorrt_distribution(), driver)
    assert "\n" not in str(info.value) and "TensorRT 10.13.3.9 (" in str(info.value)
    built = SimpleNamespace(Builder=lambda logger: ("builder", logger), __version__="10.3.0")
    assert new_builder(built, logger="log") == ("builder", "log")
