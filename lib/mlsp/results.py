"""The results contract: what every notebook writes under results/<profile>/.

- `<key>.json`: named metrics plus the exact parameters, seed (the notebook's `seed` parameter; null for
  a notebook that has none because it draws nothing at random, such as 06, whose predictions come from
  notebook 03's run and whose JSON names that row), package versions, the git commit the run started from
  and whether the code differed from it (mlsp.provenance), wall time;
- `<key>.csv`: tables;
- `<key>.png` and `<key>.svg`: figures.
`mlsp check` reads the JSON files and compares their metrics with params/<profile>/expected.yaml.
"""
from __future__ import annotations

import json
import math
import platform
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from mlsp import provenance
from mlsp.parameters import ParameterError, declared_parameters
from mlsp.paths import NOTEBOOKS_DIR, PARAMS_DIR, RESULTS_DIR

RECORDED_PACKAGES = ("tensorflow", "tensorflow-cpu", "keras", "numpy", "h5py", "pandas", "scipy", "papermill", "pillow", "scikit-image")


def package_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in RECORDED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


# Where a run reads and writes, not how it computes: never a difference from the paper's settings.
LOCATION_PARAMETERS = ("profile", "ava_dir", "work_dir")


def differences_from_paper(profile: str, notebook: str, parameters: dict, params_dir: Path = PARAMS_DIR, notebooks_dir: Path = NOTEBOOKS_DIR) -> dict:
    """{notebook: {name: {"paper": value, "here": value}}} for every parameter of the profile that
    differs from the `paper` profile's value for the same notebook (its file, else the notebook's
    default): `parameters` for `notebook` itself (the values this run used, --set included), the
    profile's files for the others, since a table inherits the weights and data of the notebooks
    before it. {} for the paper profile itself. Locations (LOCATION_PARAMETERS) are left out.

    Written into every result JSON, so that a number made with random weights, synthetic data or a
    shortened protocol says so wherever it is read. Never raises for an unreadable profile: the
    reason is returned as {"unknown": message} instead, since a run's results must not be lost to it.
    """
    if profile == "paper":
        return {}
    from mlsp.parameters import list_notebooks, resolve_profile

    try:
        notebooks = list_notebooks(notebooks_dir)
        paper = resolve_profile("paper", notebooks, params_dir)
        here = resolve_profile(profile, notebooks, params_dir)
    except (ParameterError, OSError, ValueError) as error:
        return {"unknown": f"the profiles could not be compared: {error}"}
    found = {}
    for nb in notebooks:
        declared = declared_parameters(nb.path)
        paper_values = {**declared, **paper[nb.stem]}
        here_values = dict(parameters) if nb.stem == notebook else {**declared, **here[nb.stem]}
        differences = {
            name: {"paper": _plain(paper_values.get(name)), "here": _plain(value)}
            for name, value in here_values.items()
            if name not in LOCATION_PARAMETERS and _plain(value) != _plain(paper_values.get(name))
        }
        if differences:
            found[nb.stem] = differences
    return found


def _plain(value):
    """JSON-safe copies of numpy scalars and arrays; NaN becomes null."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class Run:
    """One notebook's run: knows its profile, parameters and start time; writes results.

    `namespace` is the notebook's globals(): the values of the names in its parameters cell are
    recorded exactly as the run used them (defaults overridden by papermill).
    """

    def __init__(self, profile: str, notebook: str, namespace: dict | None = None, results_root: Path = RESULTS_DIR):
        self.profile = profile
        self.notebook = notebook
        self.directory = Path(results_root) / profile
        self.directory.mkdir(parents=True, exist_ok=True)
        self.started = time.perf_counter()
        self.parameters = {}
        notebook_path = NOTEBOOKS_DIR / f"{notebook}.ipynb"
        if namespace is not None and notebook_path.exists():
            self.parameters = {name: namespace[name] for name in declared_parameters(notebook_path) if name in namespace}
        self.seed = self.parameters.get("seed")

    def path(self, name: str) -> Path:
        return self.directory / name

    def save_metrics(self, key: str, metrics: dict, **extra) -> Path:
        record = {
            "key": key,
            "profile": self.profile,
            "notebook": self.notebook,
            "metrics": _plain(metrics),
            "parameters": _plain(self.parameters),
            "differs_from_paper": differences_from_paper(self.profile, self.notebook, self.parameters),
            "seed": self.seed,
            "versions": package_versions(),
            **provenance.run_state(),  # git_commit, git_dirty
            "wall_time_s": round(time.perf_counter() - self.started, 2),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **_plain(extra),
        }
        path = self.path(f"{key}.json")
        path.write_text(json.dumps(record, indent=2, sort_keys=False) + "\n")
        return path

    def save_table(self, key: str, table) -> Path:
        path = self.path(f"{key}.csv")
        table.to_csv(path, index=False, float_format="%.6g")
        return path

    def save_figure(self, key: str, figure) -> list[Path]:
        paths = [self.path(f"{key}.png"), self.path(f"{key}.svg")]
        figure.savefig(paths[0], dpi=110, bbox_inches="tight")
        figure.savefig(paths[1], bbox_inches="tight")
        return paths


def load_metrics(profile: str, results_root: Path = RESULTS_DIR) -> dict[str, dict]:
    """Every result JSON of a profile, keyed by its key."""
    found = {}
    for path in sorted((Path(results_root) / profile).glob("*.json")):
        record = json.loads(path.read_text())
        if isinstance(record, dict) and "metrics" in record:
            found[record.get("key", path.stem)] = record
    return found


# The keys of an expected.yaml leaf (mlsp.check): a dict holding one of them is a leaf, not a subtree.
EXPECTED_RULE_KEYS = frozenset({"value", "tolerance", "interval_contains", "min"})


def flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    """{"a/b/c": leaf} for a nested dict; a dict with a key of EXPECTED_RULE_KEYS is a leaf."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, dict) and not (EXPECTED_RULE_KEYS & set(value)):
            flat.update(flatten(value, name))
        else:
            flat[name] = value
    return flat
