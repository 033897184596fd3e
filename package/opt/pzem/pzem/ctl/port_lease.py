"""Borrowing the port from whatever holds it (the running driver): stop-tty.sh, then start-tty.sh.

serial-starter's stop-tty.sh takes the tty out of its rotation and stops the services on it
(svc -d /service/*.<tty>); start-tty.sh hands it back. Both take the bare tty name (ttyUSB0),
never a /dev path (reference/venus-dbus.md 4.5). Tests point PZEMCTL_SERIAL_STARTER_DIR and
PZEMCTL_SERVICE_DIR at stand-ins, because serial-starter and daemontools do not run there.
"""
import glob
import os
import struct
import subprocess
import time

from .console import Failure, note

STARTER_DIR = '/opt/victronenergy/serial-starter'
SERVICE_DIR = '/service'
RELEASE_SECONDS = 10.0


def starter_dir():
    return os.environ.get('PZEMCTL_SERIAL_STARTER_DIR', STARTER_DIR)


def service_dir():
    return os.environ.get('PZEMCTL_SERVICE_DIR', SERVICE_DIR)


def holders(path):
    """[(pid, command line)] of the other processes that have the tty at `path` open.

    On a pseudo-terminal (a simulator, socat) the process holding the master side is the far
    end of the line, the stand-in for the meters, not a user of the port: it does not count.
    """
    target = os.path.realpath(path)
    found = []
    for fd_dir in glob.glob('/proc/[0-9]*/fd'):
        pid = int(fd_dir.split('/')[2])
        if pid == os.getpid():
            continue
        try:
            fds = [(fd, os.readlink(os.path.join(fd_dir, fd))) for fd in os.listdir(fd_dir)]
        except OSError:     # the process ended, or is not ours to look at
            continue
        if any(link == target for _, link in fds) and not holds_master(pid, fds, target):
            found.append((pid, command_of(pid)))
    return found


def holds_master(pid, fds, target):
    """True when `pid` has the master side of the pty whose slave is `target` (/dev/pts/N)."""
    if not target.startswith('/dev/pts/'):
        return False
    index = 'tty-index:\t%s\n' % target[len('/dev/pts/'):]
    for fd, link in fds:
        if link == '/dev/ptmx' or link.startswith('/dev/pts/ptmx'):
            try:
                with open('/proc/%d/fdinfo/%s' % (pid, fd)) as f:
                    if index in f.read():
                        return True
            except OSError:
                continue
    return False


def command_of(pid):
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as f:
            words = f.read().split(b'\0')
        return ' '.join(w.decode('utf-8', 'replace') for w in words if w)
    except OSError:
        return '?'


def services_up(tty):
    """Names of the daemontools services for this tty (dbus-pzem.ttyUSB0, ...) that are running."""
    up = []
    for service in sorted(glob.glob(os.path.join(service_dir(), '*.' + tty))):
        try:
            with open(os.path.join(service, 'supervise', 'status'), 'rb') as f:
                status = f.read()
        except OSError:
            continue
        # daemontools' 18-byte status: TAI64N stamp (12 bytes), then the pid (little endian).
        if len(status) >= 16 and struct.unpack('<I', status[12:16])[0] != 0:
            up.append(os.path.basename(service))
    return up


def users(path, tty):
    """Who holds the port, in words ('' when nobody)."""
    names = ['service %s' % s for s in services_up(tty)]
    names += ['process %d (%s)' % (pid, cmd[:60]) for pid, cmd in holders(path)]
    return ', '.join(names)


class PortLease(object):
    """with PortLease(path, tty): the port is free inside, and handed back afterwards."""

    def __init__(self, path, tty):
        self.path = path
        self.tty = tty
        self.stopped = False

    def _script(self, name):
        return os.path.join(starter_dir(), name)

    def __enter__(self):
        held_by = users(self.path, self.tty)
        if not held_by:
            return self
        stop = self._script('stop-tty.sh')
        if not os.access(stop, os.X_OK):
            raise Failure('%s is in use by %s and %s is missing: stop the driver first: '
                          'svc -d %s/dbus-pzem.%s (svc -u to start it again afterwards)'
                          % (self.tty, held_by, stop, SERVICE_DIR, self.tty))
        note('%s is in use by %s: releasing it with %s %s' % (self.tty, held_by, stop, self.tty))
        self.stopped = True
        try:
            self._run(stop)
            deadline = time.monotonic() + RELEASE_SECONDS
            while users(self.path, self.tty):
                if time.monotonic() > deadline:
                    raise Failure('%s is still in use by %s after stop-tty.sh: close that '
                                  'program and try again' % (self.tty, users(self.path, self.tty)))
                time.sleep(0.2)
        except BaseException:
            self._give_back()
            raise
        return self

    def __exit__(self, *exc):
        if self.stopped:
            self._give_back()
        return False

    def _give_back(self):
        self.stopped = False
        start = self._script('start-tty.sh')
        try:
            self._run(start)
            note('%s handed back to serial-starter (%s %s)' % (self.tty, start, self.tty))
        except Failure as e:
            note('pzemctl: %s; run %s %s by hand' % (e, start, self.tty))

    def _run(self, script):
        try:
            done = subprocess.run([script, self.tty], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, universal_newlines=True, timeout=30)
        except (OSError, subprocess.SubprocessError) as e:
            raise Failure('%s %s failed: %s' % (script, self.tty, e))
        if done.returncode != 0:
            raise Failure('%s %s failed with status %d: %s' % (
                script, self.tty, done.returncode, done.stdout.strip()[-200:]))
