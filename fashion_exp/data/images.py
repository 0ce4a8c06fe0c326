"""Image decoding: one way to turn a file or an upload into the uint8 pixels a model sees."""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator, Sequence
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


def read_file(path: Path | str) -> bytes:
    """A file's bytes; ImageError (kind missing) with a one-line reason if it cannot be read."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ImageError(f"{path}: file not found", "missing") from None
    except OSError as err:
        raise ImageError(f"{path}: cannot read file ({err.strerror})", "missing") from None


SERVED_FORMATS = (
    "JPEG",
    "PNG",
    "WEBP",
    "GIF",
    "BMP",
)  # what the upload page's browsers send; not EPS (Ghostscript) & co


def decode_image(
    data: bytes,
    size: int,
    max_pixels: int,
    interpolation: str,
    name: str = "image",
    formats: tuple[str, ...] | None = None,
) -> np.ndarray:
    """Decode image bytes the way training, prediction and serving all do.

    EXIF orientation applied, converted to RGB (alpha over white), resized to size x size with
    `interpolation` (nearest: keras' load_img and the course). Returns a uint8 array
    (size, size, 3); raises ImageError with a one-line reason prefixed by `name`.
    formats (serving): only these Pillow formats are tried, and a large JPEG is decoded in draft
    mode, at the smallest of 1/2, 1/4, 1/8 of its size that still covers size x size (memory and
    time a fraction of a full decode; the pixels differ slightly from the full decode's).
    """
    if not data:
        raise ImageError(f"{name}: empty file (0 bytes)", "empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = max_pixels
            with Image.open(io.BytesIO(data), formats=formats) as img:
                if formats is not None and img.format == "JPEG":
                    img.draft("RGB", (size, size))
                img = ImageOps.exif_transpose(img)
                img = _to_rgb(img).resize((size, size), FILTERS[interpolation])
                return np.asarray(img, dtype=np.uint8)
    except UnidentifiedImageError:
        what = f"in a served format ({', '.join(formats)})" if formats else "Pillow can read"
        raise ImageError(f"{name}: not an image {what}", "not_image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(
            f"{name}: more pixels than the decompression-bomb limit of {max_pixels} "
            f"({'serve' if formats else 'data'}.max_image_pixels)",
            "too_large",
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise ImageError(f"{name}: corrupt or truncated image ({err})") from None


@dataclass(frozen=True)
class Decoder:
    """The decoding settings every consumer of images shares (training, prediction, serving)."""

    size: int
    interpolation: str
    max_pixels: int
    formats: tuple[str, ...] | None = None  # serving's allow-list (SERVED_FORMATS); None: every format Pillow reads

    @classmethod
    def for_data(cls, data: DataConfig, size: int | None = None, interpolation: str | None = None) -> Decoder:
        """The decoder a DataConfig describes, at `size` (default data.image_size) and `interpolation`
        (default data.interpolation; a model carries its own)."""
        return cls(size or data.image_size, interpolation or data.interpolation, data.max_image_pixels)

    def load(self, path: Path | str) -> np.ndarray:
        return self.decode(read_file(path), name=str(path))

    def decode(self, data: bytes, name: str = "upload") -> np.ndarray:
        return decode_image(data, self.size, self.max_pixels, self.interpolation, name=name, formats=self.formats)

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
