"""How a serial port is named: serial-starter passes a bare name under /dev (ttyUSB0), people
may give a path. One rule for the driver and pzemctl."""
import os


def path(arg):
    """'/dev/ttyUSB0' for 'ttyUSB0'; a path (anything with a '/') as given."""
    return arg if '/' in arg else '/dev/' + arg


def name(arg):
    """The bare tty name: 'ttyUSB0' for 'ttyUSB0', '/dev/ttyUSB0' or '/dev/ttyUSB0/'."""
    return os.path.basename(arg.rstrip('/'))
