"""``imagefolder`` (any folder of pictures) and ``celeba`` (aligned CelebA faces).

Both are thin: they find the files and choose the preprocessing; decoding, caching
and the per-item path come from ``ImageFiles`` (files.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from gantool import GantoolError, ParamError, Range
from gantool_plugins.datasets.decode import Preprocess, parse_color
from gantool_plugins.datasets.base import ImageSize
from gantool_plugins.datasets.files import IMAGE_SUFFIXES, ImageFiles, find_images


class ImageFolder(ImageFiles):
    """Every image under a folder, recursively (png, jpg, jpeg, webp, bmp).

    Transparent images (e.g. Pokemon sprites) are composited onto ``background``
    instead of turning black. Unreadable files are skipped with one warning line.
    Class labels come from sub-folders, as in torchvision's ImageFolder: each sub-folder
    of ``root`` holding images (at any depth) is a class, numbered in sorted name order.

    Args:
        root: The folder to read, searched recursively (hidden folders are skipped).
        image_size: Side of the square images the model sees, or [height, width].
        channels: 3 for RGB, 1 for grayscale.
        crop: "center" crops the largest centered box of the target's aspect (a square for
            an int image_size) before resizing (like Resize + CenterCrop); "none" squashes
            the whole image to the target size.
        background: Colour behind transparent pixels: a name ("white", "black"), "#RRGGBB",
            or an array of three 0-255 values (red, green, blue).
        hflip: Flip random halves of each batch horizontally (a free augmentation for
            sprites, faces, most photos).
        limit: Use only the first N files in sorted path order; 0 means all.
        cache: Keep the decoded tensor in the dataset cache (~/.cache/gantool/datasets,
            or $GANTOOL_CACHE_DIR/datasets) so the next run skips decoding.
        in_memory: true decodes everything once into memory (fast training), false decodes
            per item in DataLoader workers; "auto" keeps it in memory when it takes at most
            a quarter of the RAM.
        labels: "folders": one class per sub-folder of root (an error unless there are at
            least two and no images directly in root); "none": unlabelled; "auto": "folders"
            when the folder is laid out that way, else "none".
    """

    def __init__(
        self,
        *,
        root: str,
        image_size: ImageSize = 64,
        channels: Literal[1, 3] = 3,
        crop: Literal["center", "none"] = "center",
        background: str | list[int] = "white",
        hflip: bool = False,
        limit: Annotated[int, Range(ge=0)] = 0,
        cache: bool = True,
        in_memory: bool | Literal["auto"] = "auto",
        labels: Literal["auto", "folders", "none"] = "auto",
    ):
        if labels not in ("auto", "folders", "none"):
            raise ParamError("labels", f"{labels!r} is not one of \"auto\", \"folders\", \"none\"")
        color = parse_color(background)
        if color is None:
            raise ParamError("background", f"{background!r} is not a colour; use a name like \"white\", \"#RRGGBB\" or [r, g, b] (0-255)")
        folder = Path(root).expanduser()
        if not folder.is_dir():
            raise GantoolError(f"folder {str(folder)!r} does not exist; set root = \"path/to/images\"")
        files = find_images(folder)
        if not files:
            raise GantoolError(
                f"no images ({', '.join(s[1:] for s in IMAGE_SUFFIXES)}) anywhere under {str(folder)!r}"
            )
        classes, file_labels = folder_classes(folder, files) if labels != "none" else (None, None)
        if labels == "folders" and classes is None:
            raise ParamError("labels", f"\"folders\" needs {_class_layout_problem(folder, files)}; "
                                       f"put each class's images in its own sub-folder, or set labels = \"none\"")
        super().__init__(
            name="imagefolder", root=folder, files=files, hflip=hflip, limit=limit, cache=cache, in_memory=in_memory,
            pre=Preprocess(size=image_size, channels=channels, crop=crop, background=color),
            file_labels=file_labels, class_names=classes,
        )


def folder_classes(root: Path, files: list[Path]) -> tuple[list[str], list[int]] | tuple[None, None]:
    """(class names, each file's class index) when ``root`` is laid out as one sub-folder per
    class (at least two, no images directly in root); (None, None) otherwise.

    Classes come from all files, before ``limit``, so ``num_classes`` does not depend on it.
    """
    tops = [path.relative_to(root).parts for path in files]
    if any(len(parts) == 1 for parts in tops):
        return None, None
    names = sorted({parts[0] for parts in tops})
    if len(names) < 2:
        return None, None
    index = {name: k for k, name in enumerate(names)}
    return names, [index[parts[0]] for parts in tops]


def _class_layout_problem(root: Path, files: list[Path]) -> str:
    """What keeps ``root`` from being a labelled folder, for a one-line error."""
    tops = [path.relative_to(root).parts for path in files]
    loose = [parts[0] for parts in tops if len(parts) == 1]
    names = sorted({parts[0] for parts in tops if len(parts) > 1})
    has = f"{len(names)} sub-folder(s) with images"
    if names:
        has += f" ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''})"
    if loose:
        has += f" and {len(loose)} image(s) directly in it (e.g. {loose[0]})"
    return f"at least 2 sub-folders of images (one per class) and no images directly in {str(root)!r}, but it has {has}"


class CelebA(ImageFiles):
    """CelebA aligned-and-cropped faces (202,599 JPEGs of 178x218), DCGAN preprocessing.

    Each face is center-cropped to 178x178 and resized to ``image_size``, as in the
    DCGAN paper's code; a non-square [height, width] takes the largest box of its aspect
    inside that square. Reads ``ROOT/img_align_celeba/*.jpg`` or torchvision's layout
    ``ROOT/celeba/img_align_celeba/*.jpg``; nothing is downloaded (see docs/datasets.md).

    Args:
        root: Folder holding img_align_celeba/ (or torchvision's celeba/img_align_celeba/).
        image_size: Side of the square images the model sees, or [height, width].
        channels: 3 for RGB, 1 for grayscale.
        hflip: Flip random halves of each batch horizontally (faces are nearly symmetric).
        limit: Use only the first N images (000001.jpg, 000002.jpg, ...); 0 means all.
        cache: Keep the decoded tensor in the dataset cache (~/.cache/gantool/datasets,
            or $GANTOOL_CACHE_DIR/datasets) so the next run skips decoding (about
            2.5 GB at 64x64).
        in_memory: true decodes everything once into memory, false decodes per item in
            DataLoader workers; "auto" keeps it in memory when it takes at most a
            quarter of the RAM (64x64: 2.5 GB, 128x128: 10 GB).
    """

    CROP = 178

    def __init__(
        self,
        *,
        root: str = "data/celeba",
        image_size: ImageSize = 64,
        channels: Literal[1, 3] = 3,
        hflip: bool = False,
        limit: Annotated[int, Range(ge=0)] = 0,
        cache: bool = True,
        in_memory: bool | Literal["auto"] = "auto",
    ):
        base = Path(root).expanduser()
        candidates = [base / "img_align_celeba", base / "celeba" / "img_align_celeba"]
        if base.name == "img_align_celeba":
            candidates.insert(0, base)
        folder = next((c for c in candidates if c.is_dir()), None)
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg")) if folder else []
        if not files:
            where = f"{str(folder)!r} has no .jpg files" if folder else f"no img_align_celeba folder under {str(base)!r}"
            raise GantoolError(
                f"{where}; expected {base / 'img_align_celeba' / '000001.jpg'} ... (unzip img_align_celeba.zip "
                f"into {base}; torchvision's {base / 'celeba' / 'img_align_celeba'} also works) or set root = ..."
            )
        super().__init__(
            name="celeba", root=folder, files=files, hflip=hflip, limit=limit, cache=cache, in_memory=in_memory,
            pre=Preprocess(size=image_size, channels=channels, crop="center", crop_side=self.CROP),
        )
