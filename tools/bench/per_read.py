"""CPU per meter read and peak memory, before and after: the same cases on two driver trees.

Each case (1, 8, 16 PZEM-016 at `--interval 1`, values steady or all changing) runs `runs`
times per driver, the drivers taking turns (and swapping who goes first every run), so that
the load other programs put on the machine falls on both alike. CPU is the driver process's
time on a CPU (schedstat, ns) over the window, divided by the reads the simulated meters got;
wake-ups are its threads' voluntary context switches over the same window, per read: a count
the machine's noise does not move, where the CPU time varied several-fold from hour to hour.
"""
import contextlib
import os
import statistics
import time

from harness import HERE, Changer, ac_meters, meter_map
import report

FLOOR = os.path.join(HERE, 'floor_driver.py')

COUNTS = (1, 8, 16)
WARMUP = 2.0        # seconds after all meters are connected, before the window opens
TARGETS = {'steady': 0.5, 'changing': 0.75}     # after / before, at most (issue 13)
HWM_TARGET_KIB = 24.5 * 1024                    # with 16 meters


def cases():
    return [(count, changing) for count in COUNTS for changing in (False, True)]


def per_read(run, window):
    """{'us': CPU µs, 'wakes': wake-ups, per read; 'reads'} of a running driver over `window`
    s, from WARMUP s on."""
    time.sleep(WARMUP)
    cpu, wakes, reads = run.runtime(), run.wakeups(), sum(run.requests().values())
    time.sleep(window)
    reads = sum(run.requests().values()) - reads
    return dict(us=1e6 * (run.runtime() - cpu) / reads,
                wakes=(run.wakeups() - wakes) / reads, reads=reads)


def measure(bench, drivers, runs, window, say):
    """drivers: [(label, dbus-pzem path)]. Returns {(label, count, changing): [run, ...]},
    each run {'us': CPU µs per read, 'wakes': wake-ups per read, 'reads': n, 'hwm': VmHWM
    KiB, 'rss': VmRSS KiB}."""
    found = {}
    for i in range(runs):
        for count, changing in cases():
            for label, path in (drivers if i % 2 == 0 else drivers[::-1]):
                meters = ac_meters(count)
                name = 'per-read-%s-%d-%s' % (label, count, 'changing' if changing else 'steady')
                with bench.run(meters, ['--interval', '1'], meter_map(count), name=name,
                               driver=path) as run, \
                        (Changer(meters) if changing else contextlib.nullcontext()):
                    run.wait_connected(range(1, count + 1))
                    row = per_read(run, window)
                    memory = run.memory()
                row.update(hwm=memory['VmHWM'], rss=memory['VmRSS'])
                found.setdefault((label, count, changing), []).append(row)
                say('run %d/%d, %-6s %2d meters %-8s: %4.0f µs, %.2f wake-ups per read, VmHWM '
                    '%.1f MiB' % (i + 1, runs, label, count, 'changing' if changing else 'steady',
                                  row['us'], row['wakes'], row['hwm'] / 1024.0))
    return found


def measure_floor(bench, runs, window, say):
    """{count: [per_read() of floor_driver.py, ...]}, values steady, as measure() does."""
    found = {}
    for i in range(runs):
        for count in COUNTS:
            meters = ac_meters(count)
            with bench.run(meters, ['--interval', '1'], meter_map(count), name='floor-%d' % count,
                           driver=FLOOR) as run:
                deadline = time.monotonic() + 20.0
                while min(run.requests().values()) == 0 and time.monotonic() < deadline:
                    time.sleep(0.1)
                found.setdefault(count, []).append(per_read(run, window))
            say('run %d/%d, floor  %2d meters         : %4.0f µs, %.2f wake-ups per read' % (
                i + 1, runs, count, found[count][-1]['us'], found[count][-1]['wakes']))
    return found


def measure_search(bench, driver, runs, window, say):
    """[per_read()] of `driver` with one meter, values steady and the search for meters
    the map does not name on (the default): the search at its costliest, as every slot has
    room for probes. `window` should be a minute or more (the likely addresses come round
    once a minute)."""
    found = []
    for i in range(runs):
        with bench.run(ac_meters(1), ['--interval', '1'], meter_map(1, scan=True),
                       name='search-%d' % i, driver=driver) as run:
            run.wait_connected([1])
            found.append(per_read(run, window))
        say('run %d/%d, search on, 1 meter steady: %4.0f µs, %.2f wake-ups per read' % (
            i + 1, runs, found[-1]['us'], found[-1]['wakes']))
    return found


def render_search(search, found, labels, runs, window):
    """The search's cost next to the same case with it off (and the baseline's, which has
    no search)."""
    off = found[(labels[-1], 1, False)]
    row = [labels[-1], '%.0f µs, %.2f' % (_mean(off, 'us'), _mean(off, 'wakes')),
           '%s µs, %.2f' % (_spread(search, 'us'), _mean(search, 'wakes')),
           '%+.0f µs, %+.2f' % (_mean(search, 'us') - _mean(off, 'us'),
                                _mean(search, 'wakes') - _mean(off, 'wakes'))]
    head = ['1 meter, values steady: CPU, wake-ups per read', 'search off (above)', 'search on',
            'the search costs']
    if len(labels) == 2:
        row.append('%.2f' % (_mean(search, 'us') / _mean(found[(labels[0], 1, False)], 'us')))
        head.append('search on / %s (which has no search)' % labels[0])
    return ('\n### With the search on (the default)\n\n'
            'The figures above have the search for meters the map does not name off (`scan = '
            'no`), as the baseline had no search. A GX runs it on unless the map turns it off: '
            'it asks each likely address (1..16, 20) twice a minute and one other address every '
            '5 s, each a short read that meets silence. With one meter every slot has room for '
            'these asks, so this is the search at its costliest (with 8 meters a slot has none '
            'and one is forced only every 10 s). Each silent ask ends in a wake-up (its '
            'timeout), and the first of a slot\'s asks waits for the 3.5 characters of silence '
            'after the poll\'s reply (another). Mean of %d runs of %d s, not taking turns with '
            'the runs above.\n\n' % (runs, window)) + report.table(head, [row])


def render_floor(floor, found, labels, runs, window):
    """What the floor costs, next to the driver's steady figures: the part of a read that is
    the machine's (wake-ups, system calls), and the part that is ours."""
    out = ['\n### The floor: what a read costs with no work in it\n\n'
           '`tools/bench/floor_driver.py` has the driver\'s skeleton and nothing else: one '
           'D-Bus connection per meter, a thread that wakes once per slot, writes the request, '
           'waits for the reply and reads it; no check, no decode, no publishing. Measured as '
           'above (values steady, mean of %d runs of %d s). What the driver costs above it is '
           'the work of our own code; the floor itself is wake-ups and system calls, and only '
           'fewer wake-ups per read can lower it. Wake-ups per read (voluntary context '
           'switches of the process\'s threads) are a count, not a time: two per read (the '
           'slot, the reply) is the least a read that waits for its reply can have.\n\n'
           % (runs, window)]
    rows = []
    for count in COUNTS:
        mean = _mean(floor[count], 'us')
        row = ['%d meter%s' % (count, 's' if count > 1 else ''),
               '%.0f µs, %.2f' % (mean, _mean(floor[count], 'wakes'))]
        for label in labels:
            runs_ = found[(label, count, False)]
            row.append('%.0f µs (+%.0f), %.2f' % (_mean(runs_, 'us'), _mean(runs_, 'us') - mean,
                                                  _mean(runs_, 'wakes')))
        rows.append(row)
    out.append(report.table(['values steady: CPU (above the floor), wake-ups per read',
                             'floor'] + labels, rows))
    return ''.join(out)


def _mean(rows, key):
    return statistics.mean(r[key] for r in rows)


def _spread(rows, key, scale=1.0, digits=0):
    values = [r[key] * scale for r in rows]
    f = '%.' + str(digits) + 'f'
    text = f % statistics.mean(values)
    if len(values) > 1:
        text += (' (' + f + '..' + f + ')') % (min(values), max(values))
    return text


def summary(found, labels):
    """Rows of (figure, before, after, ratio, target) for the page and the console; with one
    label (no baseline), (figure, measured)."""
    rows = []
    for changing in (False, True):
        kind = 'changing' if changing else 'steady'
        for count in COUNTS:
            runs = [found[(label, count, changing)] for label in labels]
            figure = 'CPU per read, %d meter%s, values %s' % (count, 's' if count > 1 else '', kind)
            bold = '**%s**' if count == 8 else '%s'
            row = [bold % figure] + [_spread(r, 'us') + ' µs' for r in runs]
            if len(runs) == 2:
                row += [bold % ('%.2f' % (_mean(runs[1], 'us') / _mean(runs[0], 'us'))),
                        '<= %.2f' % TARGETS[kind]]
            rows.append(row)
    for count in (1, 16):
        runs = [found[(label, count, False)] + found[(label, count, True)] for label in labels]
        row = ['peak memory (VmHWM), %d meter%s' % (count, 's' if count > 1 else '')]
        row += [_spread(r, 'hwm', 1 / 1024.0, 1) + ' MiB' for r in runs]
        if len(runs) == 2:
            row += ['%+.1f MiB' % ((_mean(runs[1], 'hwm') - _mean(runs[0], 'hwm')) / 1024.0),
                    '<= 24.5 MiB' if count == 16 else '']
        rows.append(row)
    return rows


def render(found, drivers, runs, window):
    """The page section: the comparison, how it was measured, and every run's numbers."""
    labels = [label for label, _ in drivers]
    out = []
    w = out.append
    w('## %s: CPU per read and peak memory\n\n' % (
        'Before and after' if len(drivers) == 2 else 'Per read'))
    w('Driver CPU (time on a CPU from schedstat) per meter read and peak memory (VmHWM), '
      'PZEM-016 meters at `--interval 1` (the default), values steady (nothing changes) or all '
      'changing 10 times a second (see the CPU section for what changes). Each figure is the '
      '**mean of %d runs** of %d s (from %d s after all meters are connected), with the '
      'smallest and largest run in brackets; the drivers took turns, run by run, on the '
      'same simulator and bus. Memory: the mean over the steady and the changing runs (%d '
      'runs). %s.\n\n' % (
          runs, window, WARMUP, 2 * runs, '; '.join(
              '"%s": %s' % (label, report.driver_state(_tree(path))) for label, path in drivers)))
    head = ['figure'] + labels
    if len(labels) == 2:
        head += ['%s / %s' % (labels[1], labels[0]), 'target']
    w(report.table(head, summary(found, labels)))
    w('\nEvery run (CPU µs per read / wake-ups per read / reads in the window / VmHWM KiB):'
      '\n\n')
    rows = []
    for count, changing in cases():
        for label in labels:
            rows.append(('%d, %s' % (count, 'changing' if changing else 'steady'), label,
                         ', '.join('%.0f / %.2f / %d / %d' % (r['us'], r['wakes'],
                                                               r['reads'], r['hwm'])
                                   for r in found[(label, count, changing)])))
    w(report.table(('meters, values', 'driver', 'runs'), rows))
    return ''.join(out)


def _tree(driver_path):
    """The repository root of a dbus-pzem path (package/opt/pzem/dbus-pzem)."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(driver_path))))
