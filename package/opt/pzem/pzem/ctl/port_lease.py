"""Borrowing the port from the running driver: stop-tty.sh, then start-tty.sh.

serial-starter's stop-tty.sh takes the tty out of its rotation and stops the services on it
(svc -d /service/*.<tty>); start-tty.sh hands it back. Both take the bare tty name (ttyUSB0),
never a /dev path (reference/venus-dbus.md 4.5). Only dbus-pzem (its service dbus-pzem.<tty>, or
a process whose command is dbus-pzem) is stopped without asking: anything else on the port (a
VE.Direct or BMS driver, gps) means a mistyped port, so pzemctl asks on a terminal and refuses
without one unless --yes. Tests point PZEMCTL_SERIAL_STARTER_DIR and PZEMCTL_SERVICE_DIR at
stand-ins, because serial-starter and daemontools do not run there.
"""
import glob
import os
import struct
import subprocess
import time

from .console import Failure, confirm, note

DRIVER = 'dbus-pzem'
STARTER_DIR = '/opt/victronenergy/serial-starter'
SERVICE_DIR = '/service'
RELEASE_SECONDS = 10.0
TAI64_UNIX = 2 ** 62 + 10     # the TAI64 label of the Unix epoch, as daemontools writes it


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
            names = os.listdir(fd_dir)
        except OSError:     # the process ended, or is not ours to look at
            continue
        fds = []
        for fd in names:
            try:
                fds.append((fd, os.readlink(os.path.join(fd_dir, fd))))
            except OSError:
                pass        # closed meanwhile: a process that is closing its files (a driver
                            # that stops) still holds the others
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


def argv_of(pid):
    """The command line of `pid` as a list ([] when it is gone or not ours to read)."""
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as f:
            words = f.read().split(b'\0')
        return [w.decode('utf-8', 'replace') for w in words if w]
    except OSError:
        return []


def command_of(pid):
    return ' '.join(argv_of(pid)) or '?'


INTERPRETERS = ('python', 'sh', 'bash', 'perl', 'node')


def program(argv):
    """The program a command line runs, without its interpreter and the interpreter's options,
    with all of its own: ['dbus-pzem', '--config', 'live.conf', 'ttyUSB0']."""
    words = list(argv)
    if words and os.path.basename(words[0]).startswith(INTERPRETERS):
        script = next((i for i, w in enumerate(words[1:], 1) if not w.startswith('-')), None)
        words = words[script:] if script else words
    return [os.path.basename(words[0])] + words[1:] if words else []


def is_driver(argv):
    """True for dbus-pzem's command line: the script itself, or an interpreter running it."""
    return program(argv)[:1] == [DRIVER]


def driver_processes():
    """[(pid, argv)] of every dbus-pzem process on this machine."""
    found = []
    for cmdline in glob.glob('/proc/[0-9]*/cmdline'):
        pid = int(cmdline.split('/')[2])
        argv = argv_of(pid)
        if is_driver(argv):
            found.append((pid, argv))
    return sorted(found)


def service_state(service):
    """(pid or 0, Unix time of its last start or stop or None) from daemontools'
    supervise/status; None when the service is not supervised."""
    try:
        with open(os.path.join(service, 'supervise', 'status'), 'rb') as f:
            status = f.read()
    except OSError:
        return None
    if len(status) < 16:
        return None
    # daemontools' 18-byte status: TAI64N stamp (12 bytes), then the pid (little endian).
    pid = struct.unpack('<I', status[12:16])[0]
    since = struct.unpack('>Q', status[:8])[0] - TAI64_UNIX
    return pid, since if since > 0 else None


def services_up(tty):
    """Names of the daemontools services for this tty (dbus-pzem.ttyUSB0, ...) that are running."""
    up = []
    for service in sorted(glob.glob(os.path.join(service_dir(), '*.' + tty))):
        state = service_state(service)
        if state and state[0]:
            up.append(os.path.basename(service))
    return up


def holding(path, tty):
    """(the driver's holders, everything else's), each a list of words like 'service x'."""
    ours, others = [], []
    for service in services_up(tty):
        (ours if service == '%s.%s' % (DRIVER, tty) else others).append('service %s' % service)
    for pid, _ in holders(path):
        argv = argv_of(pid)
        command = ' '.join(program(argv)) or '?'
        if len(command) > 240:      # whole, as a rule: --config and the port matter
            command = command[:237] + '...'
        words = 'process %d (%s)' % (pid, command)
        (ours if is_driver(argv) else others).append(words)
    return ours, others


def users(path, tty):
    """Who holds the port, in words ('' when nobody)."""
    ours, others = holding(path, tty)
    return ', '.join(ours + others)


class PortLease(object):
    """with PortLease(path, tty, yes): the port is free inside, and handed back afterwards;
    `yes` takes it from another program without asking."""

    def __init__(self, path, tty, yes=False):
        self.path = path
        self.tty = tty
        self.yes = yes
        self.stopped = False

    def _script(self, name):
        return os.path.join(starter_dir(), name)

    def __enter__(self):
        ours, others = holding(self.path, self.tty)
        if not ours and not others:
            return self
        held_by = ', '.join(ours + others)
        if others and not confirm('take %s from %s, which %s not dbus-pzem' % (
                self.tty, ', '.join(others), 'is' if len(others) == 1 else 'are'), self.yes):
            raise Failure('cancelled: %s was left to %s; is %s the right port?'
                          % (self.tty, ', '.join(others), self.tty))
        stop = self._script('stop-tty.sh')
        if not os.access(stop, os.X_OK):
            if others:
                raise Failure('%s is in use by %s and %s is missing: close that program first'
                              % (self.tty, held_by, stop))
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
