"""The `mlsp` command: run notebooks, check results, score photos, write the README's results."""
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
    from mlsp.score import score_paths

    table = score_paths(args.paths, model_dir=args.model, output=args.output)
    print(f"scored {int(table['predicted_mos'].notna().sum())} of {len(table)} images -> {args.output}")
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

    score = commands.add_parser("score", help="predict the MOS of photos with a trained model")
    score.add_argument("paths", nargs="+", help="image files or folders")
    score.add_argument("--model", required=True, help="a folder written by mlsp.score.save_scorer (e.g. results/demo/model)")
    score.add_argument("--output", default="scores.csv")
    score.set_defaults(handler=_score)

    readme = commands.add_parser("readme", help="regenerate the README's results section from results/<profile>")
    readme.add_argument("--profile", default="demo")
    readme.add_argument("--check", action="store_true", help="exit 1 when the README disagrees with the results")
    readme.set_defaults(handler=_readme)

    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
