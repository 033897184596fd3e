"""Giving a meter a new Modbus address, with the map following it: the one implementation, for
`pzemctl set-address` and for the driver (where a GUI page asks for it over D-Bus).

    change = change_address(bus, 'ttyUSB0', 3, 4, '/data/conf/pzem.conf')

In this order, and nothing is written before every check has passed:
1. the meter at `old` is identified, and nothing answers at `new`;
2. with a map: it can be read, and no section names a meter at `new` on this port (that would
   be another meter's: one that is off now, or one still to be connected);
3. approve(plan), if given, may still say no (pzemctl asks the user here);
4. the meter's holding register 0x0002 is set to `new`, read back at `new`, and `old` is silent;
5. with a map: the meter's section follows it (map_update.move_meter: one atomic write, its
   keys, group membership and comments kept, a section the driver added at `new` meanwhile
   for the meter it found there absorbed), or, when no section named the meter, one is added
   for it with its family's safe default role, as the driver adds one for a meter it finds.

No console I/O: every failure is an AddressChangeError whose str() is one sentence (or
modbus.PortGone when the port goes away). Register writes need pymodbus; that is checked first.
"""
import collections
import time

from . import map_syntax, map_update, meter_map, modbus, models, roles, tty
from .readback import pymodbus_missing, twice, write_and_read_back

ADDRESS_REGISTER = 0x0002       # both families (reference/pzem-protocol.md 2.3 and 2.5)


class AddressChangeError(Exception):
    """The change was not made, or only in part; str() says what, in one sentence.
    `written` is True when the meter took its new address and only the map is behind."""

    def __init__(self, message, written=False):
        Exception.__init__(self, message)
        self.written = written


class Refused(AddressChangeError):
    """Refused before anything was written: the request does not fit the bus or the map."""


class AddressTaken(Refused):
    """Refused: something answers at the new address."""


class SectionTaken(Refused):
    """Refused: the map has a section for a meter at the new address on this port."""


class Cancelled(AddressChangeError):
    """approve() said no; nothing was written."""


class AddressChange(collections.namedtuple('AddressChange',
                                           'port old new model map_path moved added')):
    """What was done (or, given to approve(), what will be done).

    port, old, new  the bare tty name and the meter's old and new address
    model           models.AC or models.DC (.name 'PZEM-016', .family 'ac')
    map_path        the map that was looked at, or None
    moved           (old header, new header) of the section that follows the meter, or None
    added           the header of the section added for a meter no section named, or None
    """
    __slots__ = ()


def change_address(bus, port, old, new, map_path=None, approve=None, sleep=time.sleep):
    """Move the meter at `old` on `port` (an open modbus.Bus on it) to `new`, and its map
    section with it (map_path None: the map is neither read nor written). Returns an
    AddressChange; old == new changes nothing. Raises AddressChangeError (Refused, Cancelled)
    or modbus.PortGone."""
    port = tty.name(port)
    for address in (old, new):
        try:
            map_syntax.address(str(address))
        except map_syntax.Bad as e:
            raise Refused(str(e))
    missing = pymodbus_missing()
    if missing:
        raise AddressChangeError(missing)
    model = _identify(bus, port, old)
    if old == new:
        return AddressChange(port, old, new, model, map_path, None, None)
    if _answers(bus, new):
        raise AddressTaken('address %d is already in use on %s (a meter answers there): pick a '
                           'free one' % (new, port))
    plan = AddressChange(port, old, new, model, map_path, *_map_plan(map_path, port, old, new))
    if approve is not None and not approve(plan):
        raise Cancelled('cancelled: nothing was written to the meter')
    _write(bus, port, old, new, sleep)
    if map_path is None:
        return plan
    try:
        moved = map_update.move_meter(map_path, port, old, new)
        if moved is None:
            map_update.update_many(map_path, {plan.added: {'role': roles.DEFAULT_ROLE[
                model.family]}}, {plan.added: _added_comment(port, old, new, model)})
    except map_update.MapWriteError as e:
        todo = ('rename [%s] to [%s] by hand' % plan.moved if plan.moved else
                'add a section [%s] for it' % plan.added)
        raise AddressChangeError('the %s on %s now answers at address %d (was %d), but the map '
                                 '%s could not follow it (%s): in the map, %s' % (
                                     model.name, port, new, old, map_path, e, todo), written=True)
    return plan._replace(moved=moved)


def _identify(bus, port, address):
    try:
        return twice(lambda: models.identify(bus, address))[0]
    except modbus.PortGone:
        raise
    except modbus.ModbusError as e:
        raise AddressChangeError(str(e))


def _answers(bus, address):
    """True when anything (a reply, an exception, garbage) comes back from `address`."""
    for _ in range(2):
        try:
            bus.read_input(address, 1)
            return True
        except (modbus.ExceptionReply, modbus.BadFrame):
            return True
        except modbus.NoReply:
            continue
    return False


def _map_plan(map_path, port, old, new):
    """(moved, added) as they will be; Refused when the map cannot follow the meter."""
    if map_path is None:
        return None, None
    the_map = meter_map.load(map_path)
    if not the_map.readable:
        raise Refused('the map cannot follow the meter: %s' % the_map.problems[0])
    there = the_map.section_for(port, new)
    if there is not None:
        raise SectionTaken('the map %s has a section [%s] (line %d) for a meter at address %d on '
                           '%s: another meter\'s, which may be off now; pick another address, or '
                           'remove that section first' % (map_path, there[0], there[1], new, port))
    section = the_map.section_for(port, old)
    if section is None:
        return None, '%s:%d' % (port, new)
    return (section[0], _moved_header(section[0], new)), None


def _moved_header(header, new):
    kind, port, _ = map_syntax.section_ident(header)
    return map_syntax.section_text((kind, port, new))


def _write(bus, port, old, new, sleep):
    """Holding register 0x0002 := new; AddressChangeError unless the meter answers at `new`
    only. The echo comes from the old address; the new one may need a moment
    (reference/pzem-protocol.md 2.7), so the read back is retried."""
    try:
        took, got = write_and_read_back(
            lambda: bus.write_register(old, ADDRESS_REGISTER, new),
            lambda: bus.read_holding(new, ADDRESS_REGISTER, 1)[0],
            lambda got: got == new, sleep)
    except modbus.PortGone:
        raise
    except modbus.ModbusError as e:
        raise AddressChangeError(str(e))
    if not took:
        raise AddressChangeError('the meter did not come up at address %d on %s (%s); it may '
                                 'still be at address %d' % (
                                     new, port, 'no reply there' if got is None else
                                     'its address register reads %d' % got, old))
    if _answers(bus, old):
        raise AddressChangeError('a meter still answers at the old address %d on %s as well as '
                                 'at %d: two meters shared address %d? The map was not changed'
                                 % (old, port, new, old), written=True)


def _added_comment(port, old, new, model):
    return ['%s:%d: a %s moved here from address %d on %s; no section named it.' % (
                port, new, model.name, old, time.strftime('%Y-%m-%d %H:%M')),
            'Its role steers nothing; set role, name and the rest here or in the Venus GUI.']
