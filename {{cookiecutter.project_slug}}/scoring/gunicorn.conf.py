"""Settings of the scoring server, the same for the image and the local targets.

    AZUREML_MODEL_DIR=<MLflow model folder> gunicorn --config scoring/gunicorn.conf.py

The app is the Azure ML inference server's (azmlinfsrv's) Flask app calling score.py, run by
gunicorn directly: the `azmlinfsrv` command always binds 0.0.0.0, and the options it passes
on gunicorn's command line outrank GUNICORN_CMD_ARGS and this file. Options given
on gunicorn's command line (e.g. `--bind`, `--workers`) or in GUNICORN_CMD_ARGS override these.
See README.md, "Serving setup", for the measurements behind the choices.
"""
import atexit
import gc
import logging
import os
import socket
import struct
import sys
import threading
from pathlib import Path

from azureml_inference_server_http.constants import PACKAGE_ROOT
from azureml_inference_server_http.log_config import load_logging_config
from gunicorn.sock import TCPSocket

# No garbage collection while the app loads: scikit-learn, scipy, pandas and skops create
# hundreds of thousands of objects that live as long as the server, and the collector's
# passes over them were an eighth of a start's CPU (3.1 CPU-s to healthy, 2.7 without).
# when_ready turns it back on.
gc.disable()

HERE = Path(__file__).resolve().parent
# First, so that it sees every line: the server's output escaped, and rotated in the file
# MLOPS_SERVER_LOG when that is set (server_log.py, which score.py imports too).
sys.path.insert(0, str(HERE))
import server_log  # noqa: E402 (found beside this file)
from worker import ScoringWorker  # noqa: E402 (found beside this file)

server_log.route_output()
# What the azmlinfsrv command does before it starts gunicorn: set the entry script (score.py
# through entry_script.py, so that the worker's fast path shares its module) and the app
# root, load its logging config, and pass the log options below.
os.environ.setdefault("AZUREML_ENTRY_SCRIPT", str(HERE / "entry_script.py"))
os.environ.setdefault("AML_APP_ROOT", str(HERE))
load_logging_config(PACKAGE_ROOT)
wsgi_app = "azureml_inference_server_http.server.entry:app"
accesslog = "-"
# gunicorn's default line plus the time taken in seconds: the one line per request (see
# post_fork), with what a user needs (client, request line, status, size, agent, duration).
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(L)s s'
errorlog = "/dev/null"  # the logging config sends gunicorn's error log to stderr already

# Loopback unless told otherwise; the image passes --bind 0.0.0.0:5001.
bind = ["127.0.0.1:5001"]
# Processes: about one per core (WORKER_COUNT, as azmlinfsrv reads it).
workers = int(os.environ.get("WORKER_COUNT", "1"))
# Threads take whole requests, read by the worker's loop under a deadline (worker.py), so
# slow and idle clients hold no thread; score.py bounds the bodies a thread still reads
# itself (SCORING_BODY_TIMEOUT).
worker_class = ScoringWorker
threads = 16
keepalive = 5
# Load score.py and the model once, before the workers fork: one start-up log (the notice
# about the scoring key included) and the model's memory shared between the workers.
preload_app = True
# A gthread worker's main loop reports to the master even while a request runs, so this only
# restarts a worker whose loop hangs.
timeout = 120
# Nothing to control at run time; and gunicorn's control socket lives at one path per user,
# which two servers on one machine (staging and production) would take from each other.
control_socket_disable = True

# A local target's server (ml_service/targets/local.py) is handed the port's listening
# socket by the deploy that starts it (the descriptor MLOPS_LISTENER_FD) and hands it on
# to the next one (on the abstract Unix socket MLOPS_LISTENER_OFFER): one socket, and one
# queue of connections, from server to server, where a listener of each server sharing
# the port (SO_REUSEPORT) would take its queued connections with it when it closes (the
# kernel resets them). The image sets neither and binds its addresses as usual.
port_listener = None  # the socket offered: the master's listener of the port
listener_offer = None


def on_starting(server):
    """Listen on the handed socket where it is one of the bound addresses, and bind the
    others (the check port). A canary's server, bound to its own port only, keeps it just
    to hand on, for the traffic split in front of it."""
    global port_listener
    descriptor = os.environ.pop("MLOPS_LISTENER_FD", None)
    if descriptor is None:
        return
    handed = socket.socket(fileno=int(descriptor))
    shared = handed.getsockname()
    server.LISTENERS = [
        TCPSocket(address, server.cfg, server.log,
                  fd=os.dup(handed.fileno()) if address == shared else None)
        for address in server.cfg.address]
    serving = [listener.sock for listener in server.LISTENERS if listener.cfg_addr == shared]
    if serving:
        # Offered while the master listens: gunicorn closes it as it stops, before its
        # workers accept what is queued and close theirs; a copy kept longer would queue
        # connections that nobody accepts, on a port shared with a socket of its own.
        handed.close()
        port_listener = serving[0]
    else:
        port_listener = handed


def when_ready(server):
    """Loaded, before the first fork: the app's objects move to the collector's permanent
    generation (Python's advice for servers that fork, gc.freeze), so no collection in the
    master or a worker walks them again, and collection is on for all that follows. Then
    the handed socket is offered to the next deploy."""
    gc.freeze()
    gc.enable()
    offer = os.environ.get("MLOPS_LISTENER_OFFER")
    if port_listener is not None and offer:
        global listener_offer
        listener_offer = socket.socket(socket.AF_UNIX)
        listener_offer.bind("\0" + offer)
        listener_offer.listen()
        threading.Thread(target=_give_port_listener, daemon=True).start()


def _give_port_listener():
    """In the master, for as long as it runs: send the port's listening socket to each
    process that asks, if it runs as this user (an abstract socket has no permissions),
    until the socket is closed (the asker checks what it gets: the port, listening). The
    thread takes no lock (no logging, no import), so a worker's fork finds none held."""
    while True:
        try:
            peer, _ = listener_offer.accept()
        except OSError:  # closed
            return
        with peer:
            try:
                _, uid, _ = struct.unpack("3i", peer.getsockopt(
                    socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
                descriptor = port_listener.fileno()  # -1 once closed
                if uid == os.getuid() and descriptor >= 0:
                    socket.send_fds(peer, [b"L"], [descriptor])
            except OSError:  # the asker went away
                continue


def post_fork(server, worker):
    """Once a worker serves, azmlinfsrv's INFO lines are per request ("POST /score 200
    1.234ms 55", "run() output is HTTP Response"): the access line already says it, and
    writing each request twice cost about a tenth of the server's CPU. Its warnings and
    errors, and score.py's own lines, stay. The offer, and a canary's server's kept
    socket, are the master's: a worker that kept them would hold the offer's name, or the
    port, after the master's exit."""
    logging.getLogger("azmlinfsrv").setLevel(logging.WARNING)
    logging.getLogger("azmlinfsrv.score").setLevel(logging.INFO)
    if listener_offer is not None:
        listener_offer.close()
    if port_listener is not None and all(listener.sock is not port_listener
                                         for listener in worker.sockets):
        port_listener.close()


def worker_exit(server, worker):
    """A worker that stops cleanly (exit status 0) ends without tearing down its objects;
    any other exit (a boot error, which the master reads from the status) is Python's own.
    The requests in flight were given graceful_timeout already."""
    stopping = sys.exc_info()[1]  # the SystemExit of gunicorn's worker, in its `finally`
    if isinstance(stopping, SystemExit) and stopping.code in (0, None):
        _exit_without_teardown()


def on_exit(server):
    """The master, stopped by a signal (exit status 0; gunicorn's HaltServer, which carries
    another status, keeps Python's own exit), ends without tearing down its objects."""
    if isinstance(sys.exc_info()[1], (StopIteration, KeyboardInterrupt)):
        _exit_without_teardown()


def _exit_without_teardown():
    """Exit with status 0 as Python's exit would (the exit handlers run: the logging
    handlers' flush, server_log's drain of the last lines; the output flushed) but without
    freeing every object one by one: with scikit-learn, scipy and pandas loaded that was
    about 0.4 CPU-s a process, more in a forked worker (each page is copied before its
    objects are freed): 0.4-2 CPU-s of every server stop, 0.07 without it."""
    atexit._run_exitfuncs()  # the handlers Python runs at exit (CPython, undocumented)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
