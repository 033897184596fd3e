"""The udev properties of a serial port (ID_BUS, ID_SERIAL_SHORT, ID_PATH, VE_SERVICE, ...).

From `udevadm info -q property -n DEV` where udevadm exists (it does on Venus OS), else from
sysfs. PZEM_UDEV_PROPERTIES=FILE (KEY=VALUE lines) replaces both: the test machine has no USB
adapter, so the tests describe one in a file. Failures raise LookupError with one clear sentence.
"""
import os

UDEVADM_DIRS = ('/bin', '/sbin', '/usr/bin', '/usr/sbin')


def parse(text):
    props = {}
    for line in text.splitlines():
        key, eq, value = line.strip().partition('=')
        if eq and key and not key.startswith('#'):
            props[key] = value
    return props


def properties(path):
    """The udev properties of the device at path (/dev/ttyUSB0)."""
    override = os.environ.get('PZEM_UDEV_PROPERTIES')
    if override:
        try:
            with open(override) as f:
                return parse(f.read())
        except OSError as e:
            raise LookupError('cannot read PZEM_UDEV_PROPERTIES file %s: %s'
                          % (override, e.strerror))
    udevadm = next((os.path.join(d, 'udevadm') for d in UDEVADM_DIRS
                    if os.access(os.path.join(d, 'udevadm'), os.X_OK)), None)
    if udevadm:
        import subprocess   # here: a driver on a pseudo-terminal or a gateway never runs udevadm
        done = subprocess.run([udevadm, 'info', '-q', 'property', '-n', path],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True)
        if done.returncode != 0:
            raise LookupError('udevadm knows no device %s: %s' % (path, done.stderr.strip()))
        return parse(done.stdout)
    return from_sysfs(os.path.basename(os.path.realpath(path)))


def from_sysfs(tty, sys_root='/sys'):
    """What udev would say, as far as sysfs tells it: ID_BUS, vendor, model and serial."""
    device = os.path.join(sys_root, 'class', 'tty', tty, 'device')
    if not os.path.exists(device):
        raise LookupError('%s is not a serial device the kernel knows (no %s)' % (tty, device))
    here = os.path.realpath(device)
    while here != os.path.dirname(here):
        if os.path.isfile(os.path.join(here, 'idVendor')):
            props = {'ID_BUS': 'usb', 'ID_VENDOR_ID': read(here, 'idVendor'),
                     'ID_MODEL_ID': read(here, 'idProduct')}
            serial = read(here, 'serial')
            if serial:
                props['ID_SERIAL_SHORT'] = serial
            return props
        here = os.path.dirname(here)
    return {}


def read(directory, name):
    try:
        with open(os.path.join(directory, name)) as f:
            return f.read().strip()
    except OSError:
        return ''
