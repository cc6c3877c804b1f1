"""Model code: plain functions with no knowledge of MLflow, Azure or the CLI."""
