"""``cen-perception-bench``: how fast and how lean the node is, measured from outside.

Starts ``cen_segmentation`` as its own process on an engine with its default parameters (so
``qos: auto``), plays a synthetic RGB-D camera of ``--size`` at ``--rate`` Hz through real DDS
and subscribes to the outputs. The camera publishes as camera drivers do: reliable (or
``--camera-qos best_effort``), raw bgr8 + 16UC1 images, or with ``--transport compressed``
image_transport's ``rgb/image/compressed`` (JPEG) and ``depth/image/compressedDepth`` (PNG),
the node then started with ``rgb_transport:=compressed depth_transport:=compressedDepth``
(``--transport jpeg``: JPEG colour, raw depth).
Each message is serialized once and only its stamp changes between frames, as a C++ driver
would send it, so the camera's own Python costs stay out of the figures. It prints:

* per-stage latency inside the node (callback, per camera message; decode, in the decode
  thread; wait for the busy worker, decoding taken out; resize, infer, visualize, cloud,
  publish, end to end, and overhead = end to end minus inference minus wait, the node's own
  work, decoding included), as the node reports it on /diagnostics over its last 1000 frames
  (the five warm-up frames, the first inference among them, included);
* camera-to-labels latency seen by a subscriber (publish to arrival, both in this process);
* camera frames delivered to the node (its ``rgb_received`` / ``depth_received`` counters
  against the frames published), input and output rates, pairs dropped because the model was
  busy, frames lost;
* the node's resident memory before and after ``--small-frames`` small frames.

Example: ``cen-perception-bench --engine model.onnx --size 1280x720 --rate 30 --frames 300``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from cen_perception.errors import run_command
from cen_perception.image_codec import encode, encode_compressed_color, encode_compressed_depth
from cen_perception.input_health import BEST_EFFORT, PROFILE_FILE, PROFILE_VARIABLES, RELIABLE
from cen_perception.pipeline import STAGES

from .errors import DevToolError
from .rig import Camera, NodeProcess, Rig, RigError, serialized
from .synthetic_world import SyntheticScene
from .transport_check import TransportCheckError, parse_size

WARMUP_PAIRS = 5


class BenchError(DevToolError):
    """A benchmark that cannot run; the message is one line."""


def synthetic_frame(height: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A BGR image and a 16-bit depth image (mm) of the synthetic world (``synthetic_world``)."""
    rgb, depth_mm, _ = SyntheticScene(seed, height, width).render(0, np.random.default_rng(seed))
    return np.ascontiguousarray(rgb[:, :, ::-1]), depth_mm


def percentiles(values) -> tuple[float, float, float]:
    if len(values) == 0:
        return float("nan"), float("nan"), float("nan")
    values = np.asarray(values, dtype=np.float64)
    return float(np.median(values)), float(np.percentile(values, 95)), float(values.max())


# Shared memory for whole images on this host, UDP for other hosts; see the file's comment.
FASTDDS_LARGE_IMAGES_PROFILE = str(PROFILE_FILE)


# --transport -> the camera's (and the node's) rgb_transport and depth_transport
TRANSPORTS = {"raw": ("raw", "raw"), "compressed": ("compressed", "compressedDepth"),
              "jpeg": ("compressed", "raw")}


def camera_messages(bgr: np.ndarray, depth_mm: np.ndarray, transport: str):
    """The camera's colour and depth messages, as sensor_msgs/Image or CompressedImage."""
    rgb_transport, depth_transport = TRANSPORTS[transport]
    rgb = (encode_compressed_color(bgr[:, :, ::-1], "jpeg") if rgb_transport == "compressed"
           else encode(bgr, "bgr8"))
    depth = (encode_compressed_depth(depth_mm, "16UC1") if depth_transport == "compressedDepth"
             else encode(depth_mm, "16UC1"))
    return rgb, depth


def rss_mb(pid: int) -> Optional[float]:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def bench_camera(transport: str, camera_qos: str) -> Camera:
    """The rig's camera for ``--transport`` and ``--camera-qos``."""
    rgb_transport, depth_transport = TRANSPORTS[transport]
    return Camera(reliable=camera_qos == RELIABLE, history=10, rgb_transport=rgb_transport,
                  depth_transport=depth_transport)


def drained_values(rig: Rig, before: Optional[dict] = None, sent: int = 0,
                   timeout: float = 30.0, arrival_timeout: float = 3.0) -> dict[str, str]:
    """The node's diagnostics once every pair it made is processed, dropped or idle, and (for
    up to ``arrival_timeout`` s) once it has counted ``sent`` more camera frames than in
    ``before``."""
    def settled(values):
        done = sum(int(values.get(k, 0)) for k in ("frames_processed", "pairs_dropped",
                                                   "pairs_idle", "processing_errors"))
        return done >= int(values.get("pairs", 0))

    def all_arrived(values):
        return all(delivered(before or {}, values, key, sent)[0] >= sent
                   for key in ("rgb_received", "depth_received"))
    start = time.perf_counter()
    values = rig.next_values()
    while time.perf_counter() < start + timeout and not (
            settled(values) and (all_arrived(values)
                                 or time.perf_counter() > start + arrival_timeout)):
        values = rig.next_values()
    return values


def node_arguments(engine: str, backend: str, threads: int, confidence: bool,
                   transport: str = "raw", extra: Sequence[str] = ()) -> list[str]:
    """The node's default parameters (qos: auto) but for the engine and what is asked;
    ``extra``: more ``NAME:=VALUE`` parameters."""
    rgb_transport, depth_transport = TRANSPORTS[transport]
    args = ["-p", f"engine_path:={engine}", "-p", f"backend:={backend}",
            "-p", f"num_threads:={threads}", "-p", "diagnostics_period:=0.5",
            "-p", f"publish_confidence:={str(confidence).lower()}",
            "-p", f"rgb_transport:={rgb_transport}", "-p", f"depth_transport:={depth_transport}"]
    for parameter in extra:
        args += ["-p", parameter]
    return args + ["--log-level", "warn"]


def format_table(title: str, header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    out = [title, "  ".join(h.ljust(w) for h, w in zip(header, widths)), line]
    out += ["  ".join(str(c).rjust(w) if i else str(c).ljust(w)
                      for i, (c, w) in enumerate(zip(row, widths))) for row in rows]
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    if not os.path.isfile(args.engine):
        raise BenchError(f"engine file not found: {args.engine}")
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    if args.fastdds_shm:
        # Both processes (this one and the node it starts) read it when rclpy starts: Fast
        # DDS 2.x the first name, 3.x the second.
        for name in PROFILE_VARIABLES:
            os.environ[name] = FASTDDS_LARGE_IMAGES_PROFILE
    return _run(args)


def delivered(before: dict, after: dict, key: str, sent: int) -> tuple[int, float]:
    """Frames the node's ``key`` counter grew by, and their share of ``sent``."""
    count = int(after.get(key, 0)) - int(before.get(key, 0))
    return count, count / sent if sent else float("nan")


@dataclass
class Measured:
    """What one bench run measured."""
    before: dict  # the node's diagnostics after the warm-up
    after: dict  # and after the measured frames
    latencies_ms: list  # camera -> labels, per labelled pair
    seconds: float  # how long publishing the measured frames took
    memory_mb: Optional[tuple]  # node RSS before and after the small frames


def _run(args: argparse.Namespace) -> int:
    namespace = f"/bench_{uuid.uuid4().hex[:8]}"
    outputs = args.outputs.split(",")
    node = NodeProcess(node_arguments(args.engine, args.backend, args.threads,
                                      confidence="confidence" in outputs,
                                      transport=args.transport, extra=args.param),
                       namespace=namespace)
    rig = None
    try:
        rig = Rig(namespace, camera=bench_camera(args.transport, args.camera_qos),
                  outputs=outputs, history=10, name="bench")
        rig.wait_connected(node, timeout=60.0)
        measured = measure_latency(rig, args, "points" in outputs)
        if args.small_frames:
            measured.memory_mb = measure_memory(rig, node, args)
    except RigError as exc:
        raise BenchError(str(exc)) from None
    finally:
        if rig is not None:
            rig.close()
        node.stop()
    print_tables(args, measured)
    return 0


def measure_latency(rig: Rig, args: argparse.Namespace, camera_info: bool) -> Measured:
    """Warm up (the first inference is slow, allocations) one pair at a time, so that no
    measured pair waits behind it; then the measured run at camera size."""
    width, height = args.size
    bgr, depth_mm = synthetic_frame(height, width)
    rgb_data, depth_data = map(serialized, camera_messages(bgr, depth_mm, args.transport))
    info = SyntheticScene(0, height, width).camera_info_fields()
    for index in range(WARMUP_PAIRS):
        if camera_info:
            rig.publish_camera_info(info)
        rig.play(rgb_data, depth_data, 1, 1.0, first_sec=100 + index)
        rig.spin_until(lambda index=index: len(rig.arrival.get("labels", ())) > index, 120.0)
    before = drained_values(rig)
    rig.sent.clear()
    rig.arrival.clear()
    print(f"playing {args.frames} frames of {width}x{height} ({args.transport}) at "
          f"{args.rate:g} Hz", file=sys.stderr)
    seconds = rig.play(rgb_data, depth_data, args.frames, args.rate, first_sec=1000,
                       progress=True)
    arrived = rig.arrival.setdefault("labels", {})
    rig.spin_until(lambda: len(arrived) >= len(rig.sent), 2.0)
    after = drained_values(rig, before, args.frames)
    latencies = [(arrived[k] - t) * 1e3 for k, t in rig.sent.items() if k in arrived]
    return Measured(before, after, latencies, seconds, None)


def measure_memory(rig: Rig, node: NodeProcess, args: argparse.Namespace) -> tuple:
    """The node's RSS before and after many small frames through the whole path."""
    small_bgr, small_depth = synthetic_frame(48, 64, seed=1)
    small_rgb, small_depth = map(serialized,
                                 camera_messages(small_bgr, small_depth, args.transport))
    warm = max(200, args.small_frames // 20)
    rig.play(small_rgb, small_depth, warm, args.small_rate, first_sec=200_000)
    rss_start = rss_mb(node.pid)
    print(f"playing {args.small_frames} frames of 64x48 at {args.small_rate:g} Hz",
          file=sys.stderr)
    rig.play(small_rgb, small_depth, args.small_frames, args.small_rate, first_sec=300_000,
             progress=True)
    rig.pause(1.0)
    return rss_start, rss_mb(node.pid)


def print_tables(args: argparse.Namespace, measured: Measured) -> None:
    width, height = args.size
    before, diag, latencies = measured.before, measured.after, measured.latencies_ms
    rows = []
    for stage in STAGES:  # as the node reports them on /diagnostics
        if f"{stage}_ms_median" in diag:
            rows.append([f"node {stage}"]
                        + [diag[f"{stage}_ms_{s}"] for s in ("median", "p95", "max")])
    median, p95, worst = percentiles(latencies)
    rows.append(["camera -> labels"] + [f"{v:.3f}" for v in (median, p95, worst)])
    print(format_table(f"\nlatency (ms), {width}x{height}, {args.transport}, engine "
                       f"{args.engine}, backend {diag.get('backend', '?')}",
                       ["stage", "median", "p95", "max"], rows))

    infer_median = float(diag.get("infer_ms_median", "nan"))
    processed = int(diag.get("frames_processed", 0)) - int(before.get("frames_processed", 0))
    dropped = int(diag.get("pairs_dropped", 0)) - int(before.get("pairs_dropped", 0))
    rgb_count, rgb_share = delivered(before, diag, "rgb_received", args.frames)
    depth_count, depth_share = delivered(before, diag, "depth_received", args.frames)
    seconds = measured.seconds
    counts = [
        ["camera", f"{width}x{height} {args.transport}, {args.camera_qos.replace('_', ' ')}"],
        ["node qos", f"{diag.get('qos', '?')} (in use: rgb {diag.get('rgb_qos', '?')}, "
                     f"depth {diag.get('depth_qos', '?')})"],
        ["rgb delivered to the node", f"{rgb_count}/{args.frames} ({100 * rgb_share:.1f}%)"],
        ["depth delivered to the node",
         f"{depth_count}/{args.frames} ({100 * depth_share:.1f}%)"],
        ["camera rate (Hz)", f"{args.frames / seconds:.1f}"],
        ["output rate (Hz)", f"{processed / seconds:.1f}"],
        ["pairs sent", str(args.frames)],
        ["labels received", str(len(latencies))],
        ["pairs dropped (model busy)", str(dropped)],
        ["pairs lost otherwise", str(args.frames - len(latencies) - dropped)],
        ["p95 node end_to_end / median infer",
         f"{float(diag.get('end_to_end_ms_p95', 'nan')) / infer_median:.2f}"],
        ["p95 camera -> labels / median infer", f"{p95 / infer_median:.2f}"],
    ]
    if measured.memory_mb is not None:
        start_mb, end_mb = measured.memory_mb
        counts += [[f"node RSS before {args.small_frames} small frames (MB)", f"{start_mb:.1f}"],
                   ["node RSS after (MB)", f"{end_mb:.1f}"],
                   ["RSS growth (MB)", f"{end_mb - start_mb:+.1f}"]]
    print(format_table("\nthroughput and memory", ["measure", "value"], counts))


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="cen-perception-bench",
        description="Measure the cen_segmentation node: per-stage latency, rates, drops and "
                    "memory, with a synthetic camera over real DDS.")
    parser.add_argument("--engine", required=True, help=".onnx model or TensorRT engine")
    parser.add_argument("--backend", default="auto", choices=("auto", "tensorrt", "onnxruntime"))
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0 = all)")
    parser.add_argument("--rate", type=float, default=30.0, help="camera rate in Hz (default 30)")
    parser.add_argument("--frames", type=int, default=300, help="camera-size frames (default 300)")
    parser.add_argument("--size", default="640x480",
                        help="camera image size WIDTHxHEIGHT (default %(default)s)")
    parser.add_argument("--transport", choices=tuple(TRANSPORTS), default="raw",
                        help="raw: sensor_msgs/Image bgr8 + 16UC1; compressed: JPEG colour and "
                             "PNG compressedDepth, as image_transport sends them; jpeg: JPEG "
                             "colour and raw depth (default raw)")
    parser.add_argument("--param", action="append", default=[], metavar="NAME:=VALUE",
                        help="a node parameter besides the defaults (repeatable), e.g. "
                             "reduced_jpeg_decoding:=false")
    parser.add_argument("--camera-qos", choices=(RELIABLE, BEST_EFFORT), default=RELIABLE,
                        help="reliability of the camera's publishers (default reliable, as "
                             "most drivers publish)")
    parser.add_argument("--outputs", default="labels,color,overlay",
                        help="outputs to subscribe to, comma separated: labels, color, overlay, "
                             "confidence, points (the labelled cloud; the camera then sends "
                             "its camera info) (default %(default)s)")
    parser.add_argument("--small-frames", type=int, default=10_000,
                        help="64x48 frames for the memory check (0 = skip; default 10000)")
    parser.add_argument("--small-rate", type=float, default=400.0,
                        help="rate of the small frames in Hz (default 400)")
    parser.add_argument("--fastdds-shm", action="store_true",
                        help="run both sides with a Fast DDS profile whose shared-memory "
                             "transport carries whole images "
                             "(the shipped fastdds_large_images.xml)")
    args = parser.parse_args(argv)
    try:
        args.size = parse_size(args.size)
    except TransportCheckError as exc:
        parser.error(str(exc))
    if min(args.rate, args.small_rate) <= 0 or args.frames < 1:
        parser.error("rates and frames must be positive")
    unknown = set(args.outputs.split(",")) - {"labels", "color", "overlay", "confidence",
                                               "points"}
    if unknown or "labels" not in args.outputs.split(","):
        parser.error("--outputs must include labels and name only labels, color, overlay, "
                     "confidence, points")
    return run_command("cen-perception-bench", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
