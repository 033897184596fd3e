"""Helpers for the pzemctl tests: the simulator on a pty, and pzemctl as a real subprocess.

Every run points pzemctl at stand-ins: a map in the test's folder (never /data/conf), a
serial-starter folder without scripts unless a test makes some, and an empty /service.
"""
import os
import pty
import subprocess
import sys
import tempfile

from pzemsim import SimBus

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PZEMCTL = os.path.join(ROOT, 'package', 'opt', 'pzem', 'pzemctl')
# The simulator answers at once; real meters need the defaults (0.15 s per scanned address, 0.5 s).
FAST = ('--scan-timeout', '0.05', '--timeout', '0.2')


class Ctl(object):
    """pzemctl runs against one simulated bus in `tmp`, on a port named `port`."""

    def __init__(self, tmp, port='ttyUSB0'):
        self.tmp = str(tmp)
        self.link = os.path.join(self.tmp, port)
        self.port = port
        self.map_path = os.path.join(self.tmp, 'pzem.conf')
        self.env = dict(os.environ)
        self.env.update(PZEMCTL_SERIAL_STARTER_DIR=os.path.join(self.tmp, 'serial-starter'),
                        PZEMCTL_SERVICE_DIR=os.path.join(self.tmp, 'service'),
                        PZEMCTL_LOG_DIR=os.path.join(self.tmp, 'log'))
        self.env.pop('PKG_ROOT', None)
        self.env.pop('PZEM_UDEV_PROPERTIES', None)
        self.sim = None

    def start(self, *meters, **options):
        self.sim = SimBus(self.link, **options)
        for meter in meters:
            self.sim.add(meter)
        self.sim.start()
        return self

    def stop(self):
        if self.sim is not None:
            self.sim.stop()
            self.sim = None

    def write_map(self, text):
        with open(self.map_path, 'w') as f:
            f.write(text)

    def run(self, *args, **kwargs):
        """pzemctl PORT ARGS...; returns the CompletedProcess (stdout, stderr as text)."""
        return self.run_raw(self.link, *args, **kwargs)

    def run_raw(self, *args, **kwargs):
        command = [sys.executable, PZEMCTL] + list(args)
        if '--config' not in args and not {'status', 'pin', 'unpin', 'check-config'} & set(args):
            command += ['--config', self.map_path]
        env = dict(self.env)
        env.update(kwargs.pop('env', {}))
        stdin = kwargs.pop('stdin', subprocess.DEVNULL)
        return subprocess.run(command, stdin=stdin, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, universal_newlines=True, env=env,
                              timeout=kwargs.pop('timeout', 120), **kwargs)

    def run_pumping(self, address, *args):
        """pzemctl ARGS... with the system bus at `address`, while this process's GLib context
        keeps running so that services published in the test can answer it."""
        from dbus_helpers import bus_env, pump_until, stop_process
        command = [sys.executable, PZEMCTL] + list(args)
        with tempfile.TemporaryFile('w+') as out, tempfile.TemporaryFile('w+') as err:
            proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    env=bus_env(address, self.env))
            try:
                pump_until(lambda: proc.poll() is not None, 30.0, ' '.join(command))
            finally:
                stop_process(proc)
            out.seek(0)
            err.seek(0)
            return subprocess.CompletedProcess(command, proc.returncode, out.read(), err.read())

    def run_on_terminal(self, answer, *args):
        """pzemctl with a terminal on stdin that answers `answer` to the confirmation prompt."""
        master, slave = pty.openpty()
        try:
            os.write(master, answer.encode() + b'\n')  # waits in the terminal until read
            return self.run(*args, stdin=slave)
        finally:
            os.close(slave)
            os.close(master)


def one_sentence(stderr):
    """The last line of stderr, checked to be the only failure line pzemctl wrote."""
    lines = [l for l in stderr.splitlines() if l.startswith('pzemctl:')]
    assert len(lines) == 1, stderr
    assert lines[0] == stderr.splitlines()[-1], stderr
    return lines[0]
