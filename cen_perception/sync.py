"""Pairing RGB and depth frames by header stamp, and the one-slot mailbox to the worker.

``RgbdSync`` is an approximate-time pairing of two streams (like message_filters'
ApproximateTimeSynchronizer, for exactly two inputs, without ROS): each pushed frame is paired
at once with the queued frame of the other stream whose stamp is closest, if that is within
``slop``. Each stream is expected to arrive roughly in stamp order; frames that can no longer
find a partner are dropped and counted. A stamp older than its stream's newest by more than
``jump_back`` seconds is taken as a clock jump back (a bag restarting, sim time reset): the
queues are cleared and pairing starts afresh.

``Mailbox`` hands the newest pair from the ROS callbacks to the worker thread; an older pair
still waiting is replaced (and counted), so a slow model never builds a backlog.
"""
from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import Any, Generic, Optional, TypeVar

NS_PER_S = 1_000_000_000


def stamp_to_ns(stamp: Any) -> int:
    """A ``builtin_interfaces/Time`` (rclpy or rosbags) in nanoseconds."""
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


@dataclass(frozen=True)
class Pair:
    rgb: Any
    depth: Any
    rgb_stamp_ns: int
    depth_stamp_ns: int


@dataclass
class SyncStats:
    """Counters since construction (``reset()`` keeps them)."""

    matched: int = 0          # pairs returned
    rgb_unmatched: int = 0    # RGB frames dropped without a depth partner
    depth_unmatched: int = 0  # depth frames dropped without an RGB partner
    duplicates: int = 0       # a stamp seen again on the same stream
    late: int = 0             # older than the last pair already returned for its stream
    resets: int = 0           # clock jumps back (automatic) and reset() calls

    @property
    def dropped(self) -> int:
        """All input frames that did not make it into a pair."""
        return self.rgb_unmatched + self.depth_unmatched + self.duplicates + self.late

    def as_dict(self) -> dict[str, int]:
        return {**asdict(self), "dropped": self.dropped}


class _Stream:
    """Frames of one stream still waiting for a partner, oldest first."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.queue: list[tuple[int, Any]] = []
        self.newest_ns: Optional[int] = None      # newest stamp seen
        self.last_paired_ns: Optional[int] = None  # stamp of the last frame put in a pair

    def clear(self) -> None:
        self.queue.clear()
        self.newest_ns = None
        self.last_paired_ns = None


class RgbdSync:
    """Pairs RGB and depth frames whose stamps differ by at most ``slop`` seconds.

    ``queue_size`` frames per stream wait for a partner; beyond that the oldest is dropped.
    Not thread-safe by itself beyond a lock around each call (callbacks may come from any
    executor thread).
    """

    def __init__(self, slop: float, queue_size: int, jump_back: float = 1.0) -> None:
        if not slop > 0:
            raise ValueError(f"slop must be > 0 seconds, got {slop}")
        if int(queue_size) < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        if not jump_back > 0:
            raise ValueError(f"jump_back must be > 0 seconds, got {jump_back}")
        self.slop_ns = int(round(slop * NS_PER_S))
        self.queue_size = int(queue_size)
        self.jump_back_ns = int(round(jump_back * NS_PER_S))
        self.stats = SyncStats()
        self._rgb = _Stream("rgb")
        self._depth = _Stream("depth")
        self._lock = threading.Lock()

    def push_rgb(self, stamp_ns: int, item: Any) -> Optional[Pair]:
        with self._lock:
            return self._push(self._rgb, self._depth, int(stamp_ns), item)

    def push_depth(self, stamp_ns: int, item: Any) -> Optional[Pair]:
        with self._lock:
            return self._push(self._depth, self._rgb, int(stamp_ns), item)

    def reset(self) -> None:
        """Forget every waiting frame and the stamp history (after the clock jumped back)."""
        with self._lock:
            self._reset()

    def pending(self) -> tuple[int, int]:
        """Frames waiting for a partner: (rgb, depth)."""
        with self._lock:
            return len(self._rgb.queue), len(self._depth.queue)

    # -- internals -------------------------------------------------------------------------
    def _reset(self) -> None:
        self._count_unmatched(self._rgb, len(self._rgb.queue))
        self._count_unmatched(self._depth, len(self._depth.queue))
        self._rgb.clear()
        self._depth.clear()
        self.stats.resets += 1

    def _count_unmatched(self, stream: _Stream, n: int) -> None:
        if stream is self._rgb:
            self.stats.rgb_unmatched += n
        else:
            self.stats.depth_unmatched += n

    def _push(self, own: _Stream, other: _Stream, stamp: int, item: Any) -> Optional[Pair]:
        if own.newest_ns is not None and stamp < own.newest_ns - self.jump_back_ns:
            self._reset()
        if own.last_paired_ns is not None and stamp <= own.last_paired_ns:
            if stamp == own.last_paired_ns:
                self.stats.duplicates += 1
            else:
                self.stats.late += 1
            return None
        own.newest_ns = stamp if own.newest_ns is None else max(own.newest_ns, stamp)

        # Frames of the other stream this far behind can pair neither with this frame nor with
        # any later one of this stream.
        self._drop_older(other, stamp - self.slop_ns)

        partner = None
        for index, (other_stamp, _) in enumerate(other.queue):
            gap = abs(other_stamp - stamp)
            if gap <= self.slop_ns and (partner is None or gap < partner[1]):
                partner = (index, gap)
        if partner is None:
            self._enqueue(own, stamp, item)
            return None

        other_stamp, other_item = other.queue[partner[0]]
        # Waiting frames older than the partner would only pair worse with what comes next.
        self._drop_older(other, other_stamp)
        other.queue.pop(0)
        own.last_paired_ns, other.last_paired_ns = stamp, other_stamp
        self._drop_older(own, stamp)
        self.stats.matched += 1
        if own is self._rgb:
            return Pair(item, other_item, stamp, other_stamp)
        return Pair(other_item, item, other_stamp, stamp)

    def _drop_older(self, stream: _Stream, limit_ns: int) -> None:
        keep = [entry for entry in stream.queue if entry[0] >= limit_ns]
        self._count_unmatched(stream, len(stream.queue) - len(keep))
        stream.queue[:] = keep

    def _enqueue(self, stream: _Stream, stamp: int, item: Any) -> None:
        for index, (queued_stamp, _) in enumerate(stream.queue):
            if queued_stamp == stamp:  # the same frame again: keep the newer copy
                stream.queue[index] = (stamp, item)
                self.stats.duplicates += 1
                return
        stream.queue.append((stamp, item))
        stream.queue.sort(key=lambda entry: entry[0])
        while len(stream.queue) > self.queue_size:
            stream.queue.pop(0)
            self._count_unmatched(stream, 1)


T = TypeVar("T")


class Mailbox(Generic[T]):
    """One slot between a producer and a consumer thread; ``put`` replaces what is there."""

    def __init__(self) -> None:
        self._item: Optional[T] = None
        self._full = False
        self._closed = False
        self._cond = threading.Condition()
        self.replaced = 0  # items overwritten before the consumer took them

    def put(self, item: T) -> bool:
        """Store ``item``; returns True when it replaced one that was never taken.

        Ignored once the mailbox is closed.
        """
        with self._cond:
            if self._closed:
                return False
            replaced = self._full
            if replaced:
                self.replaced += 1
            self._item, self._full = item, True
            self._cond.notify_all()
            return replaced

    def get(self, timeout: Optional[float] = None) -> Optional[T]:
        """The newest item, waiting up to ``timeout`` s; None on timeout or once closed."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._full or self._closed, timeout):
                return None
            if not self._full:
                return None
            item, self._item, self._full = self._item, None, False
            self._cond.notify_all()  # a producer may wait for the slot to empty
            return item

    def wait_empty(self, timeout: Optional[float] = None) -> bool:
        """Wait up to ``timeout`` s until the item is taken; True when the slot is empty and
        the mailbox open."""
        with self._cond:
            self._cond.wait_for(lambda: not self._full or self._closed, timeout)
            return not self._full and not self._closed

    def close(self) -> None:
        """Wake the consumer for good; later ``get`` calls return None at once."""
        with self._cond:
            self._closed = True
            self._item, self._full = None, False
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed


__all__ = ["Pair", "SyncStats", "RgbdSync", "Mailbox", "NS_PER_S", "stamp_to_ns"]
