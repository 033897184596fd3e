"""The meter map, /data/conf/pzem.conf: which meter answers at which Modbus address, in which role.

Reading never raises. Every problem becomes one line "FILE:LINE: [section] key 'x': message" in
MeterMap.problems; a section with a bad value is left out as a whole (a role is never guessed)
and the rest of the map works. Writing it back is map_update's job.

Syntax beyond the commented example in the design notes:
- `#` and `;` start a comment: a whole line, or inline where they open the value or follow
  whitespace. So `name = Pump#2` keeps its `#`; to keep " #" in a value, quote it:
  `name = "Pump #2"` (the value ends at the first `"` that only a comment or blanks follow).
- `[N]` applies on every port, `[PORT:N]` on that port only, where it replaces `[N]` as a
  whole. `[bus]` and `[bus:PORT]` hold serial settings; `[bus:PORT]` overrides them key by key.
- A meter section without a role gets the detected model's default role (role None).
- A section that is present but left out still hides a plain `[N]` on its port, and a map that
  exists but cannot be read still counts as configured (has_sections_for is True): no meter is
  published with a role the user did not give.
"""
import collections
import difflib
import math
import os
import re
import unicodedata
from dataclasses import dataclass
from typing import Optional

from . import roles

DEFAULT_PATH = '/data/conf/pzem.conf'
METER_KEYS = ('role', 'position', 'monitor_mode', 'name', 'model', 'group', 'phase')
BUS_KEYS = ('interval', 'baudrate', 'stopbits', 'parity', 'timeout', 'local_echo')
PHASES = ('L1', 'L2', 'L3')
MAX_NAME = 32
MAX_ADDRESS = 247
BAUDRATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)

_POSITION_TEXT = {
    'pvinverter': '0 (AC input 1), 1 (AC output) or 2 (AC input 2)',
    'acload': '0 (AC output) or 1 (AC input)',
}
_MODEL = re.compile(r'(?:pzem[-_ ]?)?(?:(016|014|004t(?:[-_ ]?v?3(?:\.0)?)?)|(017|003))$', re.I)
_TRUE, _FALSE = ('yes', 'true', 'on', '1'), ('no', 'false', 'off', '0')
_PARITY = {'n': 'N', 'none': 'N', 'e': 'E', 'even': 'E', 'o': 'O', 'odd': 'O'}

_HEADER = re.compile(r'\[([^\]]*)\]\s*(?:[#;].*)?$')
_PORT = re.compile(r'[A-Za-z][A-Za-z0-9_.-]*$')
_GROUP = re.compile(r'[\w-]{1,32}$')
_KEY = re.compile(r'\s*([^\s=:]+)\s*[=:]\s*')
_COMMENT = re.compile(r'(?:^|\s)[#;]')
_AFTER_QUOTE = re.compile(r'\s*(?:[#;].*)?$')
_INT = re.compile(r'-?[0-9]+$')
_NUMBER = re.compile(r'(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)$')


@dataclass(frozen=True)
class MeterConfig:
    """One meter of the map, resolved for one port."""
    address: int
    role: Optional[str] = None          # canonical; None = the detected model's default role
    position: Optional[int] = None
    name: Optional[str] = None
    monitor_mode: Optional[int] = None
    model: Optional[str] = None         # 'ac' or 'dc' when the map overrides auto-detection
    group: Optional[str] = None         # members of a group are published as one meter
    phase: Optional[str] = None         # 'L1'..'L3' for a group member
    section: Optional[str] = None       # the header as written, e.g. 'ttyUSB0:1' (for map_update)
    line: int = 0                       # line of that header


class MeterMap:
    """A parsed map. Ports are bare tty names; a /dev path is accepted too."""

    def __init__(self, source):
        self.source = source
        self._found = []        # (line, problem line)
        self._meters = {}       # (port or None, address) -> MeterConfig, or None if left out
        self._bus = {}          # port or None -> {key: value}
        self._left_out = set()  # identities of sections that are present but not used
        self._unsure = False    # unreadable file or unreadable header: maybe meant for any port

    @property
    def problems(self):
        """One line per problem, in file order: "FILE:LINE: [section] key 'x': message"."""
        return [text for _, text in sorted(self._found, key=lambda found: found[0])]

    def meters_for(self, port):
        """The meters on `port` (group members included), sorted by address."""
        port = os.path.basename(port)
        chosen = {a: c for (p, a), c in self._meters.items() if p is None}
        chosen.update((a, c) for (p, a), c in self._meters.items() if p == port)
        return sorted((c for c in chosen.values() if c), key=lambda c: c.address)

    def groups_for(self, port):
        """{group name: [MeterConfig sorted by phase]} on `port`."""
        groups = collections.OrderedDict()
        for config in self.meters_for(port):
            if config.group:
                groups.setdefault(config.group, []).append(config)
        return {name: sorted(members, key=lambda c: c.phase) for name, members in groups.items()}

    def bus_options(self, port):
        """Serial settings given for `port`: only the keys that were set, parsed."""
        options = dict(self._bus.get(None, {}))
        options.update(self._bus.get(os.path.basename(port), {}))
        return options

    def has_sections_for(self, port):
        """True if any meter section (used or not) applies to `port`; if False, probe address 1."""
        port = os.path.basename(port)
        return self._unsure or any(p in (None, port) for p, _ in self._meters)

    def _add(self, line, message, section=None, key=None):
        where = '%s:%d:' % (self.source, line) if line else '%s:' % self.source
        about = ''.join(('' if section is None else ' [%s]' % section,
                         '' if key is None else " key '%s':" % key))
        self._found.append((line, '%s%s %s' % (where, about, message)))


class _Bad(Exception):
    """A value or header that cannot be used; str() is the message."""


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
        with open(path, 'rb') as f:
            data = f.read()
    except FileNotFoundError:
        return MeterMap(path)
    except OSError as e:
        return _unreadable(path, 0, 'cannot read the map: %s' % (e.strerror or e))
    try:
        text = _decode(data)
    except _Bad as e:
        return _unreadable(path, e.args[1], str(e.args[0]))
    return parse(text, path)


def check(path=DEFAULT_PATH):
    """Problems in the map at `path`, for `pzemctl check-config`. Unlike load(), a missing file
    is reported: whoever names a file to check expects it to exist."""
    if not os.path.lexists(path):
        return ["%s: no such file (without a map the driver probes address 1 with the model's "
                "default role)" % path]
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
    the_map._unsure = True
    the_map._add(line, message + '; the map is not used')
    return the_map


def _decode(data):
    try:
        text = data.decode('utf-8')
    except UnicodeDecodeError as e:
        raise _Bad('not UTF-8 text (byte 0x%02x)' % data[e.start],
                   data.count(b'\n', 0, e.start) + 1)
    if '\x00' in text:
        raise _Bad('binary data (a NUL byte), not a text map',
                   text.count('\n', 0, text.index('\x00')) + 1)
    return text


def _read_sections(lines, the_map):
    sections, seen, current = [], {}, None
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if not stripped or stripped[0] in '#;':
            continue
        if stripped[0] == '[':
            current = _start_section(stripped, number, seen, the_map)
            sections.append(current)
            continue
        split = _split_key_line(line)
        if current is None:
            what = "key '%s'" % _show(split[0], quote=False) if split else 'this line'
            the_map._add(number, '%s is outside any section, ignored; put it under a header such '
                         'as [1]' % what)
        elif current.skip:
            continue
        elif split is None:
            _fail(the_map, current, number, None, "%s is not 'key = value'" % _show(stripped))
        else:
            _read_value(the_map, current, number, split[0], split[3])
    return sections


def _start_section(stripped, number, seen, the_map):
    match = _HEADER.match(stripped)
    header = match.group(1).strip() if match else stripped
    try:
        if not match:
            raise _Bad('%s is not a section header such as [1], [ttyUSB0:1], [bus] or '
                       '[bus:ttyUSB0]' % _show(stripped))
        ident = _section_ident(header)
    except _Bad as e:
        shown = _show(header, quote=False)
        the_map._add(number, '%s; section ignored' % e, shown if match else None)
        the_map._unsure = True
        section = _Section(shown, number, None)
        section.skip = True
        return section
    section = _Section(header, number, ident)
    if ident in seen:
        first = seen[ident]
        the_map._add(number, 'the same section as [%s] on line %d; this one is ignored'
                     % (first.header, first.line), _show(header, quote=False))
        section.skip = True
    else:
        seen[ident] = section
    return section


def _section_ident(header):
    """('meter', port or None, address) or ('bus', port or None) for a header's text."""
    first, colon, rest = (part.strip() for part in header.partition(':'))
    if first.lower() == 'bus':
        return ('bus', _port(rest) if colon else None)
    if colon:
        return ('meter', _port(first), _address(rest))
    return ('meter', None, _address(first))


def _section_text(ident):
    if ident[0] == 'bus':
        return 'bus' if ident[1] is None else 'bus:%s' % ident[1]
    return str(ident[2]) if ident[1] is None else '%s:%d' % (ident[1], ident[2])


def _port(text):
    if '/' in text:
        raise _Bad('give the port as a bare tty name such as ttyUSB0, not a path')
    if not _PORT.match(text):
        raise _Bad('%s is not a tty name such as ttyUSB0' % _show(text))
    return text


def _address(text):
    if not re.match('[0-9]+$', text) or not 1 <= int(text) <= MAX_ADDRESS:
        raise _Bad('%s is not a Modbus address (1..%d)' % (_show(text), MAX_ADDRESS))
    return int(text)


def _split_key_line(line):
    """(key, start, end, value) for a 'key = value' line, or None. line[start:end] is the value
    as written (quotes included), so that a write can replace exactly that."""
    body = line[:-1] if line.endswith('\r') else line
    match = _KEY.match(body)
    if not match:
        return None
    start = match.end()
    rest = body[start:]
    if rest.startswith('"'):
        for quote in re.finditer('"', rest[1:]):
            end = quote.end() + 1
            if _AFTER_QUOTE.match(rest, end):
                return match.group(1), start, start + end, rest[1:end - 1]
    comment = _COMMENT.search(rest)
    value = (rest[:comment.start()] if comment else rest).rstrip()
    return match.group(1), start, start + len(value), value


def _read_value(the_map, section, number, key_as_written, text):
    key = key_as_written.lower()
    kind = section.ident[0]
    known = METER_KEYS if kind == 'meter' else BUS_KEYS
    if key not in known:
        shown = _show(key_as_written, quote=False)
        the_map._add(number, 'unknown key, ignored%s; %s keys are %s' % (
            _did_you_mean(key, known), kind, ', '.join(known)), section.header, shown)
        return
    if key in section.values:
        _fail(the_map, section, number, key, 'given twice (also on line %d)'
              % section.values[key][1])
        return
    try:
        if text == '' and key != 'name':
            raise _Bad('no value given')
        section.values[key] = (_VALUE[key](text), number)
    except _Bad as e:
        _fail(the_map, section, number, key, str(e))


def _fail(the_map, section, line, key, message):
    section.ok = False
    the_map._add(line, message + '; section ignored', section.header, key)


# -- values: each takes the text as written and returns the value, or raises _Bad ------------------

def _role(text):
    word = text.lower()
    try:
        return roles.resolve(word)
    except KeyError:
        raise _Bad('unknown role %s%s; roles: %s (AC), %s (DC)' % (
            _show(text), _did_you_mean(word, roles.ROLES + tuple(roles.ALIASES)),
            ', '.join(roles.AC_ROLES), ', '.join(roles.DC_ROLES)))


def _position(text):
    if not re.match('[0-9]+$', text):
        raise _Bad('%s is not a position; pvinverter: %s; acload: %s' % (
            _show(text), _POSITION_TEXT['pvinverter'], _POSITION_TEXT['acload']))
    return int(text)


def _monitor_mode(text):
    if _INT.match(text):
        return int(text)
    word = text.lower()
    if any(word in modes for modes in roles.MONITOR_MODES.values()):
        return word     # a name: its number depends on the role, see _check_meter
    raise _Bad('unknown monitor_mode %s; %s' % (_show(text), _modes_text()))


def _modes_text(role=None):
    return '; '.join('%s: %s' % (r, ', '.join('%s (%d)' % item for item in modes.items()))
                     for r, modes in roles.MONITOR_MODES.items() if role in (None, r))


def _model(text):
    if text.lower() in ('ac', 'dc'):
        return text.lower()
    match = _MODEL.match(text)
    if match:
        return 'ac' if match.group(1) else 'dc'
    raise _Bad('unknown model %s; PZEM-016, PZEM-014, PZEM-004T (or ac) or PZEM-017, PZEM-003 '
               '(or dc)' % _show(text))


def _group(text):
    if not _GROUP.match(text):
        raise _Bad('group name %s: use up to 32 letters, digits, _ and -' % _show(text))
    return text


def _phase(text):
    if text.upper() not in PHASES:
        raise _Bad('phase %s: use L1, L2 or L3' % _show(text))
    return text.upper()


def _name(text):
    if len(text) > MAX_NAME:
        raise _Bad('the name has %d characters; the GUI shows at most %d' % (len(text), MAX_NAME))
    if any(unicodedata.category(c) in ('Cc', 'Cs') for c in text):
        raise _Bad('the name holds a control character')
    return text or None


def _interval(text):
    return _seconds(text, 'interval', allow_zero=True)


def _timeout(text):
    return _seconds(text, 'timeout', allow_zero=False)


def _seconds(text, key, allow_zero):
    if not _NUMBER.match(text) or not math.isfinite(float(text)) or \
            (float(text) == 0 and not allow_zero):
        raise _Bad('%s is not a number of seconds %s' % (
            _show(text), 'of 0 or more' if allow_zero else 'above 0'))
    return float(text)


def _baudrate(text):
    if not re.match('[0-9]+$', text) or int(text) not in BAUDRATES:
        raise _Bad('baudrate %s: use one of %s (PZEM default 9600)'
                   % (_show(text), ', '.join(map(str, BAUDRATES))))
    return int(text)


def _stopbits(text):
    if text not in ('1', '2'):
        raise _Bad('stopbits %s: use 1 or 2' % _show(text))
    return int(text)


def _parity(text):
    if text.lower() not in _PARITY:
        raise _Bad('parity %s: use N, E or O' % _show(text))
    return _PARITY[text.lower()]


def _local_echo(text):
    if text.lower() not in _TRUE + _FALSE:
        raise _Bad('local_echo %s: use yes or no' % _show(text))
    return text.lower() in _TRUE


_VALUE = {
    'role': _role, 'position': _position, 'monitor_mode': _monitor_mode, 'name': _name,
    'model': _model, 'group': _group, 'phase': _phase, 'interval': _interval,
    'baudrate': _baudrate, 'stopbits': _stopbits, 'parity': _parity, 'timeout': _timeout,
    'local_echo': _local_echo,
}


# -- resolving: role rules, phase groups, which section applies on which port ------------------

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
            the_map._meters[s.ident[1:]] = MeterConfig(
                s.ident[2], role, position, _get(s, 'name'), mode, _get(s, 'model'),
                section=s.header, line=s.line)
    for name, members in groups.items():
        _resolve_group(the_map, name, members)
    for s in meters:
        the_map._meters.setdefault(s.ident[1:], None)
    for s in sections:
        if s.ident and not s.skip and s.ident[0] == 'bus' and s.ok:
            the_map._bus[s.ident[1]] = {k: v for k, (v, _) in s.values.items()}
        if s.ident and not s.skip and not (s.ok and the_map._meters.get(s.ident[1:], True)):
            the_map._left_out.add(s.ident)


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
            the_map._add(line, "%s; group '%s' ignored" % (message, in_group), section.header, key)
        else:
            _fail(the_map, section, line, key, message)

    role, position, mode, model = (values[k][0] if k in values else None
                                   for k in ('role', 'position', 'monitor_mode', 'model'))
    if in_group and role and role not in roles.AC_ROLES:
        fail('role', 'a group is one AC meter: use %s' % ', '.join(roles.AC_ROLES))
    elif role and model and roles.family_of(role) != model:
        fail('model', 'role %s needs a %s meter, but the model is %s'
             % (role, roles.family_of(role).upper(), model.upper()))
    if position is not None:
        if role not in roles.POSITIONS:
            fail('position', 'position applies only to role pvinverter or acload, and the role '
                 'is %s' % (role or 'not given'))
            position = None
        elif position not in roles.POSITIONS[role]:
            fail('position', 'position %d is not one for %s; use %s'
                 % (position, role, _POSITION_TEXT[role]))
    if mode is not None:
        modes = roles.MONITOR_MODES.get(role)
        if not modes:
            fail('monitor_mode', 'monitor_mode applies only to role dcsource or dcload, and the '
                 'role is %s' % (role or 'not given'))
        elif mode not in modes and mode not in modes.values():
            fail('monitor_mode', 'monitor_mode %s is not one for %s; %s'
                 % (mode, role, _modes_text(role)))
        else:
            mode = modes.get(mode, mode)
    return role, position, mode


def _resolve_group(the_map, name, members):
    """Publish the group's members only if the group as a whole is sound."""
    def problem(section, line, key, message):
        the_map._add(line, "%s; group '%s' ignored" % (message, name), section.header, key)

    reported = len(the_map._found)
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
        for key in ('role', 'position', 'name', 'monitor_mode'):
            if key not in s.values:
                continue
            value, line = s.values[key]
            if key in values and values[key][0] != value:
                other = values[key][2]
                problem(s, line, key, '%s differs from [%s] on line %d; give it once or the same '
                        'in every section of the group' % (_show(value), other.header,
                                                            values[key][1]))
            values.setdefault(key, (value, line, s))
    role, position, _ = _check_meter(the_map, values, in_group=name)
    if broken or len(the_map._found) > reported:
        return
    model = 'ac' if any('model' in s.values for s in members) else None
    for s in members:
        the_map._meters[s.ident[1:]] = MeterConfig(
            s.ident[2], role, position, values.get('name', (None,))[0], None, model, name,
            s.values['phase'][0], section=s.header, line=s.line)


# -- messages --------------------------------------------------------------------------------------

def _show(value, quote=True):
    """User text fit for a console line: printable, at most 40 characters."""
    text = ''.join(c if c.isprintable() else repr(c)[1:-1] for c in str(value))
    if len(text) > 40:
        text = text[:37] + '...'
    return "'%s'" % text if quote else text


def _did_you_mean(word, candidates):
    close = difflib.get_close_matches(word, candidates, n=1)
    return " (did you mean '%s'?)" % close[0] if close else ''
