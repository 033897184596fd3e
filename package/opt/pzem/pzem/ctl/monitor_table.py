"""monitor's table, laid out to fit the terminal: one row per meter, a group as its totals and a
row per phase.

Two layouts: WIDE (units in every cell, the frequency too, 2 blanks between columns) when it fits
the width, else NARROW for an 80-column terminal (units once in the header, no frequency,
numbers right-aligned, the model as 016/017, names cut to the room left, marked with '~').
A width of 0 means no limit (output that is not a terminal): WIDE, nothing cut.
"""
import collections
import textwrap

HEADS = ('ADDR', 'METER', 'ROLE', 'NAME')
# (reading, WIDE header, unit: the NARROW header)
NUMBERS = (('voltage', 'VOLTAGE', 'V'), ('current', 'CURRENT', 'A'), ('power', 'POWER', 'W'),
           ('energy', 'ENERGY', 'kWh'), ('frequency', 'FREQ', 'Hz'),
           ('power_factor', 'PF', 'PF'))
MIN_NAME = 8        # a layout that leaves less room for names does not fit
CUT = '~'

Row = collections.namedtuple('Row', 'addr model phases role name numbers alarms error')
Row.__doc__ = """One line of the table. model: models.AC/DC or None; phases: how many meters it
sums (1 for a meter or one phase); numbers: {reading: number text without its unit}; alarms:
['power', 'high-voltage', ...]; error: what to show instead of readings, or None."""


class Layout(object):
    def __init__(self, gap, units_in_cells, numbers, right_align, model_text, alarm_text):
        self.gap = gap
        self.units_in_cells = units_in_cells
        self.numbers = numbers
        self.right_align = right_align
        self.model_text = model_text
        self.alarm_text = alarm_text

    def headers(self):
        return HEADS + tuple(wide if self.units_in_cells else unit
                             for _, wide, unit in self.numbers) + ('ALARM',)

    def cells(self, row):
        """The row's cells: the head's four, then the readings' (none for an error row)."""
        head = [row.addr, self.model_text(row), row.role, row.name]
        if row.error is not None:
            return head
        values = []
        for key, _, unit in self.numbers:
            number = row.numbers.get(key, '')
            values.append('%s %s' % (number, unit) if number and self.units_in_cells and
                          key != 'power_factor' else number)
        alarms = row.alarms
        return head + values + [','.join(map(self.alarm_text, alarms)) if alarms else '']

    def lines(self, rows, width, force=False):
        """The table's lines within `width` (0: no limit); None when it does not fit, unless
        `force`, which cuts what still sticks out."""
        table = [list(self.headers())] + [self.cells(row) for row in rows]
        errors = [None] + [row.error for row in rows]
        widths = [max(len(cells[i]) for cells in table if i < len(cells))
                  for i in range(len(table[0]))]
        if width:
            natural = widths[3]
            room = width - (sum(widths) - natural) - self.gap * (len(widths) - 1)
            if room < min(natural, MIN_NAME) and not force:
                return None
            widths[3] = max(len(HEADS[3]), min(natural, room))
        out = []
        for cells, error in zip(table, errors):
            if len(cells[3]) > widths[3]:
                cells[3] = cells[3][:widths[3] - len(CUT)].rstrip() + CUT
            out.append(self._line(cells, widths, error))
        return [line[:width] for line in out] if width else out

    def _line(self, cells, widths, error):
        numeric = range(len(HEADS), len(widths) - 1) if self.right_align else ()
        texts = [cell.rjust(w) if i in numeric else cell.ljust(w)
                 for i, (cell, w) in enumerate(zip(cells, widths))]
        if error is not None:
            texts.append(error)
        return (' ' * self.gap).join(texts).rstrip()


def _model_wide(row):
    name = row.model.name if row.model else '?'
    return name if row.phases == 1 else '%s %d-phase' % (name, row.phases)


def _model_narrow(row):
    name = row.model.name[len('PZEM-'):] if row.model else '?'
    return name if row.phases == 1 else '%sx%d' % (name, row.phases)


WIDE = Layout(2, True, NUMBERS, False, _model_wide, lambda alarm: alarm)
NARROW = Layout(1, False, tuple(n for n in NUMBERS if n[0] != 'frequency'), True, _model_narrow,
                lambda alarm: alarm.replace('-voltage', ' V'))


def render(rows, warnings, width):
    """The table (WIDE if it fits, else NARROW), then the warnings wrapped to `width`."""
    lines = WIDE.lines(rows, width) or NARROW.lines(rows, width) or \
        NARROW.lines(rows, width, force=True)
    if warnings:
        lines.append('')
        for warning in warnings:
            lines.extend(textwrap.wrap(warning, width, subsequent_indent='  ')
                         if width else [warning])
    return lines
