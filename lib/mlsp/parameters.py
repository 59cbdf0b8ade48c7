"""Profiles and parameters: YAML files in params/<profile>/ checked against notebook parameters cells.

Merge rule for notebook NN_name.ipynb under profile P:
  1. start from the defaults in the notebook's cell tagged "parameters";
  2. apply params/P/common.yaml, but only the keys that this notebook declares
     (common.yaml holds settings shared by several notebooks, such as `profile` or `seed`);
  3. apply params/P/NN_name.yaml (optional); every key there must be declared by the notebook.
  4. apply `--set KEY=VALUE` overrides.
A key in common.yaml that no notebook declares, a key in a notebook file that its notebook does not
declare, a value whose type differs from the default's, or a value its rule in mlsp.parameter_rules
refuses (a range, an empty value, a name the kit does not define) is an error naming the file (or
`--set`) and the key, raised before any notebook starts.
"""
from __future__ import annotations

import ast
import json
import math
from dataclasses import dataclass
from pathlib import Path

import yaml

from mlsp.parameter_rules import COMPARISONS, CROSS_CHECKS, MIRRORED, RELATIONS, RULES, Context
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


def _coerced(default, value):
    """YAML 1.1 reads `1e-4` (no dot) as a string; where the notebook expects a float, read it as one."""
    return float(value.strip()) if isinstance(default, float) and _reads_as_float(value) else value


def _reads_as_float(value) -> bool:
    if not isinstance(value, str):
        return False
    try:
        float(value.strip())
    except ValueError:
        return False
    return True


def _shown(value) -> str:
    text = "null" if value is None else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_value(where: str, key: str, declared: dict, value, context: Context):
    """The value as the notebook will receive it; raises ParameterError naming `where` and `key`.

    where: a file, `--set`, or a notebook's parameters cell. declared: the notebook's parameters and
    their defaults. A string that float() reads becomes a float where the default is one; null passes
    only where the default is None; NaN and infinities never pass; the key's rule in RULES, if any,
    has the last word. A key without a rule (a project outside this repository) is checked for type only."""
    if key not in declared:
        raise ParameterError(f"{where}: key '{key}' is not a parameter of this notebook (declared: {', '.join(declared)})")
    default = declared[key]
    value = _coerced(default, value)
    rule = RULES.get(key)
    if value is None and default is None:
        return value
    if value is None or not _type_matches(default, value) or (isinstance(value, float) and not math.isfinite(value)):
        if rule is not None:
            got = _shown(value) if value is None or isinstance(value, float) else f"{type(value).__name__} {_shown(value)}"
            hint = " (YAML reads a number written like 1e3 as a string: write whole numbers with digits only)" if isinstance(default, int) and _reads_as_float(value) else ""
            raise ParameterError(f"{where}: key '{key}' should be {rule.allowed(context)}, got {got}{hint}")
        expected = f"a finite {type(default).__name__}" if isinstance(value, float) and _type_matches(default, value) else type(default).__name__
        raise ParameterError(f"{where}: key '{key}' should be {expected}, got {type(value).__name__} ({_shown(value)})")
    if rule is not None:
        problem = rule.problem(value, context)
        if problem is not None:
            detail = f" ({problem})" if problem else ""
            raise ParameterError(f"{where}: key '{key}' should be {rule.allowed(context)}, got {_shown(value)}{detail}")
    return value


def _check_relations(merged: dict, sources: dict, order: list) -> None:
    """Checks between two parameters (RELATIONS), on a notebook's merged values. The message names
    the file that set the later-applied of the two, since that is the one that broke the relation."""
    for left, operator, right in RELATIONS:
        if merged.get(left) is None or merged.get(right) is None:  # absent, or a default of None kept
            continue
        if COMPARISONS[operator](merged[left], merged[right]):
            continue
        key, other, shown_operator = left, right, operator
        if order.index(sources[right]) > order.index(sources[left]):
            key, other, shown_operator = right, left, MIRRORED[operator]
        raise ParameterError(
            f"{sources[key]}: key '{key}' should be {shown_operator} {other} "
            f"({_shown(merged[other])}, from {sources[other]}), got {_shown(merged[key])}"
        )


def _check_across(merged: dict, sources: dict, order: list) -> None:
    """Checks among several parameters (CROSS_CHECKS), on a notebook's merged values; the message
    names the file that set the later-applied of the keys involved, as _check_relations does."""
    for check in CROSS_CHECKS:
        found = check(merged)
        if found is None:
            continue
        keys, problem = found
        where = max((sources[key] for key in keys if key in sources), key=order.index)
        raise ParameterError(f"{where}: {problem}")


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
    if "profile" not in common and any("profile" in declared for declared in declared_by.values()):
        raise ParameterError(f"{common_path}: key 'profile' is missing (should be '{folder.name}', the profile folder's name: results go to results/<profile>/)")
    context = Context(folder.name)
    resolved = {}
    for nb in notebooks:
        declared = declared_by[nb.stem]
        defaults_where = f"{nb.path} (parameters cell)"
        params, sources = {}, {key: defaults_where for key in declared}
        layers = [(str(common_path), {key: value for key, value in common.items() if key in declared})]
        own_path = folder / f"{nb.stem}.yaml"
        if own_path.exists():
            layers.append((str(own_path), _read_yaml(own_path)))
        layers.append(("--set", {key: value for key, value in (overrides or {}).items() if key in declared}))
        for where, values in layers:
            for key, value in values.items():
                params[key] = check_value(where, key, declared, value, context)
                sources[key] = where
        for key, default in declared.items():
            if key not in params:  # a default the notebook keeps must be as good as a value in a file
                check_value(defaults_where, key, declared, default, context)
        _check_relations({**declared, **params}, sources, [defaults_where] + [where for where, _ in layers])
        _check_across({**declared, **params}, sources, [defaults_where] + [where for where, _ in layers])
        resolved[nb.stem] = params
    for key in overrides or {}:
        if not any(key in declared_by[nb.stem] for nb in notebooks):
            raise ParameterError(f"--set: key '{key}' is not a parameter of the selected notebooks")
    known_stems = {nb.stem for nb in list_notebooks(notebooks[0].path.parent)} if notebooks else set()
    for path in sorted(folder.glob("*.yaml")):
        if path.name not in ("common.yaml", "expected.yaml") and path.stem not in known_stems:
            raise ParameterError(f"{path}: no notebook named {path.stem}.ipynb in {NOTEBOOKS_DIR.name}/")
    return resolved
