"""The two artifacts of tools/mkipk.sh and the life of the add-on on a GX, in a folder used as root:
install, upgrade, remove (opkg's script order, emulated: no opkg client here), firmware update
and boot hook, and PzemMeter/setup with and without SetupHelper. Nothing touches the real /."""
import io
import json
import os
import re
import subprocess
import sys
import tarfile

import pytest

from packaging_helpers import (REPO, HOOK_MARK, Device, FakeOpkg, ar_member, build, control_fields,
                               sh, sha256, tar_member, tar_names, tar_tzv)

with open(os.path.join(REPO, 'package', 'opt', 'pzem', 'VERSION')) as _f:
    VERSION = _f.read().strip()
NEWER = VERSION + '.1'
EXAMPLE_MAP = os.path.join(REPO, 'package', 'data', 'conf', 'pzem.conf')
DEPENDS = ['python3-pymodbus', 'python3-pyserial', 'python3-dbus', 'python3-pygobject']
SCRIPTS = ('preinst', 'postinst', 'prerm', 'postrm')
TEMPLATE = 'opt/victronenergy/service-templates/dbus-pzem'
RULE = 'data/conf/serial-starter.d/zz-pzem.conf'
PINS = 'data/conf/pzem-udev.rules'
PINS_RULES = 'etc/udev/rules.d/zz-pzem.rules'
PZEMCTL = 'usr/bin/pzemctl'
PLUGIN_SRC = 'opt/pzem/gui-v2/PzemMeters.json'
PLUGIN = 'data/apps/available/venus-pzem/gui-v2/PzemMeters.json'
PLUGIN_LINK = 'data/apps/enabled/venus-pzem'
HOOK_LINE = ('[ -x /data/pzem/install/pzem-install.sh ] && /data/pzem/install/pzem-install.sh boot'
             ' || true ' + HOOK_MARK)

USER_RC_LOCAL = '#!/bin/sh\n# my own boot tweaks\necho hello > /tmp/hello\n\nexit 0\n'
SERIALBATTERY_CONF = ('service sbattery dbus-serialbattery\n'
                      'alias default gps:vedirect:sbattery\n'
                      'alias rs485 cgwacs:fzsonick:imt:modbus:sbattery\n')
STOCK_CONF = ('service gps gps-dbus\nservice vedirect vedirect-interface\n'
              'service cgwacs dbus-cgwacs\nservice fzsonick dbus-fzsonick\n'
              'service imt dbus-imt-si-rs485tc\nservice modbus dbus-modbus-client.serial\n'
              'alias default gps:vedirect\nalias rs485 cgwacs:fzsonick:imt:modbus\n'
              'include /data/conf/serial-starter.d\n')
RULE_WITH_SERIALBATTERY = ['service pzem dbus-pzem',
                           'alias default gps:vedirect:sbattery:pzem',
                           'alias rs485 cgwacs:fzsonick:imt:modbus:sbattery:pzem']
USER_PINS = 'ACTION=="add", ENV{ID_BUS}=="usb", ENV{ID_SERIAL_SHORT}=="A50285BI", ENV{VE_SERVICE}="pzem"\n'
USER_MAP_LINES = '\n[1]\nrole = grid\nname = MultiPlus AC in\n'


@pytest.fixture(scope='module')
def builds(tmp_path_factory):
    base = tmp_path_factory.mktemp('builds')
    return {'v1': build(base / 'one'), 'again': build(base / 'two'),
            'v2': build(base / 'three', version=NEWER)}


@pytest.fixture
def device(tmp_path):
    return Device(tmp_path)


@pytest.fixture
def gx(device):
    """A GX that already has dbus-serialbattery and the user's own rc.local."""
    device.firmware = {'etc/venus/serial-starter.conf': STOCK_CONF}
    device.write('etc/venus/serial-starter.conf', STOCK_CONF)
    device.write('data/conf/serial-starter.d/dbus-serialbattery.conf', SERIALBATTERY_CONF)
    device.write('data/rc.local', USER_RC_LOCAL, mode=0o755)
    return device


def rule_lines(device):
    return [l for l in device.read(RULE).splitlines() if l and not l.startswith('#')]


def inner_ipk(ipk):
    """The copy of the package the ipk carries for the firmware-update restore."""
    return tar_member(ar_member(ipk, 'data.tar.gz'), './opt/pzem/venus-pzem.ipk')


def user_changes_map(device):
    with open(device.path('data/conf/pzem.conf'), 'a') as f:
        f.write(USER_MAP_LINES)
    return device.read('data/conf/pzem.conf')


def user_pins(device):
    device.write(PINS, USER_PINS)
    device.installer('pins')


# -- the artifacts --------------------------------------------------------------------------------

def test_ipk_is_an_ar_archive_of_the_three_members(builds):
    ipk = builds['v1']['ipk']
    assert sh('ar', 't', ipk).stdout.split() == ['debian-binary', 'control.tar.gz', 'data.tar.gz']
    assert ar_member(ipk, 'debian-binary') == b'2.0\n'
    assert sha256(builds['v1']['copy']) == sha256(ipk)


def test_control_fields(builds):
    ipk = builds['v1']['ipk']
    info = sh('dpkg-deb', '--info', ipk).stdout
    assert 'Package: venus-pzem' in info
    fields = control_fields(ipk)
    assert fields['Package'] == 'venus-pzem'
    assert fields['Version'] == VERSION
    assert fields['Architecture'] == 'all'
    assert [d.strip() for d in fields['Depends'].split(',')] == DEPENDS
    for key in ('Maintainer', 'Description', 'Section', 'License'):
        assert fields[key], key
    assert 'PZEM-016' in fields['Description']


def test_control_archive_has_executable_scripts_and_the_conffile(builds):
    control = ar_member(builds['v1']['ipk'], 'control.tar.gz')
    assert tar_member(control, './conffiles') == b'/data/conf/pzem.conf\n'
    with open(os.path.join(os.path.dirname(builds['v1']['ipk']), 'control.tar.gz'), 'wb') as f:
        f.write(control)
    rows = {name: (mode, owner) for mode, owner, name in tar_tzv(f.name)}
    for script in SCRIPTS:
        assert rows['./' + script] == ('-rwxr-xr-x', '0/0'), script
        assert tar_member(control, './' + script).startswith(b'#!/bin/sh\n'), script
    assert rows['./control'] == ('-rw-r--r--', '0/0')


def test_data_archive_is_the_package_folder_owned_by_root(builds):
    rows = [line.split(None, 5) for line in
            sh('dpkg-deb', '--contents', builds['v1']['ipk']).stdout.splitlines()]
    entries = {row[5].split(' -> ')[0]: (row[0], row[1]) for row in rows}
    links = {name: target for name, _, target in
             (row[5].partition(' -> ') for row in rows if row[0].startswith('l'))}
    assert links == {'./usr/bin/pzemctl': '/opt/pzem/pzemctl'}     # opkg owns the command
    assert all(owner == '0/0' for _, owner in entries.values())
    assert all(mode in ('drwxr-xr-x', '-rwxr-xr-x', '-rw-r--r--') for name, (mode, _) in
               entries.items() if name not in links)
    for path in ('./opt/pzem/install/pzem-install.sh', './opt/pzem/service-template/run',
                 './opt/pzem/service-template/log/run'):
        assert entries[path][0] == '-rwxr-xr-x', path
    assert entries['./data/conf/pzem.conf'][0] == '-rw-r--r--'
    # every file of package/ but CONTROL, nothing a working tree collects, plus the inner ipk
    expected = {'./opt/pzem/venus-pzem.ipk', './opt/pzem/LICENSE', './' + PLUGIN_SRC}
    for top, dirs, files in os.walk(os.path.join(REPO, 'package')):
        dirs[:] = [d for d in dirs if d not in ('CONTROL', '__pycache__') and not d.startswith('.')]
        for name in files:
            if not name.startswith('.') and not name.endswith(('.pyc', '.pyo', '~')):
                rel = os.path.relpath(os.path.join(top, name), os.path.join(REPO, 'package'))
                expected.add('./' + rel)
                if os.access(os.path.join(top, name), os.X_OK) and \
                        not os.path.islink(os.path.join(top, name)):
                    assert entries['./' + rel][0] == '-rwxr-xr-x', rel
    assert {p for p, (mode, _) in entries.items() if not mode.startswith('d')} == expected
    assert tar_member(ar_member(builds['v1']['ipk'], 'data.tar.gz'),
                      './opt/pzem/VERSION') == (VERSION + '\n').encode()


def test_the_inner_ipk_is_the_same_package_without_its_own_copy(builds, tmp_path):
    inner = tmp_path / 'inner.ipk'
    inner.write_bytes(inner_ipk(builds['v1']['ipk']))
    outer_data = ar_member(builds['v1']['ipk'], 'data.tar.gz')
    assert ar_member(str(inner), 'control.tar.gz') == ar_member(builds['v1']['ipk'], 'control.tar.gz')
    assert set(tar_names(ar_member(str(inner), 'data.tar.gz'))) == \
        set(tar_names(outer_data)) - {'./opt/pzem/venus-pzem.ipk'}


def test_setuphelper_tarball(builds):
    tarball = builds['v1']['tarball']
    assert os.path.basename(tarball) == 'PzemMeter-%s.tar.gz' % VERSION
    rows = {name: (mode, owner) for mode, owner, name in tar_tzv(tarball)}
    assert all(name == 'PzemMeter/' or name.startswith('PzemMeter/') for name in rows)
    assert all(owner == '0/0' for _, owner in rows.values())
    assert rows['PzemMeter/setup'][0] == '-rwxr-xr-x'
    assert rows['PzemMeter/install/pzem-install.sh'][0] == '-rwxr-xr-x'
    with open(tarball, 'rb') as f:
        data = f.read()
    assert tar_member(data, 'PzemMeter/version') == ('v%s\n' % VERSION).encode()
    assert tar_member(data, 'PzemMeter/venus-pzem.ipk') == open(builds['v1']['ipk'], 'rb').read()
    assert tar_member(data, 'PzemMeter/setup').startswith(b'#!/bin/bash\n')
    assert re.match(rb'v3\.\d\d\n$', tar_member(data, 'PzemMeter/firstCompatibleVersion'))


def test_license_and_maintainer_come_from_one_place_each(builds):
    fields = control_fields(builds['v1']['ipk'])
    with open(os.path.join(REPO, 'LICENSE')) as f:
        license_text = f.read()
    assert license_text.startswith(fields['License'] + ' License\n')
    maintainer = [line for line in open(os.path.join(REPO, 'MAINTAINER'))
                  if line.strip() and not line.startswith('#')][0].strip()
    assert re.match(r'.+ <[^ @]+@[^ @]+>$', maintainer)
    assert fields['Maintainer'] == maintainer
    with open(builds['v1']['tarball'], 'rb') as f:
        tarball = f.read()
    readme = tar_member(tarball, 'PzemMeter/ReadMe').decode()
    assert 'Maintainer: %s\n' % maintainer in readme and 'License: MIT' in readme
    assert tar_member(tarball, 'PzemMeter/LICENSE').decode() == license_text
    assert tar_member(ar_member(builds['v1']['ipk'], 'data.tar.gz'),
                      './opt/pzem/LICENSE').decode() == license_text


def test_the_maintainer_option_reaches_the_ipk_and_setuphelper(tmp_path):
    who = 'Jane Doe <jane@example.org>'
    done = sh('sh', os.path.join(REPO, 'tools', 'mkipk.sh'), '--maintainer', who, '--out',
              str(tmp_path))
    assert 'placeholder' not in done.stderr
    assert control_fields(str(tmp_path / 'venus-pzem.ipk'))['Maintainer'] == who
    with open(str(tmp_path / ('PzemMeter-%s.tar.gz' % VERSION)), 'rb') as f:
        assert 'Maintainer: %s\n' % who in tar_member(f.read(), 'PzemMeter/ReadMe').decode()


@pytest.mark.parametrize('who', ['Jane Doe', 'Jane <jane>', 'Jane & Co <jane@example.org>'])
def test_a_maintainer_without_a_contact_is_refused(tmp_path, who):
    done = sh('sh', os.path.join(REPO, 'tools', 'mkipk.sh'), '--maintainer', who, '--out',
              str(tmp_path), check=False)
    assert done.returncode == 1 and done.stderr.startswith('mkipk: ') and 'maintainer' in done.stderr
    assert not os.listdir(str(tmp_path))


def test_two_builds_are_byte_identical(builds):
    for key in ('ipk', 'copy', 'tarball'):
        assert sha256(builds['v1'][key]) == sha256(builds['again'][key]), key


def test_archives_hold_one_time_not_the_checkouts(builds):
    epoch = os.environ.get('SOURCE_DATE_EPOCH') or \
        sh('git', '-C', REPO, 'log', '-1', '--format=%ct').stdout.strip()
    with open(builds['v1']['tarball'], 'rb') as f:
        tarballs = [f.read()]
    tarballs += [ar_member(builds['v1']['ipk'], m) for m in ('control.tar.gz', 'data.tar.gz')]
    for data in tarballs:
        with tarfile.open(fileobj=io.BytesIO(data), mode='r:gz') as tar:
            assert {m.mtime for m in tar.getmembers()} == {int(epoch)}
            assert {(m.uid, m.gid, m.uname, m.gname) for m in tar.getmembers()} == {(0, 0, '', '')}


def test_version_override_reaches_control_driver_and_setuphelper(builds):
    v2 = builds['v2']
    assert control_fields(v2['ipk'])['Version'] == NEWER
    assert tar_member(ar_member(v2['ipk'], 'data.tar.gz'), './opt/pzem/VERSION') == \
        (NEWER + '\n').encode()
    with open(v2['tarball'], 'rb') as f:
        assert tar_member(f.read(), 'PzemMeter/version') == ('v%s\n' % NEWER).encode()


def test_a_missing_tool_is_named(tmp_path):
    bindir = tmp_path / 'bin'
    bindir.mkdir()
    for tool in ('sh', 'tar', 'gzip', 'find', 'sed', 'grep', 'tr', 'dirname', 'mktemp', 'rm', 'git',
                 'cat', 'cp', 'mkdir', 'sort', 'mv', 'chmod'):
        found = subprocess.run(['sh', '-c', 'command -v ' + tool], stdout=subprocess.PIPE,
                               universal_newlines=True).stdout.strip()
        if found:
            os.symlink(found, str(bindir / tool))
    done = sh(str(bindir / 'sh'), os.path.join(REPO, 'tools', 'mkipk.sh'), '--out',
              str(tmp_path / 'out'), env=dict(os.environ, PATH=str(bindir)), check=False)
    assert done.returncode != 0
    assert "'ar' is missing" in done.stderr and 'binutils' in done.stderr
    assert not (tmp_path / 'out').exists()


def test_a_bad_version_is_refused(tmp_path):
    done = sh('sh', os.path.join(REPO, 'tools', 'mkipk.sh'), '--version', 'v1.0',
              '--out', str(tmp_path), check=False)
    assert done.returncode != 0 and 'must start with a digit' in done.stderr


def test_scripts_are_posix_sh(builds):
    install = os.path.join(REPO, 'package', 'opt', 'pzem', 'install')
    scripts = [os.path.join(REPO, 'package', 'CONTROL', s) for s in SCRIPTS]
    scripts += [os.path.join(install, n) for n in os.listdir(install) if n.endswith('.sh')]
    scripts.append(os.path.join(REPO, 'tools', 'mkipk.sh'))
    for script in scripts:
        sh('dash', '-n', script)
    sh('bash', '-n', os.path.join(REPO, 'setuphelper', 'PzemMeter', 'setup'))


def test_example_map_changes_nothing_and_its_examples_parse(tmp_path):
    from pzem import meter_map
    as_shipped = meter_map.load(EXAMPLE_MAP)
    assert as_shipped.problems == []
    assert as_shipped.meters_for('ttyUSB0') == []
    with open(EXAMPLE_MAP) as f:
        lines = f.read().splitlines()
    # uncomment the example sections: `# [N]` and the `# key = value` lines that follow them
    active, in_example = [], False
    for line in lines:
        if re.match(r'# \[[^\]]+\]$', line):
            in_example = True
        elif not re.match(r'# [a-z_]+ = ', line):
            in_example = False
        active.append(line[2:] if in_example else line)
    path = tmp_path / 'pzem.conf'
    path.write_text('\n'.join(active) + '\n')
    examples = meter_map.load(str(path))
    assert examples.problems == []
    assert [m.addresses for m in examples.meters_for('ttyUSB1')] == [
        (1,), (2,), (3,), (4,), (5,), (11, 12, 13)]
    assert [m.addresses for m in examples.meters_for('ttyUSB0')] == [
        (1,), (2,), (3,), (4,), (11, 12, 13)]
    assert [m.group for m in examples.meters_for('ttyUSB0') if m.group] == ['mains']
    assert examples.bus_options('ttyUSB0')['baudrate'] == 9600


# -- install, upgrade, remove (opkg's order, emulated) -------------------------------------------

def test_fresh_install(gx, builds):
    opkg = FakeOpkg(gx)
    opkg.install(builds['v1']['ipk'])
    assert opkg.calls == [('preinst', 'install'), ('postinst', 'configure')]
    assert gx.read(TEMPLATE + '/run') == '#!/bin/sh\n' \
        '# serial-starter copies this folder once per port and puts the port name in place of ' \
        'the placeholder.\nexec 2>&1\nexec /opt/pzem/dbus-pzem TTY\n'
    assert gx.read(TEMPLATE + '/log/run') == \
        '#!/bin/sh\nexec multilog t s25000 n4 /var/log/dbus-pzem.TTY\n'
    assert gx.mode(TEMPLATE + '/run') == gx.mode(TEMPLATE + '/log/run') == 0o755
    assert gx.exists(TEMPLATE + '/down')
    assert rule_lines(gx) == RULE_WITH_SERIALBATTERY
    assert gx.read('data/conf/serial-starter.d/dbus-serialbattery.conf') == SERIALBATTERY_CONF
    assert gx.read('data/rc.local') == USER_RC_LOCAL.replace('exit 0', HOOK_LINE + '\nexit 0')
    assert gx.mode('data/rc.local') == 0o755
    with open(gx.path('data/pzem/venus-pzem.ipk'), 'rb') as f:
        assert f.read() == inner_ipk(builds['v1']['ipk'])
    assert gx.mode('data/pzem/install/pzem-install.sh') == 0o755
    with open(EXAMPLE_MAP) as f:
        assert gx.read('data/conf/pzem.conf') == f.read()
    assert not gx.exists(PINS_RULES)
    assert_plugin_installed(gx)
    assert gx.tool_calls() == []


def assert_plugin_installed(device):
    """The gui-v2 plugin in /data/apps, enabled by a relative link (it holds in a folder as root
    and on the GX), the same file as the package's."""
    assert device.read(PLUGIN) == device.read(PLUGIN_SRC)
    assert json.loads(device.read(PLUGIN))['name'] == 'PzemMeters'
    assert os.readlink(device.path(PLUGIN_LINK)) == '../available/venus-pzem'
    assert os.path.samefile(device.path(PLUGIN_LINK + '/gui-v2/PzemMeters.json'),
                            device.path(PLUGIN))
    assert device.mode(PLUGIN) == 0o644


def test_the_boot_hook_puts_the_gui_plugin_back_and_drops_an_old_one(gx, builds):
    FakeOpkg(gx).install(builds['v1']['ipk'])
    os.unlink(gx.path(PLUGIN_LINK))                 # disabled by hand, or an older version's
    gx.write('data/apps/available/venus-pzem/gui-v2/OldName.json', '{}')
    gx.write(PLUGIN, '{"name": "PzemMeters", "version": "0.9"}')
    gx.run_boot_hook()
    assert_plugin_installed(gx)
    assert not gx.exists('data/apps/available/venus-pzem/gui-v2/OldName.json')
    assert 'GUI plugin installed again' in gx.read('data/log/pzem-install.log')
    settled = gx.snapshot(skip=('data/log',))
    gx.run_boot_hook()
    assert gx.snapshot(skip=('data/log',)) == settled


def test_the_gui_plugin_leaves_other_apps_alone(gx, builds):
    gx.write('data/apps/available/OtherApp/gui-v2/OtherApp.json', '{}')
    os.makedirs(gx.path('data/apps/enabled'))
    os.symlink('../available/OtherApp', gx.path('data/apps/enabled/OtherApp'))
    opkg = FakeOpkg(gx)
    opkg.install(builds['v1']['ipk'])
    assert_plugin_installed(gx)
    opkg.remove()
    assert not gx.exists(PLUGIN_LINK) and not gx.exists('data/apps/available/venus-pzem')
    assert gx.read('data/apps/enabled/OtherApp/gui-v2/OtherApp.json') == '{}'


def test_pzemctl_is_a_command_on_the_path(gx, builds, tmp_path):
    FakeOpkg(gx).install(builds['v1']['ipk'])
    assert os.readlink(gx.path(PZEMCTL)) == '/opt/pzem/pzemctl'
    assert gx.mode('opt/pzem/pzemctl') == 0o755
    # run the way the link runs it: the script finds its package through the link
    link = tmp_path / 'pzemctl'
    os.symlink(gx.path('opt/pzem/pzemctl'), str(link))
    done = sh(sys.executable, str(link), '--help')
    assert done.stdout.startswith('usage: pzemctl')


def test_configure_twice_changes_nothing(gx, builds):
    FakeOpkg(gx).install(builds['v1']['ipk'])
    before = gx.snapshot()
    gx.installer('configure')
    assert gx.snapshot() == before


def test_rc_local_is_created_with_a_shebang_and_run_bit(device, builds):
    FakeOpkg(device).install(builds['v1']['ipk'])
    assert device.read('data/rc.local') == '#!/bin/sh\n' + HOOK_LINE + '\n'
    assert device.mode('data/rc.local') == 0o755


def test_hook_goes_to_the_end_when_rc_local_has_no_exit(device, builds):
    device.write('data/rc.local', '#!/bin/sh\nmount -o remount,rw /\n', mode=0o755)
    FakeOpkg(device).install(builds['v1']['ipk'])
    assert device.read('data/rc.local') == '#!/bin/sh\nmount -o remount,rw /\n' + HOOK_LINE + '\n'


def test_pins_are_installed_changed_and_taken_out(gx, builds):
    FakeOpkg(gx).install(builds['v1']['ipk'])
    user_pins(gx)
    assert gx.read(PINS_RULES) == USER_PINS
    other = USER_PINS.replace('A50285BI', 'B0001')
    gx.write(PINS, other)
    gx.installer('pins')
    assert gx.read(PINS_RULES) == other
    os.unlink(gx.path(PINS))
    gx.installer('pins')
    assert not gx.exists(PINS_RULES)
    assert gx.tool_calls() == []


def test_upgrade_keeps_the_changed_map_pins_hook_and_rule(gx, builds):
    opkg = FakeOpkg(gx)
    opkg.install(builds['v1']['ipk'])
    user_map = user_changes_map(gx)
    user_pins(gx)
    opkg.calls = []
    missing = {}

    def still_there(call):     # nothing of ours may go away in the middle of an upgrade
        missing[call] = [p for p in (TEMPLATE + '/run', RULE, PINS_RULES, 'data/pzem/venus-pzem.ipk',
                                     'data/pzem/install/pzem-install.sh', 'data/conf/pzem.conf',
                                     PZEMCTL)
                         if not gx.exists(p)] + ([] if gx.hook_lines() else ['hook'])

    opkg.after_script = still_there
    opkg.install(builds['v2']['ipk'])
    assert opkg.calls == [('prerm', 'upgrade', NEWER), ('preinst', 'upgrade', VERSION),
                          ('postrm', 'upgrade', NEWER), ('postinst', 'configure')]
    assert missing == {call: [] for call in opkg.calls}
    assert gx.read('opt/pzem/VERSION') == NEWER + '\n'
    assert os.readlink(gx.path(PZEMCTL)) == '/opt/pzem/pzemctl'
    assert gx.read('data/conf/pzem.conf') == user_map
    with open(EXAMPLE_MAP) as f:
        assert gx.read('data/conf/pzem.conf-opkg') == f.read()
    assert gx.read(PINS) == USER_PINS and gx.read(PINS_RULES) == USER_PINS
    assert gx.hook_lines() == [HOOK_LINE]
    assert rule_lines(gx) == RULE_WITH_SERIALBATTERY
    assert gx.exists(TEMPLATE + '/run')
    with open(gx.path('data/pzem/venus-pzem.ipk'), 'rb') as f:
        assert f.read() == inner_ipk(builds['v2']['ipk'])
    assert gx.tool_calls() == []


def test_remove_takes_out_what_it_added_and_keeps_the_users_work(gx, builds):
    opkg = FakeOpkg(gx)
    opkg.install(builds['v1']['ipk'])
    user_map = user_changes_map(gx)
    user_pins(gx)
    opkg.install(builds['v2']['ipk'])       # leaves pzem.conf-opkg beside the changed map
    opkg.calls = []
    opkg.remove()
    assert opkg.calls == [('prerm', 'remove'), ('postrm', 'remove')]
    for gone in (TEMPLATE, RULE, PINS_RULES, 'data/pzem', 'opt/pzem', 'data/conf/pzem.conf-opkg',
                 PZEMCTL, 'data/apps'):
        assert not gx.exists(gone), gone
    assert gx.read('data/rc.local') == USER_RC_LOCAL
    assert gx.read('data/conf/serial-starter.d/dbus-serialbattery.conf') == SERIALBATTERY_CONF
    assert gx.read('etc/venus/serial-starter.conf') == STOCK_CONF
    assert gx.read('data/conf/pzem.conf') == user_map
    assert gx.read(PINS) == USER_PINS
    assert gx.tool_calls() == []


def test_remove_of_an_untouched_install_leaves_no_file(device, builds):
    opkg = FakeOpkg(device)
    opkg.install(builds['v1']['ipk'])
    opkg.remove()
    assert device.snapshot(skip=('run',)) == {}


def test_reinstall_after_a_remove_keeps_the_kept_map(gx, builds):
    opkg = FakeOpkg(gx)
    opkg.install(builds['v1']['ipk'])
    user_map = user_changes_map(gx)
    opkg.remove()
    opkg.install(builds['v1']['ipk'])
    assert gx.read('data/conf/pzem.conf') == user_map
    assert not gx.exists('data/conf/pzem.conf-opkg')
    assert not gx.exists('data/conf/pzem.conf.pzem-keep')


# -- firmware update and the boot hook ------------------------------------------------------------

RUNTIME = ('run', 'usr/lib/opkg', 'data/log', 'opt/pzem/venus-pzem.ipk')


def test_firmware_update_brings_everything_back_twice_without_duplicates(gx, builds):
    FakeOpkg(gx).install(builds['v1']['ipk'])
    user_map = user_changes_map(gx)
    user_pins(gx)
    installed = gx.snapshot(skip=RUNTIME)
    for update in range(2):
        gx.firmware_update()
        assert not gx.exists('opt') and not gx.exists('etc/udev')
        gx.run_boot_hook()
        assert 'installing' in gx.read('data/log/pzem-install.log')
        assert gx.snapshot(skip=RUNTIME) == installed, 'after update %d' % (update + 1)
        assert gx.read('data/conf/pzem.conf') == user_map
        assert gx.read(PINS_RULES) == USER_PINS
        assert gx.read('data/rc.local').count(HOOK_MARK) == 1
        assert rule_lines(gx) == RULE_WITH_SERIALBATTERY
        assert os.readlink(gx.path(PZEMCTL)) == '/opt/pzem/pzemctl'
    assert gx.exists('opt/pzem/dbus-pzem') and gx.exists(TEMPLATE + '/run')
    settled = gx.snapshot(skip=('data/log',))
    gx.run_boot_hook()
    gx.run_boot_hook()
    assert gx.snapshot(skip=('data/log',)) == settled
    assert gx.tool_calls() == []


def test_after_a_restore_the_installer_removes_it_without_opkg(gx, builds):
    FakeOpkg(gx).install(builds['v1']['ipk'])
    user_map = user_changes_map(gx)
    user_pins(gx)
    gx.firmware_update()
    gx.run_boot_hook()
    gx.run('sh', gx.path('data/pzem/install/pzem-install.sh'), 'uninstall-ipk')
    for gone in (TEMPLATE, RULE, PINS_RULES, 'data/pzem', 'opt/pzem', PZEMCTL, 'usr/bin'):
        assert not gx.exists(gone), gone
    assert gx.read('data/rc.local') == USER_RC_LOCAL
    assert gx.read('data/conf/pzem.conf') == user_map and gx.read(PINS) == USER_PINS
    assert gx.read('data/conf/serial-starter.d/dbus-serialbattery.conf') == SERIALBATTERY_CONF


def test_boot_hook_follows_other_addons_aliases(gx, builds):
    FakeOpkg(gx).install(builds['v1']['ipk'])
    gx.write('data/conf/serial-starter.d/dbus-mppsolar.conf',
             'service mppsolar dbus-mppsolar\nalias default gps:vedirect:mppsolar\n')
    gx.run_boot_hook()
    # in the order serial-starter reads the files: dbus-mppsolar.conf before dbus-serialbattery.conf
    assert rule_lines(gx) == ['service pzem dbus-pzem',
                              'alias default gps:vedirect:mppsolar:sbattery:pzem',
                              'alias rs485 cgwacs:fzsonick:imt:modbus:sbattery:pzem']
    assert sorted(os.listdir(gx.path('data/conf/serial-starter.d')))[-1] == 'zz-pzem.conf'
    os.unlink(gx.path('data/conf/serial-starter.d/dbus-serialbattery.conf'))
    gx.run_boot_hook()
    assert rule_lines(gx) == ['service pzem dbus-pzem',
                              'alias default gps:vedirect:mppsolar:pzem',
                              'alias rs485 cgwacs:fzsonick:imt:modbus:pzem']


def test_without_a_stock_conf_victrons_stock_aliases_are_kept(device, builds):
    FakeOpkg(device).install(builds['v1']['ipk'])
    assert rule_lines(device) == ['service pzem dbus-pzem', 'alias default gps:vedirect:pzem',
                                  'alias rs485 cgwacs:fzsonick:imt:modbus:pzem']


# -- PzemMeter/setup -------------------------------------------------------------------------------

def unpack_setuphelper_package(device, tarball, firmware='v3.60'):
    device.write('etc/venus/machine', 'einstein\n')
    device.write('opt/victronenergy/version', firmware + '\n20250101000000 v3.60\n')
    os.makedirs(device.path('data'), exist_ok=True)
    sh('tar', '-xzf', tarball, '-C', device.path('data'))
    return device.path('data/PzemMeter/setup')


def test_setup_standalone_install_check_reinstall_uninstall(gx, builds):
    setup = unpack_setuphelper_package(gx, builds['v1']['tarball'])
    said = gx.run(setup, 'install', 'auto').stdout
    assert 'venus-pzem %s is installed' % VERSION in said
    for step in ('pzemctl ttyUSB0 info', '/data/conf/pzem.conf', 'pzemctl check-config',
                 'pzemctl status'):
        assert step in said, step
    assert max(len(line) for line in said.splitlines()) <= 80
    assert gx.read('etc/venus/installedVersion-PzemMeter') == 'v%s\n' % VERSION
    assert gx.exists('opt/pzem/dbus-pzem') and gx.exists(TEMPLATE + '/run')
    assert rule_lines(gx) == RULE_WITH_SERIALBATTERY and gx.hook_lines() == [HOOK_LINE]
    assert gx.exists('data/pzem/venus-pzem.ipk')
    assert gx.run(setup, 'check', 'runFromPm').returncode == 0
    installed = gx.snapshot(skip=('run',))
    gx.run(setup, 'reinstall', 'auto')
    assert gx.snapshot(skip=('run',)) == installed
    said = gx.run(setup, 'uninstall', 'runFromPm').stdout
    assert 'venus-pzem is removed' in said
    assert not gx.exists('etc/venus/installedVersion-PzemMeter')
    assert gx.exists('data/setupOptions/PzemMeter/DO_NOT_AUTO_INSTALL')
    for gone in (TEMPLATE, RULE, 'data/pzem', 'opt/pzem', 'data/conf/pzem.conf', PZEMCTL):
        assert not gx.exists(gone), gone
    assert gx.read('data/rc.local') == USER_RC_LOCAL
    assert gx.exists('data/PzemMeter/setup')       # PackageManager's copy is its own business
    assert gx.tool_calls() == []


def test_setup_standalone_prechecks(device, builds):
    setup = unpack_setuphelper_package(device, builds['v1']['tarball'], firmware='v2.90')
    assert device.run(setup, 'install', 'auto', check=False).returncode == 254
    os.unlink(device.path('etc/venus/machine'))
    assert device.run(setup, 'check', 'auto', check=False).returncode == 253
    assert not device.exists('opt/pzem') and not device.exists('data/rc.local')
    assert device.run(setup, 'auto', check=False).returncode == 255   # no action, no terminal


# A STAND-IN for SetupHelper's HelperResources/IncludeHelpers, NOT SetupHelper itself: only the few
# names our setup uses, with the behaviour reference/packaging.md A4 records (argument parsing into
# scriptAction, the exit codes, setInstallFailed, endScript writing or removing installedVersion).
# It writes /etc/venus under PKG_ROOT, which the real one does not.
HELPERS_STAND_IN = r'''
scriptDir="$( cd "$(dirname $0)" >/dev/null 2>&1 ; /bin/pwd -P )"
packageName=$(basename "$scriptDir")
installedVersionFile="${PKG_ROOT%/}/etc/venus/installedVersion-$packageName"
EXIT_SUCCESS=0; EXIT_ERROR=255
scriptAction=NONE; installFailed=false
for arg in "$@"; do
    case $arg in install) scriptAction=INSTALL;; uninstall) scriptAction=UNINSTALL;;
    check) [ $scriptAction == NONE ] && scriptAction=CHECK;; esac
done
echo "stand-in helpers: $scriptAction" >> "${PKG_ROOT%/}/../helpers.log"
if [ $scriptAction == CHECK ]; then exit $EXIT_SUCCESS; fi
setInstallFailed () { installFailed=true; echo "$2" >&2; exit $1; }
standardActionPrompt () { exit $EXIT_SUCCESS; }
endScript () {
    if [ $scriptAction == INSTALL ]; then
        mkdir -p "$(dirname "$installedVersionFile")"; cp "$scriptDir/version" "$installedVersionFile"
    elif [ $scriptAction == UNINSTALL ]; then rm -f "$installedVersionFile"; fi
    echo "stand-in helpers: endScript" >> "${PKG_ROOT%/}/../helpers.log"
    exit $EXIT_SUCCESS
}
'''


def test_setup_under_setuphelper_uses_its_helpers(gx, builds, tmp_path):
    setup = unpack_setuphelper_package(gx, builds['v1']['tarball'])
    gx.write('data/SetupHelper/HelperResources/IncludeHelpers', HELPERS_STAND_IN)
    gx.run(setup, 'install', 'runFromPm')
    assert gx.read('etc/venus/installedVersion-PzemMeter') == 'v%s\n' % VERSION
    assert gx.exists('opt/pzem/dbus-pzem') and rule_lines(gx) == RULE_WITH_SERIALBATTERY
    assert os.readlink(gx.path(PZEMCTL)) == '/opt/pzem/pzemctl'
    assert not gx.exists('data/setupOptions')      # the standalone part did not run
    gx.run(setup, 'check', 'runFromPm')
    gx.run(setup, 'uninstall', 'runFromPm')
    assert not gx.exists('etc/venus/installedVersion-PzemMeter') and not gx.exists('opt/pzem')
    assert not gx.exists(PZEMCTL)
    assert gx.read('data/rc.local') == USER_RC_LOCAL
    with open(str(tmp_path / 'helpers.log')) as f:
        assert f.read().splitlines() == [
            'stand-in helpers: INSTALL', 'stand-in helpers: endScript',
            'stand-in helpers: CHECK',
            'stand-in helpers: UNINSTALL', 'stand-in helpers: endScript']


# -- tools/setup-env.sh ----------------------------------------------------------------------------

def fake_path(tmp_path, tools, fakes=None):
    """A PATH with only `tools` (linked from this machine) and `fakes` ({name: script body})."""
    bindir = tmp_path / 'bin'
    bindir.mkdir()
    for tool in tools:
        found = subprocess.run(['sh', '-c', 'command -v ' + tool], stdout=subprocess.PIPE,
                               universal_newlines=True).stdout.strip()
        os.symlink(found, str(bindir / tool))
    for name, body in (fakes or {}).items():
        (bindir / name).write_text('#!/bin/sh\n' + body)
        (bindir / name).chmod(0o755)
    return str(bindir)


def test_setup_env_says_it_needs_debian(tmp_path):
    path = fake_path(tmp_path, ('bash', 'dirname'))
    done = sh(path + '/bash', os.path.join(REPO, 'tools', 'setup-env.sh'),
              env=dict(os.environ, PATH=path), check=False)
    assert done.returncode == 1
    assert done.stderr.startswith('setup-env: this needs Debian or Ubuntu (apt-get)')
    assert len(done.stderr.splitlines()) == 1


def test_setup_env_uses_sudo_when_not_root(tmp_path):
    calls = tmp_path / 'calls'
    path = fake_path(tmp_path, ('bash', 'dirname', 'env'), {
        'id': 'echo 1000\n',
        'apt-get': 'echo "apt-get $*" >> "%s"\n' % calls,
        'sudo': 'echo "sudo $*" >> "%s"\nexit 1\n' % calls})    # stops it before the venvs
    done = sh(path + '/bash', os.path.join(REPO, 'tools', 'setup-env.sh'),
              env=dict(os.environ, PATH=path), check=False)
    assert done.returncode == 1
    assert calls.read_text() == 'sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq\n'
