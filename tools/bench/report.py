"""docs/benchmarks.md from the measurements: the machine, a summary against the goals, one
section per measurement, and where the poll path's CPU time goes (from the cProfile stats)."""
import datetime
import hashlib
import os
import platform
import pstats
import statistics
import subprocess
from importlib import metadata

import discovery
from harness import ROOT

LIBRARIES = ('pymodbus', 'pyserial', 'dbus-python', 'PyGObject')


def _first(path, key):
    try:
        with open(path) as f:
            for line in f:
                name, _, value = line.partition(':' if path.startswith('/proc') else '=')
                if name.strip() == key:
                    return value.strip().strip('"')
    except OSError:
        pass
    return 'unknown'


def _run(*command, cwd=ROOT):
    try:
        return subprocess.run(command, capture_output=True, text=True, cwd=cwd,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ''


def driver_state(root=ROOT):
    """'VERSION, commit, code fingerprint': what was measured (others may be editing it)."""
    folder = os.path.join(root, 'package', 'opt', 'pzem')
    with open(os.path.join(folder, 'VERSION')) as f:
        version = f.read().strip()
    files = ['dbus-pzem'] + sorted(os.path.join('pzem', name)
                                   for name in os.listdir(os.path.join(folder, 'pzem'))
                                   if name.endswith('.py'))      # the driver, not pzemctl
    commit = _run('git', 'rev-parse', '--short', 'HEAD', cwd=root) or 'unknown'
    if _run('git', 'status', '--porcelain', '--', *('package/opt/pzem/' + f for f in files),
            cwd=root):
        commit += ' + uncommitted changes'
    digest = hashlib.sha256()
    for name in files:
        with open(os.path.join(folder, name), 'rb') as f:
            digest.update(name.encode() + f.read())
    return '%s, commit %s, code sha256 %s' % (version, commit, digest.hexdigest()[:12])


def machine(command):
    from gi.repository import GLib
    libraries = ', '.join('%s %s' % (name, metadata.version(name)) for name in LIBRARIES)
    return {
        'command': command,
        'date': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
        'driver': driver_state(),
        'cpu': '%s, %d logical cores' % (_first('/proc/cpuinfo', 'model name'), os.cpu_count()),
        'memory': _first('/proc/meminfo', 'MemTotal'),
        'os': '%s, Linux %s' % (_first('/etc/os-release', 'PRETTY_NAME'), platform.release()),
        'python': '%s (%s)' % (platform.python_version(), platform.python_implementation()),
        'libraries': libraries,
        'system': 'GLib %d.%d.%d, %s' % (
            GLib.MAJOR_VERSION, GLib.MINOR_VERSION, GLib.MICRO_VERSION,
            _run('dbus-daemon', '--version').split('\n')[0]),
        'load_before': os.getloadavg(),
        'stall_before': memory_stall(),
    }


def memory_stall():
    """Seconds for which some task waited on memory (Linux PSI), or None: a run during which
    other programs pushed the machine into reclaim measures page faults, not the driver."""
    try:
        with open('/proc/pressure/memory') as f:
            return int(f.readline().split('total=')[1]) / 1e6
    except (OSError, IndexError, ValueError):
        return None


# -- formatting helpers -------------------------------------------------------------------

def table(head, rows):
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '|'.join(' --- ' for _ in head) + '|']
    lines += ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]
    return '\n'.join(lines) + '\n'


def spread(values, unit='s', digits=2):
    """'median (min..max)' of a list of numbers, or the one number."""
    f = '%.' + str(digits) + 'f'
    if len(values) == 1:
        return (f + ' %s') % (values[0], unit)
    return (f + ' %s (' + f + '..' + f + ', n=%d)') % (
        statistics.median(values), unit, min(values), max(values), len(values))


def mib(kib):
    return '%.1f MiB' % (kib / 1024.0)


def slope_per_hour(samples):
    """KiB per hour of VmRSS over the second half of the soak (least squares)."""
    half = [s for s in samples if s['minute'] >= samples[-1]['minute'] / 2.0]
    if len(half) < 2:
        return 0.0
    xs, ys = [s['minute'] / 60.0 for s in half], [s['rss'] for s in half]
    mx, my = statistics.mean(xs), statistics.mean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else 0.0


# -- the profile ----------------------------------------------------------------------------

# (label, file ending(s), function): rows of the poll-path breakdown, as far as they exist
POLL_PATH = (
    ('Poller.poll_next: one poll, everything below', 'pzem/poll.py', 'poll_next'),
    ('  Meter.poll: read, decode, check', 'pzem/meter.py', 'poll'),
    ('    Bus.read_input: the Modbus seam', 'pzem/modbus.py', 'read_input'),
    ('      Bus._raw: the request out, the reply in', 'pzem/modbus.py', '_raw'),
    ('        os.write', '~', '<built-in method posix.write>'),
    ('        poll', '~', "<method 'poll' of 'select.poll' objects>"),
    ('        os.read', '~', '<built-in method posix.read>'),
    ('      time.sleep (rest of the t3.5 silence)', '~', '<built-in method time.sleep>'),
    ('      tcflush (after a failed exchange only)', '~', '<built-in method termios.tcflush>'),
    ('      check_reply (incl. our CRC)', ('pzem/rtu.py', 'pzem/modbus.py'), 'check_reply'),
    ('    Model.decode', 'pzem/models.py', 'decode'),
    ('    Model.check', 'pzem/models.py', 'check'),
    ('    Meter._check_energy', 'pzem/meter.py', '_check_energy'),
    ('    PhaseEnergy.book: the driver\'s own totals', 'pzem/energy.py', 'book'),
    ('  Publisher._publish: publish one poll that brought something new', 'pzem/publisher.py',
     '_publish'),
    ('    Publisher._ac_totals: totals of the phases', 'pzem/publisher.py', '_ac_totals'),
    ('    BusItemService.update: what changed, one ItemsChanged', 'pzem/busitem.py', 'update'),
    ('      _text: text of each changed value', 'pzem/busitem.py', '_text'),
    ('      _items_changed: the signal, built and sent', 'pzem/busitem.py', '_items_changed'),
    ('        dbus-python Message.append (marshalling)', '~',
     "<method 'append' of 'dbus.lowlevel.Message' objects>"),
    ('        dbus-python send_message', '~',
     "<method 'send_message' of '_dbus_bindings.Connection' objects>"),
    ('logging.debug calls', 'logging/__init__.py', 'debug'),
)


def _short(key):
    path, line, name = key
    if path == '~':
        return name
    for marker in ('site-packages/', '/opt/pzem/', '/lib/python3'):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return '%s:%d %s' % (path.lstrip('0123456789./'), line, name)


def _area(key):
    path, _, name = key
    if path == '~':
        if 'dbus' in name:
            return 'dbus-python (C)'
        if any(s in name for s in ('select', 'posix', 'termios', 'fcntl', 'sleep', 'os.')):
            return 'system calls'
        return 'built-ins (str.format, round, isinstance, hex, struct, ...)'
    for marker, area in (('pymodbus', 'pymodbus'), ('/serial/', 'pyserial'),
                         ('/dbus/', 'dbus-python'), ('/gi/', 'PyGObject'),
                         ('/pzem/', 'driver (pzem)'), ('logging', 'logging')):
        if marker in path:
            return area
    return 'other standard library'


def profile_tables(path, ticks_hint):
    stats = pstats.Stats(path).stats       # {key: (cc, ncalls, tottime, cumtime, callers)}
    found = {}
    for label, ending, name in POLL_PATH:
        for key, row in stats.items():
            if key[0].endswith(ending) and key[2] == name:
                if label not in found or row[3] > found[label][3]:
                    found[label] = row
    tick = found.get(POLL_PATH[0][0])
    ticks = tick[1] if tick else ticks_hint
    per_tick = tick[3] / ticks if tick else None
    total = sum(row[2] for row in stats.values())

    rows = []
    for label, _, _ in POLL_PATH:
        if label in found:
            _, calls, _, cum, _ = found[label]
            share = '%.0f %%' % (100.0 * cum / tick[3]) if tick else ''
            depth = (len(label) - len(label.lstrip())) // 2
            rows.append(('&nbsp;' * 4 * depth + label.strip(), '%.1f' % (calls / ticks),
                         '%.0f' % (1e6 * cum / ticks), share))
    breakdown = table(('function (indented: called from the row above)', 'calls per poll',
                       'CPU µs per poll', 'share of the poll'), rows)

    top = sorted(stats.items(), key=lambda kv: kv[1][2], reverse=True)[:15]
    own = table(('function', 'calls per poll', 'own CPU µs per poll', 'share of all'),
                [('`%s`' % _short(k), '%.1f' % (v[1] / ticks), '%.0f' % (1e6 * v[2] / ticks),
                  '%.1f %%' % (100.0 * v[2] / total)) for k, v in top])

    areas = {}
    for key, row in stats.items():
        areas[_area(key)] = areas.get(_area(key), 0.0) + row[2]
    by_area = table(('where the code lives', 'own CPU µs per poll', 'share of all'),
                    [(a, '%.0f' % (1e6 * t / ticks), '%.1f %%' % (100.0 * t / total))
                     for a, t in sorted(areas.items(), key=lambda kv: -kv[1])])
    return dict(ticks=ticks, per_tick=per_tick, total=total, breakdown=breakdown, own=own,
                by_area=by_area)


# -- the page ---------------------------------------------------------------------------------

def _head(info):
    return ('# Benchmarks\n\n'
            'Written by `tools/bench.sh`, which overwrites this page on every run: do not edit by '
            'hand. The numbers are measured and reported, never asserted by a test: the machine '
            'is shared, so expect some noise from run to run.\n\n'
            '- command: `%s`\n- date: %s; the run took %.1f minutes\n- driver: %s\n\n' % (
                info['command'], info['date'], info['duration'] / 60.0, info['driver']))


def _machine(info):
    return '\n## Machine\n\n' + table(('', ''), [
        ('CPU', info['cpu']), ('memory', info['memory']), ('system', info['os']),
        ('Python', info['python']), ('libraries', info['libraries']), ('bus', info['system']),
        ('load average (1, 5, 15 min) before / after',
         '%s / %s' % (', '.join('%.2f' % x for x in info['load_before']),
                      ', '.join('%.2f' % x for x in info['load_after']))),
        ('memory pressure during the run (PSI "some" stall; should be ~0)',
         '%.1f s' % (info['stall_after'] - info['stall_before'])
         if info.get('stall_after') is not None and info['stall_before'] is not None
         else 'unknown'),
    ])


def replace_section(page, section):
    """`page` with the section of the same '## ' title replaced by `section` (added at the end
    when it has none)."""
    title = section.split('\n', 1)[0]
    start = page.find('\n' + title + '\n')
    if start < 0:
        return page.rstrip('\n') + '\n\n' + section
    end = page.find('\n## ', start + 1)
    return page[:start + 1] + section + ('\n' + page[end + 1:] if end >= 0 else '')


def render_per_read(info, section, profile_run, unprofiled):
    """The page of a `--per-read` run: the before/after figures and the profile only."""
    prof = profile_tables(profile_run['path'], profile_run['polls'])
    return ''.join((
        _head(info),
        'This run measured only the per-read figures and the profile (`--per-read`); '
        '`tools/bench.sh --baseline DIR` without it measures everything (bus efficiency, D-Bus '
        'traffic, latencies, the soak) as well.\n\n',
        section, _machine(info), '\n',
        profile_section(profile_run, prof, unprofiled)))


def render(info, k, r):
    eff, cpu, soak, starts = r['efficiency'], r['cpu'], r['soak'], r['startup']
    exits, returns = r['exit'], r['return']
    changing = next(row for row in cpu if row['changing'])
    static = next(row for row in cpu if not row['changing'])
    hwm = {row['meters']: row['VmHWM'] for row in eff}
    samples = soak['samples']
    base = samples[1] if len(samples) > 2 else samples[0]     # past the first minute's warm-up
    growth = samples[-1]['rss'] - base['rss']
    prof = profile_tables(r['profile']['path'], r['profile']['polls'])
    plan = k['plan']
    out = []
    w = out.append

    w(_head(info))

    w('## Summary\n\n')
    w(table(('what', 'goal', 'measured'), [
        ('bus efficiency at `--interval 0`, 1 / 4 / 8 / 16 meters', '>= 0.95 of the wire limit',
         ' / '.join('%.3f' % row['ratio'] for row in eff)),
        ('D-Bus messages per meter per poll, all values changing / none', '<= 1',
         '%.2f / %.2f' % (changing['per_poll'], static['per_poll'])),
        ('D-Bus bytes per second, 8 meters at 1 s, changing / none', '',
         '%.0f / %.0f' % (changing['bytes_per_s'], static['bytes_per_s'])),
        ('driver CPU per published update, 8 meters at 1 s, changing / none', '',
         '%.2f ms / %.2f ms (schedstat: %.2f / %.2f)' % (
             changing['cpu_ms'], static['cpu_ms'], changing['runtime_ms'], static['runtime_ms'])),
        ('peak memory (VmHWM), 1 / 16 meters', '', '%s / %s' % (mib(hwm[1]), mib(hwm[16]))),
        ('VmRSS growth over a %.1f-minute soak with 10 %% faults' % samples[-1]['minute'], 'flat',
         '%+d KiB (%s to %s)' % (growth, mib(base['rss']), mib(samples[-1]['rss']))),
        ('start to first published values, 1 meter', '',
         spread([s for row in starts if row['meters'] == 1 for s in row['first']])),
        ('exit on a port with no meter (worst case)', '< 5 s',
         '%.2f s' % max(s for row in exits for s in row['seconds'])),
        ('meter answers again -> valid values, 1 meter', '',
         spread([s for row in returns if row['meters'] == 1 for s in row['up']])),
        ('a meter plugged in at a likely address -> published', 'about a minute',
         spread(r['discovery']['found']['seconds'], digits=1)),
        ('poll gap of one meter, 8 meters at 1 s, search off / on: worst', 'within the interval',
         ' / '.join('%.3f s' % row['worst'] for row in r['discovery']['jitter'])),
        ('start with 10 % bad CRC + 10 % silence -> all 4 meters published', '< 10 s',
         spread(r['discovery']['faults']['seconds'])),
    ]))

    w(_machine(info))

    w('\n## How it is measured\n\n')
    w('- The real driver, `package/opt/pzem/dbus-pzem`, runs as a subprocess with '
      '`DBUS_SYSTEM_BUS_ADDRESS` pointing at a private `dbus-daemon`, next to the localsettings '
      'stand-in (`tests/fake_localsettings.py`). Its CPU time is utime + stime from '
      '`/proc/<pid>/stat`, its memory VmHWM and VmRSS from `/proc/<pid>/status`: the driver '
      'process only, not the simulator, the bus or the benchmark. utime and stime count in clock '
      'ticks (10 ms), too coarse for short windows, so the time on the CPU from '
      '`/proc/<pid>/task/*/schedstat` (nanoseconds, same process) is given next to them, and is '
      'what the bus efficiency table uses.\n')
    w('- The meters are the simulator (`pzemsim.SimBus`, wire-time mode) in a thread of the '
      'benchmark process, on a pseudo-terminal. All meters are PZEM-016 (AC): a read of their 10 '
      'input registers is %d bytes out and %d back; at 9600 baud with %d-bit characters (8N2, the '
      'driver\'s default) that is %.1f ms on the wire, plus the meter\'s %.0f ms turnaround: '
      '**%.3f reads/s** is the physical limit back to back. A Modbus master must also keep '
      '3.5 characters (%.1f ms) of silence between frames, which makes %.3f reads/s the most a '
      'master that follows the standard can reach.\n' % (
          8, 25, 11, 1000 * k['wire'], 1000 * k['turnaround'], k['limit'], 1000 * k['t35'],
          1.0 / (k['wire'] + k['turnaround'] + k['t35'])))
    w('- The meter maps name the model (`model = ac`) for the bus, CPU, soak and profile runs, '
      'so start-up needs no detection reads, and turn the search for meters the map does not '
      'name off (`scan = no`), so these figures measure the poll path, the same work as before '
      'the search existed; the start-up, exit, return and "Finding meters" runs use maps without '
      'either, as most users write them, and the device defaults (`--interval 1`, '
      '`--timeout 0.5`).\n')
    w('- D-Bus traffic is recorded by `dbus-monitor --pcap` with the match rule '
      '`type=\'signal\',interface=\'com.victronenergy.BusItem\'`; a message\'s size is its '
      'whole marshalled length as the bus delivers it (header with sender, and body), counted per '
      'sender (each published meter has its own connection).\n')
    w('- Windows: bus efficiency %d s per meter count, CPU %d s per case, profile %d s, soak '
      '%.1f minutes (sampled every %d s).\n' % (plan['efficiency'], plan['cpu'], plan['profile'],
                                                plan['soak_minutes'], plan['soak_sample']))

    w('\n## Bus efficiency\n\n')
    w('`--interval 0`: the driver reads meter after meter as fast as the bus answers. Reads/s '
      'counts the requests that reached the simulated meters over the window (first to last).\n\n')
    w(table(('meters', 'reads', 'reads/s', 'of the wire limit', 'of the limit with t3.5',
             'reads per meter (fewest..most)', 'driver CPU per read (schedstat)', 'VmHWM', 'VmRSS'),
            [(row['meters'], row['reads'], '%.3f' % row['rate'], '**%.3f**' % row['ratio'],
              '%.3f' % row['ratio_t35'], '%d..%d' % (row['fewest'], row['most']),
              '%.2f ms' % row['cpu_ms'], mib(row['VmHWM']), mib(row['VmRSS'])) for row in eff]))

    w('\n## CPU per published update, and D-Bus traffic\n\n')
    w('8 meters at `--interval 1` (the default), for %d s after start-up. "Changing": a thread '
      'changes every value of every meter 10 times a second (voltage, current = P / (V x PF), '
      'power, power factor, frequency; energy counts up 2.5 to 3.6 Wh/s, so even the whole-Wh '
      'counter moves at every poll). "None": constant values, energy still. An update is one poll '
      'of one meter and the publishing of what it brought.\n\n' % plan['cpu'])
    w(table(('values', 'polls', 'driver CPU (user + sys)', 'CPU per update', 'same from schedstat',
             'CPU load (one core)',
             'signals', 'of which ItemsChanged', 'messages per meter per poll (mean / worst meter)',
             'bytes/s', 'mean message'),
            [('change every poll' if row['changing'] else 'none change', row['polls'],
              '%.2f s (%.2f + %.2f)' % (row['cpu'], row['user'], row['system']),
              '**%.3f ms**' % row['cpu_ms'], '%.3f ms' % row['runtime_ms'], '%.2f %%' % row['load'],
              row['messages'], row['items_changed'],
              '**%.2f** / %.2f' % (row['per_poll'], row['per_poll_max']),
              '%.0f' % row['bytes_per_s'], '%.0f B' % row['mean_size']) for row in cpu]))

    w('\n## Memory\n\n')
    w('Peak (VmHWM) and resident (VmRSS) memory at the end of the bus efficiency runs above: '
      '%s. Soak: 8 meters at `--interval 0`, values changing, and 10 %% of the requests spoilt '
      'at random (no reply, bad CRC, junk values: %s). The driver dropped a meter %d times '
      '(three misses in a row) and took it back %d times. VmRSS growth from %.1f min to the end: '
      '**%+d KiB**; %s.\n\n' % (
          ', '.join('%d meters %s / %s' % (row['meters'], mib(row['VmHWM']), mib(row['VmRSS']))
                    for row in eff),
          ', '.join('%s %d' % kv for kv in soak['kinds'].items()), soak['disconnects'],
          soak['returns'], base['minute'], growth,
          'slope over the second half: %+.0f KiB/hour' % slope_per_hour(samples)
          if samples[-1]['minute'] >= 10 else 'too short a soak for a slope'))
    w(table(('minute', 'VmRSS KiB', 'VmHWM KiB', 'polls', 'faults', 'driver CPU s'),
            [('%.1f' % s['minute'], s['rss'], s['hwm'], s['polls'], s['faults'],
              '%.1f' % s['cpu']) for s in samples]))

    w('\n## Latencies\n\n')
    w('Times as an independent D-Bus client sees them: from starting the process (Popen), or '
      'from the simulated meter\'s change, until the client gets the `ItemsChanged` signal that '
      'says so (or, for a service that registers with /Connected 1 already, the reply to '
      '`GetValue` asked as soon as its name appears). Device defaults (`--interval 1`, '
      '`--timeout 0.5`), maps without `model`. Median (min..max, n runs).\n\n')
    rows = []
    for row in starts:
        rows.append(('start to first service with /Connected 1, %d meter(s)' % row['meters'],
                     spread(row['first'])))
        if row['meters'] > 1:
            rows.append(('start to all %d services with /Connected 1' % row['meters'],
                         spread(row['all'])))
    for row in exits:
        rows.append(('exit on a port with no meter, %s (exit code %s)' % (
            row['case'], ', '.join(str(c) for c in row['codes'])), spread(row['seconds'])))
    for row in returns:
        rows.append(('meter silent -> /Connected 0, %d meter(s) on the bus' % row['meters'],
                     spread(row['down'])))
        rows.append(('meter answers again -> /Connected 1 with valid values, %d meter(s)'
                     % row['meters'], spread(row['up'])))
    w(table(('what', 'time'), rows))

    w(discovery.render(r['discovery'], spread, table))

    if r.get('per_read'):
        w('\n')
        w(r['per_read'])
    w('\n')
    w(profile_section(r['profile'], prof,
                      'against %.0f µs without it (bus efficiency run, 8 meters)' % (
                          1000 * next(row['cpu_ms'] for row in eff if row['meters'] == 8))))
    return ''.join(out)


def profile_section(run, prof, unprofiled):
    """Where a poll's CPU goes: `run` from the profile measurement, `prof` from
    profile_tables(); `unprofiled` says what a poll costs without the profiler."""
    out = []
    w = out.append
    w('## Profile of the poll path\n\n')
    w('The driver under cProfile with a per-thread CPU-time clock, the poll thread and the main '
      'thread each (`tools/bench/profiled_driver.py`: waiting for the serial port or the main '
      'loop costs nothing), 8 meters at `--interval 0`, '
      'values changing; profiling runs for %d s from 2 s after all meters are connected, %d polls '
      '(stats: `%s`, read with `python -m pstats`). The profiler itself slows Python calls down: '
      'a poll costs %s µs of CPU here %s, so read the shares, not the absolute numbers.\n\n' % (
          run['seconds'], prof['ticks'], os.path.relpath(run['path'], ROOT),
          '%.0f' % (1e6 * prof['per_tick']) if prof['per_tick'] else '?', unprofiled))
    w('Where one poll\'s CPU goes (cumulative time of each function, per poll):\n\n')
    w(prof['breakdown'])
    w('\nOwn time (not counting the functions it calls) by library, per poll:\n\n')
    w(prof['by_area'])
    w('\nThe 15 functions with the most own time, per poll:\n\n')
    w(prof['own'])
    return ''.join(out)
