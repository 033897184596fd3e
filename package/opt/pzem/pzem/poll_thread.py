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

A lock is not fair: a thread that releases it and takes it straight back, as the poll thread does
when it is behind its schedule (a slow gateway, more meters than the wire carries), gets it again
before a waiting thread wakes up, and the main loop, and with it every D-Bus call to every meter,
could wait for seconds. So the main loop takes the lock through a MainLoopLock, which says that it
waits, and the poll thread lets it have its turn before the next tick.
"""
import logging
import os
import select
import threading
import time

log = logging.getLogger('pzem')

GIVE_WAY_MS = 1.0       # how long the poll thread sleeps at a time while the main loop waits


class MainLoopLock(object):
    """The poll thread's lock (an RLock) as the main loop and the D-Bus handlers take it: `with`
    it, they say that they wait for it. The poll thread itself takes `lock` directly."""

    def __init__(self, lock=None):
        self.lock = lock or threading.RLock()
        self.waiting = []       # an entry per thread waiting here (list changes are atomic)

    def __enter__(self):
        self.waiting.append(None)
        try:
            self.lock.acquire()
        finally:
            self.waiting.pop()
        return self

    def __exit__(self, *exc):
        self.lock.release()


class PollThread(object):
    def __init__(self, tick, lock, clock=time.monotonic, on_crash=None, sleep=None,
                 catch_up=0.0):
        """tick() -> the period (s) wanted from now on; it may change it (meters come and go).
        on_crash(): called (in the thread) when the loop itself fails, after it logged why.
        sleep(milliseconds): how the thread sleeps, cut short by halt() (tests give a fake
        clock's); by default poll() on a pipe that halt() writes to. catch_up: how late (s)
        the schedule may fall and still be caught up, the next ticks running at once (a read
        that waited out its timeout, or a meter's extra slot: the round keeps its length);
        later than that it starts afresh."""
        self.tick = tick
        self.catch_up = catch_up
        # lock: an RLock, or a MainLoopLock (the thread then gives way to whoever waits there)
        self.lock = getattr(lock, 'lock', lock)
        self.waiting = getattr(lock, 'waiting', ())
        self.clock = clock
        self.on_crash = on_crash
        self._halted = False
        self._sleep = sleep
        self._waker = None      # (read fd, write fd): halt() writes, the sleeping thread wakes
        self._thread = None
        self.period = None

    def start(self, period, first_delay=None):
        self.period = period
        due = self.clock() + (period if first_delay is None else first_delay)
        self._waker = os.pipe()
        if self._sleep is None:
            waker = select.poll()
            waker.register(self._waker[0], select.POLLIN)
            self._sleep = waker.poll
        self._thread = threading.Thread(target=self._run, args=(due,), name='poll',
                                        daemon=True)
        self._thread.start()

    def halt(self):
        """Ask the loop to end after the tick in progress (any thread may ask)."""
        if not self._halted:
            self._halted = True
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

    def _run(self, due):
        # Once per tick, after a sleep that leaves the CPU's caches cold, every step here costs
        # several times what it costs in a loop: the loop keeps to as few steps as it can.
        clock, lock, sleep, catch_up = self.clock, self.lock, self._sleep, self.catch_up
        waiting = self.waiting
        try:
            while True:
                left = due - clock()
                if left > 0:
                    sleep(left * 1000.0)
                while waiting and not self._halted:
                    sleep(GIVE_WAY_MS)      # the main loop's turn
                if self._halted:
                    return
                fired = clock()
                with lock:
                    period = self.tick()
                if period != self.period:
                    self.period = period
                    due = fired + period
                    continue
                due += period
                if due <= clock() - catch_up:
                    # Behind by more than catch_up (ticks that last their slot on a bus without
                    # gaps, or a stalled machine): nothing to chase; start afresh from this tick.
                    due = fired + period
        except Exception:
            log.exception('the poll loop failed')
            if self.on_crash is not None:
                self.on_crash()
