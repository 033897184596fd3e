"""The port's own D-Bus service, com.victronenergy.pzem.<port>: what a GUI page (and MQTT or
Node-RED) reads about one RS-485 adapter and its meters, and the requests it can make.

    service = PortService('ttyUSB0', source, version)   # registers at once
    service.changed()        # from any thread: what it shows changed; refreshed soon
    service.close()

It shows what is on the port, not what the meters read: a meter's readings are on its own service
(/Meters/<address>/Service names it), so a poll costs this service nothing. It changes when a
meter is published or goes, starts or stops answering, or is renamed (changed(): refreshed at
once, one ItemsChanged with what changed), and with the error counts, at most every
TALLY_SECONDS (changed(urgent=False)).

`source` is the driver's side (PortSource below): it tells what is on the port and carries out
the requests. Every written value is checked here first; a refused write returns 2 from SetValue
and says why in /Action/Message. A request the source takes on runs on; the source calls
`done(ok, sentence)` when it has finished (from any thread), and /Action/* report it. One request
at a time: while one runs (/Action/State 1) others are refused and /Action/* keep reporting it.
The paths are listed in README.md ("The driver's own service per port").
"""
import logging
import threading
import time

from gi.repository import GLib

from .busitem import BusItemService
from .port_status import ANSWERING, ERROR_NAMES, STATES, WAITING, port_ident
from .rtu import MAX_ADDRESS, MIN_ADDRESS

SERVICE_PREFIX = 'com.victronenergy.pzem.'

# /Action/State
IDLE, RUNNING, DONE, FAILED = 0, 1, 2, 3

TALLY_SECONDS = 5.0     # error counts are refreshed at most this often

log = logging.getLogger('pzem')


class PortSource(object):
    """What the port service asks the driver. Each request returns None when it has started (the
    source then calls done(ok, sentence) exactly once, from any thread) or a sentence saying why
    it refuses (nothing was done)."""

    def meters(self):
        """[port_status.MeterStatus], one per address to list."""
        return []

    def searching(self):
        """(whether a requested search of every address runs, its progress 0..100 or None)."""
        return False, None

    def pinned(self):
        """True / False: whether the adapter is pinned to the pzem driver; None: it cannot be."""
        return None

    def set_address(self, address, new, done):
        return 'giving a meter a new address is not available in this version'

    def reset_energy(self, address, done):
        return "resetting a meter's energy counter is not available in this version"

    def search(self, start, done):
        """start: a search of every address, done(ok, sentence) when it is over (finished or
        stopped). Not start: stop the one that runs (its own done says so); done is None."""
        return 'looking for meters again is not available in this version'

    def pin(self, on, done):
        return 'pinning the adapter is not available in this version'


class PortService(object):
    def __init__(self, port, source, version, bus=None, lock=None, clock=time.monotonic):
        """port: the tty name. bus, lock: as for BusItemService."""
        self.port = port
        self.ident = port_ident(port)
        self.source = source
        self.clock = clock
        self._listed = {}       # address -> the MeterStatus last published (None: gone)
        self._due = threading.Lock()    # guards the two below: changed() comes from any thread
        self._soon = None       # GLib source of the refresh asked for, or None
        self._later = None      # GLib source of the error counts' refresh, or None
        self._refreshed = clock()
        self._closed = False
        svc = self.service = BusItemService(SERVICE_PREFIX + self.ident, bus=bus, lock=lock)
        try:
            svc.add_path('/Mgmt/ProcessName', 'dbus-pzem')
            svc.add_path('/Mgmt/ProcessVersion', version)
            svc.add_path('/Mgmt/Connection', 'Modbus RTU %s' % port)
            svc.add_path('/Identifier', self.ident)
            svc.add_path('/Port', port)
            svc.add_path('/Pinned', None, action=True, on_change=self._on_pin)
            svc.add_path('/Scan', 0, action=True, on_change=self._on_scan)
            svc.add_path('/ScanProgress', None, text='{:.0f} %')
            for _, name in ERROR_NAMES:
                svc.add_path('/Errors/' + name, 0)
            svc.add_path('/Errors/EnergyDropped', 0)
            svc.add_path('/Counts/Listed', 0)
            svc.add_path('/Counts/Answering', 0)
            svc.add_path('/Action/Sequence', 0)
            svc.add_path('/Action/Name', '')
            svc.add_path('/Action/Address', None)
            svc.add_path('/Action/State', IDLE)
            svc.add_path('/Action/Message', '')
            self.refresh()
            svc.register()
        except Exception:
            svc.close()
            raise

    @property
    def name(self):
        return self.service.name

    def close(self):
        with self._due:
            self._closed = True
            self._drop('_soon')
            self._drop('_later')
        self.service.close()

    def changed(self, urgent=True):
        """What the service shows changed (any thread may say so): refreshed from the main loop
        at once, or (urgent=False: error counts only) within TALLY_SECONDS of the last refresh."""
        with self._due:
            if self._soon is not None or self._closed:
                return              # a refresh is coming: it reads everything
            if urgent:
                self._drop('_later')
                self._soon = GLib.idle_add(self._scheduled, '_soon')
            elif self._later is None:
                wait = max(0.0, self._refreshed + TALLY_SECONDS - self.clock())
                self._later = GLib.timeout_add(int(wait * 1000), self._scheduled, '_later')

    def _drop(self, which):
        source = getattr(self, which)
        if source is not None:
            GLib.source_remove(source)
            setattr(self, which, None)

    def _scheduled(self, which):
        with self._due:
            setattr(self, which, None)      # this one fired: it is gone by itself
            self._drop('_later')            # the refresh now covers the error counts too
            if self._closed:
                return False
        try:
            self.refresh()
        except Exception:
            log.exception('%s: refreshing the port service failed', self.port)
        return False

    # -- what the port has -------------------------------------------------------------------

    def refresh(self):
        """Read the source and publish what changed, in one ItemsChanged."""
        with self.service.lock:
            self._refresh()

    def _refresh(self):
        self._refreshed = self.clock()
        svc = self.service
        statuses = {s.address: s for s in self.source.meters()}
        running, progress = self.source.searching()
        pinned = self.source.pinned()
        with svc:
            svc['/Scan'] = 1 if running else 0
            svc['/ScanProgress'] = float(progress) if running and progress is not None else None
            svc['/Pinned'] = None if pinned is None else int(bool(pinned))
            totals = dict.fromkeys([kind for kind, _ in ERROR_NAMES], 0)
            dropped = 0
            for status in statuses.values():
                for kind in totals:
                    totals[kind] += (status.errors or {}).get(kind, 0)
                dropped += status.dropped
            for kind, name in ERROR_NAMES:
                svc['/Errors/' + name] = totals[kind]
            svc['/Errors/EnergyDropped'] = dropped
            svc['/Counts/Listed'] = len(statuses)
            svc['/Counts/Answering'] = sum(1 for s in statuses.values() if s.state == ANSWERING)
            for address in set(self._listed) | set(statuses):
                self._publish_meter(address, statuses.get(address))

    def _publish_meter(self, address, status):
        if status is not None and status.state not in STATES:
            raise ValueError('meter %d: unknown state %r' % (address, status.state))
        if status == self._listed.get(address):
            return
        svc = self.service
        base = '/Meters/%d/' % address
        if address not in self._listed:
            self._add_meter_paths(base, address)
        self._listed[address] = status
        values = _meter_values(status)
        for key, value in values.items():
            svc[base + key] = value
        svc[base + 'SetAddress'] = None if status is None else address
        svc[base + 'ResetEnergy'] = None if status is None else 0

    def _add_meter_paths(self, base, address):
        svc = self.service
        for key in _METER_PATHS:
            svc.add_path(base + key, None)
        svc.add_path(base + 'SetAddress', None, action=True,
                     on_change=lambda path, value: self._on_set_address(address, value))
        svc.add_path(base + 'ResetEnergy', None, action=True,
                     on_change=lambda path, value: self._on_reset_energy(address, value))

    # -- requests ----------------------------------------------------------------------------

    def _on_set_address(self, address, value):
        if self._busy():
            return False
        if not _is_int(value) or not MIN_ADDRESS <= value <= MAX_ADDRESS:
            return self._refuse('set-address', address,
                                'A Modbus address is a whole number from %d to %d, not %s.'
                                % (MIN_ADDRESS, MAX_ADDRESS, _show(value)))
        meter = self._meter(address)
        if meter is None:
            return self._refuse('set-address', address, 'No meter is listed at address %d on %s.'
                                % (address, self.port))
        if value == address:
            return self._finish_now('set-address', address,
                                    'The meter already answers at address %d: nothing to change.'
                                    % address)
        if meter.state != ANSWERING:
            return self._refuse('set-address', address,
                                'The meter at address %d does not answer now (%s): only a meter '
                                'that answers can be given a new address.'
                                % (address, meter.reason or 'no reply'))
        other = self._meter(value)
        if other is not None and other.state == WAITING:
            return self._refuse('set-address', address,
                                'The map has a section for a meter at address %d on %s (%s), '
                                'which has not answered: pick another address, or take that '
                                'section out of the map first.'
                                % (value, self.port, _describe(other)))
        if other is not None:
            return self._refuse('set-address', address,
                                'Address %d is taken on %s by %s: pick a free one.'
                                % (value, self.port, _describe(other)))
        return self._start('set-address', address,
                           'Giving the meter at address %d the address %d.' % (address, value),
                           lambda done: self.source.set_address(address, value, done))

    def _on_reset_energy(self, address, value):
        if self._busy():
            return False
        if not _is_int(value) or value != 1:
            return self._refuse('reset-energy', address,
                                'Write 1 to reset the energy counter, not %s.' % _show(value))
        meter = self._meter(address)
        if meter is None or meter.state != ANSWERING:
            return self._refuse('reset-energy', address,
                                'The meter at address %d does not answer now: its counter cannot '
                                'be reset.' % address)
        return self._start('reset-energy', address,
                           "Resetting the energy counter of the meter at address %d." % address,
                           lambda done: self.source.reset_energy(address, done))

    def _on_scan(self, path, value):
        svc = self.service
        if _is_int(value) and value == 0 and svc['/Action/Name'] == 'search' and \
                svc['/Action/State'] == RUNNING:
            self.source.search(False, None)     # the running search reports its own end
            return True
        if self._busy():
            return False
        if not _is_int(value) or value not in (0, 1):
            return self._refuse('search', None,
                                'Write 1 to look for meters on every address, 0 to stop, not %s.'
                                % _show(value))
        if not value:
            return self._finish_now('search', None, 'No search runs: nothing to stop.')
        return self._start('search', None, 'Looking for meters on every address.',
                           lambda done: self.source.search(True, done))

    def _on_pin(self, path, value):
        if self._busy():
            return False
        if not _is_int(value) or value not in (0, 1):
            return self._refuse('pin', None,
                                'Write 1 to pin the adapter to this driver, 0 to unpin it, not %s.'
                                % _show(value))
        name = 'pin' if value else 'unpin'
        return self._start(name, None, ('Pinning %s to the pzem driver.' if value else
                                        'Unpinning %s.') % self.port,
                           lambda done: self.source.pin(bool(value), done))

    def _meter(self, address):
        return self._listed.get(address)

    def _busy(self):
        if self.service['/Action/State'] == RUNNING:
            log.info('%s: a request came while "%s" runs: refused', self.port,
                     self.service['/Action/Name'])
            return True
        return False

    def _report(self, name, address, state, message):
        """A new request's outcome (or start): the next /Action/Sequence."""
        svc = self.service
        with svc:
            svc['/Action/Sequence'] = svc['/Action/Sequence'] + 1
            svc['/Action/Name'] = name
            svc['/Action/Address'] = address
            svc['/Action/State'] = state
            svc['/Action/Message'] = message

    def _refuse(self, name, address, message):
        self._report(name, address, FAILED, message)
        log.info('%s: %s refused: %s', self.port, name, message)
        return False

    def _finish_now(self, name, address, message):
        self._report(name, address, DONE, message)
        return True

    def _start(self, name, address, message, request):
        self._report(name, address, RUNNING, message)
        sequence = self.service['/Action/Sequence']
        finished = []

        def done(ok, sentence):
            # once, and from the main loop whatever thread the source calls from
            if not finished:
                finished.append(True)
                GLib.idle_add(self._finished, sequence, name, address, ok, sentence)
        try:
            refused = request(done)
        except Exception as e:      # the source failed: say so rather than stay "running"
            log.exception('%s: %s failed', self.port, name)
            refused = '%s failed: %s' % (name, e)
        if refused:
            finished.append(True)
            self._conclude(FAILED, refused)
            log.info('%s: %s refused: %s', self.port, name, refused)
            return False
        log.info('%s: %s', self.port, message)
        return True

    def _conclude(self, state, sentence):
        with self.service as svc:
            svc['/Action/State'] = state
            svc['/Action/Message'] = sentence

    def _finished(self, sequence, name, address, ok, sentence):
        svc = self.service
        with svc.lock:
            if svc['/Action/Sequence'] == sequence and svc['/Action/State'] == RUNNING:
                self._conclude(DONE if ok else FAILED, sentence)
                log.info('%s: %s %s: %s', self.port, name, 'done' if ok else 'failed', sentence)
                self._refresh()
        return False


# keys under /Meters/<address>/ (besides the requests)
_METER_PATHS = (
    'State', 'Reason', 'Model', 'Role', 'Name', 'Group', 'Phase', 'Service', 'DeviceInstance',
    'Serial', 'InMap', 'Found', 'Sign', 'Errors/NoReply', 'Errors/BadFrame', 'Errors/Exception',
    'Errors/Implausible', 'Errors/EnergyDropped',
)


def _meter_values(status):
    """{key: value} for the paths under /Meters/<address>/; all invalid for a meter gone."""
    if status is None:
        return {key: None for key in _METER_PATHS}
    values = {'State': status.state, 'Reason': status.reason, 'Model': status.model,
              'Role': status.role, 'Name': status.name, 'Group': status.group,
              'Phase': status.phase, 'Service': status.service,
              'DeviceInstance': status.instance, 'Serial': status.serial,
              'InMap': int(bool(status.in_map)), 'Found': int(bool(status.found)),
              'Sign': status.sign, 'Errors/EnergyDropped': status.dropped}
    for kind, name in ERROR_NAMES:
        values['Errors/' + name] = (status.errors or {}).get(kind, 0)
    return values


def _is_int(value):
    return type(value) is int


def _show(value):
    return 'nothing (an invalid value)' if value is None else repr(value)


def _describe(status):
    what = status.model or 'a meter'
    return '%s "%s"' % (what, status.name) if status.name else what
