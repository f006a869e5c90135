"""Feature extractors for FID/KID and the digit classifier behind ``class_coverage``.

Three feature spaces:

- ``digits``: a small CNN digit classifier trained by ``scripts/train_digit_features.py``
  on mnist5k and shipped next to this file as safetensors. Its penultimate layer (128
  post-ReLU channels, global-average-pooled) is the feature space; its softmax gives the
  class histogram for ``class_coverage``. Meaningful for MNIST-like data; usable on any image.
- ``inception``: torchvision's Inception-v3 pool features (2048-d), from a local safetensors
  file (``inception_weights``) or, by default, the standard FID weights that ``inception.py``
  fetches once into the cache. Both torchvision's ImageNet weights (1000 classes) and the
  FID-Inception port used by pytorch-fid / the TF reference (1008 classes; its pooling
  differs in a few blocks, reproduced below) are recognised. Nothing is unpickled.
- ``random``: a fixed, seeded, randomly initialised conv net (512-d) for any image data,
  the fallback of ``features = "auto"`` (``resolve_features``) for the diversity metrics.

An extractor maps images in [-1, 1], shape (N, C, H, W), to float32 features (N, D);
resizing and grey/RGB conversion are the extractor's job, so a metric can feed it any
generator's output.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gantool.errors import GantoolError

DIGIT_WEIGHTS = Path(__file__).with_name("digit_features.safetensors")
DIGIT_ARCH = "digitnet-v1"

# ITU-R BT.601 luma, the usual RGB -> grey conversion (PIL's "L" mode uses it too).
_LUMA = (0.299, 0.587, 0.114)


class DigitNet(nn.Module):
    """LeNet-style CNN for 28x28 grey digits: three 3x3 convs, two poolings, 128-d features.

    ~94k parameters (about 370 KB as float32): large enough for ~98% held-out accuracy
    on 1,000 mnist5k digits, small enough to ship in the wheel and to run on CPU.
    """

    feature_dim = 128

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # 14x14
            nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # 7x7
            nn.Conv2d(64, 128, 3, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=True),  # 5x5
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(self.feature_dim, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.body(x)))


def to_grey(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, 1, H, W): luma for RGB, identity for grey."""
    if x.shape[1] == 1:
        return x
    if x.shape[1] == 3:
        w = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x * w).sum(dim=1, keepdim=True)
    return x.mean(dim=1, keepdim=True)


def to_rgb(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, 3, H, W): grey is repeated; other channel counts are an error."""
    if x.shape[1] == 3:
        return x
    if x.shape[1] == 1:
        return x.expand(-1, 3, -1, -1)
    raise GantoolError(f"inception features need 1- or 3-channel images, got {x.shape[1]} channels")


def resize(x: torch.Tensor, size: int, *, antialias: bool) -> torch.Tensor:
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=antialias)


class DigitFeatures:
    """The shipped digit classifier as an extractor: ``features`` (N, 128) and ``logits`` (N, 10).

    Inputs are converted to grey and resized to 28x28 (bilinear, antialiased), the
    classifier's training resolution.
    """

    name = "digits"
    dim = DigitNet.feature_dim
    batch_size = 500

    def __init__(self, weights: Path = DIGIT_WEIGHTS, device="cpu"):
        from safetensors import safe_open
        from safetensors.torch import load_file

        weights = Path(weights)
        if not weights.is_file():
            raise GantoolError(
                f"digit classifier weights not found at {weights}; reinstall gantool or run "
                "scripts/train_digit_features.py to recreate them"
            )
        with safe_open(str(weights), framework="pt") as f:
            self.metadata = dict(f.metadata() or {})
        if self.metadata.get("arch", DIGIT_ARCH) != DIGIT_ARCH:
            raise GantoolError(f"{weights}: architecture {self.metadata['arch']!r}, expected {DIGIT_ARCH!r}")
        self.net = DigitNet()
        self.net.load_state_dict(load_file(str(weights)))
        self.net.eval().requires_grad_(False).to(device)
        self.device = torch.device(device)
        # Identity for caches: changes whenever the weights do.
        self.id = f"digits:{DIGIT_ARCH}:{file_digest(weights)[:16]}"

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, torch.float32, non_blocking=True)
        return resize(to_grey(x), 28, antialias=True)

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(self._prepare(x)).float()

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self._prepare(x)).float()


class InceptionFeatures:
    """Inception-v3 pool3 features (N, 2048) from a local safetensors weights file.

    Inputs are resized to 299x299 (bilinear, as pytorch-fid does), grey is repeated to
    RGB, and values stay in [-1, 1], which is what both weight sets expect (torchvision's
    ``transform_input`` only converts ImageNet-normalised inputs to that range).
    """

    name = "inception"
    dim = 2048
    batch_size = 50

    def __init__(self, weights: str | os.PathLike, device="cpu"):
        from safetensors.torch import load_file

        path = Path(weights).expanduser()
        check_inception_path(path)
        try:
            state = load_file(str(path))
        except Exception as e:  # noqa: BLE001 - any parse failure is the user's file
            raise GantoolError(f"inception_weights: cannot read {path} as safetensors ({e})") from None
        self.net, self.variant = build_inception(state, path)
        self.net.eval().requires_grad_(False).to(device)
        self.device = torch.device(device)
        self.id = f"inception:{self.variant}:{file_digest(path)[:16]}"

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, torch.float32, non_blocking=True)
        x = resize(to_rgb(x), 299, antialias=False)
        return self.net(x).float()


INCEPTION_HELP = (
    'set inception_weights = "path/to/inception_v3.safetensors" (torchvision Inception-v3 '
    "or pytorch-fid FID-Inception weights converted to safetensors; see docs/metrics.md)"
)


def check_inception_path(path: Path) -> None:
    if not path.is_file():
        raise GantoolError(f"inception_weights: file {path} does not exist; {INCEPTION_HELP}")
    if path.suffix in {".pth", ".pt", ".bin", ".ckpt", ".pkl"}:
        raise GantoolError(
            f"inception_weights: {path} is a pickle file, which gantool never loads; convert it "
            "once to safetensors (docs/metrics.md shows the two-line conversion)"
        )


def inception_available() -> bool:
    """Whether the standard FID Inception weights are on disk (cached copy or a hand-placed .pth).

    Never downloads: ``features = "auto"`` asks this to choose a feature space without a network.
    """
    from gantool_plugins.metrics import inception

    return inception.available()


def build_inception(state: dict[str, torch.Tensor], path: Path) -> tuple[nn.Module, str]:
    """Inception3 with the classifier removed; FID-Inception blocks when fc has 1008 classes."""
    from torchvision.models.inception import Inception3

    if "fc.weight" not in state:
        raise GantoolError(f"inception_weights: {path} has no 'fc.weight'; not an Inception-v3 state dict")
    state = {k.removeprefix("module."): v for k, v in state.items() if not k.startswith("AuxLogits.")}
    num_classes = state["fc.weight"].shape[0]
    net = Inception3(num_classes=num_classes, aux_logits=False, transform_input=False, init_weights=False)
    variant = "torchvision"
    if num_classes == 1008:
        variant = "fid"
        _use_fid_blocks(net)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if "\n" in str(e) else str(e)
        raise GantoolError(f"inception_weights: {path} does not match Inception-v3 ({first})") from None
    net.fc = nn.Identity()
    return net, variant


# --- FID-Inception: the TF graph used by the reference FID pools differently in three block types.
# Same parameter names as torchvision's blocks, so only forward() changes (cf. pytorch-fid).


def _use_fid_blocks(net: nn.Module) -> None:
    from torchvision.models.inception import InceptionA, InceptionC, InceptionE

    class FIDInceptionA(InceptionA):
        def forward(self, x):
            b1 = self.branch1x1(x)
            b5 = self.branch5x5_2(self.branch5x5_1(x))
            b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
            bp = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False))
            return torch.cat([b1, b5, b3, bp], 1)

    class FIDInceptionC(InceptionC):
        def forward(self, x):
            b1 = self.branch1x1(x)
            b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
            bd = self.branch7x7dbl_1(x)
            for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
                bd = layer(bd)
            bp = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False))
            return torch.cat([b1, b7, bd, bp], 1)

    class FIDInceptionE(InceptionE):
        def __init__(self, in_channels, max_pool):
            super().__init__(in_channels)
            self.max_pool = max_pool

        def forward(self, x):
            b1 = self.branch1x1(x)
            b3 = self.branch3x3_1(x)
            b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
            bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
            bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
            if self.max_pool:
                bp = F.max_pool2d(x, 3, stride=1, padding=1)
            else:
                bp = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
            return torch.cat([b1, b3, bd, self.branch_pool(bp)], 1)

    net.Mixed_5b = FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = FIDInceptionE(1280, max_pool=False)
    net.Mixed_7c = FIDInceptionE(2048, max_pool=True)


# --- A random embedding for any image data (prdc, duplicates, memorisation) ---------------------

RANDOM_ARCH = "randconv5-v1"
RANDOM_SEED = 0
RANDOM_SIZE = 64


class RandomFeatures:
    """A fixed, seeded, randomly initialised conv net: 512-d features for any image, no download.

    Naeem et al. (2020, "Reliable Fidelity and Diversity Metrics") found that random embeddings
    separate real from generated sets, which is what nearest-neighbour metrics need where no
    trained network fits the data. Five 3x3 stride-2 convs (3 -> 32 -> 64 -> 128 -> 256 -> 512),
    LeakyReLU(0.2), global average pooling. Weights are drawn from ``torch.Generator(seed)`` on
    the CPU (He-normal, zero bias), so every machine builds the same net; their digest is in ``id``.
    Inputs are resized to 64x64 (bilinear, antialiased) and grey is repeated to RGB.
    """

    name = "random"
    dim = 512
    batch_size = 250
    size = RANDOM_SIZE

    def __init__(self, seed: int = RANDOM_SEED, device="cpu"):
        widths = (3, 32, 64, 128, 256, 512)
        g = torch.Generator().manual_seed(seed)
        gain = (2 / (1 + 0.2**2)) ** 0.5  # He init for LeakyReLU(0.2): activations keep their scale
        layers: list[nn.Module] = []
        digest = hashlib.sha256()
        for c_in, c_out in zip(widths, widths[1:]):
            conv = nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)
            weight = torch.randn(conv.weight.shape, generator=g) * (gain / (c_in * 9) ** 0.5)
            conv.weight.data.copy_(weight)
            conv.bias.data.zero_()
            digest.update(weight.numpy().tobytes())
            layers += [conv, nn.LeakyReLU(0.2)]
        self.net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.net.eval().requires_grad_(False).to(device)
        self.device = torch.device(device)
        self.seed = seed
        self.id = f"random:{RANDOM_ARCH}:seed{seed}:{self.size}px:{digest.hexdigest()[:16]}"

    def describe(self) -> dict:
        """The feature space for a metric's protocol."""
        return {"name": self.name, "arch": RANDOM_ARCH, "seed": self.seed, "dim": self.dim, "input_size": self.size}

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, torch.float32, non_blocking=True)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] != 3:
            raise GantoolError(f"random features need 1- or 3-channel images, got {x.shape[1]} channels")
        return self.net(resize(x, self.size, antialias=True)).float()


def resolve_features(features: str, image_shape, *, inception_weights: str = "") -> str:
    """The feature space ``features = "auto"`` means for images of ``image_shape`` (C, H, W).

    Inception when its weights are at hand (the published feature space); the shipped digit
    classifier for 28 px grey images, which it was trained on; otherwise the random embedding.
    """
    if features != "auto":
        return features
    if inception_weights or inception_available():
        return "inception"
    if tuple(image_shape) == (1, 28, 28):
        return "digits"
    return "random"


# --- Loading once per process -----------------------------------------------------------------

_DIGESTS: dict[tuple[str, int, int], str] = {}
_EXTRACTORS: dict[tuple, object] = {}


def file_digest(path: Path) -> str:
    """sha256 of a file, memoised on (path, size, mtime) so large weights are hashed once."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def _own_rng():
    """Building a network draws its (soon overwritten) initial weights from the global RNG:
    keep that away from training's RNG, or the first evaluation in a process would change
    the run (and a resumed run, evaluating first at another step, would differ)."""
    return torch.random.fork_rng(devices=[])


def get_extractor(name: str, *, device="cpu", inception_weights: str = ""):
    """The extractor called ``name`` on ``device``, built once per process and reused."""
    device = torch.device(device)
    if name == "digits":
        key = ("digits", str(device))
        if key not in _EXTRACTORS:
            with _own_rng():
                _EXTRACTORS[key] = DigitFeatures(device=device)
        return _EXTRACTORS[key]
    if name == "inception":
        if inception_weights:
            path = Path(inception_weights).expanduser().resolve()
        else:  # the standard FID weights: cached safetensors copy, fetched and converted on first use
            from gantool_plugins.metrics import inception

            path = inception.ensure_weights().resolve()
        key = ("inception", str(path), str(device))
        if key not in _EXTRACTORS:
            with _own_rng():
                _EXTRACTORS[key] = InceptionFeatures(path, device=device)
        return _EXTRACTORS[key]
    if name == "random":
        key = ("random", RANDOM_SEED, str(device))
        if key not in _EXTRACTORS:
            with _own_rng():  # nn.Conv2d draws its default init from the global RNG before we overwrite it
                _EXTRACTORS[key] = RandomFeatures(device=device)
        return _EXTRACTORS[key]
    raise GantoolError(f"unknown feature extractor {name!r}; use 'digits', 'inception' or 'random'")
