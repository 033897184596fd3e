"""Finding the meters on a port: a quick pass over the addresses (all 1..247 unless narrowed),
and the one-meter check.

The pass asks each address for one input register with a short timeout, so a full scan takes
about 247 x SCAN_TIMEOUT; what answers is then identified and read with the normal timeout. A
meter slower than the short timeout answers while the next address is asked: the bus passes
that reply over (it is not the next address's) and names its sender, which is then asked again
with the normal timeout, so a slow meter is found, not lost or taken for two meters.
"""
import time

from .. import modbus
from ..rtu import ADDRESSES
from .console import Failure, Progress


def span(addresses):
    """'1..247' for a range of addresses, '5' for one."""
    addresses = list(addresses)
    if len(addresses) == 1:
        return str(addresses[0])
    return '%d..%d' % (addresses[0], addresses[-1])


class Sweep(object):
    """What a quick pass found: `found` addresses that answered, `garbled` ones (collisions?),
    of the found ones the `slow` ones (answered only after the short timeout), `asked` how many
    addresses were asked, `interrupted` when Ctrl-C ended it early."""

    def __init__(self):
        self.found = []
        self.garbled = []
        self.slow = []
        self.asked = 0
        self.interrupted = False
        self.seconds = 0.0

    @property
    def answering(self):
        return sorted(self.found + self.garbled)


def sweep(port, addresses=ADDRESSES, stop_after=None, keep_on_interrupt=False):
    """Ask every address once (short timeout), showing progress; stop at `stop_after` found.
    With `keep_on_interrupt`, Ctrl-C ends the pass and what it found so far is returned."""
    result = Sweep()
    started = time.monotonic()
    addresses = list(addresses)
    progress = Progress('scanning %s' % port.name, len(addresses))
    with port.bus(scanning=True) as bus:
        try:
            for done, address in enumerate(addresses, 1):
                result_of(bus, address, result)
                for late in _late_senders(bus, addresses[:done], result):
                    result_of(bus, late, result, port.timeout)
                    if late in result.found:
                        result.slow.append(late)
                result.asked = done
                progress.step(done, len(result.answering))
                if stop_after and len(result.answering) >= stop_after:
                    break
        except KeyboardInterrupt:
            if not keep_on_interrupt:
                raise
            result.interrupted = True
        finally:
            progress.done()
    result.seconds = time.monotonic() - started
    return result


def result_of(bus, address, result, timeout=None):
    """Ask `address` for one register; book it in `result` as found, garbled or nothing."""
    try:
        bus.read_input(address, 1, timeout=timeout)
        result.found.append(address)
    except modbus.ExceptionReply:
        result.found.append(address)        # a meter that refuses the read is still there
    except modbus.BadFrame:
        result.garbled.append(address)
    except modbus.NoReply:
        pass


def _late_senders(bus, asked, result):
    """Addresses asked before whose reply came late, into the last exchange: not found yet."""
    return sorted({stray[0] for stray in bus.strays if stray[0] in asked and
                   stray[0] not in result.found and stray[0] not in result.garbled})


def single_meter(port, addresses=ADDRESSES):
    """The address of the only meter on the port; Failure when there is none or more than one.

    0xF8 reaches every meter at once, so it may be used only when a scan finds just one.
    """
    result = sweep(port, addresses, stop_after=2)
    if result.garbled:
        raise Failure('garbled replies from address %s on %s: two meters share that address, or '
                      'the wiring is bad; connect one meter only' % (
                          ', '.join(map(str, result.garbled)), port.name))
    if len(result.found) > 1:
        raise Failure('more than one meter answers on %s (addresses %s, ...): the general address '
                      '0xF8 would reach all of them; give the address, or connect one meter only'
                      % (port.name, ', '.join(map(str, result.found))))
    if not result.found:
        raise Failure('no meter answers on %s at any address %s: check the wiring (A/B), the '
                      'meter\'s power and the stop bits' % (port.name, span(addresses)))
    return result.found[0]
