"""``cen-perception-transport-check``: what the installed middleware delivers for camera images.

Two processes on this host, a camera (publisher) and a subscriber, started by this tool with
the same environment, send synthetic images over real DDS for every cell of a matrix: image
size x encoding (rgb8, 16UC1) x publisher reliability x subscriber reliability x rate, with
and without the shipped Fast DDS profile (``fastdds_large_images.xml``; "with" exports both
``FASTRTPS_DEFAULT_PROFILES_FILE``, read by Fast DDS 2.x, and
``FASTDDS_DEFAULT_PROFILES_FILE``, read by Fast DDS 3.x, to both processes). Each cell runs on
a topic of its own for ``--seconds`` (at least ``--min-frames`` frames) and reports the share
of published frames the subscriber received and their median latency (header stamp, taken
just before ``publish``, to the subscriber's callback; one host, one clock). The camera
publishes a serialized message and the subscriber takes it serialized, as C++ nodes do, so
the figures are the middleware's rather than Python's message conversion. A best-effort
publisher with a reliable subscriber is incompatible QoS (DDS never matches them) and is not
run.

It also reports the Fast DDS shared-memory segments each process maps, read from
``/proc/<pid>/maps``: the profile is loaded when the camera's segment has the profile's size.
``--pid PID`` reports them for a running process instead, e.g. a camera driver.

``--busy-model MODEL`` keeps the CPU as busy as a node running MODEL does while it measures:
a third process runs the model with ONNX Runtime on every core, frame after frame (how the
middleware delivers images when the model takes the cores).

Example: ``cen-perception-transport-check --sizes 1920x1080 --rates 30 --profile both``.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import queue
import re
import struct
import subprocess
import sys
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from typing import Optional, Sequence

import numpy as np

from cen_perception.errors import run_command
from cen_perception.input_health import BEST_EFFORT, PROFILE_FILE, PROFILE_VARIABLES, RELIABLE
from cen_perception.sync import NS_PER_S

from .errors import DevToolError
from .rig import STAMP_FORMAT, STAMP_OFFSET

DEFAULT_SIZES = ("640x480", "1280x720", "1920x1080", "2048x1536")
DEFAULT_ENCODINGS = ("rgb8", "16UC1")
DEFAULT_RATES = (1.0, 30.0)
# (publisher, subscriber); best effort -> reliable is incompatible: reported, not run.
QOS_PAIRS = ((RELIABLE, RELIABLE), (RELIABLE, BEST_EFFORT), (BEST_EFFORT, BEST_EFFORT),
             (BEST_EFFORT, RELIABLE))
BYTES_PER_PIXEL = {"rgb8": 3, "bgr8": 3, "mono8": 1, "16UC1": 2, "32FC1": 4}
# Lines of the worker protocol start with this; Fast DDS may print its own lines on stdout.
PROTOCOL_PREFIX = "@@transport-check "
SHM_SEGMENT = re.compile(r"/dev/shm/(fastrtps_[0-9a-f]+)$")
FASTDDS_NS = {"f": "http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles"}


class TransportCheckError(DevToolError):
    """The check cannot run; the message is one line."""


# -- plain helpers ---------------------------------------------------------------------------

def parse_size(text: str) -> tuple[int, int]:
    """``"1920x1080"`` -> (1920, 1080)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match or min(int(match.group(1)), int(match.group(2))) < 1:
        raise TransportCheckError(f"size must be WIDTHxHEIGHT, like 1920x1080, got '{text}'")
    return int(match.group(1)), int(match.group(2))


def qos_compatible(publisher: str, subscriber: str) -> bool:
    """DDS matches a reliable reader only with a reliable writer."""
    return not (publisher == BEST_EFFORT and subscriber == RELIABLE)


def profile_environment(env: dict, profile_file: Optional[str]) -> dict:
    """``env`` with both profile variables set to ``profile_file``, or both removed (None)."""
    env = dict(env)
    for name in PROFILE_VARIABLES:
        if profile_file is None:
            env.pop(name, None)
        else:
            env[name] = str(profile_file)
    return env


def profile_segment_size(profile_file) -> Optional[int]:
    """The largest SHM ``segment_size`` a Fast DDS profile declares (None: no SHM transport)."""
    try:
        root = ET.parse(profile_file).getroot()
    except (OSError, ET.ParseError) as exc:
        raise TransportCheckError(
            f"cannot read the Fast DDS profile {profile_file}: {exc}") from None
    sizes = [int(d.findtext("f:segment_size", "0", FASTDDS_NS))
             for d in root.iter(f"{{{FASTDDS_NS['f']}}}transport_descriptor")
             if d.findtext("f:type", "", FASTDDS_NS) == "SHM"]
    return max(sizes) if sizes else None


def shm_segments(pid: int | str = "self") -> dict[str, int]:
    """Fast DDS shared-memory data segments a process maps: name -> file size in bytes.

    A process maps its own segment (one per shared-memory transport) at start, and another
    process's segment once it has read data from it. Port queues (``fastrtps_port*``) are
    left out.
    """
    try:
        with open(f"/proc/{pid}/maps", encoding="ascii", errors="replace") as maps:
            lines = maps.read().splitlines()
    except OSError as exc:
        raise TransportCheckError(f"cannot read the memory map of process {pid}: {exc}") from None
    segments = {}
    for line in lines:
        match = SHM_SEGMENT.search(line)
        if match:
            path = f"/dev/shm/{match.group(1)}"
            try:
                segments[match.group(1)] = os.stat(path).st_size
            except OSError:
                continue  # unlinked since: its owner has gone
    return segments


def megabytes(size: float) -> str:
    return f"{size / 1e6:.1f} MB"


@dataclasses.dataclass(frozen=True)
class Cell:
    width: int
    height: int
    encoding: str
    publisher: str
    subscriber: str
    rate: float
    profile: bool

    @property
    def image_bytes(self) -> int:
        return self.width * self.height * BYTES_PER_PIXEL[self.encoding]


@dataclasses.dataclass
class CellResult:
    cell: Cell
    published: int = 0
    received: int = 0
    publish_rate: float = float("nan")
    latencies_ms: list = dataclasses.field(default_factory=list)
    incompatible: bool = False

    @property
    def delivered(self) -> float:
        return self.received / self.published if self.published else float("nan")

    @property
    def median_ms(self) -> float:
        return float(np.median(self.latencies_ms)) if self.latencies_ms else float("nan")


def frames_for(rate: float, seconds: float, min_frames: int) -> int:
    return max(min_frames, int(round(rate * seconds)))


# -- worker processes ------------------------------------------------------------------------

class Peer:
    """A worker process (camera or subscriber) driven over JSON lines on stdin/stdout."""

    def __init__(self, role: str, env: dict, timeout: float = 60.0) -> None:
        self.role = role
        self.timeout = timeout
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cen_perception_dev.transport_check", "--worker", role],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
            text=True, bufsize=1)
        self.other_lines: list[str] = []
        self._replies: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.request("hello")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.startswith(PROTOCOL_PREFIX):
                self._replies.put(json.loads(line[len(PROTOCOL_PREFIX):]))
            else:
                self.other_lines = (self.other_lines + [line.rstrip()])[-20:]
        self._replies.put(None)

    def request(self, command: str, timeout: Optional[float] = None, **args) -> dict:
        try:
            self.proc.stdin.write(json.dumps({"command": command, **args}) + "\n")
            self.proc.stdin.flush()
            reply = self._replies.get(timeout=timeout or self.timeout)
        except (OSError, queue.Empty):
            reply = None
        if reply is None:
            output = " | ".join(self.other_lines[-5:])
            raise TransportCheckError(f"the {self.role} process did not answer '{command}'"
                                      + (f": {output}" if output else ""))
        if "error" in reply:
            raise TransportCheckError(f"{self.role} process: {reply['error']}")
        return reply

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def _qos(reliability: str):
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

    if reliability == BEST_EFFORT:
        return qos_profile_sensor_data  # what best-effort camera drivers and subscribers use
    return QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)  # rclpy's default


def _play(publisher, cmd: dict) -> dict:
    """Publish ``cmd["frames"]`` blank images at ``cmd["rate"]``, each stamped when sent."""
    from rclpy.serialization import serialize_message

    from cen_perception.image_codec import ENCODE_FORMATS, encode

    dtype, channels = ENCODE_FORMATS[cmd["encoding"]]
    shape = (cmd["height"], cmd["width"]) + ((channels,) if channels else ())
    # Serialized once; each frame only gets a new stamp, as a C++ driver fills a
    # message without converting it from Python.
    data = bytearray(serialize_message(encode(np.zeros(shape, dtype), cmd["encoding"])))
    period = 1.0 / cmd["rate"]
    start = next_time = time.perf_counter()
    for _ in range(cmd["frames"]):
        while (wait := next_time - time.perf_counter()) > 0:
            time.sleep(wait)
        struct.pack_into(STAMP_FORMAT, data, STAMP_OFFSET, *divmod(time.time_ns(), NS_PER_S))
        publisher.publish(bytes(data))
        next_time += period
    return {"published": cmd["frames"], "seconds": time.perf_counter() - start}


class _WorkerSide:
    """A worker's node and its one publisher (camera) or subscription (subscriber) at a time."""

    def __init__(self, role: str, node) -> None:
        self.role = role
        self.node = node
        self.endpoint = None
        # Latency (ms) of each stamp's first arrival.
        self.arrivals: dict[tuple[int, int], float] = {}

    def on_image(self, serialized: bytes) -> None:
        now_ns = time.time_ns()
        sec, nanosec = struct.unpack_from(STAMP_FORMAT, serialized, STAMP_OFFSET)
        self.arrivals.setdefault((sec, nanosec), (now_ns - sec * NS_PER_S - nanosec) / 1e6)

    def open(self, topic: str, reliability: str) -> None:
        from sensor_msgs.msg import Image

        if self.role == "camera":
            self.endpoint = self.node.create_publisher(Image, topic, _qos(reliability))
        else:
            self.arrivals.clear()
            self.endpoint = self.node.create_subscription(Image, topic, self.on_image,
                                                          _qos(reliability), raw=True)

    def matched(self) -> int:
        return (self.endpoint.get_subscription_count() if self.role == "camera"
                else self.endpoint.get_publisher_count())

    def close(self) -> list[float]:
        latencies = list(self.arrivals.values())
        if self.role == "camera":
            self.node.destroy_publisher(self.endpoint)
        else:
            self.node.destroy_subscription(self.endpoint)
        self.endpoint = None
        self.arrivals.clear()
        return latencies

    def handle(self, cmd: dict) -> dict:
        name = cmd["command"]
        if name == "hello":
            return {"pid": os.getpid()}
        if name == "segments":
            return {"segments": shm_segments()}
        if name == "open":
            self.open(cmd["topic"], cmd["reliability"])
            return {}
        if name == "matched":
            return {"matched": self.matched()}
        if name == "play":
            return _play(self.endpoint, cmd)
        if name == "received":
            return {"received": len(self.arrivals)}
        if name == "close":
            return {"latencies_ms": self.close()}
        return {"error": f"unknown command {name}"}


def _reply(values: dict) -> None:
    sys.stdout.write(PROTOCOL_PREFIX + json.dumps(values) + "\n")
    sys.stdout.flush()


def _worker(role: str) -> int:
    """The camera or subscriber process: one command per stdin line, one reply each."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    rclpy.init()
    node = rclpy.create_node(f"transport_check_{role}_{os.getpid()}")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    side = _WorkerSide(role, node)
    commands: queue.Queue = queue.Queue()

    def read_commands():
        for line in sys.stdin:
            commands.put(json.loads(line))
        commands.put(None)

    threading.Thread(target=read_commands, daemon=True).start()
    try:
        while True:
            try:
                cmd = commands.get_nowait()
            except queue.Empty:
                executor.spin_once(timeout_sec=0.002)
                continue
            if cmd is None:
                break
            try:
                _reply(side.handle(cmd))
            except Exception as exc:  # reported to the driving process, which stops
                _reply({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


# -- the matrix ------------------------------------------------------------------------------

class Pair:
    """A camera process and a subscriber process sharing one environment."""

    def __init__(self, profile_file: Optional[str]) -> None:
        env = profile_environment(os.environ, profile_file)
        self.camera = Peer("camera", env)
        try:
            self.subscriber = Peer("subscriber", env)
        except TransportCheckError:
            self.camera.close()
            raise
        self.namespace = f"/transport_check_{uuid.uuid4().hex[:8]}"
        self._cells = 0

    def segments(self) -> tuple[dict, dict]:
        return (self.camera.request("segments")["segments"],
                self.subscriber.request("segments")["segments"])

    def measure(self, cell: Cell, frames: int, grace: float = 2.0,
                match_timeout: float = 20.0) -> CellResult:
        result = CellResult(cell)
        if not qos_compatible(cell.publisher, cell.subscriber):
            result.incompatible = True
            return result
        self._cells += 1
        topic = f"{self.namespace}/cell{self._cells}"
        self.subscriber.request("open", topic=topic, reliability=cell.subscriber)
        self.camera.request("open", topic=topic, reliability=cell.publisher)
        deadline = time.monotonic() + match_timeout
        while not (self.camera.request("matched")["matched"]
                   and self.subscriber.request("matched")["matched"]):
            if time.monotonic() > deadline:
                raise TransportCheckError(f"camera and subscriber did not match on {topic} "
                                          f"within {match_timeout:g} s")
            time.sleep(0.05)
        time.sleep(0.2)  # both sides matched; let the reliable handshake finish
        played = self.camera.request("play", width=cell.width, height=cell.height,
                                     encoding=cell.encoding, rate=cell.rate, frames=frames,
                                     timeout=frames / cell.rate + 60.0)
        result.published = played["published"]
        result.publish_rate = (played["published"] - 1) / played["seconds"] \
            if played["published"] > 1 and played["seconds"] > 0 else cell.rate
        deadline = time.monotonic() + grace
        while (self.subscriber.request("received")["received"] < result.published
               and time.monotonic() < deadline):
            time.sleep(0.05)
        result.latencies_ms = self.subscriber.request("close")["latencies_ms"]
        result.received = len(result.latencies_ms)
        self.camera.request("close")
        return result

    def close(self) -> None:
        self.camera.close()
        self.subscriber.close()


def build_cells(sizes: Sequence[tuple[int, int]], encodings: Sequence[str],
                rates: Sequence[float], profiles: Sequence[bool],
                qos_pairs: Sequence[tuple[str, str]] = QOS_PAIRS) -> list[Cell]:
    return [Cell(w, h, encoding, publisher, subscriber, rate, profile)
            for profile in profiles for (w, h) in sizes for encoding in encodings
            for rate in rates for publisher, subscriber in qos_pairs]


def run_matrix(cells: Sequence[Cell], profile_file, seconds: float = 2.0, min_frames: int = 4,
               progress: bool = True) -> tuple[list[CellResult], dict]:
    """Measure every cell; returns the results and, per profile setting, the segments
    (camera, subscriber) each process mapped at the end."""
    from tqdm import tqdm

    results, segments = [], {}
    bar = tqdm(total=len(cells), unit="cell", disable=not progress, leave=False)
    try:
        for profile in sorted({c.profile for c in cells}, reverse=True):
            pair = Pair(str(profile_file) if profile else None)
            try:
                for cell in (c for c in cells if c.profile == profile):
                    bar.set_description(f"{'profile' if profile else 'default'} "
                                        f"{cell.width}x{cell.height} {cell.encoding} "
                                        f"{cell.rate:g} Hz")
                    results.append(pair.measure(cell, frames_for(cell.rate, seconds,
                                                                 min_frames)))
                    bar.update()
                segments[profile] = pair.segments()
            finally:
                pair.close()
    finally:
        bar.close()
    return results, segments


# -- reporting -------------------------------------------------------------------------------

QOS_TITLES = {RELIABLE: "reliable", BEST_EFFORT: "best effort"}


def format_cell(result: Optional[CellResult]) -> str:
    if result is None:
        return "-"
    if result.incompatible:
        return "no match (QoS)"
    text = f"{100 * result.delivered:.0f}%"
    if result.latencies_ms:
        text += f" · {result.median_ms:.1f} ms"
    if result.publish_rate < 0.9 * result.cell.rate:
        text += f" (sent at {result.publish_rate:.0f} Hz)"
    return text


def markdown_table(results: Sequence[CellResult]) -> str:
    """One row per profile, image and rate; one column per publisher -> subscriber QoS."""
    pairs = list(dict.fromkeys((r.cell.publisher, r.cell.subscriber) for r in results))
    rows = list(dict.fromkeys((r.cell.profile, r.cell.width, r.cell.height, r.cell.encoding,
                               r.cell.rate) for r in results))
    by_key = {(r.cell.profile, r.cell.width, r.cell.height, r.cell.encoding, r.cell.rate,
               r.cell.publisher, r.cell.subscriber): r for r in results}
    header = ["profile", "image", "rate"] + [
        f"{QOS_TITLES[p]} -> {QOS_TITLES[s]}" for p, s in pairs]
    lines = ["| " + " | ".join(header) + " |",
             "|---|---|---:|" + "---:|" * len(pairs)]
    for profile, w, h, encoding, rate in rows:
        image = f"{w}x{h} {encoding} ({megabytes(w * h * BYTES_PER_PIXEL[encoding])})"
        cells = [format_cell(by_key.get((profile, w, h, encoding, rate, p, s)))
                 for p, s in pairs]
        lines.append("| " + " | ".join(["shipped" if profile else "none", image,
                                        f"{rate:g} Hz"] + cells) + " |")
    return "\n".join(lines)


def describe_segments(segments: dict[str, int]) -> str:
    if not segments:
        return "none"
    return ", ".join(megabytes(size) for size in sorted(segments.values()))


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def fastdds_version() -> str:
    from importlib import metadata

    for name in ("ros-fastrtps", "ros-fastdds"):
        try:
            return f"Fast DDS {metadata.version(name)}"
        except metadata.PackageNotFoundError:
            continue
    return "Fast DDS (version unknown)"


def report_pid(pid: int, profile_file) -> str:
    segments = shm_segments(pid)
    expected = profile_segment_size(profile_file)
    largest = max(segments.values(), default=0)
    lines = [f"process {pid}: Fast DDS shared-memory segments mapped: "
             f"{describe_segments(segments)}"]
    if not segments:
        lines.append("no Fast DDS segment: not a Fast DDS process, or shared memory is off")
    elif expected and largest >= expected:
        lines.append(f"a segment of the profile's size ({megabytes(expected)}) is mapped: "
                     "the profile is loaded (or another process's large segment was read)")
    else:
        lines.append(f"no segment of the profile's size ({megabytes(expected or 0)}): this "
                     "process publishes through the default segment; export "
                     + " and ".join(PROFILE_VARIABLES) + " before starting it")
    return "\n".join(lines)


@contextlib.contextmanager
def busy_cpu(model: Optional[str]):
    """While inside: a process running ``model`` frame after frame (nothing when None)."""
    if model is None:
        yield
        return
    if not os.path.isfile(model):
        raise TransportCheckError(f"model not found: {model}")
    busy = subprocess.Popen([sys.executable, "-m", "cen_perception_dev.transport_check",
                             "--busy-worker", model], stdout=subprocess.PIPE)
    try:
        if busy.stdout.readline().strip() != b"busy":   # the model is open and running
            raise TransportCheckError(f"cannot run {model} to keep the CPU busy")
        yield
    finally:
        busy.terminate()
        busy.wait(10)


def _busy_worker(model: str) -> int:
    from cen_perception.engines import open_engine
    engine = open_engine(model, "onnxruntime", threads=0, spin_wait=False)
    height, width = engine.input_size
    rgb, depth = np.zeros((height, width, 3), np.uint8), np.ones((height, width), np.float32)
    print("busy", flush=True)
    while True:
        engine.infer(rgb, depth)


def run(args: argparse.Namespace) -> int:
    if args.pid is not None:
        print(report_pid(args.pid, args.profile_file))
        return 0
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    encodings = args.encodings.split(",")
    unknown = set(encodings) - set(BYTES_PER_PIXEL)
    if unknown:
        raise TransportCheckError(f"unknown encoding {', '.join(sorted(unknown))}; use "
                                  + ", ".join(BYTES_PER_PIXEL))
    try:
        rates = [float(r) for r in args.rates.split(",")]
    except ValueError:
        raise TransportCheckError(f"rates must be numbers in Hz, got '{args.rates}'") from None
    if min(rates) <= 0:
        raise TransportCheckError("rates must be positive")
    profiles = {"with": [True], "without": [False], "both": [True, False]}[args.profile]
    if True in profiles and not os.path.isfile(args.profile_file):
        raise TransportCheckError(f"Fast DDS profile not found: {args.profile_file}")
    cells = build_cells(sizes, encodings, rates, profiles)
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    with busy_cpu(args.busy_model):
        results, segments = run_matrix(cells, args.profile_file, args.seconds, args.min_frames,
                                       progress=not args.no_progress)
    minutes = (time.monotonic() - started) / 60
    discovery = os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "not set (SUBNET)")
    print(f"{fastdds_version()}, {os.environ.get('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp')}, "
          f"ROS_AUTOMATIC_DISCOVERY_RANGE {discovery}; {cpu_model()}, {os.cpu_count()} cores; "
          f"load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after "
          f"({minutes:.1f} min)")
    print(f"cells: {args.seconds:g} s each, at least {args.min_frames} frames; delivered "
          "frames and median latency (publish to subscriber callback)")
    if args.busy_model:
        print(f"CPU kept busy meanwhile by {os.path.basename(args.busy_model)} on ONNX Runtime, "
              "every core, frame after frame")
    for profile, (camera, subscriber) in segments.items():
        name = f"with {os.path.basename(args.profile_file)}" if profile else "without profile"
        print(f"shared-memory segments {name}: camera {describe_segments(camera)}; "
              f"subscriber {describe_segments(subscriber)}")
    print()
    print(markdown_table(results))
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="cen-perception-transport-check",
        description="Measure how many camera-size images the installed ROS 2 middleware "
                    "delivers between two processes on this host, per size, encoding, QoS "
                    "and rate, with and without the shipped Fast DDS profile; prints a "
                    "markdown table.")
    parser.add_argument("--sizes", default=",".join(DEFAULT_SIZES),
                        help="image sizes WIDTHxHEIGHT, comma separated (default %(default)s)")
    parser.add_argument("--encodings", default=",".join(DEFAULT_ENCODINGS),
                        help="image encodings, comma separated (default %(default)s)")
    parser.add_argument("--rates", default=",".join(f"{r:g}" for r in DEFAULT_RATES),
                        help="camera rates in Hz, comma separated (default %(default)s)")
    parser.add_argument("--profile", choices=("with", "without", "both"), default="both",
                        help="run with the Fast DDS profile exported to both processes, "
                             "without it, or both (default %(default)s)")
    parser.add_argument("--profile-file", default=str(PROFILE_FILE),
                        help="the profile to export (default: the shipped "
                             "fastdds_large_images.xml)")
    parser.add_argument("--seconds", type=float, default=2.0,
                        help="publishing time per cell (default %(default)s)")
    parser.add_argument("--min-frames", type=int, default=4,
                        help="frames per cell at least (default %(default)s)")
    parser.add_argument("--pid", type=int,
                        help="only report the Fast DDS shared-memory segments of this running "
                             "process (is the profile loaded in my camera driver?)")
    parser.add_argument("--busy-model", metavar="MODEL",
                        help="keep the CPU busy meanwhile by running this .onnx model frame "
                             "after frame on every core, as a node running it does")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--worker", choices=("camera", "subscriber"), help=argparse.SUPPRESS)
    parser.add_argument("--busy-worker", metavar="MODEL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return _worker(args.worker)
    if args.busy_worker:
        return _busy_worker(args.busy_worker)
    if args.seconds <= 0 or args.min_frames < 1:
        parser.error("--seconds must be positive and --min-frames at least 1")
    return run_command("cen-perception-transport-check", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
