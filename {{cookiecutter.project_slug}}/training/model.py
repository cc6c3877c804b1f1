"""Training and scoring the regressor."""
import numpy as np
from sklearn.linear_model import Ridge
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score


def train_model(features, target, alpha):
    """Fit a Ridge regressor."""
    return Ridge(alpha=alpha).fit(features, target)


def regression_metrics(model, features, target):
    """RMSE, MAE and R2 of `model` on the given rows."""
    return prediction_metrics(target, model.predict(features))


def prediction_metrics(target, predicted):
    """RMSE, MAE and R2 of `predicted` against the actual `target` values."""
    return {
        "rmse": float(np.sqrt(mean_squared_error(target, predicted))),
        "mae": float(mean_absolute_error(target, predicted)),
        "r2": float(r2_score(target, predicted)),
    }
