"""The lost-consumer check: idle with messages waiting, at every check, for the whole stuck time."""

import redis

from workers.consumer_watchdog import Watchdog, queue_keys


def _dog(waiting, busy):  # noqa: ANN001, ANN202
    return Watchdog(30.0, waiting=lambda: waiting[0], busy=lambda: busy[0])


def test_idle_with_messages_waiting_for_the_stuck_time_is_a_lost_consumer():
    dog = _dog([5], [False])
    assert not dog.check(100.0)
    assert not dog.check(129.9)
    assert dog.check(130.0)


def test_a_busy_moment_or_an_empty_queue_restarts_the_clock():
    waiting, busy = [5], [False]
    dog = _dog(waiting, busy)
    dog.check(100.0)
    busy[0] = True
    assert not dog.check(120.0)
    busy[0] = False
    assert not dog.check(140.0)  # idle with work again, but only since 140
    waiting[0] = 0
    assert not dog.check(175.0)
    waiting[0] = 3
    assert not dog.check(180.0)
    assert dog.check(210.0)


def test_a_broker_it_cannot_reach_is_not_a_lost_consumer():
    def down() -> int:
        raise redis.ConnectionError("Error 111 connecting")

    dog = Watchdog(30.0, waiting=down, busy=lambda: False)
    assert not dog.check(100.0)
    assert not dog.check(200.0)
    assert dog.idle_with_work_since is None


def test_every_priority_list_of_a_queue_is_counted():
    keys = queue_keys(["io", "control"])
    assert keys[:2] == ["io", "control"]
    assert "io\x06\x163" in keys and "control\x06\x169" in keys and len(keys) == 8
