"""How a failed command ends: one line on stderr and an exit code, never a traceback.

Exit codes follow ``sysexits.h`` so that they never collide with the codes a command
uses for its own verdicts (``check``: 0 accepted, 1 rejected, 2 held; ``send``: 1 when
an answer is not AA):

    64  usage            a bad option or argument
    65  data             the input was read but cannot be used
    66  no input         a file, journal or exchange that does not exist
    69  unavailable      a peer refused the connection, a port is already in use
    70  software         our own fault (the line says so; RELAIS_DEBUG=1 shows the traceback)
    74  i/o              the journal or a file could not be read or written
    78  config           the configuration file or a setting is unusable
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from typing import NoReturn

from gateway.errors import ConfigError, DestinationUnavailable, GatewayError, JournalError, OperationError

__all__ = [
    "EX_USAGE",
    "EX_DATAERR",
    "EX_NOINPUT",
    "EX_UNAVAILABLE",
    "EX_SOFTWARE",
    "EX_IOERR",
    "EX_TEMPFAIL",
    "EX_CONFIG",
    "OneLineParser",
    "CommandFailed",
    "describe",
]

EX_USAGE = 64
EX_DATAERR = 65
EX_NOINPUT = 66
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_IOERR = 74
EX_TEMPFAIL = 75
EX_CONFIG = 78

#: journal refusals that are about the set-up, not the disk: an old or newer schema, a busy directory
_JOURNAL_CODES = {"JOURNAL_MISSING": EX_NOINPUT, "JOURNAL_IN_USE": EX_TEMPFAIL, "JOURNAL_SCHEMA_OLD": EX_CONFIG,
                  "JOURNAL_SCHEMA_NEWER": EX_CONFIG, "JOURNAL_MIGRATION_CHANGED": EX_CONFIG,
                  "JOURNAL_SCHEMA_GAP": EX_CONFIG, "JOURNAL_BACKEND": EX_CONFIG}


class CommandFailed(Exception):
    """Raised by a command that has already decided its one-line message and exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class OneLineParser(argparse.ArgumentParser):
    """argparse prints the usage block and the error on two lines; a script reads one."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: {message} (see {self.prog} --help)\n")
        sys.exit(EX_USAGE)


def describe(exc: BaseException) -> tuple[str, int]:
    """The one line and the exit code for an exception that reached the command boundary."""
    if isinstance(exc, CommandFailed):
        return exc.message, exc.exit_code
    if isinstance(exc, GatewayError):
        return _gateway_error(exc)
    if isinstance(exc, OperationError):  # an operator action refused as a whole (unknown target …)
        return str(exc), EX_DATAERR
    if isinstance(exc, OSError):
        return _os_error(exc)
    return f"internal error {type(exc).__name__}: {exc} (set RELAIS_DEBUG=1 for the traceback)", EX_SOFTWARE


def _gateway_error(exc: GatewayError) -> tuple[str, int]:
    """Our own errors carry their message; the kind of error picks the code."""
    if isinstance(exc, ConfigError):
        return exc.message, EX_CONFIG
    if isinstance(exc, JournalError):
        return exc.message, _JOURNAL_CODES.get(exc.code, EX_IOERR)
    if isinstance(exc, DestinationUnavailable):
        return exc.message, EX_UNAVAILABLE
    return f"{exc.code}: {exc.message}", EX_DATAERR


def _os_error(exc: OSError) -> tuple[str, int]:
    """The system's word for what failed, with the file or the address it failed on."""
    if isinstance(exc, (FileNotFoundError, IsADirectoryError, NotADirectoryError)):
        return f"cannot read {exc.filename}: {exc.strerror}", EX_NOINPUT
    if isinstance(exc, PermissionError):
        return f"cannot open {exc.filename}: {exc.strerror}", EX_IOERR
    if isinstance(exc, ConnectionError):
        return f"connection failed: {exc.strerror or type(exc).__name__}", EX_UNAVAILABLE
    if exc.errno == errno.EADDRINUSE:
        # asyncio words it "error while attempting to bind on address (...): address already in use"
        return str(exc.strerror or exc).replace("error while attempting to bind on", "cannot listen on"), EX_UNAVAILABLE
    return f"{exc.strerror or exc}", EX_IOERR


def debug_enabled() -> bool:
    return os.environ.get("RELAIS_DEBUG", "") not in ("", "0")
