"""trm_core stays pure PyTorch: importing it pulls in none of ray, mlflow, hydra, boto3 or the
project's `datasets` package (ARCHITECTURE.md, "must not")."""

import subprocess
import sys

FORBIDDEN = ("ray", "mlflow", "hydra", "boto3", "datasets", "optuna", "pyarrow")


def test_trm_core_imports_no_orchestration_or_data_packages():
    code = (
        "import sys, trm_core, trm_core.trainer, trm_core.flops; "
        f"print([m for m in {FORBIDDEN!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_datasets_package_does_not_import_trm_core():
    code = (
        "import sys, datasets.loader, datasets.tiny_sudoku; "
        "print([m for m in ('trm_core', 'ray', 'mlflow') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
