"""Benchmark sections for finding meters: a meter plugged in while the driver runs, the poll
jitter that looking for meters in the gaps adds, how promptly D-Bus reads are answered while it
looks, and start-up on a bus with faults."""
import statistics
import time

from dbus_helpers import pump, pump_until     # tests/dbus_helpers.py: harness put tests/ on sys.path
from harness import BenchMeter, ac_meters, meter_map, service_name

NEW_ADDRESSES = (2, 5, 9, 13, 20)     # likely addresses a meter is plugged in at


def newly_connected(bench, plan, say):
    """One mapped meter at address 1; then, one after the other, a meter at each of
    NEW_ADDRESSES is plugged in: the time until a client sees its service with /Connected 1."""
    meters = ac_meters(1)
    times = []
    with bench.run(meters, [], meter_map(1, scan=True), name='found') as run:
        run.wait_connected([1])
        for address in NEW_ADDRESSES[:plan['finds']]:
            meter = BenchMeter(address, voltage=230.0, current=4.0, power=828.0,
                               energy_wh=1000, frequency=50.0, power_factor=0.9)
            plugged = time.monotonic()
            run.sim.add(meter)
            name = service_name(address)

            def up():
                owner = bench.client.owner(name)
                return owner and bench.client.get_value(name, '/Connected') == 1
            pump_until(up, 120.0, 'meter %d to be found' % address)
            times.append(time.monotonic() - plugged)
            say('meter plugged in at %d: published after %.1f s' % (address, times[-1]))
    return dict(seconds=times, addresses=list(NEW_ADDRESSES[:plan['finds']]))


def jitter(bench, plan, say):
    """8 meters at --interval 1, with and without looking for meters: the time between two
    polls of one meter, as the meters saw their requests."""
    rows = []
    for scan in (False, True):
        meters = ac_meters(8)
        text = meter_map(8, scan=scan)
        with bench.run(meters, [], text, name='jitter-%s' % ('scan' if scan else 'noscan')) as run:
            run.wait_connected(range(1, 9))
            unanswered = run.sim.stats['unanswered']
            for meter in meters:
                meter.timing = True
            pump(plan['jitter'])
            gaps = []
            for meter in meters:
                meter.timing = False
                gaps += [b - a for a, b in zip(meter.times, meter.times[1:])]
            asked = run.sim.stats['unanswered'] - unanswered
        gaps.sort()
        rows.append(dict(scan=scan, polls=len(gaps) + 8, median=statistics.median(gaps),
                         p99=gaps[int(0.99 * (len(gaps) - 1))], worst=gaps[-1],
                         probes=asked))
        say('jitter, search %s: gap median %.3f s, p99 %.3f s, worst %.3f s, %d unanswered '
            'requests' % ('on' if scan else 'off', rows[-1]['median'], rows[-1]['p99'],
                          rows[-1]['worst'], asked))
    return rows


def reads_while_searching(bench, plan, say):
    """1 meter at --interval 1 (every slot has room for the search's asks), search off and on:
    how long an independent client's GetValue of /Ac/Power takes, asked every 20 ms, from 5 s
    after the meter is connected (past the start-up's asks)."""
    rows = []
    for scan in (False, True):
        with bench.run(ac_meters(1), [], meter_map(1, scan=scan),
                       name='reads-%s' % ('scan' if scan else 'noscan')) as run:
            run.wait_connected([1])
            pump(5.0)
            took = []
            end = time.monotonic() + plan['jitter']
            while time.monotonic() < end:
                asked = time.monotonic()
                bench.client.get_value(service_name(1), '/Ac/Power')
                took.append(time.monotonic() - asked)
                pump(0.02)
        took.sort()
        rows.append(dict(scan=scan, reads=len(took), median=statistics.median(took),
                         p99=took[int(0.99 * (len(took) - 1))], worst=took[-1],
                         slow=sum(1 for t in took if t > 0.05)))
        say('GetValue, search %s: median %.1f ms, p99 %.1f ms, worst %.1f ms, %d over 50 ms' % (
            'on' if scan else 'off', 1e3 * rows[-1]['median'], 1e3 * rows[-1]['p99'],
            1e3 * rows[-1]['worst'], rows[-1]['slow']))
    return rows


class FaultyMeter(BenchMeter):
    """10 % of replies with a bad CRC and 10 % not at all."""
    FAULTS = ('bad_crc', 'silent')


def start_under_faults(bench, plan, say):
    """4 mapped meters, 20 % of requests spoilt (half bad CRC, half silence): from starting the
    driver until every meter's service has /Connected 1."""
    times = []
    for i in range(plan['starts']):
        meters = [FaultyMeter(a, voltage=230.0, current=4.0, power=828.0, energy_wh=1000 * a,
                              frequency=50.0, power_factor=0.9, fault_rate=0.2, seed=100 * i + a)
                  for a in range(1, 5)]
        with bench.run(meters, [], meter_map(4, model=False, scan=True),
                       name='faulty-%d' % i) as run:
            run.wait_connected(range(1, 5), timeout=60.0)
            times.append(time.monotonic() - run.started)
        say('start with 20 %% faults: all 4 meters published after %.2f s' % times[-1])
    return dict(seconds=times)


def measure(bench, plan, say):
    return dict(found=newly_connected(bench, plan, say), jitter=jitter(bench, plan, say),
                reads=reads_while_searching(bench, plan, say),
                faults=start_under_faults(bench, plan, say))


def render(result, spread, table):
    found, rows, faults = result['found'], result['jitter'], result['faults']
    out = ['\n## Finding meters\n\n']
    out.append('A meter plugged in while the driver runs (one mapped meter at address 1, device '
               'defaults), at addresses %s one after the other: the time until a client sees '
               'its service with `/Connected` 1. The likely addresses are asked again about '
               'once a minute, so this depends on where in that round the meter arrives: '
               '%s.\n\n' % (', '.join(map(str, found['addresses'])),
                            spread(found['seconds'], digits=1)))
    out.append('The time between two polls of one meter, 8 meters at `--interval 1` for the '
               'window, with the search for meters the map does not name off (`scan = no`) and '
               'on (the default: the likely addresses, then the rest of 1..247 in the gaps):\n\n')
    out.append(table(('search', 'polls', 'median gap', '99th percentile', 'worst gap',
                      'requests nobody answered'),
                     [('on' if r['scan'] else 'off', r['polls'], '%.3f s' % r['median'],
                       '%.3f s' % r['p99'], '%.3f s' % r['worst'], r['probes'])
                      for r in rows]))
    out.append('\nD-Bus reads while the driver looks for meters: one meter at `--interval 1` '
               '(so every slot has room for the search\'s asks), an independent client asking '
               '`GetValue` of `/Ac/Power` every 20 ms for the window, from 5 s after the meter '
               'is connected (the start-up\'s own asks are over by then):\n\n')
    out.append(table(('search', 'reads', 'median', '99th percentile', 'worst', 'over 50 ms'),
                     [('on' if r['scan'] else 'off', r['reads'], '%.1f ms' % (1e3 * r['median']),
                       '%.1f ms' % (1e3 * r['p99']), '%.1f ms' % (1e3 * r['worst']), r['slow'])
                      for r in result.get('reads', ())]))
    out.append('\nStart-up on a bus with faults: 4 mapped PZEM-016 (model detected), 10 %% of '
               'replies with a bad CRC and 10 %% not at all, from starting the driver until all '
               'four are published with `/Connected` 1: %s.\n' % spread(faults['seconds']))
    return ''.join(out)
