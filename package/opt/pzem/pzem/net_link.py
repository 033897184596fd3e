"""Links to PZEM meters behind an RS-485 network gateway: the byte pipe under the Modbus exchange.

Two kinds of gateway, one class each, both with the link interface the exchange uses (name, where,
char_time, open, close, fileno, send, receive, discard_input):

- TcpLink (`tcp://HOST:PORT`): a transparent gateway ("TCP server" mode of an Elfin EW11, a
  USR-TCP232, a Waveshare RS485-to-ETH): the RTU frames pass through the connection as they are,
  CRC and all, and the master keeps Modbus-RTU's timing, so char_time is that of the wire behind it.
- ModbusTcpLink (`mbtcp://HOST:PORT`): a Modbus TCP to RTU gateway. A request goes out as Modbus TCP
  (MBAP header, no CRC); each complete reply with the request's transaction id comes back as the RTU
  frame it stands for (unit id + PDU + a freshly computed CRC), so the exchange judges every kind of
  link the same way. A reply with another transaction id (late, or a repeat) is dropped and counted
  in stats['stray_replies']. The gateway's exceptions 10 and 11 (path unavailable, device did not
  answer) reach the exchange as RTU exception frames. char_time is 0: the gateway times the wire.

A link connects only where it is told (with a timeout) and listens on nothing. open() raises
PortGone with one sentence a person can act on; send() and receive() raise OSError when the
connection fails or is gone, its strerror a sentence naming the gateway.
"""

import errno
import re
import socket
import struct

from .rtu import PortGone, crc16

DEFAULT_CONNECT_TIMEOUT = 3.0   # seconds: a gateway on the LAN answers within milliseconds
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
    return kind, match.group('ipv6') or match.group('host'), int(match.group('port'))


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
        self._sock = None

    @property
    def url(self):
        return '%s://%s' % (self.kind, address_text(self.host, self.port))

    def __repr__(self):
        return '<%s %s>' % (type(self).__name__, self.where)

    def open(self):
        if self._sock is not None:
            return
        try:
            sock = socket.create_connection((self.host, self.port), self.connect_timeout)
        except OSError as error:
            raise PortGone(self._open_problem(error))
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)     # frames are tiny
        self._sock = sock
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

    # -- the socket ---------------------------------------------------------------------------

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
            chunks.append(chunk)
            if len(chunk) < 4096:
                return b''.join(chunks), False  # all there was: no extra call to learn so

    def _closed(self):
        self.close()
        return ConnectionResetError(errno.ECONNRESET, '%s closed the connection' % self.where)

    def _open_problem(self, error):
        where = self.where[0].upper() + self.where[1:]
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

    def _opened(self):
        del self._buffer[:]
        self._expected = None

    def send(self, frame):
        """`frame`: an RTU request with its CRC; it goes out as unit id + PDU in an MBAP frame."""
        self._transaction = self._transaction % 0xFFFF + 1
        pdu = frame[1:-2]
        self._send(MBAP.pack(self._transaction, 0, len(pdu) + 1, frame[0]) + pdu)
        self._expected = self._transaction

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
