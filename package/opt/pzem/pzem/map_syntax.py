"""The meter map's syntax, shared by the reader (meter_map) and the writer (map_update).

An INI-like text: `[header]` lines, `key = value` lines, comments. The rules:
- `#` and `;` start a comment: a whole line, or inline where they open the value or follow
  whitespace. So `name = Pump#2` keeps its `#`; to keep " #" in a value, quote it:
  `name = "Pump #2"` (the value ends at the first `"` that only a comment or blanks follow).
- Headers: `[N]` (a meter on every port), `[PORT:N]` (on that port only), `[bus]`, `[bus:PORT]`,
  `[gateway:NAME]` (an RS-485 network gateway; NAME is its port name, as in `[NAME:N]`).
- Every value is read by the parser its key names in VALUES; a parser returns the value or
  raises Bad with the message for the user. A value that is usable but was changed (a name cut to
  the GUI's limit) raises Changed, carrying the value to use and the warning.
"""
import math
import re

from . import roles
from .rtu import MAX_ADDRESS, MIN_ADDRESS

METER_KEYS = ('role', 'position', 'monitor_mode', 'name', 'model', 'group', 'phase', 'sign',
              'vebus')
BUS_KEYS = ('interval', 'baudrate', 'stopbits', 'parity', 'timeout', 'local_echo', 'scan')
GATEWAY_KEYS = ('host', 'port', 'kind')
PHASES = ('L1', 'L2', 'L3')
MAX_NAME = 32           # the GUI's CustomName limit
MAX_BYTES = 256 * 1024  # a map is a few hundred bytes; anything this big is not one

HEADER = re.compile(r'\[([^\]]*)\]\s*(?:[#;].*)?$')
COMMENT = re.compile(r'(?:^|\s)[#;]')
_KEY = re.compile(r'\s*([^\s=:]+)\s*[=:]\s*')
_AFTER_QUOTE = re.compile(r'\s*(?:[#;].*)?$')
_PORT = re.compile(r'[A-Za-z][A-Za-z0-9_.-]*$')
_GROUP = re.compile(r'[\w-]{1,32}$')
_GATEWAY_NAME = re.compile(r'[A-Za-z][A-Za-z0-9_-]{0,31}$')
_LABEL = r'[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?'
_HOST_NAME = re.compile(r'(?=.{1,253}$)%s(?:\.%s)*\.?$' % (_LABEL, _LABEL))
_INT = re.compile(r'-?[0-9]+$')
_NUMBER = re.compile(r'(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)$')
_MODEL = re.compile(r'(?:pzem[-_ ]?)?(?:(016|014|004t(?:[-_ ]?v?3(?:\.0)?)?)|(017|003))$', re.I)


class Bad(Exception):
    """A value or header that cannot be used; str() is the message."""


class Changed(Exception):
    """A value that is used, but not as written: .value is what is used, str() the warning."""

    def __init__(self, value, message):
        Exception.__init__(self, message)
        self.value = value


# -- text and lines ----------------------------------------------------------------------------

def decode(data):
    """The map's bytes as text; Bad(message, line) when they are not a text map."""
    try:
        text = data.decode('utf-8')
    except UnicodeDecodeError as e:
        raise Bad('not UTF-8 text (byte 0x%02x)' % data[e.start],
                  data.count(b'\n', 0, e.start) + 1)
    if '\x00' in text:
        raise Bad('binary data (a NUL byte), not a text map',
                  text.count('\n', 0, text.index('\x00')) + 1)
    return text


def is_blank_or_comment(line):
    stripped = line.strip()
    return not stripped or stripped[0] in '#;'


def split_key_line(line):
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
    comment = COMMENT.search(rest)
    value = (rest[:comment.start()] if comment else rest).rstrip()
    return match.group(1), start, start + len(value), value


# -- section headers -----------------------------------------------------------------------------

def section_ident(header):
    """('meter', port or None, address) or ('bus', port or None) for a header's text."""
    first, colon, rest = (part.strip() for part in header.partition(':'))
    if first.lower() == 'bus':
        return ('bus', _port(rest) if colon else None)
    if first.lower() == 'gateway':
        if not colon:
            raise Bad('a gateway section is [gateway:NAME], e.g. [gateway:garage]: the name is '
                      'its port name, as in [garage:3]')
        return ('gateway', _gateway_name(rest))
    if colon:
        return ('meter', _port(first), address(rest))
    return ('meter', None, address(first))


def header_ident(line):
    """The identity of a header line, or None when the line is no readable header."""
    match = HEADER.match(line.strip())
    if not match:
        return None
    try:
        return section_ident(match.group(1).strip())
    except Bad:
        return None


def section_text(ident):
    if ident[0] == 'gateway':
        return 'gateway:%s' % ident[1]
    if ident[0] == 'bus':
        return 'bus' if ident[1] is None else 'bus:%s' % ident[1]
    return str(ident[2]) if ident[1] is None else '%s:%d' % (ident[1], ident[2])


def _port(text):
    if '/' in text:
        raise Bad('give the port as a bare tty name such as ttyUSB0, not a path')
    if not _PORT.match(text):
        raise Bad('%s is not a tty name such as ttyUSB0' % show(text))
    return text


def address(text):
    """A meter's Modbus address as the map, pzemctl's command line and the log write it:
    decimal (leading zeros are fine), MIN_ADDRESS..MAX_ADDRESS. Bad says what is wrong, and
    what a hexadecimal address is in decimal."""
    text = text.strip()
    span = 'meters take %d..%d' % (MIN_ADDRESS, MAX_ADDRESS)
    if re.match('[0-9]+$', text):
        if MIN_ADDRESS <= int(text) <= MAX_ADDRESS:
            return int(text)
        raise Bad('address %s is out of range: %s' % (show(text, quote=False), span))
    if re.match('0[xX][0-9a-fA-F]+$', text):
        value = int(text, 16)
        raise Bad('%s is hexadecimal: addresses are written in decimal (%s is %d%s)' % (
            show(text), text, value, '' if MIN_ADDRESS <= value <= MAX_ADDRESS else
            ', out of range: %s' % span))
    raise Bad('%s is not an address: %s' % (show(text), span))


def _gateway_name(text):
    if not _GATEWAY_NAME.match(text):
        raise Bad('gateway name %s: use up to 32 letters, digits, _ and -, starting with a letter'
                  % show(text))
    if text.lower().startswith('tty') or text.lower() in ('bus', 'gateway'):
        raise Bad('gateway name %s would be taken for %s: choose another' % (
            show(text), 'a serial port' if text.lower().startswith('tty') else 'a section kind'))
    return text


# -- values: each parser takes the text as written ------------------------------------------------

class Choice(object):
    """A value from a fixed list of spellings: {spelling (lower case): value}."""

    def __init__(self, key, spellings, hint):
        self.key = key
        self.spellings = spellings
        self.hint = hint

    def __call__(self, text):
        try:
            return self.spellings[text.lower()]
        except KeyError:
            raise Bad('%s %s: use %s' % (self.key, show(text), self.hint))


_YES_NO = dict([(w, True) for w in ('yes', 'true', 'on', '1')] +
               [(w, False) for w in ('no', 'false', 'off', '0')])
BAUDRATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)

POSITION_TEXT = {
    'pvinverter': '0 (AC input 1), 1 (AC output) or 2 (AC input 2)',
    'acload': '0 (AC output) or 1 (AC input)',
    'evcharger': '0 (AC output) or 1 (AC input)',
    'heatpump': '0 (AC output) or 1 (AC input)',
}


def _role(text):
    word = text.lower()
    try:
        return roles.resolve(word)
    except KeyError:
        raise Bad('unknown role %s%s; roles: %s (AC), %s (DC)' % (
            show(text), did_you_mean(word, roles.ROLES + tuple(roles.ALIASES)),
            ', '.join(roles.AC_ROLES), ', '.join(roles.DC_ROLES)))


def _position(text):
    if not re.match('[0-9]+$', text):
        raise Bad('%s is not a position; pvinverter: %s; acload, evcharger, heatpump: %s' % (
            show(text), POSITION_TEXT['pvinverter'], POSITION_TEXT['acload']))
    return int(text)


def _monitor_mode(text):
    if _INT.match(text):
        return int(text)
    word = text.lower()
    if any(word in modes for modes in roles.MONITOR_MODES.values()):
        return word     # a name: its number depends on the role (meter_map resolves it)
    raise Bad('unknown monitor_mode %s; %s' % (show(text), modes_text()))


def modes_text(role=None):
    return '; '.join('%s: %s' % (r, ', '.join('%s (%d)' % item for item in modes.items()))
                     for r, modes in roles.MONITOR_MODES.items() if role in (None, r))


def _model(text):
    if text.lower() in ('ac', 'dc'):
        return text.lower()
    match = _MODEL.match(text)
    if match:
        return 'ac' if match.group(1) else 'dc'
    raise Bad('unknown model %s; PZEM-016, PZEM-014, PZEM-004T (or ac) or PZEM-017, PZEM-003 '
              '(or dc)' % show(text))


def _group(text):
    if not _GROUP.match(text):
        raise Bad('group name %s: use up to 32 letters, digits, _ and -' % show(text))
    return text


def _name(text):
    if any(ord(c) < 0x20 or 0x7f <= ord(c) < 0xa0 or 0xd800 <= ord(c) < 0xe000 for c in text):
        # Unicode's control characters (Cc) and surrogates (Cs), without unicodedata
        raise Bad('the name holds a control character')
    if len(text) > MAX_NAME:
        raise Changed(text[:MAX_NAME].rstrip(), 'the name has %d characters and the GUI shows at '
                      'most %d: %s is used' % (len(text), MAX_NAME,
                                               show(text[:MAX_NAME].rstrip())))
    return text or None


def _vebus(text):
    if not re.match('[0-9]+$', text):
        raise Bad('vebus %s: give the VRM instance of the VE.Bus device (a number, as the GUI '
                  'shows it under Device info)' % show(text))
    return int(text)


def _host(text):
    if '://' in text or '/' in text:
        raise Bad("give the gateway's host name or IP address only; its port goes in port =, "
                  "tcp or mbtcp in kind =")
    address = text[1:-1] if text.startswith('[') and text.endswith(']') else text
    if ':' in address:
        import socket       # here: only an IPv6 address needs it
        try:
            socket.inet_pton(socket.AF_INET6, address)
            return address
        except (OSError, ValueError):
            pass
        host, _, port = text.rpartition(':')
        if re.match('[0-9]+$', port) and ':' not in host:
            raise Bad('give the port on a line of its own: port = %s' % port)
        raise Bad('%s is not an IPv6 address' % show(text))
    if not _HOST_NAME.match(address):
        raise Bad('%s is not a host name or IP address' % show(text))
    return address


def _tcp_port(text):
    if not re.match('[0-9]+$', text) or not 1 <= int(text) <= 65535:
        raise Bad('%s is not a TCP port (1..65535)' % show(text))
    return int(text)


def seconds(text, key, allow_zero):
    """A finite number of seconds (above 0, or 0 and more)."""
    if not _NUMBER.match(text) or not math.isfinite(float(text)) or \
            (float(text) == 0 and not allow_zero):
        raise Bad('%s is not a number of seconds %s' % (
            show(text), 'of 0 or more' if allow_zero else 'above 0'))
    return float(text)


VALUES = {
    'role': _role,
    'position': _position,
    'monitor_mode': _monitor_mode,
    'name': _name,
    'model': _model,
    'group': _group,
    'phase': Choice('phase', dict((p.lower(), p) for p in PHASES), 'L1, L2 or L3'),
    'sign': Choice('sign', {'vebus': 'vebus', 'none': None},
                   'vebus (direction from the VE.Bus device) or none'),
    'vebus': _vebus,
    'interval': lambda text: seconds(text, 'interval', allow_zero=True),
    'timeout': lambda text: seconds(text, 'timeout', allow_zero=False),
    'baudrate': Choice('baudrate', dict((str(b), b) for b in BAUDRATES),
                       'one of %s (PZEM default 9600)' % ', '.join(map(str, BAUDRATES))),
    'stopbits': Choice('stopbits', {'1': 1, '2': 2}, '1 or 2'),
    'parity': Choice('parity', {'n': 'N', 'none': 'N', 'e': 'E', 'even': 'E', 'o': 'O',
                                'odd': 'O'}, 'N, E or O'),
    'local_echo': Choice('local_echo', _YES_NO, 'yes or no'),
    'scan': Choice('scan', _YES_NO, 'yes or no (look for meters the map does not name)'),
    'host': _host,
    'port': _tcp_port,
    'kind': Choice('kind', {'tcp': 'tcp', 'transparent': 'tcp', 'mbtcp': 'mbtcp',
                            'modbustcp': 'mbtcp', 'modbus-tcp': 'mbtcp'},
                   'tcp (a transparent gateway: RTU frames pass as they are) or mbtcp (Modbus '
                   'TCP to RTU)'),
}


# -- messages --------------------------------------------------------------------------------------

def show(value, quote=True):
    """User text fit for a console line: printable, at most 40 characters."""
    text = ''.join(c if c.isprintable() else repr(c)[1:-1] for c in str(value))
    if len(text) > 40:
        text = text[:37] + '...'
    return "'%s'" % text if quote else text


def did_you_mean(word, candidates):
    import difflib      # here: only a mistake in the map needs it
    close = difflib.get_close_matches(word, candidates, n=1)
    return " (did you mean '%s'?)" % close[0] if close else ''
