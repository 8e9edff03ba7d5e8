"""The node's frame pipeline without ROS: pair first, decode only the pair the worker takes."""
import threading
import time

import numpy as np
import pytest

from cen_perception.image_codec import encode, encode_compressed_color, encode_compressed_depth
from cen_perception.pipeline import BadMessage, DecodeOptions, FramePipeline, PipelineReport, Stage
from cen_perception.sync import Mailbox, RgbdSync

from polling import wait_for

H, W = 24, 32


class Heard(PipelineReport):
    def __init__(self):
        self.bad, self.failed = [], []

    def bad_message(self, stream, reason, trace=""):
        self.bad.append((stream, reason, trace))

    def frame_failed(self, stamp_ns, exc, trace):
        self.failed.append((stamp_ns, exc))


class Header:
    def __init__(self, ns):
        self.stamp = type("Stamp", (), {"sec": ns // 10**9, "nanosec": ns % 10**9})()
        self.frame_id = "camera"


def pair_messages(ns, depth_m=1.0):
    header = Header(ns)
    rgb = np.full((H, W, 3), ns % 251, np.uint8)
    return encode(rgb, "rgb8", header), encode(np.full((H, W), depth_m, np.float32), "32FC1",
                                                    header)


@pytest.fixture
def pipeline_factory():
    made = []

    def make(process, depth_timeout=0.0, max_pixels=1 << 24):
        report = Heard()
        pipeline = FramePipeline(RgbdSync(0.01, 10), DecodeOptions(None, max_pixels),
                                 depth_timeout, process, report, lambda: None)
        pipeline.start()
        made.append(pipeline)
        return pipeline, report

    yield make
    for pipeline in made:
        pipeline.stop(5.0)


def push_pair(pipeline, ns, **kwargs):
    rgb, depth = pair_messages(ns, **kwargs)
    now = time.perf_counter()
    pipeline.push("rgb", rgb, now)
    pipeline.push("depth", depth, now)


def test_newest_pair_wins_and_dropped_pairs_are_never_decoded(pipeline_factory):
    release, processed = threading.Event(), []

    def process(decoded):
        processed.append(decoded.rgb_stamp_ns)
        release.wait(10)

    pipeline, report = pipeline_factory(process)
    push_pair(pipeline, 10**9)
    assert wait_for(lambda: processed)                 # the worker holds the first pair
    assert wait_for(lambda: pipeline.counters.snapshot()["pairs_decoded"] == 1)
    stamps = [10**9 + i * 33_000_000 for i in range(1, 21)]
    for ns in stamps:
        push_pair(pipeline, ns)
    # While the worker is busy the decode thread holds at most one decoded pair; the others
    # wait undecoded in the one-slot mailbox, each replacing the one before.
    time.sleep(0.3)
    assert pipeline.counters.snapshot()["pairs_decoded"] <= 3
    release.set()
    assert wait_for(lambda: processed[-1] == stamps[-1])
    time.sleep(0.2)
    counts = pipeline.counters.snapshot()
    assert processed[0] == 10**9                                        # the newest pair wins
    assert len(set(processed)) == len(processed) <= 4                   # none decoded twice
    assert counts["pairs_decoded"] == len(processed)                    # every decoded pair ran
    assert counts["pairs"] == 21
    assert counts["pairs_dropped"] == 21 - len(processed)               # the rest: undecoded
    assert not report.bad and not report.failed


def test_a_header_that_lies_is_refused_when_it_arrives(pipeline_factory):
    processed = []
    pipeline, report = pipeline_factory(lambda decoded: processed.append(decoded))
    rgb, depth = pair_messages(2 * 10**9)
    depth.height = H // 2                              # a header that lies about its data
    pipeline.push("rgb", rgb, time.perf_counter())
    with pytest.raises(BadMessage) as refused:
        pipeline.push("depth", depth, time.perf_counter())
    assert refused.value.stream == "depth" and "data holds" in refused.value.reason
    push_pair(pipeline, 3 * 10**9)
    assert wait_for(lambda: processed)                 # and the next good pair goes through
    assert pipeline.counters.snapshot()["pairs_decoded"] == 1 and not report.bad


def test_damage_only_decoding_finds_is_counted_by_the_decode_thread(pipeline_factory):
    processed = []
    pipeline, report = pipeline_factory(lambda decoded: processed.append(decoded))
    header = Header(7 * 10**9)
    png = encode_compressed_color(np.full((H, W, 3), 90, np.uint8), "png", header=header)
    data = bytearray(png.data)
    data[-20] ^= 0xFF                                  # inside the image data, not the header
    png.data = bytes(data)
    pipeline.push("rgb", png, 0.0)                     # the header is sound: accepted
    pipeline.push("depth", encode(np.ones((H, W), np.float32), "32FC1", header), 0.0)
    assert wait_for(lambda: report.bad)
    stream, reason, trace = report.bad[0]
    assert stream == "rgb" and "does not decode" in reason and not trace
    assert pipeline.counters.snapshot()["bad_messages"] == 1 and not processed


def test_depth_larger_than_its_colour_image_is_refused(pipeline_factory):
    processed = []
    pipeline, report = pipeline_factory(lambda decoded: processed.append(decoded))
    header = Header(4 * 10**9)
    pipeline.push("rgb", encode(np.zeros((H, W, 3), np.uint8), "rgb8", header), 0.0)
    pipeline.push("depth", encode(np.ones((H * 4, W * 4), np.float32), "32FC1", header), 0.0)
    assert wait_for(lambda: report.bad)
    assert report.bad[0][0] == "depth" and not processed


def test_compressed_colour_is_decoded_in_the_decode_thread(pipeline_factory):
    processed = []
    pipeline, report = pipeline_factory(lambda decoded: processed.append(decoded))
    header = Header(5 * 10**9)
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[..., 0] = 200
    pipeline.push("rgb", encode_compressed_color(rgb, "png", header=header), 0.0)
    pipeline.push("depth", encode(np.ones((H, W), np.float32), "32FC1", header), 0.0)
    assert wait_for(lambda: processed)
    np.testing.assert_array_equal(processed[0].color.rgb(), rgb)
    assert processed[0].decode_ms > 0 and not report.bad


def test_colour_only_frames_after_depth_timeout(pipeline_factory):
    processed = []
    pipeline, _ = pipeline_factory(lambda decoded: processed.append(decoded), depth_timeout=0.05)
    for i in range(6):
        rgb, _ = pair_messages(6 * 10**9 + i * 33_000_000)
        pipeline.push("rgb", rgb, time.perf_counter())
        time.sleep(0.03)
    assert wait_for(lambda: processed)
    assert not processed[-1].depth.metres().any()               # depth invalid everywhere
    assert pipeline.counters.snapshot()["pairs_color_only"] >= 1


# The thread dies of an exception on purpose: pytest would report it as a warning.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_stage_that_dies_is_seen_and_restarted():
    inbox, handled, errors = Mailbox(), [], []

    def handle(item):
        if item == "die":
            raise SystemExit("a failure no handler catches")
        handled.append(item)

    stage = Stage("worker", inbox, handle, lambda item, exc: errors.append(exc))
    stage.start()
    inbox.put("die")
    assert wait_for(lambda: stage.dead)
    stage.restart()
    assert not stage.dead and stage.restarts == 1
    inbox.put("frame")
    assert wait_for(lambda: handled == ["frame"])
    assert stage.stop(5.0) and not stage.dead


def test_an_exception_in_a_frame_is_reported_and_the_stage_goes_on():
    inbox, errors, handled = Mailbox(), [], []

    def handle(item):
        if item == "bad":
            raise ValueError("broken frame")
        handled.append(item)

    stage = Stage("worker", inbox, handle, lambda item, exc: errors.append((item, exc)))
    stage.start()
    inbox.put("bad")
    assert wait_for(lambda: errors)
    inbox.put("good")
    assert wait_for(lambda: handled == ["good"])
    assert errors[0][0] == "bad" and isinstance(errors[0][1], ValueError)
    stage.stop(5.0)


def damaged(msg):
    data = bytearray(msg.data)
    data[-20] ^= 0xFF                                  # inside the image data, not the header
    msg.data = bytes(data)
    return msg


@pytest.mark.parametrize("bad", [None, "rgb", "depth", "both"])
def test_a_compressed_pair_is_decoded_side_by_side(pipeline_factory, bad):
    processed = []
    pipeline, report = pipeline_factory(lambda decoded: processed.append(decoded))
    header = Header(9 * 10**9)
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[..., 2] = 120
    mm = np.arange(H * W, dtype=np.uint16).reshape(H, W) + 500
    color = encode_compressed_color(rgb, "png", header=header)
    depth = encode_compressed_depth(mm, "16UC1", header=header)
    pipeline.push("rgb", damaged(color) if bad in ("rgb", "both") else color, 0.0)
    pipeline.push("depth", damaged(depth) if bad in ("depth", "both") else depth, 0.0)
    if bad is None:
        assert wait_for(lambda: processed)
        np.testing.assert_array_equal(processed[0].color.rgb(), rgb)
        np.testing.assert_array_equal(processed[0].depth.metres(), mm / np.float32(1000))
        assert not report.bad
    else:
        assert wait_for(lambda: report.bad)
        assert report.bad[0][0] == ("depth" if bad == "depth" else "rgb") and not processed
        assert not report.bad[0][2]                    # a bad message, not a decoder failure
    assert pipeline.counters.snapshot()["bad_messages"] == (bad is not None)
