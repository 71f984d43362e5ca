"""The survey of dataset folders (--data): layouts, pairs, splits, labels and band statistics,
checked against numpy on small datasets the tests write."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from scaffold.data import DatasetSpec
from scaffold.data.survey import survey
from scaffold.errors import ScaffoldError
from scaffold.render.tasks import split_files, task_entry
from scaffold.write.state import Options

from .datasets import image, mask, write_tif


def stats(arrays: list[np.ndarray], nodata: float | None = None) -> tuple[list, list]:
    """Per-band mean and std over all pixels of `arrays` (bands, h, w), numpy's way."""
    stacked = np.concatenate([a.reshape(a.shape[0], -1) for a in arrays], axis=1).astype(float)
    if nodata is None:
        return stacked.mean(axis=1).tolist(), stacked.std(axis=1).tolist()
    masked = np.ma.masked_equal(stacked, nodata)
    return masked.mean(axis=1).tolist(), masked.std(axis=1).tolist()


def split_folders(root: Path, sizes=(("train", 5), ("val", 2), ("test", 2))) -> list[np.ndarray]:
    """train/val/test, each with images/ and labels/; returns the training images."""
    rng = np.random.default_rng(1)
    train = []
    for split, n in sizes:
        for i in range(n):
            img = image(rng, bands=3)
            if split != "train":
                img = img * 3  # other statistics: using the wrong split shows
            write_tif(root / split / "images" / f"tile{i}_img.tif", img)
            write_tif(root / split / "labels" / f"tile{i}_mask.tif", mask(img))
            if split == "train":
                train.append(img)
    return train


def test_split_folders_with_sibling_image_and_label_folders(tmp_path):
    train = split_folders(tmp_path / "ds")
    ds = survey(tmp_path / "ds")
    assert (ds.task, ds.layout, ds.pairing) == ("segmentation", "split-folders", "sibling-folders")
    assert [len(s.images) for s in ds.splits] == [5, 2, 2]
    train_split = ds.split("train")
    assert train_split.images[0] == "train/images/tile0_img.tif"
    assert train_split.labels[0] == "train/labels/tile0_mask.tif"
    assert (ds.img_grep, ds.label_grep) == ("*_img.tif", "*_mask.tif")
    assert (ds.bands, ds.dtype, ds.size) == (3, "uint16", (32, 32))
    assert ds.classes == (0, 1, 2) and ds.num_classes == 3 and ds.ignore_index is None
    means, stds = stats(train)
    np.testing.assert_allclose(ds.means, means, rtol=1e-9)
    np.testing.assert_allclose(ds.stds, stds, rtol=1e-9)
    assert ds.pixels_used == ds.pixels_total == 5 * 32 * 32
    assert DatasetSpec.from_json(ds.to_json()) == ds


def test_sampling_reads_at_most_the_stated_pixels(tmp_path):
    train = split_folders(tmp_path / "ds", sizes=(("train", 12), ("val", 1)))
    ds = survey(tmp_path / "ds", max_pixels=3 * 32 * 32)
    assert ds.pixels_total == 12 * 32 * 32
    assert 3 * 32 * 32 <= ds.pixels_used < ds.pixels_total
    means, _ = stats(train)
    np.testing.assert_allclose(ds.means, means, rtol=0.05)  # a sample, near the truth
    assert any("random sample" in n for n in ds.notes)
    assert ds.split("test").images == ds.split("val").images  # no test split: val serves


def test_pool_with_csv_split_lists_and_suffixed_sibling_folders(tmp_path):
    root = tmp_path / "floods"
    rng = np.random.default_rng(2)
    names = [f"Region_{i}" for i in range(12)]  # Region_1 is a prefix of Region_10
    for name in names:
        img = image(rng, bands=4)
        write_tif(root / "S2" / f"{name}_S2Hand.tif", img)
        write_tif(root / "Label" / f"{name}_LabelHand.tif", mask(img, 2).astype(np.int16))
    splits = {"train": names[:8], "valid": names[8:10], "test": names[10:]}
    (root / "splits").mkdir()
    for split, members in splits.items():
        lines = [f"{n}_S2Hand.tif,{n}_LabelHand.tif" for n in members]
        (root / "splits" / f"flood_{split}_data.csv").write_text("\n".join(lines) + "\n")
    ds = survey(root)
    assert (ds.layout, ds.pairing) == ("split-lists", "sibling-folders")
    assert ds.split("train").image_root == str(root / "S2")
    assert ds.split("train").label_root == str(root / "Label")
    assert [s.source for s in ds.splits] == ["list"] * 3
    assert ds.split("val").images == ("S2/Region_8_S2Hand.tif", "S2/Region_9_S2Hand.tif")
    assert ds.split("train").images == tuple(sorted(f"S2/{n}_S2Hand.tif" for n in names[:8]))
    assert (ds.img_grep, ds.label_grep) == ("*_S2Hand.tif", "*_LabelHand.tif")
    # Split files with exact file names, read without substring matching.
    files = split_files((ds,), "# header")
    train_file = files[f"splits/{ds.name}/train.txt"].splitlines()
    assert "Region_1_S2Hand.tif" in train_file and "Region_10_S2Hand.tif" not in train_file
    assert "Region_1_LabelHand.tif" in train_file


def test_no_split_writes_deterministic_splits_and_same_folder_pairs(tmp_path):
    root = tmp_path / "pool"
    rng = np.random.default_rng(3)
    for i in range(20):
        img = image(rng, bands=2)
        write_tif(root / f"s{i:02d}_img.tif", img)
        write_tif(root / f"s{i:02d}_mask.tif", mask(img))
    ds = survey(root)
    assert (ds.layout, ds.pairing) == ("no-split", "same-folder")
    counts = {s.name: len(s.images) for s in ds.splits}
    assert counts == {"train": 14, "val": 3, "test": 3}
    every = [f for s in ds.splits for f in s.images]
    assert len(set(every)) == 20  # each sample in exactly one split
    assert survey(root).splits == ds.splits  # deterministic
    assert any("split files" in n for n in ds.notes)


def test_class_folders_mean_classification(tmp_path):
    root = tmp_path / "scenes"
    rng = np.random.default_rng(4)
    train = []
    for split, n in (("training", 3), ("validation", 1)):
        for klass in ("forest", "river", "urban"):
            for i in range(n):
                img = image(rng, bands=5, size=16)
                write_tif(root / split / klass / f"{klass}_{i}.tif", img)
                if split == "training":
                    train.append(img)
    ds = survey(root)
    assert (ds.task, ds.pairing) == ("classification", "class-folders")
    assert ds.classes == ("forest", "river", "urban") and ds.num_classes == 3
    assert ds.split("train").image_root == str(root / "training")
    assert ds.img_grep is None and ds.split("train").labels == ()
    np.testing.assert_allclose(ds.means, stats(train)[0], rtol=1e-9)


def test_float_labels_mean_regression(tmp_path):
    root = tmp_path / "biomass"
    rng = np.random.default_rng(5)
    for split, n in (("train", 4), ("val", 2)):
        for i in range(n):
            img = image(rng, bands=3, dtype=np.float32)
            target = (img[0] / 100).astype(np.float32)
            write_tif(root / split / "img" / f"p{i}.tif", img)
            write_tif(root / split / "target" / f"p{i}.tif", target)
    ds = survey(root)
    assert ds.task == "regression" and ds.num_classes is None and ds.ignore_index is None
    entry = task_entry(ds, _spec(3))
    assert (entry["metric"], entry["direction"]) == ("val/RMSE", "min")
    assert entry["terratorch_task"]["loss"] == "rmse"
    assert entry["datamodule"]["class_path"].endswith("GenericNonGeoPixelwiseRegressionDataModule")


def test_nodata_is_left_out_of_the_statistics_and_255_is_the_ignore_value(tmp_path):
    root = tmp_path / "clouds"
    rng = np.random.default_rng(6)
    train = []
    for split, n in (("train", 4), ("val", 2)):
        for i in range(n):
            img = image(rng, bands=3)
            img[:, :4, :] = 0  # a border of nodata
            lbl = mask(img)
            lbl[:2] = 255
            write_tif(root / split / f"t{i}_img.tif", img, nodata=0)
            write_tif(root / split / f"t{i}_label.tif", lbl)
            if split == "train":
                train.append(img)
    ds = survey(root)
    assert ds.nodata == 0 and ds.ignore_index == 255 and ds.classes == (0, 1, 2)
    means, stds = stats(train, nodata=0)
    np.testing.assert_allclose(ds.means, means, rtol=1e-9)
    np.testing.assert_allclose(ds.stds, stds, rtol=1e-9)
    entry = task_entry(ds, _spec(3))
    args = entry["datamodule"]["init_args"]
    assert entry["terratorch_task"]["ignore_index"] == 255 and args["no_label_replace"] == 255
    assert args["no_data_replace"] == 0
    assert (entry["metric"], entry["direction"]) == ("val/mIoU", "max")


def test_a_multitemporal_stack_pools_each_channels_frames(tmp_path):
    root = tmp_path / "crops"
    rng = np.random.default_rng(7)
    channels, frames = 2, 3
    train = []
    for split, n in (("train", 3), ("val", 1)):
        for i in range(n):
            img = image(rng, bands=channels * frames)  # time-major: t0c0 t0c1 t1c0 ...
            write_tif(root / split / "x" / f"f{i}.tif", img)
            write_tif(root / split / "y" / f"f{i}.tif", mask(img))
            if split == "train":
                train.append(img)
    ds = survey(root)
    entry = task_entry(ds, _spec(channels, frames))
    args = entry["datamodule"]["init_args"]
    assert entry["terratorch_task"]["model_args"]["backbone_in_chans"] == channels
    assert args["expand_temporal_dimension"] is True and args["output_bands"] == [0, 1]
    stacked = np.concatenate([a.reshape(frames, channels, -1) for a in train], axis=2)
    per_channel = stacked.transpose(1, 0, 2).reshape(channels, -1).astype(float)
    np.testing.assert_allclose(args["means"], per_channel.mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(args["stds"], per_channel.std(axis=1), rtol=1e-5)
    with pytest.raises(ScaffoldError, match="6 bands per file do not divide into the 4 frames"):
        task_entry(ds, _spec(channels, 4))


def test_old_options_without_data_still_load():
    old = Options("m.py", {}).to_dict()
    del old["data"]
    assert Options.from_dict(old).data == ()
    assert json.loads(json.dumps(Options("m.py", {}, data=("/d",)).to_dict()))["data"] == ["/d"]


# -- bad data: one clear error ----------------------------------------------------------------
def test_no_images_names_the_patterns(tmp_path):
    (tmp_path / "empty" / "notes").mkdir(parents=True)
    (tmp_path / "empty" / "readme.txt").write_text("hi")
    with pytest.raises(ScaffoldError, match=r"no images found \(tried \*\.tif and \*\.tiff"):
        survey(tmp_path / "empty")


def test_unpaired_images_and_labels_are_named(tmp_path):
    split_folders(tmp_path / "ds")
    (tmp_path / "ds" / "train" / "labels" / "tile3_mask.tif").unlink()
    with pytest.raises(ScaffoldError, match=r"1 image\(s\) without a label: .*tile3_img\.tif"):
        survey(tmp_path / "ds")


def test_band_counts_that_differ_name_two_files(tmp_path):
    split_folders(tmp_path / "ds")
    rng = np.random.default_rng(0)
    write_tif(tmp_path / "ds" / "val" / "images" / "tile1_img.tif", image(rng, bands=4))
    with pytest.raises(
        ScaffoldError,
        match=r"band counts differ: train/images/tile0_img\.tif has 3, "
        r"val/images/tile1_img\.tif has 4",
    ):
        survey(tmp_path / "ds")


def test_sizes_that_differ_name_two_files(tmp_path):
    split_folders(tmp_path / "ds")
    rng = np.random.default_rng(0)
    write_tif(tmp_path / "ds" / "test" / "images" / "tile0_img.tif", image(rng, size=40))
    with pytest.raises(
        ScaffoldError, match=r"image sizes differ: .* is 32x32, .*tile0_img\.tif is 40x40"
    ):
        survey(tmp_path / "ds")


def test_label_values_outside_the_classes(tmp_path):
    split_folders(tmp_path / "ds")
    path = tmp_path / "ds" / "val" / "labels" / "tile1_mask.tif"
    lbl = np.zeros((32, 32), np.uint8)
    lbl[0, 0] = 7
    write_tif(path, lbl)
    with pytest.raises(
        ScaffoldError,
        match=r"val/labels/tile1_mask\.tif: label value\(s\) \[7\] outside the "
        r"classes 0\.\.2",
    ):
        survey(tmp_path / "ds")


def _spec(channels: int, frames: int | None = None, in_chans_arg: str | None = "in_chans"):
    """A BackboneSpec as the analysis makes it, reduced to what tasks read."""
    from scaffold.spec import BackboneSpec

    shape = (1, channels, frames, 32, 32) if frames else (1, channels, 32, 32)
    return BackboneSpec(
        target="m.py:M", module="m", qualname="M", kind="class", import_root=None,
        source_file=None, args={}, input_shape=shape, in_chans_arg=in_chans_arg, features=(),
        out_indices=(), output_kind="tensor", traced_on="meta", num_params=0,
    )  # fmt: skip


def test_names_that_sort_differently_from_their_labels_are_refused(tmp_path):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for key in ("a", "a_j"):  # a_img < a_j_img, but a_j_mask < a_mask
            img = image(rng)
            write_tif(tmp_path / "ds" / split / "images" / f"{key}_img.tif", img)
            write_tif(tmp_path / "ds" / split / "labels" / f"{key}_mask.tif", mask(img))
    with pytest.raises(ScaffoldError, match=r"image .*a_img\.tif would meet label .*a_j_mask\.tif"):
        survey(tmp_path / "ds")


def test_a_folder_beside_the_class_folders_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    for klass in ("a", "b"):
        for i in range(3):
            write_tif(tmp_path / "ds" / klass / f"{klass}{i}.tif", image(rng))
    (tmp_path / "ds" / "splits").mkdir()
    (tmp_path / "ds" / "splits" / "train.txt").write_text("a0\nb0\na1\nb1\n")
    (tmp_path / "ds" / "splits" / "val.txt").write_text("a2\nb2\n")
    with pytest.raises(ScaffoldError, match=r"numbers every folder there as a class.*\['splits'\]"):
        survey(tmp_path / "ds")


@pytest.mark.parametrize("dtype", [np.float32, np.int16])
def test_statistics_of_large_windows_with_nodata_and_nan(tmp_path, dtype):
    """Windows wider than one summing chunk; nodata, and NaN for floats, left out."""
    from scaffold.data.read import band_statistics

    rng = np.random.default_rng(8)
    arrays, paths = [], []
    for i in range(3):
        a = (rng.normal(0, 1, (3, 150, 130)) * [[[5]], [[50]], [[500]]] - 200).astype(dtype)
        a[:, :10, :7] = -9999
        if dtype == np.float32:
            a[1, 20:30, 5] = np.nan
        arrays.append(a)
        paths.append(write_tif(tmp_path / f"x{i}.tif", a, nodata=-9999))
    means, stds, used, total = band_statistics(paths, 3, max_pixels=None)
    stacked = np.concatenate([a.reshape(3, -1) for a in arrays], axis=1).astype(float)
    masked = np.ma.masked_invalid(np.ma.masked_equal(stacked, -9999))
    np.testing.assert_allclose(means, masked.mean(axis=1), rtol=1e-10)
    np.testing.assert_allclose(stds, masked.std(axis=1), rtol=1e-10)
    assert used == total == 3 * 150 * 130


def test_folders_are_surveyed_once_and_named_apart(tmp_path):
    from scaffold.data import survey_all

    split_folders(tmp_path / "a" / "ds")
    split_folders(tmp_path / "b" / "ds")
    found = survey_all(
        [str(tmp_path / "a" / "ds"), str(tmp_path / "a/ds/"), str(tmp_path / "b/ds")]
    )
    assert [d.name for d in found] == ["ds", "ds_2"]
    assert [d.root for d in found] == [str(tmp_path / "a" / "ds"), str(tmp_path / "b" / "ds")]


def test_class_folders_with_txt_split_lists(tmp_path):
    rng = np.random.default_rng(9)
    root = tmp_path / "ds"
    for klass in ("a", "b"):
        for i in range(4):
            write_tif(root / klass / f"{klass}{i}.tif", image(rng))
    (root / "train.txt").write_text("a/a0.tif\nb0\na1\nb1\na2\n")
    (root / "val.txt").write_text("a3\nb3\n")
    ds = survey(root)
    assert (ds.task, ds.layout, ds.pairing) == ("classification", "split-lists", "class-folders")
    assert ds.split("train").images == ("a/a0.tif", "a/a1.tif", "a/a2.tif", "b/b0.tif", "b/b1.tif")
    files = split_files((ds,), "# header")
    assert files[f"splits/{ds.name}/val.txt"].splitlines()[1:] == ["a3.tif", "b3.tif"]
    entry = task_entry(ds, _spec(3))
    args = entry["datamodule"]["init_args"]
    assert args["train_data_root"] == str(root) and args["allow_substring_split_file"] is False
    assert args["train_split"] == f"splits/{ds.name}/train.txt"  # relative to the folder


def test_a_wrapper_folder_with_nothing_beside_it_is_unwrapped(tmp_path):
    train = split_folders(tmp_path / "top" / "sen1floods" / "v1")
    (tmp_path / "top" / ".DS_Store").write_bytes(b"")  # hidden files do not count
    ds = survey(tmp_path / "top")
    assert ds.root == str(tmp_path / "top") and ds.layout == "split-folders"
    assert ds.split("train").images[0] == "sen1floods/v1/train/images/tile0_img.tif"
    assert ds.split("val").image_root == str(
        tmp_path / "top" / "sen1floods" / "v1" / "val" / "images"
    )
    assert ds.notes[0].startswith("the dataset is in sen1floods/v1/: ")
    np.testing.assert_allclose(ds.means, stats(train)[0], rtol=1e-9)


def test_a_folder_with_something_beside_it_or_a_split_folder_is_no_wrapper(tmp_path):
    split_folders(tmp_path / "top" / "inner")
    (tmp_path / "top" / "README.txt").write_text("about the data\n")
    with pytest.raises(ScaffoldError, match=r"inner/ is not taken for the dataset since README"):
        survey(tmp_path / "top")
    split_folders(tmp_path / "only_train", sizes=(("train", 3),))
    with pytest.raises(ScaffoldError, match="no training or no validation folder"):
        survey(tmp_path / "only_train")


def region_folders(root: Path, splits=("train", "val", "test"), regions=("regionA", "regionB")):
    """<split>/<region>/img/*.tif beside <split>/<region>/lbl/*.tif, 6 tiles a region, the
    same tile names in every region; returns the training images."""
    rng = np.random.default_rng(7)
    train = []
    for split in splits:
        for region in regions:
            for i in range(6):
                img = image(rng, bands=3)
                write_tif(root / split / region / "img" / f"t{i}_img.tif", img)
                write_tif(root / split / region / "lbl" / f"t{i}_lbl.tif", mask(img))
                if split == "train":
                    train.append(img)
    return train


def test_region_folders_in_each_split_are_read_through_the_file_pattern(tmp_path):
    train = region_folders(tmp_path / "ds")
    ds = survey(tmp_path / "ds")
    assert (ds.layout, ds.pairing) == ("split-folders", "sibling-folders")
    assert [len(s.images) for s in ds.splits] == [12, 12, 12]
    test = ds.split("test")
    assert test.image_root == test.label_root == str(tmp_path / "ds" / "test")
    assert test.images[:2] == ("test/regionA/img/t0_img.tif", "test/regionA/img/t1_img.tif")
    assert test.labels[6] == "test/regionB/lbl/t0_lbl.tif"
    assert (ds.img_grep, ds.label_grep) == ("*/img/*_img.tif", "*/lbl/*_lbl.tif")
    # TerraTorch's own reading: glob(root/grep), sorted, pairs what the survey paired.
    import glob

    found = sorted(glob.glob(str(Path(test.image_root) / ds.img_grep)))
    assert [str(Path(p).relative_to(tmp_path / "ds")) for p in found] == list(test.images)
    labels = sorted(glob.glob(str(Path(test.label_root) / ds.label_grep)))
    assert [str(Path(p).relative_to(tmp_path / "ds")) for p in labels] == list(test.labels)
    np.testing.assert_allclose(ds.means, stats(train)[0], rtol=1e-9)


def test_a_single_region_folder_in_a_split_is_read_inside_it(tmp_path):
    split_folders(tmp_path / "ds", sizes=(("train", 5), ("val", 2)))
    region_folders(tmp_path / "ds", splits=("tst",), regions=("regionA",))
    for folder in ("img", "lbl"):  # the flat splits' folder names and suffixes
        for path in (tmp_path / "ds" / "tst" / "regionA" / folder).iterdir():
            path.rename(path.with_name(path.name.replace("_lbl", "_mask")))
    for split in ("train", "val"):
        for old, new in (("images", "img"), ("labels", "lbl")):
            (tmp_path / "ds" / split / old).rename(tmp_path / "ds" / split / new)
    ds = survey(tmp_path / "ds")
    test = ds.split("test")
    assert len(test.images) == 6
    assert test.image_root == str(tmp_path / "ds" / "tst" / "regionA" / "img")
    assert (ds.img_grep, ds.label_grep) == ("*_img.tif", "*_mask.tif")


def test_images_nested_deeper_than_region_folders_are_named(tmp_path):
    split_folders(tmp_path / "ds", sizes=(("train", 3), ("val", 2)))
    rng = np.random.default_rng(8)
    for region in ("a", "b"):
        for i in range(2):
            write_tif(tmp_path / "ds" / "test" / region / "2020" / "x" / f"t{i}.tif", image(rng))
    with pytest.raises(
        ScaffoldError,
        match=r"no images .* in the test split, but 4 image\(s\) in "
        r"folders nested deeper, which are not read \(e\.g\. test/a/2020/x/t0\.tif\)",
    ):
        survey(tmp_path / "ds")


def test_splits_laid_out_with_and_without_regions_are_refused(tmp_path):
    region_folders(tmp_path / "ds", splits=("test",))
    split_folders(tmp_path / "ds", sizes=(("train", 3), ("val", 2)))
    with pytest.raises(ScaffoldError, match="some splits keep their images in region folders"):
        survey(tmp_path / "ds")


def test_a_single_region_folder_is_read_as_a_region_when_the_other_splits_use_regions(tmp_path):
    root = tmp_path / "ds"
    region_folders(root, splits=("train",), regions=("rA", "rB"))
    region_folders(root, splits=("val",), regions=("rC",))
    region_folders(root, splits=("test",), regions=("rD", "rE"))
    ds = survey(root)
    assert (ds.img_grep, ds.label_grep) == ("*/img/*_img.tif", "*/lbl/*_lbl.tif")
    val = ds.split("val")
    assert val.image_root == val.label_root == str(root / "val")
    assert val.images[0] == "val/rC/img/t0_img.tif" and len(val.images) == 6
    # TerraTorch's glob over the one-region split finds what the survey paired.
    import glob

    found = sorted(glob.glob(str(Path(val.image_root) / ds.img_grep)))
    assert [str(Path(p).relative_to(root)) for p in found] == list(val.images)
    assert [len(s.images) for s in ds.splits] == [12, 6, 12]


def test_a_region_without_labels_beside_labelled_regions_is_refused(tmp_path):
    # Images and labels alike (one uint8 band), so that nothing but the layout tells them apart.
    root, rng = tmp_path / "ds", np.random.default_rng(9)
    for split in ("train", "val", "test"):
        for region in ("rD", "rE"):
            for i in range(3):
                img = image(rng, bands=1, dtype=np.uint8)
                write_tif(root / split / region / "img" / f"t{i}_img.tif", img)
                write_tif(root / split / region / "lbl" / f"t{i}_lbl.tif", mask(img))
    write_tif(root / "test" / "rE" / "extra" / "t0_img.tif", image(rng, bands=1, dtype=np.uint8))
    with pytest.raises(ScaffoldError, match=r"^test/rE: .*extra") as caught:
        survey(root)
    assert "\n" not in str(caught.value)
