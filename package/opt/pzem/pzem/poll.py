"""The poll path: read -> decode -> check -> publish, one published meter per time slot.

Every published meter (a single PZEM or a phase group) is read once per interval, round-robin,
so the bus is never asked two things at once and the D-Bus work is spread evenly. Addresses of
the map that did not answer are probed again now and then.
"""
import logging
import time

from . import modbus, models, roles
from .meter import Meter
from .publisher import Place

log = logging.getLogger('pzem')


class Wanted(object):
    """A meter (one config) or a phase group (several) of the map, not published yet."""

    def __init__(self, configs):
        self.configs = configs

    @property
    def addresses(self):
        return [c.address for c in self.configs]

    @property
    def group(self):
        return self.configs[0].group    # members of a group all carry its name

    def place(self, family):
        first = lambda attr: next((getattr(c, attr) for c in self.configs
                                   if getattr(c, attr) is not None), None)
        return Place(first('role') or roles.DEFAULT_ROLE[family], first('position'),
                     first('name'), first('monitor_mode'),
                     [c.section for c in self.configs if c.section])


class Poller(object):
    def __init__(self, bus, port, wanted, interval, publish, reprobe=60.0, clock=time.monotonic):
        """publish(phases, place) -> Publisher, or None when it could not be published."""
        self.bus = bus
        self.port = port
        self.wanted = list(wanted)
        self.interval = interval
        self.publish = publish
        self.clock = clock
        self.published = []
        self._next = 0
        self.reprobe = reprobe
        self._reprobe_at = clock() + reprobe

    def probe(self, deadline):
        """Look once for every wanted meter (until `deadline`); returns how many were published."""
        for wanted in list(self.wanted):
            if self.clock() + self.bus.timeout > deadline:  # a silent address takes a timeout
                break
            self._try(wanted)
        return len(self.published)

    def _try(self, wanted):
        try:
            phases, family = self._find(wanted)
        except modbus.PortGone:
            raise
        except modbus.ModbusError as e:
            log.debug('%s: no meter at %s: %s', self.port, wanted.addresses, e)
            return
        place = wanted.place(family)
        if roles.family_of(place.role) != family:
            log.error('%s:%d is a %s meter but the map gives it role %s: not published; set a %s '
                      'role (%s) in the map', self.port, wanted.addresses[0], family.upper(),
                      place.role, family.upper(), ', '.join(roles.FAMILY_ROLES[family]))
            self.wanted.remove(wanted)
            return
        publisher = self.publish(phases, place)
        if publisher is not None:       # else it stays wanted, and is tried again later
            self.wanted.remove(wanted)
            self.published.append(publisher)

    def _find(self, wanted):
        """([(phase, Meter)], family) for what answers; raises modbus.ModbusError otherwise."""
        if wanted.group:
            # A group is PZEM-016s only; it is published once any phase answers.
            errors = []
            for c in wanted.configs:
                try:
                    first = c.address, self.bus.read_input(c.address, models.AC.input_count)
                    break
                except modbus.PortGone:
                    raise
                except modbus.ModbusError as e:
                    errors.append(e)
            else:
                raise errors[0]
            meters = [(c.phase, Meter(self.port, c.address, models.AC))
                      for c in sorted(wanted.configs, key=lambda c: c.phase)]
            for _, meter in meters:
                if meter.address == first[0]:
                    meter.take(first[1])    # the probe's read is the first reading
            return meters, 'ac'
        config = wanted.configs[0]
        if config.model:
            model = models.MODELS[config.model]
            regs = self.bus.read_input(config.address, model.input_count)
        else:
            model, regs = models.identify(self.bus, config.address)
        log.info('%s:%d: found a %s', self.port, config.address, model.name)
        meter = Meter(self.port, config.address, model)
        if regs is not None:
            meter.take(regs)                # the probe's read is the first reading
        return [('L1', meter)], model.family

    def tick(self):
        """Poll the next published meter; between slots, probe one missing address if due.

        Returns the delay in seconds until the next tick. Raises modbus.PortGone.
        """
        started = self.clock()
        if self.published:
            publisher = self.published[self._next % len(self.published)]
            self._next += 1
            for _, meter in publisher.phases:
                meter.poll(self.bus)
            publisher.update()
        if self.wanted and started >= self._reprobe_at:
            wanted = self.wanted[0]
            self._try(wanted)
            if wanted in self.wanted:   # still missing: the others come first next time
                self.wanted.remove(wanted)
                self.wanted.append(wanted)
            self._reprobe_at = started + self.reprobe / max(1, len(self.wanted))
        slot = self.interval / max(1, len(self.published))
        return max(0.0, slot - (self.clock() - started))

    def close(self):
        for publisher in self.published:
            publisher.close()
