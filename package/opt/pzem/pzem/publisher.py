"""One D-Bus service for one meter, or for a group of phase meters published as one meter.

The role decides the service type and the paths; the map file is the source of truth for role,
position and name, so a change from the GUI is written there first and refused if that fails.
"""
import logging
import re
import time

from . import map_update, roles, settings
from .busitem import BusItemService

PRODUCT_ID = 0xFFFF     # no Victron-assigned id; 0xFFFF is velib's "unknown product"
MAX_NAME = 32           # the GUI's CustomName limit
ENERGY_DIRECTION = {'dcsource': 'Out', 'dcload': 'In', 'dcsystem': 'In'}
ALARM_LEVEL = {0: 0, 0xFFFF: 2}
RETRY_SECONDS = 10
ERROR_PATHS = {'no_reply': '/Pzem/Errors/NoReply', 'bad_frame': '/Pzem/Errors/BadFrame',
               'exception': '/Pzem/Errors/Exception', 'implausible': '/Pzem/Errors/Implausible'}

log = logging.getLogger('pzem')


def ident_for(port, address):
    """Settings id and service-name suffix: pzem_<tty>_<address>, only [A-Za-z0-9_]."""
    return 'pzem_%s_%d' % (re.sub('[^A-Za-z0-9_]', '_', port), address)


class Place(object):
    """What the map says about a published meter: role, position, name, monitor mode."""

    def __init__(self, role, position=None, name=None, monitor_mode=None, sections=()):
        self.role = role
        self.position = position
        self.name = name
        self.monitor_mode = monitor_mode
        self.sections = list(sections)


class Publisher(object):
    def __init__(self, port, phases, place, map_path, version, instances):
        """phases: [(phase name, Meter)], one for a single meter ('L1'), two or three for a group."""
        self.port = port
        self.phases = phases
        self.model = phases[0][1].model
        self.place = place
        self.map_path = map_path
        self.version = version
        self.instances = instances
        self.ident = ident_for(port, min(m.address for _, m in phases))
        self.service = None
        self.clock = time.monotonic
        self._retry_at = None
        self._watch = None
        self._publish = []      # (path, phase index, field, is alarm), made once per role
        self._start()

    @property
    def family(self):
        return self.model.family

    @property
    def servicename(self):
        return 'com.victronenergy.%s.%s' % (self.place.role, self.ident)

    # -- building the service ------------------------------------------------------------------

    def _start(self):
        svc = BusItemService(self.servicename)
        try:
            instance = self.instances.claim(svc, self.ident, self.place.role)
            self._add_paths(svc, instance)
            self.service = svc
            self.update()
            svc.register()
        except Exception:
            self.service = None
            svc.close()
            raise
        if self.instances.online:
            self._watch = settings.watch(svc.connection, self.ident, self._on_instance)
        log.info('%s published as %s, VRM instance %d', self.label, self.servicename, instance)

    def _on_instance(self, role, instance):
        # The GUI's VRM-instances page changed it: consumers read /DeviceInstance once, so
        # re-register rather than change it in place.
        if self.service is not None and role == self.place.role and \
                instance != self.service['/DeviceInstance']:
            log.info('%s: VRM instance changed to %d, re-registering', self.label, instance)
            self.instances.schedule(self._restart)

    def _add_paths(self, svc, instance):
        role = self.place.role
        addresses = ','.join(str(m.address) for _, m in self.phases)
        product = self.model.name if len(self.phases) == 1 else '%s %d-phase' % (
            self.model.name, len(self.phases))
        svc.add_path('/Mgmt/ProcessName', 'dbus-pzem')
        svc.add_path('/Mgmt/ProcessVersion', self.version)
        svc.add_path('/Mgmt/Connection', 'Modbus RTU %s:%s' % (self.port, addresses))
        svc.add_path('/DeviceInstance', instance)
        svc.add_path('/ProductId', PRODUCT_ID, text='0x{:04X}')
        svc.add_path('/ProductName', product)
        svc.add_path('/FirmwareVersion', None)
        svc.add_path('/HardwareVersion', None)
        svc.add_path('/Serial', self.ident)
        svc.add_path('/Connected', 0)
        svc.add_path('/CustomName', self.place.name or '', writeable=True,
                     on_change=self._on_name)
        svc.add_path('/Role', role, writeable=True, on_change=self._on_role)
        svc.add_path('/AllowedRoles', list(roles.FAMILY_ROLES[self.family]))
        if role in roles.POSITIONS:
            position = self.place.position
            if position is None:
                position = roles.DEFAULT_POSITION[role]
            svc.add_path('/Position', position, writeable=True, on_change=self._on_position)
        if role in roles.MONITOR_MODES:
            mode = self.place.monitor_mode
            svc.add_path('/Settings/MonitorMode',
                         roles.DEFAULT_MONITOR_MODE[role] if mode is None else mode)
        for path in ERROR_PATHS.values():
            svc.add_path(path, 0)

        self._publish = []
        for index, (phase, _) in enumerate(self.phases):
            for f in self.model.fields:
                if f.path:
                    path = f.path.format(phase=phase, energy=ENERGY_DIRECTION.get(role, 'In'))
                    svc.add_path(path, None, text=f.text)
                    self._publish.append((path, index, f.name, f.divisor is None))
        if self.family == 'ac':
            svc.add_path('/NrOfPhases', len(self.phases))
            svc.add_path('/Ac/Power', None, text='{:.1f} W')
            svc.add_path('/Ac/Energy/Forward', None, text='{:.3f} kWh')
            svc.add_path('/Ac/Energy/Reverse', None, text='{:.3f} kWh')    # a PZEM cannot tell
            svc.add_path('/Ac/Frequency', None, text='{:.1f} Hz')
            svc.add_path('/Ac/PowerFactor', None, text='{:.2f}')

    # -- publishing one poll ---------------------------------------------------------------------

    @property
    def label(self):
        return 'PZEM %s:%s' % (self.port, ','.join(str(m.address) for _, m in self.phases))

    def update(self):
        """Publish the phases' current readings in one ItemsChanged (only what changed)."""
        svc = self.service
        if svc is None:     # re-registering failed: try again now and then
            if self._retry_at is not None and self.clock() >= self._retry_at:
                self._restart()
            return
        readings = [m.reading for _, m in self.phases]
        with svc:
            svc['/Connected'] = 1 if any(m.connected for _, m in self.phases) else 0
            for path, index, name, alarm in self._publish:
                reading = readings[index]
                if reading is None:
                    svc[path] = None
                else:
                    value = reading[name]
                    svc[path] = ALARM_LEVEL.get(value, 2) if alarm else value
            if self.family == 'ac':
                self._update_totals(svc, readings)
            for kind, path in ERROR_PATHS.items():
                svc[path] = sum(m.errors[kind] for _, m in self.phases)

    @staticmethod
    def _update_totals(svc, readings):
        # Totals only from a complete set: never the sum of the phases that happen to answer.
        if None in readings:
            for path in ('/Ac/Power', '/Ac/Energy/Forward', '/Ac/Frequency', '/Ac/PowerFactor'):
                svc[path] = None
            return
        power = sum(r['power'] for r in readings)
        apparent = sum(r['voltage'] * r['current'] for r in readings)
        svc['/Ac/Power'] = round(power, 1)
        svc['/Ac/Energy/Forward'] = round(sum(r['energy'] for r in readings), 3)
        svc['/Ac/Frequency'] = readings[0]['frequency']
        if len(readings) == 1:
            svc['/Ac/PowerFactor'] = readings[0]['power_factor']
        else:
            svc['/Ac/PowerFactor'] = round(min(power / apparent, 1.0), 2) if apparent else None

    # -- changes from the GUI ----------------------------------------------------------------------

    def _write_map(self, changes):
        sections = self.place.sections or ['%s:%d' % (self.port, self.phases[0][1].address)]
        try:
            map_update.update_many(self.map_path, {s: changes for s in sections})
        except map_update.MapWriteError as e:
            log.error('%s: change refused, the map could not be written: %s', self.label, e)
            return False
        self.place.sections = sections
        return True

    def _on_name(self, path, value):
        if not isinstance(value, str) or len(value) > MAX_NAME:
            return False
        if not self._write_map({'name': value or None}):
            return False
        self.place.name = value
        log.info('%s: name set to %r', self.label, value)
        return True

    def _on_position(self, path, value):
        if not isinstance(value, int) or value not in roles.POSITIONS[self.place.role]:
            return False
        if not self._write_map({'position': value}):
            return False
        self.place.position = value
        return True

    def _on_role(self, path, value):
        if not isinstance(value, str):
            return False
        new = value.strip().lower()
        if new not in roles.FAMILY_ROLES[self.family]:
            return False
        if new == self.place.role:
            return True
        position = self.place.position if new in roles.POSITIONS else None
        if position is not None and position not in roles.POSITIONS[new]:
            position = None
        mode = self.place.monitor_mode
        if new not in roles.MONITOR_MODES or mode not in roles.MONITOR_MODES[new].values():
            mode = None
        changes = {'role': new, 'position': position, 'monitor_mode': mode}
        if not self._write_map(changes):
            return False
        old = self.servicename
        self.place.role, self.place.position, self.place.monitor_mode = new, position, mode
        log.info('%s: role %s -> %s, re-registering', self.label, old.split('.')[2], new)
        self.instances.schedule(self._restart)
        return True

    def _restart(self):
        self.close()
        try:
            self._start()
            self._retry_at = None
        except Exception as e:      # D-Bus trouble: keep polling, try again later
            self.close()
            self._retry_at = self.clock() + RETRY_SECONDS
            log.error('%s: could not re-register (%s); trying again in %ds', self.label, e,
                      RETRY_SECONDS)

    def close(self):
        if self._watch is not None:
            self._watch.remove()
            self._watch = None
        if self.service is not None:
            self.service.close()
            self.service = None


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
                log.warning('localsettings (com.victronenergy.settings) did not answer: using '
                            'fallback VRM instances; restart the driver once it runs')
            self.online = False
        return settings.fallback_instance(ident)
