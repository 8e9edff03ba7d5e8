"""``cen-perception-bag IN_BAG OUT_BAG --engine E``: segment a recorded bag into a new bag.

Runs the segmenter over every synchronized RGB-D pair of a recorded bag (raw or compressed
topics) and writes ``<ns>/labels`` (mono8), ``<ns>/color`` and ``<ns>/overlay`` (rgb8), each
with the RGB image's header, into a new bag. The input bag is only read.
"""
from __future__ import annotations

import argparse
import pathlib
import sys
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from ..engines import BACKENDS
from ..errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, CenPerceptionError, one_line
from ..image_codec import encode
from .pairing import add_pairing_arguments, check_pairing
from .recorded import (
    DEFAULT_QUEUE_SIZE,
    DEFAULT_SLOP,
    STORAGES,
    BagError,
    BagMessage,
    BagWriter,
    FramePair,
    Image,
    PairCounts,
    RecordedBag,
    copy_topics_to,
    rgbd_pairs,
)


@dataclass
class BagRunSummary:
    """What ``segment_bag`` did: counts, per-pair inference times (ms), topics written."""

    counts: PairCounts
    infer_ms: list[float]
    output_topics: list[str]
    copied_topics: list[str]
    backend: str
    output_path: pathlib.Path
    storage: str

    def text(self) -> str:
        c = self.counts
        lines = [f"{c.pairs} pairs segmented from {c.rgb} colour and {c.depth} depth messages; "
                 f"unmatched: {c.unmatched_rgb} colour, {c.unmatched_depth} depth; "
                 f"bad messages: {c.bad_rgb} colour, {c.bad_depth} depth"]
        if self.infer_ms:
            times = np.asarray(self.infer_ms)
            lines.append(f"inference ({self.backend}): mean {times.mean():.1f} ms, "
                         f"p95 {np.percentile(times, 95):.1f} ms")
        lines += [f"  first bad message: {p}" for p in c.problems[:1]]
        written = ", ".join(self.output_topics)
        if self.copied_topics:
            written += f" and {len(self.copied_topics)} copied input topics"
        lines.append(f"wrote {self.output_path} ({self.storage}): {written}")
        return "\n".join(lines)


def output_topic_names(namespace: str, confidence: bool = False) -> dict[str, str]:
    base = "/" + namespace.strip("/") if namespace.strip("/") else ""
    names = {kind: f"{base}/{kind}" for kind in ("labels", "color", "overlay")}
    if confidence:
        names["confidence"] = f"{base}/confidence"
    return names


def segment_bag(in_bag: str | pathlib.Path, out_bag: str | pathlib.Path,
                engine_path: str | pathlib.Path, rgb_topic: Optional[str] = None,
                depth_topic: Optional[str] = None, slop: float = DEFAULT_SLOP,
                queue_size: int = DEFAULT_QUEUE_SIZE, storage: Optional[str] = None,
                namespace: str = "segmentation", copy_input: bool = False,
                backend: str = "auto", overlay_alpha: float = 0.5, min_confidence: float = 0.0,
                confidence: bool = False, progress: bool = True,
                depth_scale: Optional[float] = None) -> BagRunSummary:
    """Segment every synchronized pair of ``in_bag`` into a new bag ``out_bag``.

    ``depth_scale``: metres per depth unit, None = REP 118 (16UC1 mm, 32FC1 m). Checks
    everything that can be checked (bag, topics, encodings, engine, output path) before
    creating the output. Raises ``BagError`` (or the engine's error) with one line.
    """
    from ..engines import open_engine
    from ..segmenter import Segmenter

    if not 0.0 <= overlay_alpha <= 1.0:
        raise BagError(f"overlay alpha must be in [0, 1], got {overlay_alpha}")
    check_pairing(slop, depth_scale, queue_size)
    out_bag = pathlib.Path(out_bag)
    with RecordedBag(in_bag) as bag:
        rgb_topic, depth_topic = bag.resolve_rgbd_topics(rgb_topic, depth_topic)
        storage = storage or bag.storage
        if storage not in STORAGES:
            raise BagError(f"unknown storage '{storage}' (choose from {', '.join(STORAGES)})")
        if out_bag.exists():
            raise BagError(f"{out_bag} exists already; give a new path for the output bag")
        outputs = output_topic_names(namespace, confidence)
        clash = sorted(set(outputs.values()) & set(bag.topics)) if copy_input else []
        if clash:
            raise BagError(f"the input bag already has {', '.join(clash)}; choose another "
                           "--output-namespace")
        engine = open_engine(engine_path, backend=backend)
        try:
            if confidence and not engine.has_confidence:
                raise BagError(f"{engine_path}: the engine has no confidence output")
            try:
                segmenter = Segmenter(engine, min_confidence=min_confidence)
            except ValueError as exc:
                raise BagError(f"{engine_path}: {exc}") from None
            job = _BagJob(bag, segmenter, rgb_topic, depth_topic, outputs, overlay_alpha,
                          confidence, depth_scale)
            return job.run(out_bag, storage, slop, queue_size, copy_input, progress)
        finally:
            engine.close()


@dataclass
class _BagJob:
    """One ``segment_bag`` run, once everything has been checked."""

    bag: RecordedBag
    segmenter: Any
    rgb_topic: str
    depth_topic: str
    outputs: dict[str, str]  # kind -> output topic
    overlay_alpha: float
    confidence: bool
    depth_scale: Optional[float] = None

    def run(self, out_bag: pathlib.Path, storage: str, slop: float, queue_size: int,
            copy_input: bool, progress: bool) -> BagRunSummary:
        from tqdm import tqdm

        bag = self.bag
        counts = PairCounts()
        infer_ms: list[float] = []
        read_topics = list(bag.topics) if copy_input else [self.rgb_topic, self.depth_topic]
        total = sum(bag.topics[t].count for t in read_topics)
        with BagWriter(out_bag, storage) as writer, \
                tqdm(total=total, unit="msg", desc="segmenting", disable=not progress,
                     file=sys.stderr) as bar:
            copied = set(copy_topics_to(writer, bag)) if copy_input else set()
            for topic in self.outputs.values():
                writer.add_topic(topic)

            def on_message(message: BagMessage) -> None:
                bar.update(1)
                if message.topic in copied:
                    writer.write_raw(message.topic, message.log_time_ns, message.raw)

            pairs = rgbd_pairs(bag, self.rgb_topic, self.depth_topic, slop, queue_size, counts,
                               all_topics=copy_input, on_message=on_message,
                               depth_scale=self.depth_scale)
            try:
                for pair in pairs:
                    infer_ms.append(self.segment(pair, writer))
            except BagError as exc:
                raise BagError(f"{exc}; {out_bag} holds the {counts.pairs} pairs done "
                               "before") from None
        return BagRunSummary(counts, infer_ms, list(self.outputs.values()), sorted(copied),
                             self.segmenter.engine.backend, out_bag, storage)

    def segment(self, pair: FramePair, writer: BagWriter) -> float:
        """Segment one pair and write its images; returns the inference time (ms)."""
        from ..visualize import colorize, overlay

        result = self.segmenter.run(pair.rgb, pair.depth)
        palette = self.segmenter.palette
        color = colorize(result.labels, palette)
        images = {"labels": (result.labels, "mono8"), "color": (color, "rgb8"),
                  "overlay": (overlay(pair.rgb, result.labels, palette, self.overlay_alpha,
                                      color=color), "rgb8")}
        if self.confidence and result.confidence is not None:
            images["confidence"] = (result.confidence.astype(np.float32), "32FC1")
        for kind, (array, encoding) in images.items():
            msg = encode(array, encoding, header=pair.header, msg_cls=Image)
            writer.write(self.outputs[kind], pair.log_time_ns, msg)
        return result.timings["infer"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cen-perception-bag",
        description="Segment every synchronized RGB-D pair of a recorded ROS 2 bag (sqlite3 or "
                    "MCAP) and write the masks into a new bag.")
    parser.add_argument("in_bag", type=pathlib.Path, help="recorded bag (read only)")
    parser.add_argument("out_bag", type=pathlib.Path, help="bag to create (must not exist)")
    parser.add_argument("--engine", required=True, type=pathlib.Path,
                        help="ONNX model or TensorRT engine with its model card")
    parser.add_argument("--backend", default="auto",
                        choices=BACKENDS)
    add_pairing_arguments(parser, queue_size=True)
    parser.add_argument("--storage", choices=sorted(STORAGES),
                        help="output storage format (default: that of the input bag)")
    parser.add_argument("--output-namespace", default="segmentation",
                        help="prefix of the output topics (default %(default)s)")
    parser.add_argument("--copy-input", action="store_true",
                        help="also copy every topic of the input bag into the output bag")
    parser.add_argument("--overlay-alpha", type=float, default=0.5,
                        help="weight of the mask colours in the overlay (default %(default)s)")
    parser.add_argument("--min-confidence", type=float, default=0.0,
                        help="pixels below this confidence are labelled 255 (default %(default)s)")
    parser.add_argument("--confidence", action="store_true",
                        help="also write <namespace>/confidence (32FC1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        summary = segment_bag(
            args.in_bag, args.out_bag, args.engine, rgb_topic=args.rgb_topic,
            depth_topic=args.depth_topic, slop=args.slop, queue_size=args.queue_size,
            storage=args.storage, namespace=args.output_namespace, copy_input=args.copy_input,
            backend=args.backend, overlay_alpha=args.overlay_alpha,
            min_confidence=args.min_confidence, confidence=args.confidence,
            progress=not args.no_progress, depth_scale=args.depth_scale)
    except CenPerceptionError as exc:
        print(f"{parser.prog}: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted; the output bag holds what was done so far",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    print(summary.text())
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
