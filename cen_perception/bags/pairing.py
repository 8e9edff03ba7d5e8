"""What every command that reads RGB-D pairs from a bag shares: the bag error, the pairing
settings of ``bag.rgbd_pairs`` with their command-line options and their checks.

Kept apart from ``bag`` so that a command's parser can be built without ``rosbags``.
"""
from __future__ import annotations

import math
from typing import Any, Optional

from ..errors import CenPerceptionError

DEFAULT_SLOP = 0.02
DEFAULT_QUEUE_SIZE = 10


class BagError(CenPerceptionError):
    """A bag cannot be read or written as asked; the message is one readable line."""


def check_pairing(slop: float = DEFAULT_SLOP, depth_scale: Optional[float] = None,
                  queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
    """BagError unless the pairing settings of ``rgbd_pairs`` are usable: a positive slop in
    seconds, a queue of at least one message, and a depth scale that is None (REP 118) or a
    positive number of metres per unit. Call it before creating any output."""
    if not (math.isfinite(slop) and slop > 0):
        raise BagError(f"slop must be a positive number of seconds, got {slop}")
    if queue_size < 1:
        raise BagError(f"queue size must be at least 1, got {queue_size}")
    if depth_scale is not None and not (math.isfinite(depth_scale) and depth_scale > 0):
        raise BagError(f"depth scale must be a positive number of metres per unit, got "
                       f"{depth_scale}")


def add_pairing_arguments(parser: Any, queue_size: bool = False) -> None:
    """The command-line options of ``rgbd_pairs``: topics, depth scale, slop (and the queue
    size), the same in every command that reads RGB-D pairs from a bag."""
    parser.add_argument("--rgb-topic",
                        help="colour topic, sensor_msgs/Image or CompressedImage (JPEG/PNG) "
                             "(default: the only plausible one)")
    parser.add_argument("--depth-topic",
                        help="depth topic, sensor_msgs/Image or CompressedImage "
                             "(compressedDepth) (default: the only plausible one)")
    parser.add_argument("--depth-scale", type=float, metavar="M",
                        help="metres per depth unit in the bag, e.g. 0.0001 for tenths of a "
                             "millimetre (default: REP 118, 16UC1 in mm and 32FC1 in m)")
    parser.add_argument("--slop", type=float, default=DEFAULT_SLOP, metavar="S",
                        help="largest stamp difference of a pair, in seconds "
                             "(default %(default)s)")
    if queue_size:
        parser.add_argument("--queue-size", type=int, default=DEFAULT_QUEUE_SIZE,
                            help="messages per topic kept waiting for a partner "
                                 "(default %(default)s)")
