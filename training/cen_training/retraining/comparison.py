"""Two models side by side on one dataset split: scores, speed, agreement, and a gate.

Each model is a checkpoint (run by PyTorch on the CPU, full-size images, the ensemble output
as ``cen-train eval`` scores it) or an engine file (``.onnx``, fp32, fp16 or INT8, or a
TensorRT engine), run through ``cen_perception``'s engine and segmenter: the code the robot
runs, resizing to the engine's input size and back. The two run in turns on every frame, with
the same number of threads, so that their timings share the machine's conditions.

Scores come from ``metrics.ConfusionMeter`` (per-class IoU, mIoU, pixel and mean accuracy, in
percent, as ``eval`` reports them); agreement is the share of pixels where the two give the
same label; latency the median milliseconds of one frame's prediction (after one warm-up
frame). The gate passes when NEW's mIoU is at least OLD's minus ``max_drop`` points.

A model trained on other classes (e.g. NYUDv2's 40 when the data has a robot's 8) is scored
through a class map of its predictions (``data.classes``), the same file ``train --class-map``
takes.
"""
from __future__ import annotations

import heapq
import json
import pathlib
import platform
import statistics
import time
from dataclasses import dataclass, field

import numpy as np

from ..data import ClassList, ClassMap, RGBDSegmentationDataset, load_class_map
from ..errors import ConfigError
from ..segmentation.metrics import ConfusionMeter

CHECKPOINT_SUFFIXES = (".pt", ".pth")
MIN_CELL_WIDTH = 240  # pixels per picture in differences.png
ROLES = ("old", "new")


class Predictor:
    """Labels camera frames: ``predictor(rgb, depth) -> uint8 [H, W]`` class ids."""
    kind = "?"
    class_names: list[str]
    palette: list[list[int]]

    def __call__(self, rgb: np.ndarray, depth: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        pass


class CheckpointPredictor(Predictor):
    """A checkpoint's ensemble output, by PyTorch on the CPU."""
    kind = "checkpoint"

    def __init__(self, path: pathlib.Path) -> None:
        from ..checkpoint import load_model

        self.model = load_model(path, task="segmentation")
        card = self.model.card
        self.class_names = list(card.get("class_names") or [])
        self.palette = [list(c) for c in card.get("palette") or []]
        if len(self.class_names) != self.model.config.num_classes:
            self.class_names = [str(i) for i in range(self.model.config.num_classes)]

    def __call__(self, rgb: np.ndarray, depth: np.ndarray) -> np.ndarray:
        import torch

        from ..segmentation.evaluate import predict

        scores = predict(self.model, torch.from_numpy(np.ascontiguousarray(rgb))[None],
                         torch.from_numpy(np.ascontiguousarray(depth, np.float32))[None])
        return scores[-1][0].argmax(dim=0).to(torch.uint8).numpy()


class EnginePredictor(Predictor):
    """An engine file through ``cen_perception`` (ONNX Runtime or TensorRT) and its segmenter."""

    def __init__(self, path: pathlib.Path, threads: int, backend: str = "auto") -> None:
        from cen_perception.engines import EngineError, open_engine
        from cen_perception.model_card import ModelCardError
        from cen_perception.segmenter import Segmenter

        try:
            self.engine = open_engine(path, backend=backend, threads=threads)
        except (EngineError, ModelCardError) as exc:
            raise ConfigError(str(exc)) from None
        self.kind = f"{self.engine.backend} {self.engine.card.precision}"
        self.segmenter = Segmenter(self.engine)
        self.class_names = list(self.engine.card.class_names)
        self.palette = [list(c) for c in self.engine.card.palette]

    def __call__(self, rgb: np.ndarray, depth: np.ndarray) -> np.ndarray:
        return self.segmenter.run(rgb, depth, with_confidence=False).labels

    def close(self) -> None:
        self.engine.close()


def open_predictor(path: str | pathlib.Path, threads: int, backend: str = "auto") -> Predictor:
    """A checkpoint (``.pt``/``.pth``) or an engine file, by its suffix."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: not found")
    if path.suffix in CHECKPOINT_SUFFIXES:
        return CheckpointPredictor(path)
    return EnginePredictor(path, threads, backend)


@dataclass
class Side:
    """One of the two models during a comparison."""
    role: str
    path: pathlib.Path
    predictor: Predictor
    class_map: ClassMap | None = None
    times_ms: list[float] = field(default_factory=list)

    def predict(self, rgb: np.ndarray, depth: np.ndarray, timed: bool = True) -> np.ndarray:
        start = time.perf_counter()
        labels = self.predictor(rgb, depth)
        if timed:
            self.times_ms.append((time.perf_counter() - start) * 1e3)
        return labels if self.class_map is None else self.class_map.apply(labels)


def prediction_map(side_role: str, predictor: Predictor, map_path, classes: ClassList
                   ) -> ClassMap | None:
    """The class map of a model's predictions into the data's classes (``map_path``), or None
    when the model predicts the data's classes; ``ConfigError`` when it needs one."""
    if map_path is not None:
        own = ClassList(predictor.class_names, predictor.palette
                        or [[0, 0, 0]] * len(predictor.class_names))
        return load_class_map(map_path, own, classes)
    if predictor.class_names != classes.names:
        raise ConfigError(
            f"{side_role.upper()} predicts other classes ({len(predictor.class_names)}: "
            f"{', '.join(predictor.class_names[:5])}"
            f"{' ...' if len(predictor.class_names) > 5 else ''})"
            f" than the data has ({classes.num_classes}: {', '.join(classes.names[:5])}"
            f"{' ...' if classes.num_classes > 5 else ''}); map its predictions with "
            f"--{side_role}-class-map")
    return None


@dataclass(order=True)
class Difference:
    """A frame where the two disagree (for the pictures); ordered by how much."""
    disagreement: float  # share of pixels labelled differently
    name: str = field(compare=False)
    images: tuple = field(compare=False, repr=False)  # rgb, old, new, ground truth


def compare(sides: list[Side], dataset: RGBDSegmentationDataset, pictures: int = 4,
            progress: bool = True) -> dict:
    """Run both models over ``dataset`` in turns; returns the report (see ``write_report``),
    with the frames that differ most under ``differences``."""
    from tqdm import tqdm

    classes = dataset.classes
    meter = ConfusionMeter([s.role for s in sides], classes.num_classes)
    same = total = 0
    worst: list[Difference] = []  # a heap of the largest disagreements, the least on top
    for index in tqdm(range(len(dataset)), desc="comparing", unit="frame", disable=not progress):
        sample = dataset.load(index)
        rgb, depth, truth = sample["rgb"], sample["depth"], sample["labels"]
        if index == 0:  # warm-up: first runs allocate and optimise
            for side in sides:
                side.predict(rgb, depth, timed=False)
        old, new = (side.predict(rgb, depth) for side in sides)
        for side, labels in zip(sides, (old, new)):
            meter.update(side.role, truth, labels)
        agree = int((old == new).sum())
        same, total = same + agree, total + old.size
        entry = Difference(1.0 - agree / old.size, sample["name"], (rgb, old, new, truth))
        if entry.disagreement == 0:
            continue
        if len(worst) < pictures:
            heapq.heappush(worst, entry)
        elif pictures and entry > worst[0]:
            heapq.heapreplace(worst, entry)
    scores = meter.scores(classes.names)
    report = {
        "data": {"path": str(dataset.root), "split": dataset.split, "samples": len(dataset),
                 "classes": classes.names},
        "agreement": 100.0 * same / max(total, 1),
    }
    for side in sides:
        report[side.role] = {
            "path": str(side.path), "kind": side.predictor.kind,
            "class_map": side.class_map.path if side.class_map is not None else None,
            "scores": scores[side.role],
            "latency_ms": {"median": statistics.median(side.times_ms) if side.times_ms else None,
                           "frames": len(side.times_ms)},
        }
    report["differences"] = sorted(worst, reverse=True)  # most disagreement first
    return report


def gate(report: dict, max_drop: float) -> dict:
    """The verdict: NEW passes when its mIoU is at least OLD's minus ``max_drop`` points."""
    change = report["new"]["scores"]["miou"] - report["old"]["scores"]["miou"]
    return {"miou_change": change, "max_drop": max_drop, "passed": change >= -max_drop}


def processor_name() -> str:
    """The CPU's model name (for the timings beside it)."""
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown processor"


def write_report(report: dict, verdict: dict, out: pathlib.Path, threads: int,
                 palette: list[list[int]]) -> list[pathlib.Path]:
    """``report.json``, ``report.md`` and ``differences.png`` (rgb | old | new | ground truth
    for the frames where the two differ most; none when they never differ) in ``out``;
    returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    differences = report["differences"]
    machine = {"processor": processor_name(), "threads": threads}
    data = {k: v for k, v in report.items() if k != "differences"}
    data.update(machine=machine, gate=verdict,
                differ_most=[{"name": d.name, "agreement": 100.0 * (1.0 - d.disagreement)}
                             for d in differences])
    written = [out / "report.json", out / "report.md"]
    written[0].write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    picture = None
    if differences:
        picture = out / "differences.png"
        save_differences(differences, palette, picture)
        written.append(picture)
    written[1].write_text(markdown(data, picture), encoding="utf-8")
    return written


def markdown(data: dict, picture: pathlib.Path | None) -> str:
    old, new, verdict = data["old"], data["new"], data["gate"]

    def number(value) -> str:
        return "-" if value is None else f"{value:.2f}"

    def change(a, b) -> str:
        return "-" if a is None or b is None else f"{b - a:+.2f}"

    lines = [f"# {pathlib.Path(new['path']).name} against {pathlib.Path(old['path']).name}", "",
             f"Data: `{data['data']['path']}`, split {data['data']['split']}, "
             f"{data['data']['samples']} frames. "
             f"OLD: `{old['path']}` ({old['kind']}); NEW: `{new['path']}` ({new['kind']}).", "",
             f"**{'PASS' if verdict['passed'] else 'FAIL'}**: mIoU {verdict['miou_change']:+.2f} "
             f"points (allowed drop {verdict['max_drop']:g}).", "",
             "| | OLD | NEW | change |", "| --- | ---: | ---: | ---: |"]
    for key, title in (("miou", "mIoU"), ("pixel_acc", "pixel accuracy"),
                       ("mean_acc", "mean accuracy")):
        a, b = old["scores"][key], new["scores"][key]
        lines.append(f"| {title} | {number(a)} | {number(b)} | {change(a, b)} |")
    a, b = old["latency_ms"]["median"], new["latency_ms"]["median"]
    lines.append(f"| latency, median ms | {number(a)} | {number(b)} | "
                 + (f"x{b / a:.2f} |" if a and b else "- |"))
    lines += ["", f"Latency on {data['machine']['processor']}, "
              f"{data['machine']['threads']} thread(s), one frame at a time, the two in turns. "
              f"The two agree on {data['agreement']:.2f}% of pixels.", "",
              "| class | OLD IoU | NEW IoU | change |", "| --- | ---: | ---: | ---: |"]
    for name in data["data"]["classes"]:
        a, b = old["scores"]["per_class_iou"][name], new["scores"]["per_class_iou"][name]
        lines.append(f"| {name} | {number(a)} | {number(b)} | {change(a, b)} |")
    if picture is None:
        lines += ["", "The two give the same label to every pixel: no frames to show."]
    else:
        lines += ["", "Frames where the two differ most (rgb | old | new | ground truth):", "",
                  f"![differences]({picture.name})", ""]
        lines += [f"- {d['name']}: {d['agreement']:.1f}% agreement" for d in data["differ_most"]]
    return "\n".join(lines) + "\n"


def save_differences(differences: list[Difference], palette, path: pathlib.Path) -> None:
    """One row per frame: rgb | old | new | ground truth (unlabelled black)."""
    import cv2

    from cen_perception.visualize import colorize, contact_sheet

    images, titles = [], []
    for d in differences:
        rgb, old, new, truth = d.images
        images += [rgb, colorize(old, palette), colorize(new, palette), colorize(truth, palette)]
        titles += [f"{d.name}: {100 * (1 - d.disagreement):.0f}% agree", "old", "new",
                   "ground truth"]
    height, width = images[0].shape[:2]
    scale = max(1, -(-MIN_CELL_WIDTH // width))  # small frames enlarged, for the titles
    sheet = contact_sheet(images, columns=4, titles=titles,
                          cell_size=(height * scale, width * scale))
    if not cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
        raise ConfigError(f"{path}: could not write the picture")


__all__ = ["Predictor", "CheckpointPredictor", "EnginePredictor", "Side", "compare", "gate",
           "open_predictor", "prediction_map", "processor_name", "write_report"]
