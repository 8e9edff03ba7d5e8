"""The translation loop (files, exact resume, torchrun with gloo), and the translate eval /
export and bench-translation commands, on tiny generators."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from cen_training.checkpoint import load_checkpoint, load_model
from cen_training.cli import main as cli_main
from cen_training.translation.train import TranslateConfig, train_translation

TINY = ["--size", "32", "--ngf", "4", "--ndf", "4", "--workers", "0", "--no-progress"]


pytestmark = pytest.mark.usefixtures("one_cpu_thread")


@pytest.fixture(scope="module")
def translation_data(tmp_path_factory):
    """6 training and 3 validation scenes of 36x36 (the 32 crop's 286/256 resize) with the
    synthetic translation modalities; treat as read-only."""
    from cen_training.data.synthetic import write_dataset
    from cen_training.translation.synthetic_modalities import write_translation_modalities
    root = write_dataset(tmp_path_factory.mktemp("translation") / "data", 6, 3, 36, 36,
                         progress=False)
    write_translation_modalities(root, progress=False)
    return root


def tiny_config(data, out, **kw):
    defaults = dict(data=str(data), out=str(out), inputs=["shading", "edge_texture"],
                    target="rgb", size=32, ngf=4, ndf=4, epochs=2, val_every=1, workers=0,
                    progress=False, pictures=2)
    return TranslateConfig(**{**defaults, **kw})


@pytest.fixture(scope="module")
def trained_run(translation_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    assert cli_main(["translate", "train", "--data", str(translation_data), "--out", str(out),
                     "--inputs", "shading", "edge_texture", "--target", "rgb", "--epochs", "2",
                     "--val-every", "1", "--lamda", "5", "--pictures", "2", *TINY]) == 0
    return out


def test_training_writes_checkpoints_logs_and_pictures(trained_run):
    ckpt = load_checkpoint(trained_run / "last.pt")
    assert ckpt["task"] == "translation" and (ckpt["epoch"], ckpt["step"]) == (2, 12)
    assert set(ckpt["best_scores"]) >= {"shading", "edge_texture", "ensemble"}
    assert (trained_run / "best.pt").is_file()
    rows = list(csv.DictReader(open(trained_run / "metrics.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"] and float(rows[1]["ensemble_psnr"]) > 0
    grids = sorted((trained_run / "pictures").glob("*.png"))
    assert [g.name for g in grids] == ["epoch_0001.png", "epoch_0002.png"]
    import cv2
    grid = cv2.imread(str(grids[0]))
    # 2 rows; columns: 2 inputs, 2 branches, the ensemble, the target.
    assert grid.shape == (2 * 32, 6 * 32, 3)
    assert list((trained_run / "tensorboard").glob("events.*"))
    model = load_model(trained_run / "last.pt")
    # The sparsity term (lamda 5 here) dominates the gradient of the penalised halves of the
    # exchange INs, so Adam (lr 2e-4) took them down by the learning rate at each of 12 steps.
    shrunk = torch.full((4,), 1 - 12 * 2e-4)
    torch.testing.assert_close(model.conv2.insnorm_conv[0].weight.detach()[:4], shrunk,
                               atol=2e-5, rtol=0)
    torch.testing.assert_close(model.conv2.insnorm_conv[1].weight.detach()[4:], shrunk,
                               atol=2e-5, rtol=0)


def test_resumed_run_ends_exactly_like_an_uninterrupted_one(translation_data, tmp_path):
    straight = tmp_path / "straight"
    train_translation(tiny_config(translation_data, straight))
    split = tmp_path / "split"
    train_translation(tiny_config(translation_data, split, epochs=1))
    train_translation(tiny_config(translation_data, split, resume=True))
    a, b = load_checkpoint(straight / "last.pt"), load_checkpoint(split / "last.pt")
    assert (b["epoch"], b["step"]) == (2, 12)
    for key in ("model", "discriminator"):
        assert all(torch.equal(v, b[key][k]) for k, v in a[key].items()), key
    assert len(list(open(split / "metrics.csv"))) == 3  # header and two epochs


def test_eval_cli_writes_the_report_and_pictures(trained_run, translation_data, tmp_path,
                                                 capsys):
    report = tmp_path / "report.json"
    assert cli_main(["translate", "eval", str(trained_run / "last.pt"), "--data",
                     str(translation_data), "--out", str(report), "--pictures",
                     str(tmp_path / "pics"), "--workers", "0", "--no-progress"]) == 0
    scores = json.loads(report.read_text())
    assert set(scores) == {"shading", "edge_texture", "ensemble"}
    assert set(scores["ensemble"]) == {"l1", "rmse", "psnr", "ssim"}
    assert "| ensemble |" in capsys.readouterr().out
    assert len(list((tmp_path / "pics").glob("*.png"))) == 3


def test_export_gives_uint8_images_that_onnx_runtime_reproduces(trained_run, tmp_path, capsys):
    path = tmp_path / "translator.onnx"
    assert cli_main(["translate", "export", str(trained_run / "last.pt"), "-o", str(path)]) == 0
    assert "within 1 grey level" in capsys.readouterr().out
    proto = onnx.load(str(path))
    assert [i.name for i in proto.graph.input] == ["input0", "input1"]
    card = json.loads({p.key: p.value for p in proto.metadata_props}[
        "cen_perception.translation_card"])
    assert card["inputs"] == {"input0": "shading", "input1": "edge_texture"}
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {f"input{m}": rng.integers(0, 256, (1, 32, 32, 3), dtype=np.uint8) for m in (0, 1)}
    image = session.run(None, feeds)[0]
    assert image.dtype == np.uint8 and image.shape == (1, 32, 32, 3)
    model = load_model(trained_run / "last.pt")
    with torch.no_grad():
        want = model(*[torch.from_numpy(feeds[f"input{m}"]) for m in (0, 1)])[-1]
    want = ((want + 1) * 127.5).round().clamp(0, 255).permute(0, 2, 3, 1).numpy()
    assert np.abs(image.astype(int) - want.astype(int)).max() <= 1


def test_a_segmentation_checkpoint_is_refused_in_one_line(tmp_path, capsys):
    from cen_training.checkpoint import save_checkpoint
    from cen_training.models import ModelConfig, build_model
    config = ModelConfig(arch="single", backbone="resnet18", decoder="light",
                         modalities=["rgb"], num_classes=3)
    path = save_checkpoint(tmp_path / "seg.pt", build_model(config), config, {})
    assert cli_main(["translate", "export", str(path), "-o", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "a segmentation checkpoint, not a translation one" in err[0]


def test_a_bad_option_is_one_line(translation_data, tmp_path, capsys):
    code = cli_main(["translate", "train", "--data", str(translation_data), "--out",
                     str(tmp_path / "r"), "--inputs", "shading", "edge_texture", "--size", "48",
                     "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "power of two" in err[0]


def test_two_gloo_processes_under_torchrun_agree(translation_data, tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "cen_training.cli", "translate", "train", "--data", str(translation_data),
         "--out", str(out), "--inputs", "shading", "edge_texture", "--epochs", "1",
         "--batch-size", "2", *TINY],
        capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "2 process(es)" in result.stdout
    assert "parameters identical on all 2 processes" in result.stdout
    ckpt = load_checkpoint(out / "last.pt")
    assert (ckpt["epoch"], ckpt["step"]) == (1, 3)  # 6 samples, batch 2 over 2 processes


def test_bench_translation_prints_one_table(tmp_path, capsys):
    out = tmp_path / "bench"
    assert cli_main(["bench-translation", "--out", str(out), "--steps", "2", "--size", "32",
                     "--ngf", "4", "--ndf", "4", "--num-train", "3", "--num-val", "2",
                     "--models", "cen", "single-shading", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "| CEN (channel exchange) | **ensemble** |" in text
    assert "| shading only | **shading** |" in text
    assert "not the official generator" in text and "exchanged" in text
    results = json.loads((out / "results.json").read_text())["results"]
    assert results["cen"]["steps"] == 2 and 0 <= results["cen"]["exchanged_fraction"] <= 1
