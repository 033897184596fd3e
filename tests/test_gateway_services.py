"""The per-gateway driver services, in a folder used as root (as tests/test_packaging.py does): made
from the meter map at install and at every boot, following the map's edits through the watcher
service, back after a firmware update, gone on uninstall. The real maintainer scripts and
installer run; svc, udevadm and opkg are never called for a root that is not /."""
import os
import subprocess
import time

import pytest

from driver_rig import ROOT
from packaging_helpers import Device, FakeOpkg, build

SERVICES = 'run/pzem/services'
MAP = 'data/conf/pzem.conf'
GATEWAYS = '''
[gateway:garage]
host = ew11-garage.local
port = 8899
kind = tcp

[gateway:shed]
host = 192.168.1.50
kind = mbtcp

[garage:3]
role = pvinverter
position = 1
'''


def driver_run(url):
    return ('#!/bin/sh\n'
            '# venus-pzem: made from the meter map by pzem-install.sh at every boot; do not edit.\n'
            'exec 2>&1\n'
            'exec /opt/pzem/dbus-pzem --config /data/conf/pzem.conf %s\n' % url)


def log_run(name):
    return '#!/bin/sh\nexec multilog t s25000 n4 /var/log/%s\n' % name


@pytest.fixture(scope='module')
def ipk(tmp_path_factory):
    return build(tmp_path_factory.mktemp('build'))['ipk']


@pytest.fixture
def gx(tmp_path, ipk):
    """A GX with venus-pzem installed and a map that declares two gateways."""
    device = Device(tmp_path)
    FakeOpkg(device).install(ipk)
    with open(device.path(MAP), 'a') as f:
        f.write(GATEWAYS)
    device.installer('gateways')
    return device


def services(device):
    """{service name: (what /service links to, run, log/run)} of the services in /run/pzem."""
    found = {}
    folder = device.path(SERVICES)
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        link = device.path('service/' + name)
        found[name] = (os.readlink(link) if os.path.islink(link) else None,
                       device.read('%s/%s/run' % (SERVICES, name)),
                       device.read('%s/%s/log/run' % (SERVICES, name)))
    return found


def linked(device):
    folder = device.path('service')
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


EXPECTED = {
    'dbus-pzem.garage': ('/run/pzem/services/dbus-pzem.garage',
                         driver_run('tcp://ew11-garage.local:8899'), log_run('dbus-pzem.garage')),
    'dbus-pzem.shed': ('/run/pzem/services/dbus-pzem.shed',
                       driver_run('mbtcp://192.168.1.50:502'), log_run('dbus-pzem.shed')),
    'pzem-gateways': ('/run/pzem/services/pzem-gateways',
                      driver_run('x').replace(
                          '/opt/pzem/dbus-pzem --config /data/conf/pzem.conf x',
                          '/opt/pzem/install/pzem-install.sh watch-gateways'),
                      log_run('pzem-gateways')),
}


def test_one_service_per_gateway_and_the_watcher(gx):
    assert services(gx) == EXPECTED
    for name in EXPECTED:
        assert gx.mode('%s/%s/run' % (SERVICES, name)) == 0o755
        assert gx.mode('%s/%s/log/run' % (SERVICES, name)) == 0o755
    assert linked(gx) == sorted(EXPECTED)
    assert gx.tool_calls() == []


def test_a_fresh_install_without_gateways_has_only_the_watcher(tmp_path, ipk):
    device = Device(tmp_path)
    FakeOpkg(device).install(ipk)
    assert sorted(services(device)) == ['pzem-gateways']


def test_a_kept_map_with_gateways_gets_its_services_at_install(tmp_path, ipk):
    device = Device(tmp_path)
    device.write(MAP, GATEWAYS)                     # kept from an earlier install
    FakeOpkg(device).install(ipk)
    assert services(device) == EXPECTED


def test_services_follow_the_map(gx):
    text = gx.read(MAP)
    text = text.replace('host = 192.168.1.50', 'host = 192.168.1.51')
    text = text.replace('[gateway:garage]', '[gateway:carport]')
    gx.write(MAP, text + '\n[gateway:barn]\nhost = fe80::1\nport = 5020\nkind = mbtcp\n')
    said = gx.installer('gateways').stderr
    assert sorted(services(gx)) == ['dbus-pzem.barn', 'dbus-pzem.carport', 'dbus-pzem.shed',
                                    'pzem-gateways']
    assert services(gx)['dbus-pzem.barn'][1] == driver_run('mbtcp://[fe80::1]:5020')
    assert services(gx)['dbus-pzem.shed'][1] == driver_run('mbtcp://192.168.1.51:502')
    assert services(gx)['dbus-pzem.carport'][1] == driver_run('tcp://ew11-garage.local:8899')
    assert linked(gx) == sorted(services(gx))
    assert said.splitlines() == [
        'pzem-install: gateway carport: service dbus-pzem.carport for tcp://ew11-garage.local:8899',
        'pzem-install: gateway shed: service dbus-pzem.shed for mbtcp://192.168.1.51:502',
        'pzem-install: gateway barn: service dbus-pzem.barn for mbtcp://[fe80::1]:5020',
        'pzem-install: gateway garage: no longer in the map, service dbus-pzem.garage removed']
    unchanged = gx.snapshot()
    assert gx.installer('gateways').stderr == ''
    assert gx.snapshot() == unchanged


def test_a_broken_gateway_section_is_said_and_its_service_goes(gx):
    gx.write(MAP, gx.read(MAP).replace('kind = mbtcp', 'kind = modbus'))
    said = gx.installer('gateways').stderr
    assert "pzem.conf:%d: [gateway:shed] key 'kind': kind 'modbus': use tcp" % (
        gx.read(MAP).splitlines().index('kind = modbus') + 1) in said
    assert sorted(services(gx)) == ['dbus-pzem.garage', 'pzem-gateways']


def test_an_unreadable_map_leaves_the_services_as_they_are(gx):
    before = services(gx)
    with open(gx.path(MAP), 'ab') as f:
        f.write(b'\xff\xfe not text')
    said = gx.installer('gateways', check=False)
    assert said.returncode == 1
    assert 'not UTF-8 text' in said.stderr and 'the gateway services stay as they are' in said.stderr
    assert services(gx) == before


def test_without_a_map_there_are_no_gateway_services(gx):
    os.unlink(gx.path(MAP))
    gx.installer('gateways')
    assert sorted(services(gx)) == ['pzem-gateways']


def test_every_boot_makes_them_again(gx):
    for volatile in ('run', 'service'):
        subprocess.run(['rm', '-rf', gx.path(volatile)], check=True)   # a reboot
    gx.run_boot_hook()
    assert services(gx) == EXPECTED
    assert gx.tool_calls() == []


def test_a_firmware_update_brings_them_back_and_uninstall_takes_them_away(gx):
    gx.firmware_update()
    assert not gx.exists('service') and not gx.exists('run')
    gx.run_boot_hook()
    assert services(gx) == EXPECTED
    gx.run('sh', gx.path('data/pzem/install/pzem-install.sh'), 'uninstall-ipk')
    assert not gx.exists('run/pzem') and linked(gx) == []
    assert gx.read(MAP).endswith(GATEWAYS)          # the user's map stays


def test_opkg_remove_takes_them_away(tmp_path, ipk):
    device = Device(tmp_path)
    device.write(MAP, GATEWAYS)
    opkg = FakeOpkg(device)
    opkg.install(ipk)
    assert linked(device) == sorted(EXPECTED)
    opkg.remove()
    assert not device.exists('run/pzem') and linked(device) == []
    assert device.tool_calls() == []


# -- the watcher ------------------------------------------------------------------------------------

@pytest.fixture
def watcher(gx, tmp_path):
    """The watcher's loop running on the folder root (a round every 20 ms), with a python3 that
    counts its runs; stopped after the test."""
    bindir = tmp_path / 'counting'
    bindir.mkdir()
    runs = tmp_path / 'python-runs'
    real = subprocess.run(['sh', '-c', 'command -v python3'], stdout=subprocess.PIPE,
                          universal_newlines=True, env=gx.env).stdout.strip()
    (bindir / 'python3').write_text('#!/bin/sh\necho run >> "%s"\nexec "%s" "$@"\n' % (runs, real))
    (bindir / 'python3').chmod(0o755)
    env = dict(gx.env, PATH=str(bindir) + os.pathsep + gx.env['PATH'], PZEM_WATCH_SECONDS='0.02')
    process = subprocess.Popen(['sh', gx.path('opt/pzem/install/pzem-install.sh'),
                                'watch-gateways'], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, universal_newlines=True)
    first = process.stdout.readline()
    assert 'following %s' % gx.path(MAP) in first
    yield process, lambda: len(runs.read_text().splitlines()) if runs.exists() else 0
    process.kill()
    process.wait()


def wait_for(check, timeout=10.0):
    """Waits until check() is true, looking every 20 ms (a file has no event to wait for)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_the_watcher_follows_the_map_and_runs_python_only_when_it_changed(gx, watcher):
    process, python_runs = watcher
    time.sleep(0.3)                                 # about 15 rounds with the map unchanged
    assert python_runs() == 0
    gx.write(MAP, gx.read(MAP) + '\n[gateway:barn]\nhost = barn-gw\nport = 8899\nkind = tcp\n')
    assert wait_for(lambda: 'dbus-pzem.barn' in linked(gx))
    assert services(gx)['dbus-pzem.barn'][1] == driver_run('tcp://barn-gw:8899')
    time.sleep(0.3)
    assert python_runs() == 1
    gx.write(MAP, gx.read(MAP).replace('[gateway:barn]', '[gateway:hayloft]'))
    assert wait_for(lambda: 'dbus-pzem.hayloft' in linked(gx) and 'dbus-pzem.barn' not in
                    linked(gx))
    assert python_runs() == 2
    assert process.poll() is None


STUCK_SVC = '''
set -eu
. "$INSTALL/common.sh"
. "$INSTALL/serial-starter.sh"
on_real_root() { true; }                # act as on the GX, in the folder
have() { true; }
svc() {
    echo "svc $*" >> "$PKG_ROOT/svc.calls"
    case "$2" in
    *garage) echo "svc: warning: unable to control $2: file does not exist" >&2; return 111 ;;
    esac
}
for_each_driver -t
echo "went on"
'''


def test_a_service_svscan_has_not_taken_up_yet_does_not_end_the_install(tmp_path):
    """configure runs for_each_driver -t under set -e; svc fails on a service linked less than
    about 5 s before (no supervise yet). A stand-in svc that fails so must not end it."""
    for name in ('dbus-pzem.ttyUSB0', 'dbus-pzem.garage'):
        os.makedirs(str(tmp_path / 'service' / name))
    done = subprocess.run(['sh', '-c', STUCK_SVC], env=dict(
        os.environ, PKG_ROOT=str(tmp_path), INSTALL=os.path.join(ROOT, 'package', 'opt', 'pzem',
                                                                 'install')),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout == 'went on\n'
    assert (tmp_path / 'svc.calls').read_text() == (
        'svc -t %s/service/dbus-pzem.garage\nsvc -t %s/service/dbus-pzem.ttyUSB0\n' % (
            tmp_path, tmp_path))
    assert done.stderr == ('pzem-install: %s/service/dbus-pzem.garage is not supervised yet '
                           '(svscan takes it up within 5 s): not told -t\n' % tmp_path)
