"""What the node knows about its camera inputs, without ROS: QoS choice, silent topics, depth.

``choose_reliability`` is the ``qos: auto`` rule (as rosbag2 records): subscribe reliable when
every publisher offers reliable, best effort otherwise. ``StreamWatch`` follows one camera
topic (publishers seen, messages received, incompatible QoS events) and says, in words an
operator can act on, why a topic with a publisher delivers nothing. ``DepthWatch`` follows the
valid-depth median of incoming frames and says when it looks like wrong units.

The causes come from measurements with Fast DDS (ROS 2 Jazzy's default middleware) on one host:
camera-size images travel through the *publisher's* shared-memory segment, 512 KB by default;
a best-effort subscription then loses most large images, and a best-effort camera loses them
whatever the subscriber does unless the camera's own process loads a profile with a larger
segment (``fastdds_large_images.xml``, shipped with this package).
"""
from __future__ import annotations

import collections
import pathlib
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from .cloud import Intrinsics

RELIABLE, BEST_EFFORT = "reliable", "best_effort"
PROFILE_FILE = pathlib.Path(__file__).with_name("fastdds_large_images.xml")
PROFILE_VARIABLES = ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE")
# Indoors nothing is this far; a median beyond it is almost always a unit error.
IMPLAUSIBLE_DEPTH_M = 10.0
# "Far outside the training range": this many times beyond its bounds.
DEPTH_RANGE_FACTOR = 3.0


def choose_reliability(offered: Sequence[str]) -> Optional[str]:
    """``qos: auto``: reliable when every publisher offers reliable, else best effort.

    ``offered`` holds each publisher's reliability (``RELIABLE`` or ``BEST_EFFORT``); with no
    publisher there is nothing to follow yet (None).
    """
    if not offered:
        return None
    return RELIABLE if all(value == RELIABLE for value in offered) else BEST_EFFORT


def profile_remedy() -> str:
    return (f"export {' and '.join(PROFILE_VARIABLES)}={PROFILE_FILE.name} (installed in "
            "share/cen_perception/config) in the camera driver's process, or start the camera "
            "from segmentation.launch.py")


@dataclass
class StreamWatch:
    """One camera topic: who publishes, what arrives, and why nothing does."""

    name: str                       # "rgb" or "depth"
    topic: str
    started: float                  # monotonic seconds
    reliability: Optional[str] = None           # the subscription's, None before subscribing
    offered: tuple[str, ...] = ()               # each publisher's reliability
    last_received: Optional[float] = None
    incompatible_events: int = 0
    incompatible_policy: str = ""
    lost: int = 0                               # messages the middleware reports lost
    _silent_since: Optional[float] = field(default=None, repr=False)

    def received(self, now: float) -> None:
        self.last_received = now

    def incompatible(self, total: int, policy: str) -> None:
        self.incompatible_events = total
        self.incompatible_policy = policy

    def set_publishers(self, offered: Sequence[str], now: float) -> None:
        if offered and not self.offered:
            self._silent_since = now  # silence counts from the first publisher on
        self.offered = tuple(offered)

    def silent_for(self, now: float) -> float:
        """Seconds without a message while a publisher exists (0 when none does)."""
        if not self.offered:
            return 0.0
        since = max(t for t in (self.last_received, self._silent_since, self.started)
                    if t is not None)
        return now - since

    def stall(self, now: float, timeout: float) -> Optional[str]:
        """Why the topic is silent with a publisher present, or None when all is well."""
        silent = self.silent_for(now)
        if not self.offered or silent < timeout:
            return None
        count = len(self.offered)
        publishers = f"{count} publisher{'s are' if count > 1 else ' is'} there"
        head = f"no {self.name} images for {silent:.1f} s on {self.topic} although {publishers}"
        return f"{head}: {self.cause()}"

    def cause(self) -> str:
        offered = set(self.offered)
        if self.incompatible_events or (self.reliability == RELIABLE and BEST_EFFORT in offered):
            policy = self.incompatible_policy or "RELIABILITY"
            return (f"QoS mismatch ({policy}): the camera offers best effort, the node requests "
                    "reliable; set qos: auto or sensor_data")
        if self.reliability == BEST_EFFORT and offered == {RELIABLE}:
            return ("best-effort subscription to a reliable camera: large images are lost in "
                    "the default transport; set qos: auto or reliable")
        if BEST_EFFORT in offered:
            return ("frames likely too large for the camera process's shared-memory segment "
                    "(Fast DDS default 512 KB); " + profile_remedy() + ", or make the camera "
                    "publish reliable")
        return "the publisher sends nothing: check that the camera is streaming"


class DepthWatch:
    """The valid-depth median of recent frames against what the model was trained on."""

    def __init__(self, depth_range_m: Sequence[float] = (), window: int = 10) -> None:
        self.depth_range_m = tuple(float(v) for v in depth_range_m)
        self.medians: collections.deque = collections.deque(maxlen=window)

    @staticmethod
    def valid_median(depth: np.ndarray, step: int = 8) -> Optional[float]:
        """Median of the valid (> 0) pixels on a ``step`` grid, or None when there are none."""
        sample = depth[::step, ::step]
        valid = sample[sample > 0]
        return float(np.median(valid)) if valid.size else None

    def add(self, depth: np.ndarray) -> Optional[float]:
        median = self.valid_median(depth)
        if median is not None:
            self.medians.append(median)
        return median

    def problem(self) -> Optional[str]:
        if not self.medians:
            return None
        median = float(np.median(self.medians))
        if self.depth_range_m:
            low, high = self.depth_range_m
            if median > high * DEPTH_RANGE_FACTOR or median < low / DEPTH_RANGE_FACTOR:
                return (f"depth median {median:.2f} m is far outside the training range "
                        f"{low:.2f}-{high:.2f} m: wrong units? set depth_scale")
            return None
        if median > IMPLAUSIBLE_DEPTH_M:
            return (f"depth median {median:.1f} m is implausible indoors: wrong units? "
                    "set depth_scale")
        return None


__all__ = ["RELIABLE", "BEST_EFFORT", "PROFILE_FILE", "PROFILE_VARIABLES", "choose_reliability",
           "profile_remedy", "StreamWatch", "DepthWatch"]


class CameraInfoWatch:
    """The colour camera's newest camera info, its intrinsics, and whether it is missing."""

    def __init__(self) -> None:
        self.msg = None
        self._intrinsics: Optional[tuple] = None   # (msg, Intrinsics or None, error)
        self._wanted_since: Optional[float] = None

    def received(self, msg) -> None:
        self.msg = msg

    def intrinsics(self):
        """(``cloud.Intrinsics`` or None, why it is None) of the newest camera info."""
        msg = self.msg
        if msg is None:
            return None, ""
        if self._intrinsics is None or self._intrinsics[0] is not msg:
            try:
                self._intrinsics = (msg, Intrinsics.from_k(msg.k, msg.width, msg.height), "")
            except ValueError as exc:
                self._intrinsics = (msg, None, f"camera_info: {exc}")
        return self._intrinsics[1], self._intrinsics[2]

    def missing(self, cloud_wanted: bool, now: float, timeout: float) -> bool:
        """The cloud has been wanted for ``timeout`` s and no camera info came."""
        if self.msg is not None or not cloud_wanted:
            self._wanted_since = None
            return False
        if self._wanted_since is None:
            self._wanted_since = now
        return now - self._wanted_since >= timeout
