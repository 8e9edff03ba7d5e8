#!/usr/bin/env python3
"""The demo behind `make demo`: train a small CEN on synthetic RGB-D data and watch the real
ROS 2 node segment a recorded sequence.

Steps (each one reuses what an earlier run already made under --out):
  1. `cen-train synth`: a synthetic RGB-D dataset (objects that differ only in depth, posters
     that differ only in colour, boxes that need both).
  2. A synthetic RGB-D sequence bag (moving scene, with ground-truth labels).
  3. `cen-train train`: a ResNet-18 CEN with the light decoder, a few minutes on the CPU.
  4. `cen-train export`: ONNX with the model card, verified against PyTorch.
  5. The `cen_segmentation_node` (ONNX Runtime, CPU) started as a process; the bag played
     into it with `cen-perception-play`; its outputs recorded here over real DDS.
  6. demo_output/: contact_sheet.png, overlays/, cloud.png (the labelled point cloud the node
     published, seen from above, beside its overlay), node_output/ (a bag of what the node
     published), summary.md / summary.json (latency from the node's /diagnostics, rates,
     drops, and the mIoU of the node's labels against the ground truth).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import random
import shutil
import subprocess
import sys
import time

import cv2
import numpy as np

BIN = pathlib.Path(sys.executable).parent
COLOR, DEPTH, TRUTH = ("/camera/color/image_raw", "/camera/depth/image_raw",
                       "/camera/labels/ground_truth")
CAMERA_INFO = "/camera/color/camera_info"
REPO = pathlib.Path(__file__).resolve().parents[1]


def step(title: str) -> None:
    print(f"\n==> {title}", flush=True)


def run(cmd: list[str]) -> None:
    print("$ " + " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True)


def make_dataset(args, out: pathlib.Path) -> pathlib.Path:
    data = out / "data"
    if (data / "val.txt").is_file():
        print(f"reusing {data}")
        return data
    run([BIN / "cen-train", "synth", data, "--num-train", args.num_train, "--num-val",
         args.num_val, "--height", args.height, "--width", args.width, "--seed", "0"])
    return data


def make_sequence(args, out: pathlib.Path) -> pathlib.Path:
    from cen_perception_dev.synthetic_sequence import write_synthetic_sequence

    bag = out / "sequence"
    if bag.exists():
        print(f"reusing {bag}")
        return bag
    write_synthetic_sequence(bag, frames=args.frames, height=args.height, width=args.width,
                             rate_hz=10.0, seed=1, ground_truth=True)
    print(f"wrote {bag} ({args.frames} frames, {args.width}x{args.height}, 10 Hz)")
    return bag


def train(args, out: pathlib.Path, data: pathlib.Path) -> pathlib.Path:
    run_dir = out / "run"
    best = run_dir / "best.pt"
    if best.is_file():
        print(f"reusing {best}")
        return best
    cmd = [BIN / "cen-train", "train", "--data", data, "--out", run_dir, "--arch", "cen",
           "--backbone", "resnet18", "--decoder", "light", "--optimizer", "adam",
           "--stages", "1", "--epochs", args.epochs, "--batch-size", "8",
           "--max-minutes", args.train_minutes, "--workers", "1"]
    if args.max_steps:
        cmd += ["--max-steps", args.max_steps]
    if (run_dir / "last.pt").is_file():
        cmd.append("--resume")
    run(cmd)
    return best


def export(args, out: pathlib.Path, checkpoint: pathlib.Path, data: pathlib.Path) -> pathlib.Path:
    model = out / "model.onnx"
    if model.is_file() and model.stat().st_mtime >= checkpoint.stat().st_mtime:
        print(f"reusing {model}")
        return model
    height, width = (-(-args.height // 32) * 32, -(-args.width // 32) * 32)
    run([BIN / "cen-train", "export", checkpoint, "-o", model, "--height", height,
         "--width", width, "--confidence", "--data", data])
    return model


def run_node(args, out: pathlib.Path, model: pathlib.Path, bag: pathlib.Path) -> dict:
    """Start the node, play the bag into it, record what comes back (node_output/, a bag of
    the node's images, the camera images and /diagnostics)."""
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import CameraInfo, Image

    from cen_perception.bags.recorded import BagWriter, RecordedBag
    from cen_perception_dev.rig import NodeProcess, Rig, bag_through_node

    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(1, 100)))
    output_bag = out / "node_output"
    shutil.rmtree(output_bag, ignore_errors=True)
    pairs = sum(1 for _ in RecordedBag(bag).messages([COLOR]))
    # Recorded in memory and written on close; the cloud is kept for the picture only (it is
    # large), the camera info listened to so that the player sees both its subscribers.
    recorded_names = {"labels", "color", "overlay", COLOR, DEPTH, "/diagnostics"}
    raw: list[tuple[str, int, bytes]] = []

    def record(name: str, msg) -> None:
        if name in recorded_names:
            topic = name if name.startswith("/") else f"/segmentation/{name}"
            raw.append((topic, time.time_ns(), serialize_message(msg)))

    rig = Rig(outputs=("labels", "color", "overlay", "points"), history=100, background=True,
              on_message=record, name="cen_demo_recorder")
    for topic in (COLOR, DEPTH):
        rig.listen(topic, Image)
    rig.listen(CAMERA_INFO, CameraInfo)
    node = NodeProcess(["--params-file", REPO / "config" / "segmentation.yaml",
                        "-p", f"engine_path:={model}", "-p", "qos:=reliable",
                        "-p", "num_threads:=1", "-p", "diagnostics_period:=0.5",
                        "-r", f"rgb/image:={COLOR}", "-r", f"depth/image:={DEPTH}",
                        "-r", f"rgb/camera_info:={CAMERA_INFO}"])
    print("$ " + " ".join(map(str, node.command)), flush=True)
    try:
        # Two subscribers per camera topic: the node and this recorder.
        bag_through_node(node, rig, bag, [COLOR, DEPTH, CAMERA_INFO], pairs, subscribers=2,
                         ready_timeout=60.0)
    finally:
        node.stop()
        rig.close()
    with BagWriter(output_bag, "sqlite3") as writer:
        for topic in ("/segmentation/labels", "/segmentation/color", "/segmentation/overlay",
                      COLOR, DEPTH):
            writer.add_topic(topic)
        writer.add_topic("/diagnostics", "diagnostic_msgs/msg/DiagnosticArray")
        for topic, stamp, data in raw:
            writer.write_raw(topic, stamp, data)
    print(f"recorded {output_bag}")
    truth = [deserialize_message(m.raw, Image) for m in RecordedBag(bag).messages([TRUTH])]
    return {"messages": {**rig.messages, TRUTH: truth}, "diagnostics": rig.values,
            "pairs": pairs, "node_exit": node.returncode}


def _by_stamp(messages: dict, name: str) -> dict:
    return {(m.header.stamp.sec, m.header.stamp.nanosec): m for m in messages.get(name, [])}


def frame_pictures(out: pathlib.Path, card, labels_msgs: dict, colour: dict, depth: dict,
                   truth: dict) -> np.ndarray:
    """overlays/ (every frame's labels over its colour image) and contact_sheet.png (a few
    frames: rgb, depth, overlay, truth); the confusion matrix of the labels against the truth."""
    from cen_perception.image_codec import decode_color, decode_depth
    from cen_perception.visualize import colorize, colorize_depth, contact_sheet, overlay
    from cen_training.segmentation.metrics import confusion_matrix

    overlays_dir = out / "overlays"
    shutil.rmtree(overlays_dir, ignore_errors=True)
    overlays_dir.mkdir(parents=True)
    matrix = np.zeros((card.num_classes, card.num_classes), np.int64)
    rows = []
    stamps = sorted(labels_msgs)
    every = max(1, len(stamps) // 6)
    for index, stamp in enumerate(stamps):
        labels = _mono(labels_msgs[stamp])
        if stamp in truth:
            matrix += confusion_matrix(_mono(truth[stamp]), labels, card.num_classes)
        if stamp not in colour:
            continue
        rgb = decode_color(colour[stamp], contiguous=True)
        picture = overlay(rgb, labels, card.palette, 0.5)
        cv2.imwrite(str(overlays_dir / f"frame_{index:03d}.png"), picture[..., ::-1])
        if index % every == 0 and len(rows) < 24:
            d = next((m for k, m in depth.items() if abs(_ns(k) - _ns(stamp)) < 20_000_000), None)
            blank = np.zeros_like(rgb)
            rows += [rgb, colorize_depth(decode_depth(d)) if d is not None else blank, picture,
                     colorize(_mono(truth[stamp]), card.palette) if stamp in truth else blank]
    if rows:
        sheet = contact_sheet(rows, columns=4, titles=["rgb", "depth", "CEN overlay", "truth"]
                              * (len(rows) // 4))
        cv2.imwrite(str(out / "contact_sheet.png"), sheet[..., ::-1])
    return matrix


def summary_lines(summary: dict, metrics: dict) -> list[str]:
    """summary.md: what ran, its latency table and, with ground truth, its scores."""
    lines = ["# cen_perception demo", "",
             f"Node (`cen_segmentation_node`, {summary['backend']}, engine input "
             f"{summary['input_size']}) over a {summary['frames_played']}-frame synthetic RGB-D "
             f"bag played at 10 Hz: {summary['pairs']} RGB-D pairs, "
             f"{summary['labels_received']} label images back "
             f"({summary['pairs_dropped']} pairs skipped while the model was busy).", "",
             "| stage | median ms | p95 ms | max ms |", "|---|---|---|---|"]
    for stage, values in summary["latency_ms"].items():
        lines.append(f"| {stage} | {values['median']} | {values['p95']} | {values['max']} |")
    if metrics:
        lines += ["", f"Labels against the sequence's ground truth: mIoU "
                      f"{metrics['miou']:.1f}%, pixel accuracy {metrics['pixel_acc']:.1f}%."]
    return lines


def summarise(out: pathlib.Path, model: pathlib.Path, result: dict) -> dict:
    from cen_perception.engines.onnxruntime import OnnxRuntimeEngine
    from cen_training.segmentation.metrics import scores

    card = OnnxRuntimeEngine(model).card
    messages = result["messages"]
    labels_msgs = _by_stamp(messages, "labels")
    colour = _by_stamp(messages, "/camera/color/image_raw")
    matrix = frame_pictures(out, card, labels_msgs, colour,
                            _by_stamp(messages, "/camera/depth/image_raw"),
                            _by_stamp(messages, "/camera/labels/ground_truth"))
    cloud_picture(out, messages.get("points", []), colour, card.palette)
    diag = result["diagnostics"]
    metrics = scores(matrix, card.class_names) if matrix.sum() else {}
    summary = {
        "frames_played": result["pairs"],
        "labels_received": len(labels_msgs),
        "node_exit_code": result["node_exit"],
        "backend": diag.get("backend"),
        "input_size": diag.get("input_size"),
        "latency_ms": {stage: {q: _float(diag.get(f"{stage}_ms_{q}"))
                               for q in ("median", "p95", "max")}
                       for stage in ("infer", "wait", "overhead", "end_to_end")},
        "pairs": _int(diag.get("pairs")),
        # Pairs replaced by a newer one before inference took them (the model was busy).
        "pairs_dropped": _int(diag.get("pairs_dropped")),
        "unmatched": _int(diag.get("sync_dropped")),
        "bad_messages": _int(diag.get("bad_messages")),
        "miou_vs_ground_truth": metrics.get("miou"),
        "pixel_acc_vs_ground_truth": metrics.get("pixel_acc"),
        "diagnostics": diag,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = summary_lines(summary, metrics)
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return summary


def cloud_picture(out: pathlib.Path, clouds: list, colour: dict, palette) -> None:
    """cloud.png: a frame's overlay beside its labelled cloud seen from above the camera."""
    from cen_perception.image_codec import decode_color
    from cen_perception.visualize import contact_sheet, overlay, palette_lut, render_cloud

    with_colour = [c for c in clouds if (c.header.stamp.sec, c.header.stamp.nanosec) in colour]
    if not with_colour:
        print("no labelled cloud came back (no camera info?): no cloud.png")
        return
    cloud = with_colour[len(with_colour) // 2]
    data = np.frombuffer(bytes(cloud.data), np.uint8).reshape(cloud.height, cloud.width,
                                                              cloud.point_step)
    xyz = data[..., :12].copy().view(np.float32).reshape(-1, 3)
    labels = data[..., 16].reshape(-1)
    lut = palette_lut(palette)
    picture = render_cloud(xyz, lut[labels], size=(cloud.height * 2, cloud.width * 2))
    rgb = decode_color(colour[(cloud.header.stamp.sec, cloud.header.stamp.nanosec)],
                       contiguous=True)
    image_labels = labels.reshape(cloud.height, cloud.width)
    side = cv2.resize(overlay(rgb, image_labels, palette, 0.5),
                      (picture.shape[1], picture.shape[0]), interpolation=cv2.INTER_NEAREST)
    sheet = contact_sheet([side, picture], columns=2,
                          titles=["CEN overlay", "labelled cloud, seen from above"])
    cv2.imwrite(str(out / "cloud.png"), sheet[..., ::-1])
    print(f"wrote {out / 'cloud.png'}")


def _mono(msg) -> np.ndarray:
    rows = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.step)
    return rows[:, :msg.width].copy()


def _ns(stamp) -> int:
    return stamp[0] * 10**9 + stamp[1]


def _int(value):
    return int(value) if value not in (None, "") else None


def _float(value):
    return float(value) if value not in (None, "") else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=pathlib.Path, default=REPO / "demo_output")
    parser.add_argument("--num-train", type=int, default=300)
    parser.add_argument("--num-val", type=int, default=40)
    parser.add_argument("--height", type=int, default=120)
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--frames", type=int, default=60, help="frames in the sequence bag")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--train-minutes", type=float, default=6.0,
                        help="training time budget on the CPU (default: 6)")
    parser.add_argument("--max-steps", type=int, default=0, help="stop training after N steps")
    parser.add_argument("--tiny", action="store_true",
                        help="a seconds-long run of every step (what the tests run)")
    args = parser.parse_args(argv)
    if args.tiny:
        args.num_train, args.num_val, args.height, args.width = 8, 4, 64, 96
        args.frames, args.epochs, args.train_minutes, args.max_steps = 6, 1, 1.0, 2
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    step("1/5 synthetic RGB-D dataset")
    data = make_dataset(args, args.out)
    step("2/5 synthetic RGB-D sequence bag")
    bag = make_sequence(args, args.out)
    step("3/5 training a ResNet-18 CEN (light decoder) on the CPU")
    checkpoint = train(args, args.out, data)
    step("4/5 export to ONNX")
    model = export(args, args.out, checkpoint, data)
    step("5/5 the segmentation node over the sequence (ONNX Runtime, CPU)")
    result = run_node(args, args.out, model, bag)
    summary = summarise(args.out, model, result)
    print(f"\ndemo finished in {time.monotonic() - started:.0f} s: "
          f"see {args.out}/contact_sheet.png and {args.out}/summary.md")
    return 0 if summary["labels_received"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
