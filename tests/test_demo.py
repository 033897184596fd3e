"""The demo as a user meets it: --help at once, the live screen in an 80x24 terminal with its
keys, a plain run ended by Ctrl-C, and its temporary folder gone at the end."""
import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(REPO, 'tools', 'demo.py')
sys.path.insert(0, os.path.join(REPO, 'tools'))

import venus_view  # noqa: E402

WAIT = 60           # seconds before a wait counts as failed; never a measure of speed


def test_help_answers_before_any_setup(tmp_path):
    # a PATH on which tools/setup-env.sh could not even start: the help must not need it
    bindir = tmp_path / 'bin'
    bindir.mkdir()
    for tool in ('bash', 'dirname'):
        found = subprocess.run(['sh', '-c', 'command -v ' + tool], stdout=subprocess.PIPE,
                               universal_newlines=True).stdout.strip()
        os.symlink(found, str(bindir / tool))
    os.symlink(os.path.realpath(sys.executable), str(bindir / 'python3'))    # a plain python3
    done = subprocess.run([str(bindir / 'bash'), os.path.join(REPO, 'tools', 'demo.sh'), '--help'],
                          env=dict(os.environ, PATH=str(bindir)), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=WAIT)
    assert done.returncode == 0 and done.stderr == ''
    text = done.stdout
    for part in ('What it shows', 'power factor', '/Pzem/Errors', '--seconds N', '--fault-every N',
                 'Keys', 'f   the next fault now', 'q   quit', 'Ctrl-C', 'deletes its',
                 'needs 80x24'):
        assert part in text, part
    assert max(len(line) for line in text.splitlines()) <= 80


def test_every_event_line_fits_the_80_columns_of_the_live_view():
    import demo
    texts = ['fault: ' + fault[3] for fault in demo.FAULTS] + list(demo.MULTI_EVENTS.values())
    stamp = len(time.strftime(demo.EVENT_TIME))
    assert max(stamp + len(text) for text in texts) <= 80


def test_render_fits_80_columns_and_shows_errors_and_power_factor():
    group = {'/CustomName': 'House 3-phase with a long name', '/Connected': 1,
             '/Ac/Power': -12345.6, '/Ac/PowerFactor': 0.93, '/Ac/Frequency': 50.0,
             '/Ac/Energy/Forward': 1234.567, '/Ac/Energy/Reverse': 2.5,
             '/Pzem/Errors/NoReply': 12, '/Pzem/Errors/BadFrame': 3,
             '/Pzem/Errors/Exception': 0, '/Pzem/Errors/Implausible': 1}
    for ph in ('L1', 'L2', 'L3'):
        group.update({'/Ac/%s/Power' % ph: -4115.2, '/Ac/%s/Voltage' % ph: 231.4,
                      '/Ac/%s/Current' % ph: 17.78, '/Ac/%s/PowerFactor' % ph: 0.93,
                      '/Ac/%s/Energy/Forward' % ph: 411.5, '/Ac/%s/Energy/Reverse' % ph: None})
    dc = {'/CustomName': 'Wind', '/Connected': 0, '/Dc/0/Voltage': None, '/Dc/0/Current': None,
          '/Dc/0/Power': None, '/History/EnergyOut': 3.25}
    wind = 'com.victronenergy.dcsource.pzem_ttyUSB0_3'
    meters = [('com.victronenergy.acload.pzem_ttyUSB0_4', group, None), (wind, dc, None)]
    seen = set()
    # A meter not read yet is not 'lost' (issue 23): 'wait' until it has been connected once.
    assert venus_view.render(meters, seen)[5].split()[:3] == ['Wind', 'dcsource', 'wait']
    assert venus_view.render([(wind, dict(dc, **{'/Connected': 1}), None)], seen)[1].split()[
        :3] == ['Wind', 'dcsource', 'ok']
    assert venus_view.render(meters, None)[5].split()[:3] == ['Wind', 'dcsource', 'no']
    lines = venus_view.render(meters, seen)
    assert max(len(line) for line in lines) <= 80
    assert lines[0].split()[:8] == ['meter', 'role', 'link', 'P', 'W', 'U', 'V', 'I']
    assert 'PF' in lines[0].split()
    assert lines[1].split() == ['House', '3-phase', 'w', 'acload', 'ok', '-12345.6', '0.93',
                                '50.0', '1234.567', '2.500']
    assert lines[2].split() == ['L1', '-4115.2', '231.4', '17.78', '0.93', '411.500', '-']
    assert lines[5].split() == ['Wind', 'dcsource', 'lost', '-', '-', '-', '3.250']
    assert lines[7].split() == ['/Pzem/Errors', 'NoReply', 'BadFrame', 'Exception', 'Implausible']
    assert lines[8].split() == ['House', '3-phase', 'w', '12', '3', '0', '1']
    assert lines[9].split() == ['Wind', '-', '-', '-', '-']


class Terminal:
    """The demo on a pseudo-terminal of a given size, read as a screen."""

    def __init__(self, columns, rows):
        self.master, slave = pty.openpty()
        self.resize(columns, rows)
        self.proc = subprocess.Popen([sys.executable, DEMO, '--fault-every', '0'], stdin=slave,
                                     stdout=slave, stderr=slave, close_fds=True,
                                     start_new_session=True)
        os.close(slave)
        self.output = ''
        self.quitting = False

    def resize(self, columns, rows):
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack('HHHH', rows, columns, 0, 0))

    def read_until(self, pattern):
        """Reads until the newest screen matches `pattern`; returns that screen's lines."""
        while True:
            frames = self.output.split('\x1b[H\x1b[J')
            if len(frames) > 2 and re.search(pattern, frames[-2]):
                return frames[-2].replace('\r', '').split('\n')     # the last complete frame
            ready, _, _ = select.select([self.master], [], [], WAIT)
            assert ready, 'no %r on the screen; it showed:\n%s' % (pattern, frames[-2:])
            try:
                data = os.read(self.master, 65536)
            except OSError:
                data = b''
            assert data, 'the demo ended; its output:\n' + self.output
            self.output += data.decode(errors='replace')

    def type(self, key):
        os.write(self.master, key.encode())
        self.quitting = self.quitting or key == 'q'

    def finish(self):
        try:
            if not self.quitting:
                self.proc.terminate()               # the demo cleans up on SIGTERM
            self.proc.wait(WAIT)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            while select.select([self.master], [], [], 0)[0]:
                try:
                    data = os.read(self.master, 65536)
                except OSError:
                    break
                if not data:
                    break
                self.output += data.decode(errors='replace')
            os.close(self.master)


def working_folder(output):
    return re.search(r'demo: working in (\S+)', output).group(1)


def test_live_screen_fits_80x24_and_takes_its_keys():
    term = Terminal(70, 20)
    try:
        small = term.read_until('needs 80x24')
        assert small[0] == 'demo: this terminal is 70x20; the live view needs 80x24.'
        term.resize(80, 24)
        screen = term.read_until(r'House 3-phase .* ok ')
        term.type('f')
        screen = term.read_until(r'fault: MultiPlus AC in: 3 replies with a bad CRC')
        term.read_until(r'MultiPlus AC in +\d+ +[1-9]')  # its BadFrame count rose
        screen = term.read_until(r'fault: ')
        assert len(screen) <= 24 and max(len(line) for line in screen) <= 80, screen
        assert any('/Pzem/Errors' in line for line in screen)
        assert any(' PF ' in line for line in screen)
        assert not any(line.startswith('ttyPZEM') for line in screen)  # the port's service
        assert screen[-1].startswith('keys: f fault now  q quit')
        term.type('q')
    finally:
        term.finish()
    assert term.proc.returncode == 0, term.output
    folder = working_folder(term.output)
    assert 'demo: ended; %s is deleted' % folder in term.output
    assert not os.path.exists(folder)
    assert 'Traceback' not in term.output


def test_ctrl_c_stops_everything_and_deletes_the_folder():
    proc = subprocess.Popen([sys.executable, DEMO, '--fault-every', '1'], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True)
    try:
        first = proc.stdout.readline()
        folder = working_folder(first)
        assert os.path.isdir(folder)
        header = fault = False
        for line in proc.stdout:                    # plain snapshots, as when piped
            header = header or (line.startswith('meter ') and ' PF ' in line)
            fault = fault or (line.startswith('demo: ') and 'fault:' in line)
            if header and fault:
                break
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and 'Traceback' not in err, err
    assert 'demo: ended; %s is deleted' % folder in out
    assert not os.path.exists(folder)


@pytest.mark.parametrize('option', [['--seconds', 'nan'], ['--fault-every', '-1'], ['--bogus']])
def test_bad_options_get_one_sentence(option):
    done = subprocess.run([sys.executable, DEMO] + option, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=WAIT)
    assert done.returncode == 2 and 'Traceback' not in done.stderr
    assert done.stderr.splitlines()[-1].startswith('tools/demo.sh: error: ')
