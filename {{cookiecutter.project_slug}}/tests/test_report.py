"""A stage's markdown document, shown where each CI system shows a run's summary."""
from ml_service import report

DOCUMENT = "### Gate report: PASSED\n\n| metric | challenger |\n|---|---|\n| RMSE | 53.4 |\n"


def document(tmp_path):
    path = tmp_path / "build" / "reports" / "gate-report.md"
    path.parent.mkdir(parents=True)
    path.write_text(DOCUMENT)
    return path


def test_github_appends_the_document_to_the_job_summary(tmp_path, capsys):
    summary = tmp_path / "step_summary"
    summary.write_text("### evaluate\n\ngate PASSED\n\n")
    path = document(tmp_path)
    report.publish_document("evaluate", path, environ={"GITHUB_STEP_SUMMARY": str(summary)})
    assert summary.read_text() == f"### evaluate\n\ngate PASSED\n\n{DOCUMENT}\n"
    assert capsys.readouterr().out == f"evaluate: report {path}\n"


def test_azure_pipelines_uploads_the_file_by_its_absolute_path(tmp_path, capsys,
                                                               monkeypatch):
    path = document(tmp_path)
    monkeypatch.chdir(tmp_path)
    report.publish_document("evaluate", path.relative_to(tmp_path), environ={"TF_BUILD": "True"})
    assert capsys.readouterr().out.splitlines() == [
        f"evaluate: report {path}", f"##vso[task.uploadsummary]{path}"]


def test_outside_ci_only_the_path_is_printed(tmp_path, capsys):
    path = document(tmp_path)
    report.publish_document("evaluate", path, environ={})
    assert capsys.readouterr().out == f"evaluate: report {path}\n"
