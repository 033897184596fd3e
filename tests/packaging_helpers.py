"""Helpers for tests/test_packaging.py: build the artifacts, read archives, a device root in a
folder, and an emulation of opkg's install/upgrade/remove sequence."""
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import tarfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MKIPK = os.path.join(REPO, 'tools', 'mkipk.sh')
PACKAGE = 'venus-pzem'
HOOK_MARK = '# venus-pzem'


def sh(*args, env=None, cwd=None, check=True):
    done = subprocess.run(list(args), env=env, cwd=cwd, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True)
    if check and done.returncode != 0:
        raise AssertionError('%s failed with %d\nstdout:\n%s\nstderr:\n%s' % (
            ' '.join(args), done.returncode, done.stdout, done.stderr))
    return done


def build(out, version=None, env=None):
    """Runs tools/mkipk.sh into `out`; returns {'ipk', 'copy', 'tarball', 'version'}."""
    args = ['sh', MKIPK, '--out', str(out)]
    if version:
        args += ['--version', version]
    sh(*args, env=env)
    if version is None:
        with open(os.path.join(REPO, 'package', 'opt', 'pzem', 'VERSION')) as f:
            version = f.read().strip()
    return {'ipk': os.path.join(str(out), 'venus-pzem_%s_all.ipk' % version),
            'copy': os.path.join(str(out), 'venus-pzem.ipk'),
            'tarball': os.path.join(str(out), 'PzemMeter-%s.tar.gz' % version),
            'version': version}


def sha256(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def ar_member(ipk, name):
    return subprocess.run(['ar', 'p', ipk, name], stdout=subprocess.PIPE, check=True).stdout


def tar_member(tar_gz_bytes, name):
    with tarfile.open(fileobj=io.BytesIO(tar_gz_bytes), mode='r:gz') as tar:
        return tar.extractfile(name).read()


def tar_names(tar_gz_bytes):
    with tarfile.open(fileobj=io.BytesIO(tar_gz_bytes), mode='r:gz') as tar:
        return [m.name for m in tar.getmembers()]


def control_fields(ipk):
    """The control file of an ipk as a dict (continuation lines joined with newlines)."""
    text = tar_member(ar_member(ipk, 'control.tar.gz'), './control').decode()
    fields, key = {}, None
    for line in text.splitlines():
        if line.startswith(' ') and key:
            fields[key] += '\n' + line[1:]
        else:
            key, _, value = line.partition(':')
            fields[key] = value.strip()
    return fields


def tar_tzv(path):
    """`tar tzvf` of a file as [(mode string, owner/group, name)]."""
    out = sh('tar', 'tzvf', path).stdout
    rows = []
    for line in out.splitlines():
        parts = line.split(None, 5)
        rows.append((parts[0], parts[1], parts[5]))
    return rows


# -- a device root in a folder ---------------------------------------------------------------------

FAKE_TOOLS = ('svc', 'udevadm', 'opkg')


class Device:
    """A folder standing in for a GX root. Scripts get PKG_ROOT=<root>/ (as opkg passes it) and a
    PATH whose svc, udevadm and opkg only write to a call log outside the root: the scripts must
    never call them for a root that is not /."""

    def __init__(self, base):
        self.root = os.path.join(str(base), 'root')
        self.calls = os.path.join(str(base), 'calls.log')
        bindir = os.path.join(str(base), 'bin')
        os.makedirs(self.root)
        os.makedirs(bindir)
        for tool in FAKE_TOOLS:
            path = os.path.join(bindir, tool)
            with open(path, 'w') as f:
                f.write('#!/bin/sh\necho "%s $*" >> "%s"\n' % (tool, self.calls))
            os.chmod(path, 0o755)
        self.firmware = {}
        self.env = dict(os.environ, PKG_ROOT=self.root + '/',
                        PATH=bindir + os.pathsep + os.environ['PATH'])

    def path(self, rel):
        return os.path.join(self.root, rel.lstrip('/'))

    def read(self, rel):
        with open(self.path(rel)) as f:
            return f.read()

    def write(self, rel, text, mode=0o644):
        path = self.path(rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'w') as f:
            f.write(text)
        os.chmod(path, mode)

    def exists(self, rel):
        return os.path.lexists(self.path(rel))

    def mode(self, rel):
        return stat.S_IMODE(os.stat(self.path(rel)).st_mode)

    def tool_calls(self):
        if not os.path.exists(self.calls):
            return []
        with open(self.calls) as f:
            return f.read().splitlines()

    def run(self, *args, check=True):
        return sh(*args, env=self.env, check=check)

    def installer(self, *args, check=True):
        return self.run('sh', self.path('opt/pzem/install/pzem-install.sh'), *args, check=check)

    def hook_lines(self):
        return [l for l in self.read('data/rc.local').splitlines() if l.endswith(HOOK_MARK)]

    def run_boot_hook(self):
        """The rc.local line as init runs it at boot, with /data pointing into this root."""
        (line,) = self.hook_lines()
        return self.run('sh', '-c', line.replace('/data/', self.root + '/data/'))

    def firmware_update(self):
        """What a firmware update leaves: /data, and the new firmware's own files (self.firmware,
        e.g. the stock serial-starter.conf). Opkg's records in /usr/lib/opkg go too."""
        for name in os.listdir(self.root):
            if name != 'data':
                path = os.path.join(self.root, name)
                shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) \
                    else os.unlink(path)
        for rel, text in self.firmware.items():
            self.write(rel, text)

    def snapshot(self, skip=()):
        """{relative path: (mode, sha256 or link target)} of every file and link under the root."""
        found = {}
        for top, dirs, files in os.walk(self.root):
            for name in files + [d for d in dirs if os.path.islink(os.path.join(top, d))]:
                path = os.path.join(top, name)
                rel = os.path.relpath(path, self.root)
                if any(rel == s or rel.startswith(s.rstrip('/') + '/') for s in skip):
                    continue
                if os.path.islink(path):
                    found[rel] = ('link', os.readlink(path))
                else:
                    found[rel] = (stat.S_IMODE(os.lstat(path).st_mode), sha256(path))
        return found


# -- opkg, emulated --------------------------------------------------------------------------------

class FakeOpkg:
    """EMULATION of the upstream opkg client for one package, not opkg itself (there is no opkg
    client on this machine). It does what reference/packaging.md B3/B4 records of opkg 0.9.0:
    - install:  preinst install -> unpack -> postinst configure
    - upgrade:  old prerm upgrade NEW -> new preinst upgrade OLD -> unpack -> old postrm upgrade NEW
                -> new postinst configure (files the new version no longer has are deleted)
    - remove:   prerm remove -> delete files -> postrm remove
    - conffiles: a conffile the user changed (md5 differs from the recorded one) is kept and the
      package's version goes to <file>-opkg; an unchanged one is replaced or, on remove, deleted.
      A conffile already there when nothing is installed (B3 does not cover it) is treated as a
      changed one. Scripts run as `/bin/sh -c "<script> <args>"` with PKG_ROOT=<root>/.
    Its records live in <root>/usr/lib/opkg/, so a firmware update (everything but /data goes)
    forgets the package, as on the device."""

    def __init__(self, device):
        self.device = device
        self.db = device.path('usr/lib/opkg')
        self.calls = []
        self.after_script = None    # called with (script, args...) after each script

    def status(self):
        path = os.path.join(self.db, 'fake-status.json')
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return json.load(f)

    def _script(self, label, path, *args):
        """Runs a maintainer script as opkg does; records (label, args...) in self.calls."""
        if not os.path.exists(path):
            return
        self.calls.append((label,) + args)
        self.device.run('/bin/sh', '-c', ' '.join([path] + list(args)))
        if self.after_script:
            self.after_script((label,) + args)

    def _info(self, name):
        return os.path.join(self.db, 'info', PACKAGE + '.' + name)

    def install(self, ipk):
        old = self.status()
        work = os.path.join(self.db, 'unpack')
        shutil.rmtree(work, ignore_errors=True)
        os.makedirs(work)
        control = ar_member(ipk, 'control.tar.gz')
        data = ar_member(ipk, 'data.tar.gz')
        subprocess.run(['tar', '-xzf', '-', '-C', work], input=control, check=True)
        version = control_fields(ipk)['Version']
        conffiles = tar_member(control, './conffiles').decode().split()
        if old:
            self._script('prerm', self._info('prerm'), 'upgrade', version)
            self._script('preinst', os.path.join(work, 'preinst'), 'upgrade', old['version'])
        else:
            self._script('preinst', os.path.join(work, 'preinst'), 'install')

        before = {}
        for name in conffiles:
            if os.path.exists(self.device.path(name)):
                with open(self.device.path(name), 'rb') as f:
                    before[name] = f.read()
        files = tar_names(data)
        subprocess.run(['tar', '-xzf', '-', '-C', self.device.root + '/'], input=data, check=True)
        recorded = {}
        for name in conffiles:
            shipped = tar_member(data, '.' + name)
            recorded[name] = hashlib.md5(shipped).hexdigest()
            if name not in before or before[name] == shipped:
                continue
            was = (old or {}).get('conffiles', {}).get(name)
            if hashlib.md5(before[name]).hexdigest() != was:
                with open(self.device.path(name) + '-opkg', 'wb') as f:
                    f.write(shipped)
                with open(self.device.path(name), 'wb') as f:
                    f.write(before[name])
        if old:
            for name in sorted(set(old['files']) - set(files), reverse=True):
                path = self.device.path(name)
                if os.path.isfile(path) or os.path.islink(path):
                    os.unlink(path)
            old_postrm = os.path.join(work, 'old.postrm')
            shutil.copy(self._info('postrm'), old_postrm)
        self._install_info(work)
        if old:
            self._script('postrm', old_postrm, 'upgrade', version)
        self._save({'version': version, 'files': files, 'conffiles': recorded})
        self._script('postinst', self._info('postinst'), 'configure')
        shutil.rmtree(work)

    def _install_info(self, work):
        info = os.path.join(self.db, 'info')
        os.makedirs(info, exist_ok=True)
        for name in ('control', 'conffiles', 'preinst', 'postinst', 'prerm', 'postrm'):
            if os.path.exists(os.path.join(work, name)):
                shutil.copy2(os.path.join(work, name), self._info(name))

    def _save(self, status):
        with open(os.path.join(self.db, 'fake-status.json'), 'w') as f:
            json.dump(status, f)

    def remove(self):
        status = self.status()
        assert status, '%s is not installed' % PACKAGE
        self._script('prerm', self._info('prerm'), 'remove')
        for name in sorted(status['files'], reverse=True):
            path = self.device.path(name)
            rel = '/' + os.path.normpath(name)
            if os.path.isdir(path) and not os.path.islink(path):
                try:
                    os.rmdir(path)
                except OSError:
                    pass
            elif os.path.lexists(path):
                if rel in status['conffiles']:
                    with open(path, 'rb') as f:
                        if hashlib.md5(f.read()).hexdigest() != status['conffiles'][rel]:
                            continue
                os.unlink(path)
        self._script('postrm', self._info('postrm'), 'remove')
        shutil.rmtree(self.db)
