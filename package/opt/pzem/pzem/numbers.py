"""Numbers on a command line, checked as the map checks its values: argparse types whose bad
values end in one sentence (argparse exits 2 with it), never a traceback or a nonsense wait.

`type=numbers.seconds` etc.; the same types serve pzemctl and dbus-pzem.
"""
import argparse
import math

MAX_SECONDS = 3600.0    # longer than any sensible wait; also keeps timers and select() in range
MAX_COUNT = 10 ** 6


def _float(text, what):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError('%r is not %s' % (text, what))
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError('%s is not %s' % (text, what))
    return value


def finite(text):
    """Any finite number (a threshold whose range the command checks itself)."""
    return _float(text, 'a number')


def seconds(text):
    """0 or more seconds, at most MAX_SECONDS (an interval)."""
    return _seconds(text, 'a number of seconds of 0 or more', lambda value: value >= 0)


def positive_seconds(text):
    """More than 0 seconds, at most MAX_SECONDS (a timeout)."""
    return _seconds(text, 'a number of seconds above 0', lambda value: value > 0)


def _seconds(text, what, fits):
    value = _float(text, what)
    if not fits(value):
        raise argparse.ArgumentTypeError('%s is not %s' % (text, what))
    if value > MAX_SECONDS:
        raise argparse.ArgumentTypeError('%s seconds is too long: at most %g' % (text, MAX_SECONDS))
    return value


def count(text):
    """A whole number of times, 1 or more."""
    what = 'a whole number of 1 or more'
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError('%r is not %s' % (text, what))
    if value < 1:
        raise argparse.ArgumentTypeError('%s is not %s' % (text, what))
    if value > MAX_COUNT:
        raise argparse.ArgumentTypeError('%s times is too many: at most %d' % (text, MAX_COUNT))
    return value
