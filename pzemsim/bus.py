"""A simulated RS-485 bus of PZEM meters on a pseudo-terminal.

The driver opens `link` (a symlink to the pty's slave side) like a serial port; a thread
on the master side frames the requests, lets the addressed meters answer and writes
their replies back, optionally as late as the real wire would deliver them.
"""

import errno
import fcntl
import heapq
import os
import pty
import select
import threading
import time
import tty
from collections import Counter

from .faults import KINDS, Timed
from .framing import RequestFramer
from .meters import BROADCAST

GENERAL_ADDRESS = 0xF8


class LinkTaken(Exception):
    """The link path is something the simulator did not make; the message is one sentence."""


class SimBus:
    def __init__(self, link, wire_time=False, turnaround=0.08, baudrate=9600, stopbits=2,
                 quiet=0.02, echo=False):
        self.link = link
        self.wire_time = wire_time
        self.echo = echo            # like an RS-485 adapter that echoes what the master sends
        self.turnaround = turnaround
        self.char_time = (1 + 8 + stopbits) / float(baudrate)   # start + data + stop bits
        self.meters = []
        self._counts = Counter()    # frames, replies, unanswered, collisions, lost
        self._framer = RequestFramer(quiet)
        self._due = []              # wire-time mode: heap of (send time, sequence, reply)
        self._sequence = 0
        self._master = self._slave = None
        self._target = None         # the pty the link points at while serving
        self._made_folders = []     # folders start() created for the link, deepest first
        self._wake = None
        self._thread = None
        self._stopping = False

    # -- set-up -------------------------------------------------------------------------

    def add(self, meter):
        """Put a meter on the bus (before or after start); returns it."""
        self.meters.append(meter)
        return meter

    def meter(self, address):
        """The first meter that has `address` now, or None."""
        for meter in self.meters:
            if meter.address == address:
                return meter
        return None

    @property
    def device(self):
        """The pty slave the link points at, e.g. /dev/pts/7."""
        return os.ttyname(self._slave) if self._slave is not None else None

    @property
    def stats(self):
        """Counts for the whole bus: frames (requests framed), replies (written to the
        wire), unanswered, collisions, lost, dropped_bytes, and the meters' faults."""
        total = Counter(self._counts)
        total['dropped_bytes'] = self._framer.dropped
        for meter in self.meters:
            for kind in KINDS + ('faults',):
                total[kind] += meter.stats[kind]
        return total

    def start(self):
        """Open the pty and make the link. Refuses (LinkTaken) a path that is something else:
        a file, a folder, a link to another port or another running simulator's link."""
        check_link(self.link)
        self._made_folders = make_folders(os.path.dirname(os.path.abspath(self.link)))
        try:
            self._master, self._slave = pty.openpty()
        except OSError:
            self._close()
            raise
        tty.setraw(self._slave)     # no echo or line editing even before the driver opens it
        flags = fcntl.fcntl(self._master, fcntl.F_GETFL)
        fcntl.fcntl(self._master, fcntl.F_SETFL, flags | os.O_NONBLOCK)
        self._target = os.ttyname(self._slave)
        try:
            if os.path.islink(self.link):
                os.unlink(self.link)        # stale: check_link let it through
            os.symlink(self._target, self.link)
        except OSError as error:
            self._close()
            if error.errno == errno.EEXIST:
                raise LinkTaken('%s appeared while the simulator started; remove it or choose '
                                'another --link' % self.link)
            raise
        self._wake = os.pipe()
        self._stopping = False
        self._thread = threading.Thread(target=self._serve, name='pzemsim', daemon=True)
        self._thread.start()
        return self

    def stop(self):
        """Stop serving and let the port vanish, as when a USB adapter is unplugged. Removes only
        what start() made: the link (if it still points at this pty) and folders left empty."""
        if self._thread is None:
            return
        self._stopping = True
        os.write(self._wake[1], b'x')
        self._thread.join()
        self._thread = None
        for fd in self._wake:
            os.close(fd)
        self._wake = None
        if os.path.islink(self.link) and os.readlink(self.link) == self._target:
            os.unlink(self.link)
        self._close()

    def _close(self):
        for fd in (self._master, self._slave):
            if fd is not None:
                os.close(fd)
        self._master = self._slave = self._target = None
        for folder in self._made_folders:
            try:
                os.rmdir(folder)
            except OSError:
                break               # not empty: someone else put something there
        self._made_folders = []

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- serving ------------------------------------------------------------------------

    def _serve(self):
        while not self._stopping:
            ready, _, _ = select.select([self._master, self._wake[0]], [], [], self._wait())
            now = time.monotonic()
            if self._master in ready:
                try:
                    data = os.read(self._master, 4096)
                except OSError as error:
                    if error.errno not in (errno.EAGAIN, errno.EIO):
                        raise
                    data = b''      # EIO: nobody has the slave open at this instant
                if data and self.echo:
                    self._write(data)
                frames = self._framer.feed(data, now) if data else []
            else:
                frames = self._framer.expire(now)
            for frame in frames:
                self._answer(frame, now)
            self._send_due(time.monotonic())

    def _wait(self):
        """Seconds until something is due: a wire-time reply or a partial frame's expiry."""
        times = [due[0] for due in self._due[:1]]
        deadline = self._framer.deadline()
        if deadline is not None:
            times.append(deadline)
        if not times:
            return None
        return max(min(times) - time.monotonic(), 0.0)

    def _answer(self, request, end):
        """Let the meters the request is for act on it; queue what comes back on the wire."""
        self._counts['frames'] += 1
        address = request[0]
        if address in (BROADCAST, GENERAL_ADDRESS):
            listeners = list(self.meters)
        else:
            listeners = [m for m in self.meters if m.address == address]
        replies = [Timed.of(r) for r in (m.handle(request) for m in listeners) if r is not None]
        if not replies:
            self._counts['unanswered'] += 1
            return
        if len(replies) > 1:
            self._counts['collisions'] += 1
            replies = [Timed.of(collide([r.joined() for r in replies]))]
        self._counts['replies'] += 1
        due = end
        if self.wire_time:
            due += len(request) * self.char_time + self.turnaround
        for delay, piece in replies[0]:
            if self.wire_time:
                delay += len(piece) * self.char_time     # its last byte is on the wire then
            self._sequence += 1
            heapq.heappush(self._due, (due + delay, self._sequence, piece))

    def _send_due(self, now):
        while self._due and self._due[0][0] <= now:
            self._write(heapq.heappop(self._due)[2])

    def _write(self, data):
        try:
            os.write(self._master, data)
            return True
        except OSError:             # the slave's input queue is full: the bytes are lost
            self._counts['lost'] += 1
            return False


def check_link(link):
    """Raise LinkTaken unless `link` is free or a stale simulator link: a symlink to a pty
    (/dev/pts/N) that is gone because the simulator that made it died."""
    if not os.path.lexists(link):
        return
    if os.path.islink(link):
        target = os.readlink(link)
        if target.startswith('/dev/pts/'):
            if os.path.exists(target):
                # a dead simulator's pty number may have been reused since: refuse all the same
                raise LinkTaken('%s points at %s, which is in use (the port of a running '
                                'simulator, or a pty reused since); stop that simulator, or '
                                'remove the link if it is stale' % (link, target))
            return
        raise LinkTaken('%s is a link to %s, not one the simulator made; it is left alone: '
                        'choose another --link' % (link, target))
    what = 'a folder' if os.path.isdir(link) else 'a file'
    raise LinkTaken('%s is %s the simulator did not make; it is left alone: choose another '
                    '--link' % (link, what))


def make_folders(folder):
    """Create `folder` and its missing parents; returns the ones created, deepest first."""
    missing = []
    while folder and not os.path.isdir(folder):
        missing.append(folder)
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    made = []
    for path in reversed(missing):
        try:
            os.mkdir(path)
            made.insert(0, path)
        except FileExistsError:
            pass                    # made meanwhile by someone else: theirs
    return made


def collide(replies):
    """What the master receives when several meters transmit at once. Each bit is the AND
    of the bits driven (a 0 wins, as a start bit does on an idle line); one reply alone
    passes unchanged."""
    if len(replies) == 1:
        return replies[0]
    length = max(len(r) for r in replies)
    out = bytearray(b'\xff' * length)
    for reply in replies:
        for i, byte in enumerate(reply):
            out[i] &= byte
    return bytes(out)
