"""The node's input rules without ROS: QoS choice, silent-topic causes, depth units."""
import numpy as np
import pytest

from cen_perception.input_health import (
    BEST_EFFORT,
    PROFILE_VARIABLES,
    RELIABLE,
    DepthWatch,
    StreamWatch,
    choose_reliability,
)


@pytest.mark.parametrize("offered,expected", [
    ([], None),
    ([RELIABLE], RELIABLE),
    ([RELIABLE, RELIABLE], RELIABLE),
    ([BEST_EFFORT], BEST_EFFORT),
    ([RELIABLE, BEST_EFFORT], BEST_EFFORT),
])
def test_auto_qos_follows_every_publisher(offered, expected):
    assert choose_reliability(offered) == expected


def watch(reliability, offered, received=None):
    w = StreamWatch("rgb", "rgb/image", started=0.0, reliability=reliability)
    w.set_publishers(offered, now=1.0)
    if received is not None:
        w.received(received)
    return w


def test_no_publisher_is_no_stall():
    w = StreamWatch("rgb", "rgb/image", started=0.0)
    assert w.stall(now=100.0, timeout=3.0) is None


def test_silence_counts_from_the_first_publisher_and_the_last_message():
    w = watch(RELIABLE, [RELIABLE])
    assert w.stall(now=3.9, timeout=3.0) is None          # publisher seen at 1.0
    assert w.stall(now=4.1, timeout=3.0).startswith(
        "no rgb images for 3.1 s on rgb/image although 1 publisher is there")
    w.received(4.0)
    assert w.stall(now=6.9, timeout=3.0) is None
    assert w.stall(now=7.2, timeout=3.0) is not None


def test_causes_name_the_remedy():
    mismatch = watch(RELIABLE, [BEST_EFFORT])
    assert "QoS mismatch" in mismatch.cause() and "qos: auto" in mismatch.cause()
    reported = watch(RELIABLE, [RELIABLE])
    reported.incompatible(1, "DURABILITY")
    assert "QoS mismatch (DURABILITY)" in reported.cause()
    forced_best_effort = watch(BEST_EFFORT, [RELIABLE])
    assert "set qos: auto or reliable" in forced_best_effort.cause()
    too_large = watch(BEST_EFFORT, [BEST_EFFORT])
    assert "shared-memory segment" in too_large.cause()
    assert all(name in too_large.cause() for name in PROFILE_VARIABLES)
    quiet = watch(RELIABLE, [RELIABLE])
    assert "camera is streaming" in quiet.cause()


def test_depth_in_wrong_units_is_flagged():
    kinect_tenth_mm_as_mm = np.full((48, 64), 24.5, np.float32)   # 2.45 m read as mm
    depth = DepthWatch()
    depth.add(kinect_tenth_mm_as_mm)
    assert "wrong units? set depth_scale" in depth.problem()
    fine = DepthWatch()
    fine.add(kinect_tenth_mm_as_mm / 10)
    assert fine.problem() is None


def test_depth_against_the_training_range():
    trained = DepthWatch(depth_range_m=[0.5, 4.0])
    trained.add(np.full((16, 16), 2.0, np.float32))
    assert trained.problem() is None
    metres_as_mm = DepthWatch(depth_range_m=[0.5, 4.0])
    metres_as_mm.add(np.full((16, 16), 0.002, np.float32))
    assert "far outside the training range 0.50-4.00 m" in metres_as_mm.problem()


def test_invalid_depth_is_left_out_of_the_median():
    depth = np.zeros((64, 64), np.float32)
    assert DepthWatch.valid_median(depth) is None
    depth[:8, :] = 3.0
    assert DepthWatch.valid_median(depth) == 3.0
