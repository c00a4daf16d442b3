"""Metrics from confusion matrices: the paper's Table 2 rows from its Figs 3-4, and sklearn."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import PAPER
from sklearn.metrics import confusion_matrix as sk_confusion
from sklearn.metrics import precision_recall_fscore_support

from temvirus.io import write_csv
from temvirus.metrics import confusion_frame, confusion_matrix, per_class, read_confusion, summary

FIGURES = {
    "fig3_confusion_custom.csv": ("Custom", "scratch"),
    "fig4_confusion_densenet201_transfer.csv": ("DenseNet201", "transfer"),
}


@pytest.mark.parametrize("figure", FIGURES)
def test_papers_confusion_matrices_give_its_table2_rows(figure):
    model, training = FIGURES[figure]
    table = pd.read_csv(PAPER / "table2_performance.csv")
    row = table[(table.model == model) & (table.training == training) & (table.method == "representative")].iloc[0]
    counts = read_confusion(PAPER / figure)
    assert counts.to_numpy().sum() == 1900  # the paper's test patches
    ours = summary(counts.to_numpy())
    for key in ("accuracy", "precision_macro", "recall_macro", "f1_macro"):
        assert round(ours[key], 3) == row[key], key


@pytest.mark.parametrize("figure", FIGURES)
def test_metrics_agree_with_sklearn_on_the_papers_matrices(figure):
    cm = read_confusion(PAPER / figure).to_numpy()
    n = len(cm)
    true = np.repeat(np.arange(n), cm.sum(axis=1))
    pred = np.concatenate([np.repeat(np.arange(n), cm[r]) for r in range(n)])
    assert np.array_equal(confusion_matrix(true, pred, n), cm)
    p, r, f, s = precision_recall_fscore_support(true, pred, labels=range(n), zero_division=0)
    pc = per_class(cm)
    np.testing.assert_allclose(pc["precision"], p, rtol=0, atol=1e-12)
    np.testing.assert_allclose(pc["recall"], r, rtol=0, atol=1e-12)
    np.testing.assert_allclose(pc["f1"], f, rtol=0, atol=1e-12)
    assert np.array_equal(pc["support"], s)


def test_classes_never_predicted_or_absent_count_as_zero_like_sklearn():
    gen = np.random.default_rng(3)
    true = gen.integers(0, 4, 200)  # class 4 never present
    pred = np.where(gen.random(200) < 0.6, true, gen.integers(0, 3, 200))  # class 3 and 4 rarely/never predicted
    pred[pred == 3] = 2
    cm = confusion_matrix(true, pred, 5)
    assert np.array_equal(cm, sk_confusion(true, pred, labels=range(5)))
    p, r, f, _ = precision_recall_fscore_support(true, pred, labels=range(5), zero_division=0, average="macro")
    ours = summary(cm)
    assert ours["precision_macro"] == pytest.approx(p, abs=1e-12)
    assert ours["recall_macro"] == pytest.approx(r, abs=1e-12)
    assert ours["f1_macro"] == pytest.approx(f, abs=1e-12)
    assert ours["accuracy"] == pytest.approx(np.mean(true == pred), abs=1e-12)


def test_confusion_matrix_rejects_bad_indices():
    with pytest.raises(ValueError, match="outside 0..2"):
        confusion_matrix([0, 3], [0, 1], 3)
    with pytest.raises(ValueError, match="differ in shape"):
        confusion_matrix([0, 1], [0], 3)


def test_confusion_csv_layout_is_the_papers(tmp_path):
    paper = PAPER / "fig3_confusion_custom.csv"
    counts = read_confusion(paper)
    out = tmp_path / "confusion.csv"
    write_csv(out, confusion_frame(counts.to_numpy(), list(counts.columns)))
    assert out.read_bytes().replace(b"\r\n", b"\n").strip() == paper.read_bytes().replace(b"\r\n", b"\n").strip()


def test_read_confusion_names_the_file_of_a_bad_matrix(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("true\\pred,A,B\nA,1,0\nC,0,1\n")
    with pytest.raises(ValueError, match=f"{bad}: expected a square matrix"):
        read_confusion(bad)


def test_wilson_interval_matches_the_closed_form_and_brackets_the_accuracy():
    """Wilson (1927): (p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)."""
    from scipy.stats import norm

    from temvirus.metrics import accuracy_interval, wilson_interval

    z = norm.ppf(0.975)
    for k, n in [(1712, 1900), (0, 28), (28, 28), (4, 28)]:
        p = k / n
        centre, half = p + z * z / (2 * n), z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        low, high = wilson_interval(k, n)
        assert (low, high) == pytest.approx(
            ((centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)), abs=1e-9
        )
        assert 0 <= low <= p <= high <= 1
    assert wilson_interval(0, 28)[0] == 0 and wilson_interval(28, 28)[1] == 1
    cm = read_confusion(PAPER / "fig3_confusion_custom.csv").to_numpy()
    low, high = accuracy_interval(cm)
    assert low < 0.901 < high and high - low < 0.03  # 1900 patches: about +-1.4 points
    with pytest.raises(ValueError, match="got 3 of 2"):
        wilson_interval(3, 2)


def test_row_normalised_rows_sum_to_one_and_per_class_frame():
    from temvirus.metrics import per_class_frame, row_normalised

    cm = read_confusion(PAPER / "fig4_confusion_densenet201_transfer.csv")
    rows = row_normalised(cm.to_numpy())
    np.testing.assert_allclose(rows.sum(axis=1), 1)
    np.testing.assert_allclose(np.diag(rows), per_class(cm.to_numpy())["recall"])  # the diagonal is the recall
    assert row_normalised(np.zeros((2, 2))).sum() == 0
    frame = per_class_frame(cm.to_numpy(), list(cm.index))
    assert list(frame.columns) == ["class", "precision", "recall", "f1", "support"]
    assert frame["support"].sum() == 1900 and frame["f1"].mean() == pytest.approx(0.921, abs=5e-4)
