"""One persistent GLib timer for the poll loop.

GLib re-arms a repeating timeout from the moment it was dispatched, so a timer of period P slips
by the dispatch latency at every tick: hours of polling would drift. The ticker keeps the ideal
schedule (start + k x P) and re-arms only when the period changes or it has slipped by a quarter
of a period, instead of adding a new timeout at every tick. A tick that itself lasts a period or
more (a bus with no gaps left) is not chased: the schedule starts again from it.
"""
import time

from gi.repository import GLib


class Ticker(object):
    def __init__(self, tick, clock=time.monotonic):
        """tick() -> the period (s) wanted from now on; it may change it (meters come and go)."""
        self._tick = tick
        self.clock = clock
        self.period = None
        self._source = None
        self._origin = 0.0      # tick k is due at origin + k x period
        self._count = 0

    def start(self, period, first_delay=None):
        self.stop()
        self.period = period
        delay = period if first_delay is None else first_delay
        self._origin = self.clock() + delay - period
        self._count = 0
        if first_delay is None:
            self._source = GLib.timeout_add(_ms(period), self._on_repeating)
        else:
            self._source = GLib.timeout_add(_ms(delay), self._on_once)

    def stop(self):
        if self._source is not None:
            GLib.source_remove(self._source)    # also allowed for the source dispatching now
            self._source = None

    def _on_once(self):
        # The repeating timer first, so that it counts its period from this tick's start.
        self._source = GLib.timeout_add(_ms(self.period), self._on_repeating)
        self._fire()
        return False

    def _on_repeating(self):
        return self._fire()

    def _fire(self):
        """One tick; True while the repeating timer may stay as it is."""
        fired = self.clock()        # before the tick: a poll may take most of a period
        period = self._tick()
        self._count += 1
        if period != self.period:
            self.start(period)
            return False
        late = fired - (self._origin + self._count * self.period)
        if abs(late) <= self.period / 4:
            return True
        wait = self._origin + (self._count + 1) * self.period - self.clock()
        if wait <= 0 or late > self.period:
            # Behind by more than this tick can make up (a poll that lasts its whole slot on a
            # bus without gaps, or a stalled loop): nothing to chase; start afresh from here.
            self._origin, self._count = fired, 0
            return True
        self.stop()
        self._source = GLib.timeout_add(_ms(wait), self._on_once)
        return False


def _ms(seconds):
    return max(1, int(round(seconds * 1000)))
