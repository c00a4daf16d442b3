"""Image-level splits: the paper's dealing rule, the bad control, the folder split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import PAPER

from temvirus.classes import load_table1
from temvirus.split import (
    SPLIT_COLUMNS,
    NoParticlesWarning,
    agreement,
    assign_split,
    bad_counts,
    write_agreement,
    write_split,
)


def kept_table(counts: dict[str, int], seed: int = 0, folder: str = "train") -> pd.DataFrame:
    """A kept-image table: ``counts[class]`` images with random distinct particle counts."""
    rng = np.random.default_rng(seed)
    rows = []
    for cls, n in counts.items():
        particles = rng.permutation(np.arange(1, n + 1)) * 3
        for i in range(n):
            image_id = f"{cls}_{i:03d}"
            rows.append((image_id, cls, folder, int(particles[i]), image_id, True))
    columns = ["image_id", "class", "folder_subset", "n_particles", "overlap_group", "kept"]
    return pd.DataFrame(rows, columns=columns)


def test_representative_deals_train_test_train_validation_train_by_particle_count():
    images = pd.DataFrame(
        {
            "image_id": list("abcdefg"),
            "class": "Orf",
            "folder_subset": "train",
            "n_particles": [7, 1, 6, 2, 5, 3, 4],
            "overlap_group": list("abcdefg"),
            "kept": True,
        }
    )
    split = assign_split(images, "representative")
    by_count = split.sort_values("n_particles")
    assert by_count.subset.tolist() == ["train", "test", "train", "validation", "train", "train", "test"]
    assert list(split.columns) == SPLIT_COLUMNS
    assert split.image_id.tolist() == sorted(split.image_id)


def test_ties_in_particle_count_are_broken_by_image_id():
    images = pd.DataFrame(
        {
            "image_id": ["z", "m", "a", "q"],
            "class": "Orf",
            "folder_subset": "train",
            "n_particles": [2, 2, 2, 1],
            "overlap_group": ["z", "m", "a", "q"],
            "kept": True,
        }
    )
    labels = assign_split(images, "representative").set_index("image_id").subset
    # order q (1), a, m, z (2 each, by id)
    assert labels.to_dict() == {"q": "train", "a": "test", "m": "train", "z": "validation"}
    shuffled = images.sample(frac=1, random_state=3)
    assert assign_split(shuffled, "representative").equals(assign_split(images, "representative"))


def test_bad_split_takes_blocks_of_60_20_20_in_particle_order():
    images = kept_table({"Ebola": 10})
    split = assign_split(images, "bad").sort_values("n_particles")
    assert split.subset.tolist() == ["train"] * 6 + ["validation"] * 2 + ["test"] * 2
    assert [bad_counts(n) for n in (1, 2, 3, 5, 9, 14, 129)] == [
        (1, 0, 0),
        (2, 0, 0),
        (1, 1, 1),
        (3, 1, 1),
        (5, 2, 2),
        (8, 3, 3),
        (77, 26, 26),
    ]


def test_given_split_is_the_folder_and_split_excludes_dropped_and_empty_images():
    images = kept_table({"Lassa": 4})
    images["folder_subset"] = ["test", "train", "validation", "train"]
    images.loc[0, "kept"] = False
    images.loc[1, "n_particles"] = 0
    with pytest.warns(NoParticlesWarning, match="Lassa_001"):
        split = assign_split(images, "given")
    assert split.set_index("image_id").subset.to_dict() == {"Lassa_002": "validation", "Lassa_003": "train"}


def test_unknown_method_is_rejected():
    with pytest.raises(ValueError, match="unknown split method 'random'"):
        assign_split(kept_table({"Orf": 3}), "random")


def test_representative_reproduces_table1_image_counts_for_all_22_classes():
    paper = load_table1(PAPER / "table1_dataset.csv")
    split = assign_split(kept_table(paper.images_total.to_dict(), seed=5), "representative")
    counts = split.groupby(["class", "subset"]).size().unstack()
    assert len(counts) == 22
    for subset, column in [("train", "images_train"), ("validation", "images_val"), ("test", "images_test")]:
        assert counts[subset].to_dict() == paper[column].to_dict()


def test_agreement_per_class_and_overall():
    rep = assign_split(kept_table({"Orf": 5, "Nipah": 5}), "representative")
    rep["folder_subset"] = rep["subset"]
    first_orf = rep.index[rep["class"] == "Orf"][0]
    rep.loc[first_orf, "folder_subset"] = "validation" if rep.loc[first_orf, "subset"] != "validation" else "train"
    table = agreement(rep).set_index("class")
    assert table.loc["Nipah", "agreement"] == 1.0
    assert table.loc["Orf", "same_subset"] == 4 and table.loc["Orf", "agreement"] == 0.8
    assert table.loc["all", "images"] == 10 and table.loc["all", "agreement"] == 0.9
    assert table.loc["all", ["train_both", "validation_both", "test_both"]].sum() == 9


def test_written_split_is_deterministic_and_agreement_file(tmp_path):
    kept_csv = tmp_path / "images_kept.csv"
    images = kept_table({"Cowpox": 12, "TBE": 7}, seed=2)
    images["folder_subset"] = np.where(np.arange(len(images)) % 3 == 0, "test", "train")
    images.to_csv(kept_csv, index=False)
    for name in ("one", "two"):
        for method in ("representative", "bad"):
            write_split(kept_csv, tmp_path / name / f"split_{method}.csv", method)
    for method in ("representative", "bad"):
        assert (tmp_path / "one" / f"split_{method}.csv").read_bytes() == (
            tmp_path / "two" / f"split_{method}.csv"
        ).read_bytes()
    splits = {m: tmp_path / "one" / f"split_{m}.csv" for m in ("representative", "bad")}
    write_agreement(splits, tmp_path / "agree.csv")
    table = pd.read_csv(tmp_path / "agree.csv").set_index(["method", "class"])
    for method, path in splits.items():
        split = pd.read_csv(path)
        assert table.loc[(method, "all"), "same_subset"] == int((split.subset == split.folder_subset).sum())
        assert table.loc[(method, "all"), "images"] == 19
        assert table.loc[(method, "TBE"), "images"] == 7


def test_a_class_a_split_method_leaves_out_of_a_subset_is_refused_at_the_split(tmp_path):
    """Two images of TBE: the representative split deals them to train and test, none to validation.
    Before: the split was written, and the run stopped at augment, after the rescaling and the patches
    (minutes to hours on the published data); a class not in classes.classification is no matter."""
    kept_csv = tmp_path / "images_kept.csv"
    kept_table({"Cowpox": 12, "TBE": 2}, seed=2).to_csv(kept_csv, index=False)
    out = tmp_path / "split_representative.csv"
    with pytest.raises(ValueError) as caught:
        write_split(kept_csv, out, "representative", ["Cowpox", "TBE"])
    assert str(caught.value).startswith(
        f"{kept_csv}: class 'TBE' of classes.classification has no validation images with particles of split "
        "method 'representative' (its images: train ['TBE_"
    )
    assert "; validation none; test ['TBE_" in str(caught.value) and not out.exists()
    write_split(kept_csv, out, "representative", ["Cowpox"])
    assert set(pd.read_csv(out)["class"]) == {"Cowpox", "TBE"}
