"""Where the README and the code state the same fact, they agree: each test reads the README and
checks what it says against the code (or the installer's words) that make it true."""
import inspect
import os
import re
import subprocess
import sys

from driver_rig import ROOT
from pzem import driver, energy, map_syntax, meter, modbus, poll, roles, settings, system
from pzem.ctl import console, port

README = os.path.join(ROOT, 'README.md')
INSTALLER = os.path.join(ROOT, 'package', 'opt', 'pzem', 'install', 'pzem-install.sh')
SETUP = os.path.join(ROOT, 'setuphelper', 'PzemMeter', 'setup')
FIRST_VENUS = os.path.join(ROOT, 'setuphelper', 'PzemMeter', 'firstCompatibleVersion')
PZEMCTL = os.path.join(ROOT, 'package', 'opt', 'pzem', 'pzemctl')


def read(path):
    with open(path) as f:
        return f.read()


def section(title, text=None):
    """A README section from its heading (e.g. '### Uninstall') to the next of its level or
    higher, sub-sections included."""
    lines = (text or read(README)).split('\n')
    level = len(title) - len(title.lstrip('#'))
    start = lines.index(title)
    for end in range(start + 1, len(lines)):
        if re.match('#{1,%d} ' % level, lines[end]):
            break
    else:
        end = len(lines)
    return '\n'.join(lines[start:end])


def row(table_text, key):
    """The cells of the table row whose first cell is `key` (backquoted)."""
    for line in table_text.splitlines():
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        if cells[0] == '`%s`' % key:
            return cells
    raise AssertionError('no row %r' % key)


def one(pattern, text):
    found = re.findall(pattern, text)
    assert len(found) == 1, (pattern, found)
    return found[0]


# -- installing and commissioning ------------------------------------------------------------------

def installer_steps():
    """[(number, title, [what the step says to run or edit])] from the installer's next steps."""
    text = read(INSTALLER)
    said = text[text.index('Next steps'):]
    said = said[:said.index('\nEOF')]
    steps = []
    for line in said.splitlines()[1:]:
        heading = re.match(r'  (\d+)\. (.+)$', line)
        if heading:
            steps.append((int(heading.group(1)), heading.group(2), []))
        elif line.startswith('       '):
            first, *more = line.strip().split(' / ')
            base = first.rsplit(' ', 1)[0]     # "a b c / d" says "a b c" and "a b d"
            steps[-1][2].extend([first] + ['%s %s' % (base, m) for m in more])
    return steps


def test_the_installers_next_steps_are_the_readmes_commissioning_steps():
    commissioning = section('## Commissioning a new bus')
    headings = re.findall(r'^### (\d+)\. (.+)$', commissioning, re.M)
    steps = installer_steps()
    assert [(n, title) for n, title, _ in steps] == [(int(n), t) for n, t in headings]
    for number, title, literals in steps:
        step = section('### %d. %s' % (number, title), commissioning)
        assert literals
        for literal in literals:
            assert literal in step, (number, literal)


def test_the_installers_last_line_names_where_troubleshooting_starts():
    text = read(INSTALLER)
    last = text[:text.index('\nEOF', text.index('Next steps'))].splitlines()[-1]
    command = last.rsplit(': ', 1)[1]
    assert command == 'pzemctl status'
    assert 'Start with:\n\n    %s ' % command in section('## Troubleshooting')


def test_the_venus_os_it_needs():
    first = read(FIRST_VENUS).strip()
    said = re.findall(r'Venus OS (v\d+\.\d+) or later', read(README))
    assert said and set(said) == {first}


def test_setups_exit_codes():
    setup = read(SETUP)
    said = ' '.join(section('### Install without SetupHelper').split())
    assert '253 means the platform is wrong, 254 the Venus OS version is too old' in said
    assert 'EXIT_INCOMPATIBLE_PLATFORM=253' in setup and 'EXIT_INCOMPATIBLE_VERSION=254' in setup


# -- the map -------------------------------------------------------------------------------------

def test_the_baud_rates_the_map_accepts():
    values = row(section('### Keys of `[bus]` and `[bus:PORT]`'), 'baudrate')[1]
    assert [int(v) for v in re.findall(r'\d+', values)] == list(map_syntax.BAUDRATES)


def test_the_position_default_and_values():
    cells = row(section('### Keys of a meter section'), 'position')
    assert cells[2] == '`%d`' % roles.DEFAULT_POSITION['pvinverter']
    assert set(roles.DEFAULT_POSITION.values()) == {0}
    listed = dict(re.findall(r'(pvinverter|acload, evcharger, heatpump): ((?:`\d` [^;|]+)+)',
                             cells[1]))
    assert [int(n) for n in re.findall(r'`(\d)`', listed['pvinverter'])] == list(
        roles.POSITIONS['pvinverter'])
    for role in ('acload', 'evcharger', 'heatpump'):
        assert [int(n) for n in re.findall(r'`(\d)`', listed['acload, evcharger, heatpump'])] == \
            list(roles.POSITIONS[role])
    published = section('### What is published')
    assert '(%d when the map gives none: a pvinverter on AC input 1, the others on AC output)' % (
        roles.DEFAULT_POSITION['pvinverter']) in published


def test_a_pvinverter_without_a_position_is_not_said_to_be_left_out():
    # It is published at the default position, so it counts in the PV totals there.
    assert roles.DEFAULT_POSITION['pvinverter'] is not None
    assert 'left out of the PV totals' not in read(README)


def test_the_name_limit():
    assert '`/CustomName` (at most %d\ncharacters)' % map_syntax.MAX_NAME in read(README)
    assert row(section('### Keys of a meter section'), 'name')[1] == (
        'text, at most %d characters (a longer name is cut, with a warning)' % map_syntax.MAX_NAME)


# -- the driver ----------------------------------------------------------------------------------

def test_the_drivers_exit_codes():
    text = ' '.join(section('### When things go wrong').split())
    assert int(one(r'with no meter at all answering it exits with code (\d)', text)) == \
        driver.EXIT_NO_METER
    assert int(one(r'no system D-Bus: exit code (\d)', text)) == driver.EXIT_PORT
    assert int(one(r'A bad command line: exit code (\d)', text)) == driver.EXIT_COMMAND_LINE
    assert (driver.EXIT_STOPPED, driver.EXIT_PORT, driver.EXIT_NO_METER,
            driver.EXIT_COMMAND_LINE) == (0, 1, 2, 3)
    assert 'Exit codes: 0 stopped by a signal, 1 the port is missing' in driver.__doc__


def test_the_drivers_timing():
    works = ' '.join(section('## How it works').split())
    assert float(one(r'when a meter answers within (\d+) s', works)) == driver.PROBE_SECONDS
    assert float(one(r'default (\d+) s: the meters refresh', works)) == driver.INTERVAL
    backoff = one(r'\(after (\d+, \d+, \d+ \.\.\. \d+) s\)', works)
    first = [float(n) for n in re.findall(r'\d+', backoff)]
    assert first[:3] == list(poll.BACKOFF_SECONDS[:3]) and first[3] == poll.BACKOFF_SECONDS[-1]
    wrong = ' '.join(section('### When things go wrong').split())
    seconds, polls = re.search(r'no good reading for (\d+) s and (\d+) polls in a row failed',
                               wrong).groups()
    assert (float(seconds), int(polls)) == (meter.SECONDS_TO_DISCONNECT,
                                            meter.MISSES_TO_DISCONNECT)


def test_the_fallback_vrm_instance():
    said = re.findall(r'(\d+) \+ address - 1', read(README))
    assert said                     # what is published; troubleshooting
    for base in said:
        for address in (1, 5, 247):
            assert settings.fallback_instance('pzem_ttyUSB0_%d' % address) == \
                int(base) + address - 1


def test_the_direction_dead_band_and_the_energy_saves():
    vrm = ' '.join(section('## Import, export and VRM').split())
    band = float(one(r'below -(\d+) W and back to import only above \+\d+ W', vrm))
    assert band == system.DEFAULT_DEAD_BAND
    minutes = int(one(r'written at most every (\d+) minutes', vrm))
    assert minutes * 60 == energy.SAVE_SECONDS


# -- pzemctl ---------------------------------------------------------------------------------------

def test_pzemctls_exit_codes_and_timeouts():
    # the exit-code table itself is run command by command in test_pzemctl.py
    trouble = ' '.join(section('## Troubleshooting').split())
    assert (console.OK, console.FAILED) == (0, 1)
    bad = subprocess.run([sys.executable, PZEMCTL, 'ttyUSB0', 'info', '999'],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and 'address 999 is out of range' in bad.stderr
    assert float(one(r'`--timeout S` for replies \(default ([\d.]+) s\)', trouble)) == \
        inspect.signature(modbus.Bus).parameters['timeout'].default
    assert float(one(r'`--scan-timeout S` per address in a scan \(default ([\d.]+) s', trouble)) \
        == port.SCAN_TIMEOUT


# -- the port's own service ------------------------------------------------------------------------

def test_the_port_services_paths_and_timing():
    from pzem import port_service
    said = section("### The driver's own service per port (for the GUI page, MQTT, Node-RED)")
    keys = set()
    for line in said.splitlines():
        row_ = re.match(r'\| `/Meters/<address>/([^`]+)`((?:, `[^`]+`)*) \|', line)
        if row_:
            first = row_.group(1)
            folder = first.rsplit('/', 1)[0] + '/' if '/' in first else ''
            keys |= {first} | {folder + key for key in re.findall(r'`([^`]+)`', row_.group(2))}
    assert keys == set(port_service._METER_PATHS) | {'SetAddress', 'ResetEnergy'}
    flat = ' '.join(said.split())
    assert float(one(r'at most every (\d+) seconds', flat)) == port_service.TALLY_SECONDS
    assert 'one address a second' in flat and poll.SEARCH_FORCE_SECONDS == 1.0
