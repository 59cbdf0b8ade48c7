import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]


def write_notebook(path: Path, parameters: str, *cells: str, needs: list | None = None) -> Path:
    """A minimal notebook: a tagged parameters cell, then code cells."""
    def code(source, tags=()):
        return {"cell_type": "code", "metadata": {"tags": list(tags)}, "source": source, "outputs": [], "execution_count": None}

    content = {
        "cells": [code(parameters, ["parameters"])] + [code(cell) for cell in cells],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}, "language_info": {"name": "python"}, **({"mlsp": {"needs": needs}} if needs is not None else {})},
        "nbformat": 4,
        "nbformat_minor": 4,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))
    return path


@pytest.fixture
def tiny_project(tmp_path):
    """Three tiny notebooks that append their name to a log, and a profile for them."""
    notebooks, params, results = tmp_path / "notebooks", tmp_path / "params", tmp_path / "results"
    log = tmp_path / "order.log"
    for number, name in (("00", "first"), ("01", "second"), ("02", "third")):
        write_notebook(
            notebooks / f"{number}_{name}.ipynb",
            f'profile = "x"\nlabel = "{name}"\nrepeat = 1\nrate = 0.5',
            f"open({str(log)!r}, 'a').write(label * repeat + '\\n')",
        )
    (params / "tiny").mkdir(parents=True)
    (params / "tiny" / "common.yaml").write_text("profile: tiny\nrate: 1\n")
    (params / "tiny" / "01_second.yaml").write_text("repeat: 2\n")
    return {"notebooks": notebooks, "params": params, "results": results, "log": log}
