"""The results contract's record of how a profile differs from the paper's settings."""
import shutil

from conftest import REPO
from mlsp import results
from mlsp.parameters import declared_parameters, list_notebooks, resolve_profile

# The rehearsal's three stated differences (params/rehearsal/common.yaml): the data, the weights, the epochs.
REHEARSAL_DIFFERENCES = {
    "00_data": {"generate_embedded", "embedded_images", "embedded_shape"},
    "01_extract_features": {"weights"},
    "02_table2_rescaled": {"weights", "max_epochs", "finetune_max_epochs"},
    "03_table3_full_resolution": {"max_epochs"},
    "04_fig7_block_ablation": {"max_epochs"},
    "05_resolution_baseline": {"epochs"},
}


def _parameters(profile, stem):
    notebook = next(nb for nb in list_notebooks() if nb.stem == stem)
    return {**declared_parameters(notebook.path), **resolve_profile(profile, [notebook])[stem]}


def test_rehearsal_differs_from_the_paper_only_in_data_weights_and_epochs():
    found = results.differences_from_paper("rehearsal", "03_table3_full_resolution", _parameters("rehearsal", "03_table3_full_resolution"))
    assert {stem: set(names) for stem, names in found.items()} == REHEARSAL_DIFFERENCES
    assert found["01_extract_features"]["weights"] == {"paper": "imagenet", "here": "random"}


def test_the_paper_profile_differs_from_nothing():
    assert results.differences_from_paper("paper", "02_table2_rescaled", {"max_epochs": 1}) == {}


def test_the_run_s_own_values_count_for_its_notebook():
    parameters = {**_parameters("rehearsal", "04_fig7_block_ablation"), "batch_size": 64}  # as `--set batch_size=64` gives
    found = results.differences_from_paper("rehearsal", "04_fig7_block_ablation", parameters)
    assert found["04_fig7_block_ablation"]["batch_size"] == {"paper": 128, "here": 64}


def test_an_unreadable_profile_is_reported_not_raised(tmp_path):
    params = tmp_path / "params"
    shutil.copytree(REPO / "params" / "paper", params / "paper")
    shutil.copytree(REPO / "params" / "rehearsal", params / "rehearsal")
    (params / "paper" / "02_table2_rescaled.yaml").write_text("max_epochs: many\n")
    found = results.differences_from_paper("rehearsal", "02_table2_rescaled", {}, params_dir=params)
    assert set(found) == {"unknown"} and "max_epochs" in found["unknown"]


def test_every_result_json_records_the_differences(tmp_path):
    run = results.Run("rehearsal", "03_table3_full_resolution", {"max_epochs": 2, "in_memory": False, "seed": 0}, results_root=tmp_path)
    record = __import__("json").loads(run.save_metrics("table3", {"srcc": 0.5}).read_text())
    assert record["differs_from_paper"]["01_extract_features"]["weights"]["here"] == "random"
