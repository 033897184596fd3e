"""What pzemctl says: results on stdout, progress and failures on stderr, confirmation prompts.

Exit codes, one rule (README, "Troubleshooting", reads the same and a test holds them to it):
0 done; 1 not done: something outside the command line failed or is in the way (no reply, a
garbled reply, a port missing or held, a write the meter did not keep, a map with problems, a
scan that saw garbled replies or was interrupted, a "no" at the prompt); 2 the command line
asks for what cannot be done as given (an unknown command or option, a number or address out
of range, no --yes without a terminal, a setting the meter's model does not have, a new address
already taken on the bus or in the map).
"""
import sys

OK, FAILED, USAGE = 0, 1, 2


class Failure(Exception):
    """Ends the command: str() is one clear sentence for stderr, `code` the exit status."""
    code = FAILED


class UsageError(Failure):
    code = USAGE


def say(text=''):
    sys.stdout.write(text + '\n')
    sys.stdout.flush()


def note(text):
    """A side remark (progress, hints) on stderr, so stdout keeps only results."""
    sys.stderr.write(text + '\n')
    sys.stderr.flush()


def can_ask(question, yes):
    """UsageError when `question` would have to be asked and there is nobody to ask: asked
    before the work too, so that a script without --yes is refused before a long scan."""
    if not yes and not sys.stdin.isatty():
        raise UsageError('refusing to %s without confirmation: stdin is not a terminal, so '
                         'add --yes' % question)


def confirm(question, yes):
    """True when the user agrees; UsageError when there is nobody to ask and no --yes."""
    if yes:
        return True
    can_ask(question, yes)
    sys.stderr.write('%s%s? [y/N] ' % (question[0].upper(), question[1:]))
    sys.stderr.flush()
    answer = sys.stdin.readline().strip().lower()
    return answer in ('y', 'yes')


class Progress(object):
    """'scanning 37/247, 2 found': in place on a terminal, a line every `every` steps otherwise."""

    def __init__(self, label, total, every=50):
        self.label = label
        self.total = total
        self.every = every
        self.tty = sys.stderr.isatty()

    def step(self, done, found):
        if self.tty:
            sys.stderr.write('\r%s %d/%d, %d found ' % (self.label, done, self.total, found))
        elif done % self.every == 0 or done == self.total:
            sys.stderr.write('%s %d/%d, %d found\n' % (self.label, done, self.total, found))
        sys.stderr.flush()

    def done(self):
        if self.tty:
            sys.stderr.write('\r\x1b[K')
            sys.stderr.flush()
