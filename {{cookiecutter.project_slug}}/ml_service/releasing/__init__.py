"""Releasing: the operations that move a release between the registry and the targets.

    registry.py     the Release of a model version, read back from its registry tags
    image.py        the scoring image of a model version (build context, digest, docker)
    deployment.py   deploy: make a target run its desired state (reconcile); the
                    summary of what runs where
    smoke.py        the smoke test of a deployed target
    promotion.py    promote staging to production, roll production back
    prediction.py   predict: score the rows of a file on a target (ml_service/client.py)
    interrupts.py   Ctrl-C and SIGTERM: held while a step finishes or undoes itself

The stages (ml_service/stages/) call these; these call the targets and never a stage.
"""
