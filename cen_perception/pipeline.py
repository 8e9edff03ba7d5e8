"""The node's frame pipeline without ROS: pair first, decode once, segment, render.

    camera callbacks --push()--> RgbdSync --newest pair--> [raw]  (undecoded messages)
      decode thread: takes the newest raw pair when the worker is about to be free for it
      (its frame is past inference, or inference would rarely last longer), decodes it
      (a compressed depth image beside the colour image, on a helper thread)
      --> [ready] --> worker thread: segment, render the outputs, hand them to ``publish``

Callbacks do only cheap work (a stamp, a counter), so the camera's DDS history never
overflows. A pair replaced in ``raw`` before the decode thread took it was never decoded
(counted as dropped); the decode thread takes a pair only when ``ready`` is empty, so every
decoded pair is processed. Both threads are ``Stage``s: a stage that dies is seen by
``FramePipeline.check()`` (the node's diagnostics timer calls it), reported and restarted.
"""
from __future__ import annotations

import collections
import ctypes
import threading
import time
import traceback
from concurrent.futures import Executor, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from .camera_images import ColorImage, DepthImage
from .image_codec import (
    ImageCodecError,
    claimed_size,
    color_image_from_message,
    depth_image_from_message,
    is_compressed,
)
from .input_health import DepthWatch
from .sync import Mailbox, Pair, RgbdSync, stamp_to_ns

# callback: a camera callback's own time per message. decode: both images of a pair, in the
# decode thread. wait: a pair's time in the mailboxes, decoding taken out (up to one inference
# when the model is slower than the camera). overhead: the node's own work, end to end minus
# inference minus wait (decoding, resizing, drawing, the cloud, publishing).
STAGES = ("callback", "decode", "wait", "resize", "infer", "visualize", "cloud", "publish",
          "end_to_end", "overhead")
STAGE_POLL_S = 0.5


class LatencyWindow:
    """The last ``size`` samples (ms) of each stage, for median / p95 / max."""

    def __init__(self, stages=STAGES, size: int = 1000) -> None:
        self._samples = {stage: collections.deque(maxlen=size) for stage in stages}
        self._lock = threading.Lock()

    def add(self, timings: dict[str, float]) -> None:
        with self._lock:
            for stage, ms in timings.items():
                if stage in self._samples:
                    self._samples[stage].append(ms)

    def summary(self) -> dict[str, tuple[float, float, float]]:
        """stage -> (median, p95, max) in ms, for stages with samples."""
        with self._lock:
            copies = {stage: list(samples) for stage, samples in self._samples.items() if samples}
        return {stage: (float(np.median(v)), float(np.percentile(v, 95)), float(np.max(v)))
                for stage, v in copies.items()}


class Counters:
    """Event counts, shared between callbacks, the pipeline's threads and diagnostics."""

    NAMES = ("rgb_received", "depth_received", "bad_messages", "pairs", "pairs_color_only",
             "pairs_dropped", "pairs_decoded", "pairs_decoded_reduced", "pairs_idle",
             "frames_processed", "processing_errors", "stage_restarts", "labels_published",
             "color_published", "overlay_published", "confidence_published",
             "points_published", "camera_info_published")

    def __init__(self) -> None:
        self._values = dict.fromkeys(self.NAMES, 0)
        self._lock = threading.Lock()

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._values[name] += n

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._values)


class RunningMean:
    """An exponential moving average of a duration and of its spread (mean absolute
    deviation): recent frames count most, one outlier little."""

    def __init__(self, weight: float = 0.2) -> None:
        self.value, self.spread, self._weight, self._empty = 0.0, 0.0, weight, True

    def add(self, sample: float) -> None:
        if self._empty:
            self.value, self._empty = sample, False
            return
        self.spread += self._weight * (abs(sample - self.value) - self.spread)
        self.value += self._weight * (sample - self.value)

    @property
    def high(self) -> float:
        """A duration rarely exceeded (about the 95th percentile for a normal spread)."""
        return self.value + 2.5 * self.spread


class Stage:
    """A thread that handles the items of a one-slot mailbox, one at a time.

    ``handle(item)`` may raise: ``on_error(item, exc)`` hears of it and the stage goes on.
    ``gate(timeout)`` (optional) must return True before the stage takes the next item;
    ``between()`` (optional) runs before each wait for an item.
    """

    def __init__(self, name: str, inbox: Mailbox, handle: Callable[[Any], None],
                 on_error: Callable[[Any, BaseException], None],
                 gate: Optional[Callable[[float], bool]] = None,
                 between: Optional[Callable[[], None]] = None) -> None:
        self.name, self.inbox = name, inbox
        self._handle, self._on_error, self._gate, self._between = handle, on_error, gate, between
        self._thread: Optional[threading.Thread] = None
        self.restarts = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self.inbox.closed:
            if self._between is not None:
                self._between()
            if self._gate is not None and not self._gate(STAGE_POLL_S):
                continue
            item = self.inbox.get(timeout=STAGE_POLL_S)
            if item is None:
                continue
            try:
                self._handle(item)
            except Exception as exc:  # one bad item must not stop the stage
                if not self.inbox.closed:
                    self._on_error(item, exc)

    @property
    def dead(self) -> bool:
        """The thread ended although nobody stopped it."""
        return (self._thread is not None and not self._thread.is_alive()
                and not self.inbox.closed)

    def restart(self) -> None:
        self.restarts += 1
        self.start()

    def stop(self, timeout: float) -> bool:
        """Close the inbox and wait for the item in hand; True when the thread has ended."""
        self.inbox.close()
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True


@dataclass
class Frame:
    """One camera message, undecoded, as it waits in the synchronizer."""

    msg: Any
    received: float    # time.perf_counter() when its callback started
    stamp_ns: int
    size: tuple[int, int]   # (width, height) its header claims, checked against the limits


@dataclass
class DecodedPair:
    """A pair ready for the worker, each image decoded as far as the camera's own layout
    (converted to RGB and metres only at the sizes they are used: see ``camera_images``)."""

    header: Any        # the RGB image's header: every output carries it
    color: ColorImage
    depth: DepthImage
    completed: float   # perf_counter when the pair was complete (its later message arrived)
    decode_ms: float
    rgb_stamp_ns: int


@dataclass(frozen=True)
class DecodeOptions:
    depth_scale: Optional[float]   # None: REP 118
    max_pixels: int


def decode_pair(pair: Pair, options: DecodeOptions, no_depth: Callable[[tuple], DepthImage],
                beside: Optional[Executor] = None,
                least_color_hw: Optional[tuple[int, int]] = None) -> DecodedPair:
    """Decode a synchronized pair; depth must not be larger than its colour image. A JPEG
    colour image is decoded reduced while it stays at least ``least_color_hw``.

    A compressed depth image is decoded on ``beside`` (when given) while the colour image is
    decoded here: OpenCV's decoders let go of the GIL, so the two take the time of the longer.
    Raises ``ImageCodecError`` naming the stream (``BadMessage``) for a message it cannot use.
    """
    start = time.perf_counter()
    rgb_frame, depth_frame = pair.rgb, pair.depth
    depth_job = None
    if depth_frame is not None and beside is not None and is_compressed(depth_frame.msg):
        depth_job = beside.submit(_decode_depth, depth_frame, options, rgb_frame.size)
    try:
        color = color_image_from_message(rgb_frame.msg, max_pixels=options.max_pixels,
                                         least_hw=least_color_hw)
    except ImageCodecError as exc:
        raise BadMessage("rgb", str(exc)) from None
    finally:
        if depth_job is not None:
            wait([depth_job])   # one pair in hand at a time, even when colour failed
    if depth_frame is None:   # colour only: depth invalid everywhere
        depth = no_depth(color.size_hw)
    elif depth_job is not None:
        depth = depth_job.result()
    else:
        depth = _decode_depth(depth_frame, options, rgb_frame.size)
    completed = max(rgb_frame.received, depth_frame.received if depth_frame else 0.0)
    return DecodedPair(rgb_frame.msg.header, color, depth, completed,
                       (time.perf_counter() - start) * 1e3, pair.rgb_stamp_ns)


def _decode_depth(frame: Frame, options: DecodeOptions, color_size: tuple[int, int]
                  ) -> DepthImage:
    try:
        return depth_image_from_message(frame.msg, options.depth_scale,
                                        max_pixels=options.max_pixels, max_size=color_size)
    except ImageCodecError as exc:
        raise BadMessage("depth", str(exc)) from None


class BadMessage(ImageCodecError):
    """A camera message the pipeline cannot use; ``stream`` says which camera topic."""

    def __init__(self, stream: str, reason: str) -> None:
        super().__init__(f"{stream}: {reason}")
        self.stream, self.reason = stream, reason


class FramePipeline:
    """Camera messages in, segmented frames out: see the module docstring.

    ``process(decoded)`` runs on the worker thread for each decoded pair; ``report`` hears of
    bad messages and failed frames (the node logs them). ``between_frames()`` runs on the
    worker thread between frames (the node swaps engines there).
    """

    def __init__(self, sync: RgbdSync, options: DecodeOptions, depth_timeout: float,
                 process: Callable[[DecodedPair], None], report: "PipelineReport",
                 between_frames: Callable[[], None]) -> None:
        self.sync, self.options, self.depth_timeout = sync, options, depth_timeout
        self.counters, self.latency, self.report = Counters(), LatencyWindow(), report
        self.last_stamps: dict[str, Optional[int]] = {"rgb": None, "depth": None}
        self.latest_depth: Optional[DepthImage] = None
        self._color_without_depth_since: Optional[float] = None
        self._no_depth: dict[tuple, DepthImage] = {}
        self.raw: Mailbox[Pair] = Mailbox()
        self.ready: Mailbox[DecodedPair] = Mailbox()
        self._process = process
        self._last = (time.monotonic(), self.counters.snapshot())   # for rates
        # When the worker started its frame, and how long inferences and decodes take (s).
        self._busy_since: Optional[float] = None
        self._infer_s, self._decode_s = RunningMean(), RunningMean()
        self._inferred = threading.Event()   # the worker's frame is past inference
        self._beside = ThreadPoolExecutor(1, thread_name_prefix="decode_depth")
        self.stages = [Stage("decode", self.raw, self._decode, self._decode_failed,
                             gate=self._decode_due),
                       Stage("segmentation_worker", self.ready, self._work, self._frame_failed,
                             between=between_frames)]

    # -- camera side (the executor thread) ------------------------------------------------
    def push(self, stream: str, msg: Any, received: float) -> None:
        """A camera message arrived (``received`` = perf_counter at its callback's start).

        Only its header is checked here (``BadMessage`` when it cannot be used); it is decoded
        only if it pairs and the worker takes the pair."""
        self.counters.add(f"{stream}_received")
        try:
            size = claimed_size(msg, "color" if stream == "rgb" else "depth",
                                self.options.max_pixels)
        except ImageCodecError as exc:
            raise BadMessage(stream, str(exc)) from None
        stamp_ns = stamp_to_ns(msg.header.stamp)
        self.last_stamps[stream] = stamp_ns
        frame = Frame(msg, received, stamp_ns, size)
        if stream == "depth":
            self._color_without_depth_since = None
            self._put(self.sync.push_depth(stamp_ns, frame))
        elif self._depth_missing():
            self._put(Pair(frame, None, stamp_ns, stamp_ns), color_only=True)
        else:
            pair = self.sync.push_rgb(stamp_ns, frame)
            if pair is not None:
                self._color_without_depth_since = None
            self._put(pair)

    def _depth_missing(self) -> bool:
        """Colour has kept coming for ``depth_timeout`` s without any depth.

        Measured from the first colour image that found no depth partner since the last depth
        image or pair, so a slow camera (colour a little ahead of its depth) never counts as
        depth missing.
        """
        if self.depth_timeout <= 0:
            return False
        now = time.monotonic()
        if self._color_without_depth_since is None:
            self._color_without_depth_since = now
        return now - self._color_without_depth_since > self.depth_timeout

    def _put(self, pair: Optional[Pair], color_only: bool = False) -> None:
        if pair is None:
            return
        self.counters.add("pairs_color_only" if color_only else "pairs")
        if self.raw.put(pair):
            self.counters.add("pairs_dropped")

    # -- decode thread ----------------------------------------------------------------------
    def _decode_due(self, timeout: float) -> bool:
        """Time to take the newest pair: the worker has taken the last one and its frame is
        past inference (drawing and publishing left), or its inference would rarely still run
        once this decode ends. Decoding that late hands the worker the newest pair the camera
        has sent instead of one that waited a whole inference."""
        if not self.ready.wait_empty(timeout):
            return False
        busy_since = self._busy_since
        if busy_since is None or self._inferred.is_set():
            return True
        delay = busy_since + self._infer_s.high - self._decode_s.value - time.perf_counter()
        if delay > 0:
            self._inferred.wait(min(delay, timeout))
        return self._inferred.is_set() or delay <= timeout

    def inference_done(self) -> None:
        """Called by ``process`` when its frame's inference has ended."""
        if self._busy_since is not None:
            self._infer_s.add(time.perf_counter() - self._busy_since)
        self._inferred.set()

    def _decode(self, pair: Pair) -> None:
        start = time.perf_counter()
        width, height = pair.rgb.size
        # Only a compressed image can be decoded smaller: ask the owner only then.
        least = (self.report.least_color_size((height, width)) if is_compressed(pair.rgb.msg)
                 else None)
        decoded = decode_pair(pair, self.options, self._invalid_depth, self._beside, least)
        self._decode_s.add(time.perf_counter() - start)
        self.counters.add("pairs_decoded")
        if decoded.color.reduced:
            self.counters.add("pairs_decoded_reduced")
        if pair.depth is not None:
            self.latest_depth = decoded.depth
        self.ready.put(decoded)

    def _invalid_depth(self, shape: tuple) -> DepthImage:
        if shape not in self._no_depth:
            self._no_depth = {shape: DepthImage(np.zeros(shape, np.float32))}
        return self._no_depth[shape]

    def _decode_failed(self, pair: Pair, exc: BaseException) -> None:
        self.counters.add("bad_messages")
        if isinstance(exc, BadMessage):
            self.report.bad_message(exc.stream, exc.reason)
        else:  # a decoder failing in a way it should not: still a bad message, with its trace
            self.report.bad_message("pair", f"{type(exc).__name__}: {exc}",
                                    traceback.format_exc())

    # -- worker thread ----------------------------------------------------------------------
    def _work(self, decoded: DecodedPair) -> None:
        self._inferred.clear()
        self._busy_since = time.perf_counter()
        try:
            self._process(decoded)
        finally:
            self._busy_since = None
            self._inferred.set()

    def _frame_failed(self, decoded: DecodedPair, exc: BaseException) -> None:
        self.counters.add("processing_errors")
        self.report.frame_failed(decoded.rgb_stamp_ns, exc, traceback.format_exc())

    # -- life -------------------------------------------------------------------------------
    def start(self) -> None:
        for stage in self.stages:
            stage.start()

    def check(self) -> list[str]:
        """Restart stages that died; their names (empty when all run)."""
        dead = [stage for stage in self.stages if stage.dead]
        for stage in dead:
            self.counters.add("stage_restarts")
            stage.restart()
        return [stage.name for stage in dead]

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop both threads (the frame in hand finishes); True when both have ended."""
        stopped = all([stage.stop(timeout) for stage in self.stages])
        self._beside.shutdown(wait=False)
        return stopped

    def record(self, decoded: DecodedPair, timings: dict[str, float], picked: float,
               published: float) -> None:
        """A frame is out: its stage times (``picked``: the worker took it; ``published``:
        publishing began), with end to end counted from the pair's completion."""
        done = time.perf_counter()
        end_to_end = (done - decoded.completed) * 1e3
        wait = (picked - decoded.completed) * 1e3 - decoded.decode_ms
        self.latency.add({**timings, "decode": decoded.decode_ms, "wait": wait,
                          "publish": (done - published) * 1e3, "end_to_end": end_to_end,
                          "overhead": end_to_end - timings["infer"] - wait})
        self.counters.add("frames_processed")

    def snapshot_fields(self, now: float) -> dict[str, Any]:
        """Counts, their change since the last call, pairing, stamps and latency, for
        ``diagnostics.Snapshot``."""
        counts, (then, old) = self.counters.snapshot(), self._last
        self._last = (now, counts)
        return dict(elapsed=now - then, counts=counts,
                    delta={name: counts[name] - old[name] for name in counts},
                    sync=self.sync.stats.as_dict(), last_stamps=dict(self.last_stamps),
                    latency=self.latency.summary())

    def sample_depth(self, watch: DepthWatch) -> None:
        """Feed the newest decoded depth (if any came since the last call) to ``watch``."""
        depth, self.latest_depth = self.latest_depth, None
        if depth is not None:
            watch.add(depth.metres())


class PipelineReport:
    """What the pipeline tells its owner (the node logs these, throttled), and asks of it."""

    def bad_message(self, stream: str, reason: str, trace: str = "") -> None:
        raise NotImplementedError

    def frame_failed(self, stamp_ns: int, exc: BaseException, trace: str) -> None:
        raise NotImplementedError

    def least_color_size(self, camera_hw: tuple[int, int]) -> Optional[tuple[int, int]]:
        """How small a camera image of ``camera_hw`` may be decoded (None: whole)."""
        return None


def keep_freed_memory_for_reuse() -> None:
    """Ask glibc to reuse freed frame buffers instead of returning them to the system.

    Every frame allocates and frees several arrays of about a megabyte. By default glibc maps
    each one afresh and the kernel zero-fills its pages on first touch, which costs more than
    the copies themselves (about 0.5 ms per 640x480 colour image).
    """
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc: nothing to tune
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 64 << 20)
    mallopt(m_trim_threshold, 256 << 20)
