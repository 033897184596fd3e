"""set-address: pzemctl's face of address_change, the one implementation of a meter's move to a
new address with its map section following it. This module finds the meter (--from, or the
only one on the port), picks the map, asks, and says what was done."""
import os

from .. import address_change, meter_map, roles
from .console import Failure, UsageError, confirm, note, say
from .scan import single_meter


def set_address(port, args):
    old = single_meter(port, args.addresses) if args.source is None else args.source
    map_path = map_to_follow(args)
    with port.bus() as bus:
        try:
            change = address_change.change_address(
                bus, port.name, old, args.new, map_path,
                approve=lambda plan: confirm(question(plan), args.yes))
        except address_change.AddressTaken as e:
            raise UsageError('%s ("pzemctl %s scan" lists the taken ones)' % (e, port.arg))
        except address_change.SectionTaken as e:
            raise UsageError('%s (or, if it was written for this meter, add --keep-map)' % e)
        except address_change.Refused as e:
            raise UsageError(str(e))
        except address_change.AddressChangeError as e:
            raise Failure(str(e))
    if change.old == change.new:
        say('the %s already answers at address %d on %s: nothing to change'
            % (change.model.name, change.new, change.port))
        return
    say('the %s on %s now answers at address %d (was %d)'
        % (change.model.name, change.port, change.new, change.old))
    if change.moved:
        say('the map %s follows it: [%s] is now [%s]' % ((map_path,) + change.moved))
    elif change.added:
        say('the map %s had no section for it: added [%s] with role %s, which steers nothing; '
            'give it its role and name there or in the Venus GUI'
            % (map_path, change.added, roles.DEFAULT_ROLE[change.model.family]))
    else:
        map_hint(args, change)


def map_to_follow(args):
    """The map the meter's section is moved in: --config as given, else the default one when
    it exists; None with --keep-map or without a map."""
    if args.keep_map:
        return None
    if args.config is not None:
        return args.config
    return meter_map.DEFAULT_PATH if os.path.lexists(meter_map.DEFAULT_PATH) else None


def question(plan):
    text = 'give the %s at address %d on %s the address %d' % (
        plan.model.name, plan.old, plan.port, plan.new)
    if plan.moved:
        text += ' (and in the map, [%s] becomes [%s])' % plan.moved
    elif plan.added:
        text += ' (and add [%s] to the map)' % plan.added
    return text


def map_hint(args, change):
    """What the map says about the meter now, where pzemctl did not write it."""
    path = args.config or meter_map.DEFAULT_PATH
    if not os.path.lexists(path):
        note('no map at %s: the driver adds a section [%s:%d] for the meter when it finds it'
             % (path, change.port, change.new))
        return
    the_map = meter_map.load(path)
    now = the_map.section_for(change.port, change.new)
    before = the_map.section_for(change.port, change.old)
    note('the map %s was left as it is: %s%s' % (
        path, '[%s] (line %d) describes the meter at address %d now' % (now + (change.new,))
        if now else 'no section names address %d on %s; the driver adds [%s:%d] when it finds '
        'the meter' % (change.new, change.port, change.port, change.new),
        '; [%s] (line %d) still names address %d' % (before + (change.old,)) if before else ''))
