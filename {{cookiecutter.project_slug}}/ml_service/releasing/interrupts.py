"""Interrupt safety of the release steps: Ctrl-C and SIGTERM (which the CLI turns into
KeyboardInterrupt) may arrive at any point of deploy, promote or rollback. A step that
was interrupted undoes what it had started, and the undo itself runs with both signals
held back, so a second Ctrl-C cannot leave two versions serving one port.
"""
import contextlib
import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def signals_held():
    """Run the block with SIGINT and SIGTERM held; one that arrived meanwhile is raised
    as KeyboardInterrupt when the block ends. (Signals can be caught only in the main
    thread: elsewhere the block just runs.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = {number: signal.signal(number, lambda number, frame: received.append(number))
                for number in SIGNALS}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    if received:
        raise KeyboardInterrupt(signal.Signals(received[0]).name)
