"""The meter map, /data/conf/pzem.conf: which meter answers at which Modbus address, in which role.

load() returns a MeterMap; MeterMap.meters_for(port) gives one MeterSpec per meter to publish on
that port: a single PZEM, or a phase group of PZEM-016 published as one meter. Everything that
uses the map (the driver, its poller and publisher, pzemctl) works from MeterSpecs; the map's
syntax is map_syntax's, writing it back is map_update's.

Reading never raises. Every problem becomes one line "FILE:LINE: [section] key 'x': message" in
MeterMap.problems; a meter section with a bad value is left out as a whole (a role is never
guessed): its meter gets the safe default role of its detected family, like a meter the map does
not name, and nothing else from the section. The rest of the map works. What is not a problem but
may surprise (a '#' that ended a name early) is a note in MeterMap.notes. Resolution rules:
- `[N]` applies on every port, `[PORT:N]` on that port only, where it replaces `[N]` as a
  whole. `[bus]` and `[bus:PORT]` hold serial settings; `[bus:PORT]` overrides them key by key.
- A meter section without a role gets the detected model's default role (role None).
- Sections sharing a `group` (each with its `phase`) are one meter: role, position, name and sign
  given once or the same in every section; all on one port; PZEM-016 only.
- A section that is present but left out still hides a plain `[N]` on its port.
- `[gateway:NAME]` declares an RS-485 network gateway (host, port, kind): NAME is its port name,
  so `[NAME:N]` and `[bus:NAME]` are its meters' and its wire's sections. MeterMap.gateways()
  lists them for the installer, which makes one driver service per gateway.
"""
import collections
import errno
import os
import re
import stat
from collections import namedtuple

from . import map_syntax, roles, tty
from .map_syntax import Bad, Changed, show

DEFAULT_PATH = '/data/conf/pzem.conf'
MODBUS_TCP_PORT = 502   # a Modbus TCP gateway's port unless the map says otherwise


_SPEC_FIELDS = ('phases', 'role', 'position', 'name', 'monitor_mode', 'model', 'sign', 'vebus',
                'group', 'sections', 'line')


class MeterSpec(namedtuple('MeterSpec', _SPEC_FIELDS,
                           defaults=(None,) * 8 + ((), 0))):
    """What the map says about one published meter: a single PZEM or a phase group. Immutable;
    `spec._replace(name=...)` makes a changed copy. (A namedtuple, not a dataclass: dataclasses
    pulls in inspect and ast, about 1.3 MB of the driver's memory.)

    phases        ((phase, address), ...); ('L1', address) for a single meter
    role          canonical; None = the detected model's default role
    position, name, monitor_mode
    model         'ac' or 'dc' when the map overrides auto-detection
    sign          'vebus': direction from the VE.Bus device's AC input
    vebus         that device's VRM instance (None: the lowest)
    group         the group's name, for a phase group
    sections      the headers as written, e.g. ('ttyUSB0:1',)
    line          line of the first section's header
    """
    __slots__ = ()

    @classmethod
    def single(cls, address, **values):
        return cls((('L1', address),), **values)

    @property
    def addresses(self):
        return tuple(address for _, address in self.phases)

    @property
    def address(self):
        """The lowest address: it names the published meter (service name, settings id)."""
        return min(self.addresses)

    def role_for(self, family):
        return self.role or roles.DEFAULT_ROLE[family]

    def fits(self, family):
        """False when the map gives a role of the other family (the driver does not publish)."""
        return self.role is None or roles.family_of(self.role) == family


class GatewaySpec(namedtuple('GatewaySpec', ('name', 'kind', 'host', 'port', 'line'))):
    """A gateway the map declares: its name (the port name of its meters), kind ('tcp':
    transparent, 'mbtcp': Modbus TCP to RTU), host, TCP port and the line of its header."""
    __slots__ = ()

    @property
    def url(self):
        """What the driver is started with: tcp://HOST:PORT or mbtcp://HOST:PORT."""
        host = '[%s]' % self.host if ':' in self.host else self.host
        return '%s://%s:%d' % (self.kind, host, self.port)


class MeterMap:
    """A parsed map. Ports are bare tty names; a /dev path is accepted too."""

    def __init__(self, source):
        self.source = source
        self.readable = True    # False: the file exists but could not be read as a map
        self._found = []        # (line, problem line, whether something was left out)
        self._meters = {}       # (port or None, address) -> MeterSpec (default if left out)
        self._sections = {}     # (port or None, address) -> _Section, used or left out
        self._bus = {}          # port or None -> {key: value}
        self._notes = []        # (line, note)
        self._port_sections = []    # every readable section written for one port
        self._gateways = []     # GatewaySpec, in file order
        self.left_out = set()   # identities of sections that are present but not used

    @property
    def problems(self):
        """One line per problem, in file order: "FILE:LINE: [section] key 'x': message"."""
        return [text for _, text, _ in sorted(self._found, key=lambda found: found[0])]

    @property
    def notes(self):
        """What is read differently from what it may look like (not a problem), in file order."""
        return [text for _, text in sorted(self._notes, key=lambda note: note[0])]

    @property
    def broken(self):
        """True when something the file says is not used (a section left out, an unreadable
        file); False when every problem is only a warning (a name that was cut)."""
        return any(left_out for _, _, left_out in self._found)

    def meters_for(self, port):
        """The meters to publish on `port`, sorted by their (lowest) address."""
        port = tty.name(port)
        chosen = {a: s for (p, a), s in self._meters.items() if p is None}
        chosen.update((a, s) for (p, a), s in self._meters.items() if p == port)
        specs = {id(s): s for s in chosen.values() if s is not None}
        found = []
        for spec in specs.values():
            # a port-specific section replaces a plain one: it may take a group's member away
            phases = tuple(p for p in spec.phases if chosen.get(p[1]) is spec)
            found.append(spec if phases == spec.phases else spec._replace(
                phases=phases, sections=tuple(
                    h for h in spec.sections if map_syntax.section_ident(h)[2] in
                    dict(phases).values())))
        return sorted(found, key=lambda s: s.address)

    def specs(self):
        """Every meter the map describes, whatever port it applies on, in file order."""
        unique = {id(s): s for s in self._meters.values() if s is not None}
        return sorted(unique.values(), key=lambda s: s.line)

    def mentions(self, port, address):
        """True if a meter section for `address` applies on `port`, used or left out."""
        return self.section_for(port, address) is not None

    def section_for(self, port, address):
        """(header as written, line) of the meter section that applies to `address` on `port`
        (its own [PORT:N] first, else [N]), used or left out; None when no section names it."""
        port = tty.name(port)
        section = self._sections.get((port, address)) or self._sections.get((None, address))
        return None if section is None else (section.header, section.line)

    def ports(self):
        """{port: [(header, line), ...]} of every section written for one port."""
        found = collections.OrderedDict()
        for section in sorted(self._port_sections, key=lambda s: s.line):
            found.setdefault(section.ident[1], []).append((section.header, section.line))
        return found

    def shadowed(self):
        """[(port section, plain section, keys)] for each [PORT:N] that replaces an [N] on its
        port; each section as (header, line), `keys` those the plain section sets and the port
        section does not (they do not apply on that port)."""
        found = []
        for (port, address), section in sorted(self._sections.items(),
                                               key=lambda item: item[1].line):
            plain = self._sections.get((None, address)) if port is not None else None
            if plain is not None:
                keys = [k for k in plain.values if k not in section.values]
                found.append(((section.header, section.line), (plain.header, plain.line), keys))
        return found

    def gateways(self):
        """The gateways the map declares and that are fine, in file order."""
        return list(self._gateways)

    def bus_options(self, port):
        """Serial and scan settings given for `port`: only the keys that were set, parsed."""
        options = dict(self._bus.get(None, {}))
        options.update(self._bus.get(tty.name(port), {}))
        return options

    def _add(self, line, message, section=None, key=None, left_out=True):
        where = '%s:%d:' % (self.source, line) if line else '%s:' % self.source
        about = ''.join(('' if section is None else ' [%s]' % section,
                         '' if key is None else " key '%s':" % key))
        self._found.append((line, '%s%s %s' % (where, about, message), left_out))


class _Section:
    def __init__(self, header, line, ident):
        self.header = header    # text between the brackets, stripped
        self.line = line
        self.ident = ident      # ('meter', port, address) or ('bus', port); None if unreadable
        self.values = {}        # key -> (parsed value, line)
        self.ok = True
        self.skip = False       # a duplicate or unreadable header: its lines are not read


# -- reading -------------------------------------------------------------------------------------

def load(path=DEFAULT_PATH):
    """The map at `path`. A missing file is an empty map; an unreadable one, one problem."""
    try:
        data = _read_bounded(path)
    except FileNotFoundError:
        return MeterMap(path)
    except OSError as e:
        return _unreadable(path, 0, 'cannot read the map: %s' % (e.strerror or e))
    except Bad as e:
        return _unreadable(path, 0, str(e))
    try:
        text = map_syntax.decode(data)
    except Bad as e:
        return _unreadable(path, e.args[1], str(e.args[0]))
    return parse(text, path)


def _read_bounded(path):
    """The file's bytes; Bad for what is not a regular file of map size (a device such as
    /dev/zero would never end; opening a FIFO without O_NONBLOCK would block)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
        if not stat.S_ISREG(mode):
            raise Bad('not a regular file (a device, a pipe or a socket), so not a map')
        chunks, size = [], 0
        while size <= map_syntax.MAX_BYTES:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > map_syntax.MAX_BYTES:
        raise Bad('larger than %d KiB, so not a meter map' % (map_syntax.MAX_BYTES // 1024))
    return b''.join(chunks)


def check(path=DEFAULT_PATH):
    """Problems in the map at `path`, for `pzemctl check-config`. Unlike load(), a missing file
    is reported: whoever names a file to check expects it to exist."""
    if not os.path.lexists(path):
        return ["%s: no such file (without a map the driver publishes the meters it finds with "
                "roles that steer nothing)" % path]
    return load(path).problems


def parse(text, source='pzem.conf'):
    """The map in `text`; `source` names it in problem lines."""
    the_map = MeterMap(source)
    if text.startswith('\ufeff'):
        text = text[1:]
    sections = _read_sections(text.split('\n'), the_map)
    _resolve(sections, the_map)
    return the_map


def _unreadable(path, line, message):
    the_map = MeterMap(path)
    the_map.readable = False
    the_map._add(line, message + '; the map is not used')
    return the_map


def _read_sections(lines, the_map):
    sections, seen, current = [], {}, None
    for number, line in enumerate(lines, 1):
        if map_syntax.is_blank_or_comment(line):
            continue
        stripped = line.strip()
        if stripped[0] == '[':
            current = _start_section(stripped, number, seen, the_map)
            sections.append(current)
            continue
        split = map_syntax.split_key_line(line)
        if current is None:
            what = "key '%s'" % show(split[0], quote=False) if split else 'this line'
            the_map._add(number, '%s is outside any section, ignored; put it under a header such '
                         'as [1]' % what)
        elif current.skip:
            continue
        elif split is None:
            _fail(the_map, current, number, None, "%s is not 'key = value'" % show(stripped))
        else:
            _read_value(the_map, current, number, split[0], split[3], line[split[2]:])
    return sections


def _start_section(stripped, number, seen, the_map):
    match = map_syntax.HEADER.match(stripped)
    header = match.group(1).strip() if match else stripped
    try:
        if not match:
            raise Bad('%s is not a section header such as [1], [ttyUSB0:1], [bus] or '
                      '[bus:ttyUSB0]' % show(stripped))
        ident = map_syntax.section_ident(header)
    except Bad as e:
        shown = show(header, quote=False)
        the_map._add(number, '%s; section ignored' % e, shown if match else None)
        section = _Section(shown, number, None)
        section.skip = True
        return section
    section = _Section(header, number, ident)
    if ident in seen:
        first = seen[ident]
        the_map._add(number, 'the same section as [%s] on line %d; this one is ignored'
                     % (first.header, first.line), show(header, quote=False))
        section.skip = True
        return section
    seen[ident] = section
    if ident[0] == 'meter':
        the_map._sections[ident[1:]] = section
    if ident[1] is not None:
        the_map._port_sections.append(section)
    return section


def _read_value(the_map, section, number, key_as_written, text, after):
    """One 'key = value' line; `after` is what follows the value on the line (a comment)."""
    key = key_as_written.lower()
    kind = section.ident[0]
    known = {'meter': map_syntax.METER_KEYS, 'bus': map_syntax.BUS_KEYS,
             'gateway': map_syntax.GATEWAY_KEYS}[kind]
    if key not in known:
        shown = show(key_as_written, quote=False)
        the_map._add(number, 'unknown key, ignored%s; %s keys are %s' % (
            map_syntax.did_you_mean(key, known), kind, ', '.join(known)), section.header, shown,
            left_out=False)
        return
    if key in section.values:
        _fail(the_map, section, number, key, 'given twice (also on line %d)'
              % section.values[key][1])
        return
    if key == 'name' and _CUT_AT_COMMENT.match(after):
        the_map._notes.append((number, "[%s] (line %d): the name is %s: '%s' is a comment; to "
                               'keep it in the name, quote it: name = "%s%s"' % (
                                   section.header, number, show(text), show(after.strip(), False),
                                   text, after.rstrip())))
    try:
        if text == '' and key != 'name':
            raise Bad('no value given')
        section.values[key] = (map_syntax.VALUES[key](text), number)
    except Changed as e:
        section.values[key] = (e.value, number)
        the_map._add(number, str(e), section.header, key, left_out=False)
    except Bad as e:
        _fail(the_map, section, number, key, str(e))


# What '#2' in `name = Pump #2` looks like: a comment that starts right at its sign, which a
# comment written as one ('# the pump') does not.
_CUT_AT_COMMENT = re.compile(r'\s+[#;][^\s#;]')
LEFT_OUT = {'meter': '; section ignored: its meter gets the safe default role (%s) until this is '
                     'fixed' % ', '.join('%s for %s' % (role, family.upper())
                                         for family, role in sorted(roles.DEFAULT_ROLE.items())),
            'bus': '; section ignored',
            'gateway': '; section ignored'}
GROUP_LEFT_OUT = ("; group '%s' ignored: each of its meters gets the safe default role alone until "
                  "this is fixed")


def _fail(the_map, section, line, key, message):
    section.ok = False
    the_map._add(line, message + LEFT_OUT[section.ident[0]], section.header, key)


# -- resolving: role rules, phase groups, which section applies on which port ------------------

SHARED_KEYS = ('role', 'position', 'name', 'monitor_mode', 'sign', 'vebus')


def _resolve(sections, the_map):
    meters = [s for s in sections if s.ident and not s.skip and s.ident[0] == 'meter']
    for s in meters:
        _apply_alias(the_map, s)
    groups = collections.OrderedDict()
    for s in meters:
        if 'group' in s.values or 'phase' in s.values:
            if s.ok:
                _check_membership(the_map, s)
            if 'group' in s.values:
                groups.setdefault(s.values['group'][0], []).append(s)
            continue
        found = _check_meter(the_map, {k: (v, line, s) for k, (v, line) in s.values.items()})
        if s.ok:
            role, position, mode = found
            the_map._meters[s.ident[1:]] = MeterSpec(
                (('L1', s.ident[2]),), role, position, _get(s, 'name'), mode, _get(s, 'model'),
                _get(s, 'sign'), _get(s, 'vebus'), sections=(s.header,), line=s.line)
    for name, members in groups.items():
        _resolve_group(the_map, name, members)
    _resolve_gateways(the_map, [s for s in sections
                                if s.ident and not s.skip and s.ident[0] == 'gateway'])
    for s in meters:
        if s.ident[1:] not in the_map._meters:     # left out: the meter is published as found
            the_map.left_out.add(s.ident)
            the_map._meters[s.ident[1:]] = MeterSpec.single(s.ident[2], sections=(s.header,),
                                                            line=s.line)
    for s in sections:
        if s.ident and not s.skip and s.ident[0] == 'bus' and s.ok:
            the_map._bus[s.ident[1]] = {k: v for k, (v, _) in s.values.items()}
        elif s.ident and not s.skip and s.ident[0] in ('bus', 'gateway') and not s.ok:
            the_map.left_out.add(s.ident)


def _get(section, key):
    return section.values[key][0] if key in section.values else None


def _apply_alias(the_map, s):
    """An old role name gives its position, and any position written must agree with it."""
    if 'role' not in s.values:
        return
    (role, implied), line = s.values['role']
    s.values['role'] = (role, line)
    if implied is None:
        return
    if 'position' not in s.values:
        s.values['position'] = (implied, line)
    elif s.values['position'][0] != implied:
        _fail(the_map, s, s.values['position'][1], 'position',
              'the old role name on line %d means pvinverter at position %d, not %d'
              % (line, implied, s.values['position'][0]))


def _check_membership(the_map, s):
    if 'group' not in s.values:
        _fail(the_map, s, s.values['phase'][1], 'phase', 'a phase needs a group = NAME (sections '
              'sharing a group are one three-phase meter)')
    elif 'phase' not in s.values:
        _fail(the_map, s, s.values['group'][1], 'group', 'each section of a group needs a phase '
              '= L1, L2 or L3')


def _check_meter(the_map, values, in_group=None):
    """(role, position, monitor_mode) after the role rules; values: key -> (value, line,
    section). A problem marks the section it is on, or with in_group, is reported for the group."""
    def fail(key, message):
        value, line, section = values[key]
        if in_group:
            the_map._add(line, message + GROUP_LEFT_OUT % in_group, section.header, key)
        else:
            _fail(the_map, section, line, key, message)

    role, position, mode, model, sign = (values[k][0] if k in values else None
                                         for k in ('role', 'position', 'monitor_mode', 'model',
                                                   'sign'))
    family = roles.family_of(role) if role else model
    if in_group and role and role not in roles.AC_ROLES:
        fail('role', 'a group is one AC meter: use %s' % ', '.join(roles.AC_ROLES))
    elif role and model and roles.family_of(role) != model:
        fail('model', 'role %s needs a %s meter, but the model is %s'
             % (role, roles.family_of(role).upper(), model.upper()))
    if position is not None:
        if role not in roles.POSITIONS:
            fail('position', 'position applies only to role %s, and the role is %s'
                 % (', '.join(roles.POSITIONS), role or 'not given'))
            position = None
        elif position not in roles.POSITIONS[role]:
            fail('position', 'position %d is not one for %s; use %s'
                 % (position, role, map_syntax.POSITION_TEXT[role]))
    if mode is not None:
        modes = roles.MONITOR_MODES.get(role)
        if not modes:
            fail('monitor_mode', 'monitor_mode applies only to role dcsource or dcload, and the '
                 'role is %s' % (role or 'not given'))
        elif mode not in modes and mode not in modes.values():
            fail('monitor_mode', 'monitor_mode %s is not one for %s; %s'
                 % (mode, role, map_syntax.modes_text(role)))
        else:
            mode = modes.get(mode, mode)
    if sign is not None and family == 'dc':
        fail('sign', 'sign = vebus is for an AC meter at the inverter/charger\'s AC input; a DC '
             'meter has no such direction')
    if 'vebus' in values and sign is None:
        fail('vebus', 'vebus picks the VE.Bus device that gives the direction: it needs '
             'sign = vebus')
    return role, position, mode


def _resolve_group(the_map, name, members):
    """Publish the group's members only if the group as a whole is sound."""
    def problem(section, line, key, message):
        the_map._add(line, message + GROUP_LEFT_OUT % name, section.header, key)

    reported = len(the_map.problems)
    good = [s for s in members if s.ok]
    broken = [s for s in members if not s.ok]
    if broken and good:
        problem(good[0], good[0].line, None, 'section [%s] on line %d of this group has a problem'
                % (broken[0].header, broken[0].line))
    ports = [s.ident[1] for s in members]
    for s in members:
        if s.ident[1] != ports[0]:
            problem(s, s.line, None, 'a group must be on one port: [%s] and [%s] are not (use '
                    '[PORT:N] with the same port for all, or plain [N] for all)'
                    % (members[0].header, s.header))
            break
    by_phase, values = {}, {}
    for s in members:
        phase, line = s.values.get('phase', (None, 0))
        if phase in by_phase:
            first = by_phase[phase]
            problem(s, line, 'phase', 'phase %s is also given in [%s] on line %d'
                    % (phase, first.header, first.line))
        elif phase:
            by_phase[phase] = s
        if _get(s, 'model') == 'dc':
            problem(s, s.values['model'][1], 'model',
                    'a group is made of PZEM-016 (AC) meters only')
        for key in SHARED_KEYS:
            if key not in s.values:
                continue
            value, line = s.values[key]
            if key in values and values[key][0] != value:
                other = values[key][2]
                problem(s, line, key, '%s differs from [%s] on line %d; give it once or the same '
                        'in every section of the group' % (show(value), other.header,
                                                            values[key][1]))
            values.setdefault(key, (value, line, s))
    role, position, _ = _check_meter(the_map, values, in_group=name)
    if broken or len(the_map.problems) > reported:
        return
    members = sorted(members, key=lambda s: s.values['phase'][0])
    spec = MeterSpec(
        tuple((s.values['phase'][0], s.ident[2]) for s in members), role, position,
        values.get('name', (None,))[0], None,
        'ac' if any('model' in s.values for s in members) else None,
        values.get('sign', (None,))[0], values.get('vebus', (None,))[0], name,
        tuple(s.header for s in members), min(s.line for s in members))
    for s in members:
        the_map._meters[s.ident[1:]] = spec


def _resolve_gateways(the_map, sections):
    """A gateway needs its host and kind, a transparent one its port; one host and port, one
    gateway."""
    used = {}
    for s in sections:
        kind, port = _get(s, 'kind'), _get(s, 'port')
        if s.ok and 'host' not in s.values:
            _fail(the_map, s, s.line, None, 'a gateway needs its host = NAME or IP address')
        if s.ok and kind is None:
            _fail(the_map, s, s.line, None, 'a gateway needs its kind = tcp (transparent: RTU '
                  'frames pass as they are) or mbtcp (Modbus TCP to RTU)')
        if s.ok and kind == 'tcp' and port is None:
            _fail(the_map, s, s.line, None, 'a transparent gateway needs its port = N (its TCP '
                  'server port, e.g. 8899 on an Elfin EW11)')
        if not s.ok:
            continue
        spec = GatewaySpec(s.ident[1], kind, _get(s, 'host'), port or MODBUS_TCP_PORT, s.line)
        where = (spec.host.lower(), spec.port)
        if where in used:
            _fail(the_map, s, s.line, None, 'the same host and port as [gateway:%s] on line %d'
                  % (used[where].name, used[where].line))
            continue
        used[where] = spec
        the_map._gateways.append(spec)
