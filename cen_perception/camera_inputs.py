"""The node's camera subscriptions: QoS that follows the camera, and what the middleware says.

With ``qos: auto`` each camera topic is subscribed once a publisher appears, reliable when
every publisher offers reliable and best effort otherwise, and again whenever that changes
(``input_health.choose_reliability``); ``sensor_data`` / ``reliable`` force one. Incompatible
QoS, incompatible types and lost messages are counted on each topic's ``StreamWatch``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from rclpy.event_handler import SubscriptionEventCallbacks, UnsupportedEventTypeError
from rclpy.qos import (
    QoSProfile,
    ReliabilityPolicy,
    qos_policy_name_from_kind,
    qos_profile_sensor_data,
)
from sensor_msgs.msg import CompressedImage, Image

from .diagnostics import LOG_PERIOD_S, InputSnapshot
from .input_health import BEST_EFFORT, RELIABLE, StreamWatch, choose_reliability

INPUT_TOPICS = {"rgb": "rgb/image", "depth": "depth/image"}
# transport -> (topic suffix as image_transport names it, message type)
TRANSPORTS = {"raw": ("", Image), "compressed": ("/compressed", CompressedImage),
              "compressedDepth": ("/compressedDepth", CompressedImage)}
RELIABLE_INPUT_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


@dataclass
class CameraInput:
    """One camera input: its topic, message type, subscription and what is known of it."""

    stream: str
    topic: str
    resolved: str
    transport: str
    msg_type: type
    watch: StreamWatch
    subscription: Any = None

    def snapshot(self, now: float, stall_timeout: float) -> InputSnapshot:
        watch = self.watch
        return InputSnapshot(self.stream, self.resolved, self.transport, watch.reliability,
                             tuple(watch.offered), watch.incompatible_events,
                             watch.incompatible_policy, watch.lost,
                             watch.stall(now, stall_timeout))


class CameraInputs:
    """The colour and depth subscriptions of ``node``; ``callback(stream, msg)`` gets each
    message. Created on activate, ``close()``d on deactivate."""

    def __init__(self, node, transports: dict[str, str], qos: str,
                 callback: Callable[[str, Any], None], callback_group) -> None:
        self._node, self._qos, self._callback, self._group = node, qos, callback, callback_group
        now = time.monotonic()
        self.inputs: dict[str, CameraInput] = {}
        for stream, transport in transports.items():
            suffix, msg_type = TRANSPORTS[transport]
            topic = INPUT_TOPICS[stream] + suffix
            resolved = node.resolve_topic_name(topic)   # as remapped: the name users know
            self.inputs[stream] = CameraInput(stream, topic, resolved, transport, msg_type,
                                              StreamWatch(stream, resolved, now))
        if qos != "auto":
            forced = BEST_EFFORT if qos == "sensor_data" else RELIABLE
            for stream in self.inputs:
                self._subscribe(stream, forced)

    def _subscribe(self, stream: str, reliability: str) -> None:
        """(Re)subscribe ``stream`` with ``reliability``; a previous subscription goes."""
        entry = self.inputs[stream]
        if entry.subscription is not None:
            self._node.destroy_subscription(entry.subscription)
        qos = qos_profile_sensor_data if reliability == BEST_EFFORT else RELIABLE_INPUT_QOS
        events = dict(incompatible_qos=lambda event: self._incompatible_qos(stream, event),
                      incompatible_type=lambda event: self._incompatible_type(stream))
        lost = dict(message_lost=lambda event: self._message_lost(stream, event))
        try:
            entry.subscription = self._create(entry, qos, {**events, **lost})
        except UnsupportedEventTypeError:  # a middleware without lost-message events
            entry.subscription = self._create(entry, qos, events)
        entry.watch.reliability = reliability
        self._node.get_logger().info(f"subscribed to {entry.resolved} "
                                     f"({entry.msg_type.__name__}, "
                                     f"{reliability.replace('_', ' ')})")

    def _create(self, entry: CameraInput, qos, events: dict):
        return self._node.create_subscription(
            entry.msg_type, entry.topic, lambda msg: self._callback(entry.stream, msg), qos,
            callback_group=self._group, event_callbacks=SubscriptionEventCallbacks(**events))

    def refresh(self, stall_timeout: float, report_once: Callable[[str, Any], None]) -> None:
        """Follow the camera publishers (qos: auto) and report topics that went silent."""
        now = time.monotonic()
        for stream, entry in self.inputs.items():
            offered = [RELIABLE if info.qos_profile.reliability == ReliabilityPolicy.RELIABLE
                       else BEST_EFFORT
                       for info in self._node.get_publishers_info_by_topic(entry.resolved)]
            entry.watch.set_publishers(offered, now)
            if self._qos == "auto":
                choice = choose_reliability(offered)
                if choice is not None and choice != entry.watch.reliability:
                    self._subscribe(stream, choice)
            report_once(f"stall:{stream}", entry.watch.stall(now, stall_timeout))

    def received(self, stream: str) -> None:
        self.inputs[stream].watch.received(time.monotonic())

    def snapshots(self, stall_timeout: float) -> list[InputSnapshot]:
        now = time.monotonic()
        return [entry.snapshot(now, stall_timeout) for entry in self.inputs.values()]

    def close(self) -> None:
        for entry in self.inputs.values():
            if entry.subscription is not None:
                self._node.destroy_subscription(entry.subscription)
                entry.subscription = None

    def _incompatible_qos(self, stream: str, event) -> None:
        policy = qos_policy_name_from_kind(event.last_policy_kind)
        self.inputs[stream].watch.incompatible(event.total_count, policy)
        self._node.get_logger().warning(
            f"{self.inputs[stream].resolved}: a publisher offers QoS incompatible with this "
            f"subscription ({policy}); no messages come from it (qos: {self._qos})")

    def _incompatible_type(self, stream: str) -> None:
        entry = self.inputs[stream]
        self._node.get_logger().warning(
            f"{entry.resolved}: a publisher of another message type; this subscription takes "
            f"{entry.msg_type.__name__} (check {stream}_transport)",
            throttle_duration_sec=LOG_PERIOD_S)

    def _message_lost(self, stream: str, event) -> None:
        self.inputs[stream].watch.lost = int(event.total_count)
