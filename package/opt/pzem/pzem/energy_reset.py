"""Resetting a meter's own energy counter: function 0x42, then a read that shows it took. The one
implementation, for `pzemctl reset-energy` and for the driver (where a GUI page asks for it).

The driver's published totals do not follow the meter's counter down: they are its own running
totals (energy.py), which read a counter that went down as "counted from 0 since".
"""
import time

from .readback import twice, write_and_read_back

AFTER_RESET_KWH = 0.001     # a loaded meter may count one Wh between the reset and the check


class ResetNotConfirmed(Exception):
    """The meter's counter did not read (near) 0 after the reset; str() says what it reads."""


def reset_counter(bus, address, model, sleep=time.sleep):
    """Reset the counter of the meter (models.AC or DC) at `address`; returns the kWh it reads
    afterwards. Raises ResetNotConfirmed, modbus.ExceptionReply when the meter refuses, other
    modbus.ModbusError when it cannot be read back at all."""
    took, energy = write_and_read_back(
        lambda: bus.reset_energy(address),
        lambda: model.decode(twice(lambda: bus.read_input(address, model.input_count)))['energy'],
        lambda energy: energy <= AFTER_RESET_KWH, sleep)
    if took:
        return energy
    raise ResetNotConfirmed('the energy counter of the meter at address %d did not reset: it '
                            'reads %s' % (address, 'nothing' if energy is None else
                                          '%.3f kWh' % energy))
