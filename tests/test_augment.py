"""Balancing the training set by D4 transforms: counts, pixels, pairs, reduction, determinism."""

from __future__ import annotations

import re
import subprocess
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from conftest import copy_real_image, snakemake_cmd

from temvirus.augment import AUGMENTED_COLUMNS, TRANSFORMS, apply_transform, augment, plan
from temvirus.io import sha256_file


def test_transforms_are_the_eight_elements_of_d4():
    a = np.arange(9).reshape(3, 3)
    results = {name: apply_transform(a, name) for name in TRANSFORMS}
    assert len({r.tobytes() for r in results.values()}) == 8
    assert np.array_equal(results["rot90"], np.rot90(a))
    assert np.array_equal(results["flip_h"], a[:, ::-1]) and np.array_equal(results["flip_v"], a[::-1])
    assert np.array_equal(results["transpose"], a.T)
    assert np.array_equal(results["antitranspose"], np.array([[a[2 - j, 2 - i] for j in range(3)] for i in range(3)]))
    batch = np.stack([a, a + 10])  # works on the last two axes of a stack
    assert np.array_equal(apply_transform(batch, "rot270")[1], np.rot90(a + 10, 3))
    with pytest.raises(ValueError, match="unknown transform 'rot45'"):
        apply_transform(a, "rot45")


def train_table(sizes: dict[str, int]) -> pd.DataFrame:
    ids = [(f"{cls}_img_p{i:03d}_v00", cls) for cls, n in sizes.items() for i in range(n)]
    table = pd.DataFrame(ids, columns=["patch_id", "class"])
    table["subset"] = "train"
    table["index"] = np.arange(len(table))
    return table


def test_plan_balances_small_classes_and_reduces_large_ones():
    train = train_table({"Orf": 3, "Ebola": 10, "CCHF": 40, "Dengue": 5})
    table = plan(train, ["Orf", "Ebola", "CCHF"], per_class=20, seed=1)
    assert list(table.columns) == AUGMENTED_COLUMNS
    assert table["index"].tolist() == list(range(60))
    assert table.groupby("class", sort=False).size().to_dict() == {"Orf": 20, "Ebola": 20, "CCHF": 20}
    assert table.aug_id.is_unique
    # originals first, in patch order, then distinct transforms spread evenly over sources
    ebola = table[table["class"] == "Ebola"]
    assert ebola["transform"].tolist()[:10] == ["identity"] * 10
    assert ebola.source_patch_id.tolist()[:10] == train.patch_id[train["class"] == "Ebola"].tolist()
    extra = ebola.iloc[10:]
    assert (extra["transform"] != "identity").all()
    assert not extra.duplicated(["source_patch_id", "transform"]).any()
    assert set(Counter(extra.source_patch_id).values()) == {1}  # 10 extras over 10 sources
    # 3 sources x 8 transforms = 24 pairs >= 20: no pair repeats
    orf = table[table["class"] == "Orf"]
    assert not orf.duplicated(["source_patch_id", "transform"]).any()
    assert max(Counter(orf.source_patch_id).values()) - min(Counter(orf.source_patch_id).values()) <= 1
    # the large class is randomly reduced: 20 distinct originals, not simply the first 20
    cchf = table[table["class"] == "CCHF"]
    assert (cchf["transform"] == "identity").all() and cchf.source_patch_id.is_unique
    assert cchf.source_patch_id.tolist() != train.patch_id[train["class"] == "CCHF"].tolist()[:20]
    assert "Dengue" not in set(table["class"])  # not a classification class


def test_pairs_repeat_only_after_all_eight_are_used():
    table = plan(train_table({"Orf": 2}), ["Orf"], per_class=21, seed=3)
    first, rest = table.iloc[:16], table.iloc[16:]
    assert len(first.drop_duplicates(["source_patch_id", "transform"])) == 16
    assert rest.aug_id.str.endswith("_c1").all() and table.aug_id.is_unique


def test_plan_is_deterministic_by_seed():
    train = train_table({"Orf": 4, "CCHF": 30})
    same = plan(train, ["Orf", "CCHF"], 12, seed=5)
    pd.testing.assert_frame_equal(same, plan(train, ["Orf", "CCHF"], 12, seed=5))
    assert not same.equals(plan(train, ["Orf", "CCHF"], 12, seed=6))


def test_missing_class_is_an_error_naming_the_key_and_the_classes_there_are():
    """A classification class without training patches (in the workflow check_classes refuses a
    class the data lack before augment runs; a class with no training images gets here): augment says so."""
    with pytest.raises(
        ValueError,
        match=r"class 'Nipah' of classes\.classification has no training patches; "
        r"classes with training patches: \['Orf'\]",
    ):
        plan(train_table({"Orf": 4}), ["Orf", "Nipah"], 8, seed=0)


@pytest.fixture
def patch_files(tmp_path):
    """A patches.csv with train, validation and test rows and a random train.npy."""
    train = train_table({"Orf": 3, "Ebola": 9})
    held_out = [
        pd.DataFrame(
            {"patch_id": [f"{s}o_p000_v00", f"{s}e_p000_v00"], "class": ["Orf", "Ebola"], "subset": s, "index": [0, 1]}
        )
        for s in ("validation", "test")
    ]
    table = pd.concat([train, *held_out])
    table.insert(1, "image_id", table.patch_id.str.replace(r"_p\d+_v\d+$", "", regex=True))
    table.to_csv(tmp_path / "patches.csv", index=False)
    pixels = np.random.default_rng(0).integers(0, 65535, (len(train), 16, 16), dtype=np.uint16)
    np.save(tmp_path / "train.npy", pixels)
    return tmp_path, train, pixels


def test_augment_writes_each_row_as_its_transformed_source(patch_files):
    base, train, pixels = patch_files
    table = augment(
        base / "patches.csv", base / "train.npy", base / "aug.npy", base / "aug.csv", ["Orf", "Ebola"], 6, seed=2
    )
    written = pd.read_csv(base / "aug.csv")
    array = np.load(base / "aug.npy")
    assert array.shape == (12, 16, 16) and array.dtype == np.uint16
    assert written.groupby("class").size().to_dict() == {"Ebola": 6, "Orf": 6}
    row_of = dict(zip(train.patch_id, train["index"]))
    for row in written.itertuples():
        assert np.array_equal(array[row.index], apply_transform(pixels[row_of[row.source_patch_id]], row.transform)), (
            row.aug_id
        )
    assert len(set(written["transform"])) > 2
    pd.testing.assert_frame_equal(table, written, check_dtype=False)


def test_augment_is_byte_deterministic(patch_files):
    base, _, _ = patch_files
    for name in ("a", "b"):
        augment(
            base / "patches.csv",
            base / "train.npy",
            base / f"{name}.npy",
            base / f"{name}.csv",
            ["Orf", "Ebola"],
            7,
            seed=9,
        )
    assert sha256_file(base / "a.npy") == sha256_file(base / "b.npy")
    assert sha256_file(base / "a.csv") == sha256_file(base / "b.csv")


def test_augment_names_the_table_of_a_missing_class(patch_files):
    base, _, _ = patch_files
    with pytest.raises(
        ValueError, match=r"patches\.csv: class 'Lassa' of classes\.classification has no train patches"
    ):
        augment(base / "patches.csv", base / "train.npy", base / "a.npy", base / "a.csv", ["Orf", "Lassa"], 7, seed=9)
    assert not (base / "a.npy").exists() and not (base / "a.csv").exists()


@pytest.mark.parametrize(
    ("lacking", "would"),
    [
        ("test", "count it as 0 in Table 2's macro precision, recall and F1"),
        ("validation", "average an empty class into the validation macro-F1"),
        ("train", "give it no training patch"),
    ],
)
def test_a_class_without_patches_in_a_subset_is_refused_before_training(real_crops, tmp_path, lacking, would):
    """Real crops of two classes, one without images in one subset (given split): the augment
    step, which every training job waits for, refuses it naming the class, the subset, the split
    method and the class's images; so does loading that subset (training, evaluation,
    baselines). Else a class without validation patches averaged an empty class into the
    validation macro-F1 (and the micrograph thresholds left it out), one without test patches
    halved Table 2's macro averages unseen."""

    from temvirus.patches import extract_patches
    from temvirus.raw import write_tables
    from temvirus.split import SUBSETS, write_split
    from temvirus.train import load_subset

    raw = tmp_path / "raw"
    for subset in SUBSETS:
        for cls in ("Adenovirus", "Rotavirus")[: 1 if subset == lacking else 2]:
            source, target = real_crops / subset / cls, raw / subset / cls
            for image in sorted(source.glob("*.jpg"))[:2]:
                copy_real_image(image, target)
    write_tables(raw, tmp_path / "images.csv", tmp_path / "particles.csv")
    images = pd.read_csv(tmp_path / "images.csv", dtype={"image_id": str})
    images = images.assign(overlap_group=images.image_id, kept=True)  # as overlap removal writes them
    images.to_csv(tmp_path / "kept.csv", index=False)
    write_split(tmp_path / "kept.csv", tmp_path / "split.csv", "given")
    patches = tmp_path / "patches"
    patches.mkdir()
    arrays = {subset: patches / f"{subset}.npy" for subset in SUBSETS}
    extract_patches(
        tmp_path / "split.csv",
        tmp_path / "images.csv",
        tmp_path / "particles.csv",
        raw,
        patches / "patches.csv",
        arrays,
    )
    rota = images[images["class"] == "Rotavirus"]
    has = {s: sorted(rota.image_id[rota.folder_subset == s]) for s in SUBSETS}
    listed = "; ".join(f"{s} {has[s] or 'none'}" for s in SUBSETS)
    classes = ["Adenovirus", "Rotavirus"]
    message = (
        rf"patches\.csv: class 'Rotavirus' of classes\.classification has no {lacking} patches of split method "
        rf"'given' \(its images: {re.escape(listed)}\); it would {re.escape(would)}.*\nevery class needs particle "
        r"images in train, validation and test: add images of it, choose another split method \(split\.methods\), "
        r"or leave it out of classes\.classification"
    )
    out = {"out_npy": patches / "a.npy", "out_csv": patches / "a.csv", "per_class": 8, "seed": 1}
    with pytest.raises(ValueError, match=message):
        augment(patches / "patches.csv", arrays["train"], classes=classes, method="given", **out)
    assert not (patches / "a.npy").exists() and not (patches / "a.csv").exists()
    with pytest.raises(ValueError, match=f"has no {lacking} patches \\(its images"):
        load_subset(patches, lacking, classes)
    augment(patches / "patches.csv", arrays["train"], classes=classes[:1], method="given", **out)
    assert len(load_subset(patches, lacking, classes[:1])[1]) > 0


def dry_run_jobs(workdir, *args: str) -> dict[str, int]:
    """Rule -> job count of a Snakemake dry run in ``workdir`` (empty when nothing is to be done)."""
    proc = subprocess.run(snakemake_cmd(workdir, "--dry-run", *args), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = proc.stdout.splitlines()
    if "Job stats:" not in lines:
        return {}
    jobs = {}
    for line in lines[lines.index("Job stats:") + 3 :]:
        name, count = line.split()
        if name == "total":
            return jobs
        jobs[name] = int(count)
    raise AssertionError(f"unexpected dry-run output:\n{proc.stdout[-4000:]}")


@pytest.mark.slow
def test_changing_per_class_reruns_only_augmentation_and_what_follows(default_run, tmp_path):
    """Only the augment rule's params hold augment.per_class (--list-changes params of
    Snakemake 9.27 lists every job's output whether changed or not, so a dry run is used)."""
    override = tmp_path / "per_class.yaml"
    override.write_text("augment:\n  per_class: 5\n")
    jobs = dry_run_jobs(default_run, "--configfile", str(override))
    assert jobs.get("augment") == 1, jobs
    upstream = {
        "synthetic_dataset",
        "raw_tables",
        "find_overlaps",
        "split",
        "extract_patches",
        "fig1_patch_examples",
        "table1",
    }
    assert not upstream & set(jobs), jobs
