"""Section 4.3's resolution-only baseline reports each metric with its bootstrap interval."""
import numpy as np
import pandas as pd

from mlsp import experiments, paper, resolution


def test_baseline_metrics_come_with_intervals_and_a_table_beside_the_paper():
    rng = np.random.default_rng(0)
    n = 60
    width = rng.integers(200, 800, size=n)
    metadata = pd.DataFrame({"image_id": [str(i) for i in range(n)], "width": width, "height": rng.integers(200, 800, size=n),
                             "mos": 3 + width / 200 + rng.normal(0, 0.5, size=n)})  # larger images rated higher
    split = experiments.Split(metadata, np.arange(40), np.arange(40, 48), np.arange(48, 60))
    outcome = resolution.run(split, seed=0, epochs=3)
    summary = resolution.summary(outcome)
    for name in ("pixels_mos_srcc", "pixels_mos_srcc_test", "network_accuracy"):
        assert summary[f"{name}_low"] <= summary[name] <= summary[f"{name}_high"], name
    assert summary["pixels_mos_srcc_low"] > 0  # the planted dependence is resolved on 60 images
    assert "majority_accuracy_low" not in summary and "history" not in summary
    table = resolution.summary_table(outcome, paper.RESOLUTION).set_index("metric")
    assert table.loc["network_accuracy", "paper (AVA)"] == 72.40 and np.isnan(table.loc["majority_accuracy", "low"])
    assert table.loc["pixels_mos_srcc", "high"] == summary["pixels_mos_srcc_high"]


def test_a_network_that_learns_nothing_predicts_the_majority_not_the_minority():
    """Sizes that say nothing about quality (independent of the MOS), one step per epoch: the network
    can do no better than the majority class, and must not do worse by keeping its first weights."""
    rng = np.random.default_rng(1)
    n = 120
    metadata = pd.DataFrame({"image_id": [str(i) for i in range(n)], "width": rng.integers(200, 800, size=n), "height": rng.integers(200, 800, size=n),
                             "mos": np.where(rng.random(n) < 0.7, 6.5, 3.5)})  # 70% high, whatever the size
    split = experiments.Split(metadata, np.arange(90), np.arange(90, 100), np.arange(100, n))
    outcome = resolution.run(split, seed=0, epochs=3)
    assert outcome["network_accuracy"] == outcome["majority_accuracy"]
    model = resolution.resolution_network()
    resolution.start_at_prior(model, np.array([1, 1, 1, 0]))
    np.testing.assert_allclose(model.get_layer("low_high").get_weights()[1], np.log([0.25, 0.75]), rtol=1e-6)
