"""One module per pipeline stage; each is one CLI verb and one CI step.

A stage module exposes HELP, add_arguments(parser) and run(settings, args),
which returns the process exit code.
"""
