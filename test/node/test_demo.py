"""`make demo`'s steps at a tiny size: synth -> sequence bag -> train -> export -> node + player."""
import json
import subprocess
import sys

import cv2


def test_demo_runs_every_step_and_reuses_its_work(repo_root, tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, str(repo_root / "scripts" / "demo.py"), "--tiny", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames_played"] == 6
    # Every frame pairs; the node segments the newest pair and skips those it had no time for.
    assert summary["pairs"] == 6 and summary["bad_messages"] == 0
    assert summary["labels_received"] >= 1
    assert summary["labels_received"] + summary["pairs_dropped"] == 6
    assert summary["node_exit_code"] == 0
    assert summary["backend"] == "onnxruntime"
    assert summary["latency_ms"]["end_to_end"]["median"] > 0
    assert summary["miou_vs_ground_truth"] is not None
    sheet = cv2.imread(str(out / "contact_sheet.png"))
    assert sheet is not None and sheet.shape[0] > 64
    assert len(list((out / "overlays").glob("*.png"))) == summary["labels_received"]
    assert (out / "node_output" / "metadata.yaml").is_file()
    cloud = cv2.imread(str(out / "cloud.png"))   # the node's labelled cloud, from above
    assert cloud is not None and cloud.shape[1] > 2 * 64
    # A second run reuses the dataset, bag, checkpoint and model.
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("reusing") == 4
