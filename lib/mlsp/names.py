"""The kit's vocabularies, the rows of the paper's tables and its crop geometry, without TensorFlow.

`mlsp run` checks every parameter of a profile against these before any notebook starts
(mlsp.parameter_rules); when they lived beside the code that uses them, that check imported Keras
and TensorFlow first, ~6 s of every run; notebook 00 needs the crops' size (for the smallest image
it keeps) and nothing else of TensorFlow. backbones, features, heads, train, distribute and
experiments take them from here.
"""
from __future__ import annotations

from dataclasses import dataclass

BACKBONES = ("inception_v3", "inception_resnet_v2", "efficientnet_lite0")
INPUT_MODES = ("original", "rescaled")  # mlsp.features
FEATURE_KINDS = ("narrow", "wide")  # mlsp.features
HEADS = ("single_1fc", "single_3fc", "multi_3fc", "pool_3fc")  # mlsp.heads (Table 1)
DEFAULT_DROPOUT = (0.25, 0.25, 0.5)  # the 3FC layers' dropout (mlsp.heads; the authors' kutils fc_layers)
GRAPH_OPTIMIZER_CHOICES = ("auto", "on", "off")  # mlsp.train.configure_graph_optimizer
STRATEGIES = ("none", "mirrored")  # mlsp.distribute
CROP_FRACTION = 0.875  # the augmented views: crops of 87.5% of width and height (mlsp.features)


def crop_size(height: int, width: int) -> tuple[int, int]:
    """(height, width) in pixels of an augmented view of a height x width image."""
    return int(round(height * CROP_FRACTION)), int(round(width * CROP_FRACTION))


@dataclass(frozen=True)
class Row:
    """One row of Table 2 or 3: its head (HEADS), input mode (INPUT_MODES), feature kind
    (FEATURE_KINDS), whether it trains on the 8 augmented views, how many of the last blocks it
    reads (None: all) and its dropout."""

    label: str
    head: str
    mode: str
    kind: str
    augment: bool
    last_blocks: int | None = None  # None: all blocks
    dropout: tuple = DEFAULT_DROPOUT


TABLE2_FEATURE_ROWS = [
    Row("Single-3FC (-aug)", "single_3fc", "rescaled", "narrow", False),
    Row("Single-3FC", "single_3fc", "rescaled", "narrow", True),
    Row("Multi-3FC", "multi_3fc", "rescaled", "narrow", True),
    Row("Single-1FC (all)", "single_1fc", "rescaled", "narrow", True),
    Row("Single-1FC (5)", "single_1fc", "rescaled", "narrow", True, last_blocks=5),
]
# The same rows end to end, plus Single-3FC with the higher dropout of "(+do)".
TABLE2_FINETUNE_ROWS = [
    *TABLE2_FEATURE_ROWS[:3],
    Row("Single-3FC (+do)", "single_3fc", "rescaled", "narrow", True, dropout=(0.5, 0.5, 0.75)),
    *TABLE2_FEATURE_ROWS[3:],
]
TABLE3_ROWS = [
    Row("Single-3FC (-aug)", "single_3fc", "original", "narrow", False),
    Row("Single-3FC", "single_3fc", "original", "narrow", True),
    Row("Pool-3FC (-aug)", "pool_3fc", "original", "wide", False),
    Row("Pool-3FC", "pool_3fc", "original", "wide", True),
]
