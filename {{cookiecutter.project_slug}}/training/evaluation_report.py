"""The gate's evaluation as people look at it: plots and a short markdown report.

`log` draws the plots and writes the report into the active MLflow run (the evaluate
stage's run locally, the evaluate step's run in Azure ML), and returns the report:
the local `evaluate` stage and the Azure ML step both call it, so a pipeline run
carries the same pictures wherever the model was trained.

    plots/predicted_vs_actual.png     each model's predictions against the actual values
    plots/residuals.png               each model's errors against its predictions
    plots/champion_vs_challenger.png  per-row absolute errors of both models on the same
                                      rows (only when a champion is in production)
    gate_report.md                    decision, metrics with deltas, thresholds, where to look

Matplotlib is used through its object API (Figure, rendered by Agg when saved as PNG):
no pyplot, so no global backend and no display are needed, in CI or on a cluster node.
"""
import tempfile
from pathlib import Path

import mlflow

from training.model import prediction_metrics

PLOTS_FOLDER = "plots"
PREDICTED_VS_ACTUAL = "predicted_vs_actual.png"
RESIDUALS = "residuals.png"
CHAMPION_VS_CHALLENGER = "champion_vs_challenger.png"
REPORT_FILE = "gate_report.md"

# Lower is better for the errors, higher for R2: what "better" means in the report.
METRICS = (("rmse", "RMSE", -1), ("mae", "MAE", -1), ("r2", "R2", +1))
CHALLENGER_COLOR, CHAMPION_COLOR = "tab:blue", "tab:orange"
# Fonts large enough to read in MLflow's artifact preview without zooming.
READABLE = {"font.size": 13, "axes.titlesize": 14, "axes.labelsize": 13,
            "legend.fontsize": 11}


def log(evaluation, data_fingerprint=None):
    """Log the plots and the report of `evaluation` (training/gate.py) to the active
    MLflow run and, where people look first, the verdict to its parent run (the pipeline
    run, when there is one): the key metrics, the report and the headline plot
    (champion vs challenger, or predicted vs actual for a first model). Return the
    report's markdown."""
    run_id = mlflow.active_run().info.run_id
    parent_id = mlflow.get_run(run_id).data.tags.get("mlflow.parentRunId")
    with tempfile.TemporaryDirectory() as folder:
        plots = draw(evaluation, Path(folder))
        mlflow.log_artifacts(folder, PLOTS_FOLDER)
        markdown = render(evaluation, run_id,
                          [f"{PLOTS_FOLDER}/{path.name}" for path in plots], data_fingerprint)
        mlflow.log_text(markdown, REPORT_FILE)
        if parent_id:
            headline = next((path for path in plots if path.name == CHAMPION_VS_CHALLENGER),
                            plots[0])
            _log_verdict(mlflow.MlflowClient(), parent_id, evaluation, headline, markdown)
    return markdown


def _log_verdict(client, run_id, evaluation, headline_plot, markdown):
    """The gate's verdict on the pipeline run: metric columns in the runs table, the report
    as its description (the first thing its page shows) and the headline plot."""
    metrics = {f"challenger_{key}": value for key, value in evaluation.challenger.items()}
    if evaluation.champion is not None:
        metrics |= {f"champion_{key}": value for key, value in evaluation.champion.items()}
    metrics["gate_passed"] = int(evaluation.decision.passed)
    for name, value in metrics.items():
        client.log_metric(run_id, name, value)
    client.log_text(run_id, markdown, REPORT_FILE)
    client.set_tag(run_id, "mlflow.note.content", markdown)
    client.log_artifact(run_id, str(headline_plot), PLOTS_FOLDER)


def models(evaluation):
    """(label, predictions, color) of the challenger and, if there is one, the champion."""
    found = [("challenger", evaluation.challenger_predictions, CHALLENGER_COLOR)]
    if evaluation.champion_predictions is not None:
        found.append((f"champion (version {evaluation.champion_version})",
                      evaluation.champion_predictions, CHAMPION_COLOR))
    return found


def draw(evaluation, folder):
    """Save the plots of `evaluation` as PNG files in `folder`; return their paths."""
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    with rc_context(READABLE):
        return _draw(evaluation, folder, Figure)


def _draw(evaluation, folder, Figure):

    actual = evaluation.actual
    shown = models(evaluation)
    saved = []

    def save(figure, name):
        figure.tight_layout()
        figure.savefig(folder / name, format="png", dpi=100)
        saved.append(folder / name)

    def scored(label, predictions):
        """The panel's title: the model and its held-out RMSE and R2, readable at a glance."""
        metrics = prediction_metrics(actual, predictions)
        return f"{label}\nRMSE {metrics['rmse']:.2f}, R2 {metrics['r2']:.3f}"

    figure = Figure(figsize=(5.5 * len(shown), 5))
    axes = figure.subplots(1, len(shown), sharex=True, sharey=True, squeeze=False)[0]
    low, high = _range(actual, *(predictions for _, predictions, _ in shown))
    for ax, (label, predictions, color) in zip(axes, shown):
        ax.scatter(actual, predictions, s=14, alpha=0.7, color=color)
        ax.plot([low, high], [low, high], color="gray", linestyle="--", label="perfect")
        ax.set(title=scored(label, predictions), xlabel="actual", ylabel="predicted")
        ax.legend(loc="upper left")
    save(figure, PREDICTED_VS_ACTUAL)

    figure = Figure(figsize=(5.5 * len(shown), 4.5))
    axes = figure.subplots(1, len(shown), sharey=True, squeeze=False)[0]
    for ax, (label, predictions, color) in zip(axes, shown):
        ax.scatter(predictions, actual - predictions, s=14, alpha=0.7, color=color)
        ax.axhline(0, color="gray", linestyle="--")
        ax.set(title=scored(label, predictions), xlabel="predicted",
               ylabel="residual (actual - predicted)")
    save(figure, RESIDUALS)

    if evaluation.champion_predictions is not None:
        challenger_error = abs(actual - evaluation.challenger_predictions)
        champion_error = abs(actual - evaluation.champion_predictions)
        closer = int((challenger_error < champion_error).sum())
        figure = Figure(figsize=(5.5, 5))
        ax = figure.subplots()
        ax.scatter(champion_error, challenger_error, s=14, alpha=0.7, color=CHALLENGER_COLOR)
        low, high = _range(champion_error, challenger_error)
        ax.plot([low, high], [low, high], color="gray", linestyle="--",
                label="equal error (below: challenger closer)")
        ax.set(title=f"{evaluation.decision.verdict.upper()}: challenger closer on {closer} "
                     f"of {evaluation.rows} rows\nRMSE {evaluation.challenger['rmse']:.2f} vs "
                     f"{evaluation.champion['rmse']:.2f} (champion)",
               xlabel=f"champion (version {evaluation.champion_version}) |error|",
               ylabel="challenger |error|")
        ax.legend(loc="upper left")
        save(figure, CHAMPION_VS_CHALLENGER)
    return saved


def _range(*arrays):
    return min(float(a.min()) for a in arrays), max(float(a.max()) for a in arrays)


def render(evaluation, run_id, plot_artifacts, data_fingerprint=None):
    """The gate report in markdown: what was decided, on what numbers, where to look."""
    decision = evaluation.decision
    champion = evaluation.champion
    lines = [f"### Gate report: {decision.verdict.upper()}", "", decision.reason, ""]
    if champion is None:
        lines += ["| metric | challenger |", "|---|---|"]
        lines += [f"| {label} | {evaluation.challenger[key]:.4f} |" for key, label, _ in METRICS]
    else:
        lines += [f"| metric | challenger | champion (version {evaluation.champion_version}) "
                  "| change | challenger is |", "|---|---|---|---|---|"]
        for key, label, sign in METRICS:
            new, old = evaluation.challenger[key], champion[key]
            change = new - old
            relative = f" ({change / old:+.2%})" if old else ""
            verdict = ("the same" if change == 0
                       else "better" if change * sign > 0 else "worse")
            lines.append(f"| {label} | {new:.4f} | {old:.4f} | {change:+.4f}{relative} "
                         f"| {verdict} |")
    lines += [
        "",
        f"- Thresholds: challenger R2 at least min_r2 = {evaluation.min_r2}; RMSE improvement "
        f"over the champion at least min_improvement = {evaluation.min_improvement:.2%}",
        "- Champion: " + (f"version {evaluation.champion_version} (production's desired state)"
                          if champion is not None else evaluation.schema_change
                          or "none, nothing is in production yet"),
        f"- Rows scored: {evaluation.rows} held-out rows"
        + (", the same for both models" if champion is not None else ""),
    ]
    if data_fingerprint:
        lines.append(f"- Data fingerprint: `{data_fingerprint}`")
    lines.append(f"- MLflow run `{run_id}`: plots " + ", ".join(
        f"`{name}`" for name in plot_artifacts) + f"; this report `{REPORT_FILE}`")
    return "\n".join(lines) + "\n"
