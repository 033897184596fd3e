"""A write to a meter counts once a read shows that it took; one lost or garbled reply on RS-485
is not a failure. Shared by pzemctl's writes and the address change (address_change)."""
import importlib.util
import sys
import time

from . import modbus

VERIFY_TRIES = 6
VERIFY_PAUSE = 0.5


def twice(read):
    """read() again once after a lost or garbled reply."""
    try:
        return read()
    except (modbus.NoReply, modbus.BadFrame):
        return read()


def write_and_read_back(write, read, took, sleep=time.sleep):
    """write(), then read() until took(what it read): (True, that value), or (False, the last
    value read or None) after VERIFY_TRIES reads, VERIFY_PAUSE apart.

    A lost or garbled echo does not mean the write failed: the read-back decides.
    An exception reply does (modbus.ExceptionReply propagates).
    """
    try:
        write()
    except (modbus.NoReply, modbus.BadFrame):
        pass
    got = None
    for attempt in range(VERIFY_TRIES):
        if attempt:
            sleep(VERIFY_PAUSE)
        try:
            got = read()
        except (modbus.NoReply, modbus.BadFrame):
            continue
        if took(got):
            return True, got
    return False, got


def pymodbus_missing():
    """None when register writes can be made (they go through pymodbus: pymodbus_link), else
    one sentence saying what is missing. Asked before the work, so that nothing is half done."""
    if importlib.util.find_spec('pymodbus') is not None:
        return None
    return ('writing a meter\'s registers needs the Python package pymodbus, which %s does not '
            'have: on Venus OS it comes with the firmware; elsewhere install it (pip install '
            '"pymodbus<4"), or run pzemctl with a python that has it' % sys.executable)
