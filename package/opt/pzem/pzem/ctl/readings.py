"""Reading a meter's live values (with one retry) and showing them, from the model tables.

read_meter is the one path from the bus to decoded values for every command (scan, info,
monitor, the writes' checks); what went wrong is put in a few words by trouble().
"""
from .. import models, modbus
from ..readback import twice

LABELS = {'power_factor': 'PF {}', 'alarm': 'power alarm',
          'high_voltage_alarm': 'high-voltage alarm', 'low_voltage_alarm': 'low-voltage alarm'}


def read_meter(bus, address, model=None):
    """(model, values) of the meter at `address`, its model detected unless given (detection's
    own read is used when it brought the registers); raises modbus.ModbusError."""
    regs = None
    if model is None:
        model, regs = twice(lambda: models.identify(bus, address))
    if regs is None:
        regs = twice(lambda: bus.read_input(address, model.input_count))
    return model, model.decode(regs)


def trouble(error):
    """A Modbus failure in a few words, for a table cell."""
    if isinstance(error, modbus.NoReply):
        return 'no reply'
    if isinstance(error, modbus.BadFrame):
        return 'bad reply'
    if isinstance(error, modbus.ExceptionReply):
        return 'exception %d' % error.code
    return 'error'


def alarms_on(model, values):
    return [LABELS[f.name] for f in model.fields
            if f.kind == 'alarm' and values[f.name] == models.ALARM_ON]


def one_line(model, values):
    """'230.1 V  1.234 A  283.4 W  12.345 kWh  50.0 Hz  PF 0.99' plus any alarm that is on."""
    parts = []
    for f in model.fields:
        if f.kind == 'alarm':
            continue
        text = f.text.format(values[f.name])
        parts.append(LABELS[f.name].format(text) if f.name in LABELS else text)
    return '  '.join(parts + [a.upper() for a in alarms_on(model, values)])


def block(model, values, indent='  '):
    """One 'name  value' line per field, for `info`."""
    lines = []
    for f in model.fields:
        v = values[f.name]
        if f.kind == 'alarm':
            name, text = LABELS[f.name], 'ON' if v == models.ALARM_ON else 'off'
        else:
            name, text = f.name.replace('_', ' '), f.text.format(v)
        lines.append('%s%-24s %s' % (indent, name, text))
    return lines
