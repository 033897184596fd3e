"""floor_driver.py [--config MAP] [--interval S] TTY: the least a poll can cost on this machine.

The driver's skeleton without the driver: one private D-Bus connection per meter of the map
(as the driver has, so the GLib main loop has the same sources to walk), a thread that wakes
once per slot, writes the meter's read request, waits for the reply and reads it, and nothing
else: no check, no decode, no publishing. Measured as the driver is (tools/bench/per_read.py),
its CPU per read is the part of the driver's that no Python code of ours can take away:
wake-ups, system calls and the interpreter's own cost of waking up.
"""
import argparse
import os
import select
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), 'package', 'opt', 'pzem'))

import dbus  # noqa: E402
import dbus.mainloop.glib  # noqa: E402
from gi.repository import GLib  # noqa: E402
from pzem import modbus, rtu  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--config')
    p.add_argument('--interval', type=float, default=1.0)
    p.add_argument('tty')
    args, _ = p.parse_known_args()
    with open(args.config) as f:
        addresses = [int(line.strip()[1:-1]) for line in f
                     if line.startswith('[') and line.strip()[1:-1].isdigit()]
    dbus.mainloop.glib.DBusGMainLoop(set_as_default=True)
    dbus.mainloop.glib.threads_init()
    connections = []
    for address in addresses:
        connection = dbus.SystemBus(private=True)
        connection.request_name('com.victronenergy.acload.floor_%d' % address)
        connections.append(connection)
    fd = modbus.open_port(args.tty, 9600, 2, 'N')
    poll = select.poll()
    poll.register(fd, select.POLLIN)
    requests = [rtu.request_frame(a, rtu.READ_INPUT, 0, 10) for a in addresses]
    period = args.interval / len(addresses)

    def loop():
        due, k = time.monotonic() + period, 0
        while True:
            time.sleep(max(0.0, due - time.monotonic()))
            os.write(fd, requests[k % len(requests)])
            reply = b''
            while len(reply) < 25 and poll.poll(500):
                reply += os.read(fd, 256)
            k += 1
            due += period

    threading.Thread(target=loop, daemon=True).start()
    GLib.MainLoop().run()


if __name__ == '__main__':
    main()
