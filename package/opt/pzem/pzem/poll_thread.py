"""The poll loop's own thread: one tick per slot, on an ideal schedule, off the GLib main loop.

Why a thread: every wake-up of the main loop walks the GLib sources of every D-Bus connection
(one per published meter): about 70 us a read with 8 meters, measured by hand against the same
loop on a thread (docs/benchmarks.md's floor is the thread's).
The thread sleeps until the next slot, runs the tick (read, check, publish on the meter's
existing connection) and sleeps again; the main loop wakes only for what comes in from D-Bus and
for what the tick hands over: anything that sets a D-Bus connection up or takes one down (a probe
that publishes a meter, an edited map, a re-registration), which dbus-python must not do while
the main loop may be dispatching on it. The tick runs with `lock` held, and everything the main
thread does to the meters takes the same lock first, so the two never interleave; D-Bus reads
of published values need no lock.

The schedule is start + k x period, so hours of polling do not drift. A tick that itself lasts a
period or more (a bus with no gaps left) is not chased: the schedule starts again from it.
"""
import logging
import os
import select
import threading
import time

log = logging.getLogger('pzem')


class PollThread(object):
    def __init__(self, tick, lock, clock=time.monotonic, on_crash=None, wait=None):
        """tick() -> the period (s) wanted from now on; it may change it (meters come and go).
        on_crash(): called (in the thread) when the loop itself fails, after it logged why.
        wait(seconds) -> True once halted: how the thread sleeps (tests give a fake clock's)."""
        self._tick = tick
        self.lock = lock
        self.clock = clock
        self.on_crash = on_crash
        self._halt = threading.Event()
        self._wait = wait or self._sleep
        self._waker = None      # (read fd, write fd): halt() writes, the sleeping thread wakes
        self._poll = None
        self._thread = None
        self.period = None

    def start(self, period, first_delay=None):
        self.period = period
        due = self.clock() + (period if first_delay is None else first_delay)
        self._waker = os.pipe()
        self._poll = select.poll()
        self._poll.register(self._waker[0], select.POLLIN)
        self._thread = threading.Thread(target=self._run, args=(due,), name='poll',
                                        daemon=True)
        self._thread.start()

    def halt(self):
        """Ask the loop to end after the tick in progress (any thread may ask)."""
        if not self._halt.is_set():
            self._halt.set()
            if self._waker is not None:
                os.write(self._waker[1], b'x')

    def stop(self, timeout=5.0):
        """End the loop and wait for it: never from the poll thread itself."""
        self.halt()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._waker is not None:
            for fd in self._waker:
                os.close(fd)
            self._waker = None

    def _sleep(self, seconds):
        """Sleep for `seconds` unless halted meanwhile; True once halted. One poll() on a pipe:
        much less to run at every tick than threading.Event.wait."""
        if seconds > 0:
            self._poll.poll(seconds * 1000.0)
        return self._halt.is_set()

    def _run(self, due):
        try:
            while not self._wait(max(0.0, due - self.clock())):
                due = self.run_tick(due)
        except Exception:
            log.exception('the poll loop failed')
            if self.on_crash is not None:
                self.on_crash()

    def run_tick(self, due):
        """One tick, due at `due`; returns when the next is due."""
        fired = self.clock()
        with self.lock:
            period = self._tick()
        if period != self.period:
            self.period = period
            return fired + period
        due += period
        if due <= self.clock():
            # Behind by a whole period (a tick that lasts its slot on a bus without gaps, or a
            # stalled machine): nothing to chase; start afresh from this tick.
            return fired + period
        return due
