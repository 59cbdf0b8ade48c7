"""benchmarks/extraction.py: every comparison is a named `ratio <what>: <value>` line, and its
recorded run holds one for each comparison. (That batched features equal one image at a time is
tests/test_extract.py's.)"""
import importlib.util
import re
import sys

import pytest

from conftest import REPO

RATIO = re.compile(r"ratio ([^:]+): (-?[0-9.]+(?:e[+-]?[0-9]+)?)")
RECORDED = REPO / "benchmarks" / "measured" / "extraction.log"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("extraction_benchmark", REPO / "benchmarks" / "extraction.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["extraction_benchmark"] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules["extraction_benchmark"]


def test_ratio_line_parses_back_and_refuses_a_nameless_ratio(bench):
    line = bench.ratio_line("batched / single, full resolution, equal sizes, 8 images per pass, images/s", 0.8694)
    assert RATIO.fullmatch(line).groups() == ("batched / single, full resolution, equal sizes, 8 images per pass, images/s", "0.869")
    for nameless in ("", "  ", "peak: memory"):
        with pytest.raises(ValueError, match="a ratio needs a name"):
            bench.ratio_line(nameless, 1.0)


def test_recorded_run_has_a_named_ratio_for_every_comparison():
    lines = [line for line in RECORDED.read_text().splitlines() if line.startswith("ratio")]
    names = [RATIO.fullmatch(line).group(1) for line in lines]  # a line that does not parse fails here
    assert len(set(names)) == len(names)
    for comparison in ("kit extractor / naive per-crop loop", "batched / single, rescaled", "batched / single, full resolution, equal sizes", "peak memory"):
        assert any(name.startswith(comparison) for name in names), comparison
