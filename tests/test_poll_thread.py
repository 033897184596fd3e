"""pzem.poll_thread.PollThread: its schedule with a fake clock (the thread sleeps through a model
that moves the clock instead), and the real thread for the lock, halt and stop."""
import logging
import threading
import time

import pytest

from pzem.poll_thread import MainLoopLock, PollThread

PERIOD = 1.0
T0 = 1000.0


class Model(object):
    """A fake clock and the thread's sleep on it: sleep(ms) moves the clock by that plus
    `latency` (a wake-up that comes late)."""

    def __init__(self, latency=0.0):
        self.now = T0
        self.latency = latency

    def __call__(self):
        return self.now

    def sleep(self, milliseconds):
        assert milliseconds > 0                     # the thread never sleeps 0 or backwards
        self.now += milliseconds / 1000.0 + self.latency


def run(model, ticks_wanted, periods=None, stall=None, first_delay=None, lock=None,
        catch_up=0.0):
    """Run the real thread until `ticks_wanted` ticks; returns the fake times of the ticks.
    periods: {tick number: new period}; stall: {tick number: seconds the tick takes}."""
    ticks = []
    state = {'period': PERIOD}

    def tick():
        ticks.append(model.now)
        state['period'] = (periods or {}).get(len(ticks), state['period'])
        model.now += (stall or {}).get(len(ticks), 0.0)
        if len(ticks) >= ticks_wanted:
            poller.halt()
        return state['period']

    poller = PollThread(tick, lock or threading.RLock(), clock=model, sleep=model.sleep,
                        catch_up=catch_up)
    poller.start(PERIOD, first_delay=first_delay)
    poller.stop(timeout=10.0)
    assert len(ticks) == ticks_wanted
    return ticks, poller


def test_on_time_ticks_keep_to_the_schedule():
    ticks, _ = run(Model(), 200)
    assert ticks == pytest.approx([T0 + k * PERIOD for k in range(1, 201)])


def test_late_wake_ups_do_not_drift():
    model = Model(latency=0.013)
    ticks, _ = run(model, 600)
    late = [t - (T0 + k * PERIOD) for k, t in enumerate(ticks, 1)]
    # waking 13 ms late each time and counting from there would be 600 x 13 ms = 7.8 s late
    assert max(late) == pytest.approx(0.013)
    assert min(late) >= 0.0


def test_a_new_period_counts_from_the_tick_that_asked_for_it():
    ticks, poller = run(Model(), 50, periods={10: 0.25})
    assert ticks[:10] == pytest.approx([T0 + k * PERIOD for k in range(1, 11)])
    assert ticks[10:] == pytest.approx([ticks[9] + k * 0.25 for k in range(1, 41)])
    assert poller.period == 0.25


def test_a_long_stall_starts_the_schedule_afresh():
    ticks, _ = run(Model(), 20, stall={5: 3.5 * PERIOD})
    resumed = T0 + 5 * PERIOD + 3.5 * PERIOD
    # no burst of ticks to catch up: the next tick runs as the stall ends, then one a period
    assert ticks[5:] == pytest.approx([resumed + k * PERIOD for k in range(15)])


def test_a_long_tick_within_its_period_keeps_the_schedule():
    ticks, _ = run(Model(), 10, stall={3: 0.4 * PERIOD})
    assert ticks == pytest.approx([T0 + k * PERIOD for k in range(1, 11)])


def test_ticks_longer_than_their_period_are_followed_not_chased():
    ticks, _ = run(Model(), 30, stall=dict((k, 1.1 * PERIOD) for k in range(1, 31)))
    # a bus without gaps: each tick starts as the one before ends
    assert ticks == pytest.approx([T0 + PERIOD + k * 1.1 * PERIOD for k in range(30)])


def test_a_tick_late_by_less_than_catch_up_is_caught_up():
    # A read that waited out its timeout: the next ticks run at once until the schedule is
    # kept again, so the round keeps its length (a meter is read every interval on average).
    ticks, _ = run(Model(), 12, stall={3: 1.6 * PERIOD}, catch_up=3 * PERIOD)
    assert ticks[:3] == pytest.approx([T0 + k * PERIOD for k in range(1, 4)])
    assert ticks[3] == pytest.approx(T0 + 4.6 * PERIOD)        # at once, as the stall ends
    assert ticks[4:] == pytest.approx([T0 + k * PERIOD for k in range(5, 13)])  # on schedule


def test_later_than_catch_up_starts_the_schedule_afresh():
    ticks, _ = run(Model(), 10, stall={3: 4.5 * PERIOD}, catch_up=2 * PERIOD)
    resumed = T0 + 3 * PERIOD + 4.5 * PERIOD
    assert ticks[3:] == pytest.approx([resumed + k * PERIOD for k in range(7)])


def test_first_delay_then_the_period():
    ticks, _ = run(Model(), 5, first_delay=0.0)
    assert ticks == pytest.approx([T0 + k * PERIOD for k in range(5)])


def test_each_tick_holds_the_lock_and_the_main_thread_waits_for_it():
    lock = threading.Lock()
    held = []
    entered, release = threading.Event(), threading.Event()

    def tick():
        held.append(lock.locked())
        entered.set()
        release.wait(5.0)
        return 0.001

    poller = PollThread(tick, lock)
    poller.start(0.001, first_delay=0.0)
    try:
        assert entered.wait(5.0)
        assert not lock.acquire(blocking=False)     # the main thread cannot step in now
        release.set()
        with lock:                                  # it gets the lock once the tick is over
            pass
    finally:
        release.set()
        poller.stop()
    assert held and all(held)


def test_a_thread_behind_its_schedule_gives_the_main_loop_its_turn():
    """Ticks back to back, each holding the lock for a while (a slow gateway, a bus with no
    gaps): the main loop, waiting through a MainLoopLock, gets in after the tick in progress,
    every time. A plain lock, taken straight back by the thread, let it wait for seconds."""
    main_lock = MainLoopLock()
    ticks = []
    ticked = threading.Semaphore(0)

    def tick():
        ticks.append(None)
        ticked.release()
        time.sleep(0.02)
        return 0.001                    # always behind: never a sleep between ticks

    poller = PollThread(tick, main_lock)
    poller.start(0.001, first_delay=0.0)
    waited = []
    try:
        for _ in range(20):
            while ticked.acquire(blocking=False):
                pass
            assert ticked.acquire(timeout=5.0)      # a tick has just begun: the lock is held
            asked = len(ticks)
            with main_lock:
                waited.append(len(ticks) - asked)   # ticks begun while it waited
    finally:
        poller.stop()
    assert len(waited) == 20 and max(waited) <= 1, waited


def test_stop_ends_a_real_loop_and_no_tick_runs_after_it():
    ticks = []
    poller = PollThread(lambda: ticks.append(time.monotonic()) or 0.005, threading.RLock())
    poller.start(0.005)
    deadline = time.monotonic() + 5.0
    while len(ticks) < 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    poller.stop()
    count = len(ticks)
    time.sleep(0.05)
    assert count >= 3 and len(ticks) == count


def test_stop_does_not_wait_for_a_long_period_to_end():
    poller = PollThread(lambda: 60.0, threading.RLock())
    poller.start(60.0)
    started = time.monotonic()
    poller.stop(timeout=30.0)
    assert time.monotonic() - started < 5.0     # woken by halt(), not by the 60 s sleep


def test_a_failing_loop_says_so_and_calls_on_crash(caplog):
    crashed = threading.Event()

    def tick():
        raise RuntimeError('a bug')

    poller = PollThread(tick, threading.RLock(), on_crash=crashed.set)
    with caplog.at_level(logging.ERROR, logger='pzem'):
        poller.start(0.001, first_delay=0.0)
        assert crashed.wait(5.0)
        poller.stop()
    assert 'the poll loop failed' in caplog.text and 'RuntimeError: a bug' in caplog.text
