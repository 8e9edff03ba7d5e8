"""Access to recorded ROS 2 bags for the training commands.

Bags are read through ``cen_perception.bags.recorded`` (the runtime package), which needs the
``rosbags`` library: ``pip install 'cen_training[bag]'``. Imported only by the commands that
read bags, so the rest of the package works without it.
"""
from __future__ import annotations

import pathlib

from ..errors import DatasetError


def bag_module():
    """``cen_perception.bags.recorded``, or a ``DatasetError`` saying what to install."""
    try:
        from cen_perception.bags import recorded as bag
    except ImportError as exc:
        missing = getattr(exc, "name", None) or "rosbags"
        raise DatasetError(f"reading bags needs the cen_perception package and rosbags "
                           f"({missing} is missing): pip install 'cen_training[bag]' and "
                           "cen_perception") from None
    return bag


class BagPairs:
    """A recorded bag's synchronized RGB-D pairs as the bag commands read them: the topics and
    pairing settings of ``cen_perception.bags.pairing.add_pairing_arguments`` (in ``args``),
    read again on every call, with a progress bar over the messages."""

    def __init__(self, recorded, args, progress: bool = True) -> None:
        self.bag, self.recorded, self.args, self.progress = bag_module(), recorded, args, progress
        self.rgb_topic, self.depth_topic = recorded.resolve_rgbd_topics(args.rgb_topic,
                                                                        args.depth_topic)
        self.name = recorded.path.stem if recorded.path.is_file() else recorded.path.name
        self.total = (recorded.topics[self.rgb_topic].count
                      + recorded.topics[self.depth_topic].count)

    def __call__(self, desc: str, counts=None):
        """(index, pair) of every synchronized pair; ``counts`` (``PairCounts``) counted."""
        from tqdm import tqdm

        bar = tqdm(total=self.total, unit="msg", desc=desc, disable=not self.progress)
        try:
            yield from enumerate(self.bag.rgbd_pairs(
                self.recorded, self.rgb_topic, self.depth_topic, slop=self.args.slop,
                counts=counts, on_message=lambda _: bar.update(1),
                depth_scale=self.args.depth_scale))
        finally:
            bar.close()

    def stem(self, index: int) -> str:
        """The file stem of pair ``index``: ``<bag name>_<index>``."""
        return f"{self.name}_{index:06d}"


def no_frames_message(bag_path: pathlib.Path, counts) -> str:
    return (f"{bag_path}: no synchronized frames ({counts.rgb} colour, {counts.depth} depth "
            "messages); check the topics and --slop")
