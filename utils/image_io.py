"""Reading photos and UV maps robustly, writing images atomically.

:func:`read_image` accepts JPEG/PNG/BMP/WebP/TIFF/GIF, applies the EXIF
orientation, and converts grayscale, palette, RGBA, CMYK and 16-bit images to
8-bit RGB. Animated files give their first frame. Images larger than
``max_pixels`` are refused before decoding (decompression bombs). Every
failure is a one-line :class:`~utils.errors.FileFormatError`.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from .atomic import write_bytes
from .errors import FileFormatError
from .safe_load import read_bytes

__all__ = ["IMAGE_EXTENSIONS", "DEFAULT_MAX_PIXELS", "read_image", "read_png_text", "write_image", "list_images"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")
#: 100 megapixels: larger images are refused before decoding.
DEFAULT_MAX_PIXELS = 100_000_000


def list_images(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Image files of ``folder`` (by extension, case-insensitive), sorted by name."""
    folder = Path(folder)
    pattern = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in pattern if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))


def _to_rgb8(image: Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if array.max() > 255 else 255.0
        gray = np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        gray = np.clip(array * (255.0 if array.max() <= 1.0 else 1.0) + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Composite on white: transparent photo backgrounds become neutral.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    return np.asarray(image.convert("RGB"))


def read_image(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image as (H, W, 3) uint8 RGB, EXIF orientation applied."""
    path = Path(path)
    data = read_bytes(path)
    if not data:
        raise FileFormatError(path, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise FileFormatError(
                    path, f"image is {width}x{height} pixels, more than the limit of {max_pixels:,}"
                )
            if width < 1 or height < 1:
                raise FileFormatError(path, f"image has no pixels ({width}x{height})")
            image.seek(0)
            image.load()
            image = ImageOps.exif_transpose(image)
            return _to_rgb8(image)
    except FileFormatError:
        raise
    except UnidentifiedImageError:
        raise FileFormatError(path, "not a recognised image format") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise FileFormatError(path, f"refused as a decompression bomb ({err})") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise FileFormatError(path, f"corrupt or truncated image ({message})") from None


def read_png_text(path: str | os.PathLike) -> dict[str, str]:
    """The text chunks of a PNG (e.g. ``uv_layout_id``); empty for other formats or unreadable files."""
    try:
        with Image.open(path) as image:
            return dict(getattr(image, "text", {}) or {})
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return {}


def write_image(path: str | os.PathLike, image: np.ndarray, quality: int = 95,
                text: dict[str, str] | None = None) -> None:
    """Write (H, W, 3), (H, W, 4) or (H, W) uint8 (or float in [0, 1]) atomically; format from the suffix.

    ``text`` is stored as PNG text chunks (PNG only).
    """
    array = np.asarray(image)
    if array.dtype != np.uint8:
        array = np.clip(np.asarray(array, np.float64) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".bmp": "BMP"}.get(
        Path(path).suffix.lower()
    )
    if fmt is None:
        raise ValueError(f"{path}: unsupported image extension")
    buffer = io.BytesIO()
    kwargs = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    if text and fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        for key, value in text.items():
            info.add_text(key, value)
        kwargs["pnginfo"] = info
    Image.fromarray(array).save(buffer, format=fmt, **kwargs)
    write_bytes(path, buffer.getvalue())
