import os
import shutil

import numpy as np
import pytest
from PIL import Image

from fashion_exp.data.dataset import report
from fashion_exp.data.images import Decoder, decode_image
from fashion_exp.errors import DataError, ImageError
from tests.synthetic import COLORS, data_config, write_image
from tests.synthetic import scan as scan_dataset

DATA = data_config()


def load_image(path, size, max_pixels=DATA.max_image_pixels):
    return Decoder(size, DATA.interpolation, max_pixels).load(path)


def test_scan_counts_every_class_and_split(dataset_root, tmp_path):
    dataset = scan_dataset(dataset_root, ["train", "validation", "test"], cache_dir=tmp_path / "scan")
    assert dataset.classes == ["hat", "pants", "shoes"]
    assert dataset.counts()["train"] == {"hat": 8, "pants": 8, "shoes": 8}
    assert dataset.skipped == []
    text = report(dataset)
    assert "validation" in text and "total" in text


def test_broken_files_are_skipped_and_listed(dataset_root, tmp_path):
    folder = dataset_root / "train" / "hat"
    good = (folder / "hat_0.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image")
    (folder / "garbage.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 100)
    dataset = scan_dataset(dataset_root, ["train", "validation"], cache_dir=tmp_path / "scan")
    skipped = dict(dataset.skipped)
    assert set(skipped) == {f"train/hat/{n}" for n in ("truncated.jpg", "empty.jpg", "notes.txt", "garbage.jpg")}
    assert "empty" in skipped["train/hat/empty.jpg"]
    assert "not an image" in skipped["train/hat/notes.txt"]
    assert "truncated" in skipped["train/hat/truncated.jpg"]
    assert dataset.counts()["train"]["hat"] == 8  # the good ones are all kept
    assert "Skipped 4 unreadable files" in report(dataset)


def test_scan_verdicts_are_cached_until_a_file_changes(dataset_root, tmp_path, monkeypatch):
    scan_dataset(dataset_root, ["train", "validation"], cache_dir=tmp_path / "scan")
    calls = []
    monkeypatch.setattr("fashion_exp.data.dataset.decode_image", lambda *a, **k: calls.append(a))
    scan_dataset(dataset_root, ["train", "validation"], cache_dir=tmp_path / "scan")
    assert calls == []
    write_image(dataset_root / "train" / "hat" / "new.jpg", COLORS["hat"])
    scan_dataset(dataset_root, ["train", "validation"], cache_dir=tmp_path / "scan")
    assert len(calls) > 0


def test_a_splits_dataset_record_changes_when_one_of_its_photos_does(dataset_root):
    before = scan_dataset(dataset_root, ["train", "validation"])
    photo = sorted((dataset_root / "train" / "hat").iterdir())[0]
    write_image(photo, COLORS["hat"], seed=7)  # same name, new pixels
    after = scan_dataset(dataset_root, ["train", "validation"])
    assert before.describe("train")["digest"] != after.describe("train")["digest"]
    assert before.describe("validation") == after.describe("validation")
    assert after.describe("train")["images"] == len(after.splits["train"])


def test_empty_class_is_a_clear_error(dataset_root):
    for f in (dataset_root / "validation" / "pants").iterdir():
        f.unlink()
    with pytest.raises(DataError, match="no readable images for class pants"):
        scan_dataset(dataset_root, ["train", "validation"])


def test_class_only_unreadable_files_is_an_error(dataset_root):
    for f in (dataset_root / "validation" / "shoes").iterdir():
        f.write_bytes(b"")
    with pytest.raises(DataError, match="shoes"):
        scan_dataset(dataset_root, ["train", "validation"])


def test_missing_class_in_a_split_names_it(dataset_root):
    shutil.rmtree(dataset_root / "validation" / "shoes")
    with pytest.raises(DataError) as err:
        scan_dataset(dataset_root, ["train", "validation"])
    assert "missing in validation/: ['shoes']" in str(err.value)


def test_missing_dataset_says_where_and_how(tmp_path):
    with pytest.raises(DataError) as err:
        scan_dataset(tmp_path / "nowhere", ["train", "validation"])
    message = str(err.value)
    assert str(tmp_path / "nowhere") in message and "fetch-data" in message and "\n" not in message


def test_missing_split_is_named(dataset_root):
    shutil.rmtree(dataset_root / "validation")
    with pytest.raises(DataError, match="no 'validation/' folder"):
        scan_dataset(dataset_root, ["train", "validation"])


def test_limit_per_class(dataset_root):
    dataset = scan_dataset(dataset_root, ["train", "validation"], limit_per_class=2)
    assert dataset.counts()["train"] == {"hat": 2, "pants": 2, "shoes": 2}


def test_png_alpha_becomes_white(tmp_path):
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[..., 0] = 255  # red, fully transparent except a block
    rgba[5:15, 5:15, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = load_image(tmp_path / "a.png", 20)
    assert out.shape == (20, 20, 3) and out.dtype == np.uint8
    assert tuple(out[0, 0]) == (255, 255, 255)
    assert tuple(out[10, 10]) == (255, 0, 0)


@pytest.mark.parametrize("mode", ["L", "CMYK", "P", "I;16"])
def test_other_modes_become_rgb(tmp_path, mode):
    image = Image.new("RGB", (30, 30), (120, 60, 30)).convert(mode)
    path = tmp_path / ("x.jpg" if mode in ("L", "CMYK") else "x.png")
    image.save(path)
    assert load_image(path, 16).shape == (16, 16, 3)


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((20, 40, 3), np.uint8)  # wide: left half black, right half white
    pixels[:, 20:] = 255
    image = Image.fromarray(pixels)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    image.save(tmp_path / "r.jpg", exif=exif.tobytes(), quality=95)
    out = load_image(tmp_path / "r.jpg", 40)
    # displayed upright the image is tall: black on top, white below
    assert out[:15].mean() < 60 and out[-15:].mean() > 190


def test_decompression_bomb_is_refused(tmp_path):
    Image.new("RGB", (400, 400)).save(tmp_path / "big.png")
    with pytest.raises(ImageError, match="decompression-bomb limit"):
        load_image(tmp_path / "big.png", 32, max_pixels=10_000)
    with pytest.raises(ImageError, match="decompression-bomb limit") as err:
        load_image(tmp_path / "big.png", 32, max_pixels=100_000)  # over the limit but under 2x
    assert err.value.kind == "too_large"


def test_decode_bytes_names_the_upload():
    with pytest.raises(ImageError, match="^upload: not an image"):
        decode_image(b"hello", 32, DATA.max_image_pixels, DATA.interpolation, name="upload")
    with pytest.raises(ImageError, match="^upload: empty"):
        decode_image(b"", 32, DATA.max_image_pixels, DATA.interpolation, name="upload")


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="file not found"):
        load_image(tmp_path / "nope.jpg", 32)


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nnewpath 0 0 moveto 8 8 lineto stroke\nshowpage\n%%EOF\n"


@pytest.fixture
def ghostscript_spy(tmp_path, monkeypatch):
    """A stand-in `gs` first on PATH that leaves a mark when anything runs it."""
    folder, mark = tmp_path / "bin", tmp_path / "gs-ran"
    folder.mkdir()
    (folder / "gs").write_text(f"#!/bin/sh\ntouch {mark}\nexit 1\n")
    (folder / "gs").chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}:{os.environ['PATH']}")
    return mark


def test_no_decoder_runs_an_outside_program_and_other_formats_are_one_line(dataset_root, tmp_path, ghostscript_spy):
    """An EPS named photo1.jpg (Pillow would hand it to Ghostscript), a TIFF and a PDF: the dataset
    check skips and lists them, predict reports each on its line and classifies the real photo."""
    from fashion_exp.serving.predict import predict_files

    hats = dataset_root / "train" / "hat"
    (hats / "photo1.jpg").write_bytes(EPS)
    Image.new("RGB", (8, 8), COLORS["hat"]).save(hats / "photo2.jpg", format="TIFF")
    Image.new("RGB", (8, 8), COLORS["hat"]).save(hats / "photo3.jpg", format="PDF")
    dataset = scan_dataset(dataset_root, ["train", "validation"], cache_dir=tmp_path / "scan")
    skipped = dict(dataset.skipped)
    for name in ("photo1.jpg", "photo2.jpg", "photo3.jpg"):
        assert "not an image in a photo format (JPEG, PNG, WEBP, GIF, BMP)" in skipped[f"train/hat/{name}"]

    class Model:
        image_size, interpolation, class_names = 32, "nearest", ["hat", "pants", "shoes"]

        def predict(self, images, batch_size):
            return np.tile([0.7, 0.2, 0.1], (len(images), 1))

    good = next(p for p in hats.iterdir() if p.name not in ("photo1.jpg", "photo2.jpg", "photo3.jpg"))
    files = [hats / "photo1.jpg", good, hats / "photo2.jpg"]
    results = predict_files(Model(), files, 1, 10**6, 8)
    assert [bool(r.error) for r in results] == [True, False, True] and results[1].top[0][0] == "hat"
    assert results[0].error == "not an image in a photo format (JPEG, PNG, WEBP, GIF, BMP)"
    assert not ghostscript_spy.exists()  # nothing ran Ghostscript
