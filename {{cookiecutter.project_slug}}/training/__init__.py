"""Model code. data.py and model.py are plain functions with no knowledge of MLflow,
Azure or the CLI; components/ wraps them as Azure ML pipeline steps."""
