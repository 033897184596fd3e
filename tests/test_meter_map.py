"""The meter map: parsing, every problem with its line, port overrides, groups, write-back."""
import errno
import os
import re
import stat
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pzem import map_syntax, map_update, meter_map, roles
from pzem.map_update import MapWriteError
from pzem.meter_map import MeterSpec


# What a left-out meter section or group means for its meter(s), after each problem line.
IGNORED = (': its meter gets the safe default role (acload for AC, dcsource for DC) until this is '
           'fixed')
GROUP_IGNORED = (': each of its meters gets the safe default role alone until this is fixed')


def config(address, role=None, position=None, name=None, monitor_mode=None, model=None,
           group=None, phase=None, section=None, line=0):
    """One section's meter as a MeterSpec (a single meter, or a one-phase view of a group)."""
    return MeterSpec(((phase or 'L1', address),), role, position, name, monitor_mode, model,
                     None, None, group, (section,) if section else (), line)

EXAMPLE = """\
# /data/conf/pzem.conf
[bus]                  # optional, all ports; [bus:ttyUSB1] for one port
interval = 1           # seconds between polls of a meter
stopbits = 2           # 1 or 2
[1]
role = grid            # grid | genset | acload | pvinverter (AC); dcsource | dcload | dcsystem (DC)
name = MultiPlus AC in # optional CustomName (max 32 characters)
[2]
role = acload
position = 0           # acload: 0 AC output, 1 AC input
[3]
role = dcsource        # PZEM-017 on a wind charger
monitor_mode = wind    # optional, dcsource/dcload subtypes
model = PZEM-017       # optional: overrides auto-detection
[ttyUSB1:5]            # applies to address 5 on that port only
role = pvinverter
position = 1           # pvinverter: 0 AC-in 1, 1 AC-out, 2 AC-in 2
[ttyUSB0:7]
group = house          # three-phase: sections sharing a group are ONE published meter
phase = L1
"""


def write(tmp_path, text, name='pzem.conf'):
    path = tmp_path / name
    path.write_bytes(text.encode('utf-8') if isinstance(text, str) else text)
    return str(path)


def load(tmp_path, text):
    return meter_map.load(write(tmp_path, text))


def problems(tmp_path, text):
    """The problems with the file's path shown as F."""
    path = write(tmp_path, text)
    return [p.replace(path, 'F') for p in meter_map.load(path).problems]


def read(path):
    with open(path, 'rb') as f:
        return f.read().decode('utf-8')


# -- reading -------------------------------------------------------------------------------------

def test_the_example_map(tmp_path):
    the_map = load(tmp_path, EXAMPLE)
    assert the_map.problems == []
    common = [
        config(1, 'grid', None, 'MultiPlus AC in', None, None, None, None, '1', 5),
        config(2, 'acload', 0, None, None, None, None, None, '2', 8),
        config(3, 'dcsource', None, None, -8, 'dc', None, None, '3', 11),
    ]
    assert the_map.meters_for('ttyUSB0') == common + [
        config(7, None, None, None, None, None, 'house', 'L1', 'ttyUSB0:7', 18)]
    assert the_map.meters_for('ttyUSB1') == common + [
        config(5, 'pvinverter', 1, None, None, None, None, None, 'ttyUSB1:5', 15)]
    assert the_map.meters_for('/dev/ttyUSB1') == the_map.meters_for('ttyUSB1')
    assert [m.group for m in the_map.meters_for('ttyUSB1')] == [None] * 4
    assert the_map.bus_options('ttyUSB0') == {'interval': 1.0, 'stopbits': 2}
    assert the_map.mentions('ttyACM0', 1) and not the_map.mentions('ttyACM0', 7)


def test_a_missing_file_is_an_empty_map_without_problems(tmp_path):
    the_map = meter_map.load(str(tmp_path / 'nothing.conf'))
    assert the_map.problems == []
    assert the_map.meters_for('ttyUSB0') == []
    assert the_map.bus_options('ttyUSB0') == {}
    assert not the_map.mentions('ttyUSB0', 1)


def test_the_driver_can_make_a_spec_from_an_address_alone():
    spec = MeterSpec.single(1)
    assert (spec.role, spec.position, spec.name, spec.sections) == (None, None, None, ())
    assert spec.addresses == (1,) and spec.role_for('ac') == 'acload'
    assert spec.role_for('dc') == 'dcsource'


@pytest.mark.parametrize('data, line, message', [
    (b'[1]\nrole = grid\nname = caf\xe9\n', 3, 'not UTF-8 text (byte 0xe9)'),
    (b'[1]\nrole = grid\x00\n', 2, 'binary data (a NUL byte), not a text map'),
    (bytes(range(256)) * 4, 2, 'not UTF-8 text (byte 0x80)'),   # 0x0a comes first
])
def test_a_file_that_is_not_text_is_one_problem_and_no_meter(tmp_path, data, line, message):
    path = write(tmp_path, data)
    the_map = meter_map.load(path)
    assert the_map.problems == ['%s:%d: %s; the map is not used' % (path, line, message)]
    assert the_map.meters_for('ttyUSB0') == []
    assert the_map.broken and not the_map.readable


def test_an_unreadable_path_is_one_problem(tmp_path):
    the_map = meter_map.load(str(tmp_path))     # a directory
    assert the_map.problems == ['%s: cannot read the map: Is a directory; the map is not used'
                                % tmp_path]
    assert the_map.meters_for('ttyUSB0') == []


@pytest.mark.parametrize('text, expected', [
    ('role = grid\n[1]\n',
     ["F:1: key 'role' is outside any section, ignored; put it under a header such as [1]"]),
    ('[1]\nrole = gird\n',
     ["F:2: [1] key 'role': unknown role 'gird' (did you mean 'grid'?); roles: grid, genset, "
      "acload, pvinverter, evcharger, heatpump (AC), dcsource, dcload, dcsystem (DC); section ignored"
      + IGNORED]),
    ('[1]\nrole = grid\nrole = acload\n',
     ["F:3: [1] key 'role': given twice (also on line 2); section ignored" + IGNORED]),
    ('[1]\nrole grid\n',
     ["F:2: [1] 'role grid' is not 'key = value'; section ignored" + IGNORED]),
    ('[1]\nrole =\n', ["F:2: [1] key 'role': no value given; section ignored" + IGNORED]),
    ('[2]\nrole = acload\nposition = 2\n',
     ["F:3: [2] key 'position': position 2 is not one for acload; use 0 (AC output) or 1 "
      "(AC input); section ignored" + IGNORED]),
    ('[2]\nrole = grid\nposition = 1\n',
     ["F:3: [2] key 'position': position applies only to role pvinverter, acload, evcharger, heatpump, and the "
      "role is grid; section ignored" + IGNORED]),
    ('[2]\nposition = one\n',
     ["F:2: [2] key 'position': 'one' is not a position; pvinverter: 0 (AC input 1), 1 (AC "
      "output) or 2 (AC input 2); acload, evcharger, heatpump: 0 (AC output) or 1 (AC input); section ignored"
      + IGNORED]),
    ('[3]\nrole = grid\nmonitor_mode = wind\n',
     ["F:3: [3] key 'monitor_mode': monitor_mode applies only to role dcsource or dcload, and "
      "the role is grid; section ignored" + IGNORED]),
    ('[3]\nrole = dcload\nmonitor_mode = wind\n',
     ["F:3: [3] key 'monitor_mode': monitor_mode wind is not one for dcload; dcload: generic "
      "(1), fridge (3), waterpump (4), bilgepump (5), inverter (7), waterheater (8); "
      "section ignored" + IGNORED]),
    ('[3]\nrole = dcsource\nmonitor_mode = -5\n',
     ["F:3: [3] key 'monitor_mode': monitor_mode -5 is not one for dcsource; dcsource: generic "
      "(-1), accharger (-2), dcdc (-3), watergenerator (-4), shaftgenerator (-7), wind (-8); "
      "section ignored" + IGNORED]),
    ('[3]\nmonitor_mode = breeze\n',
     ["F:2: [3] key 'monitor_mode': unknown monitor_mode 'breeze'; dcsource: generic (-1), "
      "accharger (-2), dcdc (-3), watergenerator (-4), shaftgenerator (-7), wind (-8); dcload: "
      "generic (1), fridge (3), waterpump (4), bilgepump (5), inverter (7), waterheater (8); "
      "section ignored" + IGNORED]),
    ('[4]\nrole = dcsystem\nmodel = PZEM-016\n',
     ["F:3: [4] key 'model': role dcsystem needs a DC meter, but the model is AC; "
      "section ignored" + IGNORED]),
    ('[4]\nmodel = PZEM-018\n',
     ["F:2: [4] key 'model': unknown model 'PZEM-018'; PZEM-016, PZEM-014, PZEM-004T (or ac) "
      "or PZEM-017, PZEM-003 (or dc); section ignored" + IGNORED]),
    ('[5]\nname = 123456789012345678901234567890123\n',
     ["F:2: [5] key 'name': the name has 33 characters and the GUI shows at most 32: "
      "'12345678901234567890123456789012' is used"]),
    ('[5]\nname = tab\x07bell\n',
     ["F:2: [5] key 'name': the name holds a control character; section ignored" + IGNORED]),
    ('[6]\nrole = inverter0\nposition = 1\n',
     ["F:3: [6] key 'position': the old role name on line 2 means pvinverter at position 0, "
      "not 1; section ignored" + IGNORED]),
    ('[0]\nrole = grid\n',
     ["F:1: [0] address 0 is out of range: meters take 1..247; section ignored"]),
    ('[ttyUSB0:248]\n', ["F:1: [ttyUSB0:248] address 248 is out of range: meters take 1..247; "
                         "section ignored"]),
    ('[0x10]\n', ["F:1: [0x10] '0x10' is hexadecimal: addresses are written in decimal (0x10 "
                  "is 16); section ignored"]),
    ('[/dev/ttyUSB0:4]\n', ["F:1: [/dev/ttyUSB0:4] give the port as a bare tty name such as "
                            "ttyUSB0, not a path; section ignored"]),
    ('[tty USB0:4]\n', ["F:1: [tty USB0:4] 'tty USB0' is not a tty name such as ttyUSB0; "
                        "section ignored"]),
    ('[4\nrole = grid\n',
     ["F:1: '[4' is not a section header such as [1], [ttyUSB0:1], [bus] or [bus:ttyUSB0]; "
      "section ignored"]),
    ('[1]\n\n[1]\nrole = acload\n',
     ["F:3: [1] the same section as [1] on line 1; this one is ignored"]),
    ('[bus]\nstopbits = 3\n', ["F:2: [bus] key 'stopbits': stopbits '3': use 1 or 2; "
                               "section ignored"]),
    ('[bus]\nbaudrate = 9601\n',
     ["F:2: [bus] key 'baudrate': baudrate '9601': use one of 1200, 2400, 4800, 9600, 19200, "
      "38400, 57600, 115200 (PZEM default 9600); section ignored"]),
    ('[bus]\nparity = X\n', ["F:2: [bus] key 'parity': parity 'X': use N, E or O; "
                             "section ignored"]),
    ('[bus]\ntimeout = 0\n', ["F:2: [bus] key 'timeout': '0' is not a number of seconds "
                              "above 0; section ignored"]),
    ('[bus]\ninterval = -1\n', ["F:2: [bus] key 'interval': '-1' is not a number of seconds "
                                "of 0 or more; section ignored"]),
    ('[bus]\ninterval = nan\n', ["F:2: [bus] key 'interval': 'nan' is not a number of seconds "
                                 "of 0 or more; section ignored"]),
    ('[bus]\nlocal_echo = maybe\n', ["F:2: [bus] key 'local_echo': local_echo 'maybe': use yes "
                                     "or no; section ignored"]),
])
def test_each_problem_with_its_line(tmp_path, text, expected):
    assert problems(tmp_path, text) == expected


def test_an_unknown_key_is_reported_and_its_section_kept(tmp_path):
    path = write(tmp_path, '[1]\nrole = acload\nrol = grid\n[bus]\nrole = grid\n')
    the_map = meter_map.load(path)
    assert [p.replace(path, 'F') for p in the_map.problems] == [
        "F:3: [1] key 'rol': unknown key, ignored (did you mean 'role'?); meter keys are role, "
        "position, monitor_mode, name, model, group, phase, sign, vebus",
        "F:5: [bus] key 'role': unknown key, ignored; bus keys are interval, baudrate, stopbits, "
        "parity, timeout, local_echo, scan"]
    assert [(c.address, c.role) for c in the_map.meters_for('ttyUSB0')] == [(1, 'acload')]


def test_a_bad_section_is_left_out_and_its_meter_gets_the_safe_default_role(tmp_path):
    the_map = load(tmp_path, '[1]\nrole = grid\n[2]\nrole = gird\nname = Pump\n'
                             '[3]\nrole = acload\n')
    assert len(the_map.problems) == 1 and the_map.broken
    # Nothing of [2] is used (a role is never guessed): its meter is published as found.
    assert the_map.meters_for('ttyUSB0') == [config(1, 'grid', section='1', line=1),
                                             config(2, section='2', line=3),
                                             config(3, 'acload', section='3', line=6)]
    assert the_map.left_out == {('meter', None, 2)}


def test_a_duplicate_section_is_ignored_and_the_first_one_used(tmp_path):
    the_map = load(tmp_path, '[1]\nrole = grid\n[1]\nrole = acload\n')
    assert [(c.role, c.line) for c in the_map.meters_for('ttyUSB0')] == [('grid', 1)]


def test_a_port_section_replaces_the_plain_one_on_its_port_only(tmp_path):
    the_map = load(tmp_path, '[5]\nrole = grid\nname = Shore\n'
                             '[ttyUSB1:5]\nrole = acload\n')
    assert the_map.meters_for('ttyUSB0') == [config(5, 'grid', name='Shore', section='5',
                                                         line=1)]
    # As a whole: the name of [5] does not leak into [ttyUSB1:5].
    assert the_map.meters_for('ttyUSB1') == [config(5, 'acload', section='ttyUSB1:5',
                                                         line=4)]


def test_a_broken_port_section_still_hides_the_plain_one(tmp_path):
    the_map = load(tmp_path, '[5]\nrole = grid\n[ttyUSB1:5]\nrole = acloda\n')
    assert the_map.meters_for('ttyUSB0') == [config(5, 'grid', section='5', line=1)]
    assert the_map.meters_for('ttyUSB1') == [config(5, section='ttyUSB1:5', line=3)]


def test_a_section_without_role_leaves_the_role_to_the_detected_model(tmp_path):
    the_map = load(tmp_path, '[4]\n[9]\nmodel = 017\n')
    assert the_map.meters_for('ttyUSB0') == [config(4, section='4', line=1),
                                             config(9, model='dc', section='9', line=2)]


@pytest.mark.parametrize('text, role, position', [
    ('inverter0', 'pvinverter', 0),
    ('inverter', 'pvinverter', 1),
    ('Inverter0\nposition = 0', 'pvinverter', 0),
    ('GRID', 'grid', None),
    ('pvinverter\nposition = 2', 'pvinverter', 2),
    ('acload\nposition = 1', 'acload', 1),
])
def test_roles_and_old_role_names(tmp_path, text, role, position):
    the_map = load(tmp_path, '[1]\nrole = %s\n' % text)
    assert the_map.problems == []
    config, = the_map.meters_for('ttyUSB0')
    assert (config.role, config.position) == (role, position)


@pytest.mark.parametrize('role, text, mode', [
    ('dcsource', 'wind', -8), ('dcsource', 'Wind', -8), ('dcsource', '-8', -8),
    ('dcsource', 'accharger', -2), ('dcsource', 'generic', -1),
    ('dcload', 'fridge', 3), ('dcload', '8', 8), ('dcload', 'generic', 1),
])
def test_monitor_modes_by_name_or_number(tmp_path, role, text, mode):
    config, = load(tmp_path, '[1]\nrole = %s\nmonitor_mode = %s\n' % (role, text)) \
        .meters_for('ttyUSB0')
    assert config.monitor_mode == mode


@pytest.mark.parametrize('text, family', [
    ('PZEM-016', 'ac'), ('pzem-016', 'ac'), ('016', 'ac'), ('AC', 'ac'), ('PZEM-014', 'ac'),
    ('PZEM-004T', 'ac'), ('pzem004t v3.0', 'ac'), ('PZEM-017', 'dc'), ('017', 'dc'),
    ('dc', 'dc'), ('PZEM-003', 'dc'),
])
def test_model_spellings(tmp_path, text, family):
    config, = load(tmp_path, '[1]\nmodel = %s\n' % text).meters_for('ttyUSB0')
    assert config.model == family


def test_comments_separators_case_and_quotes(tmp_path):
    the_map = load(tmp_path, '; a comment\n'
                             '[1]   # header comment\n'
                             'ROLE: grid ; inline comment\n'
                             'Name = Pump#2\n'
                             '[2]\n'
                             'name = Pump #2\n'
                             '[3]\n'
                             'name = "Pump #2"   # the quotes keep " #"\n'
                             '[4]\n'
                             'name=#only a comment\n'
                             '[5]\n'
                             'name = "a "quoted" word"\n')
    assert the_map.problems == []
    names = [(c.address, c.role, c.name) for c in the_map.meters_for('ttyUSB0')]
    assert names == [(1, 'grid', 'Pump#2'), (2, None, 'Pump'), (3, None, 'Pump #2'),
                     (4, None, None), (5, None, 'a "quoted" word')]


def test_crlf_and_a_byte_order_mark(tmp_path):
    the_map = load(tmp_path, '\ufeff[1]\r\nrole = acload\r\nname = Kitchen \r\n')
    assert the_map.problems == []
    assert the_map.meters_for('ttyUSB0') == [config(1, 'acload', name='Kitchen',
                                                         section='1', line=1)]


def test_bus_options_plain_then_port_key_by_key(tmp_path):
    the_map = load(tmp_path, '[bus]\ninterval = 0\nstopbits = 1\nbaudrate = 4800\nparity = e\n'
                             'timeout = .25\nlocal_echo = yes\n'
                             '[bus:ttyUSB1]\nstopbits = 2\nlocal_echo = no\n[1]\n')
    assert the_map.problems == []
    assert the_map.bus_options('ttyUSB0') == {
        'interval': 0.0, 'stopbits': 1, 'baudrate': 4800, 'parity': 'E', 'timeout': 0.25,
        'local_echo': True}
    assert the_map.bus_options('ttyUSB1') == {
        'interval': 0.0, 'stopbits': 2, 'baudrate': 4800, 'parity': 'E', 'timeout': 0.25,
        'local_echo': False}


def test_a_bad_bus_section_is_left_out_as_a_whole(tmp_path):
    the_map = load(tmp_path, '[bus]\ninterval = 2\n[bus:ttyUSB1]\ntimeout = 0.3\nstopbits = 4\n')
    assert the_map.bus_options('ttyUSB1') == {'interval': 2.0}


@pytest.mark.parametrize('text, port, address, expected', [
    ('', 'ttyUSB0', 3, False),
    ('# only comments\n[bus]\ninterval = 2\n', 'ttyUSB0', 3, False),
    ('[ttyUSB1:3]\n', 'ttyUSB0', 3, False),
    ('[ttyUSB1:3]\n', 'ttyUSB1', 3, True),
    ('[3]\n', 'ttyUSB0', 3, True),
    ('[3]\n', 'ttyUSB0', 4, False),
    ('[3]\nrole = nonsense\n', 'ttyUSB0', 3, True),        # present, though left out
])
def test_mentions(tmp_path, text, port, address, expected):
    assert load(tmp_path, text).mentions(port, address) is expected


# -- phase groups ----------------------------------------------------------------------------------

THREE_PHASE = """\
[ttyUSB0:7]
group = house
phase = L1
role = grid
name = House
[ttyUSB0:8]
group = house
phase = L2
name = House
[ttyUSB0:9]
group = house
phase = L3
model = PZEM-016
[ttyUSB0:1]
role = acload
"""


def test_a_valid_three_phase_group(tmp_path):
    the_map = load(tmp_path, THREE_PHASE)
    assert the_map.problems == []
    house = MeterSpec((('L1', 7), ('L2', 8), ('L3', 9)), 'grid', None, 'House', None, 'ac', None,
                      None, 'house', ('ttyUSB0:7', 'ttyUSB0:8', 'ttyUSB0:9'), 1)
    assert the_map.meters_for('ttyUSB0') == [config(1, 'acload', section='ttyUSB0:1',
                                                    line=14), house]
    assert the_map.meters_for('ttyUSB1') == []


def test_a_split_phase_group_of_two_plain_sections(tmp_path):
    the_map = load(tmp_path, '[2]\ngroup = split\nphase = L2\n'
                             '[1]\ngroup = split\nphase = L1\nrole = pvinverter\nposition = 1\n')
    assert the_map.problems == []
    for port in ('ttyUSB0', 'ttyUSB3'):
        group, = the_map.meters_for(port)
        assert (group.phases, group.role, group.position) == (
            (('L1', 1), ('L2', 2)), 'pvinverter', 1)


@pytest.mark.parametrize('text, expected', [
    ('[1]\ngroup = g\nphase = L1\n[2]\ngroup = g\nphase = l1\n',
     ["F:6: [2] key 'phase': phase L1 is also given in [1] on line 1; group 'g' ignored"
      + GROUP_IGNORED]),
    ('[ttyUSB0:1]\ngroup = g\nphase = L1\n[ttyUSB1:2]\ngroup = g\nphase = L2\n',
     ["F:4: [ttyUSB1:2] a group must be on one port: [ttyUSB0:1] and [ttyUSB1:2] are not (use "
      "[PORT:N] with the same port for all, or plain [N] for all); group 'g' ignored"
      + GROUP_IGNORED]),
    ('[1]\ngroup = g\nphase = L1\n[ttyUSB0:2]\ngroup = g\nphase = L2\n',
     ["F:4: [ttyUSB0:2] a group must be on one port: [1] and [ttyUSB0:2] are not (use "
      "[PORT:N] with the same port for all, or plain [N] for all); group 'g' ignored"
      + GROUP_IGNORED]),
    ('[1]\ngroup = g\nphase = L1\nmodel = ac\n[2]\ngroup = g\nphase = L2\nmodel = PZEM-017\n',
     ["F:8: [2] key 'model': a group is made of PZEM-016 (AC) meters only; group 'g' ignored"
      + GROUP_IGNORED]),
    ('[1]\ngroup = g\nphase = L1\nmodel = dc\n',
     ["F:4: [1] key 'model': a group is made of PZEM-016 (AC) meters only; group 'g' ignored"
      + GROUP_IGNORED]),
    ('[1]\nphase = L1\n',
     ["F:2: [1] key 'phase': a phase needs a group = NAME (sections sharing a group are one "
      "three-phase meter); section ignored" + IGNORED]),
    ('[1]\ngroup = g\n',
     ["F:2: [1] key 'group': each section of a group needs a phase = L1, L2 or L3; "
      "section ignored" + IGNORED]),
    ('[1]\ngroup = g\nphase = L1\nrole = grid\n[2]\ngroup = g\nphase = L2\nrole = genset\n',
     ["F:8: [2] key 'role': 'genset' differs from [1] on line 4; give it once or the same in "
      "every section of the group; group 'g' ignored" + GROUP_IGNORED]),
    ('[1]\ngroup = g\nphase = L1\nname = A\n[2]\ngroup = g\nphase = L2\nname = B\n',
     ["F:8: [2] key 'name': 'B' differs from [1] on line 4; give it once or the same in every "
      "section of the group; group 'g' ignored" + GROUP_IGNORED]),
    ('[1]\ngroup = g\nphase = L1\nrole = inverter0\n[2]\ngroup = g\nphase = L2\nposition = 2\n',
     ["F:8: [2] key 'position': '2' differs from [1] on line 4; give it once or the same in "
      "every section of the group; group 'g' ignored" + GROUP_IGNORED]),
    ('[1]\ngroup = g\nphase = L1\nrole = dcsystem\n',
     ["F:4: [1] key 'role': a group is one AC meter: use grid, genset, acload, pvinverter, "
      "evcharger, heatpump; "
      "group 'g' ignored" + GROUP_IGNORED]),
    ('[1]\ngroup = g\nphase = L1\n[2]\ngroup = g\nphase = L2\nposition = 1\n',
     ["F:7: [2] key 'position': position applies only to role pvinverter, acload, evcharger, heatpump, and the "
      "role is not given; group 'g' ignored" + GROUP_IGNORED]),
    ('[1]\ngroup = g\nphase = L1\n[2]\ngroup = g\nphase = L4\n',
     ["F:1: [1] section [2] on line 4 of this group has a problem; group 'g' ignored"
      + GROUP_IGNORED,
      "F:6: [2] key 'phase': phase 'L4': use L1, L2 or L3; section ignored" + IGNORED]),
    ('[1]\ngroup = two words\nphase = L1\n',
     ["F:2: [1] key 'group': group name 'two words': use up to 32 letters, digits, _ and -; "
      "section ignored" + IGNORED]),
])
def test_each_group_mistake_leaves_the_whole_group_out(tmp_path, text, expected):
    assert problems(tmp_path, text) == expected
    the_map = load(tmp_path, text)
    # Each member is then published alone, with the safe default role and nothing else.
    for port in ('ttyUSB0', 'ttyUSB1'):
        for spec in the_map.meters_for(port):
            assert spec == config(spec.address, section=spec.sections[0], line=spec.line)
    assert the_map.meters_for('ttyUSB0') != []


def test_repeating_role_and_name_identically_in_a_group_is_fine(tmp_path):
    the_map = load(tmp_path, '[1]\ngroup = g\nphase = L1\nrole = inverter\nname = PV\n'
                             '[2]\ngroup = g\nphase = L2\nrole = pvinverter\nposition = 1\n'
                             'name = PV\n')
    assert the_map.problems == []
    assert {(c.role, c.position, c.name) for c in the_map.meters_for('ttyUSB0')} == {
        ('pvinverter', 1, 'PV')}


# -- check-config --------------------------------------------------------------------------------

def test_check(tmp_path):
    assert meter_map.check(write(tmp_path, EXAMPLE)) == []
    path = write(tmp_path, '[1]\nrole = gird\n', 'bad.conf')
    assert meter_map.check(path) == meter_map.load(path).problems != []
    missing = str(tmp_path / 'typo.conf')
    assert meter_map.check(missing) == [
        "%s: no such file (without a map the driver publishes the meters it finds with roles "
        "that steer nothing)" % missing]


# -- writing ---------------------------------------------------------------------------------------

def test_changing_values_keeps_every_other_byte(tmp_path):
    path = write(tmp_path, EXAMPLE)
    assert map_update.update(path, '1', {'role': 'genset', 'name': 'Generator'}) is True
    assert read(path) == EXAMPLE.replace(
        'role = grid            # grid |', 'role = genset            # grid |').replace(
        'name = MultiPlus AC in # optional', 'name = Generator # optional')
    config = meter_map.load(path).meters_for('ttyUSB0')[0]
    assert (config.role, config.name) == ('genset', 'Generator')


def test_a_new_key_goes_after_the_sections_last_key_line(tmp_path):
    text = '[1]\n  role = pvinverter  # PV\n# a note about [1]\n\n[2]\nrole = grid\n'
    path = write(tmp_path, text)
    map_update.update(path, '1', {'position': 2, 'name': 'Roof'})
    assert read(path) == ('[1]\n  role = pvinverter  # PV\n  position = 2\n  name = Roof\n'
                          '# a note about [1]\n\n[2]\nrole = grid\n')


def test_none_removes_a_key_and_an_empty_name_too(tmp_path):
    path = write(tmp_path, '[2]\nrole = acload # load\nposition = 1   # input\nname = X\n# end\n')
    map_update.update(path, '2', {'position': None, 'name': ''})
    assert read(path) == '[2]\nrole = acload # load\n# end\n'


def test_a_value_after_an_empty_one_stays_apart_from_the_comment(tmp_path):
    path = write(tmp_path, '[2]\nname =# nothing yet\n')
    map_update.update(path, '2', {'name': 'Fridge'})
    assert read(path) == '[2]\nname = Fridge # nothing yet\n'


def test_a_missing_section_is_appended_at_the_end(tmp_path):
    path = write(tmp_path, '# my map\n[1]\nrole = grid')       # no newline at the end
    map_update.update(path, 'ttyUSB0:2', {'role': 'inverter0', 'name': 'PV'})
    assert read(path) == ('# my map\n[1]\nrole = grid\n\n[ttyUSB0:2]\nrole = pvinverter\n'
                          'position = 0\nname = PV\n')
    assert meter_map.load(path).meters_for('ttyUSB0')[1] == config(
        2, 'pvinverter', 0, 'PV', section='ttyUSB0:2', line=5)


FOUND = ['ttyUSB0:2: a PZEM-016 found on 2026-12-01 15:20 by dbus-pzem; no section named it.',
         'Its role steers nothing; set role, name and the rest here or in the Venus GUI.']


@pytest.mark.parametrize('text', ['[2]\nrole = grid\n', '[ttyUSB0:2]\nname = Pump\n'])
def test_a_found_meter_gets_a_section_only_while_none_names_it(tmp_path, text):
    path = write(tmp_path, text)
    assert not map_update.update_many(path, {'ttyUSB0:2': {'role': 'acload'}},
                                      {'ttyUSB0:2': FOUND})
    assert read(path) == text
    assert map_update.update_many(path, {'ttyUSB0:3': {'role': 'acload'}}, {'ttyUSB0:3': FOUND})
    assert read(path).startswith(text + '\n# ttyUSB0:2: a PZEM-016 found')


def test_moving_a_meter_changes_only_its_header_line(tmp_path):
    text = '\ufeff# mine\r\n[ttyUSB0:2]  ; pump\r\nrole = acload\r\nname = Pump\r\n[3]\r\n'
    path = write(tmp_path, text)
    assert map_update.move_meter(path, '/dev/ttyUSB0', 2, 9) == ('ttyUSB0:2', 'ttyUSB0:9')
    assert read(path) == text.replace('[ttyUSB0:2]', '[ttyUSB0:9]')
    assert map_update.move_meter(path, 'ttyUSB1', 2, 9) is None        # names no meter there
    assert map_update.move_meter(path, 'ttyUSB1', 3, 4) == ('3', '4')   # a plain one stays plain
    assert read(path) == text.replace('[ttyUSB0:2]', '[ttyUSB0:9]').replace('[3]', '[4]')


def test_moving_a_meter_absorbs_only_a_section_the_driver_added(tmp_path):
    found = '\n'.join('# ' + line for line in FOUND).replace('ttyUSB0:2', 'ttyUSB0:4')
    mine = '[ttyUSB0:3]\nrole = dcsource\nname = Wind\n'
    path = write(tmp_path, mine + '\n' + found + '\n[ttyUSB0:4]\nrole = acload\n')
    assert map_update.move_meter(path, 'ttyUSB0', 3, 4) == ('ttyUSB0:3', 'ttyUSB0:4')
    assert read(path) == mine.replace('ttyUSB0:3', 'ttyUSB0:4')
    # A section of the user's own at the new address is another meter's: refused, untouched.
    text = mine + '[ttyUSB0:4]\nrole = acload\nname = Fridge\n'
    path = write(tmp_path, text)
    with pytest.raises(MapWriteError, match=r'^\[ttyUSB0:4\] on line 4 already names a meter at '
                                            r'address 4 on ttyUSB0$'):
        map_update.move_meter(path, 'ttyUSB0', 3, 4)
    assert read(path) == text


def test_the_file_and_its_directory_are_created(tmp_path):
    path = str(tmp_path / 'data' / 'conf' / 'pzem.conf')
    map_update.update(path, 'ttyUSB0:1', {'role': 'acload', 'position': None, 'name': 'Kitchen'})
    assert read(path) == '[ttyUSB0:1]\nrole = acload\nname = Kitchen\n'
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644


def test_an_old_role_name_is_written_as_role_and_position(tmp_path):
    path = write(tmp_path, '[1]\nrole = grid\n')
    map_update.update(path, '1', {'role': 'inverter', 'position': None})
    assert read(path) == '[1]\nrole = pvinverter\nposition = 1\n'
    with pytest.raises(MapWriteError, match='role inverter means position 1, not 2'):
        map_update.update(path, '1', {'role': 'inverter', 'position': 2})


def test_a_name_with_space_hash_is_quoted_and_reads_back(tmp_path):
    path = write(tmp_path, '[1]\nname = old\n')
    map_update.update(path, '1', {'name': 'Pump #2'})
    assert read(path) == '[1]\nname = "Pump #2"\n'
    assert meter_map.load(path).meters_for('x')[0].name == 'Pump #2'


def test_crlf_files_stay_crlf(tmp_path):
    path = write(tmp_path, '[1]\r\nrole = grid\r\n')
    map_update.update(path, '1', {'name': 'A'})
    map_update.update(path, '2', {'role': 'acload'})
    assert read(path) == '[1]\r\nrole = grid\r\nname = A\r\n\r\n[2]\r\nrole = acload\r\n'


def test_a_group_is_written_in_one_replace(tmp_path, monkeypatch):
    path = write(tmp_path, THREE_PHASE)
    replaced = []
    real_replace = os.replace
    monkeypatch.setattr(os, 'replace', lambda a, b: replaced.append(b) or real_replace(a, b))
    changes = {'role': 'acload', 'position': 1, 'name': None}
    house = [m for m in meter_map.load(path).meters_for('ttyUSB0') if m.group == 'house'][0]
    map_update.update_many(path, {section: changes for section in house.sections})
    assert replaced == [path]
    assert read(path) == """\
[ttyUSB0:7]
group = house
phase = L1
role = acload
position = 1
[ttyUSB0:8]
group = house
phase = L2
role = acload
position = 1
[ttyUSB0:9]
group = house
phase = L3
model = PZEM-016
role = acload
position = 1
[ttyUSB0:1]
role = acload
"""
    assert {(c.role, c.position, c.name) for c in meter_map.load(path).meters_for('ttyUSB0')} \
        == {('acload', 1, None), ('acload', None, None)}


def test_the_mode_of_the_file_is_kept(tmp_path):
    path = write(tmp_path, '[1]\n')
    os.chmod(path, 0o600)
    map_update.update(path, '1', {'role': 'grid'})
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_no_change_no_write(tmp_path, monkeypatch):
    path = write(tmp_path, '[1]\nrole = grid # x\n')
    monkeypatch.setattr(os, 'replace', lambda a, b: pytest.fail('wrote an unchanged map'))
    assert map_update.update(path, '1', {'role': 'grid', 'position': None}) is False


@pytest.mark.parametrize('failing', ['replace', 'fsync'])
def test_a_failed_write_leaves_the_original_untouched(tmp_path, monkeypatch, failing):
    path = write(tmp_path, EXAMPLE)
    before = sorted(os.listdir(str(tmp_path)))

    def fail(*args):
        raise OSError(errno.ENOSPC, 'No space left on device')
    monkeypatch.setattr(os, failing, fail)
    with pytest.raises(MapWriteError, match='cannot write %s: No space left on device'
                       % re.escape(path)):
        map_update.update(path, '1', {'role': 'acload'})
    assert read(path) == EXAMPLE
    assert sorted(os.listdir(str(tmp_path))) == before       # no temp file left behind


@pytest.mark.parametrize('section, changes, message', [
    ('1', {'role': 'gird'}, "role 'gird': unknown role 'gird'"),
    ('1', {'name': 'x' * 33}, 'the name has 33 characters'),
    ('1', {'name': 'two\nlines'}, 'a value cannot span lines'),
    ('1', {'colour': 'red'}, 'cannot write colour into \\[1\\]'),
    ('1', {'position': 1}, r'not written: the map would then leave out \[1\]: \[1\] key '
                           r"'position': position applies only to role pvinverter, acload, evcharger, heatpump"),
    ('1', {'position': True}, "position 'True'"),
    ('ttyUSB0:0', {'role': 'grid'}, r'section \[ttyUSB0:0\]: address 0 is out of range'),
    ('bus', {'stopbits': 3}, "stopbits '3': use 1 or 2"),
])
def test_bad_changes_are_refused_and_nothing_written(tmp_path, section, changes, message):
    path = write(tmp_path, '[1]\nrole = grid\n')
    with pytest.raises(MapWriteError, match=message):
        map_update.update(path, section, changes)
    assert read(path) == '[1]\nrole = grid\n'


def test_a_map_that_is_not_text_is_not_overwritten(tmp_path):
    path = write(tmp_path, b'[1]\nrole = \xff\n')
    with pytest.raises(MapWriteError, match='not UTF-8'):
        map_update.update(path, '1', {'role': 'grid'})
    assert open(path, 'rb').read() == b'[1]\nrole = \xff\n'


def test_bus_settings_can_be_written(tmp_path):
    path = write(tmp_path, '')
    map_update.update(path, 'bus:ttyUSB0', {'interval': 0.5, 'local_echo': True})
    assert read(path) == '[bus:ttyUSB0]\ninterval = 0.5\nlocal_echo = yes\n'
    assert meter_map.load(path).bus_options('ttyUSB0') == {'interval': 0.5, 'local_echo': True}


# -- generated maps --------------------------------------------------------------------------------

PORT_NAMES = ['ttyUSB0', 'ttyUSB1', 'ttyACM0', '/dev/ttyUSB0', 'bus', '', 'x y', 'ü', '0']
KEYS = list(map_syntax.METER_KEYS + map_syntax.BUS_KEYS) + ['Role', 'NAME', 'colour', '#role', '']
VALUES = list(roles.ROLES) + [
    'inverter', 'inverter0', 'GRID', 'gird', '0', '1', '2', '3', '-1', '-8', '9600', '0.5', '.5',
    '1e3', 'nan', 'inf', 'wind', 'fridge', 'generic', 'ac', 'dc', 'PZEM-016', '017', 'L1', 'l2',
    'L3', 'L4', 'house', 'yes', 'no', 'N', 'e', '', '"q #x"', '"open', 'Pump#2', 'a #b', '١']
PHASES = ['L1', 'L2', 'L3', 'l1']
COMMENTS = ['', ' # c', ';c', ' ; c', '#', ' "#"']

headers = st.one_of(
    st.builds('[{}]'.format, st.integers(-3, 300)),
    st.builds('[{}:{}]'.format, st.sampled_from(PORT_NAMES), st.integers(-3, 300)),
    st.sampled_from(['[bus]', '[BUS]', '[bus:ttyUSB0]', '[bus:ttyUSB1]', '[bus:]', '[', '[]',
                     '[1', '[[1]]', '[1] # c', '[1] x', ' [2] ']),
    st.builds('[{}]'.format, st.text(max_size=12)))
key_lines = st.builds('{}{}{}{}{}'.format, st.sampled_from(['', ' ', '\t']), st.sampled_from(KEYS),
                      st.sampled_from([' = ', '=', ': ', ' ', ' == ']),
                      st.one_of(st.sampled_from(VALUES), st.text(max_size=40)),
                      st.sampled_from(COMMENTS))
group_members = st.builds('[{}]\ngroup = house\nphase = {}\n{}'.format, st.integers(1, 9),
                          st.sampled_from(PHASES), st.sampled_from(['', 'role = grid', 'model = ac']))
lines = st.one_of(headers, key_lines, key_lines, group_members,
                  st.sampled_from(['', '# c', '; c', '   ', '\t']), st.text(max_size=30))
texts = st.builds(lambda bom, ls, eol: bom + eol.join(ls), st.sampled_from(['', '\ufeff']),
                  st.lists(lines, max_size=40), st.sampled_from(['\n', '\r\n']))
files = st.one_of(texts.map(lambda t: t.encode('utf-8')), st.binary(max_size=300),
                  st.builds(lambda t, b: t.encode('utf-8') + b, texts, st.binary(max_size=20)))


def assert_sane(the_map, path):
    assert all(isinstance(p, str) and p.startswith(path + ':') for p in the_map.problems)
    for port in ('ttyUSB0', 'ttyUSB1', 'ttyACM0'):
        meters = the_map.meters_for(port)
        addresses = [a for c in meters for a in c.addresses]
        assert len(addresses) == len(set(addresses))
        for c in meters:
            assert all(1 <= a <= 247 for a in c.addresses) and c.line >= 1
            assert len(c.sections) == len(c.phases) and all(isinstance(h, str) for h in c.sections)
            assert c.role is None or c.role in roles.ROLES
            assert c.position is None or c.position in roles.POSITIONS[c.role]
            assert c.monitor_mode is None or \
                c.monitor_mode in roles.MONITOR_MODES[c.role].values()
            assert c.model in (None, 'ac', 'dc')
            assert c.name is None or 0 < len(c.name) <= 32
            assert c.group is not None or len(c.phases) == 1
            if c.group:
                assert c.role in (None,) + roles.AC_ROLES and c.model in (None, 'ac')
                assert len({phase for phase, _ in c.phases}) == len(c.phases)
        options = the_map.bus_options(port)
        assert set(options) <= set(map_syntax.BUS_KEYS)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=files)
def test_any_file_gives_meters_or_problems_never_an_exception(data):
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, 'pzem.conf')
        with open(path, 'wb') as f:
            f.write(data)
        the_map = meter_map.load(path)
        assert_sane(the_map, path)
        assert meter_map.load(path).problems == the_map.problems


NAMES = st.one_of(
    st.text(st.characters(blacklist_categories=('Cc', 'Cs')), max_size=32),
    st.sampled_from(['Pump #2', 'Pump#2', ' lead', 'trail ', '"q"', '#1', ';x', '"', 'a" #b',
                     'x "y" ; z', '= :']))
SIMPLE_NAMES = st.from_regex(r'[A-Za-z0-9][A-Za-z0-9 ]{0,20}[A-Za-z0-9]', fullmatch=True)


@st.composite
def valid_maps(draw):
    """(text, {address: section header}) of a valid map: comments everywhere, one port."""
    addresses = draw(st.lists(st.integers(1, 247), unique=True, max_size=5))
    comment = st.sampled_from(['', '   # note', ' ; why', '\t# Pump#2 here'])
    out, headers = ['# generated map'], {}
    for address in addresses:
        header = draw(st.sampled_from([str(address), 'ttyUSB0:%d' % address]))
        headers[address] = header
        out.append('[%s]%s' % (header, draw(comment)))
        role = draw(st.sampled_from(roles.ROLES))
        keys = [('role', role)]
        if role in roles.POSITIONS and draw(st.booleans()):
            keys.append(('position', draw(st.sampled_from(roles.POSITIONS[role]))))
        if draw(st.booleans()):
            keys.append(('name', draw(SIMPLE_NAMES)))
        for key, value in draw(st.permutations(keys)):
            if draw(st.booleans()):
                out.append('# about %s' % key)
            out.append('%s = %s%s' % (key, value, draw(comment)))
        out.extend(draw(st.sampled_from([[], [''], ['', '# trailing comment']])))
    text = '\n'.join(out) + draw(st.sampled_from(['\n', '']))
    return text, headers


@st.composite
def valid_changes(draw):
    role = draw(st.sampled_from(roles.ROLES + tuple(roles.ALIASES)))
    canonical, implied = roles.resolve(role)
    if implied is not None:
        position = draw(st.sampled_from([None, implied]))
    elif canonical in roles.POSITIONS:
        position = draw(st.sampled_from((None,) + roles.POSITIONS[canonical]))
    else:
        position = None
    changes = {'role': role, 'position': position, 'monitor_mode': None}
    modes = roles.MONITOR_MODES.get(canonical)
    if modes and draw(st.booleans()):
        changes['monitor_mode'] = draw(st.sampled_from(sorted(modes) + sorted(modes.values())))
    if draw(st.booleans()):
        changes['name'] = draw(st.one_of(st.none(), st.just(''), NAMES))
    return changes


def without_keys(text, header, keys):
    """The lines of text, less the lines of `keys` in section [header]."""
    out, current = [], None
    for line in text.split('\n'):
        stripped = line.strip()
        if stripped.startswith('['):
            current = stripped[1:stripped.index(']')]
        elif current == header and re.match(r'\s*(%s)\s*=' % '|'.join(keys), line):
            continue
        out.append(line)
    return out


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(base=valid_maps(), changes=valid_changes(), data=st.data(), on_port=st.booleans())
def test_update_then_load_round_trip(base, changes, data, on_port):
    text, headers = base
    known = sorted(headers)
    target = data.draw(st.sampled_from(known) if known and data.draw(st.booleans())
                       else st.integers(1, 247))
    header = headers.get(target) or ('ttyUSB0:%d' % target if on_port else str(target))
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, 'pzem.conf')
        with open(path, 'w') as f:
            f.write(text)
        before = meter_map.load(path).meters_for('ttyUSB0')
        assert meter_map.load(path).problems == []
        name = changes.get('name')
        try:
            map_update.update(path, header, changes)
        except MapWriteError:
            # Only a name that needs quotes and holds '"' before a comment sign cannot be
            # written so that it reads back the same.
            assert name and re.search(r'"\s*[#;]', name)
            assert read(path) == text
            return
        new = read(path)
        the_map = meter_map.load(path)

    assert the_map.problems == []
    role, position = roles.resolve(changes['role'])
    position = changes['position'] if position is None else position
    mode = changes['monitor_mode']
    if mode is not None:
        mode = roles.MONITOR_MODES[role].get(mode, mode)
    old = {c.address: c for c in before}
    expected_name = name or None if 'name' in changes else getattr(old.get(target), 'name', None)
    config = {c.address: c for c in the_map.meters_for('ttyUSB0')}[target]
    assert (config.role, config.position, config.monitor_mode, config.name) == (
        role, position, mode, expected_name)
    others = lambda meters: [c._replace(line=0) for c in meters if c.address != target]
    assert others(the_map.meters_for('ttyUSB0')) == others(before)     # lines may have moved
    if target in headers:
        keys = ['role', 'position', 'monitor_mode', 'name']
        assert without_keys(new, header, keys) == without_keys(text, header, keys)
    else:
        assert new.startswith(text if text.endswith('\n') or not text else text + '\n')
        assert '[%s]' % header in new[len(text):]


@pytest.mark.parametrize('make, message', [
    (lambda path: '/dev/zero', 'not a regular file (a device, a pipe or a socket), so not a map'),
    (lambda path: os.mkfifo(path) or path,
     'not a regular file (a device, a pipe or a socket), so not a map'),
    (lambda path: open(path, 'wb').write(b'#' * (300 * 1024)) and path,
     'larger than 256 KiB, so not a meter map'),
])
def test_what_is_not_a_map_file_is_one_problem_read_in_bounded_time(tmp_path, make, message):
    path = make(str(tmp_path / 'pzem.conf'))
    the_map = meter_map.load(path)      # a device or a FIFO would block or never end
    assert the_map.problems == ['%s: %s; the map is not used' % (path, message)]
    assert the_map.broken and not the_map.readable
