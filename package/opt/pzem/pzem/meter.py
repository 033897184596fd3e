"""One physical PZEM on the bus: its model, whether it answers, and its last plausible reading."""
import logging
import time

from . import modbus

MISSES_TO_DISCONNECT = 3
ENERGY_SLACK_KWH = 0.002    # two counts of the meter's 1 Wh resolution

log = logging.getLogger('pzem')


class Meter(object):
    """Polls one address; keeps `reading` (dict, or None while it is not trusted).

    A poll that fails (no reply, bad frame, exception reply, implausible values) is a miss;
    after MISSES_TO_DISCONNECT misses in a row the meter is disconnected and its reading dropped.
    The first good reply brings it back.
    """

    def __init__(self, port, address, model, clock=time.monotonic):
        self.port = port
        self.address = address
        self.model = model
        self.clock = clock
        self.reading = None
        self.connected = False
        self.misses = 0
        self.errors = {'no_reply': 0, 'bad_frame': 0, 'exception': 0, 'implausible': 0}
        self.last_error = None
        self._energy = None         # (kWh, time) of the last trusted energy count
        self._energy_step = None    # (kWh, time) of an unconfirmed jump

    @property
    def label(self):
        return '%s %s:%d' % (self.model.name, self.port, self.address)

    def poll(self, bus):
        """Read, decode and check once. Raises modbus.PortGone; returns True when `connected` changed."""
        try:
            regs = bus.read_input(self.address, self.model.input_count)
        except modbus.PortGone:
            raise
        except modbus.NoReply as e:
            return self._miss('no_reply', e)
        except modbus.BadFrame as e:
            return self._miss('bad_frame', e)
        except modbus.ExceptionReply as e:
            return self._miss('exception', e)
        return self.take(regs)

    def take(self, regs):
        """Decode and check registers read elsewhere (the probe's read) as a poll does."""
        values = self.model.decode(regs)
        now = self.clock()
        reason = self.model.check(values) or self._check_energy(values['energy'], now)
        if reason:
            log.debug('%s: dropped reading: %s', self.label, reason)
            return self._miss('implausible', reason)
        self.reading = values
        self._energy = (values['energy'], now)
        self.misses = 0
        if not self.connected:
            self.connected = True
            log.info('%s: answering%s', self.label,
                     ' again after: %s' % self.last_error if self.last_error else '')
            return True
        return False

    def _miss(self, kind, error):
        self.errors[kind] += 1
        self.last_error = str(error)
        self.misses += 1
        if self.connected and self.misses >= MISSES_TO_DISCONNECT:
            self.connected = False
            self.reading = None
            log.warning('%s: not answering (%d polls missed; last: %s)', self.label, self.misses,
                        self.last_error)
            return True
        return False

    def _check_energy(self, energy, now):
        """The counter only grows, no faster than the meter's maximum power allows.

        A drop (reset with 0x42) or a leap (a long absence) is believed once the next reading
        confirms it; a single junk value never gets through.
        """
        if self._energy is None:
            return None
        max_kw = self.model.max_kw
        last, since = self._energy
        if last <= energy <= last + max_kw * (now - since) / 3600.0 + ENERGY_SLACK_KWH:
            self._energy_step = None
            return None
        step = self._energy_step
        if step is not None and step[0] <= energy <= (
                step[0] + max_kw * (now - step[1]) / 3600.0 + ENERGY_SLACK_KWH):
            self._energy_step = None
            return None
        self._energy_step = (energy, now)
        return 'energy count went from %.3f to %.3f kWh' % (last, energy)
