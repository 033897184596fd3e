"""Links to PZEM meters behind an RS-485 network gateway: the byte pipe under the Modbus exchange.

Two kinds of gateway, one class each, both with the link interface the exchange uses (name, where,
char_time, open, close, fileno, send, receive, discard_input, vanished, lost):

- TcpLink (`tcp://HOST:PORT`): a transparent gateway ("TCP server" mode of an Elfin EW11, a
  USR-TCP232, a Waveshare RS485-to-ETH): the RTU frames pass through the connection as they are,
  CRC and all, and the master keeps Modbus-RTU's timing, so char_time is that of the wire behind it.
- ModbusTcpLink (`mbtcp://HOST:PORT`): a Modbus TCP to RTU gateway. A request goes out as Modbus TCP
  (MBAP header, no CRC); each complete reply with the request's transaction id comes back as the RTU
  frame it stands for (unit id + PDU + a freshly computed CRC), so the exchange judges every kind of
  link the same way. A reply with another transaction id (late, or a repeat) is dropped and counted
  in stats['stray_replies']. The gateway's exceptions 10 and 11 (path unavailable, device did not
  answer) reach the exchange as RTU exception frames. char_time is 0: the gateway times the wire;
  `pending` says that the last request's reply has not come (the gateway is still asking).

A link connects only where it is told and listens on nothing. open() is bounded by the connect
timeout, the name lookup included (getaddrinfo has no timeout of its own: it runs in a thread that
is waited for that long), and raises PortGone with one sentence a person can act on; send() and
receive() raise OSError when the connection fails or is gone, its strerror a sentence naming the
gateway. A gateway that drops off the network while a request is on its way is noticed by TCP
itself (TCP_USER_TIMEOUT: data unacknowledged for USER_TIMEOUT seconds ends the connection), an
idle one by keepalive probes.
"""

import errno
import re
import socket
import struct
import threading
import time

from .rtu import PortGone, crc16

DEFAULT_CONNECT_TIMEOUT = 3.0   # seconds: a gateway on the LAN answers within milliseconds
USER_TIMEOUT = 10.0     # seconds a request may stay unacknowledged before the connection is dead
KEEPALIVE = (10, 5, 3)  # idle seconds before the first probe, seconds between probes, probes
MBAP = struct.Struct('>HHHB')   # transaction id, protocol id (0), length (unit id + PDU), unit id
MAX_MBAP_LENGTH = 254           # unit id + the longest PDU (253 bytes)
_URL = re.compile(r'(?P<kind>[a-z]+)://(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:/\[\]]+))'
                  r':(?P<port>[0-9]+)/?$')


class NotModbus(ConnectionError):
    """The peer sent bytes that cannot be Modbus TCP: the stream cannot be followed, so the link
    closed the connection."""


# -- names and addresses ----------------------------------------------------------------------

def default_name(host, port):
    """A port name for a gateway the map does not name, the same for the same host and port:
    'gw_ew11_garage_local_8899' for ew11-garage.local:8899 (letters, digits and _ only)."""
    return 'gw_%s_%d' % (re.sub('[^a-z0-9]+', '_', host.lower()).strip('_'), port)


def address_text(host, port):
    """'host:port', with an IPv6 address in brackets."""
    return '[%s]:%d' % (host, port) if ':' in host else '%s:%d' % (host, port)


def parse_url(text):
    """(kind, host, port) for 'tcp://HOST:PORT' or 'mbtcp://HOST:PORT' (an IPv6 address in
    brackets); ValueError with one sentence otherwise."""
    match = _URL.match(text.strip())
    kind = match.group('kind') if match else text.partition('://')[0]
    if kind not in LINKS:
        raise ValueError('%r is no gateway address: use tcp://HOST:PORT for a transparent '
                         'gateway or mbtcp://HOST:PORT for a Modbus TCP gateway' % text)
    if not match or not 1 <= int(match.group('port')) <= 65535:
        raise ValueError('%r: give the gateway as %s://HOST:PORT, the port 1..65535 (an IPv6 '
                         'address in brackets: %s://[fe80::1]:502)' % (text, kind, kind))
    host = match.group('ipv6') or match.group('host')
    try:
        host.encode('idna')         # what a name lookup does first
    except UnicodeError:
        raise ValueError('%r: %s is no host name (labels of 1 to 63 letters, digits and -, '
                         'between dots) and no IP address' % (text, host))
    return kind, host, int(match.group('port'))


def is_url(text):
    """True for anything written as a gateway address (KIND://...), good or not: the driver and
    pzemctl then take it as a gateway, and parse_url says what is wrong with it."""
    return '://' in text


def same_gateway(url, other):
    """True when two gateway URLs name the same host and TCP port (whatever kind they say)."""
    try:
        _, host, port = parse_url(url)
        _, other_host, other_port = parse_url(other)
    except ValueError:
        return False
    return (host.lower(), port) == (other_host.lower(), other_port)


def link_for(url, name=None, **options):
    """The link for a gateway URL; `options` go to its class (name, serial settings, timeout)."""
    kind, host, port = parse_url(url)
    return LINKS[kind](host, port, name=name, **options)


# -- the links --------------------------------------------------------------------------------

class TcpLink:
    """A transparent gateway: RTU bytes through a TCP connection, both ways, as they are.

    baudrate, stopbits and parity are those of the RS-485 wire behind the gateway (set in the
    gateway itself): they give char_time, the exchange's measure for the Modbus silences."""

    kind = 'tcp'

    def __init__(self, host, port, name=None, baudrate=9600, stopbits=2, parity='N',
                 connect_timeout=DEFAULT_CONNECT_TIMEOUT):
        self.host = host
        self.port = port
        self.name = name or default_name(host, port)
        address = address_text(host, port)
        self.where = 'gateway %s (%s)' % (name, address) if name else 'gateway ' + address
        self.char_time = (1 + 8 + (parity != 'N') + stopbits) / float(baudrate)
        self.connect_timeout = connect_timeout
        self.stats = {'stray_replies': 0}
        self.last_heard = None  # when bytes last came from the gateway (time.monotonic())
        self._sock = None
        self._lookup = None     # the name lookup still running, if any

    @property
    def url(self):
        return '%s://%s' % (self.kind, address_text(self.host, self.port))

    def __repr__(self):
        return '<%s %s>' % (type(self).__name__, self.where)

    def open(self):
        """Connect within connect_timeout, the name lookup included; PortGone otherwise."""
        if self._sock is not None:
            return
        try:
            sock = self._connect(time.monotonic() + self.connect_timeout)
        except OSError as error:
            raise PortGone(self._open_problem(error))
        sock.setblocking(False)
        _set_options(sock)
        self._sock = sock
        self.last_heard = time.monotonic()
        self._opened()

    def close(self):
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def fileno(self):
        if self._sock is None:
            raise OSError(errno.EBADF, '%s is not connected' % self.where)
        return self._sock.fileno()

    def send(self, frame):
        self._send(frame)

    def receive(self):
        """The RTU bytes that came, b'' when none; OSError when the connection is gone."""
        data, ended = self._read()
        if ended and not data:
            raise self._closed()
        return data

    def discard_input(self):
        """Drop the bytes that came and were not read (after a failed exchange)."""
        try:
            self._read()
        except OSError:
            pass        # gone: the next send or receive says so

    def vanished(self):
        """A network link has no device node that could disappear: False."""
        return False

    def lost(self, error):
        """Why the connection became unusable, as the PortGone to raise (it is closed)."""
        self.close()
        text = getattr(error, 'strerror', None) or (str(error) if error is not None else '')
        return PortGone(_sentence(text or '%s: the connection was lost' % self.where))

    def dropped(self):
        """A sentence about replies this link dropped since the last request, or None."""
        return None

    # -- the socket ---------------------------------------------------------------------------

    def _connect(self, deadline):
        """A connected socket, within `deadline` (monotonic), lookup included; OSError."""
        error = socket.timeout('timed out')
        for family, kind, protocol, _, address in self._addresses(deadline):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            sock = socket.socket(family, kind, protocol)
            try:
                sock.settimeout(left)
                sock.connect(address)
                return sock
            except OSError as failed:
                sock.close()
                error = failed
        raise error

    def _addresses(self, deadline):
        """getaddrinfo's answer for the host, waited for until `deadline`. An IP address needs
        no lookup; a name is looked up in a thread of its own, which a later call waits for
        again while it still runs (one lookup at a time, however long the resolver takes)."""
        try:
            return self._getaddrinfo(self.host, self.port, 0, socket.SOCK_STREAM, 0,
                                     socket.AI_NUMERICHOST)
        except socket.gaierror:
            pass                # a name: look it up
        except UnicodeError:    # no name a resolver could take (the map's hosts are checked)
            raise socket.gaierror(socket.EAI_NONAME, 'not a host name')
        if self._lookup is None:
            self._lookup = _Lookup(self._getaddrinfo, self.host, self.port)
        lookup = self._lookup
        lookup.join(max(0.0, deadline - time.monotonic()))
        if lookup.is_alive():
            raise LookupTimeout(errno.ETIMEDOUT, 'the name lookup did not end')
        self._lookup = None     # the next open() looks the name up afresh
        if lookup.error is not None:
            raise lookup.error
        return lookup.result

    _getaddrinfo = staticmethod(socket.getaddrinfo)     # tests put a slow resolver here

    def _opened(self):
        """Called once connected: state of the kind."""

    def _send(self, data):
        if self._sock is None:
            raise OSError(errno.EBADF, '%s is not connected' % self.where)
        try:
            sent = self._sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as error:
            raise OSError(error.errno, '%s: sending failed (%s)' % (
                self.where, error.strerror or error))
        if sent < len(data):
            raise OSError(errno.EIO, '%s takes no more requests: its connection is stalled'
                          % self.where)

    def _read(self):
        """(the bytes waiting, whether the peer closed the connection), without blocking."""
        if self._sock is None:
            raise OSError(errno.EBADF, '%s is not connected' % self.where)
        chunks = []
        while True:
            try:
                chunk = self._sock.recv(4096)
            except BlockingIOError:
                return b''.join(chunks), False
            except OSError as error:
                raise OSError(error.errno, '%s: the connection failed (%s)' % (
                    self.where, error.strerror or error))
            if not chunk:
                return b''.join(chunks), True
            self.last_heard = time.monotonic()
            chunks.append(chunk)
            if len(chunk) < 4096:
                return b''.join(chunks), False  # all there was: no extra call to learn so

    def _closed(self):
        self.close()
        return ConnectionResetError(errno.ECONNRESET, '%s closed the connection' % self.where)

    def _open_problem(self, error):
        where = self.where[0].upper() + self.where[1:]
        if isinstance(error, LookupTimeout):
            return ('%s: the name %s was not resolved within %g s: check the GX\'s network '
                    'settings (DNS), or give the gateway\'s IP address in the meter map.' % (
                        where, self.host, self.connect_timeout))
        if isinstance(error, socket.gaierror):
            return ('%s: the name %s does not resolve (%s): check the host in the meter map and '
                    'the GX\'s network settings (DNS).' % (where, self.host, error.strerror))
        if isinstance(error, socket.timeout):
            return ('%s does not answer within %g s: check that it is powered and on the network, '
                    'and its address.' % (where, self.connect_timeout))
        if isinstance(error, ConnectionRefusedError):
            return ('%s refuses connections: check its address and its TCP server port.' % where)
        return '%s cannot be reached (%s): check the network between the GX and the gateway.' % (
            where, error.strerror or error)


class ModbusTcpLink(TcpLink):
    """A Modbus TCP to RTU gateway: requests out as Modbus TCP, replies back as RTU frames. It takes
    the serial settings as TcpLink does (the map's [bus:NAME] is passed as for any port) and needs
    none of them: the gateway keeps the wire's timing."""

    kind = 'mbtcp'

    def __init__(self, host, port, name=None, connect_timeout=DEFAULT_CONNECT_TIMEOUT, **serial):
        TcpLink.__init__(self, host, port, name=name, connect_timeout=connect_timeout, **serial)
        self.char_time = 0.0        # the gateway keeps the silences on its wire
        self._buffer = bytearray()
        self._transaction = 0
        self._expected = None       # the transaction id of the request in flight
        self._stray = None          # the transaction id of a reply dropped since the last send

    def _opened(self):
        del self._buffer[:]
        self._expected = None

    def send(self, frame):
        """`frame`: an RTU request with its CRC; it goes out as unit id + PDU in an MBAP frame."""
        self._transaction = self._transaction % 0xFFFF + 1
        pdu = frame[1:-2]
        self._stray = None
        self._send(MBAP.pack(self._transaction, 0, len(pdu) + 1, frame[0]) + pdu)
        self._expected = self._transaction

    @property
    def pending(self):
        """True while the last request has had no reply: the gateway is still at it (the
        exchange waits for that reply before it sends another request)."""
        return self._expected is not None

    def dropped(self):
        """What became of the replies that came since the last request and were dropped."""
        if self._stray is None:
            return None
        return ('the gateway answered with Modbus TCP transaction id %d where %d was asked, and '
                'such a reply is dropped: a late answer to an earlier request (a longer timeout '
                'may help), or a gateway that mixes up transaction ids' % (
                    self._stray, self._transaction))

    def receive(self):
        data, ended = self._read()
        self._buffer += data
        frames = self._replies()
        if ended and not frames:
            raise self._closed()
        return b''.join(frames)

    def discard_input(self):
        """Drop the replies that came; a reply not complete yet is kept until it is, so that
        the stream stays in step, and is then dropped: no request waits for it any more."""
        self._expected = None
        try:
            self._buffer += self._read()[0]
            self._replies()
        except OSError:
            pass

    def _replies(self):
        """The RTU frames of the complete replies in the buffer for the request in flight."""
        buffer, frames = self._buffer, []
        while len(buffer) >= MBAP.size:
            transaction, protocol, length, unit = MBAP.unpack_from(buffer)
            if protocol != 0 or not 2 <= length <= MAX_MBAP_LENGTH:
                raise self._not_modbus()
            end = 6 + length
            if len(buffer) < end:
                break
            frame = bytes(buffer[6:end])
            del buffer[:end]
            if transaction != self._expected:
                self.stats['stray_replies'] += 1
                self._stray = transaction
                continue
            self._expected = None       # one reply per request: a repeat is a stray one
            crc = crc16(frame)
            frames.append(frame + bytes((crc & 0xFF, crc >> 8)))
        return frames

    def _not_modbus(self):
        head = bytes(self._buffer[:16])
        self.close()
        del self._buffer[:]
        return NotModbus(errno.EPROTO, '%s sent something that is not Modbus TCP (%r): check the '
                         'gateway\'s kind (mbtcp: Modbus TCP; tcp: RTU frames passed as they are) '
                         'and its port' % (self.where, head))


LINKS = {'tcp': TcpLink, 'mbtcp': ModbusTcpLink}


class LookupTimeout(OSError):
    """The name lookup took longer than the connect timeout."""


class _Lookup(threading.Thread):
    """getaddrinfo in a thread of its own, so that a slow resolver can be waited for with a
    timeout (a daemon thread: one left running never holds the process up)."""

    def __init__(self, getaddrinfo, host, port):
        threading.Thread.__init__(self, name='lookup %s' % host, daemon=True)
        self._getaddrinfo = getaddrinfo
        self.host, self.port = host, port
        self.result = self.error = None
        self.start()

    def run(self):
        try:
            self.result = self._getaddrinfo(self.host, self.port, 0, socket.SOCK_STREAM)
        except OSError as error:
            self.error = error


def _set_options(sock):
    """Small frames go out at once; a dead peer ends the connection instead of hanging it."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in zip(('TCP_KEEPIDLE', 'TCP_KEEPINTVL', 'TCP_KEEPCNT'), KEEPALIVE):
        if hasattr(socket, option):         # Linux (Venus OS); not everywhere
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
    if hasattr(socket, 'TCP_USER_TIMEOUT'):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(USER_TIMEOUT * 1000))


def _sentence(text):
    """`text` as a sentence: a capital first, a full stop at the end."""
    text = text.strip()
    return text[:1].upper() + text[1:] + ('' if text.endswith('.') else '.')
