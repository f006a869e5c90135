"""DiffAugment and its adaptive (ADA) variant, built through the registry as a recipe builds them."""

from __future__ import annotations

import pytest
import torch

import gantool

from gantool import GantoolError
from gantool.plugins import get_registry


def _aug(name="diffaugment", **table):
    return get_registry().build("augmentation", name, table)


def _images(n=8, c=3, size=16):
    return torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1


@pytest.mark.parametrize("policy", ["color", "translation", "cutout", "color,translation,cutout"])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_shape_and_dtype_are_preserved(policy, channels, dtype):
    x = _images(c=channels).to(dtype)
    y = _aug(policy=policy)(x)
    assert y.shape == x.shape and y.dtype == dtype and not torch.equal(y, x)


def test_non_square_images():
    x = torch.randn(4, 3, 12, 20)
    assert _aug()(x).shape == x.shape


@pytest.mark.parametrize("name", ["diffaugment", "ada"])
def test_gradient_reaches_the_input(name):
    x = _images().requires_grad_(True)
    aug = _aug(name, initial_p=1.0) if name == "ada" else _aug()
    aug(x).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_deterministic_under_manual_seed():
    aug, x = _aug(), _images()
    torch.manual_seed(3)
    a = aug(x)
    torch.manual_seed(3)
    assert torch.equal(aug(x), a)
    assert not torch.equal(aug(x), a)  # fresh draws on the next call


def test_probability_zero_is_the_identity():
    x = _images()
    assert torch.equal(_aug(probability=0.0)(x), x)
    assert torch.equal(_aug("ada")(x), x)  # initial_p = 0


def test_probability_picks_whole_samples():
    torch.manual_seed(0)
    x = _images(n=256)
    changed = (_aug(policy="color", probability=0.5)(x) != x).flatten(1).any(1).float().mean()
    assert 0.7 < changed < 0.95  # 1 - 0.5**3: each of the three colour ops skipped with probability 1/2


def test_channels_last_input():
    x = _images()
    torch.manual_seed(5)
    expected = _aug()(x)
    torch.manual_seed(5)
    y = _aug()(x.contiguous(memory_format=torch.channels_last))
    assert y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, expected)  # the same draws; means may sum in another order


def test_translation_moves_content():
    """One bright pixel moves by at most 1/8 of the size each way, or leaves the image."""
    torch.manual_seed(0)
    x = torch.zeros(64, 1, 16, 16)
    x[:, :, 8, 8] = 1.0
    y = _aug(policy="translation")(x)
    assert ((y == 0) | (y == 1)).all() and (y.sum((1, 2, 3)) <= 1).all()
    where = y[:, 0].nonzero()  # (sample, row, col)
    assert ((where[:, 1:] - 8).abs() <= 2).all()
    assert (where[:, 1:] != 8).any(dim=1).sum() > 32  # most samples moved


def test_translation_fills_with_zeros():
    torch.manual_seed(0)
    y = _aug(policy="translation", translation_ratio=0.25)(torch.ones(32, 3, 8, 8))
    zero_rows = (y == 0).all(dim=(1, 3)).sum(1)
    zero_cols = (y == 0).all(dim=(1, 2)).sum(1)
    assert ((zero_rows <= 2) & (zero_cols <= 2)).all() and (zero_rows + zero_cols > 0).any()


def test_cutout_zeroes_a_square():
    torch.manual_seed(0)
    y = _aug(policy="cutout")(torch.ones(64, 3, 16, 16))
    hole = (y == 0).all(1)  # the same hole in every channel
    assert ((y == 0) == hole.unsqueeze(1)).all()
    rows, cols = hole.any(2).sum(1), hole.any(1).sum(1)
    assert (hole.sum((1, 2)) == rows * cols).all()  # a rectangle...
    assert (rows <= 8).all() and (cols <= 8).all() and (hole.sum((1, 2)) == 64).sum() > 10  # ...of 8 x 8 unless clipped


def test_bad_policy_names():
    with pytest.raises(GantoolError, match="did you mean 'cutout'"):
        _aug(policy="color,cutuot")
    with pytest.raises(GantoolError, match="policy"):
        _aug("ada", policy=" , ")
    with pytest.raises(GantoolError, match="probability"):
        _aug(probability=1.5)
    assert _aug(policy=" translation , color ").policy == ("translation", "color")


def _ctx(step):
    return gantool.StepContext(step=step, batch=step, generator=None, discriminator=None, real=None, fake=None)


def _update(ada, sign, calls, n=8):
    for step in range(calls):
        ada.update(torch.full((n,), sign * 2.0), _ctx(step))


def test_ada_p_rises_when_d_overfits_and_falls_otherwise():
    ada = _aug("ada", interval=2, speed_kimg=0.1)  # 100 images from 0 to 1
    assert isinstance(ada.p, torch.Tensor) and ada.p.item() == 0.0
    _update(ada, +1, 1)
    assert ada.p.item() == 0.0  # only every interval calls
    _update(ada, +1, 1)
    assert ada.p.item() == pytest.approx(16 / 100)
    _update(ada, +1, 20)
    assert ada.p.item() == 1.0  # clamped
    _update(ada, -1, 4)
    assert ada.p.item() == pytest.approx(1 - 32 / 100)
    _update(ada, -1, 100)
    assert ada.p.item() == 0.0


def test_ada_uses_the_mean_sign_against_the_target():
    ada = _aug("ada", interval=1, speed_kimg=0.1, initial_p=0.5, target=0.6)
    ada.update(torch.tensor([1.0, 1.0, -1.0, 1.0]), _ctx(0))  # r_t = 0.5 < 0.6: less augmentation
    assert ada.p.item() == pytest.approx(0.5 - 4 / 100)
    ada.update(torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 0.0]), _ctx(1))  # r_t = 5/6 > 0.6
    assert ada.p.item() == pytest.approx(0.5 - 4 / 100 + 6 / 100)


def test_ada_state_dict_round_trip_restores_p_and_accumulators():
    ada = _aug("ada", interval=3, speed_kimg=0.1)
    _update(ada, +1, 4)  # one adjustment, one call accumulated
    state = {k: v.clone() for k, v in ada.state_dict().items()}
    assert set(state) == {"probability", "sign_sum", "score_count", "calls"}
    _update(ada, +1, 2)
    expected = ada.p.clone()

    resumed = _aug("ada", interval=3, speed_kimg=0.1)
    resumed.load_state_dict(state)
    assert resumed.p.item() == pytest.approx(24 / 100) and resumed.calls.item() == 1
    _update(resumed, +1, 2)
    assert torch.equal(resumed.p, expected)


def test_forward_and_update_never_read_the_device(monkeypatch):
    """No .item(), float(), bool() or tolist() on a tensor: each would be a host sync on CUDA."""
    ada = _aug("ada", interval=1, initial_p=0.5)
    x = _images().requires_grad_(True)

    def forbidden(*args, **kwargs):
        raise AssertionError("host sync")

    for name in ("item", "__float__", "__bool__", "__int__", "tolist", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, forbidden)
    for aug in (ada, _aug()):
        aug(x).sum().backward()
    ada.update(torch.randn(8), _ctx(0))
    monkeypatch.undo()
    assert isinstance(ada.p, torch.Tensor) and ada.p.item() != 0.5


def test_none_turns_off_the_augmentation_a_base_recipe_sets(tmp_path):
    """TOML cannot delete a table: ``type = "none"`` is how a user trains recipes/dcgan_pokemon.toml without ADA."""
    from gantool.plan import make_plan
    from gantool.recipe import load_recipe

    base = tmp_path / "base.toml"
    base.write_text('[run]\ndevice = "cpu"\n[dataset]\ntype = "fake"\nimage_size = 16\nsize = 8\n'
                    '[generator]\ntype = "dcgan"\nbase_channels = 4\n[discriminator]\ntype = "dcgan"\nbase_channels = 4\n'
                    '[loss]\ntype = "bce"\n[augment]\ntype = "ada"\n[train]\nbatch_size = 4\n')
    assert type(make_plan(load_recipe(base), get_registry()).augment).__name__ == "AdaptiveAugment"
    off = make_plan(load_recipe(base, ["augment.type=none"]), get_registry()).augment
    x = _images()
    assert off(x) is x and not list(off.parameters()) and not list(off.buffers())
    with pytest.raises(GantoolError, match="policy"):  # it takes no parameters
        make_plan(load_recipe(base, ["augment.type=none", "augment.policy=color"]), get_registry())
