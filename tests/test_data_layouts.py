"""Data layouts on disk: tiny fake data sets in each published layout, read back through `load_data`.

Every fake image encodes its index in its pixels (and its mask in a known
pattern), so the tests can check that each image meets its own mask.
"""
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from archlab.errors import ArchlabError
from archlab.metrics import ConfusionMatrix, cross_entropy
from archlab.train.data import IGNORE_INDEX, DataError, load_data

H, W = 12, 16  # size of every fake file (WxH 16x12)

# Cityscapes' labelIds -> trainIds as the issue (and cityscapesScripts' labels.py) states them.
CITYSCAPES_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
                        25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


def voc_palette() -> list[int]:
    """The VOC colour map (the devkit's bitget construction): class 1 is (128, 0, 0), 255 is (224, 224, 192)."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


def colour(i: int) -> tuple[int, int, int]:
    """The flat colour of fake image ``i``: survives JPEG within a few levels."""
    return (20 * i + 10) % 250, 200 - 15 * (i % 10), 60


def save_image(path, i: int, size=(W, H)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour(i)).save(path, quality=95)


def save_mask(path, values: np.ndarray, *, palette: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(values.astype(np.uint8))
    if palette:
        img = img.convert("P")
        img.putpalette(voc_palette())
    img.save(path)


def pattern(label: int, *, ignore: int = 255, background: int = 0) -> np.ndarray:
    """Left half ``label``, right half ``background``, a right border column ``ignore``."""
    m = np.full((H, W), background, dtype=np.uint8)
    m[:, : W // 2] = label
    m[:, -1] = ignore
    return m


def index_of(image: torch.Tensor) -> int:
    """Recover the fake image's index from its colour."""
    r, g = int(image[0].float().mean().round()), int(image[1].float().mean().round())
    return next(i for i in range(100) if abs(colour(i)[0] - r) <= 3 and abs(colour(i)[1] - g) <= 3)


# -- builders, one per published layout ----------------------------------------------------------

def make_voc(root, n_train=3, n_val=2):
    base = root / "VOCdevkit" / "VOC2012"
    ids = {"train": [f"2007_{i:06d}" for i in range(n_train)],
           "val": [f"2008_{i:06d}" for i in range(n_train, n_train + n_val)]}
    for split, names in ids.items():
        for name in names:
            i = int(name[5:])
            save_image(base / "JPEGImages" / f"{name}.jpg", i)
            save_mask(base / "SegmentationClass" / f"{name}.png", pattern(1 + i % 20), palette=True)
        (base / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
        (base / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(names) + "\n")
    return base


def make_cityscapes(root, per_split=2):
    ids = np.array(list(range(34)) + [255], dtype=np.uint8)  # every label id, and -1 (license plate) as uint8
    for split in ("train", "val"):
        for k in range(per_split):
            i = k + (0 if split == "train" else per_split)
            city = ("aachen", "bochum")[k % 2]
            stem = f"{city}_{i:06d}_000019"
            save_image(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", i, size=(35, 2))
            mask = np.stack([ids, np.roll(ids, i)])  # row 1 shifted by the index: pairs are verifiable
            save_mask(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", mask)
    return root


def make_camvid(root, sizes=(("train", 3), ("val", 2), ("test", 1))):
    i = 0
    for split, n in sizes:
        for _ in range(n):
            save_image(root / split / f"0001TP_{i:06d}.png", i)
            save_mask(root / f"{split}annot" / f"0001TP_{i:06d}.png", pattern(i % 11, ignore=11, background=3))
            i += 1
    return root


def make_ade(root, n_train=2, n_val=1):
    base = root / "ADEChallengeData2016"
    i = 0
    for split, prefix, n in (("training", "ADE_train", n_train), ("validation", "ADE_val", n_val)):
        for k in range(n):
            save_image(base / "images" / split / f"{prefix}_{k + 1:08d}.jpg", i)
            save_mask(base / "annotations" / split / f"{prefix}_{k + 1:08d}.png",
                      pattern(1 + 70 * i, ignore=150, background=0))
            i += 1
    return base


def make_folder(root, n=5, classes=4):
    for i in range(n):
        save_image(root / "images" / f"img{i}.jpg", i)
        save_mask(root / "masks" / f"img{i}.png", pattern(i % classes))
    return root


def write_batch(path, data: np.ndarray, labels: list[int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump({"batch_label": "fake", "labels": labels, "data": data,
                     "filenames": [f"f{i}.png" for i in range(len(labels))]}, f, protocol=2)


def make_cifar(root, per_batch=4):
    base = root / "cifar-10-batches-py"
    i = 0
    for name in [f"data_batch_{b}" for b in range(1, 6)] + ["test_batch"]:
        idx = np.arange(i, i + per_batch)
        data = np.repeat(idx[:, None], 3072, axis=1).astype(np.uint8)  # every pixel = the image's index
        write_batch(base / name, data, [int(j % 10) for j in idx])
        i += per_batch
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                     "ship", "truck"], "num_vis": 3072}, f, protocol=2)
    return base


def make_imagefolder(root, per_class=5):
    for c, name in enumerate(("dog", "cat", "bird")):
        for k in range(per_class):
            save_image(root / name / f"{k}.png", 10 * c + k)
    return root


# -- VOC -----------------------------------------------------------------------------------------

def test_voc_pairs_palette_indices_and_split_sizes(tmp_path):
    make_voc(tmp_path)
    data = load_data(f"voc:{tmp_path}", size=(H, W))
    assert (data.task, data.num_classes, data.ignore_index) == ("seg", 21, 255)
    assert (len(data.train), len(data.val)) == (3, 2)
    assert data.class_names[0] == "background" and data.class_names[15] == "person"
    assert data.train.images.dtype == torch.uint8 and data.train.images.shape == (3, 3, H, W)
    assert data.train.targets.dtype == torch.uint8 and data.train.targets.shape == (3, H, W)
    for split in (data.train, data.val):
        for image, mask in zip(split.images, split.targets):
            i = index_of(image)
            assert torch.equal(mask, torch.from_numpy(pattern(1 + i % 20)))  # indices, not palette colours


def test_voc_matches_torchvision_reader(tmp_path):
    from torchvision.datasets import VOCSegmentation
    make_voc(tmp_path)
    data = load_data(f"voc:{tmp_path}", size=(H, W))
    ref = VOCSegmentation(str(tmp_path), year="2012", image_set="val", download=False)
    assert len(ref) == len(data.val)
    for k, (image, target) in enumerate(ref):
        assert torch.equal(data.val.images[k], torch.from_numpy(np.array(image)).permute(2, 0, 1))
        assert torch.equal(data.val.targets[k], torch.from_numpy(np.array(target)))


@pytest.mark.parametrize("sub", ["", "VOCdevkit", "VOCdevkit/VOC2012"])
def test_voc_root_may_be_any_of_three_folders(tmp_path, sub):
    make_voc(tmp_path)
    data = load_data(f"voc:{tmp_path / sub}" if sub else f"voc:{tmp_path}", size=(H, W))
    assert (len(data.train), len(data.val)) == (3, 2)


def test_voc_missing_split_file_names_path_and_layout(tmp_path):
    base = make_voc(tmp_path)
    (base / "ImageSets" / "Segmentation" / "val.txt").unlink()
    with pytest.raises(DataError, match=r"missing .*ImageSets/Segmentation/val\.txt; expected VOCdevkit/VOC2012"):
        load_data(f"voc:{tmp_path}")


def test_voc_missing_root_folder(tmp_path):
    with pytest.raises(DataError, match=rf"voc:{tmp_path}/nope: missing {tmp_path}/nope; expected VOCdevkit"):
        load_data(f"voc:{tmp_path}/nope")
    with pytest.raises(DataError, match=r"missing .*VOCdevkit/VOC2012; expected"):
        load_data(f"voc:{tmp_path}")  # exists, but holds no VOC


def test_voc_image_without_mask_is_named(tmp_path):
    base = make_voc(tmp_path)
    (base / "SegmentationClass" / "2007_000001.png").unlink()
    with pytest.raises(DataError, match=r"image .*2007_000001\.jpg has no mask \(expected .*2007_000001\.png\)"):
        load_data(f"voc:{tmp_path}")


def test_voc_mask_value_out_of_range_names_file_and_value(tmp_path):
    base = make_voc(tmp_path)
    save_mask(base / "SegmentationClass" / "2007_000002.png", pattern(21), palette=True)
    with pytest.raises(DataError, match=r"mask .*2007_000002\.png holds value 21, outside the layout's labels "
                                        r"\(0\.\.20, 255\)"):
        load_data(f"voc:{tmp_path}")


def test_rgb_mask_is_refused(tmp_path):
    base = make_voc(tmp_path)
    Image.new("RGB", (W, H), (128, 0, 0)).save(base / "SegmentationClass" / "2007_000000.png")
    with pytest.raises(DataError, match=r"mask .*2007_000000\.png is a RGB image; a mask holds one class id"):
        load_data(f"voc:{tmp_path}")


# -- Cityscapes ----------------------------------------------------------------------------------

def test_cityscapes_label_ids_map_to_train_ids(tmp_path):
    make_cityscapes(tmp_path)
    data = load_data(f"cityscapes:{tmp_path}", size=(2, 35))
    assert (data.num_classes, len(data.train), len(data.val)) == (19, 2, 2)
    assert data.class_names[:3] == ("road", "sidewalk", "building") and data.class_names[18] == "bicycle"
    expected = [CITYSCAPES_TRAIN_IDS.get(i, 255) for i in range(34)] + [255]  # license plate (-1 = 255) too
    for split in (data.train, data.val):
        for image, mask in zip(split.images, split.targets):
            i = index_of(image)
            assert mask[0].tolist() == expected
            assert mask[1].tolist() == np.roll(expected, i).tolist()  # the mask of this very image


def test_cityscapes_unknown_label_id_is_named(tmp_path):
    make_cityscapes(tmp_path)
    bad = tmp_path / "gtFine" / "val" / "bochum" / "bochum_000003_000019_gtFine_labelIds.png"
    save_mask(bad, np.full((2, 35), 40))
    with pytest.raises(DataError, match=rf"mask {bad} holds value 40, outside the layout's labels \(0\.\.33, 255\)"):
        load_data(f"cityscapes:{tmp_path}")


def test_cityscapes_missing_gtfine(tmp_path):
    (tmp_path / "leftImg8bit" / "train").mkdir(parents=True)
    with pytest.raises(DataError, match=r"missing .*gtFine/train; expected leftImg8bit/\{train,val\}"):
        load_data(f"cityscapes:{tmp_path}")


# -- CamVid --------------------------------------------------------------------------------------

def test_camvid_void_is_ignored_and_val_set_option(tmp_path):
    make_camvid(tmp_path)
    data = load_data(f"camvid:{tmp_path}", size=(H, W))
    assert (data.num_classes, len(data.train), len(data.val)) == (11, 3, 2)
    for split in (data.train, data.val):
        for image, mask in zip(split.images, split.targets):
            assert torch.equal(mask, torch.from_numpy(pattern(index_of(image) % 11, ignore=255, background=3)))
    test = load_data(f"camvid:{tmp_path},val_set=test", size=(H, W))
    assert len(test.val) == 1 and index_of(test.val.images[0]) == 5


def test_camvid_empty_split(tmp_path):
    make_camvid(tmp_path, sizes=(("train", 2),))
    (tmp_path / "val").mkdir()
    (tmp_path / "valannot").mkdir()
    with pytest.raises(DataError, match=rf"camvid:{tmp_path}: the val split is empty"):
        load_data(f"camvid:{tmp_path}")


# -- ADE20K --------------------------------------------------------------------------------------

def test_ade20k_other_is_ignored_and_classes_shift_down(tmp_path):
    make_ade(tmp_path)
    data = load_data(f"ade20k:{tmp_path}", size=(H, W))
    assert (data.num_classes, len(data.train), len(data.val)) == (150, 2, 1)
    for split in (data.train, data.val):
        for image, mask in zip(split.images, split.targets):
            i = index_of(image)  # raw: left 1 + 70 i, right 0 (other), border 150
            assert torch.equal(mask, torch.from_numpy(pattern(70 * i, ignore=149, background=255)))
    base = tmp_path / "ADEChallengeData2016"
    assert len(load_data(f"ade20k:{base}", size=(H, W)).train) == 2  # ROOT may be the folder itself


def test_ade20k_value_151_is_out_of_range(tmp_path):
    base = make_ade(tmp_path)
    bad = base / "annotations" / "validation" / "ADE_val_00000001.png"
    save_mask(bad, pattern(151))
    with pytest.raises(DataError, match=rf"mask {bad} holds value 151, outside the layout's labels \(0\.\.150\)"):
        load_data(f"ade20k:{tmp_path}")


# -- folder --------------------------------------------------------------------------------------

def test_folder_infers_classes_and_holds_out_by_seed(tmp_path):
    make_folder(tmp_path, n=10, classes=4)
    a = load_data(f"folder:{tmp_path}", size=(H, W), seed=1)
    assert (a.num_classes, len(a.train), len(a.val)) == (4, 8, 2)
    for split in (a.train, a.val):
        for image, mask in zip(split.images, split.targets):
            assert torch.equal(mask, torch.from_numpy(pattern(index_of(image) % 4)))
    val_ids = lambda d: sorted(index_of(x) for x in d.val.images)  # noqa: E731
    assert val_ids(a) == val_ids(load_data(f"folder:{tmp_path}", size=(H, W), seed=1))  # deterministic
    assert len({tuple(val_ids(load_data(f"folder:{tmp_path}", size=(H, W), seed=s))) for s in range(6)}) > 1
    b = load_data(f"folder:{tmp_path},val_fraction=0.5,classes=6", size=(H, W))
    assert (b.num_classes, len(b.train), len(b.val)) == (6, 5, 5)


def test_folder_train_val_subfolders(tmp_path):
    make_folder(tmp_path / "train", n=3)
    make_folder(tmp_path / "val", n=2)
    data = load_data(f"folder:{tmp_path}", size=(H, W))
    assert (len(data.train), len(data.val)) == (3, 2)


def test_folder_unpaired_files_are_named(tmp_path):
    make_folder(tmp_path)
    (tmp_path / "masks" / "img3.png").unlink()
    with pytest.raises(DataError, match=r"image .*images/img3\.jpg has no mask"):
        load_data(f"folder:{tmp_path}")
    save_mask(tmp_path / "masks" / "img3.png", pattern(1))
    save_mask(tmp_path / "masks" / "extra.png", pattern(1))
    with pytest.raises(DataError, match=r"mask .*masks/extra\.png has no image"):
        load_data(f"folder:{tmp_path}")


def test_folder_classes_option_checks_mask_values(tmp_path):
    make_folder(tmp_path, classes=4)
    with pytest.raises(DataError, match=r"mask .*img3\.png holds value 3, outside the layout's labels \(0\.\.2, 255\)"):
        load_data(f"folder:{tmp_path},classes=3")


def test_mask_of_another_size_than_its_image(tmp_path):
    make_folder(tmp_path)
    save_mask(tmp_path / "masks" / "img2.png", np.zeros((H + 1, W)))
    with pytest.raises(DataError, match=r"mask .*img2\.png is 16x13 \(WxH\) but its image is 16x12"):
        load_data(f"folder:{tmp_path}")


# -- resizing ------------------------------------------------------------------------------------

@pytest.mark.parametrize("fit", ["stretch", "crop"])
def test_resizing_keeps_labels_in_the_label_set(tmp_path, fit):
    root = tmp_path / "f"
    rng = np.random.default_rng(0)
    for i in range(3):
        save_image(root / "images" / f"{i}.png", i)
        save_mask(root / "masks" / f"{i}.png", rng.choice([0, 3, 7, 255], size=(H, W)))
    data = load_data(f"folder:{root},classes=8,fit={fit}", size=(7, 5))
    assert data.train.images.shape[1:] == (3, 7, 5) and data.val.targets.shape[1:] == (7, 5)
    values = set(torch.cat([data.train.targets.flatten(), data.val.targets.flatten()]).tolist())
    assert values <= {0, 3, 7, 255} and len(values) > 1  # nearest: no label is ever interpolated


def test_crop_takes_the_same_centred_region_of_image_and_mask(tmp_path):
    # 200x100 (WxH): red | green | blue columns 0-50 | 50-150 | 150-200, mask 1 | 2 | 3. A square crop keeps
    # the centre 100x100: all green, all 2. The JPEG is decoded at reduced scale (draft), the mask is not.
    rgb = np.zeros((100, 200, 3), dtype=np.uint8)
    rgb[:, :50], rgb[:, 50:150], rgb[:, 150:] = (255, 0, 0), (0, 255, 0), (0, 0, 255)
    mask = np.full((100, 200), 2, dtype=np.uint8)
    mask[:, :50], mask[:, 150:] = 1, 3
    for i in range(2):
        (tmp_path / "images").mkdir(exist_ok=True)
        Image.fromarray(rgb).save(tmp_path / "images" / f"{i}.jpg", quality=95)
        save_mask(tmp_path / "masks" / f"{i}.png", mask)
    data = load_data(f"folder:{tmp_path},fit=crop,classes=4", size=(20, 20))
    images = torch.cat([data.train.images, data.val.images]).int()[..., 1:-1]  # the filter reaches 1 px past
    assert (images[:, 1] > 230).all() and (images[:, 0] < 25).all() and (images[:, 2] < 25).all()
    assert (torch.cat([data.train.targets, data.val.targets]) == 2).all()
    stretched = load_data(f"folder:{tmp_path},classes=4", size=(20, 20))
    assert stretched.train.targets[0, 0].tolist() == [1] * 5 + [2] * 10 + [3] * 5


def test_default_sizes_and_max_images(tmp_path):
    make_camvid(tmp_path / "c", sizes=(("train", 5), ("val", 3)))
    data = load_data(f"camvid:{tmp_path / 'c'},max_images=2")
    assert data.input_shape == (3, 96, 128) and (len(data.train), len(data.val)) == (2, 2)
    assert [index_of(x) for x in data.train.images] == [0, 2]  # evenly spaced, the same for every seed


# -- ignored pixels count nowhere ----------------------------------------------------------------

def test_ignored_pixels_count_in_neither_loss_nor_metrics(tmp_path):
    make_camvid(tmp_path)  # every mask: a void (11 -> 255) border column
    data = load_data(f"camvid:{tmp_path}", size=(H, W))
    target = data.train.targets.long()
    ignored = target == IGNORE_INDEX
    assert ignored[:, :, -1].all() and ignored.sum() == target.shape[0] * H
    logits = torch.randn(target.shape[0], 11, H, W, generator=torch.Generator().manual_seed(0))
    loss = cross_entropy(logits, target, ignore_index=IGNORE_INDEX)
    wild = logits.clone()
    wild.permute(0, 2, 3, 1)[ignored] = torch.randn(int(ignored.sum()), 11) * 100  # change ignored logits only
    assert torch.allclose(cross_entropy(wild, target, ignore_index=IGNORE_INDEX), loss)
    kept = logits.permute(0, 2, 3, 1)[~ignored]
    assert torch.allclose(loss, torch.nn.functional.cross_entropy(kept, target[~ignored]))
    cm_a = ConfusionMatrix(11, ignore_index=IGNORE_INDEX).update(logits, target)
    cm_b = ConfusionMatrix(11, ignore_index=IGNORE_INDEX).update(wild, target)
    assert cm_a.total == int((~ignored).sum()) and cm_a.compute() == cm_b.compute()


# -- CIFAR-10 ------------------------------------------------------------------------------------

@pytest.mark.parametrize("sub", ["", "cifar-10-batches-py"])
def test_cifar10_batches(tmp_path, sub):
    make_cifar(tmp_path)
    data = load_data(f"cifar10:{tmp_path / sub}")
    assert (data.task, data.num_classes, data.ignore_index) == ("cls", 10, None)
    assert (len(data.train), len(data.val), data.input_shape) == (20, 4, (3, 32, 32))
    assert data.train.targets.dtype == torch.int64 and data.class_names[9] == "truck"
    for split in (data.train, data.val):
        first = split.images[:, :, 0, 0][:, 0].long()  # pixel = image index; label = index % 10
        assert torch.equal(split.targets, first % 10) and (split.images == first[:, None, None, None]).all()
    assert data.val.images[0, 0, 0, 0] == 20  # the test batch is the validation split
    small = load_data(f"cifar10:{tmp_path},max_images=5", size=(16, 16))
    assert small.input_shape == (3, 16, 16) and (len(small.train), len(small.val)) == (5, 4)
    assert small.train.images[:, 0, 0, 0].tolist() == [0, 4, 8, 12, 16]


def test_cifar10_missing_batch_is_named(tmp_path):
    base = make_cifar(tmp_path)
    (base / "data_batch_3").unlink()
    with pytest.raises(DataError, match=r"missing .*cifar-10-batches-py/data_batch_3; expected cifar-10-batches-py/"):
        load_data(f"cifar10:{tmp_path}")


def test_cifar10_refuses_a_pickle_that_runs_code(tmp_path):
    base = make_cifar(tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(base / "test_batch", "wb") as f:
        pickle.dump({"data": Evil()}, f, protocol=2)
    with pytest.raises(DataError, match=r"cannot read .*test_batch as a CIFAR-10 python batch: refusing"):
        load_data(f"cifar10:{tmp_path}")


# -- ImageFolder ---------------------------------------------------------------------------------

def test_imagefolder_sorted_classes_and_stratified_split(tmp_path):
    make_imagefolder(tmp_path)
    data = load_data(f"imagefolder:{tmp_path}", size=(8, 8))
    assert data.class_names == ("bird", "cat", "dog") and data.num_classes == 3
    assert (len(data.train), len(data.val)) == (12, 3)
    assert sorted(data.val.targets.tolist()) == [0, 1, 2]  # one of each class held out
    folder_class = {"dog": 0, "cat": 1, "bird": 2}  # make_imagefolder's colour offsets, by folder
    for split in (data.train, data.val):
        for image, target in zip(split.images, split.targets):
            assert index_of(image) // 10 == folder_class[data.class_names[int(target)]]


def test_imagefolder_train_val_and_errors(tmp_path):
    make_imagefolder(tmp_path / "train", per_class=2)
    make_imagefolder(tmp_path / "val", per_class=1)
    data = load_data(f"imagefolder:{tmp_path}", size=(8, 8))
    assert (len(data.train), len(data.val)) == (6, 3)
    (tmp_path / "val" / "zebra").mkdir()
    with pytest.raises(DataError, match=r"class folder .*val/zebra holds no images"):
        load_data(f"imagefolder:{tmp_path}")


# -- spec options --------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, message", [
    ("voc:{root},bogus=1", r"voc has no option 'bogus'; options: fit, max_images"),
    ("voc", r"voc reads a folder; write voc:ROOT"),
    ("voc:{root},max_images=0", r"max_images must be a positive integer, got 0"),
    ("voc:{root},fit=zoom", r"fit must be one of stretch, crop, got 'zoom'"),
    ("camvid:{root},val_set=train", r"val_set must be one of val, test, got 'train'"),
    ("folder:{root},val_fraction=1.5", r"val_fraction must be a number between 0 and 1"),
    ("folder:{root},classes=0", r"classes must be an integer in 1\.\.255, got 0"),
])
def test_spec_option_errors(tmp_path, spec, message):
    name = spec.partition(":")[0]
    {"voc": make_voc, "folder": make_folder, "camvid": make_camvid}[name](tmp_path)
    with pytest.raises(DataError, match=message) as err:
        load_data(spec.format(root=tmp_path))
    assert isinstance(err.value, ArchlabError) and "\n" not in str(err.value)
