"""Loading and splitting the training data.

Replace `load_dataset` with your own data source; everything downstream only
needs a feature DataFrame and a target Series.
"""
import hashlib

import pandas as pd
from sklearn.datasets import load_diabetes
from sklearn.model_selection import train_test_split


def load_dataset():
    """Return (features, target): scikit-learn's bundled diabetes data set."""
    bunch = load_diabetes(as_frame=True)
    return bunch.data, bunch.target.rename("target")


def split_dataset(features, target, test_size, random_seed):
    """Seeded split, so every model is scored on the same held-out rows."""
    return train_test_split(features, target, test_size=test_size, random_state=random_seed)


def fingerprint(features, target):
    """SHA-256 of the data's values and column names: identifies the data a model saw."""
    frame = pd.concat([features, target], axis=1)
    digest = hashlib.sha256()
    digest.update(",".join(map(str, frame.columns)).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=True).values.tobytes())
    return digest.hexdigest()
