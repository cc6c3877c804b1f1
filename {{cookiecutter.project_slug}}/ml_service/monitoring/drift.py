"""Drift: has recent traffic moved away from the training data of the served version?

One two-sample Kolmogorov-Smirnov test (scipy) per feature and one on the predictions:
KS needs no binning or distribution assumption and suits continuous features, and scipy
comes with scikit-learn already (evidently would add a large dependency tree to compute
the same test). Several tests at once would raise false alarms more often than one, so
each test's threshold is the configured p-value divided by the number of tests
(Bonferroni): traffic without drift is flagged in at most a p_value share of the checks.
"""
import dataclasses

from scipy import stats

from ml_service.errors import MlopsError


@dataclasses.dataclass(frozen=True)
class ColumnTest:
    column: str
    statistic: float
    p_value: float
    drifted: bool


@dataclasses.dataclass(frozen=True)
class DriftResult:
    tests: tuple
    threshold: float      # per test, after the Bonferroni correction
    reference_rows: int
    recent_rows: int

    @property
    def drifted_columns(self):
        return [test.column for test in self.tests if test.drifted]

    @property
    def drifted(self):
        return bool(self.drifted_columns)


def compare(reference, recent, columns, p_value):
    """Test each of `columns` of `recent` against `reference` (DataFrames)."""
    missing = [column for column in columns if column not in recent.columns]
    if missing:
        raise MlopsError(f"The prediction records have no column(s) {', '.join(missing)}, which "
                         "the served version was trained on.",
                         "Check that the records come from this version's scoring servers.")
    threshold = p_value / len(columns)
    tests = []
    for column in columns:
        result = stats.ks_2samp(reference[column].astype(float), recent[column].astype(float))
        tests.append(ColumnTest(column, float(result.statistic), float(result.pvalue),
                                bool(result.pvalue < threshold)))
    return DriftResult(tuple(tests), threshold, len(reference), len(recent))
