"""The `mlsp` command: run notebooks, check results, score photos, import the authors' heads, write the README's results."""
from __future__ import annotations

import argparse
import sys

from mlsp.parameters import ParameterError


def _run(args) -> int:
    from mlsp.parameters import parse_overrides
    from mlsp.runner import NotebookFailed, run_profile

    try:
        run_profile(args.profile, only=args.only, start_from=args.start_from, dry_run=args.dry_run, overrides=parse_overrides(args.set), jobs=args.jobs)
    except (ParameterError, NotebookFailed) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2 if isinstance(error, ParameterError) else 1
    return 0


def _check(args) -> int:
    from mlsp.check import compare, format_rows

    try:
        rows = compare(args.profile)
    except ParameterError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_rows(rows))
    return 0 if all(row["status"] == "pass" for row in rows) else 1


def _score(args) -> int:
    from mlsp import score

    try:
        table = score.score_paths(
            args.paths, model_dir=args.model, output=args.output, resume=args.resume, overwrite=args.overwrite,
            full_resolution=args.full_resolution, memory_budget_gb=args.memory_budget,
        )
    except score.ScoringError as error:
        print(f"error: {error}", file=sys.stderr)
        return score.EXIT_USAGE
    except KeyboardInterrupt:
        print(f"interrupted: the rows scored so far are in {args.output}; rerun with --resume to continue", file=sys.stderr)
        return score.EXIT_INTERRUPTED
    except Exception as error:  # a bug, not a bad file: its own status, since 1 means "some files skipped"
        import traceback

        from mlsp.errors import first_line

        traceback.print_exc()
        print(f"error: mlsp score stopped on an unexpected error ({first_line(error)}); the rows scored so far are in {args.output}, "
              "rerun with --resume to continue", file=sys.stderr)
        return score.EXIT_CRASHED
    if table.empty:
        print(f"no image files found in {' '.join(args.paths)} (suffixes: {', '.join(sorted(score.IMAGE_SUFFIXES))})", file=sys.stderr)
        return score.EXIT_NONE_SCORED
    scored = int(table["predicted_mos"].notna().sum())
    already = table.attrs.get("already_scored", 0)
    print(
        f"scored {scored} of {len(table)} images ({already} already in the output), skipped {len(table) - scored} -> {args.output}"
        f" (predicted_mos on the scorer's {score.scale_text(table.attrs['score_scale'])} scale)",
        file=sys.stderr if scored < len(table) else sys.stdout,
    )
    return score.exit_status(table)


def _import_authors(args) -> int:
    from mlsp import authors

    import shlex

    try:
        folder, published = authors.import_authors(args.file, args.out, force=args.force)
    except authors.AuthorsFileError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted: nothing was written to {args.out}; rerun the same command to import", file=sys.stderr)
        return 130
    what = f"the authors' {published.name} (paper Table 3, {published.paper_row}: SRCC {published.paper_srcc})" if published else "a forced import (not a published file)"
    print(f"wrote {folder}: {what}; score with `mlsp score PHOTOS --model {shlex.quote(str(folder))}`")
    return 0


def _readme(args) -> int:
    from mlsp.report import update_readme

    changed = update_readme(args.profile, check_only=args.check)
    if args.check and changed:
        print(f"README.md's results section disagrees with results/{args.profile}; run `mlsp readme --profile {args.profile}`", file=sys.stderr)
        return 1
    print("README.md is up to date" if not changed else "README.md results section rewritten")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlsp", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="execute the notebooks of a profile in number order")
    run.add_argument("--profile", required=True)
    run.add_argument("--only", nargs="+", metavar="NN", help="run only these notebook numbers")
    run.add_argument("--from", dest="start_from", metavar="NN", help="start at this notebook number")
    run.add_argument("--dry-run", action="store_true", help="validate every parameter file, execute nothing")
    run.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a parameter of the selected notebooks (repeatable), e.g. --set shard_index=3")
    run.add_argument("--jobs", type=int, default=1, metavar="N", help="run up to N notebooks side by side where their inputs are ready (make demo uses 2)")
    run.set_defaults(handler=_run)

    check = commands.add_parser("check", help="compare results/<profile> with params/<profile>/expected.yaml")
    check.add_argument("--profile", required=True)
    check.set_defaults(handler=_check)

    score = commands.add_parser(
        "score",
        help="predict the MOS of photos with a trained model",
        description="Predict the MOS of photos: the mean of the scorer's predictions over 8 crops, one CSV row per file "
        "(path, predicted_mos, error, scored_width, scored_height, score_scale: the scorer's MOS range, e.g. 1-10 for AVA; out_of_range: true for a "
        "prediction outside it, kept unclipped; scorer, scorer_sha256, full_resolution: what scored it), written as each file is scored. Files that cannot "
        "be scored (unreadable, too small for the backbone, over the memory budget) get their reason in `error`.",
        epilog="exit status: 0 every file scored; 1 some files skipped (see `error`); 2 bad arguments, scorer folder or "
        "output, or another run writing the output (nothing scored); 3 no file scored (all skipped, or no image files found); 4 stopped by "
        "an unexpected error (rows so far kept); 130 interrupted (rows so far kept).",
    )
    score.add_argument("paths", nargs="+", help="image files or folders (searched recursively for image suffixes)")
    score.add_argument("--model", required=True, help="a folder written by mlsp.score.save_scorer (the demo writes data/demo/scorer)")
    score.add_argument("--output", default="scores.csv", help="CSV to write (default scores.csv); its directory must exist")
    existing = score.add_mutually_exclusive_group()
    existing.add_argument("--resume", action="store_true", help="continue an existing output: files scored in it are skipped, files that failed are tried again (also fine when the output does not exist yet); refused when its rows were scored by another scorer or --full-resolution setting")
    existing.add_argument("--overwrite", action="store_true", help="replace an existing output (without --resume or --overwrite an existing output is refused)")
    score.add_argument("--full-resolution", action="store_true", help="score each photo at its stored size instead of bringing it to the scorer's training size range (longer side at most the max_side in scorer.json)")
    score.add_argument("--memory-budget", type=float, metavar="GB", help="memory for one batch of views in the forward pass (default 2 GB; TensorFlow and the model take about 0.7-1 GB more); a photo whose single view needs more is skipped (only happens with --full-resolution)")
    score.set_defaults(handler=_score)

    imported = commands.add_parser(
        "import-authors",
        help="make a scorer folder from one of the authors' published AVA heads (subpic/ava-mlsp models/*/model_best_weights.h5)",
        description="Check a Keras 2 weights file against the authors' three published heads (size and sha256), map its "
        "layers by name and shape onto this kit's Pool-3FC or Single-3FC, and write a scorer folder for `mlsp score` "
        "(InceptionResNetV2 with Keras' ImageNet weights).",
        epilog="exit status: 0 written; 2 refused (file missing, unreadable or not published, a layer missing or of another shape, "
        "a weight that is an HDF5 link, weights whose predictions are not finite, far off the 1-10 scale or the same for every photo, "
        "output folder in use, not writable or the current directory; nothing written); 130 interrupted (nothing written).",
    )
    imported.add_argument("file", help="model_best_weights.h5 from subpic/ava-mlsp models/<name>/ (or https://osf.io/ubps5/files/)")
    imported.add_argument("--out", required=True, help="the scorer folder to write (must not exist, or be empty; not the current directory or a mount point)")
    imported.add_argument("--force", action="store_true", help="import a file that is not one of the published ones (size or sha256 differ); the head is inferred from its layer names and shapes")
    imported.set_defaults(handler=_import_authors)

    readme = commands.add_parser("readme", help="regenerate the README's results section from results/<profile>")
    readme.add_argument("--profile", default="demo")
    readme.add_argument("--check", action="store_true", help="exit 1 when the README disagrees with the results")
    readme.set_defaults(handler=_readme)

    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
