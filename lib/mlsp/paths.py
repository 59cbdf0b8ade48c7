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


def portable(path) -> str:
    """The inverse of `resolve`, for paths written into files: inside the repository, relative to its
    root (so a moved or re-cloned checkout still finds them); elsewhere, absolute."""
    path = Path(path).expanduser().absolute()  # not .resolve(): keep a symbolic link as the user named it
    try:
        return path.relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return str(path)
