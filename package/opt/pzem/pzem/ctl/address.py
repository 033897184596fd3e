"""set-address: give a meter a new Modbus address (holding register 0x0002) and prove it took.

The meter answers the write with an echo from its old address; the new address may need a
moment, so the check at the new address is retried (reference/pzem-protocol.md 2.7).
"""
from .. import meter_map, modbus, roles
from . import holding
from .console import Failure, confirm, say
from .readings import read_meter
from ..rtu import GENERAL_ADDRESS
from .scan import single_meter


def set_address(port, args):
    new = args.new
    if args.source is None:
        old = single_meter(port, args.addresses)
        target = GENERAL_ADDRESS
    else:
        old = target = args.source
    with port.bus() as bus:
        model, _ = read_meter(bus, target)
        if old == new:
            say('the %s already answers at address %d on %s: nothing to change' % (
                model.name, new, port.name))
            map_hint(port, args.config, model, old, new)
            return
        if answers(bus, new):
            raise Failure('address %d is already in use on %s (a meter answers there): pick a '
                          'free one ("pzemctl %s scan" lists the taken ones)'
                          % (new, port.name, port.name))
        if not confirm('give the %s at address %d on %s the address %d' % (
                model.name, old, port.name, new), args.yes):
            raise Failure('cancelled: nothing was written to the meter')
        took, got = holding.write_and_read_back(
            lambda: bus.write_register(target, holding.ADDRESS, new),
            lambda: bus.read_holding(new, holding.ADDRESS, 1)[0],
            lambda got: got == new)
        verify(bus, port.name, old, new, took, got)
    say('the %s on %s now answers at address %d (was %d)' % (model.name, port.name, new, old))
    map_hint(port, args.config, model, old, new)


def answers(bus, address):
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


def verify(bus, port_name, old, new, took, got):
    """Failure unless the meter answers at the new address only."""
    if not took:
        raise Failure('the meter did not come up at address %d (%s); it may still be at '
                      'address %d: try "pzemctl %s info %d"' % (
                          new, 'no reply there' if got is None else 'register reads %d' % got,
                          old, port_name, old))
    if answers(bus, old):
        raise Failure('a meter still answers at the old address %d as well as at %d: two meters '
                      'shared address %d?' % (old, new, old))


def map_hint(port, config, model, old, new):
    """Tell what the map needs: rename the old section, or add one for the new address."""
    section = next((header for spec in meter_map.load(config).meters_for(port.name)
                    for (_, address), header in zip(spec.phases, spec.sections)
                    if address == old), None)
    if section and old != new:
        head, colon, _ = section.rpartition(':')
        say('In the map (%s), rename section [%s] to [%s%s%d].' % (
            config, section, head, colon, new))
        return
    family_roles = roles.FAMILY_ROLES[model.family]
    say('Put it in the map (%s):' % config)
    say('[%d]' % new)
    say('role = %s    # %s' % (roles.DEFAULT_ROLE[model.family], ' | '.join(family_roles)))
