"""``cen-train bench``: the table, the FLOP count, the memory measure. No timing assertions."""
import re
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

from cen_perception.model_card import ModelCard
from cen_training.benchmarks.inference import (
    BenchReport,
    BenchRow,
    count_gflop,
    load_frames,
    peak_memory,
    run_bench,
    sgemm_gflops,
    synthetic_frames,
)
from cen_training.errors import DatasetError
from cen_training.models import ModelConfig, build_model

H, W = 64, 64


def _export(module, shape, path):
    with pytest.warns(DeprecationWarning):  # the TorchScript exporter, as export.py uses
        torch.onnx.export(module.eval(), (torch.zeros(shape),), str(path), dynamo=False,
                          opset_version=17, input_names=["x"])
    return onnx.load(str(path))


def test_gflop_count_matches_a_hand_count(tmp_path):
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                        nn.MaxPool2d(2),
                        nn.Conv2d(8, 4, 1, bias=False),
                        nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=2))
    expected = (2 * 8 * 16 * 16 * 3 * 3 * 3    # conv 3->8, 3x3, 16x16 output
                + 8 * 16 * 16                  # relu: one per element
                + 8 * 8 * 8 * 2 * 2            # maxpool 2x2: window area per output element
                + 2 * 4 * 8 * 8 * 8            # conv 8->4, 1x1, 8x8 output
                + 2 * 4 * 4 * 4 * 2 * 3 * 3)   # grouped conv: 2 input channels per group, 4x4
    assert count_gflop(_export(net, (1, 3, 16, 16), tmp_path / "tiny.onnx")) * 1e9 == \
        pytest.approx(expected)


def test_gflop_count_of_matrix_products_and_resize():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8, 8])
    graph = helper.make_graph(
        [helper.make_node("Resize", ["x", "", "scales"], ["up"], mode="linear"),
         helper.make_node("Reshape", ["up", "shape"], ["flat"]),
         helper.make_node("MatMul", ["flat", "w"], ["y"]),
         helper.make_node("ArgMax", ["y"], ["labels"], axis=1)],
        "g", [x], [helper.make_tensor_value_info("labels", TensorProto.INT64, None)],
        initializer=[helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 2, 2]),
                     helper.make_tensor("shape", TensorProto.INT64, [2], [2, 256]),
                     helper.make_tensor("w", TensorProto.FLOAT, [256, 10], np.zeros(2560))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    expected = 4 * (2 * 16 * 16) + 2 * (2 * 10) * 256 + 2 * 10
    assert count_gflop(model) * 1e9 == pytest.approx(expected)


def test_sgemm_and_peak_memory_measures():
    assert sgemm_gflops(threads=1, size=256, repeats=1) > 0
    with peak_memory() as memory:
        block = np.ones(64 * 2 ** 20 // 8)  # 64 MiB, touched
        del block
    assert memory["mib"] is not None and memory["mib"] >= 60
    with peak_memory() as idle:
        pass
    assert idle["mib"] < 30


def test_frames_from_the_samples_layout(samples_dir):
    frames = dict((name, (rgb, depth)) for name, rgb, depth in load_frames(samples_dir, (H, W)))
    assert set(frames) == {"nyuv2_frame0", "esanet_kinect"}
    for rgb, depth in frames.values():
        assert rgb.shape == (H, W, 3) and rgb.dtype == np.uint8
        assert depth.shape == (H, W) and depth.dtype == np.float32
        assert depth.max() < 65.535  # the Kinect's invalid 65535 became 0
    assert 1.5 < frames["nyuv2_frame0"][1].min() < frames["nyuv2_frame0"][1].max() < 4  # metres
    synthetic = synthetic_frames((H, W), 2)
    assert len(synthetic) == 2 and synthetic[0][1].shape == (H, W, 3)
    assert not np.array_equal(synthetic[0][1], synthetic[1][1])
    with pytest.raises(DatasetError, match="no frames"):
        load_frames(samples_dir / "nyuv2_frame0", (H, W))


def test_bench_runs_every_row(samples_dir, tmp_path):
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="cen", backbone="resnet18", decoder="light",
                                    num_classes=5))
    # One thread: a shared test machine makes multi-threaded PyTorch crawl (spin-waits).
    report = run_bench(model, H, W, threads=1, warmup=0, iters=2, int8=True, fp16=True,
                       real_frames=load_frames(samples_dir, (H, W)), calib_count=2,
                       workdir=tmp_path, progress=False, sgemm_size=512)
    names = [row.name for row in report.rows]
    assert names == ["PyTorch training graph", "PyTorch fused graph",
                     "ONNX Runtime fp32 (fused export)", "ONNX Runtime fp16 (--precision fp16)",
                     "ONNX Runtime INT8 (--precision int8-ort)",
                     "ONNX Runtime INT8 (--precision int8)"]
    training, fused, fp32, fp16, int8_ort, int8 = report.rows
    for row in report.rows:
        assert len(row.latencies_ms) == 2 and min(row.latencies_ms) > 0
        assert row.p90_ms >= row.median_ms > 0
        assert row.peak_mib is None or row.peak_mib >= 0
    # Folding removes the BN arithmetic; the export is the folded graph; the other precisions
    # count the same operations as fp32.
    assert 0 < fused.gflop < training.gflop < 1.5 * fused.gflop
    assert fp32.gflop == fused.gflop == fp16.gflop
    assert int8.gflop == pytest.approx(fp32.gflop, rel=0.02)
    assert int8_ort.gflop == pytest.approx(fp32.gflop, rel=0.02)
    assert fused.agreement >= 0.999 and fp32.agreement >= 0.999 and fp16.agreement >= 0.99
    assert 0 <= int8.agreement <= 1 and 0 <= int8_ort.agreement <= 1 and report.sgemm_gflops > 0
    # The files are those `cen-train export --precision` writes.
    cards = {}
    for precision in ("", "_fp16", "_int8-ort", "_int8"):
        path = tmp_path / f"model_64x64{precision}.onnx"
        meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        cards[precision] = ModelCard.from_metadata(meta, str(path)).precision
    assert cards == {"": "fp32", "_fp16": "fp16", "_int8-ort": "int8", "_int8": "int8"}
    table = report.markdown()
    for name in names:
        assert f"| {name} |" in table
    assert "SGEMM ceiling" in table and "calibrated on 2 rendered synthetic scenes" in table
    # The Kinect sample's depth file is not in millimetres (median far beyond any indoor
    # camera's range): reported per frame, left out of the agreement column.
    names = [name for name, _, _ in load_frames(samples_dir, (H, W))]
    kinect, nyu = names.index("esanet_kinect"), names.index("nyuv2_frame0")
    for row in (int8, int8_ort):
        assert row.agreement == pytest.approx(row.frame_agreement[nyu])
        assert len(row.frame_agreement) == 2 and 0 <= row.frame_agreement[kinect] <= 1
        assert f"{row.name} labels per frame: " in table
    assert "Left out of the agreement" in table and "esanet_kinect (" in table


def test_markdown_columns():
    report = BenchReport("t", threads=2, sgemm_gflops=100.0, warmup=1, iters=3,
                         rows=[BenchRow("a", [10.0, 20.0, 30.0], 2.0, 5.0),
                               BenchRow("b", [5.0, 5.0, 5.0], 2.0, None, 0.995)])
    lines = report.markdown().splitlines()
    a = [c.strip() for c in lines[4].split("|")[1:-1]]
    b = [c.strip() for c in lines[5].split("|")[1:-1]]
    # median, p90, GFLOP, GFLOP/s, % SGEMM, MiB, speed, agreement
    assert a == ["a", "20.0", "28.0", "2.0", "100.0", "100%", "5", "1.00x", "-"]
    assert b == ["b", "5.0", "5.0", "2.0", "400.0", "400%", "n/a", "4.00x", "99.50%"]


def test_cli_writes_the_table_and_refuses_bad_options(tmp_path, samples_dir):
    out = tmp_path / "table.md"
    cli = [sys.executable, "-m", "cen_training.cli", "bench"]
    proc = subprocess.run(cli + ["--arch", "single", "--backbone", "resnet18", "--decoder", "light",
                                 "--num-classes", "3", "--height", "32", "--width", "64",
                                 "--iters", "1", "--warmup", "0", "--threads", "1",
                                 "--real-data", str(samples_dir), "--out", str(out),
                                 "--no-progress"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    table = out.read_text()
    assert table in proc.stdout
    rows = [line for line in table.splitlines() if re.match(r"\| (PyTorch|ONNX)", line)]
    assert len(rows) == 3  # no --int8
    assert "single resnet18, light decoder, depth, 3 classes, 32x64 (fresh weights)" in table
    for args, message in (
            ([], "either CKPT or --arch"),
            (["--arch", "cen", "--height", "30", "--width", "64"], "multiples of 32"),
            ([str(tmp_path / "missing.pt"), "--height", "32", "--width", "32"], "not found"),
            (["--arch", "cen", "--height", "32", "--width", "32", "--calib-data", str(tmp_path)],
             "needs --int8"),
            (["--arch", "cen", "--height", "32", "--width", "32", "--real-data",
              str(tmp_path / "nowhere")], "folder not found")):
        if not args:
            args = ["--height", "32", "--width", "32"]
        proc = subprocess.run(cli + args, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2
        assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_exported_graph_stays_in_fast_operators(tmp_path):
    """The folded export keeps ONNX Runtime in its blocked layout: exchange as depthwise 1x1
    convolutions (no Where), depth fed once to a 1-channel stem (no Expand), and it still
    reproduces the training graph."""
    from cen_training.deploy.export import export_and_verify

    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="cen", backbone="resnet18", decoder="light",
                                    num_classes=5))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # some exchange-BN gammas under the threshold, as after training
        for block in model.blocks():
            for m in range(2):
                gamma = block.exchange_bn[m].weight
                gamma.mul_((torch.rand(gamma.shape, generator=generator) > 0.2).float())
    assert model.slim_fraction() > 0.1
    proto, report = export_and_verify(model, tmp_path / "m.onnx", H, W)
    assert report.ok
    ops = [n.op_type for n in proto.graph.node]
    assert "Where" not in ops and "Expand" not in ops
    inits = {t.name: t for t in proto.graph.initializer}
    for node in proto.graph.node:  # the exporter shares equal weights through Identity
        if node.op_type == "Identity" and node.input[0] in inits:
            inits[node.output[0]] = inits[node.input[0]]
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    groups = [next((a.i for a in n.attribute if a.name == "group"), 1) for n in convs]
    channels = [b.exchange_bn[0].num_features for b in model.blocks()]
    # Every block exchanges: per branch one depthwise conv for its own and one for the other's.
    assert sorted(g for g in groups if g > 1) == sorted(channels * 4)
    stem_inputs = sorted(inits[n.input[1]].dims[1] for n in convs
                         if inits[n.input[1]].dims[-1] == 7)
    assert stem_inputs == [1, 3]  # depth once, RGB
