"""Short reasons for per-image failures, for reports and CSVs."""
from __future__ import annotations


def first_line(error: Exception) -> str:
    """Type and first line of an error: TensorFlow's messages run to pages of graph context, and a
    report line per image needs only what happened."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
