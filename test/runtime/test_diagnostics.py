"""/diagnostics as a plain function of a snapshot: levels and messages an operator acts on."""
from cen_perception import diagnostics
from cen_perception.diagnostics import ERROR, OK, WARN, InputSnapshot, Snapshot

ENGINE = {"backend": "onnxruntime", "engine": "/models/cen.onnx", "input_size": "320x240",
          "engine_loaded": "2026-12-03T08:00:00", "precision": "fp32"}


def running(**fields):
    delta = dict(rgb_received=30, depth_received=30, pairs=30, frames_processed=10)
    delta.update(fields.pop("delta", {}))
    return Snapshot("active", dict(ENGINE), delta=delta, counts=dict(delta), **fields)


def test_a_healthy_stream_is_ok_and_running():
    level, message, values = diagnostics.status(running(camera_info_topic="/cam/camera_info"))
    assert (level, message) == (OK, "running")
    assert values["engine"] == "/models/cen.onnx" and values["input_size"] == "320x240"
    assert values["camera_info_topic"] == "/cam/camera_info" and values["camera_info"] == "none"
    assert values["rgb_rate_hz"] == "30.00"


def test_missing_camera_info_names_its_topic():
    level, message, _ = diagnostics.status(running(camera_info_topic="/cam/color/camera_info",
                                                   camera_info_missing=True))
    assert level == WARN
    assert message == "no camera_info on /cam/color/camera_info: no cloud"


def test_a_restarted_thread_is_an_error_until_it_runs_again():
    level, message, _ = diagnostics.status(running(restarted_stages=["segmentation_worker"]))
    assert level == ERROR and "segmentation_worker thread died" in message
    assert diagnostics.status(running())[0] == OK


def test_input_problems_are_worded_worst_first():
    stalled = InputSnapshot("depth", "/cam/depth", "raw", "best_effort", ("best_effort",),
                            stall="/cam/depth: no messages for 3.0 s")
    level, message, values = diagnostics.status(running(
        inputs=[stalled], engine_refused="/m/x.onnx: engine file not found",
        delta=dict(bad_messages=2, pairs=0), last_stamps={"rgb": 1_000_000_000,
                                                           "depth": 1_250_000_000},
        sync_slop=0.02))
    assert level == WARN
    assert message.split("; ") == [
        "/cam/depth: no messages for 3.0 s",
        "engine change refused: /m/x.onnx: engine file not found",
        "bad input messages dropped",
        "rgb and depth do not pair (last stamps 250.0 ms apart): check stamps and sync_slop "
        "(0.02 s)"]
    assert values["depth_publishers"] == "best_effort"
    assert values["engine_refused"].endswith("not found")


def test_colour_only_and_idle_and_waiting():
    assert diagnostics.status(running(delta=dict(pairs_color_only=5)))[1] == \
        "depth missing: colour only"
    idle = running(delta=dict(frames_processed=0, pairs_idle=30))
    assert diagnostics.status(idle)[1] == "idle: no subscribers"
    waiting = Snapshot("active", dict(ENGINE), delta={})
    assert diagnostics.status(waiting)[1] == "waiting for images"


def test_unconfigured_with_a_reason_is_an_error():
    level, message, values = diagnostics.status(
        Snapshot("unconfigured", configure_error="engine file not found: /m.onnx"))
    assert (level, message, values) == (ERROR, "unconfigured: engine file not found: /m.onnx", {})
    assert diagnostics.status(Snapshot("inactive", dict(ENGINE)))[:2] == (OK, "inactive")
