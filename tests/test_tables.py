"""Table 1 and the split summary figure, from split and patch tables built in the test."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import PAPER
from PIL import Image

from temvirus.classes import load_table1
from temvirus.figures import split_summary
from temvirus.split import assign_split
from temvirus.tables import TABLE1_COLUMNS, table1, write_table1


def paper_like_images(paper: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Kept images with Table 1's image count per class, random particle counts, given = folder
    labels drawn at random (so agreement is partial)."""
    rng = np.random.default_rng(seed)
    rows = []
    for cls, n in paper.images_total.items():
        for i in range(int(n)):
            folder = rng.choice(["train", "validation", "test"])
            rows.append((f"{cls}_{i:03d}", cls, folder, int(rng.integers(1, 40)), f"{cls}_{i:03d}", True))
    return pd.DataFrame(rows, columns=["image_id", "class", "folder_subset", "n_particles", "overlap_group", "kept"])


def patches_for(split: pd.DataFrame, per_particle: int = 2) -> pd.DataFrame:
    """A patch table (contract columns used by Table 1): ``per_particle`` patches per particle."""
    repeated = split.loc[split.index.repeat(split.n_particles * per_particle)]
    number = repeated.groupby("image_id").cumcount()
    patch_id = (
        repeated.image_id
        + "_p"
        + (number // per_particle).map("{:03d}".format)
        + "_v"
        + (number % per_particle).map("{:02d}".format)
    )
    return pd.DataFrame(
        {"patch_id": patch_id, "image_id": repeated.image_id, "class": repeated["class"], "subset": repeated.subset}
    )


@pytest.fixture(scope="module")
def paper():
    return load_table1(PAPER / "table1_dataset.csv")


def test_table1_counts_match_the_paper_for_all_22_classes(paper):
    split = assign_split(paper_like_images(paper), "representative")
    table = table1(split, patches_for(split), paper)
    assert list(table.columns) == TABLE1_COLUMNS
    assert len(table) == (22 + 1) * 4
    per_class = table[table["class"] != "all"]
    assert (per_class.images_diff == 0).all()
    assert per_class.images.sum() == 2 * 1245  # each split and the total
    total = table.set_index(["class", "subset"]).loc[("all", "total")]
    assert total.images == total.paper_images == 1245
    assert total.paper_particles == 7677
    assert total.particles == split.n_particles.sum()
    assert total.patches == 2 * split.n_particles.sum()
    rows = table.set_index(["class", "subset"])
    orf = split[split["class"] == "Orf"]
    for subset in ("train", "validation", "test"):
        chosen = orf[orf.subset == subset]
        assert rows.loc[("Orf", subset), "particles"] == chosen.n_particles.sum()
        assert rows.loc[("Orf", subset), "given_images"] == (orf.folder_subset == subset).sum()
        assert rows.loc[("Orf", subset), "agreement"] == pytest.approx(
            (chosen.folder_subset == subset).mean(), abs=1e-4
        )


def test_table1_reports_differences_and_unknown_classes(paper):
    split = assign_split(paper_like_images(paper), "representative")
    fewer = split[split.image_id != split[split["class"] == "TBE"].image_id.iloc[0]]
    rows = table1(fewer, patches_for(fewer, 1), paper).set_index(["class", "subset"])
    assert rows.loc[("TBE", "total"), "images_diff"] == -1
    assert rows.loc[("Orf", "total"), "images_diff"] == 0
    alien = split.assign(**{"class": "Smallpox"})
    with pytest.raises(ValueError, match="Smallpox"):
        table1(alien, patches_for(alien, 1), paper)


def test_write_table1_and_split_summary(paper, tmp_path):
    subset_of = paper.loc[["Orf", "Ebola", "WestNile"]]
    split = assign_split(paper_like_images(subset_of, seed=4), "representative")
    split.to_csv(tmp_path / "split.csv", index=False)
    patches_for(split).to_csv(tmp_path / "patches.csv", index=False)
    for name in ("one", "two"):
        write_table1(
            tmp_path / "split.csv",
            tmp_path / "patches.csv",
            PAPER / "table1_dataset.csv",
            tmp_path / name / "table1.csv",
            tmp_path / name / "table1.md",
            "representative",
        )
        split_summary(tmp_path / name / "table1.csv", tmp_path / name / "split_summary.png")
    for file in ("table1.csv", "table1.md", "split_summary.png"):
        assert (tmp_path / "one" / file).read_bytes() == (tmp_path / "two" / file).read_bytes(), file
    markdown = (tmp_path / "one" / "table1.md").read_text()
    ebola = next(line for line in markdown.splitlines() if line.startswith("| Ebola"))
    assert ebola.startswith("| Ebola | 65 (65) | 22 (22) | 22 (22) | 109 (109) |")
    assert len(markdown.splitlines()) == 4 + 4  # caption, blank, header, rule, 3 classes + all
    with Image.open(tmp_path / "one" / "split_summary.png") as image:
        assert image.width > 600 and image.height > 150


# -- the demo-run note of Table 2 and the figures (temvirus.experiments.run_note)


def _configs():
    import copy
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[1]
    default = yaml.safe_load((root / "config" / "config.yaml").read_text())
    paper = yaml.safe_load((root / "config" / "paper.yaml").read_text())

    def overlay(base, top):  # Snakemake's --configfile: nested sections merged
        out = copy.deepcopy(base)
        for key, value in top.items():
            out[key] = overlay(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        return out

    return default, paper, overlay(default, paper)


def test_run_note_names_every_way_the_default_differs_from_the_papers_method():
    from temvirus.experiments import run_note

    default, paper, _ = _configs()
    note = run_note(default, paper)
    assert note.startswith("demo run: synthetic data, ") and note.endswith(": not a reproduction")
    assert "\n" not in note
    for setting, key in [("augment", "per_class"), ("evaluation", "max_test_per_class")]:
        if default[setting][key] != paper[setting][key]:
            shown = "all" if paper[setting][key] is None else str(paper[setting][key])
            assert f"(paper {shown})" in note
    if default["training"]["epochs"] != paper["training"]["epochs"]:
        assert f"training epochs {default['training']['epochs']['scratch']} scratch" in note
        assert "(paper 300 scratch / 50 imagenet)" in note
    # a null of the paper's says what it means for that key; threads are a resource, not the method
    assert f"training input_size {default['training']['input_size']} (paper 256 px as cut)" in note
    assert f"training bn_momentum {default['training']['bn_momentum']} (paper each model's own)" in note
    assert "(paper all)" not in note and "threads" not in note


def test_an_experiments_note_shows_its_own_epochs_not_the_run_wide_ones():
    """Before: custom's jobs (it sets epochs 2 and patience 2 itself) were captioned "training epochs 30
    scratch ..." and re-ran when the run-wide epochs changed, for a model that no such change touches."""
    from temvirus.experiments import run_note

    default, paper, _ = _configs()
    custom = {"model": "custom", "init": "scratch", "method": "representative", "epochs": 2, "patience": 2}
    default["experiments"] = [{"model": "small_cnn", "init": "scratch", "method": "representative"}, custom]
    note = run_note(default, paper, [custom])
    assert "custom-scratch-representative epochs 2 (paper 300)" in note
    assert "training epochs" not in note and "training patience" not in note
    default["training"]["epochs"] = {"scratch": 31, "imagenet": 4}
    assert run_note(default, paper, [custom]) == note
    assert "training epochs 31 scratch" in run_note(default, paper)  # the whole run's (Table 2) still shows it


def test_run_note_is_empty_for_the_papers_method_whatever_the_hardware():
    from temvirus.experiments import run_note

    _, paper, reproduction = _configs()
    assert run_note(reproduction, paper) == ""
    reproduction["training"].update(device="cpu", amp="off", channels_last=False, compile=True)
    reproduction["dataset"]["source"] = "local"  # the published archive already on disk
    assert run_note(reproduction, paper) == ""
    reproduction["experiments"][0] = {**reproduction["experiments"][0], "epochs": 10}
    reproduction["training"]["max_val_per_class"] = 5
    note = run_note(reproduction, paper)
    assert note == (
        "demo run: validation patches per class at most 5 (paper all), "
        "custom-scratch-representative epochs 10 (paper 300): not a reproduction"
    )


def test_run_note_names_test_time_augmentation():
    """The paper's method with `evaluation.tta: true` (each test patch's prediction averaged over its
    8 flips and turns) was shown beside the paper's values with no note: the paper evaluates each test
    patch once (its later anchors use test-time augmentation; ../shared/paper/METHOD.md)."""
    from temvirus.experiments import run_note

    _, paper, reproduction = _configs()
    reproduction["evaluation"]["tta"] = True
    assert run_note(reproduction, paper) == "demo run: test-time D4 averaging on (paper off): not a reproduction"


def test_run_note_names_classes_other_than_the_papers():
    """The paper's method on the 9 classes of the real crops (config/real_crops.yaml's) is no
    reproduction: its accuracies, beside the paper's 14-class values in Table 2, were shown with
    no note; the order of the classes changes nothing."""
    from pathlib import Path

    import yaml

    from temvirus.experiments import run_note

    _, paper, reproduction = _configs()
    crops = yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / "real_crops.yaml").read_text())
    reproduction["dataset"] = {**reproduction["dataset"], **crops["dataset"]}
    reproduction["classes"] = crops["classes"]
    assert run_note(reproduction, paper) == (
        "demo run: 9 classes (paper 14: without Ebola, Influenza, Lassa, Marburg, Nipah): not a reproduction"
    )
    reproduction["classes"] = {"classification": [*paper["classes"]["classification"][::-1]]}
    assert run_note(reproduction, paper) == ""
    reproduction["classes"]["classification"] += ["Dengue"]
    assert run_note(reproduction, paper) == "demo run: 15 classes (paper 14: with Dengue): not a reproduction"


def test_run_note_of_one_experiment_ignores_the_other_experiments_overrides():
    """An experiment's results (evaluation, its paper figure) carry its own note, so a change to
    another experiment's settings re-runs none of its jobs (Snakemake reruns on params)."""
    from temvirus.experiments import experiment_name, run_note

    _, paper, reproduction = _configs()
    first, second = reproduction["experiments"][:2]
    reproduction["experiments"][1] = {**second, "lr": 0.5}
    assert f"{experiment_name(second)} lr 0.5" in run_note(reproduction, paper)
    assert run_note(reproduction, paper, [first]) == ""
    # as the workflow passes them: the three parts of a job's wildcards, without the overrides
    wildcards = {"model": second["model"], "init": second["init"], "method": second["method"]}
    assert f"{experiment_name(second)} lr 0.5" in run_note(reproduction, paper, [wildcards])


def test_table2_refuses_a_record_of_an_older_run_naming_the_new_key(tmp_path):
    """metrics.json records name the split method ``method``; one with the old ``split`` key is refused."""
    import json

    from temvirus.tables import table2

    old = tmp_path / "metrics.json"
    old.write_text(json.dumps({"split": "representative", "n_test": 3, "chance": 0.5, "baselines": []}))
    with pytest.raises(ValueError, match=r"metrics\.json: key 'split' is now 'method'"):
        table2([], PAPER / "table2_performance.csv", [old])
