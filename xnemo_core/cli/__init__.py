"""The command line, ``xnemo`` or ``python -m xnemo_core``: one module per group of commands, each
command's flags declared beside its handler.

Torch, diffusers and OpenCV are imported inside the handlers, so that ``--help`` answers at once.
A handler's :class:`ValueError` (and the file system's refusals) become one ``error:`` line and exit
status 2; Ctrl-C, SIGTERM and SIGHUP stop a run, leave nothing half-written and say what was kept.
"""

import argparse
import errno
import signal
import sys
from contextlib import contextmanager

from ..choices import command_name
from .animate import SETTING_FLAGS, add_animate
from .models import add_convert, add_download, add_synthesize
from .research import add_check_fixtures, add_evaluate, add_training

STOP_SIGNALS = {"SIGTERM": "terminated", "SIGHUP": "hung up"}
"""Signals that stop a run like Ctrl-C does, with what is said."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=command_name())
    parser.set_defaults(on_interrupt="nothing was written")
    commands = parser.add_subparsers(dest="command", required=True)
    for add in (add_convert, add_download, add_check_fixtures, add_animate, add_synthesize, add_training, add_evaluate):
        add(commands)
    args = parser.parse_args(argv)
    try:
        with _stop_signals_as_interrupts():
            return args.run(args)
    except KeyboardInterrupt as interrupt:
        print(f"{interrupt.args[0] if interrupt.args else 'interrupted'}; {args.on_interrupt}", file=sys.stderr)
        return 128 + getattr(interrupt, "signal", signal.SIGINT)
    except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError) as error:
        setting = getattr(error, "setting", None)  # a SettingError names the field, said here by its flag
        flag = f"{SETTING_FLAGS.get(setting, '--' + setting.replace('_', '-'))}: " if setting else ""
        print(f"error: {flag}{error}", file=sys.stderr)
        return 2
    except OSError as error:  # what the file system refuses for a path the user gave (a name too long, ...)
        print(f"error: {_os_error_line(error)}", file=sys.stderr)
        return 2


def _os_error_line(error: OSError) -> str:
    if error.errno == errno.ENAMETOOLONG:
        return f"{error.filename}: a name in this path is longer than the file system allows; choose a shorter one"
    return f"{error.filename or 'a file'}: {error.strerror or error}"


class Stopped(KeyboardInterrupt):
    """A stop signal other than SIGINT, raised like Ctrl-C so that every write in progress removes
    its temporary file; ``signal`` is its number (the exit status is 128 + it)."""

    def __init__(self, signum: int, said: str):
        super().__init__(said)
        self.signal = signum


@contextmanager
def _stop_signals_as_interrupts():
    """SIGINT as Ctrl-C even where it was inherited ignored (a background job: ``kill -INT`` still
    stops it), SIGTERM and SIGHUP likewise; SIGHUP stays ignored under ``nohup``."""
    handlers = {signal.SIGINT: signal.default_int_handler}
    for name, said in STOP_SIGNALS.items():
        signum = getattr(signal, name, None)  # Windows has no SIGHUP
        if signum is not None and not (name == "SIGHUP" and signal.getsignal(signum) == signal.SIG_IGN):
            handlers[signum] = lambda number, _, said=said: _raise(Stopped(number, said))
    try:
        previous = {signum: signal.signal(signum, handler) for signum, handler in handlers.items()}
    except ValueError:  # not the main thread: signals stay as they are
        yield
        return
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _raise(error: BaseException):
    raise error
