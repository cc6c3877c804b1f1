"""The one error type the CLI shows to users."""


class MlopsError(Exception):
    """A failure the user can act on: says what went wrong and what to do.

    The CLI prints the message as one paragraph and exits with `exit_code`;
    tracebacks are shown only with --debug.
    """

    exit_code = 1

    def __init__(self, what, fix):
        super().__init__(f"{what} {fix}")
        self.what = what
        self.fix = fix


class ConfigError(MlopsError):
    """A missing or invalid setting."""

    exit_code = 2


class CanaryFailed(MlopsError):
    """A canary step failed its analysis, locally (releasing/canary.py) or in Flagger's
    hands on AKS (targets/aks.py); `reason` names the check, its measured value and the
    step, for the revert commit and the version's `canary` tag."""

    def __init__(self, what, fix, reason):
        super().__init__(what, fix)
        self.reason = reason
