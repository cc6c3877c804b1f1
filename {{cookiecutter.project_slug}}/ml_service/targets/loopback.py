"""What the targets on this machine (local processes, containers) share: a port on
127.0.0.1 per target, the target's own scoring key, a prediction log folder on this
machine (.mlops/<target>/, read by `monitor`), and no setup to check first."""
import os

from ml_service.monitoring.prediction_log import log_folder
from ml_service.release import key_headers, scoring_key


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
