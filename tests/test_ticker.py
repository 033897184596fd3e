"""pzem.ticker.Ticker on a real GLib main context, with a fake clock.

The ticker only sees time through its clock and GLib.timeout_add. The test gives it a GLib whose
timeouts are real sources (0 ms, so the test runs fast) that set the fake clock to when a real
timeout would have fired: the time it was added plus its interval, plus a dispatch latency that
GLib's repeating timer accumulates (it re-arms from the moment it was dispatched). So slip and
drift are exact numbers, and nothing here depends on how busy the machine is.
"""
import pytest
from gi.repository import GLib

from pzem import ticker as ticker_module
from pzem.ticker import Ticker

PERIOD = 1.0
T0 = 1000.0


class Clock(object):
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


class ModelGLib(object):
    """GLib for the ticker: timeout_add is recorded (`added`: (tick number, ms)) and fires at
    the fake time it would fire at on a device that dispatches `latency` s late."""

    def __init__(self, clock, latency=0.0):
        self.clock = clock
        self.latency = latency
        self.added = []
        self.ticks = 0          # set by the test's tick function: who added a timeout

    def timeout_add(self, ms, func):
        self.added.append((self.ticks, ms))
        state = {'at': self.clock()}

        def dispatch():
            # a repeating timer re-arms from here; a timer that fell due during a long tick
            # fires as soon as the tick is over, never before
            state['at'] = max(state['at'] + ms / 1000.0 + self.latency, self.clock.now)
            self.clock.now = state['at']
            return func()
        return GLib.timeout_add(0, dispatch)

    def source_remove(self, source):
        GLib.source_remove(source)


@pytest.fixture
def rig(monkeypatch):
    clock = Clock(T0)
    glib = ModelGLib(clock)
    monkeypatch.setattr(ticker_module, 'GLib', glib)
    return clock, glib


def run(ticker, glib, ticks, stop_after):
    """Iterate the default main context until `stop_after` ticks ran (a 10 s guard only keeps a
    broken ticker from hanging the suite); the ticker is stopped afterwards."""
    context = GLib.MainContext.default()
    expired = []
    guard = GLib.timeout_add(10000, lambda: expired.append(True) and False)
    try:
        while len(ticks) < stop_after and not expired:
            context.iteration(True)
    finally:
        ticker.stop()
        if not expired:
            GLib.source_remove(guard)
    assert not expired, 'the ticker stopped ticking after %d ticks' % len(ticks)


def recorder(clock, glib, periods=None, stall=None):
    """tick(): records the fake time of each tick; returns the period wanted from then on
    (periods: {tick number: new period}); stall: {tick number: seconds the tick takes}."""
    ticks = []
    state = {'period': PERIOD}

    def tick():
        ticks.append(clock())
        glib.ticks = len(ticks)
        state['period'] = (periods or {}).get(len(ticks), state['period'])
        clock.now += (stall or {}).get(len(ticks), 0.0)
        return state['period']
    return ticks, tick


def test_on_time_ticks_keep_the_one_timer(rig):
    clock, glib = rig
    ticks, tick = recorder(clock, glib)
    ticker = Ticker(tick, clock=clock)
    ticker.start(PERIOD)
    run(ticker, glib, ticks, 200)
    assert ticks == pytest.approx([T0 + k * PERIOD for k in range(1, 201)])
    assert glib.added == [(0, 1000)]


def test_slipping_dispatch_is_corrected_without_drift(rig):
    clock, glib = rig
    glib.latency = 0.013 * PERIOD
    ticks, tick = recorder(clock, glib)
    ticker = Ticker(tick, clock=clock)
    ticker.start(PERIOD)
    run(ticker, glib, ticks, 600)
    late = [t - (T0 + k * PERIOD) for k, t in enumerate(ticks, 1)]
    # uncorrected, GLib's repeating timer would be 600 x 13 ms = 7.8 s late by now
    assert max(late) <= PERIOD / 4 + glib.latency
    assert min(late) >= -0.001          # a re-arm is rounded down to whole ms, never more
    # a new timeout only after a tick that slipped by more than a quarter period: a one-shot
    # to the next due time, where the repeating one is armed again before that tick runs
    slipped = [k for k, l in enumerate(late, 1) if abs(l) > PERIOD / 4]
    assert [k for k, _ in glib.added[1:]] == sorted(slipped * 2)[:len(glib.added) - 1]
    assert 20 <= len(slipped) <= 600 * 0.013 / 0.25 + 1


def test_a_new_period_rearms_once_and_keeps_to_it(rig):
    clock, glib = rig
    ticks, tick = recorder(clock, glib, periods={10: 0.25})
    ticker = Ticker(tick, clock=clock)
    ticker.start(PERIOD)
    run(ticker, glib, ticks, 50)
    assert glib.added == [(0, 1000), (10, 250)]
    assert ticks[:10] == pytest.approx([T0 + k * PERIOD for k in range(1, 11)])
    assert ticks[10:] == pytest.approx([ticks[9] + k * 0.25 for k in range(1, 41)])
    assert ticker.period == 0.25


def test_a_long_stall_starts_the_schedule_afresh(rig):
    clock, glib = rig
    ticks, tick = recorder(clock, glib, stall={5: 3.5 * PERIOD})
    ticker = Ticker(tick, clock=clock)
    ticker.start(PERIOD)
    run(ticker, glib, ticks, 20)
    resumed = T0 + 5 * PERIOD + 3.5 * PERIOD
    # the tick that fell due during the stall runs as it ends; then no burst of ticks to catch
    # up, and no new timeout: the schedule starts afresh from that tick
    assert ticks[5:] == pytest.approx([resumed + k * PERIOD for k in range(15)])
    assert glib.added == [(0, 1000)]


def test_a_long_tick_within_its_period_keeps_the_schedule_and_the_timer(rig):
    clock, glib = rig
    ticks, tick = recorder(clock, glib, stall={3: 0.4 * PERIOD})
    ticker = Ticker(tick, clock=clock)
    ticker.start(PERIOD)
    run(ticker, glib, ticks, 10)
    assert ticks == pytest.approx([T0 + k * PERIOD for k in range(1, 11)], abs=0.001)
    assert glib.added == [(0, 1000)]


def test_ticks_longer_than_their_period_are_followed_not_chased(rig):
    clock, glib = rig
    ticks, tick = recorder(clock, glib, stall=dict((k, 1.1 * PERIOD) for k in range(1, 31)))
    ticker = Ticker(tick, clock=clock)
    ticker.start(PERIOD)
    run(ticker, glib, ticks, 30)
    # a bus without gaps: each tick starts as the one before ends, and no timeout is added
    assert ticks == pytest.approx([T0 + PERIOD + k * 1.1 * PERIOD for k in range(30)])
    assert glib.added == [(0, 1000)]


def test_first_delay_then_the_period(rig):
    clock, glib = rig
    ticks, tick = recorder(clock, glib)
    ticker = Ticker(tick, clock=clock)
    ticker.start(PERIOD, first_delay=0.0)
    run(ticker, glib, ticks, 5)
    assert ticks == pytest.approx([T0 + k * PERIOD for k in range(5)])
    # the repeating timer is armed as the first tick starts, so it counts from there
    assert glib.added == [(0, 1), (0, 1000)]


def test_stop_ends_the_ticks(rig):
    clock, glib = rig
    ticks, tick = recorder(clock, glib)
    ticker = Ticker(tick, clock=clock)
    ticker.start(PERIOD)
    run(ticker, glib, ticks, 3)
    context = GLib.MainContext.default()
    while context.pending():
        context.iteration(False)
    assert len(ticks) == 3
