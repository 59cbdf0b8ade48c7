"""Run the numbered notebooks of a profile through papermill, in number order (or side by side
where a notebook's metadata says which notebooks' outputs it needs)."""
from __future__ import annotations

import os
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

from mlsp import provenance, quiet
from mlsp.parameters import Notebook, ParameterError, list_notebooks, resolve_profile
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
    jobs: int = 1,
) -> list[tuple[str, float]]:
    """Validate all parameters first, then execute; returns (notebook, seconds) per notebook run.

    With `jobs` > 1, notebooks whose inputs are ready run side by side: on two cores much of a
    notebook's time is single-threaded Python (tracing, Keras' per-step overhead) that another
    notebook's number crunching can fill. Each notebook still runs alone in its own kernel."""
    log = log or (lambda message: print(message, flush=True))
    if jobs < 1:
        raise ParameterError(f"--jobs {jobs}: run at least one notebook at a time")
    notebooks = list_notebooks(notebooks_dir)
    chosen = select(notebooks, only, start_from)
    resolved = resolve_profile(profile, notebooks, params_dir)  # every file is checked, before any notebook starts
    if overrides:
        resolved.update(resolve_profile(profile, chosen, params_dir, overrides))
    check_devices(profile, chosen, resolved)
    check_inputs(profile, chosen, resolved)
    if dry_run:
        for nb in chosen:
            log(f"ok  {nb.path.name}: {len(resolved[nb.stem])} parameters from params/{profile}/")
        return []
    import papermill  # imported late: a dry run should not pay for Jupyter's start-up

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", quiet.TF_LOG_LEVEL)  # kernels inherit it: keep TensorFlow's start-up chatter out of the log
    kernel_config = quiet.kernel_config()  # encrypted kernel channels, so ipykernel does not warn of plain TCP

    output_dir = results_dir / profile / "notebooks"
    output_dir.mkdir(parents=True, exist_ok=True)

    def execute(nb: Notebook) -> float:
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
                config=kernel_config,
            )
        except papermill.PapermillExecutionError as error:
            seconds = time.perf_counter() - start
            raise NotebookFailed(
                f"{nb.path.name} failed after {seconds:.0f} s in cell {error.cell_index} of the executed copy "
                f"[{_first_line(output_dir / nb.path.name, error.cell_index)}]: {error.ename}: {error.evalue}\n"
                f"executed copy with the traceback: {output_dir / nb.path.name}"
            ) from None
        return time.perf_counter() - start

    timings = []
    total_start = time.perf_counter()
    needs = dependencies(chosen)
    waiting, running, done = list(chosen), {}, set()
    failure = None
    # the commit is read once, before the first notebook: the run rewrites results/ and someone may commit meanwhile
    with provenance.for_kernels(), ThreadPoolExecutor(max_workers=jobs) as pool:
        while waiting or running:
            # start, in number order, every notebook whose inputs are ready, up to `jobs` at once
            for nb in list(waiting):
                if failure is None and len(running) < jobs and needs[nb.number] <= done:
                    waiting.remove(nb)
                    log(f"[{len(chosen) - len(waiting)}/{len(chosen)}] {nb.path.name} ...")
                    running[pool.submit(execute, nb)] = nb
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in sorted(finished, key=lambda f: running[f].number):
                nb = running.pop(future)
                try:
                    seconds = future.result()
                except NotebookFailed as error:
                    failure = failure or error  # let the others finish; start nothing new
                    continue
                done.add(nb.number)
                timings.append((nb.path.name, seconds))
                log(f"    {nb.path.name} done in {seconds:.1f} s")
    if failure is not None:
        raise failure
    log(f"profile '{profile}': {len(timings)} notebooks in {time.perf_counter() - total_start:.1f} s" + (f" ({jobs} at a time where their inputs allow)" if jobs > 1 else ""))
    return timings


def check_devices(profile: str, chosen: list[Notebook], resolved: dict) -> None:
    """Refuse `distribute: mirrored` in a chosen notebook when this machine cannot mirror (no visible
    GPU): otherwise it fails only at notebook 02's first row, after the whole feature extraction.
    Notebooks not chosen are not asked about (data can be prepared on a machine without a GPU).
    Raises ParameterError naming the parameter, the notebooks and the profile folder."""
    from mlsp.parameters import declared_parameters

    mirrored = [nb.path.name for nb in chosen if {**declared_parameters(nb.path), **resolved[nb.stem]}.get("distribute") == "mirrored"]
    if not mirrored:
        return
    from mlsp import distribute  # TensorFlow: paid only by a profile that asks for mirroring

    problem = distribute.unavailable("mirrored")
    if problem:
        raise ParameterError(f"params/{profile}/ (or --set): key 'distribute' is 'mirrored' for {', '.join(mirrored)}, but {problem}")


def check_inputs(profile: str, chosen: list[Notebook], resolved: dict) -> None:
    """Refuse input files and folders that a chosen notebook needs and that do not exist
    (mlsp.parameter_rules.INPUT_CHECKS: notebook 00's labels_file and images_dir), so that the dry
    run finds them. Notebooks not chosen are not asked about: their inputs may be gone once read.
    Raises ParameterError naming the parameter, the path, the notebook and the profile folder."""
    from mlsp.parameter_rules import INPUT_CHECKS
    from mlsp.parameters import declared_parameters

    for nb in chosen:
        values = {**declared_parameters(nb.path), **resolved[nb.stem]}
        found = [f"key '{key}': {problem}" for check in INPUT_CHECKS for key, problem in check(values)]
        if found:
            raise ParameterError(f"params/{profile}/ (or --set), {nb.path.name}: " + "; ".join(found))


def dependencies(chosen: list[Notebook]) -> dict[str, set[str]]:
    """For each chosen notebook, the chosen notebooks it must wait for. Notebooks outside the
    selection are taken as already run (that is what --only and --from mean)."""
    numbers = {nb.number for nb in chosen}
    found = {}
    for nb in chosen:
        declared = nb.needs
        earlier = {number for number in numbers if number < nb.number}
        found[nb.number] = earlier if declared is None else set(declared) & numbers
    return found


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

