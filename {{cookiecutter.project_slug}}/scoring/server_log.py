"""The scoring server's own output, bounded and safe to read: every line it writes (gunicorn's
access and error log, the app's log, score.py's warnings, tracebacks, prints) has its
control characters escaped, and goes to the file MLOPS_SERVER_LOG when that is set (the
local targets: .mlops/<target>.log), rotated at MLOPS_SERVER_LOG_MAX_BYTES (default 10 MB)
with MLOPS_SERVER_LOG_BACKUPS old files (default 2); else to stdout and stderr as before
(a container: the engine's log, Container Insights on AKS).

Why the server itself does it: a local target's server outlives the `deploy` command that
starts it, so no parent is left to rotate the file its output goes to; and escaping each
line where all of it passes also covers what the loggers of gunicorn and azmlinfsrv write
unescaped (an escape sequence in a query string would otherwise reach a terminal that
shows the log). gunicorn.conf.py calls route_output() first, in gunicorn's master: stdout
and stderr become pipes, which the workers inherit when they are forked, and a thread of
the master copies each line to its destination.

SharedRotatingFileHandler, the rotating file several processes append to that heals itself
after a failed write, serves score.py's prediction log too.
"""
import atexit
import contextlib
import datetime
import fcntl
import logging
import logging.handlers
import os
import re
import sys
import threading
from pathlib import Path

SERVER_LOG_ENV = "MLOPS_SERVER_LOG"
SERVER_LOG_MAX_BYTES_ENV = "MLOPS_SERVER_LOG_MAX_BYTES"
SERVER_LOG_BACKUPS_ENV = "MLOPS_SERVER_LOG_BACKUPS"
# A longer line is cut into lines of this size (a prediction record is at most 16 KB).
MAX_LINE_BYTES = 64 * 1024
# C0 controls but tab and the line's own newline, DEL, and C1 controls (U+009B is a
# terminal's CSI like ESC [): shown as \xNN.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
# The threads' wait for the last lines when the master exits.
DRAIN_SECONDS = 2.0
_routed = set()  # the PIDs whose output route_output() routed


def escape(raw):
    """The text of the line `raw` (bytes, with or without its newline) with its control
    characters and the bytes that are not UTF-8 written as \\xNN."""
    text = raw.decode("utf-8", "backslashreplace")
    return _CONTROL.sub(lambda match: "\\x%02x" % ord(match.group()),
                        text[:-1] if text.endswith("\n") else text)


class SharedRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """RotatingFileHandler for one file that several processes append to, which heals itself.

    Each record is written under an exclusive lock on `<file>.lock`, so one process's
    rotation never races another's write, and a process whose open file was rotated away
    by another reopens the current one first. One shared file (not one per PID) keeps the
    total size bounded by (backups + 1) x max bytes however often processes restart.
    A failed write (a full disk, a deleted folder) drops the stream, so the next record
    reopens the file (recreating the folder, starting on a new line after a partial one)
    and writing resumes on its own once the cause is gone. `failure` says what failed
    meanwhile ({"since", "records", "error"}); subclasses report it in failed() and
    resumed().
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.failure = None

    def emit(self, record):
        self.write_line(self.format(record))

    def write_line(self, line):
        """Append the text `line` (without its newline): what emit() does with a formatted
        record, for callers that have the text already (no LogRecord to build)."""
        try:
            self._write(line)
        except (OSError, ValueError) as error:  # ValueError: a stream closed under us
            self._drop_stream()
            now = datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds").replace("+00:00", "Z")
            self.failure = self.failure or {"since": now, "records": 0}
            self.failure.update(records=self.failure["records"] + 1, error=str(error))
            self.failed(self.failure)
            return
        if self.failure is not None:
            failure, self.failure = self.failure, None
            self.resumed(failure)

    def failed(self, failure):
        """Called after each failed write, with what failed so far."""

    def resumed(self, failure):
        """Called after the first write that succeeded again, with what failed before."""

    def _write(self, line):
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        with open(self.baseFilename + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if self.stream is not None and not self._is_current_file():
                    self._drop_stream()
                if self.stream is None:
                    self.stream = self._open()
                    # A failed write can leave a partial line: start on a new one.
                    if not self._ends_with_newline():
                        self.stream.write(self.terminator)
                line += self.terminator
                # RotatingFileHandler.shouldRollover's test, for text rather than a record.
                if 0 < self.maxBytes <= self.stream.seek(0, os.SEEK_END) + len(line):
                    self.doRollover()  # closes the stream (delay=True: not reopened)
                    self.stream = self._open()
                self.stream.write(line)
                self.stream.flush()
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _is_current_file(self):
        try:
            return (not self.stream.closed and os.path.samestat(
                os.fstat(self.stream.fileno()), os.stat(self.baseFilename)))
        except (OSError, ValueError):
            return False

    def _ends_with_newline(self):
        with open(self.baseFilename, "rb") as written:
            if written.seek(0, os.SEEK_END) == 0:
                return True
            written.seek(-1, os.SEEK_END)
            return written.read(1) == b"\n"

    def _drop_stream(self):
        """Close the stream even if its buffered bytes cannot be written (they are lost)."""
        stream, self.stream = self.stream, None
        if stream is not None:
            with contextlib.suppress(OSError, ValueError):
                stream.close()


class _ServerLogFile(SharedRotatingFileHandler):
    """The server log: lines lost to a failed write are told in the log once it is
    writable again (nowhere else: the server's own output is this file)."""

    def resumed(self, failure):
        with contextlib.suppress(OSError, ValueError):
            self._write(f"server log: {failure['records']} line(s) lost since "
                        f"{failure['since']} ({failure['error']})")


def _setting(name, default, low, environ):
    """The integer environment variable `name` (at least `low`), else `default`."""
    value = environ.get(name)
    if value is None:
        return default
    if not (value.isdigit() and int(value) >= low):
        raise ValueError(f"{name}={value!r}: expected an integer of at least {low}")
    return int(value)


def _write_all(fd, data):
    while data:
        data = data[os.write(fd, data):]


def _line_writer(fd):
    return lambda line: _write_all(fd, (line + "\n").encode())


def _copy_lines(pipe_fd, write):
    """Pass each line arriving on `pipe_fd` to `write` escaped, until every writer closed
    the pipe. Never stops early: the server would block once the pipe is full."""
    with open(pipe_fd, "rb") as pipe:
        for raw in iter(lambda: pipe.readline(MAX_LINE_BYTES), b""):
            with contextlib.suppress(Exception):
                write(escape(raw))


def route_output(environ=os.environ):
    """Send this process's stdout and stderr (and those of the processes it forks) through
    escape(), to the file MLOPS_SERVER_LOG or to where they went before. Once per process
    (gunicorn reads its config file again on SIGHUP)."""
    if os.getpid() in _routed:
        return
    path = environ.get(SERVER_LOG_ENV)
    sys.stdout.flush()
    sys.stderr.flush()
    original = {fd: os.dup(fd) for fd in (1, 2)}
    if path:
        handler = _ServerLogFile(
            path, maxBytes=_setting(SERVER_LOG_MAX_BYTES_ENV, 10_000_000, 1, environ),
            backupCount=_setting(SERVER_LOG_BACKUPS_ENV, 2, 1, environ), delay=True,
            encoding="utf-8")
        # Both streams in one pipe: one file, in the order they were written.
        routes = [((1, 2), handler.write_line)]
    else:
        routes = [((fd,), _line_writer(original[fd])) for fd in (1, 2)]
    threads = []
    for fds, write in routes:
        read_end, write_end = os.pipe()
        for fd in fds:
            os.dup2(write_end, fd)
        os.close(write_end)
        threads.append(threading.Thread(target=_copy_lines, args=(read_end, write),
                                        name="server-log", daemon=True))
        threads[-1].start()
    atexit.register(_drain, os.getpid(), original, threads)
    _routed.add(os.getpid())


def _drain(owner, restore, threads):
    """At the master's exit: close its ends of the pipes and let the threads copy what is
    left (the forked workers, gone by then, run this too and do nothing)."""
    if os.getpid() != owner:
        return
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
        sys.stderr.flush()
    for fd, original in restore.items():
        os.dup2(original, fd)
    for thread in threads:
        thread.join(DRAIN_SECONDS)
