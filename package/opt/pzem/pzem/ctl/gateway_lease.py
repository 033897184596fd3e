"""Borrowing a network gateway from its driver: svc -d /service/dbus-pzem.NAME, then svc -u.

A gateway's driver is not serial-starter's: the installer runs it as the daemontools service
dbus-pzem.NAME (install/gateway-services.sh), NAME the gateway's name in the map. A gateway serves
one master well at a time, so pzemctl stops that service while it works and starts it again
afterwards, even when the command fails. A dbus-pzem on the same gateway that no service runs
(started by hand) is not stopped: pzemctl names it and refuses. Tests put a stand-in `svc` first
in PATH and point PZEMCTL_SERVICE_DIR at a stand-in /service.
"""
import os
import shutil
import subprocess
import time

from .. import net_link
from .console import Failure, note
from .port_lease import DRIVER, RELEASE_SECONDS, driver_processes, program, service_dir, \
    service_state


def drivers_on(url):
    """[(pid, command line)] of the dbus-pzem processes on the gateway at `url` (any kind)."""
    return [(pid, ' '.join(program(argv))) for pid, argv in driver_processes()
            if net_link.same_gateway(program(argv)[-1], url)]


class GatewayLease(object):
    """with GatewayLease(url, name): nothing else talks to the gateway inside; its service is
    started again afterwards."""

    def __init__(self, url, name):
        self.url = url
        self.name = name
        self.service = os.path.join(service_dir(), '%s.%s' % (DRIVER, name))
        self.stopped = False

    def __enter__(self):
        state = service_state(self.service)
        if state and state[0]:
            if shutil.which('svc') is None:
                raise Failure('%s is in use by its service %s and svc (daemontools) is missing: '
                              'stop the driver first' % (self.name, self.service))
            note('%s is in use by service %s.%s: stopping it with svc -d %s' % (
                self.name, DRIVER, self.name, self.service))
            self.stopped = True
            try:
                self._svc('-d')
                deadline = time.monotonic() + RELEASE_SECONDS
                while drivers_on(self.url) and time.monotonic() < deadline:
                    time.sleep(0.2)
            except BaseException:
                self._give_back()
                raise
        held = drivers_on(self.url)
        if held:
            if self.stopped:
                self._give_back()
            raise Failure('%s is in use by %s: stop it first (a gateway serves one master at '
                          'a time)' % (self.name, ', '.join('process %d (%s)' % (pid, command)
                                                             for pid, command in held)))
        return self

    def __exit__(self, *exc):
        if self.stopped:
            self._give_back()
        return False

    def _give_back(self):
        self.stopped = False
        try:
            self._svc('-u')
            note('%s handed back to its driver (svc -u %s)' % (self.name, self.service))
        except Failure as e:
            note('pzemctl: %s; run svc -u %s by hand' % (e, self.service))

    def _svc(self, option):
        try:
            done = subprocess.run(['svc', option, self.service], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, universal_newlines=True, timeout=30)
        except (OSError, subprocess.SubprocessError) as e:
            raise Failure('svc %s %s failed: %s' % (option, self.service, e))
        if done.returncode != 0:
            raise Failure('svc %s %s failed with status %d: %s' % (
                option, self.service, done.returncode, done.stdout.strip()[-200:]))
