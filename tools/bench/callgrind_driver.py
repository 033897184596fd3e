"""callgrind_driver.py OUT DRIVER ARGS...: a driver (dbus-pzem or floor_driver.py) under
valgrind's callgrind, with instrumentation off until `callgrind_control -i on PID` turns it on:
start-up runs uninstrumented (still several times slower than without valgrind), the window
that is measured counts every instruction the process executes in user space, in all its
threads. `callgrind_control -d PID` writes the counts to OUT.N.

The driver's start-up deadline (PROBE_SECONDS, counted from the process's start) would pass
during the slowed imports, and the driver would exit with no meter found: it is lifted here,
for any driver tree that has one; nothing else of the driver changes.
"""
import os
import runpy
import sys

INSIDE = '--inside'


def main():
    if sys.argv[1] == INSIDE:
        driver = sys.argv[2]
        sys.path.insert(0, os.path.dirname(os.path.realpath(driver)))
        try:
            from pzem import driver as module
            module.PROBE_SECONDS = 600.0
        except ImportError:
            pass                    # floor_driver.py: no start-up deadline to lift
        sys.argv = [driver] + sys.argv[3:]
        runpy.run_path(driver, run_name='__main__')
        return
    out, driver = sys.argv[1], sys.argv[2]
    os.execvp('valgrind', ['valgrind', '--tool=callgrind', '--instr-atstart=no',
                           '--callgrind-out-file=' + out, sys.executable, os.path.abspath(__file__),
                           INSIDE, driver] + sys.argv[3:])


if __name__ == '__main__':
    main()
