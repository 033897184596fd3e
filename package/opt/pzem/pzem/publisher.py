"""One D-Bus service for one published meter: a single PZEM, or a phase group as one meter.

The map's MeterSpec decides the role, and the role the service type and the paths; the map file is
the source of truth for role, position and name, so a change from the GUI is written there first
and refused if that fails. Energy paths carry the driver's own running totals (energy.py), signed
power and current follow the VE.Bus device's direction for a meter with `sign = vebus`.
"""
import logging
import re
import threading
import time

from . import models, roles, settings
from .busitem import BusItemService
from .map_syntax import MAX_NAME
from .meter import ERROR_KINDS
from .port_status import port_ident

PRODUCT_ID = 0xFFFF     # no Victron-assigned id; 0xFFFF is velib's "unknown product"
ENERGY_DIRECTION = {'dcsource': 'Out', 'dcload': 'In', 'dcsystem': 'In'}
ALARM_LEVEL = {0: 0, 0xFFFF: 2}
RETRY_SECONDS = 10
ERROR_PATHS = {'no_reply': '/Pzem/Errors/NoReply', 'bad_frame': '/Pzem/Errors/BadFrame',
               'exception': '/Pzem/Errors/Exception', 'implausible': '/Pzem/Errors/Implausible'}
ENERGY_DROPPED = '/Pzem/Errors/EnergyDropped'


def ident_for(port, address):
    """Settings id and service-name suffix: pzem_<tty>_<address>, only [A-Za-z0-9_]."""
    return 'pzem_%s_%d' % (re.sub('[^A-Za-z0-9_]', '_', port), address)


class Context(object):
    """What every publisher of a port shares: where the map is, the VRM instances, the
    direction sources and the energy store; the driver makes one."""

    def __init__(self, port, map_path, version, instances, directions=None, stores=None,
                 energy_for=None, on_start=None, clock=time.monotonic, lock=None,
                 on_change=None):
        self.port = port
        self.map_path = map_path
        self.version = version
        self.instances = instances
        self.directions = directions    # directions(spec) -> object with sign(phase), or None
        self.stores = stores            # stores(ident, log) -> energy.EnergyStore, or None
        self.energy_for = energy_for    # energy_for(model) -> energy.PhaseEnergy, or None
        self.on_start = on_start        # on_start(publisher): after each (re-)registration
        # on_change(urgent): what the port's service shows of a meter changed: its service, name
        # or whether it answers (urgent), or only its error counts (not urgent)
        self.on_change = on_change or (lambda urgent: None)
        self.clock = clock
        self.lock = lock or threading.RLock()   # the poll thread's (see poll_thread.py)

    def guard(self, func):
        """func, run with the lock held: for what the main thread calls (D-Bus signals), so
        it never meets a poll tick half-way (SetValue on a service takes the lock itself)."""
        def guarded(*args):
            with self.lock:
                return func(*args)
        return guarded


class Publisher(object):
    def __init__(self, spec, phases, context, log):
        """phases: [(phase name, Meter)]: one for a single meter ('L1'), two or three for a
        group."""
        self.spec = spec
        self.phases = phases
        self.model = phases[0][1].model
        self.context = context
        self.log = log
        self.port = context.port
        self.ident = ident_for(self.port, spec.address)
        self.service = None
        self._retry_at = None
        self._watch = None
        self._paths = []        # (path, phase index, field), made once per role
        self._signs = None      # the signs published last, to notice a flip
        self._tally = None      # the error and dropped counts published last (their sum)
        self._answering = None  # how many phases answered when last published
        self._unsigned = (1,) * len(phases)
        self._followed = ()     # the direction source last logged (() = none yet)
        self.direction = context.directions(spec) if context.directions and spec.sign else None
        self.store = context.stores(self.ident, log) if context.stores else None
        saved = (self.store.load() or {}) if self.store is not None else {}
        for phase, meter in phases:
            if context.energy_for is not None and meter.energy is None:
                meter.energy = context.energy_for(meter.model)
                meter.energy.restore(saved.get(phase))
                if meter.reading is not None:       # the probe's reading
                    meter.book(self._sign(phase))
        self._start()

    @property
    def family(self):
        return self.model.family

    @property
    def role(self):
        return self.spec.role_for(self.family)

    @property
    def servicename(self):
        return 'com.victronenergy.%s.%s' % (self.role, self.ident)

    # -- building the service ------------------------------------------------------------------

    def _start(self):
        svc = BusItemService(self.servicename, lock=self.context.lock)
        try:
            instance = self.context.instances.claim(svc, self.ident, self.role)
            self._add_paths(svc, instance)
            self.service = svc
            self._signs = self._tally = self._answering = None  # new paths: publish everything
            self.update(force=True)
            svc.register()
        except Exception:
            self.service = None
            svc.close()
            raise
        if self.context.instances.online:
            self._watch = settings.watch(svc.connection, self.ident,
                                         self.context.guard(self._on_instance))
        self.log.info('%s published as %s, VRM instance %d%s', self.product, self.servicename,
                      instance, ', direction from the VE.Bus device' if self.direction else '')
        if self.context.on_start is not None:
            self.context.on_start(self)
        self.context.on_change(True)

    @property
    def product(self):
        if len(self.phases) == 1:
            return self.model.name
        return '%s %d-phase' % (self.model.name, len(self.phases))

    def _on_instance(self, role, instance):
        # The GUI's VRM-instances page changed it: consumers read /DeviceInstance once, so
        # re-register rather than change it in place.
        if self.service is not None and role == self.role and \
                instance != self.service['/DeviceInstance']:
            self.log.info('VRM instance changed to %d, re-registering', instance)
            self.context.instances.schedule(self._restart)

    def _add_paths(self, svc, instance):
        role = self.role
        spec = self.spec
        svc.add_path('/Mgmt/ProcessName', 'dbus-pzem')
        svc.add_path('/Mgmt/ProcessVersion', self.context.version)
        svc.add_path('/Mgmt/Connection', 'Modbus RTU %s:%s' % (
            self.port, ','.join(str(m.address) for _, m in self.phases)))
        svc.add_path('/DeviceInstance', instance)
        svc.add_path('/ProductId', PRODUCT_ID, text='0x{:04X}')
        svc.add_path('/ProductName', self.product)
        svc.add_path('/FirmwareVersion', None)
        svc.add_path('/HardwareVersion', None)
        svc.add_path('/Serial', self.ident)
        svc.add_path('/Pzem/Port', port_ident(self.port))   # its port's service (port_service)
        svc.add_path('/Connected', 0)
        svc.add_path('/CustomName', spec.name or '', writeable=True, on_change=self._on_name)
        svc.add_path('/Role', role, writeable=True, on_change=self._on_role)
        svc.add_path('/AllowedRoles', list(roles.FAMILY_ROLES[self.family]))
        if role in roles.POSITIONS:
            svc.add_path('/Position', self._position(spec), writeable=True,
                         on_change=self._on_position)
        if role in roles.MONITOR_MODES:
            svc.add_path('/Settings/MonitorMode', self._monitor_mode(spec))
        if roles.is_generic_meter(role):
            svc.add_path('/IsGenericEnergyMeter', 1)
        for path in list(ERROR_PATHS.values()) + [ENERGY_DROPPED]:
            svc.add_path(path, 0)

        self._paths = []
        for index, (phase, _) in enumerate(self.phases):
            for f in self.model.fields:
                if f.path:
                    path = f.path.format(phase=phase, energy=ENERGY_DIRECTION.get(role, 'In'))
                    svc.add_path(path, None, text=f.text)
                    self._paths.append((path, index, f))
            if self.family == 'ac':
                svc.add_path('/Ac/%s/Energy/Reverse' % phase, None, text='{:.3f} kWh')
        if self.family == 'ac':
            svc.add_path('/NrOfPhases', len(self.phases))
            svc.add_path('/Ac/Power', None, text='{:.1f} W')
            svc.add_path('/Ac/Energy/Forward', None, text='{:.3f} kWh')
            svc.add_path('/Ac/Energy/Reverse', None, text='{:.3f} kWh')
            svc.add_path('/Ac/Frequency', None, text='{:.1f} Hz')
            svc.add_path('/Ac/PowerFactor', None, text='{:.2f}')

    def _position(self, spec):
        role = spec.role_for(self.family)
        return roles.DEFAULT_POSITION[role] if spec.position is None else spec.position

    def _monitor_mode(self, spec):
        role = spec.role_for(self.family)
        return roles.DEFAULT_MONITOR_MODE[role] if spec.monitor_mode is None else spec.monitor_mode

    # -- polling and publishing ------------------------------------------------------------------

    def poll(self, bus, retry_until=None, started=None):
        """Read every phase (one sweep, so totals match) and publish; a failed read is asked
        again at once while the clock is not past retry_until() (a callable: it is only asked
        when a read failed). `started`: when the poll began. Returns True when a phase that is
        still connected missed this poll: worth another try soon. Raises modbus.PortGone."""
        fresh = False
        failed = None
        for phase, meter in self.phases:
            if not meter.attempt(bus, self._sign(phase), False, started):
                failed = (failed or []) + [(phase, meter)]
            fresh = fresh or meter.fresh
        if failed is not None:
            failed = self._retry(bus, failed, retry_until() if retry_until else None)
        if self.direction is not None or self.service is None:
            self.update()       # a sign may flip with the same readings; a retry may be due
        elif fresh:
            self._publish(self._unsigned)
        else:       # nothing new: most polls of a steady meter
            self._save_energy()
        return failed is not None and any(meter.connected for _, meter in failed)

    def _retry(self, bus, failed, retry_until):
        """Ask the phases whose read failed again while there is time; a phase still without
        a good reading has missed this poll. Returns those phases."""
        clock = self.context.clock
        while failed and retry_until is not None and clock() <= retry_until:
            failed = [(phase, meter) for phase, meter in failed
                      if not meter.attempt(bus, self._sign(phase), again=True)]
        for _, meter in failed:
            meter.missed()
        return failed

    def _sign(self, phase):
        return self.direction.sign(phase) if self.direction is not None else 1

    def signs(self):
        if self.direction is None:
            return self._unsigned
        return tuple(self.direction.sign(phase) for phase, _ in self.phases)

    def update(self, force=False):
        """Publish the phases' current readings in one ItemsChanged (only what changed)."""
        svc = self.service
        if svc is None:     # re-registering failed: try again now and then
            if self._retry_at is not None and self.context.clock() >= self._retry_at:
                self._retry_at = None
                self.context.instances.schedule(self._restart)     # from the main loop
            return
        signs = self.signs()
        direction = self.direction
        if direction is not None and direction.ready and direction.service != self._followed:
            self._followed = direction.service
            self.log.info('direction from %s', direction.describe())
        if not force and signs == self._signs and not any(m.fresh for _, m in self.phases):
            self._save_energy()     # what changed a while ago may be due now
            return
        self._publish(signs)

    def _publish(self, signs):
        """The readings, with power and current signed by `signs`, in one ItemsChanged."""
        self._signs = signs
        meters = []
        readings = []
        answering = 0   # phases answering: a change is news for the port's service
        tally = 0       # all error counts and dropped counts: the error paths move with it
        for _, meter in self.phases:
            meters.append(meter)
            readings.append(meter.reading)
            if meter.connected:
                answering += 1
            tally += sum(meter.errors.values()) + (meter.energy.dropped if meter.energy else 0)
        if answering != self._answering:
            self._answering = answering
            self.context.on_change(True)
        values = {'/Connected': 1 if answering else 0}
        for path, index, f in self._paths:
            reading = readings[index]
            if f.kind == 'counter':
                energy = meters[index].energy
                values[path] = _kwh(energy.forward if energy else None)
            elif reading is None:
                values[path] = None
            elif f.kind == 'alarm':
                values[path] = ALARM_LEVEL.get(reading[f.name], 2)
            elif f.kind == 'signed' and signs[index] < 0:
                values[path] = -reading[f.name]
            else:
                values[path] = reading[f.name]
        if self.family == 'ac':
            self._ac_totals(values, readings, signs)
        if tally != self._tally:
            self._tally = tally
            for kind in ERROR_KINDS:
                values[ERROR_PATHS[kind]] = sum(m.errors[kind] for m in meters)
            values[ENERGY_DROPPED] = sum(m.energy.dropped for m in meters if m.energy)
            self.context.on_change(False)
        self.service.update(values)
        self._save_energy()

    def _ac_totals(self, values, readings, signs):
        signed = self.spec.sign is not None
        # Without a direction, export is unknown (invalid), except where there is none.
        unsigned_reverse = 0.0 if self.role in roles.NO_EXPORT else None
        forwards, reverses = [], []
        for (phase, meter) in self.phases:
            energy = meter.energy
            reverse = None if energy is None else energy.reverse if signed else unsigned_reverse
            values['/Ac/%s/Energy/Reverse' % phase] = _kwh(reverse)
            forwards.append(energy.forward if energy else None)
            reverses.append(reverse)
        values['/Ac/Energy/Forward'] = _kwh(None if None in forwards else sum(forwards))
        values['/Ac/Energy/Reverse'] = _kwh(None if None in reverses else sum(reverses))
        if None not in readings:
            readings = [dict(r, power=-r['power'], current=-r['current']) if sign < 0 else r
                        for r, sign in zip(readings, signs)]
        totals = models.phase_totals(readings)
        if totals is None:
            for path in ('/Ac/Power', '/Ac/Frequency', '/Ac/PowerFactor'):
                values[path] = None
            return
        values['/Ac/Power'] = round(totals['power'], 1)
        values['/Ac/Frequency'] = readings[0]['frequency']
        values['/Ac/PowerFactor'] = totals['power_factor']

    def _save_energy(self):
        if self.store is not None and self.store.due():
            self.store.maybe_save(self._energies())

    def _energies(self):
        return {phase: meter.energy for phase, meter in self.phases if meter.energy is not None}

    # -- changes from the GUI and from the map -------------------------------------------------

    def _write_map(self, changes):
        from . import map_update    # here: the driver loads it only when it writes the map
        sections = self.spec.sections or ('%s:%d' % (self.port, self.spec.address),)
        try:
            map_update.update_many(self.context.map_path, {s: changes for s in sections})
        except map_update.MapWriteError as e:
            self.log.error('change refused, the map could not be written: %s', e)
            return False
        self.spec = self.spec._replace(sections=sections)
        return True

    def _on_name(self, path, value):
        if not isinstance(value, str) or len(value) > MAX_NAME:
            return False
        if not self._write_map({'name': value or None}):
            return False
        self.spec = self.spec._replace(name=value or None)
        self.log.info('name set to %r', value)
        self.context.on_change(True)
        return True

    def _on_position(self, path, value):
        if not isinstance(value, int) or value not in roles.POSITIONS[self.role]:
            return False
        if not self._write_map({'position': value}):
            return False
        self.spec = self.spec._replace(position=value)
        return True

    def _on_role(self, path, value):
        if not isinstance(value, str):
            return False
        new = value.strip().lower()
        if new not in roles.FAMILY_ROLES[self.family]:
            return False
        if new == self.role:
            return True
        spec = self.spec
        position = spec.position if new in roles.POSITIONS else None
        if position is not None and position not in roles.POSITIONS[new]:
            position = None
        mode = spec.monitor_mode
        if new not in roles.MONITOR_MODES or mode not in roles.MONITOR_MODES[new].values():
            mode = None
        changes = {'role': new, 'position': position, 'monitor_mode': mode}
        if not self._write_map(changes):
            return False
        self.apply(self.spec._replace(role=new, position=position, monitor_mode=mode))
        return True

    def apply(self, spec):
        """Follow a new spec for the same meter (from the GUI or an edited map): paths in place,
        or re-registration when the role (the service name) changes."""
        old, self.spec = self.spec, spec
        if spec == old:
            return
        if spec.role_for(self.family) != old.role_for(self.family):
            self.log.info('role %s -> %s, re-registering', old.role_for(self.family), self.role)
            self.context.instances.schedule(self._restart)
            return
        if (spec.sign, spec.vebus) != (old.sign, old.vebus):
            self.direction = self.context.directions(spec) \
                if self.context.directions and spec.sign else None
            self._followed = ()
            if self.direction is None:
                self.log.info('no direction: power and energy as measured, all import')
        svc = self.service
        if svc is None:
            return
        with svc:
            svc['/CustomName'] = spec.name or ''
            if '/Position' in svc:
                svc['/Position'] = self._position(spec)
            if '/Settings/MonitorMode' in svc:
                svc['/Settings/MonitorMode'] = self._monitor_mode(spec)
        self.update(force=True)

    def _restart(self):
        self.close(final=False)
        try:
            self._start()
            self._retry_at = None
        except Exception as e:      # D-Bus trouble: keep polling, try again later
            self.close(final=False)
            self._retry_at = self.context.clock() + RETRY_SECONDS
            self.log.error('could not re-register (%s); trying again in %ds', e, RETRY_SECONDS)

    def close(self, final=True):
        """Take the service off the bus; `final` (the meter goes for good, or the driver
        stops) also saves the energy totals now."""
        if final and self.store is not None:
            self.store.save_now(self._energies())
        if self._watch is not None:
            self._watch.remove()
            self._watch = None
        if self.service is not None:
            self.service.close()
            self.service = None


def _kwh(value):
    return None if value is None else round(value, 3)


class Instances(object):
    """VRM instances from localsettings (kept in step with the role), or a stable fallback."""

    def __init__(self, schedule, timeout=3.0):
        self.schedule = schedule    # run a callable soon, from the main loop
        self.timeout = timeout
        self.online = None          # unknown until the first claim

    def claim(self, service, ident, role):
        """The VRM instance for `ident` in `role`; the map's role wins over a stored class."""
        if self.online is not False:
            got = settings.claim(service.connection, ident, role, timeout=self.timeout)
            if got is not None:
                self.online = True
                stored_role, instance = got
                if stored_role != role:
                    moved = settings.change_role(service.connection, ident, role, instance,
                                                 timeout=self.timeout)
                    instance = moved[1] if moved else instance
                return instance
            if self.online is None:
                logging.getLogger('pzem').warning(
                    'localsettings (com.victronenergy.settings) did not answer: using fallback '
                    'VRM instances; restart the driver once it runs')
            self.online = False
        return settings.fallback_instance(ident)
