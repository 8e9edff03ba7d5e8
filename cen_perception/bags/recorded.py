"""Recorded sequences: ROS 2 bags (sqlite3 or MCAP) in and out.

``RecordedBag`` reads a bag, ``rgbd_pairs`` pairs its colour and depth like the node does,
``BagWriter`` writes a new one. Bags are read and written with the ``rosbags`` library, so no
ROS installation is needed; input bags are only ever read.

Colour and depth topics may hold ``sensor_msgs/Image`` or ``sensor_msgs/CompressedImage``
(image_transport's ``compressed`` JPEG/PNG colour, ``compressedDepth`` depth); each topic is
decoded by the message type the bag records for it.

Used by ``cen-perception-bag`` (``bags.segment``), the player (``bags.player``) and
``cen-train extract-frames`` / ``select-frames``.
"""
from __future__ import annotations

import pathlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

import numpy as np

try:
    from rosbags.rosbag2 import Reader, StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError("reading and writing bags needs the rosbags package: "
                      "pip install 'cen_perception[bag]'") from exc

from .. import image_codec
from ..errors import one_line
from ..image_codec import (
    UnsupportedImageError,
    compressed_kind,
    decode_color_message,
    decode_depth_message,
    parse_compressed_format,
)
from ..sync import NS_PER_S, RgbdSync, stamp_to_ns
from .pairing import DEFAULT_QUEUE_SIZE, DEFAULT_SLOP, BagError

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"
IMAGE_TYPES = (IMAGE_TYPE, COMPRESSED_IMAGE_TYPE)
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
# sensor_msgs/Image, CompressedImage and std_msgs/Header are the same in every ROS 2
# distribution.
TYPESTORE = get_typestore(Stores.ROS2_JAZZY)
Image = TYPESTORE.types[IMAGE_TYPE]
CompressedImage = TYPESTORE.types[COMPRESSED_IMAGE_TYPE]
Header = TYPESTORE.types["std_msgs/msg/Header"]
Time = TYPESTORE.types["builtin_interfaces/msg/Time"]

STORAGES = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}
BAG_VERSION = 9  # the rosbag2 metadata version ROS 2 Jazzy writes

# Encodings that make a topic a plausible camera colour or depth stream when guessing topics;
# mono8 is left out because infrared streams use it too.
COLOR_ENCODINGS = tuple(e for e in image_codec.COLOR_ENCODINGS if e != "mono8")
DEPTH_ENCODINGS = tuple(image_codec.DEPTH_ENCODINGS)

MAX_PROBLEMS_KEPT = 5


def stamp_ns(header: Any) -> int:
    """A message header's stamp in nanoseconds (rosbags and rclpy headers alike)."""
    return stamp_to_ns(header.stamp)


def make_header(stamp: int, frame_id: str) -> Header:
    """A rosbags ``std_msgs/Header`` for a stamp in nanoseconds."""
    return Header(stamp=Time(sec=stamp // NS_PER_S, nanosec=stamp % NS_PER_S),
                  frame_id=frame_id)


@dataclass(frozen=True)
class TopicSummary:
    name: str
    msgtype: str
    count: int


@dataclass(frozen=True)
class BagMessage:
    """One recorded message: topic, type, log time (ns) and its serialized (CDR) bytes."""

    topic: str
    msgtype: str
    log_time_ns: int
    raw: bytes


class RecordedBag:
    """An existing ROS 2 bag (a bag directory, or a single ``.db3`` / ``.mcap`` file), read only.

    Use it as a context manager. ``topics`` maps each topic name to its type and message count;
    ``describe()`` says it in one line, for error messages.
    """

    def __init__(self, path: str | pathlib.Path) -> None:
        self.path = pathlib.Path(path)
        if not self.path.exists():
            raise BagError(f"{self.path}: no such bag (expected a bag directory or a .db3 / "
                           ".mcap file)")
        try:
            self._reader = Reader(self.path)
            self._reader.open()
            topics = self._reader.topics
        except Exception as exc:  # rosbags, sqlite3, mcap and yaml each raise their own errors
            hint = ""
            if self.path.is_dir() and not (self.path / "metadata.yaml").exists() and any(
                    self.path.glob("*.db3")) | any(self.path.glob("*.mcap")):
                hint = "; a recording that was cut off has no metadata.yaml: give its file"
            raise BagError(f"{self.path}: not a readable ROS 2 bag ({one_line(exc)}){hint}"
                           ) from None
        self.connections = list(self._reader.connections)
        self.topics = {name: TopicSummary(name, info.msgtype or "?", int(info.msgcount))
                       for name, info in topics.items()}
        self.storage = self._storage_id()

    def _storage_id(self) -> str:
        if self.path.is_dir():
            return "mcap" if any(self.path.glob("*.mcap*")) else "sqlite3"
        return "mcap" if self.path.suffix == ".mcap" else "sqlite3"

    def close(self) -> None:
        if self._reader.is_open:
            self._reader.close()

    def __enter__(self) -> "RecordedBag":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- what the bag holds -------------------------------------------------------------
    def describe(self) -> str:
        if not self.topics:
            return "the bag holds no topics"
        listed = ", ".join(f"{t.name} ({t.msgtype}, {t.count})" for t in self.topics.values())
        return f"the bag holds: {listed}"

    def image_topics(self) -> list[str]:
        """The topics of sensor_msgs/Image or sensor_msgs/CompressedImage messages."""
        return [t.name for t in self.topics.values() if t.msgtype in IMAGE_TYPES]

    def require_image_topic(self, topic: str, role: str) -> None:
        """Fail with the bag's contents unless ``topic`` holds Image or CompressedImage
        messages."""
        summary = self.topics.get(topic)
        if summary is None:
            raise BagError(f"{self.path}: no {role} topic '{topic}'; {self.describe()}")
        if summary.msgtype not in IMAGE_TYPES:
            raise BagError(f"{self.path}: {role} topic '{topic}' is {summary.msgtype}, not "
                           f"{IMAGE_TYPE} or {COMPRESSED_IMAGE_TYPE}; {self.describe()}")
        if summary.count == 0:
            raise BagError(f"{self.path}: {role} topic '{topic}' has no messages; "
                           f"{self.describe()}")

    # -- reading -------------------------------------------------------------------------
    def messages(self, topics: Optional[list[str]] = None) -> Iterator[BagMessage]:
        """Every message of ``topics`` (all topics when None), in log-time order."""
        wanted = [c for c in self.connections if topics is None or c.topic in topics]
        if not wanted:
            return
        count = 0
        try:
            for connection, log_time, raw in self._reader.messages(connections=wanted):
                count += 1
                yield BagMessage(connection.topic, connection.msgtype, int(log_time), bytes(raw))
        except Exception as exc:  # a damaged storage file surfaces only while reading it
            raise BagError(f"{self.path}: unreadable after {count} messages "
                           f"({one_line(exc)})") from None

    def first_message(self, topic: str) -> Optional[BagMessage]:
        return next(self.messages([topic]), None)

    def first_encoding(self, topic: str) -> Optional[str]:
        """The encoding (Image) or format (CompressedImage) of a topic's first message; None if
        it cannot be read."""
        message = self.first_message(topic)
        if message is None:
            return None
        try:
            msg = deserialize_message(message)
            return str(msg.format if message.msgtype == COMPRESSED_IMAGE_TYPE else msg.encoding)
        except Exception:  # a malformed first message: the topic cannot be classified
            return None

    def resolve_rgbd_topics(self, rgb_topic: Optional[str] = None,
                            depth_topic: Optional[str] = None) -> tuple[str, str]:
        """The colour and depth topics to use: those given, else the only plausible ones.

        A topic is a plausible colour (depth) stream when it is an Image topic whose first
        message has a colour (depth) encoding, or a CompressedImage topic whose first message
        has a colour (depth) format (mono8 colour is left out: infrared streams use it too).
        Then checks both topics: present, Image or CompressedImage messages, and an encoding
        or format the codec decodes.
        """
        if rgb_topic is None or depth_topic is None:
            encodings = {topic: self.first_encoding(topic) for topic in self.image_topics()}
            roles = {topic: _image_role(self.topics[topic].msgtype, encoding)
                     for topic, encoding in encodings.items()}
            if rgb_topic is None:
                rgb_topic = self._only_candidate(
                    [t for t, r in roles.items() if r == "colour" and t != depth_topic],
                    "colour", "--rgb-topic", encodings)
            if depth_topic is None:
                depth_topic = self._only_candidate(
                    [t for t, r in roles.items() if r == "depth" and t != rgb_topic],
                    "depth", "--depth-topic", encodings)
        if rgb_topic == depth_topic:
            raise BagError(f"colour and depth topics are both '{rgb_topic}'")
        self.require_image_topic(rgb_topic, "colour")
        self.require_image_topic(depth_topic, "depth")
        for topic, decode, role in ((rgb_topic, decode_color_message, "colour"),
                                    (depth_topic, decode_depth_message, "depth")):
            try:
                decode(deserialize_message(self.first_message(topic)))
            except UnsupportedImageError as exc:
                # An encoding or format the codec lacks stops the run; one damaged message
                # does not.
                raise BagError(f"{self.path}: {role} topic '{topic}': {one_line(exc)}; "
                               f"{self.describe()}") from None
            except Exception:  # damaged image or malformed CDR: counted while reading
                pass
        return rgb_topic, depth_topic

    def _only_candidate(self, candidates: list[str], role: str, flag: str,
                        encodings: dict[str, Optional[str]]) -> str:
        if len(candidates) == 1:
            return candidates[0]
        images = ", ".join(f"{t} ({e or 'unreadable'})" for t, e in encodings.items())
        found = "no" if not candidates else f"{len(candidates)}"
        raise BagError(f"{self.path}: {found} plausible {role} image topics; name one with "
                       f"{flag} (image topics: {images or 'none'}; {self.describe()})")


def _image_role(msgtype: str, encoding: Optional[str]) -> Optional[str]:
    """"colour", "depth" or None for a topic's type and first encoding or format."""
    if encoding is None:
        return None
    if msgtype == COMPRESSED_IMAGE_TYPE:
        kind = compressed_kind(encoding)
        if kind == "depth":
            return "depth"
        if kind == "color" and parse_compressed_format(encoding).encoding != "mono8":
            return "colour"
        return None
    if encoding in COLOR_ENCODINGS:
        return "colour"
    return "depth" if encoding in DEPTH_ENCODINGS else None


def deserialize_image(raw: bytes, msgtype: str = IMAGE_TYPE) -> Any:
    """A rosbags Image (or, with ``msgtype``, CompressedImage) from its CDR bytes."""
    return TYPESTORE.deserialize_cdr(raw, msgtype)


def deserialize_message(message: BagMessage) -> Any:
    """A recorded message as the rosbags message of its recorded type."""
    return TYPESTORE.deserialize_cdr(message.raw, message.msgtype)


# -- synchronized pairs --------------------------------------------------------------------
@dataclass
class FramePair:
    """A synchronized RGB-D frame: decoded images and the RGB message's header and log time."""

    rgb: np.ndarray  # uint8 [H, W, 3] RGB
    depth: np.ndarray  # float32 [h, w] metres (0 = invalid)
    header: Any  # the RGB message's rosbags Header
    rgb_stamp_ns: int
    depth_stamp_ns: int
    log_time_ns: int  # when the RGB message was recorded


@dataclass
class PairCounts:
    """What happened to every colour and depth message read."""

    rgb: int = 0
    depth: int = 0
    bad_rgb: int = 0
    bad_depth: int = 0
    pairs: int = 0
    problems: list[str] = field(default_factory=list)  # the first few bad-message reasons

    @property
    def unmatched_rgb(self) -> int:
        return self.rgb - self.bad_rgb - self.pairs

    @property
    def unmatched_depth(self) -> int:
        return self.depth - self.bad_depth - self.pairs

    def note_problem(self, text: str) -> None:
        if len(self.problems) < MAX_PROBLEMS_KEPT:
            self.problems.append(text)


def rgbd_pairs(bag: RecordedBag, rgb_topic: str, depth_topic: str, slop: float = DEFAULT_SLOP,
               queue_size: int = DEFAULT_QUEUE_SIZE, counts: Optional[PairCounts] = None,
               all_topics: bool = False,
               on_message: Optional[Callable[[BagMessage], None]] = None,
               depth_scale: Optional[float] = None) -> Iterator[FramePair]:
    """Yield the bag's RGB-D pairs, matched by header stamp within ``slop`` seconds.

    Messages are read in log-time order and decoded by their recorded type (Image or
    CompressedImage); ``depth_scale`` is metres per depth unit (None = REP 118). A message that
    cannot be decoded is counted in ``counts`` (bad) and skipped; every message read ends up in
    a pair, bad, or unmatched. ``on_message`` sees every message read (all topics with
    ``all_topics``), before pairing.
    """
    counts = counts if counts is not None else PairCounts()
    sync = RgbdSync(slop=slop, queue_size=queue_size)
    topics = None if all_topics else [rgb_topic, depth_topic]
    for message in bag.messages(topics):
        if on_message is not None:
            on_message(message)
        is_rgb = message.topic == rgb_topic
        if not is_rgb and message.topic != depth_topic:
            continue
        if is_rgb:
            counts.rgb += 1
        else:
            counts.depth += 1
        try:
            msg = deserialize_message(message)
            image = (decode_color_message(msg) if is_rgb
                     else decode_depth_message(msg, depth_scale))
            stamp = stamp_ns(msg.header)
        except Exception as exc:  # malformed CDR raises many types; a bad message is skipped
            if is_rgb:
                counts.bad_rgb += 1
            else:
                counts.bad_depth += 1
            counts.note_problem(f"{message.topic} at log time {message.log_time_ns}: "
                                f"{one_line(exc)}")
            continue
        if is_rgb:
            pair = sync.push_rgb(stamp, (image, msg.header, message.log_time_ns))
        else:
            pair = sync.push_depth(stamp, image)
        if pair is None:
            continue
        counts.pairs += 1
        rgb, header, log_time = pair.rgb
        yield FramePair(rgb, pair.depth, header, pair.rgb_stamp_ns, pair.depth_stamp_ns, log_time)


# -- writing -------------------------------------------------------------------------------
class BagWriter:
    """A new ROS 2 bag (``sqlite3`` or ``mcap``); use it as a context manager.

    ``add_topic`` declares a topic (sensor_msgs/Image unless told otherwise), ``write``
    serializes a rosbags message, ``write_raw`` stores CDR bytes as they are (for copies).
    Closing writes the metadata, also after an error, so what was written stays readable.
    """

    image_class = Image
    compressed_image_class = CompressedImage

    def __init__(self, path: str | pathlib.Path, storage: str = "sqlite3") -> None:
        if storage not in STORAGES:
            raise BagError(f"unknown storage '{storage}' (choose from {', '.join(STORAGES)})")
        self.path = pathlib.Path(path)
        if self.path.exists():
            raise BagError(f"{self.path} exists already; give a new path for the output bag")
        self.storage = storage
        try:
            self._writer = Writer(self.path, version=BAG_VERSION,
                                  storage_plugin=STORAGES[storage])
            self._writer.open()
        except Exception as exc:
            raise BagError(f"{self.path}: cannot create the bag ({one_line(exc)})") from None
        self._connections: dict[str, Any] = {}
        self.counts: dict[str, int] = {}

    def add_topic(self, topic: str, msgtype: str = IMAGE_TYPE, msgdef: Optional[str] = None,
                  digest: Optional[str] = None, qos_profiles: Any = ()) -> None:
        """Declare a topic; the type's definition comes from ``msgdef``/``digest`` or the
        ROS 2 Jazzy type store."""
        if topic in self._connections:
            raise BagError(f"{self.path}: topic '{topic}' is written twice")
        if msgdef and digest:
            kwargs = dict(msgdef=msgdef, rihs01=digest)
        elif msgtype in TYPESTORE.types:
            kwargs = dict(typestore=TYPESTORE)
        else:
            raise BagError(f"{topic}: no definition of {msgtype} to write it with")
        self._connections[topic] = self._writer.add_connection(
            topic, msgtype, offered_qos_profiles=list(qos_profiles), **kwargs)
        self.counts[topic] = 0

    def write(self, topic: str, log_time_ns: int, msg: Any) -> None:
        connection = self._connections[topic]
        self.write_raw(topic, log_time_ns, TYPESTORE.serialize_cdr(msg, connection.msgtype))

    def write_raw(self, topic: str, log_time_ns: int, raw: bytes | memoryview) -> None:
        self._writer.write(self._connections[topic], int(log_time_ns), raw)
        self.counts[topic] += 1

    def close(self) -> None:
        if self._writer.storage is not None:
            self._writer.close()

    def __enter__(self) -> "BagWriter":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def copy_topics_to(writer: BagWriter, bag: RecordedBag) -> list[str]:
    """Declare every topic of ``bag`` in ``writer`` with its recorded definition; returns the
    topics that can be copied (those whose type definition is known)."""
    copied = []
    for connection in bag.connections:
        if connection.topic in writer.counts:
            continue  # a topic split over several connections is declared once
        msgdef = connection.msgdef.data if connection.msgdef.data else None
        try:
            writer.add_topic(connection.topic, connection.msgtype, msgdef=msgdef,
                             digest=connection.digest or None,
                             qos_profiles=getattr(connection.ext, "offered_qos_profiles", ()))
        except BagError:
            continue
        copied.append(connection.topic)
    return copied
