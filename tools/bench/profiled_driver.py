"""profiled_driver.py OUT DRIVER ARGS...: the driver's main() under cProfile with a per-thread
CPU-time clock (waiting for the serial port or the main loop costs nothing). The poll thread and
the main thread each get a profiler; profiling starts on SIGUSR1 and stops on SIGUSR2 (the poll
thread follows at its next tick), so the stats hold the steady state only. Both are written to
OUT, as one set of stats, when the driver returns (it exits cleanly on SIGTERM)."""
import cProfile
import os
import pstats
import signal
import sys
import time


def main():
    out, driver, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    sys.path.insert(0, os.path.dirname(os.path.realpath(driver)))
    from pzem import poll_thread
    from pzem.driver import main as driver_main
    main_thread = cProfile.Profile(time.thread_time)
    ticks = cProfile.Profile(time.thread_time)
    state = {'wanted': False, 'on': False}
    init = poll_thread.PollThread.__init__

    def profiled_init(self, tick, *args, **keywords):
        def profiled_tick():
            # a profiler covers the thread that enables it: the poll thread switches its own
            if state['wanted'] != state['on']:
                (ticks.enable if state['wanted'] else ticks.disable)()
                state['on'] = state['wanted']
            return tick()
        init(self, profiled_tick, *args, **keywords)

    poll_thread.PollThread.__init__ = profiled_init

    def start(*_):
        state['wanted'] = True
        main_thread.enable()

    def stop(*_):
        state['wanted'] = False
        main_thread.disable()

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    try:
        return driver_main(args)
    finally:
        main_thread.disable()
        stats = pstats.Stats(ticks)
        stats.add(main_thread)
        stats.dump_stats(out)


if __name__ == '__main__':
    sys.exit(main())
