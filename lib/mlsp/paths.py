"""Where things live: the repository root and the per-profile folders."""
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
PARAMS_DIR = REPO_ROOT / "params"
RESULTS_DIR = REPO_ROOT / "results"


def resolve(path) -> Path:
    """Parameter paths are relative to the repository root, wherever the notebook runs."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path
