"""The node's ``/diagnostics`` status, as a plain function of a snapshot of what it knows.

The node gathers a ``Snapshot`` on its diagnostics timer; ``status`` turns it into a level,
a message an operator can act on, and the key/value pairs; the node only wraps them in a
``diagnostic_msgs/DiagnosticStatus``. Levels are DiagnosticStatus's: OK 0, WARN 1, ERROR 2.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

OK, WARN, ERROR = 0, 1, 2
LOG_PERIOD_S = 5.0   # a repeated problem is logged at most this often


@dataclass
class InputSnapshot:
    """One camera topic as the node sees it."""

    stream: str                   # "rgb" or "depth"
    topic: str                    # resolved
    transport: str
    reliability: Optional[str]    # the subscription's, None while waiting for a publisher
    offered: tuple = ()
    incompatible_events: int = 0
    incompatible_policy: str = ""
    lost: int = 0
    stall: Optional[str] = None   # why a topic with a publisher is silent, or None


@dataclass
class Snapshot:
    state: str                                    # active | inactive | unconfigured | ...
    engine: dict[str, str] = field(default_factory=dict)   # the engine in service
    configure_error: str = ""
    engine_loading: str = ""                      # a live change being opened
    engine_refused: str = ""                      # why the last live change was refused
    elapsed: float = 1.0                          # seconds since the previous snapshot
    counts: dict[str, int] = field(default_factory=dict)
    delta: dict[str, int] = field(default_factory=dict)   # counts since the previous snapshot
    sync: dict[str, int] = field(default_factory=dict)
    inputs: list[InputSnapshot] = field(default_factory=list)
    qos: str = "auto"
    sync_slop: float = 0.0
    last_stamps: dict[str, Optional[int]] = field(default_factory=dict)
    camera_info_topic: str = ""
    camera_info_received: bool = False
    camera_info_missing: bool = False             # the cloud is wanted, none came in time
    subscribers: dict[str, int] = field(default_factory=dict)
    depth_scale: Optional[float] = None
    depth_median_m: Optional[float] = None
    depth_problem: Optional[str] = None
    training_depth_range_m: tuple = ()
    last_bad_message: str = ""
    restarted_stages: list[str] = field(default_factory=list)
    latency: dict[str, tuple[float, float, float]] = field(default_factory=dict)


def status(snap: Snapshot) -> tuple[int, str, dict[str, str]]:
    """(level, message, values) of the node's status."""
    if snap.state != "active":
        level = ERROR if snap.configure_error else OK
        message = f"unconfigured: {snap.configure_error}" if snap.configure_error else snap.state
        return level, message, dict(snap.engine)
    errors = [f"{name} thread died and was restarted" for name in snap.restarted_stages]
    problems = input_problems(snap)
    if errors:
        level, message = ERROR, "; ".join(errors + problems)
    elif problems:
        level, message = WARN, "; ".join(problems)
    else:
        level, message = OK, running_message(snap.delta)
    return level, message, running_values(snap)


def running_message(delta: dict[str, int]) -> str:
    if not delta.get("rgb_received"):
        return "waiting for images"
    if not delta.get("frames_processed") and delta.get("pairs_idle"):
        return "idle: no subscribers"
    return "running"


def input_problems(snap: Snapshot) -> list[str]:
    """What is wrong with the input since the last snapshot, in words, worst first."""
    problems = []
    for entry in snap.inputs:
        if entry.stall:
            problems.append(entry.stall)
        elif entry.incompatible_events:
            problems.append(f"{entry.topic}: a publisher offers incompatible QoS "
                            f"({entry.incompatible_policy}); no messages from it")
    if snap.engine_refused:
        problems.append(f"engine change refused: {snap.engine_refused}")
    delta = snap.delta
    if delta.get("bad_messages") or delta.get("processing_errors"):
        problems.append("bad input messages dropped")
    pairing = pairing_problem(snap)
    if pairing:
        problems.append(pairing)
    if snap.camera_info_missing:
        problems.append(f"no camera_info on {snap.camera_info_topic}: no cloud")
    if snap.depth_problem:
        problems.append(snap.depth_problem)
    return problems


def pairing_problem(snap: Snapshot) -> Optional[str]:
    delta = snap.delta
    if delta.get("pairs_color_only"):
        return "depth missing: colour only"
    if delta.get("rgb_received") and delta.get("depth_received") and not delta.get("pairs"):
        rgb_ns, depth_ns = snap.last_stamps.get("rgb"), snap.last_stamps.get("depth")
        gap = (f" (last stamps {abs(rgb_ns - depth_ns) / 1e6:.1f} ms apart)"
               if rgb_ns is not None and depth_ns is not None else "")
        return (f"rgb and depth do not pair{gap}: check stamps and sync_slop "
                f"({snap.sync_slop:g} s)")
    if delta.get("rgb_received") and not delta.get("depth_received"):
        return "no depth images"
    if delta.get("depth_received") and not delta.get("rgb_received"):
        return "no rgb images"
    return None


def running_values(snap: Snapshot) -> dict[str, str]:
    elapsed = max(snap.elapsed, 1e-9)

    def rate(name: str) -> str:
        return f"{snap.delta.get(name, 0) / elapsed:.2f}"

    values = dict(snap.engine)
    if snap.engine_loading:
        values["engine_loading"] = snap.engine_loading
    if snap.engine_refused:
        values["engine_refused"] = snap.engine_refused
    values.update({"qos": snap.qos, "rgb_rate_hz": rate("rgb_received"),
                   "depth_rate_hz": rate("depth_received"), "pair_rate_hz": rate("pairs"),
                   "output_rate_hz": rate("frames_processed")})
    for entry in snap.inputs:
        values.update(input_values(entry))
    values["camera_info_topic"] = snap.camera_info_topic
    values["camera_info"] = "received" if snap.camera_info_received else "none"
    values.update({f"{kind}_subscribers": str(n) for kind, n in snap.subscribers.items()})
    values["depth_scale"] = (f"{snap.depth_scale:g}" if snap.depth_scale
                             else "REP 118 (16UC1 mm, 32FC1 m)")
    if snap.depth_median_m is not None:
        values["depth_median_m"] = f"{snap.depth_median_m:.3f}"
    if snap.training_depth_range_m:
        low, high = snap.training_depth_range_m
        values["training_depth_range_m"] = f"{low:.2f}-{high:.2f}"
    values.update({name: str(value) for name, value in snap.counts.items()})
    if snap.last_bad_message:
        values["last_bad_message"] = snap.last_bad_message
    values.update({f"sync_{name}": str(value) for name, value in snap.sync.items()})
    for stage, (median, p95, worst) in snap.latency.items():
        values[f"{stage}_ms_median"] = f"{median:.3f}"
        values[f"{stage}_ms_p95"] = f"{p95:.3f}"
        values[f"{stage}_ms_max"] = f"{worst:.3f}"
    return values


def input_values(entry: InputSnapshot) -> dict[str, str]:
    key = entry.stream
    return {f"{key}_topic": entry.topic, f"{key}_transport": entry.transport,
            f"{key}_qos": entry.reliability or "waiting for a publisher",
            f"{key}_publishers": ",".join(entry.offered) or "none",
            f"{key}_incompatible_qos": (f"{entry.incompatible_events} "
                                        f"({entry.incompatible_policy})"
                                        if entry.incompatible_events else "0"),
            f"{key}_lost": str(entry.lost)}


def depth_size_problem(depth_hw: tuple[int, int], color_hw: tuple[int, int]) -> str:
    return (f"depth images are {depth_hw[1]}x{depth_hw[0]}, RGB images {color_hw[1]}x"
            f"{color_hw[0]}: resizing depth (nearest); register depth to the colour camera "
            "for exact results")


class ProblemLog:
    """Logs problems as an operator wants them: each input problem once when it starts, bad
    messages throttled (the first unforeseen one with its traceback)."""

    def __init__(self, logger) -> None:
        self._logger = logger
        self._active: set[str] = set()
        self._traced = False

    def once(self, key: str, problem: Optional[str]) -> None:
        """Log ``problem`` when it starts, not on every check; forget it when it ends."""
        if problem is None:
            self._active.discard(key)
        elif key not in self._active:
            self._active.add(key)
            self._logger.warning(problem)

    def bad_message(self, stream: str, reason: str, trace: str, count: int) -> None:
        if trace and not self._traced:
            self._traced = True
            self._logger.error(f"dropped a bad {stream} message: {reason}\n{trace}")
            return
        self._logger.warning(f"dropped a bad {stream} message ({count} so far): {reason}",
                             throttle_duration_sec=LOG_PERIOD_S)

    def frame_failed(self, stamp_ns: int, exc: BaseException) -> None:
        self._logger.error(f"frame {stamp_ns} failed: {type(exc).__name__}: {exc}",
                           throttle_duration_sec=LOG_PERIOD_S)
