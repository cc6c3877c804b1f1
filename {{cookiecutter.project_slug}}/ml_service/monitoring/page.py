"""The HTML drift report: a table of the tests and, per column, the histograms of the
reference and the recent values (PNG images embedded, so the page is one file)."""
import base64
import html
import io

import matplotlib

matplotlib.use("Agg")  # no display in CI or on servers
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402


STYLE = ("body {font-family: sans-serif; margin: 2em} table {border-collapse: collapse} "
         "td, th {border: 1px solid #ccc; padding: 4px 8px} "
         "figure {display: inline-block; margin: 8px} "
         # The verdicts in colour, so a drifted feature stands out at a glance.
         ".drift {background: #f8d7da; color: #842029; font-weight: bold} "
         ".no-drift {background: #d1e7dd; color: #0f5132}")


def _histogram(reference, recent, title):
    figure, axes = plt.subplots(figsize=(5, 3))
    try:
        values = np.concatenate([reference, recent])
        bins = np.histogram_bin_edges(values, bins=30)
        axes.hist(reference, bins=bins, density=True, alpha=0.5, label="training sample")
        axes.hist(recent, bins=bins, density=True, alpha=0.5, label="recent traffic")
        axes.set_title(title)
        axes.legend()
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=80)
    finally:
        plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


def render(title, summary, result, reference, recent, window=""):
    """The report page for a drift.DriftResult of `recent` against `reference`; drifted
    columns first (smallest p-value first), `window` says which records were compared."""
    rows, plots = [], []
    for test in sorted(result.tests, key=lambda test: (not test.drifted, test.p_value)):
        name = html.escape(test.column)
        verdict = "drift" if test.drifted else "no drift"
        css = verdict.replace(" ", "-")
        rows.append(f'<tr class="{css}"><td>{name}</td><td>{test.statistic:.4f}</td>'
                    f'<td>{test.p_value:.3g}</td><td class="{css}">{verdict}</td></tr>')
        image = _histogram(reference[test.column].to_numpy(float),
                           recent[test.column].to_numpy(float),
                           f"{test.column}: {verdict} (p={test.p_value:.3g})")
        plots.append(f'<figure><img alt="{name}" src="data:image/png;base64,{image}">'
                     f"<figcaption>{name}</figcaption></figure>")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{STYLE}</style></head><body>
<h1>{html.escape(title)}</h1>
<p class="{'drift' if result.drifted else 'no-drift'}">{html.escape(summary)}</p>
<p>{html.escape(window)}</p>
<p>Two-sample Kolmogorov-Smirnov tests of {result.recent_rows} recent rows against
{result.reference_rows} rows of the training sample; drift where p &lt;
{result.threshold:.3g} (the configured p-value over {len(result.tests)} tests).</p>
<table><tr><th>column</th><th>KS statistic</th><th>p-value</th><th>verdict</th></tr>
{''.join(rows)}
</table>
{''.join(plots)}
</body></html>
"""
