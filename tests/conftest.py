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


# The two longest tests (the rehearsal, ~15 min, and the smoke profile, ~5 min) go to opposite ends
# of the run: `make test` runs two workers with work stealing (pytest -n 2 --dist worksteal), which
# hands the first half of the list to one worker and the second to the other, so each long test
# starts its worker's share and the other tests fill the other core. A plain serial run is unaffected
# in what it runs.
FIRST, LAST = "tests/test_rehearsal_profile.py", "tests/test_smoke_profile.py"


def pytest_collection_modifyitems(session, config, items):
    items.sort(key=lambda item: 0 if item.nodeid.startswith(FIRST) else 2 if item.nodeid.startswith(LAST) else 1)


def pytest_configure(config):
    """With several workers, convert Lite0's ImageNet weights once, here, before any worker starts:
    two workers converting at the same moment would write the same partial cache file."""
    workers = getattr(config.option, "numprocesses", None)
    if workers and not hasattr(config, "workerinput"):
        from mlsp import efficientnet_lite

        efficientnet_lite.imagenet_weights_file()


HANG_SECONDS = 30  # far above any one test's reading of a few small files


@pytest.fixture
def no_hang():
    """Fails a test that blocks for HANG_SECONDS instead of hanging the run (a FIFO's open() waits
    forever for a writer). Call it with each FIFO the test makes: on time-out its reader is released
    (opened for writing and closed), so that a worker thread blocked on it can finish too."""
    import signal

    fifos = []

    def expire(signum, frame):
        for fifo in fifos:
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:  # no reader waiting on it (ENXIO): nothing to release
                pass
        pytest.fail(f"blocked for {HANG_SECONDS} s (opened a FIFO or a device?)", pytrace=False)

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(HANG_SECONDS)
    try:
        yield fifos.append
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)

