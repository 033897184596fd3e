"""The benchmark's gateway section: poll rate and CPU per read through each kind of RS-485 network
gateway (pzemsim.gateway on 127.0.0.1: transparent `tcp`, Modbus TCP `mbtcp`), next to the pty,
with 1 and 8 PZEM-016 and the gateway adding 5 ms and 50 ms to each round trip (half each way).

The meters behind the gateway are the same wire-time simulator as the pty's (9600 baud, 80 ms
turnaround), so the difference is the gateway: the network's latency, the gateway's own
handling, and on Modbus TCP the gateway timing the wire instead of the driver. Each case runs
the real driver twice: at `--interval 0` for the most reads a second the link carries, and at
`--interval 1` (the default) for its CPU time per read (schedstat, over the window) and whether 8
meters are still each read every second.

`tools/bench.sh --gateways` measures only this and puts the section into the existing page in
place of the one there (report.replace_section: the rest of the page as it was); a full run
writes it with the others.
"""
import os
import time

from harness import DRIVER, DriverRun, ac_meters, meter_map, service_name
from pzemsim.gateway import Gateway
import report

LATENCIES = (0.005, 0.05)           # seconds added to each round trip by the gateway
COUNTS = (1, 8)
GATEWAY = 'bench'                   # the gateway's name in the map: the services' port
HEADING = '## Through a network gateway'
WARMUP = 2.0


class GatewayRun(DriverRun):
    """DriverRun with the simulated meters behind a gateway of `kind`, the driver on its URL."""

    def __init__(self, bench, meters, kind, latency, driver_args, map_text, name):
        DriverRun.__init__(self, bench, meters, driver_args, None, [], name, DRIVER)
        self.kind, self.latency = kind, latency
        self.map_text = map_text
        self.port = GATEWAY
        self.gateway = None

    def __enter__(self):
        self.sim.start()
        try:
            self.gateway = Gateway(self.sim, self.kind, delay=self.latency).start()
            with open(self.map_path, 'w') as f:
                f.write('[gateway:%s]\nhost = 127.0.0.1\nport = %d\nkind = %s\n\n%s' % (
                    GATEWAY, self.gateway.port, self.kind, self.map_text))
            self.target = self.gateway.url
            self.start_driver()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        try:
            self.stop_driver()
        finally:
            if self.gateway is not None:
                self.gateway.stop()
            self.sim.stop()


def cases():
    """(label, kind or None for the pty, latency) in the order of the table."""
    found = [('pty', None, 0.0)]
    for kind in ('tcp', 'mbtcp'):
        for latency in LATENCIES:
            found.append(('%s +%d ms' % (kind, round(latency * 1000)), kind, latency))
    return found


def _run(bench, kind, latency, count, interval, name):
    meters = ac_meters(count)
    text = meter_map(count)
    if kind is None:
        return bench.run(meters, ['--interval', interval], text, name=name), meters
    return GatewayRun(bench, meters, kind, latency, ['--interval', interval], text, name), meters


def measure_case(bench, kind, latency, count, window, name):
    """{'rate': reads/s at --interval 0, 'rate_1': reads/s at --interval 1, 'us': CPU µs per
    read at --interval 1, 'gap': the longest time between two reads of one meter there}."""
    row = {}
    for interval in ('0', '1'):
        run, meters = _run(bench, kind, latency, count, interval, '%s-%s' % (name, interval))
        with run:
            run.wait_connected(range(1, count + 1))
            time.sleep(WARMUP)
            cpu, reads = run.runtime(), sum(run.requests().values())
            for meter in meters:
                meter.timing, meter.times = True, []
            time.sleep(window)
            for meter in meters:
                meter.timing = False
            cpu, reads = run.runtime() - cpu, sum(run.requests().values()) - reads
            log = run.log()
            # what Venus sees: every meter's power as the simulator has it (230 V x 4 A x 0.9)
            powers = [bench.client.get_value(service_name(m.address, run.port), '/Ac/Power')
                      for m in meters]
        times = sorted(t for meter in meters for t in meter.times)
        rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
        if interval == '0':
            row['rate'] = rate
        else:
            row.update(rate_1=rate, us=1e6 * cpu / max(1, reads), gap=max(
                max(b - a for a, b in zip(m.times, m.times[1:])) for m in meters
                if len(m.times) > 1))
        row.setdefault('errors', 0)
        row['errors'] += log.count('ERROR')
        row['values'] = row.get('values', True) and all(p == 828.0 for p in powers)
    return row


def measure(bench, plan, say):
    window = plan.get('gateways', 20)
    rows = []
    for label, kind, latency in cases():
        for count in COUNTS:
            name = 'gateway-%s-%d' % (label.replace(' +', '-').replace(' ', ''), count)
            row = measure_case(bench, kind, latency, count, window, name)
            row.update(label=label, kind=kind, latency=latency, meters=count)
            rows.append(row)
            say('%-14s %d meter(s): %.2f reads/s at --interval 0; at 1 s: %.2f reads/s, '
                '%.0f µs CPU per read, worst gap %.2f s' % (
                    label, count, row['rate'], row['rate_1'], row['us'], row['gap']))
    return dict(rows=rows, window=window, date=report.machine('')['date'],
                load=os.getloadavg(), driver=report.driver_state())


def render(result, command):
    """The section for docs/benchmarks.md, from its '## ' title on."""
    rows = result['rows']
    out = [HEADING, '\n\n']
    w = out.append
    w('The real driver with 1 and 8 PZEM-016 behind the simulator\'s network front on 127.0.0.1 '
      '(`pzemsim.gateway`), in both kinds, next to the same meters on the pty; the gateway adds '
      'the latency given to each round trip (half each way), the wire behind it runs at 9600 '
      'baud with the meters\' 80 ms turnaround, as on the pty. Each case ran at `--interval 0` '
      '(the most reads a second the link carries) and at `--interval 1` (the default: CPU per '
      'read, schedstat, over %g s; whether 8 meters are each still read every second). Measured '
      'by `%s` on %s, load %.2f at the end; the driver: %s.\n\n' % (
          result['window'], command, result['date'], result['load'][0], result['driver']))
    table = []
    for row in rows:
        table.append((row['label'], row['meters'], '%.2f' % row['rate'],
                      '%.2f' % row['rate_1'], '%.2f s' % row['gap'], '%.0f' % row['us'],
                      row['errors'] or '-'))
    w(report.table(('link', 'meters', 'reads/s at `--interval 0`', 'reads/s at `--interval 1`',
                    'longest gap between two reads of a meter, at 1 s', 'CPU µs per read, at 1 s',
                    'ERROR lines in the log'), table))
    pty = dict((r['meters'], r) for r in rows if r['kind'] is None)
    w('\nA read of one PZEM-016 takes %.0f ms on the pty (%.2f reads a second back to back). '
      % (1000.0 / pty[1]['rate'], pty[1]['rate']))
    slow = [r for r in rows if r['meters'] == 8 and r['rate'] < 8.0]
    if slow:
        w('Through %s the link carries fewer than 8 reads a second: with 8 meters at the '
          'default interval each is read less often than every second (every %s). ' % (
              ' and '.join(r['label'] for r in slow),
              ' / '.join('%.2f s' % (8.0 / r['rate']) for r in slow)))
    wrong = [r['label'] for r in rows if not r['values']]
    w('At the end of each run every meter\'s `/Ac/Power` was %s.\n' % (
        'the simulator\'s 828 W' if not wrong else 'NOT the simulator\'s 828 W through %s'
        % ', '.join(wrong)))
    return ''.join(out)


def write(path, result, command):
    """Put the section into the page at `path`, leaving the rest of it as it is."""
    try:
        with open(path) as f:
            page = f.read()
    except FileNotFoundError:
        page = '# Benchmarks\n'
    with open(path, 'w') as f:
        f.write(report.replace_section(page, render(result, command)))

