"""ImageNet-style datasets (`libra_jax.data.imagenet`) on tiny synthetic copies of their real layouts."""

from __future__ import annotations

import json
import pathlib
import sys

import numpy as np
import pytest
from PIL import Image

from libra_jax.data.imagenet import (
    BadFileError,
    ImageFolderDataset,
    ImageNetSDataset,
    ImageNetSegDataset,
    eval_geometry,
    open_dataset,
)
from libra_jax.models.config import DataConfig
from libra_jax.preprocess import normalise, preprocess

# A 40x60 (HxW) image is resized to 20x30 (shorter side → floor(16 / 0.8) = 20), then center-cropped to 16x16
# from row 2, column 7. NEAREST halving samples source pixel 2y+1, so source rows 10..25 / columns 20..39
# land on rows 5..12 / columns 10..19, i.e. rows 3..10 / columns 3..12 of the crop.
DC = DataConfig(input_size=(16, 16), crop_pct=0.8, interpolation="bicubic")
H, W = 40, 60
RECT = np.s_[10:26, 20:40]
RECT_OUT = np.s_[3:11, 3:13]
COLOUR = (200, 40, 90)


def expected_mask(where=RECT_OUT) -> np.ndarray:
    out = np.zeros(DC.input_size, bool)
    out[where] = True
    return out


def rect_image(h: int = H, w: int = W, rect=RECT) -> np.ndarray:
    img = np.full((h, w, 3), 120, np.uint8)
    img[rect] = COLOUR
    return img


def write_ids(path: pathlib.Path, ids: np.ndarray) -> None:
    """An ImageNet-S mask PNG: class id = R + 256·G."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.stack([ids % 256, ids // 256, np.zeros_like(ids)], -1).astype(np.uint8)
    Image.fromarray(rgb).save(path)


def write_image(path: pathlib.Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path, format="JPEG" if path.suffix.lower() in (".jpeg", ".jpg") else None, quality=95)


def imagenet_s(root: pathlib.Path, masks: dict[str, np.ndarray]) -> pathlib.Path:
    """ImageNet-S919 layout with one image per 'wnid/name' key and its id mask."""
    for key, ids in masks.items():
        write_ids(root / "validation-segmentation" / f"{key}.png", ids)
        write_image(root / "validation" / f"{key}.JPEG", rect_image(*ids.shape, rect=ids > 0))
    return root


# ---------------------------------------------------------------- geometry and normalisation


@pytest.mark.parametrize(
    "dc",
    [
        DataConfig(input_size=(32, 32), crop_pct=0.875, interpolation="bicubic"),
        DataConfig(input_size=(32, 48), crop_pct=0.9, interpolation="bilinear"),
        DataConfig(input_size=(40, 40), crop_pct=0.95, crop_mode="squash"),
        DataConfig(mean=(0.48, 0.46, 0.41), std=(0.27, 0.26, 0.28), input_size=(36, 36), crop_mode="border"),
    ],
    ids=["center", "center-nonsquare", "squash", "border"],
)
def test_geometry_then_normalise_equals_preprocess(dc):
    for i, (h, w) in enumerate([(50, 70), (91, 40), (36, 36)]):
        img = np.random.default_rng(i).integers(0, 256, (h, w, 3), dtype=np.uint8)
        geo = eval_geometry(Image.fromarray(img), dc)
        assert geo.shape == (*dc.input_size, 3) and geo.dtype == np.uint8
        np.testing.assert_array_equal(normalise(geo[None], dc), preprocess(dc, img))


def test_normalise_rejects_floats():
    with pytest.raises(TypeError, match="uint8"):
        normalise(np.zeros((2, 4, 4, 3), np.float32), DC)


def test_mask_geometry_is_nearest_and_aligned():
    mask = np.zeros((H, W), np.uint8)
    mask[RECT] = 1
    np.testing.assert_array_equal(eval_geometry(Image.fromarray(mask), DC, nearest=True), expected_mask())
    ids = np.where(mask > 0, 919, 1000).astype(np.int32)  # a mode 'I' image keeps ids above 255
    out = eval_geometry(Image.fromarray(ids), DC, nearest=True)
    np.testing.assert_array_equal(out, np.where(expected_mask(), 919, 1000))
    image = eval_geometry(Image.fromarray(rect_image()), DC)
    # The rectangle's pixels in the image (red 200 on grey 120, blurred by bicubic at the edges) are the mask's.
    np.testing.assert_array_equal(image[..., 0] > 160, expected_mask())


# ---------------------------------------------------------------- ImageFolderDataset


def test_image_folder(tmp_path):
    write_image(tmp_path / "b" / "x.png", rect_image())
    write_image(tmp_path / "a" / "y.png", rect_image())
    write_image(tmp_path / "a" / "sub" / "z.PNG", rect_image())
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    ds = ImageFolderDataset(tmp_path, DC)
    assert ds.class_to_idx == {"a": 0, "b": 1}
    assert [pathlib.Path(ds.path_of(i)).name for i in range(len(ds))] == ["y.png", "z.PNG", "x.png"]
    item = ds[-1]
    assert item["label"] == 1 and item["mask"] is None and item["path"].endswith("x.png")
    np.testing.assert_array_equal(item["image"], eval_geometry(Image.fromarray(rect_image()), DC))
    batches = list(ds.iter_batches(2))
    assert [b["images"].shape for b in batches] == [(2, 16, 16, 3), (1, 16, 16, 3)]
    assert batches[0]["labels"].tolist() == [0, 0] and batches[0]["masks"] is None
    mapped = ImageFolderDataset(tmp_path, DC, class_to_idx={"a": 5, "b": 7, "c": 9})
    assert [mapped[i]["label"] for i in range(len(mapped))] == [5, 5, 7]


def test_image_folder_skips_undecodable(tmp_path):
    write_image(tmp_path / "a" / "good1.png", rect_image())
    (tmp_path / "a" / "good2.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    write_image(tmp_path / "b" / "good3.png", rect_image())
    ds = ImageFolderDataset(tmp_path, DC)
    with pytest.raises(BadFileError, match="good2.jpg"):
        ds[1]
    batches = list(ds.iter_batches(2))
    assert [p.rsplit("/", 1)[-1] for p in batches[0]["paths"]] == ["good1.png", "good3.png"]
    assert len(batches) == 1 and batches[0]["labels"].tolist() == [0, 1]
    list(ds.iter_batches(2))  # a second pass lists the bad file once
    assert len(ds.skipped) == 1 and ds.skipped[0][0].endswith("good2.jpg") and "cannot decode" in ds.skipped[0][1]
    assert [len(b["paths"]) for b in ds.iter_batches(1, limit=1)] == [1]


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ImageFolderDataset(tmp_path / "nowhere", DC)
    write_image(tmp_path / "flat.png", rect_image())
    with pytest.raises(ValueError, match="no class subfolders.*<root>/<class>/<image>"):
        ImageFolderDataset(tmp_path, DC)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        ImageFolderDataset(tmp_path, DC)
    write_image(tmp_path / "stray" / "x.png", rect_image())
    with pytest.raises(ValueError, match=r"\['stray'\].*not in class_to_idx"):
        ImageFolderDataset(tmp_path, DC, class_to_idx={"empty": 0})


# ---------------------------------------------------------------- ImageNetSDataset


def protocol_masks() -> dict[str, np.ndarray]:
    """Three masks: largest class 5 under 'ignored' and 'other'; class 300 (R=44, G=1) below 5%; class 300 on RECT."""
    biggest = np.full((H, W), 1000, np.int32)  # 'ignored' covers most of the image: still a negative
    biggest[:, :10] = 0
    biggest[RECT] = 5
    biggest[30:34, 20:26] = 7  # 6 px after the transform
    small = np.full((H, W), 1000, np.int32)
    small[16:20, 28:34] = 300  # 6 of 256 px after the transform: 2.3%
    large = np.zeros((H, W), np.int32)
    large[RECT] = 300
    return {"n02/val_01": biggest, "n01/val_02": small, "n01/val_03": large}


CLASS_MAP = {5: 10, 7: 11, 300: 12}


def test_imagenet_s_protocol(tmp_path):
    ds = ImageNetSDataset(imagenet_s(tmp_path, protocol_masks()), DC, class_map=CLASS_MAP)
    items = {pathlib.Path(ds[i]["path"]).stem: ds[i] for i in range(len(ds))}
    assert sorted(items) == ["val_01", "val_03"] and ds.num_filtered == 1 and not ds.skipped
    assert items["val_01"]["label"] == 10 and items["val_03"]["label"] == 12
    for item in items.values():
        np.testing.assert_array_equal(item["mask"], expected_mask())
        assert item["image"].shape == (16, 16, 3) and item["image"].dtype == np.uint8
    np.testing.assert_array_equal(items["val_03"]["image"][..., 0] > 160, expected_mask())  # aligned with the mask
    kept_low = ImageNetSDataset(tmp_path, DC, min_fraction=0.02, class_map=CLASS_MAP)
    low = {pathlib.Path(kept_low.path_of(i)).stem: kept_low[i] for i in range(len(kept_low))}
    assert low["val_02"]["label"] == 12 and low["val_02"]["mask"].sum() == 6
    batch = next(ds.iter_batches(8))
    assert batch["masks"].shape == (2, 16, 16) and batch["masks"].dtype == bool
    assert sorted(batch["labels"].tolist()) == [10, 12]


def test_imagenet_s_order_is_sorted_by_name_then_permuted(tmp_path):
    names = ["e", "a", "d", "b", "f", "c"]  # wnid folders sort the other way round from the names
    masks = {}
    for k, name in enumerate(names):
        ids = np.zeros((H, W), np.int32)
        ids[RECT if name != "d" else np.s_[0:2, 0:2]] = 5  # 'd' is below 5%
        masks[f"n{k}/{name}"] = ids
    root = imagenet_s(tmp_path, masks)
    for seed in (42, 0):
        perm = np.random.default_rng(seed).permutation(len(names))
        expected = [n for n in np.array(sorted(names))[perm] if n != "d"]
        ds = ImageNetSDataset(root, DC, seed=seed, class_map=CLASS_MAP)
        assert [pathlib.Path(ds.path_of(i)).stem for i in range(len(ds))] == expected
        assert expected != [n for n in sorted(names) if n != "d"]
    limited = ImageNetSDataset(root, DC, seed=0, limit=3, class_map=CLASS_MAP)
    assert [pathlib.Path(limited.path_of(i)).stem for i in range(len(limited))] == expected[:3]


def test_imagenet_s_class_maps(tmp_path):
    root = imagenet_s(tmp_path / "s", protocol_masks())
    (tmp_path / "map.json").write_text(json.dumps({str(k): v for k, v in CLASS_MAP.items()}))
    wnids = ["n00000" + str(i) for i in range(1, 301)]  # id k is on line k
    (tmp_path / "categories.txt").write_text("\n".join(wnids) + "\n")
    wnid_to_index = {w: 500 + i for i, w in enumerate(wnids)} | {"n01": 1, "n02": 2}

    def labels(**kwargs) -> dict[str, int]:
        ds = ImageNetSDataset(root, DC, **kwargs)
        return {pathlib.Path(ds.path_of(i)).stem: ds.samples[i][3] for i in range(len(ds))}

    assert labels(class_map=tmp_path / "map.json") == {"val_01": 10, "val_03": 12}
    assert labels(class_map=tmp_path / "categories.txt", wnid_to_index=wnid_to_index) == {"val_01": 504, "val_03": 799}
    assert labels(wnid_to_index=wnid_to_index) == {"val_01": 2, "val_03": 1}  # the wnid folder's index
    with pytest.raises(ValueError, match="needs class_map"):
        ImageNetSDataset(root, DC)
    with pytest.raises(ValueError, match="pass wnid_to_index"):
        ImageNetSDataset(root, DC, class_map=tmp_path / "categories.txt")
    with pytest.raises(ValueError, match=r"n000001.*not in wnid_to_index"):
        ImageNetSDataset(root, DC, class_map=tmp_path / "categories.txt", wnid_to_index={"n01": 1})
    with pytest.raises(ValueError, match="class id 300 .*not in class_map"):
        ImageNetSDataset(root, DC, class_map={5: 10})
    with pytest.raises(ValueError, match=r"'n02' .*not in wnid_to_index"):
        ImageNetSDataset(root, DC, wnid_to_index={"n01": 1})
    (tmp_path / "map.csv").write_text("1,2")
    with pytest.raises(ValueError, match=r"\.json .*\.txt"):
        ImageNetSDataset(root, DC, class_map=tmp_path / "map.csv")


def test_imagenet_s_bad_files(tmp_path):
    ids = np.zeros((H, W), np.int32)
    ids[RECT] = 5
    root = imagenet_s(tmp_path, {"n1/ok": ids, "n1/broken": ids, "n1/resized": ids, "n1/badmask": ids, "n1/lost": ids})
    (root / "validation" / "n1" / "broken.JPEG").write_bytes(b"garbage")
    write_image(root / "validation" / "n1" / "resized.JPEG", rect_image(H + 2, W))
    (root / "validation-segmentation" / "n1" / "badmask.png").write_bytes(b"garbage")
    (root / "validation" / "n1" / "lost.JPEG").unlink()
    ds = ImageNetSDataset(root, DC, class_map=CLASS_MAP)
    stems = [pathlib.Path(ds.path_of(i)).stem for i in range(len(ds))]
    assert sorted(stems) == ["broken", "ok", "resized"]  # masks were readable: kept by the scan
    assert sorted(pathlib.Path(p).name for p, _ in ds.skipped) == ["badmask.png", "lost.JPEG"]
    with pytest.raises(BadFileError, match="cannot decode .*broken.JPEG"):
        ds[stems.index("broken")]
    with pytest.raises(ValueError, match=r"mask .*resized.png is 40x60 \(HxW\) but image .*resized.JPEG is 42x60"):
        ds[stems.index("resized")]
    (batch,) = ds.iter_batches(4)
    assert [pathlib.Path(p).stem for p in batch["paths"]] == ["ok"]
    assert len(ds.skipped) == 4 and {pathlib.Path(p).name for p, _ in ds.skipped[2:]} == {
        "broken.JPEG",
        "resized.JPEG",
    }


def test_imagenet_s_layout_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="ImageNet-S root .*missing"):
        ImageNetSDataset(tmp_path / "missing", DC, class_map=CLASS_MAP)
    (tmp_path / "validation").mkdir()
    with pytest.raises(ValueError, match="not an ImageNet-S919 folder: expected .*validation-segmentation"):
        ImageNetSDataset(tmp_path, DC, class_map=CLASS_MAP)
    (tmp_path / "validation-segmentation").mkdir()
    with pytest.raises(ValueError, match="no mask PNGs"):
        ImageNetSDataset(tmp_path, DC, class_map=CLASS_MAP)


# ---------------------------------------------------------------- ImageNetSegDataset


def write_gtsegs(path: pathlib.Path, entries: list[tuple[np.ndarray, np.ndarray]]) -> pathlib.Path:
    """gtsegs_ijcv.mat's structure: /value/img and /value/gt (N, 1) references; gt → (1, 1) cell → mask.

    MATLAB writes column-major arrays, so h5py sees (H, W, 3) images as (3, W, H) and masks as (W, H).
    """
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w") as f:
        refs = f.create_group("#refs#")
        img = f.create_dataset("value/img", (len(entries), 1), dtype=h5py.ref_dtype)
        gt = f.create_dataset("value/gt", (len(entries), 1), dtype=h5py.ref_dtype)
        for i, (image, mask) in enumerate(entries):
            img[i, 0] = refs.create_dataset(f"img{i}", data=image.T).ref
            cell = refs.create_dataset(f"cell{i}", (1, 1), dtype=h5py.ref_dtype)
            cell[0, 0] = refs.create_dataset(f"gt{i}", data=mask.T).ref
            gt[i, 0] = cell.ref
    return path


def test_imagenet_seg(tmp_path):
    # 32x48 → 16x16 straight (Chefer): NEAREST samples source row 2y+1 and column 3x+1, so rows 8..23 and
    # columns 12..35 land on rows and columns 4..11.
    rect = np.s_[8:24, 12:36]
    image = rect_image(32, 48, rect)
    mask = np.zeros((32, 48), np.uint8)
    mask[rect] = 1
    other = rect_image()
    other_mask = np.zeros((H, W), np.uint8)
    other_mask[RECT] = 1
    path = write_gtsegs(
        tmp_path / "gtsegs_ijcv.mat",
        [
            (image, mask),
            (other, other_mask),
            (np.zeros((3, 4, 3), np.uint8), np.zeros((4, 4), np.uint8)),  # mask size differs
            (np.zeros((4, 4, 3), np.float64), np.zeros((4, 4), np.uint8)),  # not an 8-bit image
        ],
    )
    ds = ImageNetSegDataset(path, DC)
    assert len(ds) == 4
    item = ds[0]
    assert item["label"] is None and item["path"] == f"{path}#0"
    np.testing.assert_array_equal(item["mask"], expected_mask(np.s_[4:12, 4:12]))
    expected_image = np.asarray(Image.fromarray(image).resize((16, 16), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(item["image"], expected_image)
    with pytest.raises(ValueError, match=r"mask /value/gt\[2\] is \(4, 4\) but image /value/img\[2\] is \(3, 4\)"):
        ds[2]
    batches = list(ds.iter_batches(8))
    assert len(batches) == 1 and batches[0]["labels"] is None and batches[0]["images"].shape == (2, 16, 16, 3)
    assert [p for p, _ in ds.skipped] == [f"{path}#2", f"{path}#3"]
    assert isinstance(open_dataset(f"imagenet-seg:{path}", DC), ImageNetSegDataset)
    eval_ds = ImageNetSegDataset(path, DC, protocol="eval")
    np.testing.assert_array_equal(eval_ds[1]["mask"], expected_mask())
    np.testing.assert_array_equal(eval_ds[1]["image"], eval_geometry(Image.fromarray(other), DC))


def test_imagenet_seg_errors(tmp_path):
    h5py = pytest.importorskip("h5py")
    with pytest.raises(FileNotFoundError, match="gone.mat"):
        ImageNetSegDataset(tmp_path / "gone.mat", DC)
    (tmp_path / "v5.mat").write_bytes(b"MATLAB 5.0 MAT-file")
    with pytest.raises(ValueError, match="not an HDF5 file; expected a MATLAB v7.3"):
        ImageNetSegDataset(tmp_path / "v5.mat", DC)
    with h5py.File(tmp_path / "other.mat", "w") as f:
        f.create_dataset("value/img", data=np.zeros((2, 1)))
    with pytest.raises(ValueError, match="expected datasets; expected .*/value/img and /value/gt"):
        ImageNetSegDataset(tmp_path / "other.mat", DC)
    path = write_gtsegs(tmp_path / "gtsegs_ijcv.mat", [(rect_image(), np.zeros((H, W), np.uint8))])
    with pytest.raises(ValueError, match="'chefer' or 'eval'"):
        ImageNetSegDataset(path, DC, protocol="timm")


def test_imagenet_seg_without_h5py(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py now raises ImportError
    with pytest.raises(ImportError, match=r"pip install h5py.*libra-jax\[test\]"):
        ImageNetSegDataset(tmp_path / "gtsegs_ijcv.mat", DC)


# ---------------------------------------------------------------- open_dataset


def test_open_dataset(tmp_path):
    write_image(tmp_path / "folder" / "a" / "x.png", rect_image())
    assert isinstance(open_dataset(f"imagenet:{tmp_path / 'folder'}", DC), ImageFolderDataset)
    root = imagenet_s(tmp_path / "s", protocol_masks())
    ds = open_dataset(f"imagenet-s:{root}", DC, class_map=CLASS_MAP, limit=1)
    assert isinstance(ds, ImageNetSDataset) and len(ds) == 1
    for spec in ("coco:/data", str(root), "imagenet-s:"):
        with pytest.raises(ValueError, match="expected one of 'imagenet:PATH', 'imagenet-s:PATH', 'imagenet-seg:PATH'"):
            open_dataset(spec, DC)
