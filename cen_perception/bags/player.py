"""``cen-perception-play``: publish a recorded bag's image topics on ROS 2.

Reads the bag with ``rosbags`` (sqlite3 or MCAP, no ROS bag tooling needed) and publishes
each message's recorded CDR bytes unchanged with rclpy, each topic with the message type the
bag records for it, so what subscribers receive is exactly what was recorded, header stamps
included: ``sensor_msgs/Image`` topics as Image, image_transport's ``compressed`` and
``compressedDepth`` topics as ``sensor_msgs/CompressedImage``. Messages go out at the recorded
pace (``--rate`` scales it) or as fast as possible (``--fast``).

Example, feeding the segmentation node from a bag::

    cen-perception-play run.mcap --remap /camera/color/image_raw:=rgb/image \\
        --remap /camera/depth/image_raw:=depth/image

and from compressed topics, for the node's ``rgb_transport: compressed`` and
``depth_transport: compressedDepth``::

    cen-perception-play run.mcap \\
        --topics /camera/color/image_raw/compressed /camera/depth/image_raw/compressedDepth \\
        --remap /camera/color/image_raw/compressed:=rgb/image/compressed \\
        --remap /camera/depth/image_raw/compressedDepth:=depth/image/compressedDepth
"""
from __future__ import annotations

import argparse
import importlib
import pathlib
import sys
import time
from typing import Any, Optional

from ..errors import EXIT_ERROR
from .recorded import COMPRESSED_IMAGE_TYPE, IMAGE_TYPE, BagError, RecordedBag

NODE_NAME = "cen_bag_player"


def message_class(msgtype: str) -> Any:
    """The rclpy message class of a type name like ``sensor_msgs/msg/Image``."""
    package, kind, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{package}.{kind}"), name)
    except (ImportError, AttributeError):
        raise BagError(f"message type {msgtype} is not installed for rclpy") from None


def parse_remaps(remaps: list[str]) -> dict[str, str]:
    mapping = {}
    for remap in remaps:
        source, sep, target = remap.partition(":=")
        if not sep or not source or not target:
            raise BagError(f"--remap takes FROM:=TO, got '{remap}'")
        mapping[source] = target
    return mapping


def choose_topics(bag: RecordedBag, topics: Optional[list[str]]) -> list[str]:
    """The topics to publish: those named (any type rclpy knows), else every Image and
    CompressedImage topic."""
    if not topics:
        chosen = bag.image_topics()
        if not chosen:
            raise BagError(f"{bag.path}: no {IMAGE_TYPE} or {COMPRESSED_IMAGE_TYPE} topics to "
                           f"play; {bag.describe()}")
        return chosen
    unknown = [t for t in topics if t not in bag.topics]
    if unknown:
        raise BagError(f"{bag.path}: no topic {', '.join(unknown)}; {bag.describe()}")
    return list(dict.fromkeys(topics))


class Player:
    """Publishes the chosen topics of an open bag from an rclpy node."""

    def __init__(self, node: Any, bag: RecordedBag, topics: list[str],
                 remaps: dict[str, str], reliable: bool = False) -> None:
        from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

        qos = (QoSProfile(depth=30, reliability=ReliabilityPolicy.RELIABLE) if reliable
               else qos_profile_sensor_data)
        self.node = node
        self.bag = bag
        self.topics = topics
        self.publishers = {}
        for topic in topics:
            cls = message_class(bag.topics[topic].msgtype)
            self.publishers[topic] = node.create_publisher(cls, remaps.get(topic, topic), qos)
        self.published = 0
        self.reliable = reliable

    def wait_for_subscribers(self, count: int, timeout: float, settle: float = 0.5) -> None:
        """Block until every publisher has ``count`` subscribers, then ``settle`` seconds more;
        BagError after ``timeout``.

        A writer counts a reader as soon as it has discovered it, possibly before the reader
        has discovered the writer, and a volatile reader drops what comes from a writer it
        does not know yet (eProsima/Fast-DDS#2641): without the pause the first messages can
        be lost although every subscriber was counted.
        """
        deadline = time.monotonic() + timeout
        while True:
            short = {p.topic_name: p.get_subscription_count() for p in self.publishers.values()
                     if p.get_subscription_count() < count}
            if not short:
                time.sleep(settle)
                return
            if time.monotonic() > deadline:
                listed = ", ".join(f"{t} ({n})" for t, n in short.items())
                raise BagError(f"waited {timeout:g} s for {count} subscriber(s); too few on "
                               f"{listed}")
            time.sleep(0.05)

    def play_once(self, rate: Optional[float], progress: Any = None) -> int:
        """Publish every message once; ``rate`` None = as fast as possible. Returns the count."""
        start_wall = None
        first_log = None
        count = 0
        for message in self.bag.messages(self.topics):
            if rate is not None:
                if start_wall is None:
                    start_wall, first_log = time.monotonic(), message.log_time_ns
                due = start_wall + (message.log_time_ns - first_log) / 1e9 / rate
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            self.publishers[message.topic].publish(message.raw)
            count += 1
            if progress is not None:
                progress.update(1)
        self.published += count
        return count

    def finish(self, timeout: float = 5.0) -> None:
        """Let the last messages reach their subscribers before the process exits."""
        from rclpy.duration import Duration

        if self.reliable:
            for publisher in self.publishers.values():
                publisher.wait_for_all_acked(Duration(seconds=timeout))
        else:
            time.sleep(0.2)  # best effort has no acknowledgements; leave the writers a moment


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cen-perception-play",
        description="Publish a recorded ROS 2 bag's image topics (sqlite3 or MCAP) with rclpy, "
                    "at the recorded pace or as fast as possible.")
    parser.add_argument("bag", type=pathlib.Path, metavar="BAG")
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument("--rate", type=float, default=1.0,
                      help="speed factor on the recorded pace (default %(default)s)")
    pace.add_argument("--fast", action="store_true", help="publish as fast as possible")
    parser.add_argument("--topics", nargs="+", metavar="TOPIC",
                        help="topics to publish, each with its recorded message type "
                             "(default: every sensor_msgs/Image and CompressedImage topic)")
    parser.add_argument("--remap", action="append", default=[], metavar="FROM:=TO",
                        help="publish bag topic FROM as TO (repeatable)")
    parser.add_argument("--loop", action="store_true", help="start again at the end, until Ctrl-C")
    parser.add_argument("--reliable", action="store_true",
                        help="reliable QoS (default: sensor-data QoS, best effort)")
    parser.add_argument("--wait-subscribers", type=int, default=0, metavar="N",
                        help="before playing, wait until every topic has N subscribers, then "
                             "0.5 s for them to finish discovering the player")
    parser.add_argument("--wait-timeout", type=float, default=60.0, metavar="S",
                        help="give up waiting for subscribers after S seconds "
                             "(default %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    import rclpy
    from rclpy.signals import SignalHandlerOptions
    from tqdm import tqdm

    argv = sys.argv[1:] if argv is None else list(argv)
    # Our own options end where ROS arguments start; FROM:=TO inside them stays ours.
    split = argv.index("--ros-args") if "--ros-args" in argv else len(argv)
    parser = build_parser()
    args = parser.parse_args(argv[:split])
    if args.rate <= 0:
        parser.error(f"--rate must be positive, got {args.rate}")
    rate = None if args.fast else args.rate
    try:
        remaps = parse_remaps(args.remap)
        bag = RecordedBag(args.bag)
    except BagError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    # Ctrl-C raises KeyboardInterrupt here instead of invalidating the publishers mid-loop.
    rclpy.init(args=["cen-perception-play", *argv[split:]],
               signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node(NODE_NAME)
    status = 0
    player = None
    started = time.monotonic()
    try:
        topics = choose_topics(bag, args.topics)
        player = Player(node, bag, topics, remaps, reliable=args.reliable)
        if args.wait_subscribers > 0:
            player.wait_for_subscribers(args.wait_subscribers, args.wait_timeout)
        total = sum(bag.topics[t].count for t in topics)
        started = time.monotonic()
        with tqdm(total=total, unit="msg", desc="playing", disable=args.no_progress,
                  file=sys.stderr) as bar:
            while True:
                player.play_once(rate, bar)
                if not args.loop:
                    break
                bar.reset()
    except BagError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        status = 2
    except KeyboardInterrupt:
        status = 130
    try:
        if player is not None:
            elapsed = time.monotonic() - started
            if status == 0:
                player.finish()
            targets = ", ".join(p.topic_name for p in player.publishers.values())
            print(f"published {player.published} messages in {elapsed:.1f} s on {targets}")
    except KeyboardInterrupt:
        status = 130
    finally:
        bag.close()
        node.destroy_node()
        rclpy.try_shutdown()
    return status

if __name__ == "__main__":
    sys.exit(main())
