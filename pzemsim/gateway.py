"""The simulated meters behind an RS-485 network gateway on 127.0.0.1: pzemsim's network front.

    with SimBus(link) as bus:
        bus.add(AcMeter(1))
        with Gateway(bus, 'mbtcp') as gateway:     # listens on 127.0.0.1:gateway.port
            ...

A Gateway is the box: its RS-485 side is a serial port (a SimBus's pty, opened like any serial
port, so the meters, their faults and the wire's timing are the SimBus's own), its network side a
TCP server on 127.0.0.1. Two kinds:
- 'tcp' (transparent, "TCP server" mode): bytes from any connection go to the wire as they are,
  bytes from the wire go to every connection.
- 'mbtcp' (Modbus TCP to RTU): each Modbus TCP request is asked on the wire as an RTU frame, one
  at a time, and answered in MBAP with its transaction id; with exception 11 (0x0B) when no good
  reply came within rtu_timeout, 10 (0x0A) when the serial port cannot be opened.

What a network does to it: `delay` (seconds added to each round trip, half each way, settable
while it runs), cut() (closes the open connections), stop() and start() again on the same port (it
refuses connections meanwhile), unplug() (gone from the network: a connect times out and the open
connections hear nothing; start() brings it back, resetting those), and faults for a number of
requests (inject, as on a meter): FAULTS below.
"""

import errno
import heapq
import itertools
import os
import select
import socket
import struct
import threading
import time
import tty
from collections import Counter, deque

from .crc import crc_ok, with_crc
from .faults import Faults

KINDS = ('tcp', 'mbtcp')
MBAP = struct.Struct('>HHHB')           # transaction id, protocol id (0), length, unit id
NO_PATH, NO_ANSWER = 0x0A, 0x0B         # Modbus exceptions: gateway path unavailable, target
                                        # device failed to respond
REQUEST_FAULTS = ('mute', 'junk', 'drop')  # what happens to a request instead of asking
FAULTS = {
    'mute': {},                         # takes the request and never answers (a hung gateway)
    'junk': {'data': b'HTTP/1.1 400 Bad Request\r\n\r\n'},    # answers with bytes not Modbus
    'drop': {},                         # closes the connection the request came on
    'wrong_transaction': {},            # mbtcp: the reply carries another transaction id
}


def reply_length(data):
    """The length of the RTU reply that `data` starts with; None while it cannot be told yet, or
    for a function whose reply length is not known (the reply then ends at the timeout)."""
    if len(data) < 2:
        return None
    function = data[1]
    if function & 0x80:
        return 5
    if function in (0x03, 0x04):
        return 5 + data[2] if len(data) >= 3 else None
    return {0x06: 8, 0x42: 4}.get(function)


class Gateway:
    def __init__(self, wire, kind='tcp', port=0, host='127.0.0.1', delay=0.0, rtu_timeout=0.25):
        if kind not in KINDS:
            raise ValueError('kind must be one of %s, not %r' % (', '.join(KINDS), kind))
        self.wire = getattr(wire, 'link', wire)     # a SimBus, or the path of a serial port
        self.kind = kind
        self.host = host
        self.port = port                # 0: any free port, chosen at the first start()
        self.delay = delay
        self.rtu_timeout = rtu_timeout
        self.stats = Counter()          # connections, requests, replies, no_answer, no_path,
                                        # stray_bytes, cuts, faults and one count per fault
        self._faults = Faults(options=FAULTS)
        self._lock = threading.Lock()
        self._listener = None
        self._clients = {}              # socket -> bytes received and not yet a request (mbtcp)
        self._stranded = []             # connections of an unplugged gateway: hear nothing
        self._stall = []                # unplugged: the listener that never accepts, its fillers
        self._serial = None
        self._timers = []               # heap of (due, sequence, function, arguments)
        self._sequence = itertools.count()
        self._last_due = {}             # direction -> due time of its latest timer (keeps order)
        self._queue = []                # mbtcp: requests waiting for the wire
        self._asking = None             # mbtcp: [request, deadline, reply so far]
        self._calls = deque()           # functions for the serving thread to run, with events
        self._wake = None
        self._thread = None
        self._stopping = False

    @property
    def url(self):
        return '%s://%s:%d' % (self.kind, self.host, self.port)

    # -- control ------------------------------------------------------------------------------

    def start(self):
        """Listen (again) on host:port and serve. After unplug(), the connections that were open
        are reset, as by a gateway that restarted."""
        if self._thread is not None:
            return self
        self._close_stall()
        for sock in self._stranded:
            _close(sock, reset=True)
        self._stranded = []
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((self.host, self.port))
            listener.listen(8)
        except OSError:
            listener.close()
            raise
        listener.setblocking(False)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._wake = os.pipe()
        self._stopping = False
        self._thread = threading.Thread(target=self._serve, name='pzemsim-gateway', daemon=True)
        self._thread.start()
        return self

    def stop(self):
        """Close everything: connecting is refused until start()."""
        self._halt()
        for sock in list(self._clients) + self._stranded:
            _close(sock)
        self._clients, self._stranded = {}, []
        self._close_stall()
        self._close_serial()

    def unplug(self):
        """Drop off the network: a connect times out, the open connections hear nothing more."""
        self._halt()
        self._stranded += list(self._clients)
        self._clients = {}
        self._close_serial()
        self._stall = stalled_listener(self.host, self.port)
        self.port = self._stall[0].getsockname()[1]

    def cut(self, reset=False):
        """Close the open connections now (reset: with a TCP reset instead of an orderly close)."""
        if self._thread is None:
            for sock in self._stranded:
                _close(sock, reset)
            self.stats['cuts'] += len(self._stranded)
            self._stranded = []
            return
        self._call(self._cut, reset)

    def inject(self, kind, count=None, **options):
        """Misbehave for `count` requests (None: until cleared); kinds and options: FAULTS."""
        if kind == 'wrong_transaction' and self.kind != 'mbtcp':
            raise ValueError('wrong_transaction applies to a Modbus TCP (mbtcp) gateway only')
        with self._lock:
            self._faults.inject(kind, count, **options)

    def clear_faults(self, kind=None):
        with self._lock:
            self._faults.clear(kind)

    @property
    def connections(self):
        """How many connections it serves now."""
        return len(self._clients)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _halt(self):
        """Stop the serving thread and the listener; the connections stay as they are (those
        still in the listener's backlog too)."""
        if self._thread is None:
            return
        self._stopping = True
        os.write(self._wake[1], b'x')
        self._thread.join()
        self._thread = None
        for fd in self._wake:
            os.close(fd)
        self._wake = None
        while self._accept():
            pass
        self._listener.close()
        self._listener = None
        self._timers, self._queue, self._asking, self._last_due = [], [], None, {}
        while self._calls:
            self._calls.popleft()[1].set()

    def _call(self, function, *args):
        """Run function(*args) in the serving thread; return once it ran."""
        done = threading.Event()
        self._calls.append(((function, args), done))
        os.write(self._wake[1], b'x')
        done.wait()

    def _cut(self, reset):
        while self._accept():
            pass                            # connected, not accepted yet: open all the same
        for sock in list(self._clients):
            self._drop_client(sock, reset)
            self.stats['cuts'] += 1

    def _close_stall(self):
        for sock in self._stall:
            sock.close()
        self._stall = []

    # -- serving ------------------------------------------------------------------------------

    def _serve(self):
        while not self._stopping:
            wait = max(self._timers[0][0] - time.monotonic(), 0.0) if self._timers else None
            watched = [self._wake[0], self._listener] + list(self._clients)
            if self._serial is not None:
                watched.append(self._serial)
            ready, _, _ = select.select(watched, [], [], wait)
            for source in ready:
                if source == self._wake[0]:
                    os.read(self._wake[0], 64)
                    self._run_calls()
                elif source is self._listener:
                    self._accept()
                elif source == self._serial:
                    self._from_wire()
                elif source in self._clients:
                    self._from_client(source)
            now = time.monotonic()
            while self._timers and self._timers[0][0] <= now and not self._stopping:
                _, _, function, args = heapq.heappop(self._timers)
                function(*args)

    def _run_calls(self):
        while self._calls:
            (function, args), done = self._calls.popleft()
            function(*args)
            done.set()

    def _later(self, direction, function, *args):
        """function(*args) after half the delay, in order with the rest of that direction."""
        due = max(time.monotonic() + self.delay / 2.0, self._last_due.get(direction, 0.0))
        self._last_due[direction] = due
        heapq.heappush(self._timers, (due, next(self._sequence), function, args))

    def _accept(self):
        """Take one connection from the backlog; False when there was none."""
        try:
            sock, _ = self._listener.accept()
        except OSError:
            return False
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._clients[sock] = b''
        self.stats['connections'] += 1
        return True

    def _drop_client(self, sock, reset=False):
        self._clients.pop(sock, None)
        _close(sock, reset)

    def _send(self, sock, data):
        if sock not in self._clients:
            return                          # gone meanwhile
        try:
            sock.sendall(data)
        except OSError:
            self._drop_client(sock)

    def _take_fault(self, kinds):
        """(kind, options) of the first of `kinds` in force, using up one of its count."""
        with self._lock:
            for kind in kinds:
                options = self._faults.take(kind)
                if options is not None:
                    self.stats[kind] += 1
                    self.stats['faults'] += 1
                    return kind, options
        return None, None

    def _from_client(self, sock):
        try:
            data = sock.recv(4096)
        except OSError:
            data = b''
        if not data:
            self._drop_client(sock)
            return
        if self.kind == 'tcp':
            self.stats['requests'] += 1
            if self._misbehave(sock):
                return
            self._later('out', self._to_wire, data)
            return
        self._clients[sock] += data
        self._mbtcp_requests(sock)

    def _misbehave(self, sock):
        """Apply the fault in force to the request that came on `sock`; True when it took it."""
        kind, options = self._take_fault(REQUEST_FAULTS)
        if kind == 'mute':
            return True
        if kind == 'junk':
            self._later('out', self._later, 'back', self._send, sock, options['data'])
            return True
        if kind == 'drop':
            self._drop_client(sock)
            return True
        return False

    # -- the wire -----------------------------------------------------------------------------

    def _open_serial(self):
        if self._serial is None:
            try:
                fd = os.open(self.wire, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
            except OSError:
                return False
            tty.setraw(fd)
            self._serial = fd
        return True

    def _close_serial(self):
        fd, self._serial = self._serial, None
        if fd is not None:
            os.close(fd)

    def _read_serial(self):
        try:
            return os.read(self._serial, 4096)
        except OSError as error:
            if error.errno != errno.EAGAIN:
                self._close_serial()        # the port went away (EIO: its pty closed)
            return b''

    def _to_wire(self, data):
        if self._open_serial():
            try:
                os.write(self._serial, data)
            except OSError:
                self._close_serial()

    def _from_wire(self):
        data = self._read_serial()
        if not data:
            return
        if self.kind == 'tcp':
            for sock in list(self._clients):
                self._later('back', self._send, sock, data)
        elif self._asking is not None:
            reply = self._asking[2] = self._asking[2] + data
            size = reply_length(reply)
            if size is not None and len(reply) >= size:
                self._answer(reply[:size])
        else:
            self.stats['stray_bytes'] += len(data)

    # -- Modbus TCP ---------------------------------------------------------------------------

    def _mbtcp_requests(self, sock):
        buffer = self._clients[sock]
        while len(buffer) >= MBAP.size:
            transaction, protocol, length, unit = MBAP.unpack_from(buffer)
            if protocol != 0 or not 2 <= length <= 254:
                self.stats['bad_requests'] += 1
                self._drop_client(sock)     # not Modbus TCP: a gateway hangs up
                return
            if len(buffer) < 6 + length:
                break
            pdu, buffer = buffer[MBAP.size:6 + length], buffer[6 + length:]
            self.stats['requests'] += 1
            if self._misbehave(sock):
                if sock not in self._clients:
                    return
                continue
            wrong = self._take_fault(('wrong_transaction',))[0] is not None
            self._later('out', self._enqueue, (sock, transaction, unit, pdu, wrong))
        self._clients[sock] = buffer

    def _enqueue(self, request):
        self._queue.append(request)
        if self._asking is None:
            self._ask_next()

    def _ask_next(self):
        while self._queue and self._asking is None:
            request = self._queue.pop(0)
            sock, transaction, unit, pdu, _ = request
            if sock not in self._clients:
                continue                    # its connection is gone: nobody to answer
            if not self._open_serial():
                self.stats['no_path'] += 1
                self._reply(request, unit, bytes((pdu[0] | 0x80, NO_PATH)))
                continue
            while self._serial is not None and self._read_serial():
                pass                        # what came late for an earlier request
            self._to_wire(with_crc(bytes((unit,)) + pdu))
            if unit == 0:
                continue                    # a broadcast: no meter answers it
            self._asking = [request, time.monotonic() + self.rtu_timeout, b'']
            heapq.heappush(self._timers, (self._asking[1], next(self._sequence),
                                          self._timed_out, (self._asking,)))

    def _timed_out(self, asking):
        if asking is self._asking:
            self._answer(asking[2])

    def _answer(self, reply):
        """The wire's reply (what came, maybe nothing) to the request asked: back in MBAP."""
        request, self._asking = self._asking[0], None
        if len(reply) >= 4 and crc_ok(reply):
            self.stats['replies'] += 1
            self._reply(request, reply[0], reply[1:-2])
        else:
            self.stats['no_answer'] += 1
            self._reply(request, request[2], bytes((request[3][0] | 0x80, NO_ANSWER)))
        self._ask_next()

    def _reply(self, request, unit, pdu):
        sock, transaction, _, _, wrong = request
        if wrong:
            transaction = (transaction + 0x5A5A) & 0xFFFF or 1
        frame = MBAP.pack(transaction, 0, len(pdu) + 1, unit) + pdu
        self._later('back', self._send, sock, frame)


def _close(sock, reset=False):
    if reset:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
        except OSError:
            pass
    sock.close()


def stalled_listener(host, port, probe=0.05):
    """[listener, fillers...]: a port where a connect hangs until it times out, as to a host that
    is off the network. It listens but never accepts, and its backlog is filled (Linux then drops
    further connection requests, so the connecting side waits)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(0)
    held = [listener]
    while len(held) < 64:
        filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        filler.settimeout(probe)
        try:
            filler.connect((host, port))
        except socket.timeout:
            filler.close()                  # the backlog is full: connects hang from here on
            return held
        held.append(filler)
    for sock in held:
        sock.close()
    raise OSError(errno.EAGAIN, 'cannot fill the backlog of %s:%d' % (host, port))
