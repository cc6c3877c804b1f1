"""Where the CPU of a command goes, by default the template's `make test`: every process
that ends while it runs, as the kernel's process accounting counts it (acct(2), so also
the processes that are killed, run in containers or are reparented), grouped by what the
process was: a scoring server's start, a CLI stage by verb, the pytest processes
themselves, git, containers, ...; and by the test that started it (the test pytest was
running, PYTEST_CURRENT_TEST, which a process inherits from whatever started it).

    sudo .venv/bin/python benchmarks/suite_cpu.py                  # make test
    sudo .venv/bin/python benchmarks/suite_cpu.py -- make test PYTEST_ARGS="-k bake"

The suite on a 2-core machine is CPU-bound (busy CPU-s / 2 is most of its wall time),
so what it costs is the sum of these rows, and a row says what a change would save.
A measurement tool, not a test: it asserts nothing.

How: process accounting writes one record per ended process (its CPU, parent and 16-
character command name) to a temporary file; a .pth file put into this interpreter's
site-packages for the run (and removed after it) records each Python process's argv,
which the name alone cannot tell apart. Processes still running at the end (Docker's
daemons, the registry) are in the machine's busy CPU but in no row. A reference process
(REFERENCE) is timed before and after, neither recorded nor counted: the same work's
CPU-s drift with the machine. Needs Linux and CAP_SYS_PACCT (root), and process
accounting off (nothing else using it) when it starts.
"""
import argparse
import ast
import collections
import ctypes
import json
import os
import resource
import site
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# struct acct_v3 (linux/acct.h): 64 bytes, little-endian on the machines this runs on.
RECORD = struct.Struct("<BBHIIIIIIf8H16s")
ACCT_VERSION = 3
TICKS_PER_SECOND = 100  # AHZ: the unit of the records' comp_t times
# Set for the measured command: accounting is one file for the whole machine, so a run
# inside it (the template's test of this script) would end this one's; it skips instead.
RUNNING = "SUITE_CPU_RUNNING"
# What a CPU-second buys on this machine at the time: a new interpreter importing
# scikit-learn, what most of the suite's processes do first. On the 2-core VM this was
# written on it took 1.28 CPU-s at one time and 1.65-1.75 an hour and a half later, and
# the suite's time grew with it: compare runs by their ratio to it, not by seconds.
REFERENCE = [sys.executable, "-c", "import sklearn.base"]
# The CLI's options that come before the verb and take a value (ml_service/cli.py).
VALUED_OPTIONS = ("--config", "--backend")
# Where a machine's own accounting (psacct/acct packages) writes: Debian, Red Hat.
SYSTEM_ACCOUNTING_FILES = (Path("/var/log/account/pacct"), Path("/var/account/pacct"))


def comp_t(value):
    """The kernel's 16-bit float: 13-bit mantissa, 3-bit base-8 exponent."""
    return (value & 0x1FFF) << (3 * (value >> 13))


def read_records(path):
    """(pid, ppid, cpu seconds, command name) of each process the file records."""
    data = path.read_bytes()
    records = []
    for offset in range(0, len(data) - RECORD.size + 1, RECORD.size):
        (_, version, _, _, _, _, pid, ppid, _, _, utime, stime, *_,
         name) = RECORD.unpack_from(data, offset)
        if version & 0x0F != ACCT_VERSION:
            raise SystemExit(f"suite_cpu: {path} holds version {version & 0x0F} records, "
                             f"not {ACCT_VERSION}: this kernel's format is not supported")
        cpu = (comp_t(utime) + comp_t(stime)) / TICKS_PER_SECOND
        records.append((pid, ppid, cpu, name.split(b"\0")[0].decode(errors="replace")))
    return records


def process_accounting(path):
    """Turn process accounting on into `path`, or off with None."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.acct(None if path is None else os.fsencode(path)) != 0:
        error = ctypes.get_errno()
        raise SystemExit(f"suite_cpu: process accounting could not be turned "
                         f"{'on' if path else 'off'}: {os.strerror(error)}. It needs root "
                         "(CAP_SYS_PACCT), and no other accounting running")


def system_accounting():
    """The machine's own accounting file if it is on (it grows when a process ends): this
    script would end it (acct(2) has one file, and no way to ask for it)."""
    sizes = {path: path.stat().st_size for path in SYSTEM_ACCOUNTING_FILES if path.exists()}
    if sizes:
        subprocess.run(["true"], check=False)
    return next((path for path, size in sizes.items() if path.stat().st_size > size), None)


def busy_idle_and_steal():
    """The machine's busy, idle and stolen (by the hypervisor) CPU seconds so far
    (/proc/stat)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = fields
    tick = os.sysconf("SC_CLK_TCK")
    return ((user + nice + system + irq + softirq) / tick, (idle + iowait) / tick,
            steal / tick)


def reference_cpu(runs):
    """The least CPU-s (user + system) of `runs` runs of REFERENCE."""
    spent = []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(REFERENCE, check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        spent.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return min(spent)


def argv_recorder(log):
    """The .pth line that appends each starting Python process's (pid, argv, the test
    running: its pytest node id or '') to `log`."""
    return ("import os, sys; exec(" + repr(
        "try:\n"
        f"    with open({str(log)!r}, 'a') as _f:\n"
        "        _f.write(repr((os.getpid(), sys.orig_argv[:12], os.environ.get("
        "'PYTEST_CURRENT_TEST', '').rsplit(' (', 1)[0])) + '\\n')\n"
        "except OSError:\n"
        "    pass\n") + ")\n")


def read_argvs(log):
    """{pid: (argv, test)} of the Python processes `log` recorded."""
    argvs = {}
    if log.exists():
        for line in log.read_text().splitlines():
            try:
                pid, argv, test = ast.literal_eval(line)
            except (SyntaxError, ValueError):
                continue  # a line cut short by a process killed mid-write
            argvs[pid] = (argv, test)
    return argvs


def cli_verb(args):
    """The verb of `python -m ml_service ARGS`: the first word that is no option, nor the
    value of an option before it."""
    words = iter(args)
    for word in words:
        if word in VALUED_OPTIONS:
            next(words, None)
        elif not word.startswith("-"):
            return word
    return ""


def origin(pid, records_by_pid, argvs):
    """(argv, test, forked) of a process: its own record, its parent's (a fork, e.g. a
    gunicorn worker), or (None, "", False) for what is no Python of this interpreter."""
    if pid in argvs:
        return (*argvs[pid], False)
    _, parent, _, name = records_by_pid.get(pid, (pid, 0, 0.0, ""))
    if parent in argvs and name.startswith(("python", "gunicorn", "jemalloc")):
        return (*argvs[parent], True)
    return None, "", False


def kind(argv, forked, name):
    """What a process was, from its origin (argv, forked) or, for what is no Python of this
    interpreter (argv None), its command name `name`."""
    if argv is None:
        return f"other: {name}"
    words = " ".join(" ".join(argv[1:8]).split())  # a -c script's lines on one line
    # The program run: a script's name (.venv/bin/gunicorn) or a module's (-m pytest);
    # not a word of its arguments, which name paths such as scoring/gunicorn.conf.py and
    # pytest's temporary folders (/tmp/pytest-of-<user>/...) for other tools and probes.
    program = argv[2] if argv[1:2] == ["-m"] else Path(argv[1]).name if argv[1:] else ""
    if program == "gunicorn":
        return "scoring server: gunicorn " + ("worker (fork)" if forked else "master")
    if program == "ml_service":
        return "CLI: python -m ml_service " + cli_verb(argv[argv.index("ml_service") + 1:])
    if program == "pytest" or "exec(eval(sys.stdin.readline()))" in words:
        return "pytest and its xdist workers (tests run in-process)" + (
            " (fork)" if forked else "")
    if program == "traffic_split.py":
        return "traffic split (canary front)"
    return "python: " + words[:60] + (" (fork)" if forked else "")


def report(records, argvs, wall, machine, reference, top, tests):
    """Print the rows, then the `tests` tests whose processes took the most; `machine` is
    (busy, idle, steal) CPU-s during the command, `reference` REFERENCE's CPU-s (before,
    after)."""
    records_by_pid = {record[0]: record for record in records}
    rows = collections.defaultdict(lambda: [0, 0.0])
    by_test = collections.defaultdict(lambda: [0, 0.0])
    for pid, _, cpu, name in records:
        argv, test, forked = origin(pid, records_by_pid, argvs)
        row = rows[kind(argv, forked, name)]
        row[0] += 1
        row[1] += cpu
        if test:
            by_test[test][0] += 1
            by_test[test][1] += cpu
    counted = sum(cpu for _, _, cpu, _ in records)
    busy, idle, steal = machine
    print(f"wall {wall:.0f} s; machine busy {busy:.0f} CPU-s, idle {idle:.0f} CPU-s, "
          f"stolen {steal:.0f} CPU-s; ended processes {len(records)}, {counted:.0f} CPU-s "
          "(the rest: processes still running, e.g. Docker's daemons, and the kernel)")
    print(f"reference: {reference[0]:.2f} CPU-s before, {reference[1]:.2f} after "
          f"(`python -c '{REFERENCE[2]}'`, the least of the runs): "
          "compare runs by their ratio to it")
    print(f"{'CPU-s':>8} {'share':>6} {'procs':>6} {'each':>6}  what")
    for name, (count, cpu) in sorted(rows.items(), key=lambda item: -item[1][1])[:top]:
        print(f"{cpu:8.1f} {cpu / max(counted, 1e-9):6.1%} {count:6d} {cpu / count:6.2f}  "
              f"{name}")
    if tests and by_test:
        print(f"\nthe processes each test started (its own work in pytest's process not "
              f"included), the {tests} that took the most:")
        print(f"{'CPU-s':>8} {'share':>6} {'procs':>6}  test")
        for name, (count, cpu) in sorted(by_test.items(), key=lambda item: -item[1][1])[:tests]:
            print(f"{cpu:8.1f} {cpu / max(counted, 1e-9):6.1%} {count:6d}  {name}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--top", type=int, default=30, help="rows to print (default 30)")
    parser.add_argument("--json", type=Path, help="also write the records to this file")
    parser.add_argument("--tests", type=int, default=20,
                        help="tests to list by the CPU of their processes (default 20)")
    parser.add_argument("--reference-runs", type=int, default=3,
                        help="runs of the reference before and after (default 3)")
    parser.add_argument("command", nargs="*", default=["make", "test"],
                        help="what to run (default: make test), after --")
    args = parser.parse_args(argv)
    if os.environ.get(RUNNING):
        raise SystemExit("suite_cpu: already measuring (SUITE_CPU_RUNNING is set): process "
                         "accounting is one file for the whole machine")
    in_use = system_accounting()
    if in_use:
        raise SystemExit(f"suite_cpu: this machine's process accounting is on ({in_use} "
                         "grows), and measuring would end it: stop it first (e.g. "
                         "`accton off`), then start it again after")
    # Both reference runs outside the recorder's time: its .pth would add a file write to
    # the first run's interpreter start and not to the second's.
    reference_before = reference_cpu(args.reference_runs)
    packages = Path(site.getsitepackages()[0])
    with tempfile.TemporaryDirectory(prefix="suite-cpu-") as scratch:
        scratch = Path(scratch)
        accounting, argv_log = scratch / "pacct", scratch / "argv.log"
        accounting.touch()
        recorder = packages / "zz_suite_cpu_argv.pth"  # last: after the venv's own .pth
        recorder.write_text(argv_recorder(argv_log))
        try:
            machine_before = busy_idle_and_steal()
            start = time.monotonic()
            process_accounting(accounting)
            try:
                returncode = subprocess.call(args.command, env={**os.environ, RUNNING: "1"})
            finally:
                process_accounting(None)
            wall = time.monotonic() - start
            machine = [after - before for after, before
                       in zip(busy_idle_and_steal(), machine_before)]
        finally:
            recorder.unlink()
        records = read_records(accounting)
        argvs = read_argvs(argv_log)
    if args.json:
        args.json.write_text(json.dumps({"records": records, "argv": argvs}))
    reference = (reference_before, reference_cpu(args.reference_runs))
    report(records, argvs, wall, machine, reference, args.top, args.tests)
    print(f"(the command exited {returncode})")
    return returncode


if __name__ == "__main__":
    sys.exit(main())
