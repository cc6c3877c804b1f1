"""Model code, with no knowledge of Azure or of the CLI (nothing here imports ml_service).

data.py and model.py are plain functions (pandas, scikit-learn); gate.py (the
champion/challenger gate) and lineage.py (how a model is saved and registered) add
MLflow. The local stages and components/, the Azure ML pipeline steps, both call them.
"""
