"""The poll path: read -> decode -> check -> publish, one published meter per time slot, and in
the gaps the probes: the map's meters that have not answered yet, and discovery.

Every published meter (a single PZEM or a phase group) is read once per interval, round-robin, so
the bus is never asked two things at once and the D-Bus work is spread evenly. A probe runs only
when the rest of the slot has room for it, so it never delays a poll; only a probe that has waited
FORCE_SECONDS (a bus too busy to have gaps) takes its turn anyway, delaying the next poll by at
most one probe timeout.
"""
import logging
import time

from . import modbus, models
from .discovery import Discovery
from .meter import Meter, meter_log, phase_log

GARBLED_RETRIES = 3         # a garbled reply means something is there: ask again at once
BACKOFF_SECONDS = (2.0, 4.0, 8.0, 15.0, 30.0, 60.0)    # a silent mapped meter, asked again
FORCE_SECONDS = 10.0
SEARCH_FORCE_SECONDS = 1.0  # while a requested search runs: a probe at least this often
START_PASSES = 3            # at start, while nothing answers, the map and likely addresses again
PROBE_MARGIN = 0.02         # the bus's inter-frame silence and our own work around a probe

log = logging.getLogger('pzem')


class NoGoodReading(modbus.BadFrame):
    """A meter answers, but no reading it gave passed the checks."""


class Waiting(object):
    """A meter of the map that has not answered yet, with when to ask it again."""

    def __init__(self, spec, due=0.0):
        self.spec = spec
        self.due = due
        self.silent = 0         # probes in a row without an answer
        self.reported = False   # "does not answer" logged once


class Poller(object):
    def __init__(self, bus, port, specs, interval, publish, found=None, scan=True,
                 scan_timeout=0.15, clock=time.monotonic, changed=None):
        """publish(spec, phases) -> Publisher, or None when it could not be published;
        found(address, model) -> the MeterSpec for a meter the map does not name (it writes
        the map), or None; changed(): the meters listed changed (one published, refused or
        taken away: what the port's service shows)."""
        self.bus = bus
        self.port = port
        self.interval = interval
        self.publish = publish
        self.found = found
        self.scan_timeout = scan_timeout
        self.clock = clock
        self.changed = changed or (lambda: None)
        self.published = []
        self.waiting = [Waiting(spec) for spec in specs]
        self.refused = []           # specs whose role does not fit the meter's family (for the
                                    # record: they are not asked again until the map changes)
        self.answered = set()       # addresses that answered (published or not)
        self.discovery = Discovery(clock, self._named()) if scan else None
        self._urgent = {}           # address -> garbled replies so far
        self._slow = set()          # addresses heard answering late: probed with the full timeout
        self._next = 0
        self._again = []            # publishers whose poll missed while connected: they take
                                    # every other slot until they answer
        self._extra = False         # the last slot was such a publisher's
        self._slot_started = None   # when the slot being polled began
        self._probe_waiting_since = None
        self._searching = False     # a requested search runs (search())
        self.search_stopped = False     # the last one was stopped before its end
        self._search_only = False   # the discovery is there for that search only
        self._started = False       # start() is over: a silent mapped meter is reported

    def _named(self):
        return {a for w in self.waiting for a in w.spec.addresses} | {
            a for p in self.published for a in p.spec.addresses}

    @property
    def slot(self):
        return self.interval / max(1, len(self.published))

    # -- start-up ----------------------------------------------------------------------------

    def start(self, deadline, between=None):
        """Ask every meter of the map, then the likely addresses, until `deadline`; while
        nothing answers, ask again (one lost reply must not send the driver away). between(),
        called after each probe, lets the caller serve what waits (D-Bus asks the meters
        published so far). Returns how many meters are published. Raises modbus.PortGone."""
        if not self._connected():
            self._started = True    # nothing can be asked: ask_again() once it can
            return 0
        likely = self.discovery.start_up() if self.discovery is not None else []
        between = between or (lambda: None)
        for _ in range(START_PASSES):
            for waiting in list(self.waiting):
                if not self._room(deadline):
                    break
                self._probe_spec(waiting)
                while waiting in self.waiting and waiting.spec.address in self._urgent \
                        and self._room(deadline):
                    self._probe_spec(waiting)
                self._probe_heard(deadline)
                between()
            for address in likely:
                if not self._room(deadline):
                    break
                if not self.discovery.wanted(address):
                    continue
                self.discovery.take(address)
                self._probe_address(address)
                while address in self._urgent and self._room(deadline):
                    self._probe_address(address)
                self._probe_heard(deadline)
                between()
            if self.published or not (self.waiting or likely) or not self._room(deadline):
                break
        self._started = True
        for waiting in self.waiting:
            self._report_silent(waiting)
        return len(self.published)

    def _probe_heard(self, deadline):
        """At start: the addresses heard answering late are asked again at once, slowly."""
        if not getattr(self.bus, 'heard', None):
            return
        for address in self._heard_late():
            while address in self._urgent and self._room(deadline):
                waiting = self._waiting_for(address)
                if waiting is not None:
                    self._probe_spec(waiting)
                elif self.discovery is not None and self.discovery.wanted(address):
                    self._probe_address(address)
                else:
                    break

    def _room(self, deadline):
        return self.clock() + self.scan_timeout + PROBE_MARGIN <= deadline

    def _connected(self):
        """False while the bus cannot carry a request (a gateway not connected: every ask
        fails at once, so a poll is not asked again and nothing is probed)."""
        return getattr(self.bus, 'connected', True)

    def ask_again(self):
        """The bus carries requests again after it could not (a gateway connected again): the
        map's meters that have not answered are asked now, not after their backoff."""
        now = self.clock()
        for waiting in self.waiting:
            waiting.due = min(waiting.due, now)

    # -- the poll loop -----------------------------------------------------------------------

    def tick(self):
        """Poll the next published meter, then probes while the slot has room; a probe that
        waited FORCE_SECONDS runs anyway, alone, and the wait for the next starts at the next
        tick. Raises modbus.PortGone."""
        self.probe(self.poll_next())

    def poll_next(self):
        """Poll the next published meter; returns when its slot started (for probe()).

        One lost or late reply must not be a missed reading, and a meter that answers most of
        the time must not go invalid: a failed read is asked again at once while the slot has
        room for an answer (as long as the last one took), and a meter whose poll still missed,
        while it is connected, takes every other slot until it answers (the others share the
        rest, a little less often, for the few seconds that lasts)."""
        started = self.clock()
        if self.published:
            if self._again and not self._extra:
                publisher = self._again.pop(0)
                self._extra = True
            else:
                publisher = self.published[self._next % len(self.published)]
                self._next += 1
                self._extra = False
            self._slot_started = started
            if publisher.poll(self.bus, self._retry_until, started):
                if publisher not in self._again:
                    self._again.append(publisher)
            elif self._again and publisher in self._again:
                self._again.remove(publisher)
        return started

    def _retry_until(self):
        """The latest time a failed read of the slot that began at _slot_started is asked
        again: room left for an answer as long as the last one took, in the slot or in what
        the round has to spare (the interval less the other meters' reads: the poll thread
        catches the slots after up); None: not again, with a gateway that is not connected."""
        if not self._connected():
            return None
        answer = self.bus.reply_seconds or self.scan_timeout
        room = max(self.slot, self.interval - (len(self.published) - 1) * answer)
        return self._slot_started + room - answer - PROBE_MARGIN

    def wants_probe(self, started):
        """True when probe(started) is to run now. A thread that only polls hands the probes
        (which may publish a meter) to the main loop only then; the search's asks, which
        nearly always meet silence, it makes here itself, as probe() would: only an address
        that answers is left to probe(), which asks it again at once and identifies it."""
        if not (self._urgent or self.waiting or self.discovery is not None):
            self._probe_waiting_since = None
            return False        # every meter published, no search: no probe, ever (cheap)
        while True:
            turn = self._probe_turn(started)
            if turn is None:
                return False
            (kind, target), room = turn
            if kind != 'search':
                return True
            self._probe_waiting_since = None
            self.discovery.take(target)
            if self._ask_address(target):
                self._urgent[target] = 0    # it answered: probe() asks again at once
            if target in self._urgent:      # it answered, or garbled (asked again at once)
                return True
            if not room:
                return False                # a forced probe: one, then the polls go on

    def probe(self, started):
        """Probes while the slot that started at `started` has room (see tick())."""
        while True:
            turn = self._probe_turn(started)
            if turn is None:
                return
            (kind, target), room = turn
            self._probe_waiting_since = None
            if kind == 'spec':
                self._probe_spec(target)
            else:
                if kind == 'search':
                    self.discovery.take(target)
                self._probe_address(target)
            if not room:
                return              # a forced probe: one, then the polls go on

    def _probe_turn(self, started):
        """((kind, target), room left) when a probe is to run now, else None."""
        if not self._connected():
            return None
        probe = self._next_probe()
        if probe is None:
            self._probe_waiting_since = None
            return None
        room = started + self.slot - self.clock() >= self.scan_timeout + PROBE_MARGIN
        if self._probe_waiting_since is None:
            self._probe_waiting_since = started
        if not (room or started - self._probe_waiting_since >= self._force_seconds()):
            return None
        return probe, room

    def _force_seconds(self):
        searching = self.discovery is not None and self.discovery.sweeping
        return SEARCH_FORCE_SECONDS if searching else FORCE_SECONDS

    def _next_probe(self):
        """The most urgent probe that is due now, or None: ('spec', Waiting) for a meter of
        the map, ('address', address) for an address nobody named that is asked again at once,
        ('search', address) for the search's next turn."""
        if getattr(self.bus, 'heard', None):
            self._heard_late()
        now = self.clock()
        for address in list(self._urgent):
            waiting = self._waiting_for(address)
            if waiting is not None:
                return 'spec', waiting
            if self.discovery is not None and self.discovery.wanted(address):
                return 'address', address
            del self._urgent[address]   # the map took it away, or it was found meanwhile
        due = [w for w in self.waiting if w.due <= now]
        if due:
            return 'spec', min(due, key=lambda w: w.due)
        if self.discovery is not None:
            next_due = self.discovery.next_due()
            if next_due is not None and next_due[0] <= now:
                return 'search', next_due[1]
        return None

    def _heard_late(self):
        """A reply that came into another exchange, from an address that is not published: a
        meter slower than a probe's short timeout. It is asked again at once, with the full
        timeout, so a slow meter is found, not lost."""
        heard, self.bus.heard = self.bus.heard, set()
        late = []
        for address in sorted(heard):
            if self._waiting_for(address) is not None or (
                    self.discovery is not None and self.discovery.wanted(address)):
                if address not in self._slow:
                    log.info('%s:%d: answers later than the %g s a first ask waits: asking '
                             'again with the full timeout', self.port, address,
                             self.scan_timeout)
                self._slow.add(address)
                self._urgent.setdefault(address, 0)
                late.append(address)
        return late

    def _waiting_for(self, address):
        return next((w for w in self.waiting if address in w.spec.addresses), None)

    # -- probes ------------------------------------------------------------------------------

    def _alive(self, address):
        """Raises modbus.NoReply (or BadFrame) unless something answers at `address`, within the
        short scan timeout: a silent address costs no more than that."""
        try:
            self.bus.read_input(address, 1,
                                timeout=None if address in self._slow else self.scan_timeout)
        except modbus.ExceptionReply:
            pass                    # a meter that refuses the read is still there

    def _probe_spec(self, waiting):
        spec = waiting.spec
        try:
            phases, family, regs = self._find(spec)
            if spec.fits(family):
                self._first_readings(phases, regs)
        except modbus.PortGone:
            raise
        except modbus.BadFrame as e:
            if isinstance(e, NoGoodReading):
                self.answered.update(spec.addresses)
            self._garbled(spec.address, e)
            return
        except modbus.ModbusError as e:
            self._urgent.pop(spec.address, None)
            waiting.silent += 1
            waiting.due = self.clock() + BACKOFF_SECONDS[
                min(waiting.silent, len(BACKOFF_SECONDS)) - 1]
            log.debug('%s:%d: no meter there yet: %s', self.port, spec.address, e)
            if self._started:
                self._report_silent(waiting)
            return
        self._urgent.pop(spec.address, None)
        self.answered.update(spec.addresses)
        if not spec.fits(family):
            meter_log(self.port, spec.addresses).error(
                'a %s meter (%s) answers, but the map gives it role %s: not published; give it '
                'a %s role in the map', family.upper(), phases[0][1].model.name, spec.role,
                family.upper())
            self.waiting.remove(waiting)
            self.refused.append(spec)
            if self.discovery is not None:
                self.discovery.skip(spec.addresses)
            self.changed()
            return
        publisher = self.publish(spec, phases)
        if publisher is None:       # D-Bus trouble: it stays waiting and is tried again
            waiting.due = self.clock() + BACKOFF_SECONDS[1]
            return
        if waiting.reported:
            publisher.log.info('answering now')
        self.waiting.remove(waiting)
        self.published.append(publisher)
        self.changed()

    def _ask_address(self, address):
        """True when something answers at `address`, which the map does not name; a silence
        or a garbled reply is booked here. Raises modbus.PortGone."""
        try:
            self._alive(address)
        except modbus.PortGone:
            raise
        except modbus.NoReply:
            self._urgent.pop(address, None)
            self.discovery.asked(address)
            return False
        except modbus.BadFrame as e:
            self._garbled(address, e)
            return False
        return True

    def _probe_address(self, address):
        """Ask an address the map does not name; publish what answers there."""
        if not self._ask_address(address):
            return
        try:
            model, regs = models.identify(self.bus, address)
            meter = self._meter(address, model, [address])
            self._first_reading(meter, regs)
        except modbus.PortGone:
            raise
        except modbus.ModbusError as e:
            log.debug('%s:%d: answered, but could not be identified and read: %s', self.port,
                      address, e)
            self._garbled(address, e)
            return
        self._urgent.pop(address, None)
        self.answered.add(address)
        self.discovery.skip([address])
        spec = self.found(address, model) if self.found else None
        if spec is None:
            return
        meter_log(self.port, [address]).info('found a %s the map does not name', model.name)
        waiting = Waiting(spec)
        self.waiting.append(waiting)
        publisher = self.publish(spec, [('L1', meter)])
        if publisher is not None:
            self.waiting.remove(waiting)
            self.published.append(publisher)
        self.changed()

    def _garbled(self, address, error):
        tries = self._urgent.get(address, 0) + 1
        if tries >= GARBLED_RETRIES:
            self._urgent.pop(address, None)
            waiting = self._waiting_for(address)
            if waiting is not None:
                waiting.due = self.clock() + BACKOFF_SECONDS[0]
            elif self.discovery is not None:
                self.discovery.asked(address)
            log.debug('%s:%d: garbled replies: %s', self.port, address, error)
        else:
            self._urgent[address] = tries

    def _find(self, spec):
        """([(phase, Meter)], family, the registers the probe brought or None) for what
        answers; raises modbus.ModbusError otherwise. A group's phases are asked by
        _first_readings: a group is PZEM-016s only."""
        if spec.group:
            return [(phase, self._meter(address, models.AC, spec.addresses, phase))
                    for phase, address in spec.phases], 'ac', None
        self._alive(spec.address)
        if spec.model:
            model, regs = models.MODELS[spec.model], None
        else:
            model, regs = models.identify(self.bus, spec.address)
        return [('L1', self._meter(spec.address, model, spec.addresses))], model.family, regs

    def _first_readings(self, phases, regs=None):
        """Every phase's first reading (the probe's registers for a single meter's, when it
        brought them). A group is published once any phase answers, with the first reading of
        every phase that gives one; each phase is asked briefly first, so a silent one costs a
        scan timeout only."""
        if len(phases) == 1:
            self._first_reading(phases[0][1], regs)
            return
        errors = []
        for _, meter in phases:
            try:
                self._alive(meter.address)
                self._first_reading(meter)
            except modbus.PortGone:
                raise
            except modbus.ModbusError as e:
                errors.append(e)
        if len(errors) == len(phases):
            raise min(errors, key=lambda e: not isinstance(e, modbus.BadFrame))

    def _first_reading(self, meter, regs=None):
        """A meter is published with its first reading, never empty: the probe's registers
        when it brought them, else a read, asked again at once up to GARBLED_RETRIES times.
        Raises modbus.BadFrame (something answers) when no good reading came."""
        if regs is not None:
            meter.take(regs)                # the probe's read is the first reading
        tries = 0
        while meter.reading is None:
            if tries == GARBLED_RETRIES:
                error, reason = meter.last_failure
                raise NoGoodReading('Meter %d on %s answers but gave no good reading in %d '
                                    'tries (last: %s).' % (meter.address, self.port, tries,
                                                           str(error or reason).rstrip('.')))
            meter.attempt(self.bus)
            tries += 1

    def _meter(self, address, model, addresses, phase=None):
        log = meter_log(self.port, [address]) if phase is None or len(addresses) == 1 else \
            phase_log(self.port, address, phase, addresses)
        return Meter(self.port, address, model, log=log, clock=self.clock)

    def _report_silent(self, waiting):
        if waiting.reported or waiting not in self.waiting:
            return
        waiting.reported = True
        spec = waiting.spec
        meter_log(self.port, spec.addresses).warning(
            'the map names a meter here%s, but it does not answer; asking again every few '
            'seconds (check its power, address and the RS-485 wiring)',
            ' (role %s)' % spec.role if spec.role else '')

    # -- following the map -------------------------------------------------------------------

    def apply_map(self, specs):
        """Follow an edited map: new specs wait to be probed, removed ones go, changed ones
        are applied to their publisher."""
        by_addresses = {s.addresses: s for s in specs}
        kept = []
        for publisher in self.published:
            spec = by_addresses.pop(publisher.spec.addresses, None)
            same_meter = spec is not None and spec.group == publisher.spec.group and \
                spec.model in (None, publisher.family) and spec.fits(publisher.family)
            if same_meter:
                publisher.apply(spec)
                kept.append(publisher)
            else:
                publisher.log.info('no longer in the map as it was: taken off D-Bus')
                publisher.close()
                if spec is not None:
                    by_addresses[spec.addresses] = spec
        gone = {a for p in self.published if p not in kept for a in p.spec.addresses}
        self.published = kept
        self._again = [p for p in self._again if p in kept]
        before = {w.spec.addresses: w for w in self.waiting}
        self.waiting = []
        for spec in sorted(by_addresses.values(), key=lambda s: s.address):
            waiting = before.get(spec.addresses) or Waiting(spec)
            waiting.spec = spec
            self.waiting.append(waiting)
        self.refused = []
        named = self._named()
        self._urgent = dict((a, n) for a, n in self._urgent.items()
                            if a in named or a not in gone)
        if self.discovery is not None:
            # a meter the user took out of the map is not searched for again until a restart
            self.discovery.skip(named | gone)
        self.changed()

    # -- a search someone asked for ----------------------------------------------------------

    def search(self, start):
        """Ask every address nobody named, in the gaps between polls and at least every
        SEARCH_FORCE_SECONDS (start), or stop doing so. A port with `scan = no` gets a
        discovery for that search only."""
        if start:
            if self.discovery is None:
                self.discovery = Discovery(self.clock, self._named(), background=False)
                self._search_only = True
            self.discovery.sweep(self._named() | {a for spec in self.refused
                                                  for a in spec.addresses})
        elif self.discovery is not None:
            self.discovery.stop_sweep()
        self.search_stopped = self._searching and not start
        self._searching = start
        self.search_percent()

    def search_percent(self):
        """None when no requested search runs, else how far it got (0..100). It runs until
        every address was asked and what answered has been identified."""
        if self._searching and (self.discovery.sweeping or self._urgent):
            return self.discovery.sweep_percent()
        self._searching = False
        if self._search_only:
            self.discovery, self._search_only = None, False
        return None

    def close(self):
        for publisher in self.published:
            publisher.close()
