"""The GitHub expression evaluator the CI harness relies on."""
import pytest

from tests.helpers.ci_expressions import condition_holds, render


def test_the_expression_evaluator_follows_github():
    contexts = {"github": {"event_name": "push", "ref": "refs/heads/main"},
                "needs": {"model": {"outputs": {"model_version": ""}}},
                "steps": {"evaluate": {"outputs": {"gate": "Rejected"}}}, "env": {}}
    ok = {"failed": False}
    assert condition_holds("github.event_name != 'pull_request' && "
                           "github.ref == 'refs/heads/main'", contexts, ok)
    assert not condition_holds("needs.model.outputs.model_version != ''", contexts, ok)
    assert not condition_holds("needs.nope.outputs.model_version != ''", contexts, ok)
    assert condition_holds("steps.evaluate.outputs.gate == 'rejected'", contexts, ok)
    assert not condition_holds("steps.evaluate.outputs.gate == 'rejected'", contexts,
                               {"failed": True})
    assert condition_holds("failure() && steps.evaluate.outputs.gate", contexts,
                           {"failed": True})
    opening = "$" + "{" + "{"  # written apart: this file is a Jinja template
    assert render(f"v{opening} needs.model.outputs.model_version || 'none' }}}}",
                  contexts, ok) == "vnone"
    with pytest.raises(ValueError):
        condition_holds("hashFiles('x') != ''", contexts, ok)
