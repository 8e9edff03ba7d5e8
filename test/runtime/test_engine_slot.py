"""Live engine changes without ROS: opened in the background, closed only when unused."""
import threading
import time

import pytest

from cen_perception.engine_slot import EngineSlot, StartupError, load_engine

from polling import wait_for


@pytest.fixture
def engines(toy_onnx_factory):
    return {"a": str(toy_onnx_factory(24, 32, num_classes=3)),
            "b": str(toy_onnx_factory(24, 32, num_classes=5))}


class Opener:
    """load_engine, held at a gate when asked to, to order what happens around a slow load."""

    def __init__(self):
        self.gates, self.opened = {}, []

    def hold(self, path):
        self.gates[path] = threading.Event()
        return self.gates[path]

    def __call__(self, path):
        if path in self.gates:
            self.gates[path].wait(10)
        loaded = load_engine(path, "auto", 1, 0.0, False)
        self.opened.append(loaded)
        return loaded


def make_slot(opener):
    woken = threading.Event()
    return EngineSlot(opener, woken.set), woken


def test_a_request_opens_in_the_background_and_swaps_between_frames(engines):
    opener = Opener()
    slot, woken = make_slot(opener)
    first = slot.open_now(engines["a"])
    gate = opener.hold(engines["b"])
    started = time.perf_counter()
    slot.request(engines["b"])
    assert time.perf_counter() - started < 0.1          # the caller never waits for the load
    assert slot.loading == engines["b"] and slot.swap() is None
    gate.set()
    assert woken.wait(10)
    outcome, = slot.outcomes()
    assert outcome.path == engines["b"] and not outcome.error and len(outcome.class_names) == 5
    in_use = slot.acquire()                             # a frame on the old engine
    assert slot.swap().path == engines["b"] and slot.in_service.path == engines["b"]
    assert in_use is first and not first.engine.closed  # still used by its frame
    in_use.release()
    assert first.engine.closed                          # closed once its frame ended


def test_a_bad_engine_is_refused_and_the_old_one_stays(engines, tmp_path):
    slot, woken = make_slot(Opener())
    slot.open_now(engines["a"])
    slot.request(str(tmp_path / "missing.onnx"))
    assert woken.wait(10)
    outcome, = slot.outcomes()
    assert "engine file not found" in outcome.error
    assert slot.swap() is None and slot.in_service.path == engines["a"]


def test_close_while_a_load_runs_closes_the_late_engine(engines):
    opener = Opener()
    slot, _ = make_slot(opener)
    slot.open_now(engines["a"])
    gate = opener.hold(engines["b"])
    slot.request(engines["b"])
    first = slot.in_service
    slot.close()                                        # cleanup while b still opens
    assert first.engine.closed and slot.in_service is None
    gate.set()
    assert wait_for(lambda: len(opener.opened) == 2)
    late = opener.opened[1]
    assert late.path == engines["b"] and wait_for(lambda: late.engine.closed)
    assert not slot.outcomes() and slot.swap() is None and slot.acquire() is None


def test_a_newer_request_supersedes_an_older_one(engines):
    opener = Opener()
    slot, woken = make_slot(opener)
    slot.open_now(engines["a"])
    gate = opener.hold(engines["b"])
    slot.request(engines["b"])
    slot.request(engines["a"])
    assert woken.wait(10)
    gate.set()
    time.sleep(0.3)
    assert [o.path for o in slot.outcomes()] == [engines["a"]]
    assert slot.swap().path == engines["a"]


def test_configure_with_a_missing_engine_says_why(tmp_path):
    slot, _ = make_slot(Opener())
    with pytest.raises(StartupError, match="engine file not found"):
        slot.open_now(str(tmp_path / "none.onnx"))
    assert slot.in_service is None


def test_a_change_taken_back_leaves_the_engine_in_service(engines):
    opener = Opener()
    slot, woken = make_slot(opener)
    first = slot.open_now(engines["a"])
    gate = opener.hold(engines["b"])
    slot.request(engines["b"])
    slot.cancel()                                       # engine_path set back to the first
    gate.set()
    assert wait_for(lambda: len(opener.opened) == 2)
    assert wait_for(lambda: opener.opened[1].engine.closed)
    assert not woken.is_set() and not slot.outcomes() and slot.loading == ""
    assert slot.swap() is None and slot.in_service is first and not first.engine.closed
