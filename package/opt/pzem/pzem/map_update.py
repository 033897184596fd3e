"""Writing the meter map back: update(), update_many() and move_meter().

Writing changes only the lines it must, keeps every comment, and replaces the file atomically,
one writer at a time (every port's driver and pzemctl may write the same map). Each value is
checked as meter_map reads it, and the new text is read back with meter_map's parser: a change
that would leave a section out is refused.
"""
import contextlib
import fcntl
import os
import re
import stat
import tempfile

from . import map_syntax, roles, tty
from .map_syntax import (BUS_KEYS, COMMENT, METER_KEYS, Bad, Changed, header_ident, section_ident,
                         section_text, show, split_key_line)
from .meter_map import parse


class MapWriteError(Exception):
    """The map was not changed; str() says why. The file on disk is as it was."""


def update(path, section, changes):
    """Write `changes` ({key: value or None to remove}) into `section` (e.g. '1', 'ttyUSB0:1',
    'bus'). Returns True if the file changed. Raises MapWriteError; the file is then untouched."""
    return update_many(path, {section: changes})


def update_many(path, changes_by_section, comments=None):
    """Write {section: changes} in one atomic replace (for a phase group: the same changes
    for every member section, so that none keeps an old, conflicting value).

    A value replaces the old one in place (an inline comment stays); a new key goes after the
    section's last key line; a missing section is appended at the end of the file, which is
    created if needed. A section given `comments` ({section: [comment lines]}) is a new one, for
    a meter no section named: it is appended after its comments only while no section names
    that meter yet (its [PORT:N] or a plain [N]); once one does, its changes are not written,
    so a meter found twice, or moved here meanwhile (move_meter), keeps the section it has.
    An old role name (inverter0) is written as the role plus its position, and name ''
    removes the name. A change that would leave a section out is refused.
    """
    notes = {}
    for section, lines in (comments or {}).items():
        notes[section_ident(str(section).strip().strip('[]').strip())] = [
            '# ' + line.replace('\n', ' ').replace('\r', ' ') for line in lines]
    edits = []
    for section, changes in changes_by_section.items():
        try:
            edits.append((section_ident(str(section).strip().strip('[]').strip()), changes))
        except Bad as e:
            raise MapWriteError('section [%s]: %s' % (show(section, quote=False), e))
    settings = [(ident, _settings(ident, changes)) for ident, changes in edits]
    path = os.path.realpath(path)
    directory = os.path.dirname(path)
    try:
        os.makedirs(directory, exist_ok=True)
        with _locked(directory):
            old = _read_for_update(path)
            bom = '\ufeff' if old.startswith('\ufeff') else ''
            lines = old[len(bom):].split('\n')
            for ident, pairs in settings:
                if ident in notes:
                    if _names_meter(lines, ident):
                        continue
                    lines = _append_section(lines, ident, notes[ident])
                for key, text in pairs:
                    lines = _set_key(lines, ident, key, text)
            new = bom + '\n'.join(lines)
            if new == old:
                return False
            _refuse_new_problems(path, old, new, [ident for ident, _ in edits])
            _write_atomic(path, new.encode('utf-8'))
    except OSError as e:
        raise MapWriteError('cannot write %s: %s' % (path, e.strerror or e))
    return True


def move_meter(path, port, old, new):
    """The map follows a meter from address `old` to `new` on `port`, in one atomic replace.

    The section that describes it there (its [PORT:old], else the plain [old]) gets the header
    of the new address in the same form ([PORT:new] or [new], so a group's members stay
    alike); its keys, group membership, comments and place in the file stay. A [PORT:new] that
    the driver added for the meter it found at the new address meanwhile (a role that steers
    nothing and nothing else) goes, with the comment lines above it. Returns (old header, new
    header) as written, or None when no section names the meter (the file is not touched).
    Raises MapWriteError, the file untouched, when another section names `new` on `port` or
    the moved section would be left out.
    """
    port = tty.name(port)
    path = os.path.realpath(path)
    try:
        with _locked(os.path.dirname(path)):
            old_text = _read_for_update(path)
            before = parse(old_text, path)
            found = before.section_for(port, old)
            if found is None:
                return None
            ident = section_ident(found[0])
            target = (ident[0], ident[1], new)
            bom = '\ufeff' if old_text.startswith('\ufeff') else ''
            lines = old_text[len(bom):].split('\n')
            for there in (('meter', port, new), ('meter', None, new)):
                span = _section_span(lines, there)
                if span is None:
                    continue
                if there[1] is None or not _found_only(lines, span):
                    raise MapWriteError('[%s] on line %d already names a meter at address %d on '
                                        '%s' % (section_text(there), span[0] + 1, new, port))
                lines = _remove_section(lines, span)
            start, _ = _section_span(lines, ident)
            lines[start] = re.sub(r'\[[^\]]*\]', '[%s]' % section_text(target), lines[start],
                                  count=1)
            new_text = bom + '\n'.join(lines)
            after = parse(new_text, path)
            if target in after.left_out and ident not in before.left_out:
                raise MapWriteError('not written: the map would then leave out [%s]: %s' % (
                    section_text(target), ' | '.join(after.problems)))
            _write_atomic(path, new_text.encode('utf-8'))
    except OSError as e:
        raise MapWriteError('cannot write %s: %s' % (path, e.strerror or e))
    return found[0], section_text(target)


def _names_meter(lines, ident):
    """True when a section names the meter of `ident`: itself, or for [PORT:N] a plain [N]."""
    return _section_span(lines, ident) is not None or (
        ident[0] == 'meter' and _section_span(lines, ('meter', None, ident[2])) is not None)


def _found_only(lines, span):
    """True for a section as the driver adds it for a meter it found: a role that steers
    nothing, and no other key."""
    keys = [split_key_line(line) for line in lines[span[0] + 1:span[1]]
            if not map_syntax.is_blank_or_comment(line)]
    return len(keys) == 1 and keys[0] is not None and keys[0][0].lower() == 'role' and \
        keys[0][3].lower() in roles.DEFAULT_ROLE.values()


def _remove_section(lines, span):
    """lines without the section at `span`, the comment lines right above its header and the
    blank line before those (what the driver wrote with it)."""
    start, end = span
    while start > 0 and lines[start - 1].strip()[:1] in ('#', ';'):
        start -= 1
    if start > 0 and not lines[start - 1].strip():
        start -= 1
    return lines[:start] + ([''] if end == len(lines) else lines[end:])


def _settings(ident, changes):
    """[(key, text or None)] for a section's changes, each checked as meter_map.load() would."""
    keys = METER_KEYS if ident[0] == 'meter' else BUS_KEYS
    changes = dict(changes)
    unknown = [k for k in changes if k not in keys]
    if unknown:
        raise MapWriteError('cannot write %s into [%s]: %s keys are %s' % (
            ', '.join(map(str, unknown)), section_text(ident), ident[0], ', '.join(keys)))
    if isinstance(changes.get('role'), str):
        changes['role'] = changes['role'].strip().lower()
    if changes.get('role') in roles.ALIASES:
        role, implied = roles.ALIASES[changes['role']]
        if changes.get('position') not in (None, implied):
            raise MapWriteError('role %s means position %d, not %s'
                                % (changes['role'], implied, changes['position']))
        changes.update(role=role, position=implied)
    if changes.get('name') == '':
        changes['name'] = None
    return [(k, None if changes[k] is None else _format(k, changes[k]))
            for k in keys if k in changes]


def _format(key, value):
    if isinstance(value, bool):
        text = 'yes' if value else 'no'
    elif isinstance(value, float):
        text = repr(value)
    else:
        text = str(value)
    if '\n' in text or '\r' in text:
        raise MapWriteError('%s %s: a value cannot span lines' % (key, show(text)))
    if key == 'name' and (text != text.strip() or text.startswith('"') or COMMENT.search(text)):
        text = '"%s"' % text
    written = split_key_line('%s = %s' % (key, text))[3]
    try:
        if written == '':
            raise Bad('no value given')
        read_back = map_syntax.VALUES[key](written)
    except Changed as e:
        raise MapWriteError('%s %s: %s' % (key, show(str(value)), e))
    except Bad as e:
        raise MapWriteError('%s %s: %s' % (key, show(str(value)), e))
    if key == 'name' and read_back != value:
        raise MapWriteError('name %s cannot be written so that it reads back the same'
                            % show(value))
    return text


def _section_span(lines, ident):
    """(header index, end index) of the first section with this identity, or None."""
    start = None
    for i, line in enumerate(lines):
        if not line.strip().startswith('['):
            continue
        if start is not None:
            return start, i
        if header_ident(line) == ident:
            start = i
    return None if start is None else (start, len(lines))


def _append_section(lines, ident, comment_lines):
    eol = '\r' if any(line.endswith('\r') for line in lines) else ''
    body = lines[:-1] if lines and lines[-1] == '' else list(lines)
    gap = [eol] if body and body[-1].strip() else []
    return body + gap + [c + eol for c in comment_lines] + [
        '[%s]%s' % (section_text(ident), eol), '']


def _set_key(lines, ident, key, text):
    """lines with key set to text (None: its lines removed) in the section `ident`."""
    span = _section_span(lines, ident)
    if span is None:
        if text is None:
            return lines
        eol = '\r' if any(line.endswith('\r') for line in lines) else ''
        body = lines[:-1] if lines[-1] == '' else lines
        gap = [eol] if body and body[-1].strip() else []
        return body + gap + ['[%s]%s' % (section_text(ident), eol),
                             '%s = %s%s' % (key, text, eol), '']
    start, end = span
    key_lines = [i for i in range(start + 1, end)
                 if (lines[i].strip()[:1] not in ('#', ';')) and split_key_line(lines[i])]
    mine = [i for i in key_lines if split_key_line(lines[i])[0].lower() == key]
    if text is None:
        return [line for i, line in enumerate(lines) if i not in mine]
    lines = list(lines)
    for i in mine:
        lines[i] = _replace_value(lines[i], text)
    if not mine:
        after = key_lines[-1] if key_lines else start
        indent = re.match(r'[ \t]*', lines[after]).group() if key_lines else ''
        eol = '\r' if lines[start].endswith('\r') else ''
        lines.insert(after + 1, '%s%s = %s%s' % (indent, key, text, eol))
    return lines


def _replace_value(line, text):
    _, start, end, _ = split_key_line(line)
    before, after = line[:start], line[end:]
    if start == end:    # an empty value: keep the new one apart from '=' and from a comment
        before += ' ' if before.endswith(('=', ':')) else ''
        after = (' ' if after[:1] in ('#', ';') else '') + after
    return before + text + after


def _refuse_new_problems(path, old, new, idents):
    """Raise if the new text leaves out a section that was fine (or absent) before."""
    before, after = parse(old, path), parse(new, path)
    spoiled = [i for i in idents if i in after.left_out and i not in before.left_out]
    if spoiled:
        known = {_strip_place(p, path) for p in before.problems}
        news = [_strip_place(p, path) for p in after.problems
                if _strip_place(p, path) not in known]
        raise MapWriteError('not written: the map would then leave out [%s]: %s' % (
            ', '.join(section_text(i) for i in spoiled), ' | '.join(news) or 'a problem'))


def _strip_place(problem, source):
    """A problem without its file and line numbers, to compare the map before and after."""
    text = problem[len(source) + 1:].lstrip('0123456789').lstrip(': ')
    return re.sub('line [0-9]+', 'line N', text)


@contextlib.contextmanager
def _locked(directory):
    """One writer at a time: every port's driver may write the same map."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _read_for_update(path):
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except FileNotFoundError:
        return ''
    try:
        return map_syntax.decode(data)
    except Bad as e:
        raise MapWriteError('%s:%d: %s; not changing it' % (path, e.args[1], e.args[0]))


def _write_atomic(path, data):
    """Replace path by data: temp file in the same directory, fsync, same mode, os.replace."""
    directory = os.path.dirname(path)
    try:
        old = os.stat(path)
    except FileNotFoundError:
        old = None
    fd, temp = tempfile.mkstemp(prefix='.%s.' % os.path.basename(path), dir=directory)
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temp, stat.S_IMODE(old.st_mode) if old else 0o644)
        if old:
            with contextlib.suppress(OSError):
                os.chown(temp, old.st_uid, old.st_gid)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    # The rename itself must survive a power cut too; a failure here leaves the new file in place.
    with contextlib.suppress(OSError):
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
