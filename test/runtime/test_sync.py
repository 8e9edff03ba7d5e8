import threading

import pytest

from cen_perception.sync import Mailbox, Pair, RgbdSync

MS = 1_000_000  # nanoseconds


def pairs_of(results):
    return [(p.rgb_stamp_ns // MS, p.depth_stamp_ns // MS) for p in results if p is not None]


def test_exact_and_approximate_stamps_pair_with_items():
    sync = RgbdSync(slop=0.01, queue_size=5)
    assert sync.push_rgb(100 * MS, "rgb100") is None
    pair = sync.push_depth(104 * MS, "depth104")
    assert pair == Pair("rgb100", "depth104", 100 * MS, 104 * MS)
    assert sync.push_depth(133 * MS, "d133") is None
    pair = sync.push_rgb(133 * MS, "r133")
    assert (pair.rgb, pair.depth) == ("r133", "d133")
    assert sync.stats.matched == 2 and sync.stats.dropped == 0
    assert sync.pending() == (0, 0)


def test_outside_slop_does_not_pair():
    sync = RgbdSync(slop=0.005, queue_size=5)
    assert sync.push_rgb(100 * MS, "r") is None
    assert sync.push_depth(106 * MS, "d") is None
    # RGB 100 can pair neither with depth 106 nor with any later depth.
    assert sync.pending() == (0, 1) and sync.stats.rgb_unmatched == 1
    assert sync.push_rgb(110 * MS, "r110").depth == "d"


def test_closest_partner_wins():
    sync = RgbdSync(slop=0.02, queue_size=5)
    sync.push_depth(85 * MS, "d85")
    sync.push_depth(98 * MS, "d98")
    sync.push_depth(115 * MS, "d115")
    pair = sync.push_rgb(100 * MS, "r100")
    assert pair.depth == "d98"
    # d85 is older than the partner: it can only pair worse from now on.
    assert sync.stats.depth_unmatched == 1
    assert sync.pending() == (0, 1)


def test_depth_arriving_before_rgb_and_interleaved_out_of_order():
    sync = RgbdSync(slop=0.01, queue_size=10)
    # Camera at 30 Hz, depth stamps 2 ms after RGB, depth messages ahead by a frame.
    results = []
    for i in range(10):
        results.append(sync.push_depth((i * 33 + 2) * MS, f"d{i}"))
        if i:
            results.append(sync.push_rgb((i - 1) * 33 * MS, f"r{i - 1}"))
    results.append(sync.push_rgb(9 * 33 * MS, "r9"))
    assert pairs_of(results) == [(i * 33, i * 33 + 2) for i in range(10)]
    assert sync.stats.dropped == 0


def test_duplicates_are_counted_and_never_paired_twice():
    sync = RgbdSync(slop=0.01, queue_size=5)
    sync.push_rgb(100 * MS, "first")
    sync.push_rgb(100 * MS, "second")  # the same frame again while waiting: newer copy kept
    assert sync.stats.duplicates == 1
    pair = sync.push_depth(100 * MS, "d")
    assert pair.rgb == "second"
    assert sync.push_depth(100 * MS, "d again") is None
    assert sync.push_rgb(100 * MS, "third") is None
    assert sync.stats.duplicates == 3 and sync.stats.matched == 1


def test_frames_older_than_the_last_pair_are_late():
    sync = RgbdSync(slop=0.01, queue_size=5)
    sync.push_rgb(200 * MS, "r200")
    sync.push_depth(200 * MS, "d200")
    assert sync.push_rgb(150 * MS, "r150") is None
    assert sync.push_depth(150 * MS, "d150") is None
    assert sync.stats.late == 2 and sync.stats.matched == 1


def test_one_stream_silent_is_bounded_and_counted():
    sync = RgbdSync(slop=0.01, queue_size=3)
    for i in range(20):
        assert sync.push_rgb(i * 33 * MS, i) is None
    assert sync.pending() == (3, 0)
    assert sync.stats.rgb_unmatched == 17
    # Depth resumes: it pairs with the newest RGB and everything older is dropped.
    pair = sync.push_depth(19 * 33 * MS, "d")
    assert pair.rgb == 19
    assert sync.stats.rgb_unmatched == 19 and sync.pending() == (0, 0)


def test_stale_frames_of_the_other_stream_are_dropped_as_time_moves_on():
    sync = RgbdSync(slop=0.01, queue_size=10)
    sync.push_depth(100 * MS, "lonely depth")
    sync.push_rgb(500 * MS, "r500")  # depth 100 can never pair with RGB from 500 on
    assert sync.stats.depth_unmatched == 1 and sync.pending() == (1, 0)


def test_clock_jump_back_resets_and_pairs_again():
    sync = RgbdSync(slop=0.01, queue_size=5, jump_back=1.0)
    for i in range(5):
        sync.push_rgb((10_000 + i * 33) * MS, i)
        assert sync.push_depth((10_000 + i * 33) * MS, i) is not None
    sync.push_rgb(10_200 * MS, "waiting")
    # A bag restarts: stamps go back by ten seconds.
    assert sync.push_rgb(0, "r0") is None
    assert sync.stats.resets == 1 and sync.stats.rgb_unmatched == 1
    pair = sync.push_depth(1 * MS, "d1")
    assert (pair.rgb, pair.depth) == ("r0", "d1")
    # A small step back is not a jump: just a late frame.
    assert sync.push_rgb(0, "again") is None and sync.stats.resets == 1


def test_manual_reset_forgets_history():
    sync = RgbdSync(slop=0.01, queue_size=5)
    sync.push_rgb(100 * MS, "r")
    sync.push_depth(100 * MS, "d")
    sync.push_rgb(133 * MS, "waiting")
    sync.reset()
    assert sync.pending() == (0, 0) and sync.stats.rgb_unmatched == 1
    sync.push_rgb(50 * MS, "r50")  # would be late without the reset
    assert sync.push_depth(50 * MS, "d50").rgb == "r50"
    stats = sync.stats.as_dict()
    assert stats["matched"] == 2 and stats["resets"] == 1 and stats["dropped"] == 1


@pytest.mark.parametrize("kwargs", [dict(slop=0, queue_size=5), dict(slop=0.01, queue_size=0),
                                    dict(slop=-1, queue_size=1)])
def test_invalid_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        RgbdSync(**kwargs)


def test_mailbox_keeps_only_the_newest_and_counts_replaced():
    box = Mailbox()
    assert box.get(timeout=0) is None
    assert box.put(1) is False
    assert box.put(2) is True
    assert box.put(3) is True
    assert box.get(timeout=0) == 3
    assert box.get(timeout=0.01) is None
    assert box.replaced == 2


def test_mailbox_wakes_a_waiting_consumer_and_closes():
    box = Mailbox()
    got = []
    consumer = threading.Thread(target=lambda: got.append(box.get(timeout=10)))
    consumer.start()
    box.put("pair")
    consumer.join(timeout=10)
    assert got == ["pair"]

    consumer = threading.Thread(target=lambda: got.append(box.get(timeout=10)))
    consumer.start()
    box.close()
    consumer.join(timeout=10)
    assert not consumer.is_alive() and got == ["pair", None] and box.closed
    assert box.put("after close") is False
    assert box.get(timeout=0) is None
