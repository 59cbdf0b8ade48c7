"""The papermill runner: order, selection, dry runs, failure reports, bad parameters."""
import subprocess
import sys

import pytest

from conftest import REPO, write_notebook
from mlsp import cli
from mlsp.parameters import ParameterError, list_notebooks, resolve_profile
from mlsp.runner import NotebookFailed, run_profile


def run(project, **kwargs):
    return run_profile("tiny", notebooks_dir=project["notebooks"], params_dir=project["params"], results_dir=project["results"], log=lambda message: None, **kwargs)


def test_runs_every_notebook_in_number_order_with_merged_parameters(tiny_project):
    timings = run(tiny_project)
    assert [name for name, _ in timings] == ["00_first.ipynb", "01_second.ipynb", "02_third.ipynb"]
    assert tiny_project["log"].read_text().split() == ["first", "secondsecond", "third"]
    assert (tiny_project["results"] / "tiny" / "notebooks" / "01_second.ipynb").exists()


def test_only_and_from_select_notebooks(tiny_project):
    run(tiny_project, only=["2", "00"])
    assert tiny_project["log"].read_text().split() == ["first", "third"]
    tiny_project["log"].unlink()
    run(tiny_project, start_from="01")
    assert tiny_project["log"].read_text().split() == ["secondsecond", "third"]


def test_unknown_notebook_number_is_an_error(tiny_project):
    with pytest.raises(NotebookFailed, match="no notebook numbered 07"):
        run(tiny_project, only=["07"])


def test_dry_run_validates_without_executing(tiny_project):
    assert run(tiny_project, dry_run=True) == []
    assert not tiny_project["log"].exists()


def test_merge_rule_common_then_notebook_file(tiny_project):
    resolved = resolve_profile("tiny", list_notebooks(tiny_project["notebooks"]), tiny_project["params"])
    assert resolved["01_second"] == {"profile": "tiny", "rate": 1, "repeat": 2}
    assert resolved["00_first"] == {"profile": "tiny", "rate": 1}


def test_failing_notebook_names_notebook_cell_and_error(tiny_project):
    write_notebook(tiny_project["notebooks"] / "01_second.ipynb", 'profile = "x"\nrepeat = 1\nrate = 0.5', "x = 1", "raise ValueError('broken on purpose')")
    with pytest.raises(NotebookFailed) as failure:
        run(tiny_project)
    message = str(failure.value)
    assert "01_second.ipynb" in message and "[raise ValueError('broken on purpose')]" in message
    assert "ValueError: broken on purpose" in message
    assert tiny_project["log"].read_text().split() == ["first"]  # stopped at the first failure


@pytest.mark.parametrize(
    "file, content, expected",
    [
        ("01_second.yaml", "repeat: 2\nspeed: 3\n", r"01_second.yaml: key 'speed' is not a parameter"),
        ("01_second.yaml", "repeat: two\n", r"01_second.yaml: key 'repeat' should be int, got str"),
        ("common.yaml", "profile: tiny\nrate: fast\n", r"common.yaml: key 'rate' should be float"),
        ("common.yaml", "profile: tiny\nnonsense: 1\n", r"common.yaml: key 'nonsense' is not a parameter of any notebook"),
        ("05_missing.yaml", "repeat: 1\n", r"05_missing.yaml: no notebook named 05_missing.ipynb"),
        ("01_second.yaml", "repeat: [1\n", r"01_second.yaml: not valid YAML"),
    ],
)
def test_bad_parameters_fail_before_any_notebook_runs(tiny_project, file, content, expected):
    (tiny_project["params"] / "tiny" / file).write_text(content)
    with pytest.raises(ParameterError, match=expected):
        run(tiny_project)
    assert not tiny_project["log"].exists()


def test_unknown_profile_and_missing_common_file(tiny_project):
    with pytest.raises(ParameterError, match="unknown profile 'nope'"):
        run_profile("nope", notebooks_dir=tiny_project["notebooks"], params_dir=tiny_project["params"], results_dir=tiny_project["results"])
    (tiny_project["params"] / "tiny" / "common.yaml").unlink()
    with pytest.raises(ParameterError, match=r"common.yaml: missing"):
        run(tiny_project)


def test_cli_reports_bad_profile_in_one_line():
    result = subprocess.run([sys.executable, "-m", "mlsp.cli", "run", "--profile", "no_such_profile", "--dry-run"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "unknown profile 'no_such_profile'" in result.stderr


def test_checking_every_parameter_imports_no_tensorflow():
    """The dry run (and every run's check before its first notebook) needs only the kit's names
    (mlsp.names): importing Keras and TensorFlow for them cost ~6 s of every `mlsp run`."""
    probe = (
        "import sys\n"
        "from mlsp import cli\n"
        "assert cli.main(['run', '--profile', 'rehearsal', '--dry-run']) == 0\n"
        "print(sorted(name for name in ('keras', 'tensorflow', 'mlsp.backbones', 'mlsp.experiments') if name in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_notebook_00s_modules_import_no_tensorflow():
    """Notebook 00 (data) asks the backbones only for their smallest image: it starts ~6 s sooner,
    on the critical path of every run, without TensorFlow."""
    probe = (
        "import sys\n"
        "from mlsp import backbones, data, embedded, labels, metrics, paper, paths, report, results\n"
        "print(backbones.min_image_side('inception_resnet_v2', augment=True), 'keras' in sys.modules, 'tensorflow' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["86", "False", "False"]


@pytest.mark.parametrize("profile", ["smoke", "demo", "paper"])
def test_shipped_profiles_pass_the_dry_run(profile):
    assert cli.main(["run", "--profile", profile, "--dry-run"]) == 0


def test_set_overrides_apply_last_and_are_checked(tiny_project):
    from mlsp.parameters import parse_overrides

    run(tiny_project, only=["01"], overrides=parse_overrides(["repeat=3"]))
    assert tiny_project["log"].read_text().split() == ["secondsecondsecond"]
    with pytest.raises(ParameterError, match="--set: key 'repeat' should be int"):
        run(tiny_project, only=["01"], overrides=parse_overrides(["repeat=many"]))
    with pytest.raises(ParameterError, match="--set: key 'speed' is not a parameter"):
        run(tiny_project, overrides=parse_overrides(["speed=1"]))


def timed_project(tmp_path, needs: dict, fail: str | None = None, sleep: dict | None = None):
    """Notebooks that log when they start and end and sleep in between (1.5 s unless `sleep` says);
    `needs` per notebook."""
    notebooks, params = tmp_path / "notebooks", tmp_path / "params"
    log = tmp_path / "times.log"
    for name, wanted in needs.items():
        body = f"import time\nopen({str(log)!r}, 'a').write(f'start {name} {{time.time()}}\\n')\n"
        body += "raise RuntimeError('broken on purpose')\n" if name == fail else f"time.sleep({(sleep or {}).get(name, 1.5)})\n"
        body += f"open({str(log)!r}, 'a').write(f'end {name} {{time.time()}}\\n')"
        write_notebook(notebooks / f"{name}_step.ipynb", 'profile = "x"', body, needs=wanted)
    (params / "tiny").mkdir(parents=True)
    (params / "tiny" / "common.yaml").write_text("profile: tiny\n")
    project = {"notebooks": notebooks, "params": params, "results": tmp_path / "results"}

    def events():
        found = {}
        for line in log.read_text().split("\n"):
            if line:
                kind, name, moment = line.split()
                found[(kind, name)] = float(moment)
        return found

    return project, events


def test_jobs_run_independent_notebooks_side_by_side_and_respect_needs(tmp_path):
    project, events = timed_project(tmp_path, {"00": [], "01": ["00"], "02": ["00"], "03": ["01", "02"]})
    timings = run(project, jobs=2)
    assert sorted(name for name, _ in timings) == ["00_step.ipynb", "01_step.ipynb", "02_step.ipynb", "03_step.ipynb"]
    seen = events()
    assert seen[("start", "01")] >= seen[("end", "00")] and seen[("start", "02")] >= seen[("end", "00")]
    assert seen[("start", "02")] < seen[("end", "01")]  # 01 and 02 overlap
    assert seen[("start", "03")] >= max(seen[("end", "01")], seen[("end", "02")])


def test_a_failure_lets_the_running_notebooks_finish_and_starts_nothing_new(tmp_path):
    # 02 outlasts 01's failure (a failed kernel takes a few seconds to shut down), so its end is the
    # moment 03 would start if the runner ignored the failure
    project, events = timed_project(tmp_path, {"00": [], "01": ["00"], "02": ["00"], "03": ["00"]}, fail="01", sleep={"02": 10})
    with pytest.raises(NotebookFailed, match="01_step.ipynb"):
        run(project, jobs=2)
    seen = events()
    assert ("end", "02") in seen  # the notebook beside the failure finishes
    assert ("start", "03") not in seen  # nothing starts after a failure
    with pytest.raises(ParameterError, match="--jobs 0"):
        run(project, jobs=0)
