"""The README's results section is generated from results/demo and must agree with it."""
import json

import pytest

from conftest import REPO
from mlsp import report


def test_readme_agrees_with_results_demo():
    assert (REPO / "results" / "demo" / "table3.json").exists(), "results/demo is committed with the demo's results"
    assert not report.update_readme("demo", check_only=True), "README.md disagrees with results/demo: run `mlsp readme --profile demo`"


def test_section_changes_when_results_change(tmp_path):
    results = tmp_path / "results"
    (results / "p").mkdir(parents=True)
    record = {"key": "resolution", "metrics": {"pixels_mos_srcc": 0.5, "network_accuracy": 70.0, "majority_accuracy": 60.0}}
    (results / "p" / "resolution.json").write_text(json.dumps(record))
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.BEGIN}\nold\n{report.END}\nend\n")
    assert report.update_readme("p", readme=readme, results_root=results)
    text = readme.read_text()
    assert "SRCC(pixels, MOS) 0.500 (paper 0.188)" in text and text.startswith("intro") and text.endswith("end\n")
    assert not report.update_readme("p", check_only=True, readme=readme, results_root=results)
    with pytest.raises(ValueError, match="markers"):
        (tmp_path / "plain.md").write_text("no markers")
        report.update_readme("p", readme=tmp_path / "plain.md", results_root=results)
