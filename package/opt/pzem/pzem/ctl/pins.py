"""pin / unpin: a udev rule that gives one USB adapter to the pzem driver (VE_SERVICE=pzem).

The work is pzem.pins (shared with the driver, whose port service the GUI page pins through);
here only what pzemctl says about it.
"""
from .. import pins
from .console import Failure, note, say


def pin(port, args):
    try:
        key, value, was_pinned, rules = pins.pin(port.name, port.path)
    except pins.PinError as e:
        raise Failure(str(e))
    say('%s %s (%s=%s) to the pzem driver in %s' % (
        'pinned again' if was_pinned else 'pinned', port.name, key, value, rules))
    note('unplug and replug the adapter (or reboot) so serial-starter starts dbus-pzem on it')


def unpin(port, args):
    try:
        key, value, was_pinned, rules = pins.unpin(port.name, port.path)
    except pins.PinError as e:
        raise Failure(str(e))
    if not was_pinned:
        say('%s (%s=%s) is not pinned in %s: nothing to remove' % (port.name, key, value, rules))
        return
    say('unpinned %s (%s=%s): its rule is removed from %s' % (port.name, key, value, rules))
    note('unplug and replug the adapter (or reboot) so serial-starter probes it as before')
