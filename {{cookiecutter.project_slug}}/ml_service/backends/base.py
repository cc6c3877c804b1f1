"""What every backend is: the Backend interface, and the results both publish alike.

Both backends publish the gate's decision and a rejected registration through the
functions below, so the evaluate and register stages say the same words (and hand
CI the same outputs) wherever training ran.
"""
from pathlib import Path
from typing import Protocol

from ml_service import report
from training import gate

# Where the evaluate stage writes the gate report (build/ is git-ignored), so CI can
# attach the file to the run's summary; the same report is an artifact of the MLflow run.
GATE_REPORT = Path("build") / "reports" / "gate-report.md"


class Backend(Protocol):
    def train(self, dry_run: bool = False) -> str | None:
        """Start a new pipeline run and publish its id (run_id); return it. With dry_run a
        backend that would send something (Azure ML) prints its plan instead and returns
        None; a local run sends nothing anywhere, so it trains."""

    def evaluate(self, run_id: str | None = None) -> gate.GateDecision:
        """Publish the gate's decision on pipeline run `run_id` (default: the newest)."""

    def register(self, run_id: str | None = None) -> str | None:
        """Publish the model version the run registered, or why none; return it or None."""

    def train_gate_register(self, dry_run: bool = False) -> str | None:
        """Train, gate and register in one go; return the new version or None. With
        dry_run, only print the plan of what would be sent (nothing for a local run)."""


def publish_gate(settings, run_id, decision, gate_report):
    """The evaluate stage's result, wherever the gate ran: the decision, and the gate
    report's markdown (None: the run has none) written to GATE_REPORT and shown in CI."""
    report.publish("evaluate", decision.summary,
                   {"run_id": run_id, "gate": decision.verdict, "gate_reason": decision.reason})
    if gate_report is None:
        print(f"evaluate: {run_id} has no gate report (it ran before the gate wrote one)")
        return
    path = settings.project_root / GATE_REPORT
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(gate_report)
    report.publish_document("evaluate", path)


def publish_rejection(subject, reason):
    """The register stage's result when the gate kept `subject` out of the registry."""
    report.publish("register", gate.skipped_registration(subject, reason),
                   {"model_version": None})
