"""Data files for the tests of [data] source: the bundled sample, written as CSV or
Parquet, whole or with a change."""
from pathlib import Path

from training.data import sample_table

WRITERS = {".csv": lambda frame, path: frame.to_csv(path, index=False),
           ".parquet": lambda frame, path: frame.to_parquet(path, index=False)}


def write_table(path, rows=None, change=None):
    """Write the sample's first `rows` rows (all by default) to `path` (.csv or .parquet),
    after `change(frame)` if given; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = sample_table().head(rows) if rows else sample_table()
    if change:
        frame = change(frame.copy())
    WRITERS[path.suffix](frame, path)
    return path
