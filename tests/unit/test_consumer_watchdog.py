"""The lost-consumer check: idle with messages waiting, or an event loop that stopped turning, at every
check for the whole stuck time, with the broker reachable."""

import redis

from atelier.workers.consumer_watchdog import LoopProbe, Watchdog, queue_keys


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


class _Consumer:
    """Celery's consumer as the probe sees it: its connection (None while it reconnects) and its hub,
    whose call_soon queues a callback; run() is one turn of the event loop. One object plays both."""

    def __init__(self) -> None:
        self.ready: list = []
        self.connection = object()

    @property
    def hub(self):  # noqa: ANN201
        return self

    def call_soon(self, callback) -> None:  # noqa: ANN001
        self.ready.append(callback)

    def run(self) -> None:
        ready, self.ready = self.ready, []
        for callback in ready:
            callback()


def test_a_loop_that_stops_turning_is_a_lost_consumer_even_while_it_looks_busy():
    consumer = _Consumer()
    dog = Watchdog(30.0, waiting=lambda: 4, busy=lambda: True, loop_turned=LoopProbe(consumer))
    for t in (100.0, 105.0, 110.0):  # a turning loop: each check's callback ran before the next
        assert not dog.check(t)
        consumer.run()
    assert not dog.check(115.0)  # it ran 110's callback; from here on nothing runs what is asked of it
    assert not dog.check(120.0)  # 115's callback did not run: stuck since 120
    assert not dog.check(149.9)
    assert dog.check(150.0)
    assert dog.reason == "its event loop has not turned"


def test_a_loop_that_turns_again_or_a_broker_away_restarts_the_loop_clock():
    consumer, reachable = _Consumer(), [True]

    def waiting() -> int:
        if not reachable[0]:
            raise redis.TimeoutError("Timeout reading from socket")
        return 0

    dog = Watchdog(30.0, waiting=waiting, busy=lambda: False, loop_turned=LoopProbe(consumer))
    assert not dog.check(100.0)
    assert not dog.check(105.0)  # stuck since 105
    consumer.run()
    assert not dog.check(130.0)  # it turned: the clock starts again
    assert dog.loop_stuck_since is None
    assert not dog.check(135.0)
    reachable[0] = False  # the consumer waits on its reconnect, and its loop with it: not this fault
    assert not dog.check(170.0)
    assert dog.loop_stuck_since is None
    reachable[0] = True
    assert not dog.check(175.0)  # the callback asked at 135 is still waiting: stuck since 175 only
    assert not dog.check(204.0)
    assert dog.check(205.0)


def test_a_worker_without_an_event_loop_is_judged_by_its_queues_alone():
    dog = Watchdog(30.0, waiting=lambda: 0, busy=lambda: True, loop_turned=None)
    assert not dog.check(100.0)
    assert not dog.check(1000.0)


def test_a_busy_worker_whose_loop_waits_on_an_unreachable_broker_is_left_alone():
    # while the broker is away the consumer sits in its reconnect loop and the event loop with it;
    # the task it runs in a pool process goes on and must not be cut short
    consumer = _Consumer()

    def down() -> int:
        raise redis.ConnectionError("Error 111 connecting")

    dog = Watchdog(30.0, waiting=down, busy=lambda: True, loop_turned=LoopProbe(consumer))
    for t in range(100, 400, 5):
        assert not dog.check(float(t))


def test_a_consumer_in_its_reconnect_loop_is_not_judged_until_connected_again():
    # kombu waits up to 30 s between attempts, holding the event loop: not a stuck loop
    consumer = _Consumer()
    dog = Watchdog(30.0, waiting=lambda: 0, busy=lambda: True, loop_turned=LoopProbe(consumer))
    assert not dog.check(100.0)
    consumer.connection = None
    for t in range(105, 200, 5):
        assert not dog.check(float(t))
    consumer.connection = object()
    assert not dog.check(200.0)  # connected: the first look asks without judging
    assert not dog.check(205.0)  # and the loop does not turn from here on
    assert not dog.check(234.9)
    assert dog.check(235.0)
