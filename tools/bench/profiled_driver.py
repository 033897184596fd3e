"""profiled_driver.py OUT DRIVER ARGS...: the driver's main() under cProfile with a CPU-time
clock (waiting for the serial port or the main loop costs nothing). Profiling starts on SIGUSR1
and stops on SIGUSR2, so the stats hold the steady state only; they are written to OUT when the
driver returns (it exits cleanly on SIGTERM)."""
import cProfile
import os
import signal
import sys
import time


def main():
    out, driver, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    sys.path.insert(0, os.path.dirname(os.path.realpath(driver)))
    from pzem.driver import main as driver_main
    profiler = cProfile.Profile(time.process_time)
    signal.signal(signal.SIGUSR1, lambda *_: profiler.enable())
    signal.signal(signal.SIGUSR2, lambda *_: profiler.disable())
    try:
        return driver_main(args)
    finally:
        profiler.disable()
        profiler.dump_stats(out)


if __name__ == '__main__':
    sys.exit(main())
