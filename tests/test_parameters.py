"""Parameter values are checked before any notebook starts: types, null/NaN/empty, ranges, relations
and every enumerated name, each refusal one line naming the file (or --set) and the key."""
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, write_notebook
from mlsp import cli, parameter_rules
from mlsp.parameter_rules import RULES, Context
from mlsp.parameters import ParameterError, check_value, declared_parameters, list_notebooks, parse_overrides, resolve_profile
from mlsp.paths import NOTEBOOKS_DIR, PARAMS_DIR

# (key, the demo profile's file that sets it, value as YAML text, what the message says besides the key)
REFUSED = [
    # the tester's list
    ("weights", "01_extract_features.yaml", "null", "got null"),
    ("ava_dir", "common.yaml", "''", "non-empty folder path, got ''"),
    ("learning_rate", "02_table2_rescaled.yaml", ".nan", "finite number > 0, got nan"),
    ("seed", "common.yaml", "-1", "whole number >= 0 and <= 4294967295, got -1"),
    ("seed", "common.yaml", "4294967296", "whole number >= 0 and <= 4294967295, got 4294967296"),  # keras.utils.set_random_seed's limit
    ("max_epochs", "03_table3_full_resolution.yaml", "1e3", "digits only"),
    ("weights", "02_table2_rescaled.yaml", "lib", "is a folder"),
    ("embedded_images", "00_data.yaml", "0", "whole number >= 1, got 0"),
    ("validation_fraction", "00_data.yaml", "1.5", "number in (0, 1), got 1.5"),
    ("num_shards", "01_extract_features.yaml", "0", "whole number >= 1, got 0"),
    ("max_epochs", "03_table3_full_resolution.yaml", "0", "whole number >= 1, got 0"),
    ("backbones", "01_extract_features.yaml", "[nope]", "not a backbone: 'nope'"),
    ("passes", "01_extract_features.yaml", "{orignal: [narrow]}", "'orignal' is not an input mode"),
    # neighbours of the same kinds
    ("learning_rate", "03_table3_full_resolution.yaml", "-1e-4", "finite number > 0, got -0.0001"),
    ("learning_rate", "04_fig7_block_ablation.yaml", "nan", "finite number > 0, got nan"),
    ("finetune_learning_rate", "02_table2_rescaled.yaml", ".inf", "finite number > 0, got inf"),
    ("learning_rate", "05_resolution_baseline.yaml", "0", "finite number > 0, got 0"),
    ("patience", "02_table2_rescaled.yaml", "0", "whole number >= 1, got 0"),
    ("workers", "01_extract_features.yaml", "0", "whole number >= 1, got 0"),
    ("test_crops", "02_table2_rescaled.yaml", "0", "whole number >= 1, got 0"),
    ("batch_size", "04_fig7_block_ablation.yaml", "0", "whole number >= 1, got 0"),
    ("epochs", "05_resolution_baseline.yaml", "0", "whole number >= 1, got 0"),
    ("grid_count", "06_failure_cases.yaml", "0", "whole number >= 1, got 0"),
    ("top_fraction", "06_failure_cases.yaml", "0", "number in (0, 1], got 0"),
    ("validation_fraction", "00_data.yaml", "0", "number in (0, 1), got 0"),
    ("validation_fraction", "00_data.yaml", "1", "number in (0, 1), got 1"),
    ("passes", "01_extract_features.yaml", "{original: []}", "original: an empty list"),
    ("passes", "01_extract_features.yaml", "{original: [wid]}", "original: not a feature kind: 'wid'"),
    ("passes", "01_extract_features.yaml", "{}", "got {}"),
    ("passes", "01_extract_features.yaml", "[original]", "got list ['original']"),
    ("augmentation", "01_extract_features.yaml", "[]", "true/false values, e.g. [true, false], got []"),
    ("augmentation", "01_extract_features.yaml", "[true, 1]", "not true or false: 1"),
    ("finetune_rows", "02_table2_rescaled.yaml", "[nope]", "not a Table 2 fine-tuning row: 'nope'"),
    ("finetune_rows", "02_table2_rescaled.yaml", "[]", "finetune: false skips fine-tuning, got []"),
    ("input_mode", "04_fig7_block_ablation.yaml", "orignal", "one of the input modes: original, rescaled, got 'orignal'"),
    ("backbone", "02_table2_rescaled.yaml", "nope", "one of the backbones: inception_v3, inception_resnet_v2, efficientnet_lite0, got 'nope'"),
    ("backbones", "03_table3_full_resolution.yaml", "inception_v3", "got str 'inception_v3'"),
    ("backbones", "03_table3_full_resolution.yaml", "[]", "got []"),
    ("backbones", "01_extract_features.yaml", "[inception_v3, inception_v3]", "given twice: 'inception_v3'"),
    ("block_counts", "04_fig7_block_ablation.yaml", "[0, 3]", "not allowed: 0"),
    ("block_counts", "04_fig7_block_ablation.yaml", "[3, 3]", "given twice: 3"),
    ("embedded_images", "00_data.yaml", "true", "got bool True"),
    ("max_epochs", "02_table2_rescaled.yaml", "10.0", "whole number >= 1, got 10.0"),
    ("seed", "common.yaml", "1.5", "got 1.5"),
    ("verify_images", "00_data.yaml", "1", "true or false, got int 1"),
    ("work_dir", "common.yaml", "null", "non-empty folder path, got null"),
    ("weights", "02_table2_rescaled.yaml", "no/such/file.h5", f"no such file: {REPO / 'no/such/file.h5'}"),
    ("profile", "common.yaml", "smoke", "should be 'demo', the profile folder's name"),
]


def refusal(run) -> str:
    with pytest.raises(ParameterError) as refused:
        run()
    message = str(refused.value)
    assert "\n" not in message
    return message


def demo_copy(tmp_path):
    """The demo profile's files in a temporary params folder, for the real notebooks."""
    params = tmp_path / "params"
    shutil.copytree(PARAMS_DIR / "demo", params / "demo")
    return params


def set_in_file(path, key: str, text: str) -> None:
    kept = [line for line in (path.read_text().splitlines() if path.exists() else []) if not line.startswith(f"{key}:")]
    path.write_text("\n".join(kept + [f"{key}: {text}"]) + "\n")


@pytest.mark.parametrize("key, file, text, expected", REFUSED)
def test_a_refused_override_names_set_and_the_key(key, file, text, expected):
    message = refusal(lambda: resolve_profile("demo", list_notebooks(), overrides=parse_overrides([f"{key}={text}"])))
    assert message.startswith(f"--set: key '{key}' ")
    assert expected in message


@pytest.mark.parametrize("key, file, text, expected", REFUSED)
def test_a_refused_value_in_a_profile_file_names_the_file_and_the_key(tmp_path, key, file, text, expected):
    params = demo_copy(tmp_path)
    set_in_file(params / "demo" / file, key, text)
    message = refusal(lambda: resolve_profile("demo", list_notebooks(), params))
    assert message.startswith(f"{params / 'demo' / file}: key '{key}' ")
    assert expected in message


@pytest.mark.parametrize(
    "key, text, expected",
    [
        ("learning_rate", "1e-4", 1e-4),  # YAML 1.1 reads these three as strings
        ("learning_rate", "1E-4", 1e-4),
        ("learning_rate", "+1e-4", 1e-4),
        ("learning_rate", "1.0e-4", 1e-4),
        ("learning_rate", "1", 1),
        ("seed", "0", 0),
        ("max_epochs", "1", 1),
        ("block_counts", "[]", []),  # the notebook's comment: empty means every k
        ("block_counts", "[1, 16]", [1, 16]),
        ("weights", "random", "random"),
        ("passes", "{rescaled: [wide]}", {"rescaled": ["wide"]}),
        ("augmentation", "[false]", [False]),
        ("top_fraction", "1", 1),  # all test images
        ("finetune_rows", "['Single-3FC (+do)']", ["Single-3FC (+do)"]),
        ("backbones", "[inception_resnet_v2, efficientnet_lite0]", ["inception_resnet_v2", "efficientnet_lite0"]),
    ],
)
def test_allowed_values_reach_the_notebooks_as_their_types(key, text, expected):
    resolved = resolve_profile("demo", list_notebooks(), overrides=parse_overrides([f"{key}={text}"]))
    given = [params[key] for params in resolved.values() if key in params]
    assert given and all(value == expected and type(value) is type(expected) for value in given)


def test_a_float_written_without_a_dot_in_a_file_is_read_as_a_float(tmp_path):
    params = demo_copy(tmp_path)
    set_in_file(params / "demo" / "02_table2_rescaled.yaml", "learning_rate", "1e-3")
    resolved = resolve_profile("demo", list_notebooks(), params)
    assert resolved["02_table2_rescaled"]["learning_rate"] == 1e-3
    assert isinstance(resolved["02_table2_rescaled"]["learning_rate"], float)


def test_every_parameter_of_every_notebook_has_a_rule_its_default_passes():
    context = Context("demo")
    for notebook in list_notebooks(NOTEBOOKS_DIR):
        declared = declared_parameters(notebook.path)
        missing = sorted(set(declared) - set(RULES))
        assert not missing, f"{notebook.path.name}: no rule in mlsp.parameter_rules.RULES for {', '.join(missing)}"
        for key, default in declared.items():
            assert check_value(notebook.path.name, key, declared, default, context) == default


@pytest.mark.parametrize(
    "key, default, refused",
    [("apply_exif_orientation", False, 1), ("retry_failed", False, "yes"), ("min_side", 32, 0)],
)
def test_parameters_on_their_way_into_notebooks_already_have_rules(key, default, refused):
    declared = {key: default}
    assert check_value("x.yaml", key, declared, default, Context("demo")) == default
    with pytest.raises(ParameterError, match=rf"^x.yaml: key '{key}' should be"):
        check_value("x.yaml", key, declared, refused, Context("demo"))


@pytest.mark.parametrize(
    "overrides, file_values, blamed",
    [
        (["shard_index=1"], {}, "--set: key 'shard_index' should be < num_shards (1, from "),
        (["shard_index=4", "num_shards=4"], {}, "--set: key 'shard_index' should be < num_shards (4, from --set), got 4"),
        (["shard_index=5"], {"num_shards": "4"}, "--set: key 'shard_index' should be < num_shards (4, from "),
        (["num_shards=2"], {"shard_index": "3"}, "--set: key 'num_shards' should be > shard_index (3, from "),
        ([], {"shard_index": "2", "num_shards": "2"}, "01_extract_features.yaml: key 'shard_index' should be < num_shards (2, "),
        (["embedded_min_side=900"], {}, "--set: key 'embedded_min_side' should be <= embedded_max_side (512, from "),
    ],
)
def test_a_broken_relation_blames_the_value_applied_last(tmp_path, overrides, file_values, blamed):
    params = demo_copy(tmp_path)
    for key, text in file_values.items():
        set_in_file(params / "demo" / "01_extract_features.yaml", key, text)
    message = refusal(lambda: resolve_profile("demo", list_notebooks(), params, parse_overrides(overrides)))
    assert blamed in message


def test_shards_within_their_count_pass():
    resolved = resolve_profile("demo", list_notebooks(), overrides=parse_overrides(["shard_index=15", "num_shards=16"]))
    assert resolved["01_extract_features"]["shard_index"] == 15


def test_the_profile_key_must_be_set_in_common_yaml(tmp_path):
    params = demo_copy(tmp_path)
    common = params / "demo" / "common.yaml"
    common.write_text("\n".join(line for line in common.read_text().splitlines() if not line.startswith("profile:")) + "\n")
    message = refusal(lambda: resolve_profile("demo", list_notebooks(), params))
    assert message.startswith(f"{common}: key 'profile' is missing (should be 'demo'")


def test_a_weights_file_that_exists_is_accepted(tmp_path):
    weights = tmp_path / "backbone.weights.h5"
    weights.write_bytes(b"")
    resolved = resolve_profile("demo", list_notebooks(), overrides=parse_overrides([f"weights={weights}"]))
    assert resolved["01_extract_features"]["weights"] == str(weights)


def test_a_bad_notebook_default_names_the_notebook(tmp_path):
    notebooks, params = tmp_path / "notebooks", tmp_path / "params"
    write_notebook(notebooks / "00_only.ipynb", 'profile = "x"\nseed = -3')
    (params / "p").mkdir(parents=True)
    (params / "p" / "common.yaml").write_text("profile: p\n")
    message = refusal(lambda: resolve_profile("p", list_notebooks(notebooks), params))
    assert message.startswith(f"{notebooks / '00_only.ipynb'} (parameters cell): key 'seed' should be a whole number >= 0 and <= 4294967295, got -3")


def test_parameters_without_a_rule_are_still_checked_for_type_and_finiteness(tiny_project):
    def resolve(*pairs):
        return resolve_profile("tiny", list_notebooks(tiny_project["notebooks"]), tiny_project["params"], parse_overrides(list(pairs)))

    assert "rate" not in RULES and "repeat" not in RULES
    assert resolve("rate=2e-3")["00_first"]["rate"] == 2e-3
    assert refusal(lambda: resolve("rate=.nan")) == "--set: key 'rate' should be a finite float, got float (nan)"
    assert refusal(lambda: resolve("rate=-.inf")) == "--set: key 'rate' should be a finite float, got float (-inf)"
    assert refusal(lambda: resolve("repeat=null")) == "--set: key 'repeat' should be int, got NoneType (null)"
    assert refusal(lambda: resolve("repeat=true")) == "--set: key 'repeat' should be int, got bool (True)"


def test_null_passes_where_the_default_is_none(tmp_path):
    notebooks, params = tmp_path / "notebooks", tmp_path / "params"
    write_notebook(notebooks / "00_only.ipynb", 'profile = "x"\nlimit = None')
    (params / "p").mkdir(parents=True)
    (params / "p" / "common.yaml").write_text("profile: p\nlimit: null\n")
    assert resolve_profile("p", list_notebooks(notebooks), params)["00_only"] == {"profile": "p", "limit": None}


def test_each_enumeration_is_read_once_per_resolve(monkeypatch):
    reads = []
    original = parameter_rules.ENUMERATIONS["backbone"]
    monkeypatch.setitem(parameter_rules.ENUMERATIONS, "backbone", lambda: reads.append(1) or original())
    resolve_profile("demo", list_notebooks())
    assert len(reads) == 1  # four notebooks name backbones


def test_importing_the_parameters_module_does_not_import_keras():
    code = "import sys, mlsp.parameters; print(sorted(m for m in ('keras', 'tensorflow') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "pairs, expected",
    [
        (["learning_rate=1e-4", "passes={orignal: [narrow]}"], "error: --set: key 'passes' should be a non-empty mapping of input mode"),
        (["num_shards=0"], "error: --set: key 'num_shards' should be a whole number >= 1, got 0"),
    ],
)
def test_the_dry_run_refuses_with_exit_code_2_and_one_line(capsys, pairs, expected):
    argv = ["run", "--profile", "demo", "--dry-run"] + [part for pair in pairs for part in ("--set", pair)]
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # no notebook was reported as checked
    assert captured.err.count("\n") == 1 and captured.err.startswith(expected)


def test_the_dry_run_accepts_the_documented_learning_rate(capsys):
    assert cli.main(["run", "--profile", "demo", "--only", "02", "--dry-run", "--set", "learning_rate=1e-4"]) == 0
    assert "02_table2_rescaled.ipynb" in capsys.readouterr().out
