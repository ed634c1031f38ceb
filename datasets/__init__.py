"""datasets: sources, augmentations, token layouts, storage and loaders for TRM's tasks.

Not the Hugging Face library of the same name (never install that into this environment).
Imports nothing from ray, mlflow or trm_core: orchestration wires data and model together.
"""
