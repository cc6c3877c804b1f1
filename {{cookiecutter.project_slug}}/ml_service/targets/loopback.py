"""What the targets on this machine (local processes, containers) share: a port on
127.0.0.1 per target, the target's own scoring key, a prediction log folder on this
machine (.mlops/<target>/, read by `monitor`), and no setup to check first."""
import os
import random
import socket
from pathlib import Path

from ml_service.monitoring.prediction_log import log_folder
from ml_service.release import key_headers, scoring_key

# Ports below the kernel's ephemeral range, from here: above the well-known services.
FIRST_FREE_PORT = 10000
# Its own generator, seeded by the OS: one that a caller seeds (a test runner re-seeds
# `random` before every test) would hand two processes the same ports.
_PORTS = random.SystemRandom()
# Handed out by this process: two targets configured one after the other (nothing bound
# yet) must not get the same port.
_HANDED_OUT = set()
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def free_port():
    """A port on 127.0.0.1 that nothing listens on, for a server about to start.

    Chosen below the kernel's ephemeral range: a port from that range (what binding
    port 0 gives) is also the local port of outgoing connections, and one can take it in
    the seconds before the server binds it, which then fails ("Address already in use")."""
    try:
        ephemeral_start = int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):  # not Linux: IANA's dynamic range
        ephemeral_start = 49152
    while True:
        port = _PORTS.randrange(FIRST_FREE_PORT, max(ephemeral_start, FIRST_FREE_PORT + 1000))
        if port in _HANDED_OUT:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:  # in use: another
                continue
        _HANDED_OUT.add(port)
        return port


class LoopbackTarget:
    def __init__(self, name, settings, environ=None):
        self.name = name
        self.environ = os.environ if environ is None else environ
        self.port = settings.target_settings(name).port
        self.serving = settings.serving
        self.monitoring = settings.monitoring
        self.prediction_log_dir = log_folder(settings, name)

    @property
    def scoring_uri(self):
        return f"http://127.0.0.1:{self.port}/score"

    @property
    def scoring_key(self):
        """The key this target's server needs (None: it answers anyone)."""
        return scoring_key(self.name, self.environ)

    def check_ready(self):
        """Deploying needs no setup beyond what deploy itself checks."""

    def request_headers(self):
        return key_headers(self.scoring_key)
