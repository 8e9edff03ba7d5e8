"""``cen-perception-bench``: how fast and how lean the node is, measured from outside.

Starts ``cen_segmentation`` as its own process on an engine, plays a synthetic RGB-D camera
(bgr8 + 16UC1) at ``--rate`` Hz through real DDS, subscribes to the outputs, and prints:

* per-stage latency inside the node (codec, wait for the busy worker, resize, infer,
  visualize, publish, end to end, and overhead = end to end minus inference minus wait, the
  node's own work), as the node reports it on /diagnostics over
  its last 1000 frames (the five warm-up frames, the first inference among them, included);
* camera-to-labels latency seen by a subscriber (publish to arrival, both in this process);
* input and output rates, pairs dropped because the model was busy, frames lost;
* the node's resident memory before and after ``--small-frames`` small frames.

Example: ``cen-perception-bench --engine model.onnx --rate 30 --frames 300``.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import uuid
from typing import Optional

import numpy as np

from .image_codec import encode


WARMUP_PAIRS = 5


class BenchError(RuntimeError):
    """A benchmark that cannot run; the message is one line."""


def synthetic_frame(height: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A BGR image and a 16-bit depth image (mm): a floor-to-wall ramp with texture."""
    rng = np.random.default_rng(seed)
    rows = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    cols = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    shape = (height, width)
    bgr = np.stack([np.broadcast_to(rows * 200 + cols * 40, shape),
                    np.broadcast_to(cols * 220, shape),
                    np.broadcast_to((1 - rows) * 180, shape)], axis=2)
    bgr = np.clip(bgr + rng.normal(0, 12, bgr.shape), 0, 255).astype(np.uint8)
    depth_mm = (500 + 4000 * rows * (0.6 + 0.4 * cols)).astype(np.uint16)
    depth_mm[rng.random((height, width)) < 0.02] = 0  # dropouts, as real sensors have
    return bgr, depth_mm


def percentiles(values) -> tuple[float, float, float]:
    if len(values) == 0:
        return float("nan"), float("nan"), float("nan")
    values = np.asarray(values, dtype=np.float64)
    return float(np.median(values)), float(np.percentile(values, 95)), float(values.max())


# Shared memory for whole images on this host, UDP for other hosts; see the file's comment.
FASTDDS_LARGE_IMAGES_PROFILE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                            "fastdds_large_images.xml")


def rss_mb(pid: int) -> Optional[float]:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


class Bench:
    """The camera side: publishes pairs, records when outputs arrive, keeps diagnostics."""

    def __init__(self, namespace: str, outputs: list[str]) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(f"bench_{uuid.uuid4().hex[:6]}", namespace=namespace,
                                      context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.rgb_pub = self.node.create_publisher(Image, "rgb/image", qos)
        self.depth_pub = self.node.create_publisher(Image, "depth/image", qos)
        self.sent: dict[tuple[int, int], float] = {}
        self.arrived: dict[tuple[int, int], float] = {}
        self.outputs = outputs
        self._subscriptions = [
            self.node.create_subscription(
                Image, f"segmentation/{kind}",
                self._on_labels if kind == "labels" else self._ignore, qos)
            for kind in outputs]
        self.status_name = f"{namespace}/cen_segmentation:"
        self.diagnostics: list[dict[str, str]] = []
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)

    def _on_labels(self, msg) -> None:
        self.arrived.setdefault((msg.header.stamp.sec, msg.header.stamp.nanosec),
                                time.perf_counter())

    def _ignore(self, msg) -> None:
        pass

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.name.startswith(self.status_name):
                self.diagnostics.append({kv.key: kv.value for kv in status.values})

    def spin_until(self, predicate, timeout: float) -> bool:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if predicate():
                return True
            self.executor.spin_once(timeout_sec=0.01)
        return predicate()

    def wait_connected(self, node_proc: subprocess.Popen, timeout: float = 60.0) -> None:
        def connected():
            if node_proc.poll() is not None:
                raise BenchError(f"the node exited with status {node_proc.returncode}")
            return (self.rgb_pub.get_subscription_count() > 0
                    and self.depth_pub.get_subscription_count() > 0
                    and all(s.get_publisher_count() > 0 for s in self._subscriptions))
        if not self.spin_until(connected, timeout):
            raise BenchError("the node did not connect within a minute")

    def play(self, rgb_msg, depth_msg, frames: int, rate: float, first_sec: int,
             progress: bool = False) -> float:
        """Publish ``frames`` pairs at ``rate`` Hz; returns the seconds it took."""
        from tqdm import tqdm

        period = 1.0 / rate
        start = next_time = time.perf_counter()
        for index in tqdm(range(frames), disable=not progress, unit="frame", leave=False):
            while (now := time.perf_counter()) < next_time:
                self.executor.spin_once(timeout_sec=next_time - now)
            stamp_ns = first_sec * 1_000_000_000 + int(index * period * 1e9)
            sec, nanosec = divmod(stamp_ns, 1_000_000_000)
            for msg in (rgb_msg, depth_msg):
                msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nanosec
            self.sent[(sec, nanosec)] = time.perf_counter()
            self.rgb_pub.publish(rgb_msg)
            self.depth_pub.publish(depth_msg)
            next_time += period
        return time.perf_counter() - start

    def latest_diagnostics(self, timeout: float = 5.0) -> dict[str, str]:
        count = len(self.diagnostics)
        self.spin_until(lambda: len(self.diagnostics) > count, timeout)
        return self.diagnostics[-1] if self.diagnostics else {}

    def drained_diagnostics(self, timeout: float = 30.0) -> dict[str, str]:
        """Diagnostics once every pair the node made is processed, dropped or idle."""
        def settled(values):
            done = sum(int(values.get(k, 0)) for k in ("frames_processed", "pairs_dropped",
                                                       "pairs_idle", "processing_errors"))
            return done >= int(values.get("pairs", 0))
        deadline = time.perf_counter() + timeout
        values = self.latest_diagnostics()
        while not settled(values) and time.perf_counter() < deadline:
            values = self.latest_diagnostics()
        return values

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def start_node(engine: str, namespace: str, backend: str, threads: int,
               confidence: bool) -> subprocess.Popen:
    command = [sys.executable, "-m", "cen_perception.node", "--ros-args",
               "-r", f"__ns:={namespace}", "-p", f"engine_path:={engine}",
               "-p", f"backend:={backend}", "-p", f"num_threads:={threads}",
               "-p", "qos:=reliable", "-p", "diagnostics_period:=0.5",
               "-p", f"publish_confidence:={str(confidence).lower()}",
               "--log-level", "warn"]
    return subprocess.Popen(command)


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
        # Both processes (this one and the node it starts) read it when rclpy starts.
        os.environ["FASTRTPS_DEFAULT_PROFILES_FILE"] = FASTDDS_LARGE_IMAGES_PROFILE
        os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = FASTDDS_LARGE_IMAGES_PROFILE
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    namespace = f"/bench_{uuid.uuid4().hex[:8]}"
    node_proc = start_node(args.engine, namespace, args.backend, args.threads,
                           confidence="confidence" in args.outputs.split(","))
    bench = None
    try:
        bench = Bench(namespace, args.outputs.split(","))
        bench.wait_connected(node_proc)

        # Warm up (the first inference is slow, allocations) one pair at a time, so that no
        # measured pair waits behind it; then the measured run at camera size.
        bgr, depth_mm = synthetic_frame(args.height, args.width)
        rgb_msg, depth_msg = encode(bgr, "bgr8"), encode(depth_mm, "16UC1")
        for index in range(WARMUP_PAIRS):
            bench.play(rgb_msg, depth_msg, 1, 1.0, first_sec=100 + index)
            bench.spin_until(lambda: len(bench.arrived) > index, 120.0)
        before = bench.drained_diagnostics()
        bench.sent.clear()
        bench.arrived.clear()
        print(f"playing {args.frames} frames of {args.width}x{args.height} at {args.rate:g} Hz",
              file=sys.stderr)
        seconds = bench.play(rgb_msg, depth_msg, args.frames, args.rate, first_sec=1000,
                             progress=True)
        diag = bench.drained_diagnostics()
        bench.spin_until(lambda: len(bench.arrived) >= len(bench.sent), 2.0)
        latencies = [(bench.arrived[k] - t) * 1e3
                     for k, t in bench.sent.items() if k in bench.arrived]

        # Memory: many small frames through the whole path.
        memory = None
        if args.small_frames:
            small_bgr, small_depth = synthetic_frame(48, 64, seed=1)
            small_rgb_msg, small_depth_msg = encode(small_bgr, "bgr8"), encode(small_depth, "16UC1")
            warm = max(200, args.small_frames // 20)
            bench.play(small_rgb_msg, small_depth_msg, warm, args.small_rate, first_sec=200_000)
            rss_start = rss_mb(node_proc.pid)
            print(f"playing {args.small_frames} frames of 64x48 at {args.small_rate:g} Hz",
                  file=sys.stderr)
            bench.play(small_rgb_msg, small_depth_msg, args.small_frames, args.small_rate,
                       first_sec=300_000, progress=True)
            bench.spin_until(lambda: False, 1.0)
            rss_end = rss_mb(node_proc.pid)
            memory = (rss_start, rss_end)
    finally:
        if bench is not None:
            bench.close()
        if node_proc.poll() is None:
            node_proc.send_signal(signal.SIGINT)
            try:
                node_proc.wait(15)
            except subprocess.TimeoutExpired:
                node_proc.kill()

    rows = []
    for stage in ("codec", "wait", "resize", "infer", "visualize", "publish", "end_to_end",
                  "overhead"):
        if f"{stage}_ms_median" in diag:
            rows.append([f"node {stage}"]
                        + [diag[f"{stage}_ms_{s}"] for s in ("median", "p95", "max")])
    median, p95, worst = percentiles(latencies)
    rows.append(["camera -> labels"] + [f"{v:.3f}" for v in (median, p95, worst)])
    print(format_table(f"\nlatency (ms), {args.width}x{args.height}, engine {args.engine}, "
                       f"backend {diag.get('backend', '?')}",
                       ["stage", "median", "p95", "max"], rows))

    infer_median = float(diag.get("infer_ms_median", "nan"))
    processed = int(diag.get("frames_processed", 0)) - int(before.get("frames_processed", 0))
    dropped = int(diag.get("pairs_dropped", 0)) - int(before.get("pairs_dropped", 0))
    counts = [
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
    if memory is not None:
        start_mb, end_mb = memory
        counts += [[f"node RSS before {args.small_frames} small frames (MB)", f"{start_mb:.1f}"],
                   ["node RSS after (MB)", f"{end_mb:.1f}"],
                   ["RSS growth (MB)", f"{end_mb - start_mb:+.1f}"]]
    print(format_table("\nthroughput and memory", ["measure", "value"], counts))
    return 0


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
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--outputs", default="labels,color,overlay",
                        help="outputs to subscribe to, comma separated (default %(default)s)")
    parser.add_argument("--small-frames", type=int, default=10_000,
                        help="64x48 frames for the memory check (0 = skip; default 10000)")
    parser.add_argument("--small-rate", type=float, default=400.0,
                        help="rate of the small frames in Hz (default 400)")
    parser.add_argument("--fastdds-shm", action="store_true",
                        help="run both sides with a Fast DDS profile whose shared-memory "
                             "transport carries whole images (the shipped fastdds_large_images.xml)")
    args = parser.parse_args(argv)
    if min(args.rate, args.small_rate) <= 0 or min(args.frames, args.width, args.height) < 1:
        parser.error("rates, frames and sizes must be positive")
    unknown = set(args.outputs.split(",")) - {"labels", "color", "overlay", "confidence"}
    if unknown or "labels" not in args.outputs.split(","):
        parser.error("--outputs must include labels and name only labels, color, overlay, "
                     "confidence")
    try:
        return run(args)
    except BenchError as exc:
        print(f"cen-perception-bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
