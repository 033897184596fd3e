"""monitor: a live table of the meters on the port, refreshed in place on a terminal.

The meters come from the map's sections for this port (a group with phases is one row with its
totals, then a row per phase), or from a quick scan. ROLE is the role the driver will publish the
meter in: the map's, else its family's default; a map role that does not fit the meter's family
is shown as "<role>!" with a warning under the table, as the driver refuses to publish it.
The table fits the terminal's width (monitor_table); on a live screen, lines that do not fit
its height are counted in a last line. Without a terminal, or with --count, each refresh is a
plain snapshot.
"""
import os
import sys
import time

from .. import meter_map, modbus, models, roles
from . import monitor_table
from .console import Failure, note, say
from .monitor_table import Row
from .readings import alarms_on, read_meter, trouble
from .scan import span, sweep

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


def meter_row(w, addr=None, role=None, name=None):
    """The table row of one meter (or one phase of a group)."""
    model = w.model
    role = role if role is not None else driver_role(w.role, model)[0]
    head = dict(addr=addr or str(w.address), model=model, phases=1, role=role,
                name=w.name if name is None else name)
    if w.values is None:
        return Row(numbers={}, alarms=None, error=w.error or 'not read yet', **head)
    v = w.values
    numbers = dict((f.name, f.text.format(v[f.name]).split(' ')[0]) for f in model.fields
                   if f.kind != 'alarm')
    alarms = [a.replace(' alarm', '') for a in alarms_on(model, v)] or ['-']
    return Row(numbers=numbers, alarms=alarms, error=None, **head)


def group_rows(group):
    phases = group.phases
    model = next((w.model for w in phases if w.model), models.AC)
    head = dict(addr=','.join(str(w.address) for w in phases), model=model, phases=len(phases),
                role=driver_role(group.role, model)[0], name=group.title or group.name)
    if all(w.values is not None for w in phases):
        totals = models.phase_totals([w.values for w in phases])
        numbers = {'power': '%.1f' % totals['power'],
                   'energy': '%.3f' % sum(w.values['energy'] for w in phases)}
        if totals['power_factor'] is not None:
            numbers['power_factor'] = '%.2f' % totals['power_factor']
        first = Row(numbers=numbers, alarms=None, error=None, **head)
    else:
        missing = [w.phase or str(w.address) for w in phases if w.values is None]
        first = Row(numbers={}, alarms=None, error='%s missing' % ','.join(missing), **head)
    return [first] + [meter_row(w, addr='  %s %d' % (w.phase or '?', w.address), role='',
                                name='') for w in phases]


def table(watched, width=0):
    """The table's lines for a terminal `width` columns wide (0: no limit)."""
    rows = []
    for w in watched:
        rows += group_rows(w) if isinstance(w, Group) else [meter_row(w)]
    return monitor_table.render(rows, warnings(watched), width)


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
    return found


def terminal_size():
    """(columns, rows) of the terminal stdout is on; (0, 0) when it is none (no limit)."""
    try:
        size = os.get_terminal_size(sys.stdout.fileno())
    except (OSError, ValueError):
        return 0, 0
    return size.columns, size.lines


def fit_height(lines, rows):
    """`lines` cut to a screen of `rows` lines, the last one saying how many did not fit."""
    if not rows or len(lines) < rows:
        return lines
    hidden = len(lines) - (rows - 2)
    return lines[:rows - 2] + ['(%d more line(s): a taller terminal shows them)' % hidden]


def monitor(port, args):
    watched = [] if args.scan else watched_from_map(port, port.config)
    if not watched:
        if not args.scan:
            if os.path.lexists(port.config):
                note('no meters for %s in the map %s: scanning' % (port.name, port.config))
            else:
                note('the map %s does not exist: scanning' % port.config)
        found = sweep(port, args.addresses)
        if not found.answering:
            raise Failure('no meter answers on %s at any address %s'
                          % (port.name, span(args.addresses)))
        watched = [Watched(a) for a in found.answering]
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
                columns, rows = terminal_size()
                title = '%s  %s  refresh %d' % (port.name, time.strftime('%H:%M:%S'), shown)
                lines = [title, ''] + table(watched, columns)
                if live:
                    lines = fit_height(lines, rows)
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
