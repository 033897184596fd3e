"""The commands that read a meter or change one of its settings: scan, info, reset-energy,
set-alarm, set-range. Each changes nothing before it has found and identified the meter, and
counts as done only once the meter reads back what was asked."""
from .. import modbus
from ..energy_reset import ResetNotConfirmed, reset_counter
from . import holding
from .console import Failure, UsageError, confirm, note, say
from .readings import block, one_line, read_meter
from ..rtu import GENERAL_ADDRESS
from .scan import single_meter, span, sweep


def scan(port, args):
    """Every meter on the port, read. Only what could be read counts as a meter; garbled
    replies, an unreadable answer or Ctrl-C (what was found so far is still shown) end it with
    a failure."""
    addresses = list(args.addresses)
    result = sweep(port, addresses, keep_on_interrupt=True)
    if not result.answering and not result.interrupted:
        raise Failure('no meter answers on %s at any address %s (%.1f s): check the wiring '
                      '(A/B), the meters\' power and the stop bits'
                      % (port.name, span(addresses), result.seconds))
    meters, unread = 0, []
    with port.bus() as bus:
        for address in result.answering:
            if address in result.garbled:
                say('%3d  ?         garbled replies: two meters at this address, or bad wiring'
                    % address)
                continue
            try:
                model, values = read_meter(bus, address)
            except modbus.PortGone:
                raise
            except modbus.ModbusError as e:
                say('%3d  ?         answers, but could not be read: %s' % (address, e))
                unread.append(address)
                continue
            meters += 1
            say('%3d  %-8s  %s' % (address, model.name, one_line(model, values)))
    if result.slow:
        note('slow to answer: address %s (after the scan\'s %g s, so asked again with %g s); '
             'a longer --scan-timeout finds them at once' % (
                 ', '.join(map(str, result.slow)), port.scan_timeout, port.timeout))
    scanned = span(addresses[:result.asked]) if result.asked else 'none'
    if result.interrupted:
        scanned += ' of %s' % span(addresses)
    say('%d meter(s) on %s; addresses %s scanned in %.1f s' % (
        meters, port.name, scanned, result.seconds))
    trouble = []
    if result.garbled:
        trouble.append('garbled replies at address %s: two meters share an address, or the '
                       'wiring is bad' % ', '.join(map(str, result.garbled)))
    if unread:
        trouble.append('address %s answers but could not be read as a PZEM'
                       % ', '.join(map(str, unread)))
    if result.interrupted:
        trouble.append('interrupted: addresses %s were not scanned'
                       % span(addresses[result.asked:]))
    if trouble:
        raise Failure('; '.join(trouble))


def info(port, args):
    target = args.address
    if target is None:
        single_meter(port, args.addresses)
        target = GENERAL_ADDRESS
    with port.bus() as bus:
        try:
            model, values = read_meter(bus, target)
            settings = holding.read_settings(bus, target, model)
        except (modbus.NoReply, modbus.BadFrame) as e:
            if target != GENERAL_ADDRESS:
                raise
            raise Failure('the meter did not answer properly at the general address 0xF8 (%s): '
                          'find its address with "pzemctl %s scan" and give it' % (e, port.name))
    via = ' (asked at the general address 0xF8)' if target == GENERAL_ADDRESS else ''
    say('%s (%s) at address %d on %s%s' % (model.name, model.family.upper(), settings['address'],
                                          port.name, via))
    for line in holding.settings_lines(model, settings) + block(model, values):
        say(line)


def reset_energy(port, args):
    address = args.address
    with port.bus() as bus:
        model, values = read_meter(bus, address)
        if not confirm('reset the energy counter of the %s at address %d on %s (now %.3f kWh)' % (
                model.name, address, port.name, values['energy']), args.yes):
            raise Failure('cancelled: nothing was written to the meter')
        try:
            energy = reset_counter(bus, address, model)
        except ResetNotConfirmed as e:
            raise Failure(str(e))
    say('energy counter of the %s at address %d reset: now %.3f kWh (was %.3f kWh)'
        % (model.name, address, energy, values['energy']))


def set_alarm(port, args):
    address = args.address
    with port.bus() as bus:
        model, _ = read_meter(bus, address)
        before = holding.read_settings(bus, address, model)
        writes = alarm_writes(model, address, before, args)
        changes = ', '.join('%s %s (now %s)' % (what, shown, old) for _, _, what, shown, old
                            in writes)
        if not confirm('set the %s of the %s at address %d on %s' % (
                changes, model.name, address, port.name), args.yes):
            raise Failure('cancelled: nothing was written to the meter')
        for register, value, what, _, _ in writes:
            holding.write_verified(bus, address, register, value, what)
        after = holding.read_settings(bus, address, model)
    say('alarm thresholds of the %s at address %d on %s:' % (model.name, address, port.name))
    for line in holding.settings_lines(model, after, with_range=False):
        say(line)


def alarm_writes(model, address, before, args):
    """[(register, raw value, what, new text, old text)] for set-alarm; UsageError on bad values."""
    if model.family == 'ac':
        if args.high is not None or args.low is not None:
            raise UsageError('--high and --low are for a PZEM-017 (DC); the meter at address %d '
                             'is a %s: use --power W' % (address, model.name))
        if args.power is None:
            raise UsageError('give the power alarm threshold: --power W')
        low, high = holding.POWER_ALARM_WATTS
        if not low <= args.power <= high:
            raise UsageError('power alarm %g W is out of range %d..%d W' % (args.power, low, high))
        watts = int(round(args.power))
        if watts != args.power:
            note('the meter takes whole watts: --power %g is written as %d W' % (args.power, watts))
        return [(holding.AC_POWER_ALARM, watts, 'power alarm', '%d W' % watts,
                 '%d W' % before['power_alarm'])]
    if args.power is not None:
        raise UsageError('--power is for a PZEM-016 (AC); the meter at address %d is a %s: use '
                         '--high V and/or --low V' % (address, model.name))
    if args.high is None and args.low is None:
        raise UsageError('give the voltage alarm thresholds: --high V and/or --low V')
    high = before['high_alarm'] if args.high is None else args.high
    low = before['low_alarm'] if args.low is None else args.low
    for name, value, limits in (('high-voltage', args.high, holding.HIGH_ALARM_VOLTS),
                                ('low-voltage', args.low, holding.LOW_ALARM_VOLTS)):
        if value is not None and not limits[0] <= value <= limits[1]:
            raise UsageError('%s alarm %g V is out of range %g..%g V' % (
                name, value, limits[0], limits[1]))
    if low >= high:
        raise UsageError('the high-voltage alarm (%.2f V) must be above the low-voltage alarm '
                         '(%.2f V)' % (high, low))
    writes = []
    for option, register, value, what, old in (
            ('--high', holding.DC_HIGH_ALARM, args.high, 'high-voltage alarm',
             before['high_alarm']),
            ('--low', holding.DC_LOW_ALARM, args.low, 'low-voltage alarm', before['low_alarm'])):
        if value is None:
            continue
        steps = int(round(value * 100))
        if abs(steps - value * 100) > 1e-6:     # 58.4 * 100 is 5840.000000000001
            note('the meter takes steps of 0.01 V: %s %g is written as %.2f V'
                 % (option, value, steps / 100.0))
        writes.append((register, steps, what, '%.2f V' % (steps / 100.0), '%.2f V' % old))
    return writes


def set_range(port, args):
    address, amps = args.address, args.amps
    with port.bus() as bus:
        model, _ = read_meter(bus, address)
        if model.family != 'dc':
            raise UsageError('the meter at address %d is a %s (AC): only a PZEM-017 has a shunt '
                             'range' % (address, model.name))
        before = holding.read_settings(bus, address, model)
        if before['range'] is None:
            raise UsageError('the DC meter at address %d has no shunt range register (a '
                             'PZEM-003 has a fixed 10 A shunt)' % address)
        if not confirm('set the shunt range of the %s at address %d on %s to %d A (now %s A)' % (
                model.name, address, port.name, amps, before['range']), args.yes):
            raise Failure('cancelled: nothing was written to the meter')
        holding.write_verified(bus, address, holding.DC_RANGE, holding.RANGE_CODES[amps],
                               'shunt range')
    say('shunt range of the %s at address %d on %s: %d A (was %s A)' % (
        model.name, address, port.name, amps, before['range']))
    note('the shunt must match: if the current reads wrong, power-cycle the meter')
