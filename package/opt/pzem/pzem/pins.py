"""Pinning a USB adapter to the pzem driver: a udev rule that sets VE_SERVICE=pzem for it, so
serial-starter starts only dbus-pzem on it. One implementation, for `pzemctl PORT pin|unpin` and
for the driver (its port service's /Pinned, written from the GUI page).

The rules live in $PKG_ROOT/data/conf/pzem-udev.rules, which survives firmware updates; the
installer's `pins` step copies them to /etc/udev/rules.d/zz-pzem.rules and reloads udev. Each
rule sits under its own tag comment, so unpin removes exactly the lines pin wrote. No console
I/O: every failure is a PinError whose str() is one sentence.
"""
import os
import stat

from . import udev

RULES = 'data/conf/pzem-udev.rules'
INSTALLER = 'opt/pzem/install/pzem-install.sh'
TAG = '# pzemctl pin '
HERE = os.path.dirname(os.path.realpath(__file__))     # .../opt/pzem/pzem


class PinError(Exception):
    """The adapter cannot be pinned (or unpinned) here; str() says why in one sentence."""


def pkg_root():
    return os.environ.get('PKG_ROOT', '')


def rules_path():
    return os.path.join(pkg_root() or '/', RULES)


def match_for(name, path):
    """(udev key, value) that names the adapter `name` at `path`: its USB serial number, else
    its USB port path. PinError when it is no USB adapter (a pseudo-terminal, a gateway)."""
    real = os.path.realpath(path)
    faked = os.environ.get('PZEM_UDEV_PROPERTIES')
    if real.startswith('/dev/pts/') and not faked:
        raise PinError('%s is a pseudo-terminal (%s), not a USB adapter: only USB adapters can '
                       'be pinned' % (name, real))
    if not faked and not _is_device(real):
        raise PinError('%s is not a serial device (%s): only USB adapters can be pinned'
                       % (name, path))
    try:
        props = udev.properties(path)
    except LookupError as e:
        raise PinError(str(e))
    if props.get('ID_BUS') != 'usb':
        raise PinError('%s is not a USB adapter (ID_BUS=%s): only USB adapters can be pinned'
                       % (name, props.get('ID_BUS', 'unknown')))
    for key in ('ID_SERIAL_SHORT', 'ID_PATH'):
        value = props.get(key, '')
        if value:
            if any(c in value for c in '"\\\n'):
                raise PinError('%s of %s holds characters a udev rule cannot match: %r'
                               % (key, name, value))
            return key, value
    raise PinError('%s has neither a USB serial number (ID_SERIAL_SHORT) nor a port path '
                   '(ID_PATH) to match; install udevadm or pin it by hand' % name)


def _is_device(path):
    try:
        return stat.S_ISCHR(os.stat(path).st_mode)
    except OSError:
        return False


def rule_lines(name, key, value):
    tag = '%s%s=%s (was %s)' % (TAG, key, value, name)
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
    except OSError as e:
        raise PinError('cannot read %s: %s' % (path, e.strerror))


def is_pinned(key, value):
    """Whether the rules file pins the adapter that (key, value) names."""
    return without_pin(read_rules(rules_path()), key, value)[1]


def write_rules(path, lines):
    """Atomically: a half-written rules file must never reach udev."""
    import tempfile     # here: with shutil, bz2 and lzma it is 0.5 MiB the driver need not hold
    directory = os.path.dirname(path)
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix='.pzem-udev.', dir=directory)
    except OSError as e:
        raise PinError('cannot write %s: %s' % (path, e.strerror))
    try:
        with os.fdopen(fd, 'w') as f:
            f.write(''.join(line + '\n' for line in lines))
        os.chmod(tmp, 0o644)
        os.rename(tmp, path)
    except OSError as e:
        os.unlink(tmp)
        raise PinError('cannot write %s: %s' % (path, e.strerror))
    except BaseException:
        os.unlink(tmp)
        raise


def installer():
    """The installer next to this copy of the package (the repo's or /opt/pzem's), else
    PKG_ROOT's."""
    candidates = [os.path.join(os.path.dirname(HERE), 'install', 'pzem-install.sh'),
                  os.path.join(pkg_root() or '/', INSTALLER)]
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise PinError('the installer is missing (looked for %s): the rule is saved in %s, but udev '
                   'does not know it yet' % (' and '.join(candidates), rules_path()))


def apply_rules():
    """Run the installer's pins step: it copies the rules to /etc/udev and reloads udev."""
    import subprocess
    script = installer()
    command = [script] if os.access(script, os.X_OK) else ['sh', script]
    done = subprocess.run(command + ['pins'])
    if done.returncode != 0:
        raise PinError('"%s pins" failed with status %d: the rules are saved in %s; run it again '
                       'once the cause is fixed' % (script, done.returncode, rules_path()))


def pin(name, path):
    """Write the adapter's rule (in place of an older one for it) and apply the rules; returns
    (key, value, whether it was pinned before, the rules file)."""
    key, value = match_for(name, path)
    rules = rules_path()
    lines, was_pinned = without_pin(read_rules(rules), key, value)
    write_rules(rules, lines + rule_lines(name, key, value))
    apply_rules()
    return key, value, was_pinned, rules


def unpin(name, path):
    """Remove the adapter's rule and apply the rules; returns (key, value, whether it was
    pinned, the rules file). Nothing is written when it was not pinned."""
    key, value = match_for(name, path)
    rules = rules_path()
    lines, was_pinned = without_pin(read_rules(rules), key, value)
    if was_pinned:
        write_rules(rules, lines)
        apply_rules()
    return key, value, was_pinned, rules
