"""Every error modelmgr reports on purpose, in one tree.

Each class carries a message that says what went wrong and a hint that says what the user can do.
Front ends print ``str(err)`` (message + hint) and exit with ``err.exit_code``; a traceback is shown
only with ``--debug``. Messages never contain credentials: callers pass URLs through
:func:`modelmgr.download.safe_paths.redact_url` before they go into an error.
"""

from __future__ import annotations

from dataclasses import dataclass


class ExitCode:
    """The process exit codes, one table for every command (README "Exit codes")."""

    OK = 0
    INTERNAL = 1
    USAGE = 2
    NOT_FOUND = 3
    AUTH = 4
    NETWORK = 5
    INTEGRITY = 6
    DISK = 7
    LOCKED = 8
    BAD_FILE = 9
    INTERRUPTED = 130


class ModelMgrError(Exception):
    """Base class: a failure with a user-facing message and an optional hint."""

    exit_code: int = ExitCode.INTERNAL

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message

    def to_dict(self) -> dict:
        """The JSON form used by ``--json`` output."""
        return {"error": type(self).__name__, "message": self.message, "hint": self.hint,
                "exit_code": self.exit_code}


class UsageError(ModelMgrError):
    """The command line or a spec is malformed."""

    exit_code = ExitCode.USAGE


class ConfigError(ModelMgrError):
    """A setting or config file has a bad value."""

    exit_code = ExitCode.USAGE


class NotFoundError(ModelMgrError):
    """A repo, revision, file, model version or bundle does not exist."""

    exit_code = ExitCode.NOT_FOUND


class AuthError(ModelMgrError):
    """The remote wants credentials or a licence acceptance."""

    exit_code = ExitCode.AUTH


class RemoteError(ModelMgrError):
    """The remote kept failing (after retries) or answered something we cannot use."""

    exit_code = ExitCode.NETWORK


class RemoteChangedError(RemoteError):
    """The remote file changed (ETag/size/commit) while we were downloading it."""


class IntegrityError(ModelMgrError):
    """Downloaded bytes do not match the expected size or hash. Nothing lands under the final name."""

    exit_code = ExitCode.INTEGRITY


class DiskSpaceError(ModelMgrError):
    """Not enough free space, or the disk filled up mid-way (the partial is kept for resume)."""

    exit_code = ExitCode.DISK


class LockedError(ModelMgrError):
    """Another process holds the lock on a target file."""

    exit_code = ExitCode.LOCKED


class UnsafePathError(ModelMgrError):
    """A remote-supplied name would escape the destination or is otherwise unsafe."""

    exit_code = ExitCode.BAD_FILE


class BadFileError(ModelMgrError):
    """A model file is malformed, truncated, unsafe (pickle) or not the format it claims."""

    exit_code = ExitCode.BAD_FILE


class MissingExtraError(ModelMgrError):
    """An optional feature needs packages that are not installed."""

    exit_code = ExitCode.USAGE


@dataclass(frozen=True)
class ExitRow:
    """One row of the documented exit-code table."""

    code: int
    meaning: str


EXIT_TABLE: tuple[ExitRow, ...] = (
    ExitRow(ExitCode.OK, "success"),
    ExitRow(ExitCode.INTERNAL, "unexpected internal error (run with --debug and report it)"),
    ExitRow(ExitCode.USAGE, "bad command line, spec or configuration; a missing optional extra"),
    ExitRow(ExitCode.NOT_FOUND, "repo, revision, file, model version or bundle not found"),
    ExitRow(ExitCode.AUTH, "authentication needed: token missing/invalid, gated repo, early access"),
    ExitRow(ExitCode.NETWORK, "remote failed after retries, or changed during the download"),
    ExitRow(ExitCode.INTEGRITY, "size or hash mismatch (file kept in quarantine)"),
    ExitRow(ExitCode.DISK, "not enough disk space (partial kept for resume)"),
    ExitRow(ExitCode.LOCKED, "another modelmgr process holds the target"),
    ExitRow(ExitCode.BAD_FILE, "unsafe remote name, malformed or mislabelled model file"),
    ExitRow(ExitCode.INTERRUPTED, "interrupted (Ctrl-C); partial kept for resume"),
)
