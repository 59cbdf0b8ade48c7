"""Run the numbered notebooks of a profile through papermill, in number order."""
from __future__ import annotations

import os
import time
from pathlib import Path

from mlsp.parameters import Notebook, list_notebooks, resolve_profile
from mlsp.paths import NOTEBOOKS_DIR, PARAMS_DIR, REPO_ROOT, RESULTS_DIR


class NotebookFailed(RuntimeError):
    pass


def select(notebooks: list[Notebook], only: list[str] | None = None, start_from: str | None = None) -> list[Notebook]:
    numbers = {nb.number for nb in notebooks}
    for number in (only or []) + ([start_from] if start_from else []):
        if number.zfill(2) not in numbers:
            raise NotebookFailed(f"no notebook numbered {number} (have: {', '.join(sorted(numbers))})")
    chosen = notebooks
    if only:
        wanted = {number.zfill(2) for number in only}
        chosen = [nb for nb in chosen if nb.number in wanted]
    if start_from:
        chosen = [nb for nb in chosen if nb.number >= start_from.zfill(2)]
    return chosen


def run_profile(
    profile: str,
    only: list[str] | None = None,
    start_from: str | None = None,
    dry_run: bool = False,
    notebooks_dir: Path = NOTEBOOKS_DIR,
    params_dir: Path = PARAMS_DIR,
    results_dir: Path = RESULTS_DIR,
    log=None,
    overrides: dict | None = None,
) -> list[tuple[str, float]]:
    """Validate all parameters first, then execute; returns (notebook, seconds) per notebook run."""
    log = log or (lambda message: print(message, flush=True))
    notebooks = list_notebooks(notebooks_dir)
    chosen = select(notebooks, only, start_from)
    resolved = resolve_profile(profile, notebooks, params_dir)  # every file is checked, before any notebook starts
    if overrides:
        resolved.update(resolve_profile(profile, chosen, params_dir, overrides))
    if dry_run:
        for nb in chosen:
            log(f"ok  {nb.path.name}: {len(resolved[nb.stem])} parameters from params/{profile}/")
        return []
    import papermill  # imported late: a dry run should not pay for Jupyter's start-up

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # kernels inherit it: keep TensorFlow's start-up chatter out of the log

    output_dir = results_dir / profile / "notebooks"
    output_dir.mkdir(parents=True, exist_ok=True)
    timings = []
    total_start = time.perf_counter()
    for position, nb in enumerate(chosen, start=1):
        log(f"[{position}/{len(chosen)}] {nb.path.name} ...")
        start = time.perf_counter()
        try:
            papermill.execute_notebook(
                str(nb.path),
                str(output_dir / nb.path.name),
                parameters=resolved[nb.stem],
                cwd=str(REPO_ROOT),
                kernel_name="python3",
                progress_bar=False,
                request_save_on_cell_execute=True,
            )
        except papermill.PapermillExecutionError as error:
            seconds = time.perf_counter() - start
            raise NotebookFailed(
                f"{nb.path.name} failed after {seconds:.0f} s in cell {error.cell_index} of the executed copy "
                f"[{_first_line(output_dir / nb.path.name, error.cell_index)}]: {error.ename}: {error.evalue}\n"
                f"executed copy with the traceback: {output_dir / nb.path.name}"
            ) from None
        seconds = time.perf_counter() - start
        timings.append((nb.path.name, seconds))
        log(f"    done in {seconds:.1f} s")
    log(f"profile '{profile}': {len(timings)} notebooks in {time.perf_counter() - total_start:.1f} s")
    return timings


def _first_line(executed: Path, cell_index: int) -> str:
    """The failing cell's first line, so the report says which cell without opening the notebook."""
    import json

    try:
        cells = json.loads(executed.read_text())["cells"]
    except (OSError, ValueError, KeyError):
        return "?"
    failed = [cell for cell in cells if any(output.get("output_type") == "error" for output in cell.get("outputs", []))]
    source = (failed[0] if failed else cells[min(cell_index, len(cells) - 1)])["source"]
    text = "".join(source) if isinstance(source, list) else source
    return text.strip().splitlines()[0][:80] if text.strip() else "?"

