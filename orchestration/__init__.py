"""orchestration: Hydra configs, the ablate/report entries, Ray Tune trials and MLflow tracking.

Wires `datasets` and `trm_core` together; holds no model or data logic of its own.
"""
