"""The training loop, resuming, torchrun with gloo, and the eval / bench-fusion commands."""
import csv
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from cen_training.checkpoint import load_checkpoint, load_model
from cen_training.cli import main as cli_main
from cen_training.data import RGBDSegmentationDataset
from cen_training.data.datasets import training_depth_range
from cen_training.errors import ConfigError, DatasetError
from cen_training.models import build_model
from cen_training.segmentation.train import TrainConfig, segmentation_loss, train

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


def tiny_config(data, out, **overrides) -> TrainConfig:
    """CEN on resnet18 with the light decoder, 64 x 64 crops, 2 steps per epoch."""
    settings = dict(data=str(data), out=str(out), arch="cen", backbone="resnet18",
                    decoder="light", stages=1, epochs=[1], batch_size=4, crop=64,
                    scale_range=(0.75, 1.25), optimizer="adam", lr_enc=[2e-3], lr_dec=[2e-3],
                    workers=0, progress=False)
    settings.update(overrides)
    return TrainConfig(**settings)


def mean_nll(model, dataset) -> float:
    """Mean segmentation loss (no penalty) of every output over a whole dataset."""
    model.eval()
    with torch.no_grad():
        batch = torch.utils.data.default_collate([dataset[i] for i in range(len(dataset))])
        outputs = model(batch["rgb"], batch["depth"])
        return float(segmentation_loss(outputs, batch["labels"], torch.zeros(()), 0.0))


def penalised_and_free_gammas(model):
    """|gamma| of the exchange BNs: the portions under the L1 penalty, and the rest."""
    penalised, free = [], []
    for block in model.blocks():
        for m in range(2):
            gamma = block.exchange_bn[m].weight.detach().abs()
            half = gamma.numel() // 2
            part = slice(0, half) if m == 0 else slice(half, None)
            rest = slice(half, None) if m == 0 else slice(0, half)
            penalised.append(gamma[part])
            free.append(gamma[rest])
    return torch.cat(penalised), torch.cat(free)


@pytest.fixture(scope="module")
def trained_run(tiny_dataset, tmp_path_factory):
    """Five epochs of CEN with a strong L1 weight; returns the run folder."""
    out = tmp_path_factory.mktemp("run") / "cen"
    epochs = []
    train(tiny_config(tiny_dataset, out, epochs=[5], lamda=1e-2, batch_size=2),
          on_epoch_end=epochs.append)
    return out, epochs


def test_training_reduces_the_loss_and_shrinks_the_penalised_scaling_factors(
        trained_run, tiny_dataset):
    out, epochs = trained_run
    assert [e["epoch"] for e in epochs] == [1, 2, 3, 4, 5] and epochs[-1]["step"] == 20
    trained = load_model(out / "last.pt")
    torch.manual_seed(0)  # the run's seed: the same initial weights
    initial = build_model(trained.config)
    data = RGBDSegmentationDataset(tiny_dataset, "train")
    assert mean_nll(trained, data) < 0.9 * mean_nll(initial, data)
    penalised, free = penalised_and_free_gammas(trained)
    assert torch.all(penalised_and_free_gammas(initial)[0] == 1.0)
    assert penalised.mean() < 0.985 and penalised.mean() < free.mean() - 0.01

    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5]
    assert {"loss", "lr_enc", "lr_dec", "slim_fraction", "rgb_miou", "depth_miou",
            "ensemble_miou"} <= set(rows[0])
    assert float(rows[0]["lr_dec"]) == 2e-3
    card = load_checkpoint(out / "best.pt")["card"]
    assert card["class_names"] == ["wall", "floor", "poster", "relief", "box"]
    assert len(card["palette"]) == 5 and card["dataset"]["name"] == "synthetic-rgbd"
    assert set(card["metrics"]) >= {"epoch", "ensemble", "rgb", "depth"}
    assert any((out / "tensorboard").iterdir())
    # The official recipe: no depth dropout, recorded as such.
    assert card["training"]["modality_dropout"] == 0.0
    assert load_checkpoint(out / "best.pt")["train_config"]["modality_dropout"] == 0.0
    # The training split's depth range, computed at the start.
    expected = training_depth_range(RGBDSegmentationDataset(tiny_dataset, "train"))
    assert len(expected) == 2 and card["depth_range_m"] == expected


def test_export_carries_the_training_depth_range_into_the_model_card(trained_run, tmp_path):
    from cen_perception.model_card import ModelCard
    from cen_training.deploy.export import export_onnx
    out, _ = trained_run
    proto = export_onnx(load_model(out / "last.pt"), tmp_path / "model.onnx", 64, 64)
    card = ModelCard.from_metadata({p.key: p.value for p in proto.metadata_props}, "model.onnx")
    assert card.depth_range_m == load_checkpoint(out / "last.pt")["card"]["depth_range_m"]
    assert 0 < card.depth_range_m[0] < card.depth_range_m[1]


def test_resumed_run_ends_exactly_like_an_uninterrupted_one(tiny_dataset, tmp_path):
    # Two stages (2 + 1 epochs), interrupted after the first epoch, inside stage 1; with depth
    # dropout, whose draws must continue where they left off too.
    settings = dict(stages=2, epochs=[2, 1], lr_enc=[2e-3, 1e-3], lr_dec=[2e-3, 1e-3],
                    modality_dropout=0.5)
    train(tiny_config(tiny_dataset, tmp_path / "whole", **settings))

    def interrupt(state):
        if state["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(tiny_dataset, tmp_path / "parts", **settings), on_epoch_end=interrupt)
    assert load_checkpoint(tmp_path / "parts" / "last.pt")["epoch"] == 1
    with pytest.raises(ConfigError, match="already holds a run"):
        train(tiny_config(tiny_dataset, tmp_path / "parts", **settings))
    train(tiny_config(tiny_dataset, tmp_path / "parts", resume=True, **settings))

    whole = load_checkpoint(tmp_path / "whole" / "last.pt")
    parts = load_checkpoint(tmp_path / "parts" / "last.pt")
    assert (parts["epoch"], parts["step"], parts["stage"]) == (whole["epoch"], whole["step"], 1)
    assert whole["model"].keys() == parts["model"].keys()
    for key, value in whole["model"].items():
        assert torch.equal(value, parts["model"][key]), key
    for whole_opt, parts_opt in zip(whole["optimizers"], parts["optimizers"]):
        assert whole_opt["param_groups"] == parts_opt["param_groups"]
        for index, state in whole_opt["state"].items():
            for name, value in state.items():
                assert torch.equal(value, parts_opt["state"][index][name]), (index, name)
    with open(tmp_path / "parts" / "metrics.csv", newline="") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2, 3]


def test_init_from_a_checkpoint_fine_tunes_its_weights(trained_run, tiny_dataset, tmp_path):
    source, _ = trained_run
    # Zero learning rates: the run must end with exactly the weights it started from.
    train(tiny_config(tiny_dataset, tmp_path / "tuned", init=str(source / "last.pt"),
                      lr_enc=[0.0], lr_dec=[0.0]))
    start = load_checkpoint(source / "last.pt")["model"]
    tuned = load_checkpoint(tmp_path / "tuned" / "last.pt")
    assert tuned["train_config"]["freeze_bn"] is True  # pretrained weights: BN stats frozen
    for key, value in start.items():
        assert torch.equal(value, tuned["model"][key]), key


def test_modality_dropout_1_trains_without_ever_seeing_depth(tiny_dataset, tiny_dataset_copy,
                                                             tmp_path):
    # The copy's training depth is different everywhere (and further away).
    for path in (tiny_dataset_copy / "depth").glob("train_*.png"):
        depth = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        cv2.imwrite(str(path), np.where(depth > 0, depth + 1500, 0)[::-1].astype(np.uint16))
    runs = {}
    for name, data, dropout in (("original", tiny_dataset, 1.0),
                                ("changed", tiny_dataset_copy, 1.0),
                                ("changed_seen", tiny_dataset_copy, 0.0)):
        train(tiny_config(data, tmp_path / name, modality_dropout=dropout))
        runs[name] = load_checkpoint(tmp_path / name / "last.pt")
    original, changed, seen = runs["original"], runs["changed"], runs["changed_seen"]
    # Depth blanked in every sample: what it held cannot matter to the weights...
    for key, value in original["model"].items():
        assert torch.equal(value, changed["model"][key]), key
    # ...which it does when the network sees it.
    assert any(not torch.equal(value, seen["model"][key])
               for key, value in original["model"].items())
    assert original["train_config"]["modality_dropout"] == 1.0
    assert original["card"]["training"]["modality_dropout"] == 1.0
    assert changed["card"]["depth_range_m"] == pytest.approx(
        [v + 1.5 for v in original["card"]["depth_range_m"]], abs=1e-9)


def test_modality_dropout_needs_a_depth_input(tiny_dataset, tmp_path, capsys):
    code = cli_main(["train", "--data", str(tiny_dataset), "--out", str(tmp_path / "run"),
                     "--arch", "single", "--modalities", "rgb", "--backbone", "resnet18",
                     "--modality-dropout", "0.3", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "blanks the depth input" in err[0]
    assert not (tmp_path / "run" / "last.pt").exists()


def test_a_broken_sample_stops_training_before_it_starts(tiny_dataset_copy, tmp_path):
    (tiny_dataset_copy / "labels" / "val_00001.png").write_bytes(b"")
    (tiny_dataset_copy / "labels" / "val_00001.png").unlink()
    with pytest.raises(DatasetError, match="sample val_00001: labels file"):
        train(tiny_config(tiny_dataset_copy, tmp_path / "run"))
    assert not (tmp_path / "run" / "last.pt").exists()


def test_train_cli_reports_a_bad_option_in_one_line(tiny_dataset, tmp_path, capsys):
    code = cli_main(["train", "--data", str(tiny_dataset), "--out", str(tmp_path / "run"),
                     "--arch", "single", "--backbone", "resnet18", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "takes exactly one modality" in err[0]


def test_two_gloo_processes_under_torchrun_agree(tiny_dataset, tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "cen_training.cli", "train", "--data", str(tiny_dataset), "--out", str(out),
         "--arch", "cen", "--backbone", "resnet18", "--decoder", "light", "--stages", "1",
         "--epochs", "2", "--batch-size", "4", "--crop", "64", "--optimizer", "adam",
         "--workers", "0", "--no-progress"],
        capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "2 process(es)" in result.stdout
    assert "parameters identical on all 2 processes" in result.stdout
    ckpt = load_checkpoint(out / "last.pt")
    # 8 samples, batch 4 split over 2 processes: 2 steps per epoch.
    assert (ckpt["epoch"], ckpt["step"]) == (2, 4)
    assert not list(out.glob(".*.pt.*"))  # no temporary files left behind


def test_eval_cli_writes_the_report_and_pictures(trained_run, tiny_dataset, tmp_path, capsys):
    run, _ = trained_run
    report_path = tmp_path / "report.json"
    assert cli_main(["eval", str(run / "best.pt"), "--data", str(tiny_dataset), "--out",
                     str(report_path), "--workers", "0", "--no-progress"]) == 0
    report = json.loads(report_path.read_text())
    assert set(report) == {"ensemble", "rgb", "depth"}
    for output in ("ensemble", "rgb", "depth"):
        assert set(report[output]) == {"pixel_acc", "mean_acc", "miou", "per_class_iou"}
        assert list(report[output]["per_class_iou"]) == ["wall", "floor", "poster", "relief",
                                                        "box"]
        assert 0 <= report[output]["miou"] <= 100
    # Single-scale on the val split is what training validated: the same numbers.
    best = load_checkpoint(run / "best.pt")["card"]["metrics"]
    assert report["ensemble"]["miou"] == pytest.approx(best["ensemble"]["miou"])
    pictures = tmp_path / "report_pictures"
    assert (pictures / "confusion_ensemble.png").stat().st_size > 0
    assert len(list(pictures.glob("sample_*.png"))) == 4
    assert "ensemble: pixel acc" in capsys.readouterr().out

    flipped = tmp_path / "flipped.json"
    assert cli_main(["eval", str(run / "best.pt"), "--data", str(tiny_dataset), "--out",
                     str(flipped), "--scales", "0.75", "1", "--flip", "--workers", "0",
                     "--no-progress"]) == 0
    assert set(json.loads(flipped.read_text())) == {"ensemble", "rgb", "depth"}
    assert "scales 0.75, 1, flipped too" in capsys.readouterr().out


def test_bench_fusion_prints_one_table(tmp_path, capsys):
    out = tmp_path / "bench"
    assert cli_main(["bench-fusion", "--out", str(out), "--steps", "2", "--models", "rgb",
                     "cen", "cen-dropout", "--dropout", "0.5", "--num-train", "4", "--num-val",
                     "2", "--height", "64", "--width", "64", "--batch-size", "2",
                     "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert list(results["results"]) == ["rgb", "cen", "cen-dropout"]
    assert all(r["steps"] == 2 for r in results["results"].values())
    assert "CEN" in results["summary"] and "better single modality (rgb)" in results["summary"]
    assert "Without depth at test time" in results["summary"]
    for r in results["results"].values():
        assert 0 <= r["miou_without_depth"] <= 100
    # RGB only never reads depth: removing it must change nothing, which checks that the
    # evaluation without depth scores the same model on the same images as training did.
    rgb = results["results"]["rgb"]
    assert rgb["miou_without_depth"] == pytest.approx(rgb["miou"], abs=1e-9)
    assert rgb["per_class_iou_without_depth"] == rgb["per_class_iou"]
    # The dropout row trained with --modality-dropout; the plain CEN row without.
    dropout_run = load_checkpoint(out / "runs" / "cen-dropout" / "last.pt")
    assert dropout_run["train_config"]["modality_dropout"] == 0.5
    assert load_checkpoint(out / "runs" / "cen" / "last.pt")["train_config"][
        "modality_dropout"] == 0.0
    printed = capsys.readouterr().out
    assert "| model | what | val mIoU | val mIoU without depth (change) |" in printed
    assert "| cen | CEN" in printed and "| cen-dropout | CEN, trained with depth dropout" in printed
    assert (out / "results.md").read_text().count("\n| ") == 4
    assert cli_main(["bench-fusion", "--out", str(out), "--steps", "2", "--no-progress"]) == 2


def test_bench_fusion_scores_a_model_with_its_depth_removed(trained_run, tiny_dataset):
    from cen_training.commands.bench_fusion import miou_without_depth
    from cen_training.segmentation.evaluate import predict
    from cen_training.segmentation.metrics import ConfusionMeter
    out, _ = trained_run
    model = load_model(out / "last.pt")
    val = RGBDSegmentationDataset(tiny_dataset, "val")
    meter = ConfusionMeter(["ensemble"], val.num_classes)
    changed = 0
    for i in range(len(val)):
        batch = torch.utils.data.default_collate([val[i]])
        blank = torch.zeros_like(batch["depth"])
        without = predict(model, batch["rgb"], blank)[-1].argmax(dim=1)
        changed += int((without != predict(model, batch["rgb"], batch["depth"])[-1]
                        .argmax(dim=1)).sum())
        meter.update("ensemble", batch["labels"], without)
    assert changed > 0  # the model uses depth: removing it changes predictions
    expected = meter.scores(val.classes.names)["ensemble"]
    scores = miou_without_depth(out / "last.pt", tiny_dataset, threads=1)
    assert scores["miou"] == pytest.approx(expected["miou"], abs=1e-9)
    assert scores["per_class_iou"] == expected["per_class_iou"]
