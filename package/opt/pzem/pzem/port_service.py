"""The port's own D-Bus service, com.victronenergy.pzem.<port>: what a GUI page (and MQTT or
Node-RED) reads about one RS-485 adapter and its meters, and the requests it can make.

    service = PortService('ttyUSB0', source, version)   # registers at once
    service.refresh()        # after a poll round (or every `interval` seconds): one ItemsChanged
    service.close()

`source` is the driver's side (PortSource below): it tells what is on the port and carries out
the requests. Every written value is checked here first; a refused write returns 2 from SetValue
and says why in /Action/Message. A request the source takes on runs on; the source calls
`done(ok, sentence)` when it has finished (from any thread), and /Action/* report it. One request
at a time: while one runs (/Action/State 1) others are refused and /Action/* keep reporting it.
The paths are listed in README.md ("The driver's own service per port").
"""
import logging

from gi.repository import GLib

from .busitem import BusItemService
from .port_status import ANSWERING, ERROR_NAMES, STATES, WAITING, port_ident
from .rtu import MAX_ADDRESS, MIN_ADDRESS

SERVICE_PREFIX = 'com.victronenergy.pzem.'

# /Action/State
IDLE, RUNNING, DONE, FAILED = 0, 1, 2, 3

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
        return 'looking for meters again is not available in this version'

    def pin(self, on, done):
        return 'pinning the adapter is not available in this version'


class PortService(object):
    def __init__(self, port, source, version, bus=None, lock=None, interval=None):
        """port: the tty name. bus, lock: as for BusItemService. interval: refresh every that
        many seconds by a GLib timer (None: the caller calls refresh())."""
        self.port = port
        self.ident = port_ident(port)
        self.source = source
        self._listed = {}       # address -> the MeterStatus last published (None: gone)
        self._timer = None
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
        if interval:
            self._timer = GLib.timeout_add(int(interval * 1000), self._tick)

    @property
    def name(self):
        return self.service.name

    def close(self):
        if self._timer is not None:
            GLib.source_remove(self._timer)
            self._timer = None
        self.service.close()

    def _tick(self):
        try:
            self.refresh()
        except Exception:
            log.exception('%s: refreshing the port service failed', self.port)
        return True

    # -- what the port has -------------------------------------------------------------------

    def refresh(self):
        """Read the source and publish what changed, in one ItemsChanged."""
        with self.service.lock:
            self._refresh()

    def _refresh(self):
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
        for key, text in _METER_PATHS:
            svc.add_path(base + key, None, text=text)
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
        if other is not None and other.state != WAITING:
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
        if self._busy():
            return False
        if not _is_int(value) or value not in (0, 1):
            return self._refuse('search', None,
                                'Write 1 to look for meters on every address, 0 to stop, not %s.'
                                % _show(value))
        return self._start('search', None, 'Looking for meters on every address.' if value
                           else 'Stopping the search.',
                           lambda done: self.source.search(bool(value), done))

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


# (key under /Meters/<address>/, text format)
_METER_PATHS = (
    ('State', None), ('Reason', None), ('Model', None), ('Role', None), ('Name', None),
    ('Group', None), ('Phase', None), ('Service', None), ('Serial', None), ('InMap', None),
    ('Found', None), ('Sign', None), ('Voltage', '{:.1f} V'), ('Current', '{:.3f} A'),
    ('Power', '{:.1f} W'), ('Energy', '{:.3f} kWh'), ('EnergyReverse', '{:.3f} kWh'),
    ('Errors/NoReply', None), ('Errors/BadFrame', None), ('Errors/Exception', None),
    ('Errors/Implausible', None), ('Errors/EnergyDropped', None),
)


def _meter_values(status):
    """{key: value} for the paths under /Meters/<address>/; all invalid for a meter gone."""
    if status is None:
        return {key: None for key, _ in _METER_PATHS}
    values = {'State': status.state, 'Reason': status.reason, 'Model': status.model,
              'Role': status.role, 'Name': status.name, 'Group': status.group,
              'Phase': status.phase, 'Service': status.service, 'Serial': status.serial,
              'InMap': int(bool(status.in_map)), 'Found': int(bool(status.found)),
              'Sign': status.sign, 'Voltage': status.voltage, 'Current': status.current,
              'Power': status.power, 'Energy': status.energy,
              'EnergyReverse': status.energy_reverse,
              'Errors/EnergyDropped': status.dropped}
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
