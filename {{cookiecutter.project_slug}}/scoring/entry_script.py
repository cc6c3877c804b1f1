"""The entry script the scoring server gives azmlinfsrv (gunicorn.conf.py): score.py's init()
and run(), imported by name.

azmlinfsrv executes its entry script as a new module of its own. Pointed at score.py, that
would be a second score module beside the one the server's worker imports (worker.py), and
the model init() loads would be in the other one: the worker's fast path, which answers
POST /score without the Flask app, calls score.answer() of the module init() loaded.
"""
from score import init, run  # noqa: F401 (what azmlinfsrv calls)
