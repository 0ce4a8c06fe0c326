"""Image decoding: one way to turn a file or an upload into the uint8 pixels a model sees."""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from fashion_exp.config import INTERPOLATIONS, DataConfig
from fashion_exp.errors import ImageError

FILTERS = {name: getattr(Image.Resampling, name.upper()) for name in INTERPOLATIONS}


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB for any mode: transparent pixels become white (product photos on transparent cut-outs)."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _reduced(img: Image.Image, size: int) -> Image.Image:
    """`img` shrunk by the largest whole factor that keeps both sides at least 2 x size (box
    averages, as JPEG's draft mode): the alpha composite and RGB copy then cost little."""
    factor = min(img.size) // (2 * size)
    return img.reduce(factor) if factor >= 2 and img.mode in ("RGB", "RGBA", "L", "LA") else img


def read_file(path: Path | str) -> bytes:
    """A file's bytes; ImageError (kind missing) with a one-line reason if it cannot be read."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ImageError(f"{path}: file not found", "missing") from None
    except OSError as err:
        raise ImageError(f"{path}: cannot read file ({err.strerror})", "missing") from None


# The formats a photo comes in, and the only ones any decoder of the project opens (training, the
# dataset check, predict, serve): Pillow decodes these itself. Not EPS (it runs Ghostscript), PDF,
# nor the many rarer formats whose decoders see little use (TIFF, ICO, PPM, ...).
PHOTO_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")


@contextmanager
def _opened(data: bytes, max_pixels: int, formats: tuple[str, ...], name: str, limit_key: str):
    """The image `data` holds, opened lazily (its header read), with every failure of the block
    turned into a one-line ImageError prefixed by `name`."""
    if not data:
        raise ImageError(f"{name}: empty file (0 bytes)", "empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = max_pixels
            with Image.open(io.BytesIO(data), formats=list(formats)) as img:
                yield img
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image in a photo format ({', '.join(formats)})", "not_image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(
            f"{name}: more pixels than the decompression-bomb limit of {max_pixels} ({limit_key})", "too_large"
        ) from None
    except ImageError:
        raise
    except Exception as err:  # noqa: BLE001 - a damaged file makes a decoder raise many kinds: one line, never a crash
        raise ImageError(f"{name}: corrupt or truncated image ({type(err).__name__}: {err})") from None


def header_pixels(data: bytes, max_pixels: int, formats: tuple[str, ...] = PHOTO_FORMATS, name: str = "upload") -> int:
    """The values a decode of `data` holds (width x height x bands), from its header alone;
    ImageError as decode_image's for what it would refuse by its header (format, too many pixels)."""
    with _opened(data, max_pixels, formats, name, "serve.max_image_pixels") as img:
        width, height = img.size
        return width * height * len(img.getbands())


def decode_image(
    data: bytes,
    size: int,
    max_pixels: int,
    interpolation: str,
    name: str = "image",
    formats: tuple[str, ...] = PHOTO_FORMATS,
    draft: bool = False,
) -> np.ndarray:
    """Decode image bytes the way training, prediction and serving all do.

    EXIF orientation applied, converted to RGB (alpha over white), resized to size x size with
    `interpolation` (nearest: keras' load_img and the course). Returns a uint8 array
    (size, size, 3); raises ImageError with a one-line reason prefixed by `name`. Only `formats`
    are tried. draft (serving): a large JPEG is decoded in draft mode, at the smallest of 1/2, 1/4,
    1/8 of its size that still covers size x size, and a large photo of another format is reduced
    by a whole factor right after its decode (memory and time a fraction of a full decode's; the
    pixels differ slightly from it).
    """
    limit_key = f"{'serve' if draft else 'data'}.max_image_pixels"
    with _opened(data, max_pixels, formats, name, limit_key) as img:
        if draft and img.format == "JPEG":
            img.draft("RGB", (size, size))
        img = ImageOps.exif_transpose(img)
        if draft:  # a large photo of another format: shrunk by a whole factor before any copy is made
            img = _reduced(img, size)
        img = _to_rgb(img).resize((size, size), FILTERS[interpolation])
        return np.asarray(img, dtype=np.uint8)


@dataclass(frozen=True)
class Decoder:
    """The decoding settings every consumer of images shares (training, prediction, serving)."""

    size: int
    interpolation: str
    max_pixels: int
    formats: tuple[str, ...] = PHOTO_FORMATS  # the only formats opened
    draft: bool = False  # serving: a large JPEG decoded at a fraction of its size (decode_image)

    @classmethod
    def for_data(cls, data: DataConfig, size: int | None = None, interpolation: str | None = None) -> Decoder:
        """The decoder a DataConfig describes, at `size` (default data.image_size) and `interpolation`
        (default data.interpolation; a model carries its own)."""
        return cls(size or data.image_size, interpolation or data.interpolation, data.max_image_pixels)

    def load(self, path: Path | str) -> np.ndarray:
        return self.decode(read_file(path), name=str(path))

    def decode(self, data: bytes, name: str = "upload") -> np.ndarray:
        return decode_image(
            data, self.size, self.max_pixels, self.interpolation, name=name, formats=self.formats, draft=self.draft
        )

    def load_batches(self, paths: Sequence[Path], batch_size: int, desc: str) -> Iterator[np.ndarray]:
        """Decoded uint8 batches of `paths`, in order, with a progress bar over the images."""
        with tqdm(total=len(paths), desc=desc, unit="img", leave=False) as bar:
            for start in range(0, len(paths), batch_size):
                batch = np.stack([self.load(p) for p in paths[start : start + batch_size]])
                bar.update(len(batch))
                yield batch

    @property
    def key(self) -> str:
        """What changes the pixels a model sees (max_pixels only decides what is refused)."""
        return f"{self.size}px-{self.interpolation}"
