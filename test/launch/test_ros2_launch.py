"""The launch file run by the real `ros2 launch`, with the README's own command lines: every
camera row of its table (topics and camera info), the managed node with autostart, the
compressed transports, the Fast DDS profile on and off, and `ros2 lifecycle set` / `ros2 param
set` from the command line. The toy engine labels ``floor(depth_m)`` (test/conftest.py)."""
from __future__ import annotations

import pathlib
import re
import time

import numpy as np
import pytest

from cen_perception.input_health import PROFILE_VARIABLES
from cen_perception_dev.rig import Camera

REPO = pathlib.Path(__file__).resolve().parents[2]

NODE = "/cen_segmentation"
OUTPUTS = ("labels", "points", "camera_info")


def readme_camera_rows() -> list[dict]:
    """The camera table of the README's "Running the node on a robot": per row the camera,
    its launch arguments and the camera-info topic it names."""
    text = REPO.joinpath("README.md").read_text()
    section = text.split("## Running the node on a robot", 1)[1].split("\n## ", 1)[0]
    lines = section.splitlines()
    header = lines.index(next(line for line in lines if line.startswith("| camera |")))
    rows = []
    for line in lines[header + 2:]:
        if not line.startswith("| "):
            break
        cells = [cell.strip() for cell in line.strip("|").split(" | ")]
        arguments = [part for code in re.findall(r"`([^`]*)`", cells[1]) for part in code.split()]
        (camera_info,) = re.findall(r"`([^`]*)`", cells[2])
        rows.append({"camera": cells[0].split(" (")[0], "arguments": arguments,
                     "camera_info": camera_info})
    return rows


ROWS = readme_camera_rows()
# What else each row's launch tries (any other row runs the plain node as it stands).
VARIANTS = {"Intel RealSense": [],
            "Azure Kinect": ["fastdds_profile:=false"],
            "Orbbec": ["managed:=true", "autostart:=true"]}


def test_readme_names_every_camera_with_its_topics():
    assert [row["camera"] for row in ROWS] == list(VARIANTS)
    for row in ROWS:
        assert {argument.split(":=")[0] for argument in row["arguments"]} == {"rgb_topic",
                                                                              "depth_topic"}
        # The camera info the launch file finds by itself: beside the colour topic.
        namespace = argument(row, "rgb_topic").rpartition("/")[0]
        assert row["camera_info"] == f"{namespace}/camera_info"


def argument(row: dict, name: str) -> str:
    return next(a.split(":=", 1)[1] for a in row["arguments"] if a.startswith(name + ":="))


def wait_for_outputs(streaming, kinds=OUTPUTS, frames: int = 2, timeout: float = 90.0) -> None:
    """Stream until ``frames`` frames have come back with every output of ``kinds``."""
    rig = streaming.rig

    def answered():
        with rig.lock:
            stamps = [set(rig.received[kind]) for kind in kinds]
        return len(set.intersection(*stamps)) >= frames
    if not streaming.stream_until(answered, timeout):
        counts = {kind: rig.count(kind) for kind in kinds}
        pytest.fail(f"outputs {counts} for {len(streaming.sent)} frames sent; diagnostics: "
                    f"{rig.values}")


def check_outputs(streaming) -> None:
    """Labels as the toy engine gives them for the frame sent; a cloud and camera info of the
    camera's size, with the frame's header."""
    rig = streaming.rig
    with rig.lock:
        received = {kind: dict(rig.received[kind]) for kind in OUTPUTS}
    for stamp in set.intersection(*(set(r) for r in received.values())):
        labels, cloud, info = (received[kind][stamp][0] for kind in OUTPUTS)
        expected = streaming.frames.labels(streaming.sent[stamp])
        image = np.frombuffer(labels.data, np.uint8).reshape(labels.height, labels.width)
        np.testing.assert_array_equal(image, expected)
        H, W = expected.shape
        assert (cloud.height, cloud.width) == (H, W)
        assert [f.name for f in cloud.fields][:5] == ["x", "y", "z", "rgb", "label"]
        assert (info.height, info.width) == (H, W)
        assert {labels.header.frame_id, cloud.header.frame_id, info.header.frame_id} == {
            "camera_color_optical_frame"}  # the rig's colour frame
        assert list(info.k) == list(map(float, streaming.frames.camera_info["k"]))


def node_environment(streaming) -> dict:
    return streaming.launch.node_process().environ()


@pytest.mark.parametrize("row", ROWS, ids=[row["camera"] for row in ROWS])
def test_readme_camera_row_gives_labels_cloud_and_camera_info(launch_segmentation, engines,
                                                              workspace, row):
    """The row's launch arguments as the README gives them (the camera info found beside the
    colour topic), the camera on the row's topics."""
    extra = VARIANTS.get(row["camera"], [])
    camera = Camera(rgb_image=argument(row, "rgb_topic"),
                    depth_image=argument(row, "depth_topic"), camera_info=row["camera_info"])
    streaming = launch_segmentation([f"engine:={engines['three']}", *row["arguments"], *extra],
                                    camera)
    wait_for_outputs(streaming)
    check_outputs(streaming)
    environment = node_environment(streaming)
    profile = (workspace / "install" / "cen_perception" / "share" / "cen_perception" / "config"
               / "fastdds_large_images.xml")
    assert profile.is_file()
    if "fastdds_profile:=false" in extra:
        assert not set(PROFILE_VARIABLES) & set(environment)
    else:
        assert {name: environment.get(name) for name in PROFILE_VARIABLES} == dict.fromkeys(
            PROFILE_VARIABLES, str(profile))
    if "managed:=true" in extra:
        assert ros2_ok(streaming.launch, "lifecycle", "get", NODE).stdout.startswith("active")


def test_compressed_transports_and_a_camera_info_topic_named(launch_segmentation, engines):
    camera = Camera(rgb_transport="compressed", depth_transport="compressedDepth",
                    rgb_image="/cam/color/image_raw", depth_image="/cam/depth/image_raw",
                    camera_info="/calibration/color_info")
    streaming = launch_segmentation(
        [f"engine:={engines['three']}", "rgb_topic:=/cam/color/image_raw",
         "depth_topic:=/cam/depth/image_raw", "camera_info_topic:=/calibration/color_info",
         "rgb_transport:=compressed", "depth_transport:=compressedDepth"], camera)
    wait_for_outputs(streaming)
    check_outputs(streaming)  # compressedDepth is lossless: the labels are exact


def ros2_ok(launch, *arguments: str, timeout: float = 60.0):
    """``ros2 <arguments>``, tried again while the ros2 daemon has not yet discovered the
    node."""
    deadline = time.monotonic() + timeout
    while True:
        result = launch.ros2(*arguments)
        if result.returncode == 0 and "not found" not in result.stdout + result.stderr:
            return result
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
    pytest.fail(f"$ ros2 {' '.join(arguments)} -> {result.returncode}\n{result.stdout}"
                f"{result.stderr}")


def test_lifecycle_and_engine_swap_from_the_command_line(launch_segmentation, engines):
    streaming = launch_segmentation([f"engine:={engines['three']}", "managed:=true"],
                                    Camera(rgb_image="/camera/color/image_raw",
                                           depth_image="/camera/aligned_depth_to_color/image_raw",
                                           camera_info="/camera/color/camera_info"),
                                    outputs=("labels",))
    launch, rig = streaming.launch, streaming.rig
    service = f"{NODE}/change_state"
    assert rig.spin_until(lambda: service in dict(rig.node.get_service_names_and_types()), 60.0)
    assert ros2_ok(launch, "lifecycle", "get", NODE).stdout.startswith("unconfigured")
    assert "Transitioning successful" in ros2_ok(launch, "lifecycle", "set", NODE,
                                                 "configure").stdout
    streaming.stream(1.0)
    assert rig.count("labels") == 0  # configured, not active: nothing out
    assert "Transitioning successful" in ros2_ok(launch, "lifecycle", "set", NODE,
                                                 "activate").stdout
    wait_for_outputs(streaming, kinds=("labels",))
    assert streaming.stream_until(lambda: rig.values.get("engine") == str(engines["three"]),
                                  timeout=30.0), rig.values

    # The engine swapped live; /diagnostics names the engine in service once it has changed.
    result = ros2_ok(launch, "param", "set", NODE, "engine_path", str(engines["five"]))
    assert "successful" in result.stdout, result.stdout
    swapped = streaming.stream_until(lambda: rig.values.get("engine") == str(engines["five"]),
                                     timeout=90.0)
    assert swapped, f"diagnostics still name {rig.values.get('engine')}"
    after_swap = streaming.last_sent()
    streaming.stream_until(lambda: len(streaming.outputs_after("labels", after_swap)) >= 2, 30.0)
    assert len(streaming.outputs_after("labels", after_swap)) >= 2
    got = ros2_ok(launch, "param", "get", NODE, "engine_path").stdout
    assert str(engines["five"]) in got

    assert "Transitioning successful" in ros2_ok(launch, "lifecycle", "set", NODE,
                                                 "deactivate").stdout
    deactivated = streaming.last_sent()
    streaming.stream(1.5)
    assert streaming.outputs_after("labels", deactivated) == []
    assert ros2_ok(launch, "lifecycle", "get", NODE).stdout.startswith("inactive")


def test_ctrl_c_ends_the_launch_and_the_node_cleanly(launch_segmentation, engines):
    row = ROWS[0]
    camera = Camera(rgb_image=argument(row, "rgb_topic"),
                    depth_image=argument(row, "depth_topic"), camera_info=row["camera_info"])
    streaming = launch_segmentation([f"engine:={engines['three']}", *row["arguments"]], camera)
    wait_for_outputs(streaming)
    # SIGINT to the launch's whole process group, as a terminal's Ctrl-C sends it.
    assert streaming.launch.stop() == 0
    output = streaming.launch.output
    assert "process has finished cleanly" in output and "Traceback" not in output, output
