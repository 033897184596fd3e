"""monitor: a live table of the meters on the port, refreshed in place on a terminal.

The meters come from the map's sections for this port (a group with phases is one row with its
totals, then a row per phase), or from a quick scan. ROLE is the role the driver will publish the
meter in: the map's, else its family's default; a map role that does not fit the meter's family
is shown as "<role>!" with a warning under the table, as the driver refuses to publish it.
Without a terminal, or with --count, each refresh is a plain snapshot.
"""
import sys
import time

from .. import meter_map, modbus, models, roles
from .console import Failure, note, say
from .readings import alarms_on, read_meter, trouble
from .scan import span, sweep

COLUMNS = ('ADDR', 'METER', 'ROLE', 'NAME', 'VOLTAGE', 'CURRENT', 'POWER', 'ENERGY', 'FREQ',
           'PF', 'ALARM')
HOME, CLEAR_LINE, CLEAR_REST, CLEAR_SCREEN = '\x1b[H', '\x1b[K', '\x1b[J', '\x1b[2J'


class Watched(object):
    """One meter on the table; its model is detected at its first answer unless the map says it."""

    def __init__(self, address, role=None, name=None, model=None, phase=None):
        self.address = address
        self.role = role
        self.name = name or ''
        self.model = models.MODELS.get(model) if model else None
        self.phase = phase
        self.values = None
        self.error = None

    def read(self, bus):
        try:
            self.model, self.values = read_meter(bus, self.address, self.model)
            self.error = None
        except modbus.PortGone:
            raise
        except modbus.ModbusError as e:
            self.values = None
            self.error = trouble(e)


class Group(object):
    def __init__(self, name, phases, role=None, title=None):
        self.name = name
        self.phases = phases
        self.role = role
        self.title = title or ''


def driver_role(role, model):
    """(what ROLE shows, a warning or None): the role the driver will use for this meter."""
    if model is None:
        return role or '', None
    if role is None:
        return roles.DEFAULT_ROLE[model.family], None
    if roles.family_of(role) != model.family:
        return role + '!', ('role %s does not fit a %s (%s): the driver will not publish it; '
                            'use one of %s' % (role, model.name, model.family.upper(),
                                               ', '.join(roles.FAMILY_ROLES[model.family])))
    return role, None


def watched_from_map(port, path):
    """[Watched or Group] from the map's sections for this port ([] when there are none)."""
    the_map = meter_map.load(path)
    if the_map.problems:
        note('the map %s has %d problem(s): "pzemctl check-config %s" lists them'
             % (path, len(the_map.problems), path))
    rows = []
    for spec in the_map.meters_for(port.name):
        if spec.group:
            rows.append(Group(spec.group, [Watched(a, spec.role, spec.name, spec.model, phase)
                                           for phase, a in spec.phases], spec.role, spec.name))
        else:
            rows.append(Watched(spec.address, spec.role, spec.name, spec.model))
    return rows


def cells(w, addr=None, role=None, name=None):
    """The table cells of one meter (or one phase of a group)."""
    model = w.model
    role = role if role is not None else driver_role(w.role, model)[0]
    head = [addr or str(w.address), model.name if model else '?', role,
            w.name if name is None else name]
    if w.values is None:
        return head + [w.error or 'not read yet'] + [''] * 6
    v = w.values
    texts = dict((f.name, f.text.format(v[f.name])) for f in model.fields if f.kind != 'alarm')
    alarms = [a.replace(' alarm', '') for a in alarms_on(model, v)]
    return head + [texts['voltage'], texts['current'], texts['power'], texts['energy'],
                   texts.get('frequency', ''), texts.get('power_factor', ''),
                   ','.join(alarms) or '-']


def group_rows(group):
    phases = group.phases
    complete = all(w.values is not None for w in phases)
    model = next((w.model for w in phases if w.model), models.AC)
    head = [','.join(str(w.address) for w in phases), '%s %d-phase' % (model.name, len(phases)),
            driver_role(group.role, model)[0], group.title or group.name]
    if complete:
        totals = models.phase_totals([w.values for w in phases])
        energy = sum(w.values['energy'] for w in phases)
        total = ['', '', '%.1f W' % totals['power'], '%.3f kWh' % energy, '', '',
                 '' if totals['power_factor'] is None else '%.2f' % totals['power_factor']]
    else:
        missing = [w.phase or str(w.address) for w in phases if w.values is None]
        total = ['%s missing' % ','.join(missing), '', '', '', '', '', '']
    rows = [head + total]
    for w in phases:
        rows.append(cells(w, addr='  %s %d' % (w.phase or '?', w.address), role='', name=''))
    return rows


def table(watched):
    rows = [list(COLUMNS)]
    for w in watched:
        rows += group_rows(w) if isinstance(w, Group) else [cells(w)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = ['  '.join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip() for r in rows]
    return lines + warnings(watched)


def warnings(watched):
    """'! ADDR: role ... does not fit ...' for each meter the driver will refuse."""
    found = []
    for w in watched:
        if isinstance(w, Group):
            model = next((m.model for m in w.phases if m.model), None)
            where = ','.join(str(m.address) for m in w.phases)
        else:
            model, where = w.model, str(w.address)
        warning = driver_role(w.role, model)[1]
        if warning:
            found.append('! %s: %s' % (where, warning))
    return [''] + found if found else []


def monitor(port, args):
    watched = [] if args.scan else watched_from_map(port, args.config)
    if not watched:
        if not args.scan:
            note('no meters for %s in the map %s: scanning' % (port.name, args.config))
        found = sweep(port, args.addresses).answering
        if not found:
            raise Failure('no meter answers on %s at any address %s'
                          % (port.name, span(args.addresses)))
        watched = [Watched(a) for a in found]
    live = sys.stdout.isatty() and args.count is None
    if live:
        sys.stdout.write(CLEAR_SCREEN)
    shown = 0
    with port.bus() as bus:
        try:
            while True:
                started = time.monotonic()
                for w in watched:
                    for meter in (w.phases if isinstance(w, Group) else [w]):
                        meter.read(bus)
                shown += 1
                title = '%s  %s  refresh %d' % (port.name, time.strftime('%H:%M:%S'), shown)
                lines = [title, ''] + table(watched)
                if live:
                    sys.stdout.write(HOME + ''.join(l + CLEAR_LINE + '\n' for l in lines)
                                     + CLEAR_REST)
                    sys.stdout.flush()
                else:
                    say('\n'.join(lines) + '\n')
                if args.count is not None and shown >= args.count:
                    return
                time.sleep(max(0.0, args.interval - (time.monotonic() - started)))
        except KeyboardInterrupt:
            return
