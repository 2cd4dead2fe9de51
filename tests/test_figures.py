"""What the figures say: curves labelled with the classes' names, legends in the lesson's
words, grid titles that fit under the row above."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

from catsdogs_helpers import plotting


def _texts(fig) -> list[str]:
    """Every axis label, title and legend entry of ``fig``."""
    out = []
    for ax in fig.axes:
        out += [ax.get_xlabel(), ax.get_ylabel(), ax.get_title()]
        legend = ax.get_legend()
        out += [t.get_text() for t in legend.get_texts()] if legend else []
    return out


@pytest.fixture
def scores():
    rng = np.random.default_rng(0)
    is_cat = rng.random(200) < 0.5
    return is_cat, np.clip(is_cat * 0.6 + rng.random(200) * 0.5, 0, 1)


def test_roc_and_precision_recall_name_the_classes(scores):
    is_cat, p_cat = scores
    roc = " | ".join(_texts(plotting.plot_roc(is_cat, p_cat, "Cat", "Dog")))
    pr = " | ".join(_texts(plotting.plot_precision_recall(is_cat, p_cat, "Cat")))
    for text in (roc, pr):
        assert "Positive label" not in text and "vs rest" not in text, text
    assert "Dog called Cat" in roc and "Cat found" in roc and "Cat against Dog" in roc
    assert "Cat found" in pr and "called Cat" in pr


def test_the_history_legend_says_label_smoothing():
    history = pd.DataFrame({
        "epoch": [1, 2], "train_loss": [0.9, 0.7], "train_nll": [0.7, 0.5], "val_loss": [0.6, 0.5],
        "train_acc": [0.6, 0.7], "val_acc": [0.65, 0.75], "lr": [0.1, 0.01],
    })  # fmt: skip
    texts = _texts(plotting.plot_history(history))
    assert "train, with label smoothing" in texts and not any("smoothed" in t for t in texts)


def test_two_line_titles_fit_under_the_row_above():
    images = [np.zeros((32, 32, 3), np.uint8)] * 12
    table = pd.DataFrame({
        "predicted": ["Dog"] * 12, "confidence": [0.97] * 12, "label": ["Cat"] * 12,
    })  # fmt: skip
    titles, colors = plotting._prediction_titles(table)
    assert titles[0] == "Dog 97%\n(is Cat)"
    fig = plotting.show_images(images, titles, colors, ncols=6)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    above, below = fig.axes[0], fig.axes[6]
    title_top = below.title.get_window_extent(renderer).y1
    assert title_top <= above.get_window_extent(renderer).y0, "the title stays below row 1"
