"""A deployment commit is refused, before anything is written, when git would make it
wrong: uncommitted overlay edits, a detached HEAD, another git command's index.lock;
and a commit git itself refuses (a failing commit hook) leaves nothing behind."""
import pytest

from ml_service import desired_state
from ml_service.errors import MlopsError
from ml_service.release import Release
from ml_service.releasing.promotion import commit_production
from tests.helpers.project import git


@pytest.fixture
def checkout(project):
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "init")
    return project


def release(settings):
    return Release(settings.model.name, "3", "registry/model:3-abc", "", "", settings.project_root)


def attempt(settings, problem):
    """Try a production commit; assert it is refused with `problem` and nothing changed."""
    overlay = desired_state.overlay_file(settings, "production")
    text, head = overlay.read_text(), git(settings.project_root, "rev-parse", "HEAD")
    with pytest.raises(MlopsError, match=problem):
        commit_production(settings, release(settings), "Promote version 3")
    assert overlay.read_text() == text
    assert git(settings.project_root, "rev-parse", "HEAD") == head


def test_uncommitted_overlay_edit_is_refused(checkout, settings):
    overlay = desired_state.overlay_file(settings, "production")
    overlay.write_text(overlay.read_text() + "# an edit in progress\n")
    attempt(settings, r"deploy/overlays/production has uncommitted changes.*"
                      r"M deploy/overlays/production/kustomization.yaml.*Commit or discard")


def test_detached_head_is_refused(checkout, settings):
    git(checkout, "checkout", "-q", "--detach")
    attempt(settings, r"detached HEAD.*`git switch main`")


def test_stale_index_lock_is_refused(checkout, settings):
    (checkout / ".git" / "index.lock").touch()
    attempt(settings, r"\.git/index\.lock exists.*delete .*\.git/index\.lock")


def test_clean_checkout_commits_and_says_so(checkout, settings, capsys):
    """The commit lands on the user's branch: never silently."""
    git(checkout, "switch", "-q", "-c", "trial")
    commit_id = commit_production(settings, release(settings), "Promote version 3")
    assert commit_id == git(checkout, "rev-parse", "HEAD")
    assert desired_state.read(settings, "production").model_version == "3"
    assert f'committed {commit_id[:12]} "Promote version 3" on branch trial' in \
        capsys.readouterr().out


def test_a_commit_refused_by_a_hook_leaves_the_overlay_as_committed(checkout, settings):
    """The overlay was rewritten before the commit: it is restored and unstaged, so a
    later `deploy` runs what git names, not the version whose commit failed."""
    hook = checkout / ".git" / "hooks" / "pre-commit"
    hook.write_text("#!/bin/sh\necho 'lint failed' >&2\nexit 1\n")
    hook.chmod(0o755)
    attempt(settings, "lint failed")
    assert git(checkout, "status", "--porcelain") == ""
    assert desired_state.read(settings, "production").model_version == \
        desired_state.UNSET_VERSION
