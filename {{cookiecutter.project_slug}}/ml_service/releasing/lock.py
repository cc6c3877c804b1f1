"""One operation that changes an environment (deploy, promote, rollback, stop) at a time.

The lock is .mlops/<environment>.lock, held with flock(2): the kernel releases it when
its holder ends, even by `kill -9`, so a crashed command never blocks the next one.
The file names its holder (PID, command, start) for the refusal message; a file still
naming a holder that no longer holds it is a stale lock, taken over with a note.
"""
import contextlib
import fcntl
import functools
import json
import os
import shlex
import sys
import time

from ml_service.errors import MlopsError


@contextlib.contextmanager
def environment_lock(settings, environment, operation):
    """Hold `environment`'s lock while `operation` (e.g. "promote") runs; refuse at once
    if another command holds it."""
    folder = settings.project_root / ".mlops"
    folder.mkdir(exist_ok=True)
    path = folder / f"{environment}.lock"
    with open(path, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(lock)
            raise MlopsError(
                f"A {holder.get('operation', 'release operation')} of {environment} is in "
                f"progress by PID {holder.get('pid', '?')} "
                f"(`{holder.get('command', '?')}`, since {holder.get('since', '?')}); "
                f"{operation} was not started.",
                f"Wait for it to finish and run again. If that process is hung, stop it "
                f"(`kill {holder.get('pid', '<pid>')}`): its lock ({path}) is released "
                "when it ends.") from None
        stale = _holder(lock)
        if stale:
            print(f"note: took over the lock of {environment} ({path}) left by PID "
                  f"{stale.get('pid', '?')} (`{stale.get('command', '?')}`), which ended "
                  "without finishing.")
        _write(lock, {"pid": os.getpid(), "operation": operation,
                      "command": shlex.join([os.path.basename(sys.executable), *sys.argv]),
                      "since": time.strftime("%Y-%m-%d %H:%M:%S %z")})
        try:
            yield
        finally:
            _write(lock, None)  # an empty file: released cleanly


def _holder(lock):
    """Who the lock file says holds it ({} if nobody)."""
    lock.seek(0)
    try:
        return json.loads(lock.read() or "{}")
    except ValueError:
        return {"pid": "?", "command": "unreadable lock file"}


def _write(lock, holder):
    lock.seek(0)
    lock.truncate()
    if holder:
        lock.write(json.dumps(holder))
    lock.flush()


def locked(environment, operation):
    """Decorate a release operation on `environment` to hold its lock while it runs."""
    def decorate(function):
        @functools.wraps(function)
        def run_locked(settings, *args, **kwargs):
            with environment_lock(settings, environment, operation):
                return function(settings, *args, **kwargs)
        return run_locked
    return decorate
