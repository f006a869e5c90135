"""Turning one image file into one uint8 tensor (C, H, W): the preprocessing.

Steps, in this order:

1. JPEG "draft" mode: libjpeg decodes at 1/2, 1/4 or 1/8 scale directly from the DCT
   coefficients when the target is that much smaller (a 178x218 CelebA face for a
   64x64 model decodes at 89x109). It never goes below the size the crop and resize
   need. Measured: 1.4x faster per CelebA-sized face; the gain grows with the photo.
2. EXIF orientation is applied, so phone photos are not sideways.
3. Transparency (RGBA, LA, palette PNGs with a transparent colour, as in Pokemon
   sprites) is composited onto a solid ``background``: dropping alpha would expose
   whatever colour the transparent pixels happen to store, usually black.
4. Crop the largest centered box with the target's aspect ratio H:W (a square for an int
   ``size``), inside the centered square of side ``crop_side`` when that is set, and resize
   it to (H, W) (Pillow's bilinear filter, antialiased when shrinking): Resize + CenterCrop
   in one step. ``crop="none"`` squashes the whole image instead.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from PIL import Image, ImageColor, ImageOps

from gantool_plugins.datasets.base import height_width


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """Everything that decides the pixels; also part of the disk-cache key."""

    size: int | tuple[int, int]  # a square's side, or (height, width); a square is kept as its int
    channels: int  # 1 or 3
    crop: str = "center"  # "center" (crop to the target's aspect) or "none" (squash)
    crop_side: int = 0  # with crop="center": crop inside the centered square of this side; 0 = no limit
    background: tuple[int, int, int] = (255, 255, 255)

    def __post_init__(self):
        # One spelling per size, so [64, 64] and 64 share a cache key (the key square sizes always had).
        height, width = height_width(self.size)
        object.__setattr__(self, "size", height if height == width else (height, width))

    @property
    def height_width(self) -> tuple[int, int]:
        return height_width(self.size)

    def cache_params(self) -> dict:
        return dataclasses.asdict(self)


def parse_color(value) -> tuple[int, int, int] | None:
    """'white', '#fa0', '#ffaa00', 'rgb(1,2,3)' or [r, g, b] -> (r, g, b); None if invalid."""
    if isinstance(value, str):
        try:
            return ImageColor.getrgb(value)[:3]
        except ValueError:
            return None
    if isinstance(value, list | tuple) and len(value) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in value):
        return tuple(value)
    return None


def load_image(path, pre: Preprocess) -> torch.Tensor:
    """Decode ``path`` and preprocess it to uint8 (channels, height, width). Raises on bad files."""
    with Image.open(path) as im:
        mode = "L" if pre.channels == 1 else "RGB"
        full_width = im.size[0]
        if im.format == "JPEG":
            im.draft(mode, _draft_request(im.size, pre))
        scale = im.size[0] / full_width  # 1, 1/2, 1/4 or 1/8 after draft
        ImageOps.exif_transpose(im, in_place=True)
        im = _flatten(im, pre)
        im = im.convert(mode) if im.mode != mode else im
        box = _crop_box(im.size, pre, scale)
        im = im.crop(box) if box != (0, 0, *im.size) else im
        height, width = pre.height_width
        out = im.resize((width, height), Image.Resampling.BILINEAR)
    array = np.asarray(out, dtype=np.uint8)
    array = array[:, :, None] if array.ndim == 2 else array
    return torch.from_numpy(np.array(array.transpose(2, 0, 1), order="C"))  # HWC -> CHW, one copy


def _crop_box(wh, pre: Preprocess, scale: float = 1.0):
    w, h = wh
    if pre.crop == "none":
        return (0, 0, w, h)
    rw, rh = (w, h) if pre.crop_side == 0 else (min(w, h, round(pre.crop_side * scale)),) * 2
    height, width = pre.height_width
    if rw * height > rh * width:  # the region is wider than the target: keep its height
        bw, bh = round(rh * width / height), rh
    else:
        bw, bh = rw, round(rw * height / width)
    left, top = (w - bw) // 2, (h - bh) // 2
    return (left, top, left + bw, top + bh)


def _draft_request(wh, pre: Preprocess):
    """The smallest decoded size for which the crop box still has >= (height, width) pixels."""
    w, h = wh
    box = _crop_box(wh, pre)
    bw, bh = box[2] - box[0], box[3] - box[1]
    height, width = pre.height_width
    return (max(1, int(np.ceil(w * width / bw))), max(1, int(np.ceil(h * height / bh))))


def _flatten(im: Image.Image, pre: Preprocess) -> Image.Image:
    """Composite transparency onto the background; map 16-bit gray to 8-bit."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(im).astype(np.float64)
        peak = 65535.0 if array.max() > 255 else 255.0
        return Image.fromarray(np.clip(array * 255.0 / peak + 0.5, 0, 255).astype(np.uint8), "L")
    has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
    if not has_alpha:
        return im
    rgba = im.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, (*pre.background, 255)), rgba).convert("RGB")
