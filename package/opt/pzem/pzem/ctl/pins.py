"""pin / unpin: a udev rule that gives one USB adapter to the pzem driver (VE_SERVICE=pzem).

The rules live in $PKG_ROOT/data/conf/pzem-udev.rules, which survives firmware updates; the
installer's `pins` step copies them to /etc/udev/rules.d/zz-pzem.rules and reloads udev. Each
rule sits under its own tag comment, so unpin removes exactly the lines pin wrote.
"""
import os
import subprocess
import tempfile

from .. import udev
from .console import Failure, note, say

RULES = 'data/conf/pzem-udev.rules'
INSTALLER = 'opt/pzem/install/pzem-install.sh'
TAG = '# pzemctl pin '
HERE = os.path.dirname(os.path.realpath(__file__))     # .../opt/pzem/pzem/ctl


def pkg_root():
    return os.environ.get('PKG_ROOT', '')


def rules_path():
    return os.path.join(pkg_root() or '/', RULES)


def match_for(port):
    """(udev key, value) that names this adapter: its USB serial number, else its USB port path."""
    real = os.path.realpath(port.path)
    if real.startswith('/dev/pts/') and not os.environ.get('PZEM_UDEV_PROPERTIES'):
        raise Failure('%s is a pseudo-terminal (%s), not a USB adapter: only USB adapters can be '
                      'pinned' % (port.name, real))
    try:
        props = udev.properties(port.path)
    except LookupError as e:
        raise Failure(str(e))
    if props.get('ID_BUS') != 'usb':
        raise Failure('%s is not a USB adapter (ID_BUS=%s): only USB adapters can be pinned'
                      % (port.name, props.get('ID_BUS', 'unknown')))
    for key in ('ID_SERIAL_SHORT', 'ID_PATH'):
        value = props.get(key, '')
        if value:
            if any(c in value for c in '"\\\n'):
                raise Failure('%s of %s holds characters a udev rule cannot match: %r'
                              % (key, port.name, value))
            return key, value
    raise Failure('%s has neither a USB serial number (ID_SERIAL_SHORT) nor a port path (ID_PATH) '
                  'to match; install udevadm or pin it by hand' % port.name)


def rule_lines(port, key, value):
    tag = '%s%s=%s (was %s)' % (TAG, key, value, port.name)
    rule = ('ACTION=="add", SUBSYSTEM=="tty", ENV{ID_BUS}=="usb", ENV{%s}=="%s", '
            'ENV{VE_SERVICE}="pzem"' % (key, value))
    return [tag, rule]


def without_pin(lines, key, value):
    """`lines` minus this adapter's tag and the rule under it; (lines, whether it was there)."""
    mine = '%s%s=%s ' % (TAG, key, value)
    kept, found, skip = [], False, False
    for line in lines:
        if skip:
            skip = False
            if 'ENV{%s}=="%s"' % (key, value) in line:
                continue
        if (line + ' ').startswith(mine):
            found, skip = True, True
            continue
        kept.append(line)
    return kept, found


def read_rules(path):
    try:
        with open(path) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def write_rules(path, lines):
    """Atomically: a half-written rules file must never reach udev."""
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.pzem-udev.', dir=directory)
    try:
        with os.fdopen(fd, 'w') as f:
            f.write(''.join(line + '\n' for line in lines))
        os.chmod(tmp, 0o644)
        os.rename(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def installer():
    """The installer next to this copy of pzemctl (the repo's or /opt/pzem's), else PKG_ROOT's."""
    candidates = [os.path.join(os.path.dirname(os.path.dirname(HERE)), 'install',
                               'pzem-install.sh'),
                  os.path.join(pkg_root() or '/', INSTALLER)]
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise Failure('the installer is missing (looked for %s): the rule is saved in %s, but udev '
                  'does not know it yet' % (' and '.join(candidates), rules_path()))


def apply_rules():
    """Run the installer's pins step: it copies the rules to /etc/udev and reloads udev."""
    script = installer()
    command = [script] if os.access(script, os.X_OK) else ['sh', script]
    done = subprocess.run(command + ['pins'])
    if done.returncode != 0:
        raise Failure('"%s pins" failed with status %d: the rules are saved in %s; run it again '
                      'once the cause is fixed' % (script, done.returncode, rules_path()))


def pin(port, args):
    key, value = match_for(port)
    path = rules_path()
    lines, was_pinned = without_pin(read_rules(path), key, value)
    write_rules(path, lines + rule_lines(port, key, value))
    say('%s %s (%s=%s) to the pzem driver in %s' % (
        'pinned again' if was_pinned else 'pinned', port.name, key, value, path))
    apply_rules()
    note('unplug and replug the adapter (or reboot) so serial-starter starts dbus-pzem on it')


def unpin(port, args):
    key, value = match_for(port)
    path = rules_path()
    lines, was_pinned = without_pin(read_rules(path), key, value)
    if not was_pinned:
        say('%s (%s=%s) is not pinned in %s: nothing to remove' % (port.name, key, value, path))
        return
    write_rules(path, lines)
    say('unpinned %s (%s=%s): its rule is removed from %s' % (port.name, key, value, path))
    apply_rules()
    note('unplug and replug the adapter (or reboot) so serial-starter probes it as before')
