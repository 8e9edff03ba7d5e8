"""The node's output publishers: each frame's arrays as messages, only for those who listen."""
from __future__ import annotations

from typing import Callable

from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from .cloud import camera_info_for, point_cloud_message
from .image_codec import encode
from .outputs import RenderedFrame

OUTPUT_TOPICS = {kind: f"segmentation/{kind}" for kind in ("labels", "color", "overlay",
                                                               "confidence", "points",
                                                               "camera_info")}
OUTPUT_TYPES = {"points": PointCloud2, "camera_info": CameraInfo}
# Reliable: both reliable and best-effort subscribers (RViz either way) accept them.
OUTPUT_QOS = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)


class Publishers:
    """``segmentation/*`` of ``node``; ``enabled(kind)`` says which optional ones exist and
    ``count(name)`` hears of each message published (``<kind>_published``)."""

    def __init__(self, node, enabled: Callable[[str], bool],
                 count: Callable[[str], None]) -> None:
        self._node, self._count = node, count
        self.publishers = {kind: node.create_publisher(OUTPUT_TYPES.get(kind, Image), topic,
                                                       OUTPUT_QOS)
                           for kind, topic in OUTPUT_TOPICS.items() if enabled(kind)}

    def subscribers(self) -> dict[str, int]:
        return {kind: pub.get_subscription_count() for kind, pub in self.publishers.items()}

    def wanted(self) -> set[str]:
        """The outputs someone subscribes to (nothing else is computed)."""
        return {kind for kind, count in self.subscribers().items() if count > 0}

    def publish(self, frame: RenderedFrame, header, wanted: set[str], camera_info) -> None:
        messages = {kind: encode(array, encoding, header=header)
                    for kind, (array, encoding) in frame.images.items()}
        if frame.cloud is not None:
            messages["points"] = point_cloud_message(frame.cloud, header, frame.with_confidence)
        if "camera_info" in wanted and camera_info is not None:
            messages["camera_info"] = camera_info_for(camera_info, header, frame.shape)
        for kind, msg in messages.items():
            self.publishers[kind].publish(msg)
            self._count(f"{kind}_published")

    def destroy(self) -> None:
        for publisher in self.publishers.values():
            self._node.destroy_publisher(publisher)
        self.publishers = {}
