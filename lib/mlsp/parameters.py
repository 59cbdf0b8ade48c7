"""Profiles and parameters: YAML files in params/<profile>/ checked against notebook parameters cells.

Merge rule for notebook NN_name.ipynb under profile P:
  1. start from the defaults in the notebook's cell tagged "parameters";
  2. apply params/P/common.yaml, but only the keys that this notebook declares
     (common.yaml holds settings shared by several notebooks, such as `profile` or `seed`);
  3. apply params/P/NN_name.yaml (optional); every key there must be declared by the notebook.
A key in common.yaml that no notebook declares, a key in a notebook file that its notebook does not
declare, or a value whose type differs from the default's, is an error naming the file and the key.
"""
from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from mlsp.paths import NOTEBOOKS_DIR, PARAMS_DIR


class ParameterError(ValueError):
    """A bad profile, parameter file, key or value; the message names the file and the key."""


@dataclass(frozen=True)
class Notebook:
    number: str
    name: str
    path: Path

    @property
    def stem(self) -> str:
        return self.path.stem

    @property
    def needs(self) -> list[str] | None:
        """Numbers of the notebooks whose outputs this one reads (notebook metadata `mlsp.needs`);
        without the key, every earlier notebook."""
        metadata = json.loads(self.path.read_text()).get("metadata", {}).get("mlsp", {})
        return [str(number).zfill(2) for number in metadata["needs"]] if "needs" in metadata else None


def list_notebooks(notebooks_dir: Path = NOTEBOOKS_DIR) -> list[Notebook]:
    found = []
    for path in sorted(notebooks_dir.glob("[0-9][0-9]_*.ipynb")):
        found.append(Notebook(number=path.name[:2], name=path.stem[3:], path=path))
    return found


def declared_parameters(notebook_path: Path) -> dict:
    """Names and default values assigned in the cell tagged "parameters"."""
    content = json.loads(Path(notebook_path).read_text())
    for cell in content["cells"]:
        if cell["cell_type"] == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            declared = {}
            for node in ast.parse(source).body:
                if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                    declared[node.targets[0].id] = ast.literal_eval(node.value)
            return declared
    raise ParameterError(f"{notebook_path}: no cell tagged 'parameters'")


def _read_yaml(path: Path) -> dict:
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ParameterError(f"{path}: not valid YAML ({error})") from None
    if not isinstance(loaded, dict):
        raise ParameterError(f"{path}: expected a mapping of parameter names to values")
    return loaded


def _type_matches(default, value) -> bool:
    if default is None or value is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


def _check(path: Path, key: str, declared: dict, value) -> None:
    if key not in declared:
        raise ParameterError(f"{path}: key '{key}' is not a parameter of this notebook (declared: {', '.join(declared)})")
    if not _type_matches(declared[key], value):
        raise ParameterError(
            f"{path}: key '{key}' should be {type(declared[key]).__name__}, got {type(value).__name__} ({value!r})"
        )


def profile_dir(profile: str, params_dir: Path = PARAMS_DIR) -> Path:
    path = params_dir / profile
    if not path.is_dir():
        known = sorted(p.name for p in params_dir.iterdir() if p.is_dir())
        raise ParameterError(f"{path}: unknown profile '{profile}' (known: {', '.join(known)})")
    return path


def parse_overrides(pairs: list[str] | None) -> dict:
    """`KEY=VALUE` strings from the command line; values are read as YAML (3, 1e-4, true, [a, b])."""
    overrides = {}
    for pair in pairs or []:
        key, separator, value = pair.partition("=")
        if not separator or not key:
            raise ParameterError(f"--set {pair}: expected KEY=VALUE")
        try:
            overrides[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as error:
            raise ParameterError(f"--set {pair}: value is not valid YAML ({error})") from None
    return overrides


def resolve_profile(profile: str, notebooks: list[Notebook], params_dir: Path = PARAMS_DIR, overrides: dict | None = None) -> dict[str, dict]:
    """Validated parameters for every notebook, keyed by notebook stem; raises ParameterError.

    `overrides` (from `mlsp run --set KEY=VALUE`) apply last, to every given notebook that declares the key."""
    folder = profile_dir(profile, params_dir)
    common_path = folder / "common.yaml"
    if not common_path.exists():
        raise ParameterError(f"{common_path}: missing (every profile has one, holding at least `profile`)")
    common = _read_yaml(common_path)
    declared_by = {nb.stem: declared_parameters(nb.path) for nb in list_notebooks(notebooks[0].path.parent)} if notebooks else {}
    for key in common:
        if not any(key in declared for declared in declared_by.values()):
            raise ParameterError(f"{common_path}: key '{key}' is not a parameter of any notebook")
    resolved = {}
    for nb in notebooks:
        declared = declared_by[nb.stem]
        params = {}
        for key, value in common.items():
            if key in declared:
                _check(common_path, key, declared, value)
                params[key] = value
        own_path = folder / f"{nb.stem}.yaml"
        if own_path.exists():
            for key, value in _read_yaml(own_path).items():
                _check(own_path, key, declared, value)
                params[key] = value
        for key, value in (overrides or {}).items():
            if key in declared:
                _check(Path("--set"), key, declared, value)
                params[key] = value
        resolved[nb.stem] = params
    for key in overrides or {}:
        if not any(key in declared_by[nb.stem] for nb in notebooks):
            raise ParameterError(f"--set: key '{key}' is not a parameter of the selected notebooks")
    known_stems = {nb.stem for nb in list_notebooks(notebooks[0].path.parent)} if notebooks else set()
    for path in sorted(folder.glob("*.yaml")):
        if path.name not in ("common.yaml", "expected.yaml") and path.stem not in known_stems:
            raise ParameterError(f"{path}: no notebook named {path.stem}.ipynb in {NOTEBOOKS_DIR.name}/")
    return resolved
