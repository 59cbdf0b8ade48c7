"""Figures and tables shared by the notebooks, and the README's generated results section."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter, MaxNLocator
import numpy as np
import pandas as pd

from mlsp import paper
from mlsp.paths import REPO_ROOT, RESULTS_DIR
from mlsp.results import flatten


def data_overview(metadata: pd.DataFrame, threshold: float = 5.0):
    """Notebook 00's figure: MOS (dashed: the binary-accuracy threshold), votes per image (a note
    where the labels file gave none), resolutions, the split."""
    figure, axes = plt.subplots(1, 4, figsize=(17, 3.6))
    axes[0].hist(metadata["mos"], bins=30, color="tab:blue")
    axes[0].axvline(threshold, color="black", linestyle="--", linewidth=1, label=f"accuracy threshold {threshold:g}")
    axes[0].set(title="MOS", xlabel="mean opinion score", ylabel="images")
    axes[0].legend(fontsize=8)
    votes = metadata["n_votes"].dropna()
    if len(votes):
        axes[1].hist(votes, bins=30, color="tab:orange")
    else:
        axes[1].text(0.5, 0.5, "not given by the labels file", ha="center", va="center", transform=axes[1].transAxes)
    axes[1].set(title="votes per image", xlabel="votes")
    distinct = metadata[["width", "height"]].drop_duplicates().shape[0]
    axes[2].scatter(metadata["width"], metadata["height"], s=4, alpha=0.4)
    axes[2].set(title=f"resolution ({distinct} distinct)", xlabel="width (px)", ylabel="height (px)")
    if squashing_outlier(metadata["width"]) or squashing_outlier(metadata["height"]):
        # one panorama (the rehearsal plants a 30000-px-wide one) would crowd every other size into a corner
        axes[2].set(xscale="log", yscale="log", title=f"resolution ({distinct} distinct; log axes)")
        for axis in (axes[2].xaxis, axes[2].yaxis):
            axis.set_major_formatter(FuncFormatter(_plain_tick))
            axis.set_minor_formatter(FuncFormatter(lambda value, position: _plain_tick(value, position, (2, 5))))
    counts = metadata["set"].value_counts().reindex(["train", "validation", "test"]).fillna(0)
    axes[3].bar(counts.index, counts.values, color=["tab:green", "tab:olive", "tab:red"])
    axes[3].set(title="split")
    for x, value in enumerate(counts.values):
        axes[3].text(x, value, f"{int(value)}", ha="center", va="bottom")
    figure.tight_layout()
    return figure


def squashing_outlier(sizes: pd.Series, ratio: float = 4.0) -> bool:
    """Whether the largest of `sizes` (pixels) is over `ratio` times the median: then a linear axis
    gives most of its length to that one image."""
    sizes = pd.Series(sizes).dropna()
    return bool(len(sizes)) and float(sizes.max()) > ratio * float(sizes.median())


def activation_blocks(image: np.ndarray, activations: dict[str, np.ndarray]):
    """Like Fig. 2a: an image and the channel-mean of a few of its activation blocks."""
    figure, axes = plt.subplots(1, len(activations) + 1, figsize=(4 * (len(activations) + 1), 3.4))
    axes[0].imshow(image)
    axes[0].set(title=f"input {image.shape[1]}x{image.shape[0]}")
    for axis, (name, block) in zip(axes[1:], activations.items()):
        axis.imshow(block.mean(axis=-1), cmap="magma")
        axis.set(title=f"{name}: {block.shape[1]}x{block.shape[0]}x{block.shape[2]}")
    for axis in axes:
        axis.axis("off")
    figure.tight_layout()
    return figure


def _plain_tick(value: float, position=None, digits=None) -> str:
    """A log axis' tick as a plain number ("0.3"); with `digits`, only ticks whose leading digit is
    one of them are labelled (minor ticks: 2, 3, 5 of each decade, not all eight)."""
    if value <= 0:
        return ""
    leading = round(value / 10 ** math.floor(math.log10(value) + 1e-9))
    return f"{value:g}" if digits is None or leading in digits else ""


CURVE_COLOURS = {"train": "tab:blue", "validation": "tab:orange", "drop": "0.45"}


def training_curves(results: list[dict] | dict[str, list[dict]], columns: int = 4):
    """Small multiples, one panel per trained row: training and validation MSE per epoch (log
    scale, one y scale for all panels so rows compare), and a dotted line where the learning rate
    dropped (the protocol reloads the best weights there, which explains jumps). One legend.

    `results`: row results, each with `label` and `history` = {"loss", "val_loss", "learning_rate"}
    (lists, one value per epoch; the rate is the one each epoch trained at), optionally `backbone`;
    or {group: row results}, e.g. {"features": [...], "fine-tuned": [...]}, titled "label · group"
    and sharing the epoch axis within a group only (fine-tuning runs far fewer epochs).
    Panel titles name the backbone too when the rows come from several. Returns the figure."""
    groups = results if isinstance(results, dict) else {"": list(results)}
    panels = [(group, result) for group, rows in groups.items() for result in rows]
    if not panels:
        figure, axis = plt.subplots(figsize=(4, 1.5))
        axis.text(0.5, 0.5, "no rows trained", ha="center", va="center")
        axis.axis("off")
        return figure
    several_backbones = len({result.get("backbone") for _, result in panels}) > 1
    columns = max(1, min(columns, len(panels)))
    rows = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.3 * columns, 2.4 * rows + 0.6), sharey=True, squeeze=False)
    first_of_group = {}
    for index, (axis, (group, result)) in enumerate(zip(axes.ravel(), panels)):
        history = result["history"]
        epochs = np.arange(1, len(history["loss"]) + 1)
        marker = "o" if len(history["loss"]) == 1 else None  # one epoch (the demo's fine-tuning) is a point, not a line
        axis.plot(epochs, history["loss"], color=CURVE_COLOURS["train"], linewidth=1.2, marker=marker)
        axis.plot(epochs[: len(history["val_loss"])], history["val_loss"], color=CURVE_COLOURS["validation"], linewidth=1.2, marker=marker)
        rates = np.asarray(history.get("learning_rate", []), dtype=float)
        for drop in np.flatnonzero(rates[1:] < rates[:-1]) + 1:  # epoch drop + 1 (1-based) is the first at the lower rate
            axis.axvline(drop + 0.5, color=CURVE_COLOURS["drop"], linestyle=":", linewidth=1)
        title = " · ".join(part for part in (result["label"], result.get("backbone") if several_backbones else None, group) if part)
        axis.set_title(title, fontsize=9)
        axis.set_yscale("log")
        axis.yaxis.set_major_formatter(FuncFormatter(_plain_tick))  # "0.3", not "3 x 10^-1"
        axis.yaxis.set_minor_formatter(FuncFormatter(lambda value, position: _plain_tick(value, position, (2, 3, 5))))
        axis.grid(alpha=0.3, which="both", linewidth=0.5)
        axis.tick_params(labelsize=7)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole: no "2.5" under a short run
        if group in first_of_group:
            axis.sharex(first_of_group[group])
        else:
            first_of_group[group] = axis
        if index % columns == 0:
            axis.set_ylabel("MSE", fontsize=8)
        if index + columns >= len(panels):  # nothing below it: the bottom panel of its column
            axis.set_xlabel("epoch", fontsize=8)
    for axis in axes.ravel()[len(panels):]:
        axis.set_visible(False)
    handles = [
        plt.Line2D([], [], color=CURVE_COLOURS["train"], label="training loss"),
        plt.Line2D([], [], color=CURVE_COLOURS["validation"], label="validation loss"),
        plt.Line2D([], [], color=CURVE_COLOURS["drop"], linestyle=":", label="learning rate ÷10"),
    ]
    figure.legend(handles=handles, loc="upper center", ncol=3, fontsize=8, frameon=False)
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.45 / figure.get_figheight()))
    return figure


def srcc_against_blocks(table: pd.DataFrame, backbone: str):
    """Fig. 7: test SRCC against the number of blocks (columns `blocks`, `srcc`), with the 95%
    bootstrap band when the table has `srcc_low` and `srcc_high`, and, when rows were trained with
    several seeds (`seeds` > 1), the mean over seeds with bars of one standard deviation
    (`srcc_seeds_mean`, `srcc_seeds_sd`): test-image noise and training noise side by side."""
    figure, axis = plt.subplots(figsize=(6, 3.6))
    if {"srcc_low", "srcc_high"} <= set(table.columns):
        axis.fill_between(table["blocks"], table["srcc_low"], table["srcc_high"], alpha=0.2, label="95% bootstrap interval (test images)")
    axis.plot(table["blocks"], table["srcc"], marker="o", label="test SRCC" + (" (first seed)" if _several_seeds(table) else ""))
    if _several_seeds(table):
        axis.errorbar(table["blocks"], table["srcc_seeds_mean"], yerr=table["srcc_seeds_sd"], fmt="s", markersize=3, capsize=3, alpha=0.8,
                      label=f"mean ± sd over {int(table['seeds'].max())} training seeds")
    axis.set(title=f"Single-3FC on the last k blocks ({backbone})", xlabel="k (blocks, counted from the last)", ylabel="test SRCC")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    return figure


def _several_seeds(table: pd.DataFrame) -> bool:
    return {"seeds", "srcc_seeds_mean", "srcc_seeds_sd"} <= set(table.columns) and bool((table["seeds"] > 1).any())


def failure_selection(predictions: pd.DataFrame, top_fraction: float = 0.25, count: int = 8) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The paper's selection: sort by true MOS, keep the top fraction, sort it by absolute error."""
    ranked = predictions.sort_values("true_mos", ascending=False)
    top = ranked.head(max(1, int(round(len(ranked) * top_fraction)))).copy()
    top["absolute_error"] = (top["predicted_mos"] - top["true_mos"]).abs()
    top = top.sort_values("absolute_error")
    return top, top.head(count), top.tail(count).iloc[::-1]


def image_grid(images: list[np.ndarray], captions: list[str], title: str, columns: int = 4):
    rows = int(np.ceil(len(images) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.8 * rows), squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    for axis, image, caption in zip(axes.ravel(), images, captions):
        axis.imshow(image)
        axis.set_title(caption, fontsize=10)
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def failure_grid(selection: pd.DataFrame, ava_dir, title: str):
    """Figs. 8-9: the selected images, each captioned "predicted (true)". Each image is found by the
    selection's path column (any data set's layout), or under ava_dir in AVA's layout for prediction
    tables written before that column existed (mlsp.data.image_paths)."""
    from mlsp.data import image_paths
    from mlsp.images import load_rgb

    images = [load_rgb(path) for path in image_paths(selection, ava_dir)]
    captions = [f"{p:.2f} ({t:.2f})" for p, t in zip(selection["predicted_mos"], selection["true_mos"])]
    return image_grid(images, captions, title)


def prediction_scatter(predictions: pd.DataFrame, label: str):
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    axes[0].scatter(predictions["true_mos"], predictions["predicted_mos"], s=10, alpha=0.6)
    low, high = predictions[["true_mos", "predicted_mos"]].min().min(), predictions[["true_mos", "predicted_mos"]].max().max()
    axes[0].plot([low, high], [low, high], color="black", linewidth=1)
    axes[0].set(title=f"{label}: predicted vs true MOS", xlabel="true MOS", ylabel="predicted MOS")
    bins = np.linspace(low, high, 25)
    axes[1].hist(predictions["true_mos"], bins=bins, alpha=0.6, label="true")
    axes[1].hist(predictions["predicted_mos"], bins=bins, alpha=0.6, label="predicted")
    axes[1].set(title="score distributions", xlabel="MOS")
    axes[1].legend()
    figure.tight_layout()
    return figure


INTERVAL_COLUMNS = [f"{name}{end}" for name in ("srcc", "plcc", "accuracy") for end in ("", "_low", "_high")]


def comparison_table(best: dict | None) -> pd.DataFrame:
    """Table 4 as published, with this run's best result as the last line. Its intervals (`<metric>_low`,
    `<metric>_high` in `best`, when given) fill the interval columns; the published lines have none."""
    rows = [{"method": m, "source": s, "srcc": a, "plcc": b, "accuracy": c, "note": "retrained by Hosu et al." if r else "as reported"} for m, s, a, b, c, r in paper.TABLE4]
    if best is not None:
        rows.append({"method": f"this run: {best['label']}", "source": best["source"], **{name: best.get(name, np.nan) for name in INTERVAL_COLUMNS}, "note": best["note"]})
    return pd.DataFrame(rows, columns=["method", "source", *INTERVAL_COLUMNS, "note"]).astype({name: float for name in INTERVAL_COLUMNS})


# ---- README results section -------------------------------------------------------------------

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def _load(profile: str, key: str, results_root: Path) -> dict | None:
    path = Path(results_root) / profile / f"{key}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _fmt(value, digits=3, unit=""):
    return "–" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.{digits}f}{unit}"


def _with_interval(values: dict, name: str, digits=3, unit="") -> str:
    """"0.649 [0.49, 0.77]" when the result has the metric's bootstrap interval, else "0.649"
    (results written before intervals existed); with "; 0.63 ± 0.03 over 3 seeds" after it when the
    row was trained with several seeds."""
    low, high = values.get(f"{name}_low"), values.get(f"{name}_high")
    text = _fmt(values[name], digits, unit)
    if low is not None and high is not None:
        text += f" [{_fmt(low, max(digits - 1, 1))}, {_fmt(high, max(digits - 1, 1))}]"
    mean, spread, seeds = values.get(f"{name}_seeds_mean"), values.get(f"{name}_seeds_sd"), values.get("seeds") or 1
    if seeds > 1 and mean is not None and spread is not None:
        text += f"; {_fmt(mean, max(digits - 1, 1))} ± {_fmt(spread, max(digits - 1, 1))} over {seeds} seeds"
    return text


def _has_intervals(*records) -> bool:
    return any(name.endswith("_low") for record in records if record for name in flatten(record["metrics"]))


def _signed(value) -> str:
    return "–" if value is None else f"{value:+.3f}"


def _rows(lines: list[str], measured: dict, published: dict) -> None:
    for label, values in measured.items():
        theirs = published.get(label, (None, None, None))
        lines.append(
            f"| {label} | {_with_interval(values, 'srcc')} | {_fmt(theirs[0])} | {_with_interval(values, 'plcc')} | {_fmt(theirs[1])} "
            f"| {_with_interval(values, 'accuracy', 1, '%')} | {_fmt(theirs[2], 1, '%')} | {_count(values.get('out_of_range'))} |"
        )


def _count(value) -> str:
    """Predictions outside the score range (kept, not clipped; mlsp.metrics.evaluate), or "–" for results without the count."""
    return "–" if value is None else str(int(value))


def _claims(lines: list[str], record: dict) -> None:
    lines.append(
        f"\n**The paper's claims, paired** (SRCC of a minus b on the test images both were tested on, with a paired "
        f"{record.get('confidence', 0.95):.0%} bootstrap interval, {record.get('resamples', '?')} resamples; notebook 07)\n"
    )
    lines.append("| claim | a | b | difference | interval | images | seeds | verdict |\n|---|---|---|---|---|---|---|---|")
    for line in record["metrics"].values():
        interval = "–" if line.get("low") is None else f"[{_signed(line['low'])}, {_signed(line['high'])}]"
        # the difference and interval are the first seed's; with several seeds the verdict needs them all to agree
        per_seed = f" ({line['seed_verdicts']})" if (line.get("seeds") or 1) > 1 else ""
        note = f"; {line['note']}" if line.get("note") else ""
        lines.append(f"| {line['claim']} | {line['a']} | {line['b']} | {_signed(line['difference'])} | {interval} | {line['images']} | {line.get('seeds', 1)}{per_seed} | {line['verdict']}{note} |")


def results_section(profile: str, results_root: Path = RESULTS_DIR) -> str:
    header = "| row | SRCC | paper | PLCC | paper | accuracy | paper | out of range |\n|---|---|---|---|---|---|---|---|"
    data = _load(profile, "data", results_root)
    lines = [f"Generated by `mlsp readme --profile {profile}` from `results/{profile}/`; do not edit by hand."]
    table2, table3 = _load(profile, "table2", results_root), _load(profile, "table3", results_root)
    if _has_intervals(table2, table3):
        lines.append("Brackets: 95% percentile bootstrap intervals over the test images (paired resamples of predicted and true MOS). "
                     "Where a row was trained with several seeds, the mean ± standard deviation over them follows: the training noise.")
    ava = not data or data.get("data_format", "ava") == "ava"  # the paper's numbers are AVA's: beside other data, none
    if data:
        scale = "" if ava else f"; MOS on {data['metrics']['score_min']:g}-{data['metrics']['score_max']:g}, accuracy at MOS > {data['metrics']['accuracy_threshold']:g}; paper columns left empty (the paper's numbers are AVA's)"
        lines.append(f"\nData: {data['metrics']['images']} images ({data['metrics']['test_images']} test), {data['metrics']['unreadable']} unreadable; {data.get('data_note', '')}{scale}")
    if table2:
        lines.append(f"\n**Table 2** (rescaled input; backbone `{table2['backbone']}`, weights `{table2['weights']}`; paper: Inception-v3)\n")
        lines.append(header)
        for group in ("features", "finetune"):
            measured = {f"{label} [{'fine-tuned' if group == 'finetune' else 'features'}]": value for label, value in table2["metrics"].get(group, {}).items()}
            published = {f"{label} [{'fine-tuned' if group == 'finetune' else 'features'}]": value for label, value in paper.TABLE2[group].items() if ava}
            _rows(lines, measured, published)
    if table3:
        references = {backbone: paper.table3_reference(backbone) for backbone in table3["metrics"]}  # (paper backbone, its rows)
        note = "; ".join(f"paper columns for `{b}`: {reference}" for b, (reference, _) in references.items())
        lines.append(f"\n**Table 3** (original resolution; weights `{table3['weights']}`; {note})\n")
        lines.append(header)
        for backbone, measured in table3["metrics"].items():
            published = references[backbone][1] if ava else {}
            _rows(lines, {f"{label} [{backbone}]": value for label, value in measured.items()}, {f"{label} [{backbone}]": value for label, value in published.items()})
    resolution = _load(profile, "resolution", results_root)
    if resolution:
        m = resolution["metrics"]
        lines.append(
            f"\n**Resolution only**: SRCC(pixels, MOS) {_with_interval(m, 'pixels_mos_srcc')}{' (paper 0.188)' if ava else ''}; "
            f"11-9-7-2 network {_with_interval(m, 'network_accuracy', 2, '%')} vs majority {_fmt(m['majority_accuracy'], 2)}%{' (paper 72.40% vs 71.08%)' if ava else ''}"
            + (f" on {resolution['test_images']} test images." if "test_images" in resolution else ".")
        )
    claims = _load(profile, "claims", results_root)
    if claims and claims["metrics"]:
        _claims(lines, claims)
    return "\n".join(lines)


def update_readme(profile: str, check_only: bool = False, readme: Path = REPO_ROOT / "README.md", results_root: Path = RESULTS_DIR) -> bool:
    """Rewrite the README's results section; returns whether it changed (or would change)."""
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise ValueError(f"{readme}: no {BEGIN} ... {END} markers")
    section = f"{BEGIN}\n{results_section(profile, results_root)}\n{END}"
    updated = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: section, text, flags=re.S)
    if updated != text and not check_only:
        readme.write_text(updated)
    return updated != text
