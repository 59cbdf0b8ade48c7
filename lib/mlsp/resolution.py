"""Section 4.3's resolution-only baseline: how much do width and height alone say about quality?

The paper: SRCC(pixel count, MOS) = 0.188 on AVA, and a 4-layer network (11-9-7-2 neurons, softmax
cross-entropy) on width and height, each divided by its maximum, reaches 72.40% accuracy at MOS 5
against the 71.08% of always answering "high".
"""
from __future__ import annotations

import keras
import numpy as np
import pandas as pd

from mlsp import metrics


def pixels_mos_srcc(metadata) -> float:
    return metrics.srcc(metadata["width"] * metadata["height"], metadata["mos"])


def pixels_mos_interval(metadata, seed: int) -> tuple[float, float]:
    """The 95% bootstrap interval of pixels_mos_srcc over the images of `metadata`."""
    return metrics.interval("srcc", (metadata["width"] * metadata["height"]).to_numpy(), metadata["mos"].to_numpy(), seed=seed)


def resolution_network() -> keras.Model:
    inputs = keras.Input(shape=(2,), name="width_height")
    x = inputs
    for position, units in enumerate((11, 9, 7), start=1):
        x = keras.layers.Dense(units, activation="relu", name=f"dense{position}")(x)
    outputs = keras.layers.Dense(2, activation="softmax", name="low_high")(x)
    return keras.Model(inputs, outputs, name="resolution_11_9_7_2")


def start_at_prior(model: keras.Model, labels: np.ndarray) -> None:
    """Start the output layer's biases at the log of the training classes' shares, so that before any
    step the network predicts the majority class, and training has to earn anything above it.

    From a zero bias, He-initialised ReLU layers put the first predictions near 50/50, and on a small
    set (the demo's ~100 training images make one step per epoch at batch 128) early stopping can keep
    those first weights: the demo's network then called every test image the minority class (35% against
    a 65% majority). On AVA thousands of steps erase the starting point; like mlsp.train.start_at_mean
    for the MOS heads, it is a starting point only, the protocol is the paper's."""
    shares = np.bincount(np.asarray(labels, dtype=np.int64), minlength=2) / max(len(labels), 1)
    layer = model.get_layer("low_high")
    kernel, _ = layer.get_weights()
    layer.set_weights([kernel, np.log(np.clip(shares, 1e-6, None)).astype(kernel.dtype)])


def run(split, seed: int, epochs: int = 200, batch_size: int = 128, learning_rate: float = 1e-3) -> dict:
    """Both measurements on an experiments.Split: "high" means MOS above the split's accuracy
    threshold (AVA's 5, as in the paper, unless notebook 00 recorded another scale)."""
    keras.utils.set_random_seed(seed)
    threshold = split.scale.accuracy_threshold
    table = split.metadata
    sizes = table[["width", "height"]].to_numpy(dtype=np.float32)
    sizes = sizes / sizes[split.train].max(axis=0)  # each divided by its maximum (over training images)
    labels = (table["mos"].to_numpy() > threshold).astype(np.int64)
    model = resolution_network()
    start_at_prior(model, labels[split.train])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(
        sizes[split.train], labels[split.train], validation_data=(sizes[split.validation], labels[split.validation]),
        epochs=epochs, batch_size=batch_size, verbose=0,
        callbacks=[keras.callbacks.EarlyStopping(monitor="val_loss", patience=max(5, epochs // 10), restore_best_weights=True)],
    )
    predicted_high = model.predict(sizes[split.test], verbose=0).argmax(axis=1)
    true_mos = table["mos"].to_numpy()[split.test]
    (all_low, all_high), (test_low, test_high) = pixels_mos_interval(table, seed), pixels_mos_interval(table.iloc[split.test], seed)
    accuracy_low, accuracy_high = metrics.interval(metrics.agreement_along, predicted_high, labels[split.test], seed=seed)
    return {
        "pixels_mos_srcc": pixels_mos_srcc(table),
        "pixels_mos_srcc_low": all_low,
        "pixels_mos_srcc_high": all_high,
        "pixels_mos_srcc_test": pixels_mos_srcc(table.iloc[split.test]),
        "pixels_mos_srcc_test_low": test_low,
        "pixels_mos_srcc_test_high": test_high,
        "network_accuracy": float(100 * np.mean(predicted_high == labels[split.test])),
        "network_accuracy_low": accuracy_low,
        "network_accuracy_high": accuracy_high,
        "majority_accuracy": metrics.majority_accuracy(true_mos, threshold),
        "epochs": len(history.history["loss"]),
        "history": {key: [float(v) for v in values] for key, values in history.history.items()},
        "model": model,
        "sizes_scale": table[["width", "height"]].to_numpy()[split.train].max(axis=0).tolist(),
    }


SUMMARY = ("pixels_mos_srcc", "pixels_mos_srcc_test", "network_accuracy", "majority_accuracy")


def summary(outcome: dict) -> dict:
    """The metrics of `run` for the result JSON: SUMMARY, and each one's `_low`/`_high` where it has them."""
    return {name: outcome[name] for base in SUMMARY for name in (base, f"{base}_low", f"{base}_high") if name in outcome}


def summary_table(outcome: dict, published: dict) -> pd.DataFrame:
    """One line per metric of SUMMARY: this run's value, its 95% interval (NaN where none), the paper's."""
    return pd.DataFrame(
        [{"metric": name, "this run": outcome[name], "low": outcome.get(f"{name}_low", np.nan), "high": outcome.get(f"{name}_high", np.nan), "paper (AVA)": published.get(name, np.nan)} for name in SUMMARY]
    )
