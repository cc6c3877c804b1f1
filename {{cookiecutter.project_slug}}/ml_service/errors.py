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
