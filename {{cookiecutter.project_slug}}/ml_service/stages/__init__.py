"""One module per pipeline stage; each is one CLI verb and one CI step.

A stage module exposes HELP, add_arguments(parser) and run(settings, args), which
returns the process exit code. It is the verb's command line only: run() calls the
operations below it (backends/, releasing/, azure/) and never another stage. The
CLI loads every stage to build its parser, so a stage imports those operations
inside run(): a verb pays for MLflow, scikit-learn or the Azure SDKs only when it
runs, and `--help` for none of them.
"""
