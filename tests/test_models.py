"""Shapes, ranges, errors and initialisation of the built-in generators and discriminators."""

import pytest
import torch
from torch import nn

from gantool import ParamError
from gantool.params import validate
from gantool_plugins.dcgan.dense import DenseDCGANDiscriminator, DenseDCGANGenerator
from gantool_plugins.dcgan.models import SUPPORTED_SIZES, DCGANDiscriminator, DCGANGenerator
from gantool_plugins.upsample_conv.models import UpsampleConvGenerator, fusable, resize_conv

SIZES = sorted(SUPPORTED_SIZES)


def _small(cls, shape, **kw):
    return cls(image_shape=shape, base_channels=4, **kw)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("channels", [1, 3])
def test_dcgan_generator_shapes_and_range(size, channels):
    torch.manual_seed(0)
    g = _small(DCGANGenerator, (channels, size, size), latent_dim=8)
    assert g.latent_dim == 8 and g.image_shape == (channels, size, size)
    z = g.sample_latent(3)
    assert z.shape == (3, 8)
    x = g(z)
    assert x.shape == (3, channels, size, size)
    assert x.min() >= -1 and x.max() <= 1
    # The output layer is tanh: values are spread, not collapsed to 0.
    assert x.std() > 0
    # Also accepts latents already shaped as 1x1 maps.
    assert torch.equal(g(z.reshape(3, 8, 1, 1)), x)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("channels", [1, 3])
def test_dcgan_discriminator_shapes(size, channels):
    d = _small(DCGANDiscriminator, (channels, size, size))
    scores = d(torch.rand(5, channels, size, size) * 2 - 1)
    assert scores.shape == (5,)
    assert torch.isfinite(scores).all()


@pytest.mark.parametrize("shape", [(1, 50, 50), (3, 44, 36), (1, 32, 28), (1, 100, 100)])
@pytest.mark.parametrize("cls", [DCGANGenerator, DCGANDiscriminator])
def test_unsupported_size_is_a_param_error(cls, shape):
    with pytest.raises(ParamError) as info:
        cls(image_shape=shape)
    assert info.value.param == "image_shape"
    message = str(info.value)
    assert "cannot make" in message and "[dataset] image_size" in message
    assert f"{shape[1]}x{shape[2]}" in message and "e.g." in message  # sizes it can make


def test_paper_layout_64():
    """The paper's 64x64 model: 4x4x512 -> 8x8x256 -> 16x16x128 -> 32x32x64 -> 64x64x3."""
    g = DCGANGenerator(image_shape=(3, 64, 64))
    convs = [m for m in g.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(100, 512), (512, 256), (256, 128), (128, 64), (64, 3)]
    assert [c.stride for c in convs] == [(1, 1)] + [(2, 2)] * 4
    # BN after every layer but the output; no pooling, no linear layers.
    assert sum(isinstance(m, nn.BatchNorm2d) for m in g.modules()) == 4
    assert not any(isinstance(m, nn.Linear | nn.MaxPool2d | nn.AvgPool2d) for m in g.modules())
    assert isinstance(g.net[-1], nn.Tanh)

    d = DCGANDiscriminator(image_shape=(3, 64, 64))
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(3, 64), (64, 128), (128, 256), (256, 512), (512, 1)]
    # No BN on the input layer: the first module after the first conv is the activation.
    assert isinstance(d.net[1], nn.LeakyReLU) and d.net[1].negative_slope == 0.2
    assert sum(isinstance(m, nn.BatchNorm2d) for m in d.modules()) == 3
    assert not any(isinstance(m, nn.Linear | nn.MaxPool2d | nn.AvgPool2d) for m in d.modules())


def test_28px_uses_a_7x7_projection():
    g = DCGANGenerator(image_shape=(1, 28, 28), base_channels=8)
    first = g.net[0]
    assert first.kernel_size == (7, 7) and first.stride == (1, 1)
    d = DCGANDiscriminator(image_shape=(1, 28, 28), base_channels=8)
    assert d.net[-1].kernel_size == (7, 7)


def test_init_statistics():
    torch.manual_seed(0)
    g = DCGANGenerator(image_shape=(3, 64, 64))
    d = DCGANDiscriminator(image_shape=(3, 64, 64))
    for model in (g, d):
        convs = torch.cat([m.weight.flatten() for m in model.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)])
        assert abs(convs.mean().item()) < 1e-3
        assert convs.std().item() == pytest.approx(0.02, rel=0.02)
        bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        scale = torch.cat([m.weight for m in bns])
        assert scale.mean().item() == pytest.approx(1.0, abs=0.01)
        assert scale.std().item() == pytest.approx(0.02, rel=0.2)
        assert all(torch.count_nonzero(m.bias) == 0 for m in bns)
        biases = [m.bias for m in model.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d) and m.bias is not None]
        assert biases and all(torch.count_nonzero(b) == 0 for b in biases)


def test_discriminator_options():
    shape = (1, 28, 28)
    d = _small(DCGANDiscriminator, shape, dropout=0.3, spectral_norm=True, norm="none")
    assert sum(isinstance(m, nn.Dropout) for m in d.modules()) == 2
    assert not any(isinstance(m, nn.BatchNorm2d) for m in d.modules())
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert all(nn.utils.parametrize.is_parametrized(c, "weight") for c in convs)
    assert d(torch.zeros(2, *shape)).shape == (2,)
    # Layer norm normalises each sample on its own: scores do not depend on the batch.
    d = _small(DCGANDiscriminator, shape, norm="layer").train()
    x = torch.randn(4, *shape)
    assert torch.allclose(d(x)[:1], d(x[:1]), atol=1e-6)


def test_parameters_validate_from_a_recipe_table():
    kw = validate(DCGANGenerator, {"latent_dim": 64, "base_channels": 32}, injected=("image_shape",))
    assert kw == {"latent_dim": 64, "base_channels": 32}
    with pytest.raises(Exception, match="base_channels"):
        validate(DCGANGenerator, {"base_channels": 0}, injected=("image_shape",))
    with pytest.raises(Exception, match="dropout"):
        validate(DCGANDiscriminator, {"dropout": 1.5}, injected=("image_shape",))


# --- upsample_conv -------------------------------------------------------------------

@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("channels", [1, 3])
def test_upsample_conv_shapes_and_range(size, channels):
    g = _small(UpsampleConvGenerator, (channels, size, size), latent_dim=8)
    x = g(g.sample_latent(3))
    assert x.shape == (3, channels, size, size)
    assert x.min() >= -1 and x.max() <= 1 and x.std() > 0


@pytest.mark.parametrize(
    "options",
    [
        {"upsample_mode": "bilinear"},
        {"padding_mode": "reflect"},
        {"kernel_size": 5, "padding_mode": "reflect"},
        {"kernel_size": 1},
    ],
)
def test_upsample_conv_options(options):
    g = _small(UpsampleConvGenerator, (1, 28, 28), latent_dim=8, **options)
    assert g(g.sample_latent(2)).shape == (2, 1, 28, 28)
    ups = [m for m in g.modules() if isinstance(m, nn.Upsample)]
    assert len(ups) == 2 and all(u.mode == options.get("upsample_mode", "nearest") for u in ups)
    convs = [m for m in g.modules() if isinstance(m, nn.Conv2d)]
    k = options.get("kernel_size", 3)
    assert all(c.kernel_size == (k, k) and c.stride == (1, 1) for c in convs)
    assert all(c.padding_mode == options.get("padding_mode", "zeros") for c in convs)


def test_upsample_conv_layout_matches_dcgan():
    """Same widths as dcgan; the only transposed conv is the 1x1 -> 4x4 projection."""
    g = UpsampleConvGenerator(image_shape=(3, 64, 64))
    transposed = [m for m in g.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert len(transposed) == 1 and transposed[0].stride == (1, 1)
    convs = [m for m in g.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(512, 256), (256, 128), (128, 64), (64, 3)]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in g.modules()) == 4
    assert isinstance(g.net[-1], nn.Tanh)


@pytest.mark.parametrize("kernel_size", [1, 3, 5, 7])
@pytest.mark.parametrize("side", [(4, 4), (3, 5), (7, 7)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_resize_conv_is_upsample_then_conv(kernel_size, side, channels_last):
    """The one transposed convolution gives conv(nearest x2 of x), and the same gradients, in float64."""
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 5, kernel_size, 1, kernel_size // 2).double()
    x = torch.randn(2, 6, *side, dtype=torch.float64, requires_grad=True)
    if channels_last:
        conv, x = conv.to(memory_format=torch.channels_last), x.detach().to(memory_format=torch.channels_last)
        x.requires_grad_(True)
    results = []
    for run in (lambda: resize_conv(x, conv), lambda: conv(nn.functional.interpolate(x, scale_factor=2))):
        out = run()
        grads = torch.autograd.grad(out.square().sum(), [x, conv.weight, conv.bias])
        results.append((out, *grads))
    assert results[0][0].shape == (2, 5, 2 * side[0], 2 * side[1])
    for fused, plain in zip(*results):
        torch.testing.assert_close(fused, plain, rtol=1e-12, atol=1e-12)


def test_upsample_conv_fuses_only_nearest_zero_padded_pairs():
    """The default generator runs every resize + conv as one; reflect padding and bilinear resizing are left as they are."""
    def pairs(g):
        layers = list(g.net)
        return [fusable(a, b) for a, b in zip(layers, layers[1:]) if isinstance(a, nn.Upsample)]

    assert pairs(_small(UpsampleConvGenerator, (3, 32, 32))) == [True] * 3
    assert pairs(_small(UpsampleConvGenerator, (3, 32, 32), padding_mode="reflect")) == [False] * 3
    assert pairs(_small(UpsampleConvGenerator, (3, 32, 32), upsample_mode="bilinear")) == [False] * 3
    torch.manual_seed(0)
    g = _small(UpsampleConvGenerator, (3, 32, 32), latent_dim=8).double()
    z = g.sample_latent(4).double()
    called = []
    for m in g.modules():
        if type(m) is nn.Conv2d:
            m.register_forward_pre_hook(lambda *_: called.append(1))
    fused = g(z)
    assert not called  # no convolution ran over an enlarged map
    torch.testing.assert_close(fused, nn.Sequential.forward(g.net, z.view(4, 8, 1, 1)), rtol=1e-12, atol=1e-12)
    assert len(called) == 3


def test_upsample_conv_rejects_bad_options():
    with pytest.raises(ParamError) as info:
        UpsampleConvGenerator(image_shape=(1, 28, 28), kernel_size=4)
    assert info.value.param == "kernel_size" and "odd" in str(info.value)
    with pytest.raises(ParamError, match="cannot make 50x50"):
        UpsampleConvGenerator(image_shape=(1, 50, 50))
    with pytest.raises(Exception, match="upsample_mode"):
        validate(UpsampleConvGenerator, {"upsample_mode": "bicubic"}, injected=("image_shape",))


# --- dcgan_dense (the TensorFlow tutorial) --------------------------------------------


def test_dcgan_dense_is_the_tensorflow_tutorial_at_28px():
    g = DenseDCGANGenerator(image_shape=(1, 28, 28))
    linear = g.project[0]
    assert (linear.in_features, linear.out_features) == (100, 7 * 7 * 256) and linear.bias is None
    convs = [m for m in g.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (256, 128, (5, 5), (1, 1)),
        (128, 64, (5, 5), (2, 2)),
        (64, 1, (5, 5), (2, 2)),
    ]
    assert isinstance(g.net[-1], nn.Tanh)
    assert all(m.negative_slope == 0.3 for m in g.modules() if isinstance(m, nn.LeakyReLU))

    d = DenseDCGANDiscriminator(image_shape=(1, 28, 28))
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (1, 64, (5, 5), (2, 2)),
        (64, 128, (5, 5), (2, 2)),
    ]
    assert [m.p for m in d.modules() if isinstance(m, nn.Dropout)] == [0.3, 0.3]
    assert d.net[-1].in_features == 7 * 7 * 128 and d.net[-1].out_features == 1
    assert not any(isinstance(m, nn.BatchNorm2d) for m in d.modules())


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("channels", [1, 3])
def test_dcgan_dense_shapes(size, channels):
    g = _small(DenseDCGANGenerator, (channels, size, size), latent_dim=8)
    x = g(g.sample_latent(3))
    assert x.shape == (3, channels, size, size) and x.min() >= -1 and x.max() <= 1
    # The dense projection stays small: the start map is at most 8x8.
    assert g.start[1] <= 8
    d = _small(DenseDCGANDiscriminator, (channels, size, size))
    assert d(x).shape == (3,)


def test_dcgan_dense_rejects_unsupported_size():
    for cls in (DenseDCGANGenerator, DenseDCGANDiscriminator):
        with pytest.raises(ParamError, match="image_size"):
            cls(image_shape=(1, 30, 30))


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("start", [(4, 4), (3, 7)])
def test_matmul_edge_layers_compute_the_convolutions_they_replace(channels_last, start):
    """G's first and D's last layer run as matrix products (faster on CPU), with the convolutions'
    weights, outputs, memory format and gradients."""
    from gantool_plugins.dcgan.models import LatentProjection, ScoreHead

    torch.manual_seed(0)
    pairs = [(LatentProjection(20, 16, start, 1, 0, bias=True), nn.ConvTranspose2d(20, 16, start, 1, 0, bias=True),
              torch.randn(5, 20, 1, 1)),
             (ScoreHead(16, 3, start, 1, 0), nn.Conv2d(16, 3, start, 1, 0), torch.randn(5, 16, *start))]
    for fast, plain, x in pairs:
        nn.init.normal_(fast.bias)
        plain.load_state_dict(fast.state_dict())
        assert fast.state_dict().keys() == plain.state_dict().keys()
        if channels_last:
            fast, plain = fast.to(memory_format=torch.channels_last), plain.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        a, b = fast(xa), plain(xb)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        assert a.is_contiguous(memory_format=torch.channels_last) == b.is_contiguous(memory_format=torch.channels_last)
        grad = torch.randn_like(a)
        a.backward(grad), b.backward(grad)
        torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(fast.weight.grad, plain.weight.grad, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(fast.bias.grad, plain.bias.grad, rtol=1e-5, atol=1e-5)
    generator = DCGANGenerator(image_shape=(3, 64, 64))
    assert isinstance(generator.net[0], LatentProjection) and type(generator.net[3]) is nn.ConvTranspose2d
    assert isinstance(DCGANDiscriminator(image_shape=(3, 64, 64)).net[-1], ScoreHead)
