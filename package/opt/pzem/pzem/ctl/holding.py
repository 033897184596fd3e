"""A meter's settings in its holding registers (alarm thresholds, address, shunt range).

Registers from reference/pzem-protocol.md 2.3 (PZEM-016) and 2.5 (PZEM-017): AC 0x0001 power
alarm in W; DC 0x0000/0x0001 high/low voltage alarm in 0.01 V, 0x0003 the 017's shunt range;
both 0x0002 the Modbus address (written by address_change only). Every write is read back
before it counts as done (readback).
"""
from .. import modbus, models
from ..readback import twice, write_and_read_back
from .console import Failure

AC_POWER_ALARM = 0x0001
DC_HIGH_ALARM, DC_LOW_ALARM, DC_RANGE = 0x0000, 0x0001, 0x0003

POWER_ALARM_WATTS = (0, 25000)
HIGH_ALARM_VOLTS = (5.0, 350.0)
LOW_ALARM_VOLTS = (1.0, 350.0)
RANGE_CODES = dict((amps, code) for code, amps in models.DC_CURRENT_RANGES.items())


def read_settings(bus, address, model):
    """{'address', and 'power_alarm' W (AC) or 'high_alarm', 'low_alarm' V, 'range' A (DC)}.

    'range' is None on a PZEM-003, which has no range register.
    """
    if model.family == 'ac':
        power, own = twice(lambda: bus.read_holding(address, AC_POWER_ALARM, 2))
        return {'power_alarm': power, 'address': own}
    try:
        regs = twice(lambda: bus.read_holding(address, DC_HIGH_ALARM, 4))
    except modbus.ExceptionReply:
        regs = twice(lambda: bus.read_holding(address, DC_HIGH_ALARM, 3)) + [None]
    return {'high_alarm': regs[0] / 100.0, 'low_alarm': regs[1] / 100.0, 'address': regs[2],
            'range': models.DC_CURRENT_RANGES.get(regs[3], regs[3])}


def settings_lines(model, settings, indent='  ', with_range=True):
    if model.family == 'ac':
        rows = [('power alarm above', '%d W' % settings['power_alarm'])]
    else:
        rows = [('high-voltage alarm above', '%.2f V' % settings['high_alarm']),
                ('low-voltage alarm below', '%.2f V' % settings['low_alarm'])]
        if with_range and settings['range'] is not None:
            rows.append(('shunt range', '%s A' % settings['range']))
    return ['%s%-24s %s' % (indent, name, value) for name, value in rows]


def write_verified(bus, address, register, value, what):
    """Write one holding register and read it back until it holds `value` (Failure if never)."""
    took, got = write_and_read_back(lambda: bus.write_register(address, register, value),
                                    lambda: bus.read_holding(address, register, 1)[0],
                                    lambda got: got == value)
    if took:
        return
    raise Failure('the meter at address %d did not take the new %s: register 0x%04X reads %s, '
                  'expected %d' % (address, what, register,
                                   'nothing' if got is None else got, value))
