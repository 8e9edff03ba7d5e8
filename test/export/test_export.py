"""Export to the engine contract: every arch, parity with PyTorch, metadata, errors."""
import subprocess
import sys

import cv2
import numpy as np
import onnx
import pytest
import torch

from cen_perception.engines import open_engine
from cen_perception.model_card import METADATA_KEY, ModelCard
from cen_training.benchmarks.inference import synthetic_frames
from cen_training.card import default_card
from cen_training.checkpoint import flat_decoder_keys, load_model, save_checkpoint
from cen_training.cli import main as cli_main
from cen_training.deploy.export import MIN_PRECISION_AGREEMENT, export_and_verify, verify_parity
from cen_training.deploy.fused import fuse
from cen_training.deploy.onnx_ops import check_engine_contract, check_tensorrt_ops
from cen_training.errors import ConfigError, ExportError
from cen_training.models import ModelConfig, build_model

H, W = 64, 96


@pytest.fixture
def make_model(trained_like):
    def make(arch, modalities=("rgb", "depth"), backbone="resnet18", decoder="light", classes=5):
        torch.manual_seed(0)
        model = trained_like(build_model(ModelConfig(
            arch=arch, backbone=backbone, decoder=decoder, modalities=list(modalities),
            num_classes=classes)))
        model.card = default_card(classes)
        return model
    return make


def _sample_frames(samples_dir, h, w):
    frames = []
    for name, rgb_file in (("nyuv2_frame0", "rgb.jpg"), ("esanet_kinect", "rgb.png")):
        bgr = cv2.imread(str(samples_dir / name / rgb_file), cv2.IMREAD_COLOR)
        depth_mm = cv2.imread(str(samples_dir / name / "depth.png"), cv2.IMREAD_UNCHANGED)
        rgb = cv2.cvtColor(cv2.resize(bgr, (w, h), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
        depth_mm = cv2.resize(depth_mm, (w, h), interpolation=cv2.INTER_NEAREST)
        depth = np.where(depth_mm == 65535, 0, depth_mm).astype(np.float32) / 1000.0
        frames.append((name, np.ascontiguousarray(rgb), depth))
    return frames


@pytest.mark.parametrize("arch,modalities", [
    ("cen", ("rgb", "depth")), ("asymfusion", ("rgb", "depth")), ("shared", ("rgb", "depth")),
    ("single", ("depth",)), ("early", ("rgb", "depth")), ("late", ("rgb", "depth")),
    ("cen", ("rgb", "depth", "normals")),
])
def test_every_arch_exports_and_matches(arch, modalities, tmp_path, samples_dir, make_model):
    model = make_model(arch, modalities)
    path = tmp_path / f"{arch}.onnx"
    proto, report = export_and_verify(model, path, H, W, confidence=True, logits=True,
                                      real_frames=_sample_frames(samples_dir, H, W))
    assert path.is_file() and not (tmp_path / f"{arch}.onnx.partial").exists()
    assert report.ok and len(report.frames) == 4
    assert min(report.label_agreement) >= 0.999 and max(report.logit_error) < 1e-4
    assert check_engine_contract(proto) == [] and check_tensorrt_ops(proto) == []
    assert proto.opset_import[0].version == 17
    outputs = [o.name for o in proto.graph.output]
    branches = ["rgb_depth"] if arch == "early" else list(modalities)
    assert outputs == (["labels", "confidence"] + [f"logits_{b}" for b in branches]
                       + ["logits_ensemble"])


def test_fused_graph_has_no_batchnorm_and_no_mask_indexing(tmp_path, make_model):
    model = make_model("cen")
    proto, _ = export_and_verify(model, tmp_path / "m.onnx", H, W)
    ops = {n.op_type for n in proto.graph.node}
    assert "BatchNormalization" not in ops
    assert not ops & {"NonZero", "Compress", "ScatterND", "GatherND"}
    # Inputs/outputs static, as the contract wants.
    for value in list(proto.graph.input) + list(proto.graph.output):
        assert all(d.dim_value > 0 for d in value.type.tensor_type.shape.dim)


def test_model_card_round_trip_through_the_runtime(tmp_path, make_model):
    model = make_model("cen")
    model.card["class_names"] = [f"thing{i}" for i in range(5)]
    model.card["metrics"] = {"miou": 0.5}
    path = tmp_path / "m.onnx"
    export_and_verify(model, path, H, W, confidence=True)
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    card = ModelCard.from_json(meta[METADATA_KEY])
    assert card.arch == "cen" and card.backbone == "resnet18" and card.decoder == "light"
    assert card.input_size == [H, W] and card.class_names[3] == "thing3"
    assert card.metrics == {"miou": 0.5} and card.outputs == ["labels", "confidence"]
    assert card.normalization["depth"]["scale"] == pytest.approx(0.2)
    engine = open_engine(path)  # the runtime accepts it: card and graph agree
    rgb = np.zeros((H, W, 3), np.uint8)
    depth = np.ones((H, W), np.float32)
    labels, conf = engine.infer(rgb, depth)
    with torch.no_grad():
        want = model(torch.from_numpy(rgb[None]), torch.from_numpy(depth[None]))[-1]
        want = torch.nn.functional.interpolate(want, size=(H, W), mode="bilinear",
                                               align_corners=False).argmax(1)[0].numpy()
    assert (labels == want).mean() >= 0.999
    assert conf.shape == (H, W) and (conf > 0).all() and (conf <= 1.0 + 1e-6).all()


def test_parity_check_catches_a_different_model(tmp_path, make_model):
    model = make_model("cen")
    path = tmp_path / "m.onnx"
    export_and_verify(model, path, H, W, logits=True)
    other = make_model("cen")
    with torch.no_grad():
        other.decoder.clf_conv.module.bias.add_(torch.arange(5.0))  # shifts the argmax
    report = verify_parity(other, path,
                           [("x", np.zeros((H, W, 3), np.uint8), np.ones((H, W), np.float32))])
    assert not report.ok


def test_export_cli_and_official_import_end_to_end(tmp_path, trained_like):
    # A checkpoint in the official layout -> import-official -> export -> ONNX Runtime.
    ref = trained_like(build_model(ModelConfig(arch="cen", backbone="resnet50", num_classes=7)))
    flat = flat_decoder_keys(ref)  # the official code keeps the decoder's layers beside the encoder
    torch.save({"segmenter": {"module." + flat.get(k, k): v for k, v in ref.state_dict().items()}},
               tmp_path / "official.pth")
    cli = [sys.executable, "-m", "cen_training.cli"]
    proc = subprocess.run(cli + ["import-official", "--arch", "cen", "--backbone", "resnet50",
                                 "--num-classes", "7", str(tmp_path / "official.pth"),
                                 str(tmp_path / "ours.pt")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run(cli + ["export", str(tmp_path / "ours.pt"),
                                 "-o", str(tmp_path / "m.onnx"),
                                 "--height", "64", "--width", "64", "--logits"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "labels agree" in proc.stdout
    session_out = open_engine(tmp_path / "m.onnx").session.run(
        ["logits_ensemble"], {"rgb": np.full((1, 64, 64, 3), 128, np.uint8),
                              "depth": np.full((1, 64, 64), 2.0, np.float32)})[0]
    with torch.no_grad():
        want = ref(torch.full((1, 64, 64, 3), 128, dtype=torch.uint8),
                   torch.full((1, 64, 64), 2.0))[-1]
    assert np.allclose(session_out, want.numpy(), atol=1e-4 * float(want.abs().max()))


def test_export_errors_are_one_line(tmp_path, make_model):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"PK\x03\x04 not really a checkpoint")
    proc = subprocess.run([sys.executable, "-m", "cen_training.cli", "export", str(bad), "-o",
                           str(tmp_path / "m.onnx"), "--height", "64", "--width", "64"],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1
    assert "not a readable checkpoint" in proc.stderr
    assert not (tmp_path / "m.onnx").exists()
    model = make_model("cen")
    save_checkpoint(tmp_path / "ok.pt", model, model.config, model.card)
    with pytest.raises(ConfigError, match="multiples of 32"):
        export_and_verify(load_model(tmp_path / "ok.pt"), tmp_path / "m.onnx", 60, 64)


def test_fused_graph_matches_training_graph_in_torch(make_model):
    for arch in ("cen", "asymfusion"):
        model = make_model(arch, backbone="resnet50", decoder="official")
        rgb = torch.randint(0, 256, (1, H, W, 3), dtype=torch.uint8)
        depth = torch.rand(1, H, W) * 5
        with torch.no_grad():
            for a, b in zip(model(rgb, depth), fuse(model)(rgb, depth)):
                assert torch.allclose(a, b, atol=1e-4 * float(a.abs().max()))


def _write_dataset(root, frames):
    """Frames in the generic dataset layout (rgb/*.png, depth/*.png in 16-bit millimetres)."""
    (root / "rgb").mkdir(parents=True)
    (root / "depth").mkdir()
    for name, rgb, depth in frames:
        cv2.imwrite(str(root / "rgb" / f"{name}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(root / "depth" / f"{name}.png"), np.round(depth * 1000).astype(np.uint16))
    return root


@pytest.mark.parametrize("precision", ["fp16", "int8", "int8-ort"])
def test_precision_export_agrees_with_fp32_and_records_its_precision(
        precision, tmp_path, make_model, varied_model, real_frames):
    # An untrained model's INT8 labels sit on near ties wherever its labels vary, so the INT8
    # exports go through with labels that vary little; the INT8 arithmetic itself is checked
    # in test_quantize (and the refusal below).
    model = varied_model() if precision == "fp16" else make_model("cen")
    path = tmp_path / f"{precision}.onnx"
    calib = synthetic_frames((H, W), 4)
    proto, report = export_and_verify(model, path, H, W, confidence=True, precision=precision,
                                      calib_frames=calib, precision_frames=real_frames(H, W))
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no partial files left
    assert report.ok and report.precision.ok
    assert report.precision.agreement >= MIN_PRECISION_AGREEMENT[precision]
    assert report.precision.minimum == MIN_PRECISION_AGREEMENT[precision]
    on_disk = onnx.load(str(path))
    card = ModelCard.from_metadata({p.key: p.value for p in on_disk.metadata_props}, "x")
    assert card.precision == {"int8-ort": "int8"}.get(precision, precision)
    io = {v.name: v.type.tensor_type.elem_type
          for v in list(on_disk.graph.input) + list(on_disk.graph.output)}
    assert io == {"rgb": onnx.TensorProto.UINT8, "depth": onnx.TensorProto.FLOAT,
                  "labels": onnx.TensorProto.UINT8, "confidence": onnx.TensorProto.FLOAT}
    assert check_engine_contract(proto) == []
    # fp16 and int8 are for TensorRT too; int8-ort only for ONNX Runtime.
    assert (check_tensorrt_ops(proto) == []) == (precision != "int8-ort")
    ops = {n.op_type for n in proto.graph.node}
    assert ("QuantizeLinear" in ops) == precision.startswith("int8")
    assert "overall" in report.precision.summary()


def test_precision_export_that_disagrees_is_refused(tmp_path, varied_model, real_frames):
    # An untrained model with varied labels, calibrated on rendered scenes, checked on real
    # frames: far below 98%.
    model = varied_model()
    with pytest.raises(ExportError) as info:
        export_and_verify(model, tmp_path / "m.onnx", H, W, precision="int8",
                          calib_frames=synthetic_frames((H, W), 2),
                          precision_frames=real_frames(H, W))
    agreement = float(str(info.value).split(" labels on ")[1].split("%")[0])
    assert str(info.value) == (
        f"{tmp_path / 'm.onnx'}: the int8 model gives the fp32 model's labels on "
        f"{agreement:.2f}% of pixels, below the 98.0% required (calibrate on more frames like "
        "these, or try --calib-method percentile; --min-agreement PCT writes it anyway, to "
        "inspect)")
    assert list(tmp_path.iterdir()) == []
    # The same export with a bar below its agreement is written, its figures kept.
    _, report = export_and_verify(model, tmp_path / "m.onnx", H, W, precision="int8",
                                  calib_frames=synthetic_frames((H, W), 2),
                                  precision_frames=real_frames(H, W),
                                  min_agreement=(agreement - 1) / 100)
    assert (tmp_path / "m.onnx").is_file() and report.precision.ok
    assert report.precision.minimum == pytest.approx((agreement - 1) / 100)
    assert 100 * report.precision.agreement == pytest.approx(agreement, abs=0.005)
    assert f"(need {agreement - 1:.1f}%)" in report.precision.summary()
    with pytest.raises(ConfigError, match="needs calibration frames"):
        export_and_verify(model, tmp_path / "m.onnx", H, W, precision="int8")
    with pytest.raises(ConfigError, match="precision must be one of"):
        export_and_verify(model, tmp_path / "m.onnx", H, W, precision="int4")


@pytest.mark.parametrize("precision,share,message", [
    ("fp32", 0.5, "--min-agreement sets the bar of a reduced-precision export (--precision "
                  "fp16, int8 or int8-ort); an fp32 export has none"),
    ("int8", 0.0, "--min-agreement must be a percentage above 0 and at most 100, got 0"),
    ("fp16", 1.5, "--min-agreement must be a percentage above 0 and at most 100, got 150"),
])
def test_min_agreement_out_of_range_is_refused(precision, share, message):
    from cen_training.deploy.export import check_min_agreement

    with pytest.raises(ConfigError) as info:
        check_min_agreement(precision, share)
    assert str(info.value) == message
    check_min_agreement("int8", 1.0)
    check_min_agreement("fp32", None)


def test_export_cli_precision(tmp_path, make_model):
    model = make_model("cen")
    save_checkpoint(tmp_path / "ok.pt", model, model.config, model.card)
    cli = [sys.executable, "-m", "cen_training.cli", "export", str(tmp_path / "ok.pt"),
           "--height", "64", "--width", "64"]
    proc = subprocess.run(cli + ["-o", str(tmp_path / "m.onnx"), "--precision", "int8"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "--precision int8 needs --calib-data DIR" in proc.stderr
    assert not (tmp_path / "m.onnx").exists()
    proc = subprocess.run(cli + ["--help"], capture_output=True, text=True)
    assert "int8-ort" in proc.stdout and "fp16 99.5%" in proc.stdout and "int8 98.0%" in proc.stdout
    assert "--min-agreement PCT" in proc.stdout
    assert "(default: fp16 99.5, int8 and int8-ort 98)" in " ".join(proc.stdout.split())
    proc = subprocess.run(cli + ["-o", str(tmp_path / "m.onnx"), "--min-agreement", "90"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr == (
        "cen-train export: error: --min-agreement sets the bar of a reduced-precision export "
        "(--precision fp16, int8 or int8-ort); an fp32 export has none\n")
    calib = _write_dataset(tmp_path / "calib", synthetic_frames((64, 64), 3))
    proc = subprocess.run(cli + ["-o", str(tmp_path / "m.onnx"), "--precision", "int8",
                                 "--calib-data", str(calib), "--calib-frames", "2",
                                 "--min-agreement", "97.5"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "int8 labels against the fp32 graph's" in proc.stdout and "(need 97.5%)" in proc.stdout
    assert ("note: written with --min-agreement 97.5, below the default 98.0%; check its labels "
            "before deploying it") in proc.stdout
    assert "calibrated on 2 frames" in proc.stdout
    card = open_engine(tmp_path / "m.onnx").card
    assert card.precision == "int8"


def test_a_checkpoint_whose_card_names_its_dataset_in_words_exports(tmp_path, make_model):
    model = make_model("cen")
    save_checkpoint(tmp_path / "ok.pt", model, model.config, {**model.card, "dataset": "lab"})
    assert cli_main(["export", str(tmp_path / "ok.pt"), "-o", str(tmp_path / "m.onnx"),
                     "--height", "64", "--width", "64"]) == 0
    assert (tmp_path / "m.onnx").is_file()
