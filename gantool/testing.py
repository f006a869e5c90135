"""Contract checks for plugin authors: one ``check_*`` per component kind, called from tests.

Each check builds the component the way a recipe does (a registered name, bare or
qualified, with the recipe table ``params``; or a factory, validated the same way),
exercises what the engine relies on, and raises ``AssertionError`` naming the component
and what broke. ``check_resume`` trains a tiny recipe twice (straight, and stopped
half-way then resumed) and demands bit-identical checkpoints; ``tiny_recipe`` gives that
recipe as a dict for runs of your own. No pytest needed at import time::

    from gantool.testing import check_generator, check_resume

    def test_contract():
        check_generator("gantool-foo:mygen", {"latent_dim": 8})

    def test_resume(tmp_path):
        check_resume(tmp_path=tmp_path, generator={"type": "gantool-foo:mygen", "latent_dim": 8})
"""

from __future__ import annotations

import copy
import functools
import io
import itertools
import json
import math
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from gantool.checkpoint import load_checkpoint, restore_module, restore_optimizer, save_checkpoint
from gantool.errors import GantoolError
from gantool.interfaces import Callback, Dataset, Discriminator, Generator, StepContext, split_scores

__all__ = [
    "check_augmentation", "check_callback", "check_capturable", "check_dataset", "check_discriminator",
    "check_generator", "check_loss", "check_metric", "check_optimizer", "check_resume", "check_scheduler",
    "tiny_recipe",
]

IMAGE_SHAPES = ((1, 16, 16), (3, 32, 32))
_EVAL_NONDETERMINISTIC = "forward in eval mode differs between two calls under the same torch.manual_seed"
CALLBACK_EVENTS = ("on_run_start", "on_step_end", "on_log", "on_samples", "on_eval", "on_checkpoint", "on_run_end")

_TINY = {
    "run": {"name": "contract", "seed": 0, "device": "cpu"},
    # 128 noise images in batches of 32: 4 batches per epoch, so 6 steps cross an epoch boundary.
    "dataset": {"type": "gantool:fake", "size": 128, "image_size": 16, "channels": 1},
    "generator": {"type": "gantool:dcgan", "latent_dim": 16, "base_channels": 8},
    "discriminator": {"type": "gantool:dcgan", "base_channels": 8},
    "loss": {"type": "gantool:bce"},
    "train": {"batch_size": 32, "epochs": 1000, "max_steps": 6, "log_every": 2, "sample_every": 0,
              "checkpoint_every": 0, "sample_grid": 4, "num_workers": 0,
              "amp": "off"},  # not "auto", which CPUs with bf16 instructions measure: the same on every machine
}


def tiny_recipe(**tables) -> dict:
    """The recipe ``check_resume`` and ``check_callback`` train (CPU, 16 px noise, dcgan, 6 steps,
    fp32: ``amp = "off"``, so the checks do not depend on whether the CPU has bf16).

    ``tables`` merge into it as ``extends`` merges files: keys are replaced one by one,
    except that a component table with another ``type`` replaces the whole table, e.g.
    ``tiny_recipe(generator={"type": "gantool-foo:mygen"}, train={"d_steps_per_g": 2})``.
    """
    from gantool.recipe import merge_tables

    return merge_tables(copy.deepcopy(_TINY), copy.deepcopy(tables))


# ----------------------------------------------------------------------------- the component under test


class _Subject:
    """The component under test: how a recipe builds it, and its name in every message."""

    def __init__(self, kind: str, name_or_factory: str | Callable, params: dict | None):
        from gantool.plugins import get_registry

        self.kind, self.params, registry = kind, dict(params or {}), get_registry()
        if isinstance(name_or_factory, str):
            try:
                self.type = registry.get(kind, name_or_factory).qualified_name
            except GantoolError as e:
                raise AssertionError(f"{kind} {name_or_factory!r}: {e}") from None
            self.label = f"{kind} {self.type}"
        else:  # a private copy of the registry, so the factory can also be named in a recipe
            registry = registry.copy()
            self.type = registry.add(kind, "under_test", name_or_factory, plugin="gantool.testing").qualified_name
            self.label = f"{kind} {getattr(name_or_factory, '__qualname__', repr(name_or_factory))}"
        self.registry = registry

    def at(self, shape, classes: int = 0) -> _Subject:
        """The same subject, its messages naming the image shape (and the class count)."""
        other = copy.copy(self)
        other.label = f"{self.label} (image_shape {tuple(shape)}{f', num_classes {classes}' if classes else ''})"
        return other

    def conditioning(self) -> str:
        """The component's declared ``conditioning``: "none", "optional" or "required"."""
        mode = getattr(self.registry.get(self.kind, self.type).load(), "conditioning", "none")
        self.expect(mode in ("none", "optional", "required"),
                    f"conditioning is {mode!r}; expected \"none\", \"optional\" or \"required\"")
        return mode

    def class_counts(self) -> tuple[int, ...]:
        """0 (unconditional) and/or 3 classes, as the component's ``conditioning`` declares."""
        return {"none": (0,), "optional": (0, 3), "required": (3,)}[self.conditioning()]

    def build(self, **injected):
        try:
            return self.registry.build(self.kind, self.type, self.params, **injected)
        except GantoolError as e:
            raise self.error(f"cannot be built from {self.params}: {e}") from e
        except Exception as e:
            raise self.error(f"construction raised {type(e).__name__}: {e}") from e

    def built_twice(self, **injected):
        """Build under torch.manual_seed(0) twice: initial weights must depend on the seed only."""
        torch.manual_seed(0)
        first = self.build(**injected)
        if isinstance(first, nn.Module):
            torch.manual_seed(0)
            differ = _differing(first.state_dict(), self.build(**injected).state_dict())
            self.expect(not differ, f"construction is not deterministic under torch.manual_seed: {differ} differ; "
                                    "draw initial weights from the global torch RNG only")
        return first

    def call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except AssertionError:
            raise
        except Exception as e:
            raise self.error(f"{what} raised {type(e).__name__}: {e}") from e

    def error(self, message: str) -> AssertionError:
        return AssertionError(f"{self.label}: {message}")

    def expect(self, condition, message: str):
        if not condition:
            raise self.error(message)


def _keeps_global_rng(check):
    """Checks seed the global torch RNG freely; the caller's RNG state is restored afterwards."""

    @functools.wraps(check)
    def wrapper(*args, **kwargs):
        with torch.random.fork_rng(devices=[]):
            return check(*args, **kwargs)

    return wrapper


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().reshape(-1).contiguous().view(torch.uint8)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-identical (NaN included), not merely equal."""
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(_bits(a), _bits(b))


def _differing(a: dict, b: dict) -> list[str]:
    keys = sorted(a.keys() | b.keys())
    return [k for k in keys if k not in a or k not in b or not _same(a[k], b[k])]


def _round_trip(subject: _Subject, module: nn.Module, fresh: nn.Module, name: str) -> nn.Module:
    """``module``'s state through gantool's checkpoint file into ``fresh``; returns ``fresh``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "check.safetensors"
        subject.call("saving its state_dict in a gantool checkpoint", save_checkpoint, path,
                     modules={name: module}, optimizers={}, rng={}, metadata={})
        tensors, _ = load_checkpoint(path)
    subject.call("restoring its state_dict from a gantool checkpoint", restore_module, fresh, tensors, name)
    differ = _differing(module.state_dict(), fresh.state_dict())
    subject.expect(not differ, f"state_dict changes through a checkpoint round trip: {differ}")
    return fresh


def _expect_module(s: _Subject, obj, interface: str):
    s.expect(isinstance(obj, nn.Module),
             f"built a {type(obj).__name__}, expected a torch.nn.Module (gantool.{interface})")


def _check_output(subject: _Subject, out, shape: tuple, what: str):
    subject.expect(torch.is_tensor(out), f"{what} returned {type(out).__name__}, expected a tensor")
    subject.expect(tuple(out.shape) == shape, f"{what} returned shape {tuple(out.shape)}, expected {shape}")
    subject.expect(out.is_floating_point(), f"{what} returned {out.dtype}, expected a float tensor")
    subject.expect(bool(torch.isfinite(out).all()), f"{what} returned non-finite values")


def _check_gradients(subject: _Subject, module: nn.Module, what: str):
    missing = [n for n, p in module.named_parameters() if p.requires_grad and p.grad is None]
    subject.expect(not missing, f"parameters get no gradient from {what}: {missing}")
    bad = [n for n, p in module.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    subject.expect(not bad, f"non-finite gradients from {what}: {bad}")


def _weights(out: torch.Tensor) -> torch.Tensor:
    """Random loss weights: a plain sum can hide a parameter whose gradients cancel."""
    return torch.randn(out.shape, generator=torch.Generator().manual_seed(7)).to(out)


# ----------------------------------------------------------------------------- networks


@_keeps_global_rng
def check_generator(name_or_factory: str | Callable, params: dict | None = None, *,
                    image_shapes: Sequence[tuple[int, int, int]] = IMAGE_SHAPES):
    """A generator for every shape in ``image_shapes`` (injected as a dataset would).

    Checks: construction deterministic under ``torch.manual_seed``; ``latent_dim`` and
    ``image_shape`` set; ``sample_latent(n, device=, generator=)`` gives n rows and
    depends only on the seeded ``torch.Generator``; the output is (N, C, H, W) float in
    [-1, 1]; every parameter gets a gradient; eval mode is deterministic under a seed
    and takes a batch of 1; the state survives gantool's checkpoint round trip exactly.
    A conditional generator (``conditioning``) is also built with ``num_classes = 3``
    and called ``G(z, labels)``: it must set ``num_classes`` and its output must depend on the labels.
    """
    for s, shape, injected, G, labels in _network_builds("generator", name_or_factory, params, image_shapes):
        latent_dim = getattr(G, "latent_dim", None)
        s.expect(isinstance(latent_dim, int) and latent_dim >= 1,
                 f"latent_dim is {latent_dim!r}, expected an int >= 1")
        s.expect(tuple(getattr(G, "image_shape", ())) == shape,
                 f"image_shape is {getattr(G, 'image_shape', None)!r}, expected the injected {shape}")
        sample = functools.partial(s.call, "sample_latent", G.sample_latent, 4, device=torch.device("cpu"))
        z = sample(generator=torch.Generator().manual_seed(1))
        s.expect(torch.is_tensor(z) and z.is_floating_point() and len(z) == 4,
                 f"sample_latent(4) returned {getattr(z, 'shape', z)!r}, expected a float tensor with 4 rows")
        s.expect(_same(z, sample(generator=torch.Generator().manual_seed(1))),
                 "sample_latent differs for the same seeded torch.Generator; "
                 "draw from `generator`, not the global RNG")

        G.train()
        out = s.call("forward in train mode", G, z, *_labelled(labels))
        _check_output(s, out, (4, *shape), "forward")
        s.expect(bool((out.abs() <= 1).all()),
                 f"output ranges over [{out.min():.3g}, {out.max():.3g}], expected [-1, 1] (tanh)")
        s.call("backward", (out * _weights(out)).sum().backward)
        _check_gradients(s, G, "a loss on the output")

        _check_eval_mode(s, G, z, (1, *shape), "generator", labels=labels, **injected)


@_keeps_global_rng
def check_discriminator(name_or_factory: str | Callable, params: dict | None = None, *,
                        image_shapes: Sequence[tuple[int, int, int]] = IMAGE_SHAPES, penalties: bool = True):
    """A discriminator for every shape in ``image_shapes``.

    Checks: construction deterministic; scores of shape (N,), float, finite; gradients
    reach the input and every parameter; with ``penalties`` the input gradient can be
    differentiated again (``create_graph``), as ``r1_gamma`` and ``wgan_gp`` need; eval
    mode deterministic under a seed, batch of 1; exact checkpoint round trip. A
    conditional discriminator is also built with ``num_classes = 3`` and called
    ``D(x, labels)``; its scores must depend on the labels unless it returns extras (an
    auxiliary classifier), whose values must have one row per image.
    """
    for s, shape, injected, D, labels in _network_builds("discriminator", name_or_factory, params, image_shapes):
        images = torch.rand(4, *shape, generator=torch.Generator().manual_seed(2)) * 2 - 1
        D.train()
        x = images.clone().requires_grad_(True)
        output = s.call("forward in train mode", D, x, *_labelled(labels))
        scores, extras = s.call("splitting the output into (scores, extras)", split_scores, output)
        _check_output(s, scores, (4,), "forward on 4 images")
        bad = [k for k, v in extras.items() if not torch.is_tensor(v) or len(v) != 4]
        s.expect(not bad, f"extras {bad} are not tensors with one row per image")
        total = (scores * _weights(scores)).sum() + sum(v.float().mean() for v in extras.values())
        s.call("backward", total.backward)
        s.expect(x.grad is not None and bool(torch.isfinite(x.grad).all()),
                 "no finite gradient w.r.t. the input images: G learns through it")
        _check_gradients(s, D, "a loss on the scores" + (" and extras" if extras else ""))
        if penalties:
            x = images.clone().requires_grad_(True)
            (grad,) = s.call("input gradient with create_graph=True", torch.autograd.grad,
                             split_scores(D(x, *_labelled(labels)))[0].sum(), x, create_graph=True)
            s.call("backward through the input gradient (needed by r1_gamma and wgan_gp; "
                   "pass penalties=False if it is not meant to support them)", grad.pow(2).sum().backward)

        _check_eval_mode(s, D, images, (1,), "discriminator", labels=labels, uses_labels=not extras, **injected)


def _network_builds(kind: str, name_or_factory, params, image_shapes):
    """(subject, shape, injected, module, labels) for every image shape, unconditional and/or with
    3 classes as the component's ``conditioning`` declares; labels cover every class (None unconditional)."""
    base = _Subject(kind, name_or_factory, params)
    for shape, classes in itertools.product(map(tuple, image_shapes), base.class_counts()):
        s = base.at(shape, classes)
        injected = {"image_shape": shape, **({"num_classes": classes} if classes else {})}
        module = s.built_twice(**injected)
        _expect_module(s, module, kind.capitalize())
        yield s, shape, injected, module, _check_classes(s, module, classes)


def _labelled(labels) -> tuple:
    return () if labels is None else (labels,)


def _check_classes(s: _Subject, module, classes: int):
    """Labels covering every class for a conditional build (None otherwise); ``num_classes`` must be set."""
    if not classes:
        return None
    got = getattr(module, "num_classes", None)
    s.expect(got == classes, f"num_classes is {got!r} after building with num_classes = {classes}")
    return torch.arange(4) % classes


def _check_eval_mode(s: _Subject, module, inputs, one_shape: tuple, name: str, *, labels=None,
                     uses_labels: bool = True, **injected):
    """Eval mode: deterministic under a seed, a batch of 1 works, a checkpoint round trip gives the same
    outputs; with labels, other labels give other outputs."""
    def forward(m, x, y=labels):
        return split_scores(m(x, *_labelled(y)))[0]

    module.eval()
    with torch.no_grad():
        outputs = []
        for _ in range(2):
            torch.manual_seed(5)
            outputs.append(s.call("forward in eval mode", forward, module, inputs))
        s.expect(_same(*outputs), _EVAL_NONDETERMINISTIC)
        one = s.call("forward of a batch of 1 in eval mode", forward, module, inputs[:1],
                     None if labels is None else labels[:1])
        s.expect(tuple(one.shape) == one_shape, f"a batch of 1 gives shape {tuple(one.shape)}, expected {one_shape}")
        if labels is not None and uses_labels:
            torch.manual_seed(5)
            other = forward(module, inputs, (labels + 1) % injected["num_classes"])
            s.expect(not torch.allclose(other, outputs[0]), "the output does not depend on the labels")
        torch.manual_seed(1)
        restored = _round_trip(s, module, s.build(**injected), name).eval()
        torch.manual_seed(5)
        s.expect(_same(forward(restored, inputs), outputs[0]), f"a {name} restored from a checkpoint gives different outputs")


# ----------------------------------------------------------------------------- tiny stand-ins


class _TinyGenerator(Generator):
    def __init__(self, image_shape=(1, 8, 8), latent_dim: int = 8, num_classes: int = 0):
        super().__init__()
        self.image_shape, self.latent_dim, self.num_classes = tuple(image_shape), latent_dim, num_classes
        self.net = nn.Linear(latent_dim, math.prod(self.image_shape))
        self.embed = nn.Embedding(num_classes, latent_dim) if num_classes else None

    def forward(self, z, labels=None):
        if labels is not None:
            z = z + self.embed(labels)
        return torch.tanh(self.net(z)).view(len(z), *self.image_shape)


class _TinyDiscriminator(Discriminator):
    def __init__(self, image_shape=(1, 8, 8), num_classes: int = 0):
        super().__init__()
        self.image_shape, self.num_classes = tuple(image_shape), num_classes
        c, h, w = self.image_shape
        self.net = nn.Sequential(nn.Conv2d(c, 4, 3, padding=1), nn.LeakyReLU(0.2), nn.Flatten(),
                                 nn.Linear(4 * h * w, 1))
        self.class_bias = nn.Embedding(num_classes, 1) if num_classes else None

    def forward(self, x, labels=None):
        scores = self.net(x).squeeze(1)
        return scores if labels is None else scores + self.class_bias(labels).squeeze(1)


class _TinyDataset(Dataset):
    def __init__(self, n: int = 64, image_shape=(1, 16, 16), num_classes: int = 0):
        self.image_shape = tuple(image_shape)
        self.images = torch.randint(0, 256, (n, *self.image_shape), dtype=torch.uint8,
                                    generator=torch.Generator().manual_seed(0))
        self.num_classes, self.class_names = num_classes, [str(c) for c in range(num_classes)] or None

    def as_tensor(self):
        return self.images

    def labels(self):
        return torch.arange(len(self.images)) % self.num_classes if self.num_classes else None

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return self.images[index].float() / 127.5 - 1


# ----------------------------------------------------------------------------- loss, augmentation


def _check_scalar(s: _Subject, value, what: str):
    s.expect(torch.is_tensor(value) and value.dim() == 0,
             f"{what} returned {getattr(value, 'shape', type(value).__name__)}, "
             "expected a 0-dim tensor (e.g. .mean())")
    s.expect(value.is_floating_point() and bool(torch.isfinite(value)),
             f"{what} returned {value!r}, expected a finite float")
    s.expect(value.requires_grad, f"{what} returned a tensor without gradient; build it from the scores, not .item()")


def _check_logged(s: _Subject, ctx: StepContext):
    bad = {k: tuple(getattr(v, "shape", ())) for k, v in ctx.stats.items()
           if not (torch.is_tensor(v) and v.dim() == 0)}
    s.expect(not bad, f"ctx.log values must be scalars (0-dim); got shapes {bad}")


@_keeps_global_rng
def check_loss(name_or_factory: str | Callable, params: dict | None = None):
    """A loss on random scores (also confident ones, |score| ~ 30) with a tiny D and G.

    Checks: both losses are finite 0-dim tensors with gradient w.r.t. the scores (D's loss
    w.r.t. real and fake, G's w.r.t. fake); ``generator_loss`` gets ``real_scores`` exactly
    when ``generator_needs_real_scores`` says so (else ``None``); ``penalty(ctx)`` is
    ``None`` or a finite 0-dim tensor with gradient reaching D; ``ctx.log`` values are
    0-dim; a loss that is a module keeps its state through a checkpoint. A loss with
    ``conditioning = "required"`` gets labels of 3 classes and class logits as
    ``"class_logits"`` extras (what an auxiliary-classifier discriminator returns).
    """
    s = _Subject("loss", name_or_factory, params)
    loss = s.built_twice()
    torch.manual_seed(0)
    conditional = s.conditioning() == "required"
    G, D = _TinyGenerator(), _TinyDiscriminator(num_classes=3 if conditional else 0)
    real = torch.rand(8, *G.image_shape) * 2 - 1
    z = G.sample_latent(8)
    fake = G(z).detach()
    needs_real = bool(getattr(loss, "generator_needs_real_scores", False))

    def context(fake_images) -> StepContext:
        ctx = StepContext(step=0, batch=0, generator=G, discriminator=D, real=real, fake=fake_images)
        if conditional:
            ctx.real_labels, ctx.fake_labels = torch.arange(8) % 3, torch.arange(8).flip(0) % 3
            ctx.real_extras = {"class_logits": torch.randn(8, 3, requires_grad=True)}
            ctx.fake_extras = {"class_logits": torch.randn(8, 3, requires_grad=True)}
        return ctx

    for centre in (0.0, 30.0, -30.0):  # undecided, confidently right, confidently wrong
        where = f" (scores around ±{abs(centre):g})" if centre else ""
        real_scores = (torch.randn(8) + centre).requires_grad_(True)
        fake_scores = (torch.randn(8) - centre).requires_grad_(True)
        ctx = context(fake)
        loss_d = s.call("discriminator_loss", loss.discriminator_loss, real_scores, fake_scores, ctx)
        _check_scalar(s, loss_d, f"discriminator_loss{where}")
        grad_real, grad_fake = torch.autograd.grad(loss_d, [real_scores, fake_scores], allow_unused=True)
        s.expect(grad_real is not None, "discriminator_loss has no gradient w.r.t. real_scores")
        s.expect(grad_fake is not None, "discriminator_loss has no gradient w.r.t. fake_scores")

        ctx.fake = G(z)  # as in the generator update: with G's graph
        g_real = real_scores.detach() if needs_real else None
        fake_scores = fake_scores.detach().requires_grad_(True)
        hint = "" if needs_real else "; set generator_needs_real_scores = True to get them"
        loss_g = s.call(f"generator_loss(real_scores={'scores' if needs_real else 'None'}, ...){hint}",
                        loss.generator_loss, g_real, fake_scores, ctx)
        _check_scalar(s, loss_g, f"generator_loss{where}")
        (grad_fake,) = torch.autograd.grad(loss_g, [fake_scores], allow_unused=True)
        s.expect(grad_fake is not None, "generator_loss has no gradient w.r.t. fake_scores: G would not learn")
        _check_logged(s, ctx)

    ctx = context(fake)
    penalty = s.call("penalty", loss.penalty, ctx)
    if penalty is not None:
        _check_scalar(s, penalty, "penalty")
        grads = torch.autograd.grad(penalty, list(D.parameters()), allow_unused=True)
        s.expect(any(g is not None for g in grads), "penalty has no gradient w.r.t. the discriminator's parameters")
    if isinstance(loss, nn.Module) and loss.state_dict():
        torch.manual_seed(1)
        _round_trip(s, loss, s.build(), "loss")


@_keeps_global_rng
def check_augmentation(name_or_factory: str | Callable, params: dict | None = None, *,
                       image_shapes: Sequence[tuple[int, int, int]] = IMAGE_SHAPES):
    """An augmentation on images in [-1, 1] of every shape in ``image_shapes``.

    Checks: a ``torch.nn.Module``; shape and dtype kept, also for channels_last input;
    differentiable w.r.t. the input; randomness from the global
    torch RNG only (the same ``torch.manual_seed`` gives the same output);
    ``update(real_scores, ctx)`` works and logs scalars; its state survives a checkpoint round trip and
    gives the same output after it.
    """
    base = _Subject("augmentation", name_or_factory, params)
    for shape in image_shapes:
        shape = tuple(shape)
        s = base.at(shape)
        aug = s.built_twice()
        _expect_module(s, aug, "Augmentation")
        x = torch.rand(8, *shape, generator=torch.Generator().manual_seed(2)) * 2 - 1

        def run(module, images, what="forward"):
            torch.manual_seed(3)
            out = s.call(what, module, images)
            s.expect(torch.is_tensor(out) and out.shape == images.shape and out.dtype == images.dtype,
                     f"{what} turned {images.dtype} {tuple(images.shape)} into {getattr(out, 'dtype', type(out))} "
                     f"{tuple(getattr(out, 'shape', ()))}; it must keep both")
            return out

        out = run(aug, x)
        s.expect(_same(out, run(aug, x)), "two calls under the same torch.manual_seed differ; draw randomness from "
                                          "the global torch RNG (torch.rand(..., device=images.device)) only")
        # The engine feeds channels_last batches on CPU; values may differ (torch.randn_like follows the layout).
        run(aug, x.contiguous(memory_format=torch.channels_last), "forward on channels_last input")
        xg = x.clone().requires_grad_(True)
        s.call("backward", (run(aug, xg) * _weights(x)).sum().backward)
        s.expect(xg.grad is not None and bool(torch.isfinite(xg.grad).all()),
                 "no finite gradient w.r.t. the input: G learns through the augmentation")

        torch.manual_seed(0)
        G, D = _TinyGenerator(shape), _TinyDiscriminator(shape)
        for step in range(8):  # D confident on reals: an adaptive augmentation should react
            ctx = StepContext(step=step, batch=step, generator=G, discriminator=D, real=x, fake=x.flip(0))
            s.call("update(real_scores, ctx)", aug.update, torch.full((8,), 3.0) + torch.randn(8), ctx)
            _check_logged(s, ctx)
        torch.manual_seed(1)
        restored = _round_trip(s, aug, s.build(), "augment")
        s.expect(_same(run(restored, x), run(aug, x)), "an augmentation restored from a checkpoint gives other "
                                                      "images; keep state that changes in update() in buffers")


# ----------------------------------------------------------------------------- optimizer, scheduler


def _tiny_model() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 1))


def _train_steps(model: nn.Module, optimizer, steps: int, seed: int):
    data = torch.randn(steps, 8, 4, generator=torch.Generator().manual_seed(seed))
    for x in data:
        optimizer.zero_grad(set_to_none=True)
        model(x).pow(2).mean().backward()
        optimizer.step()


@_keeps_global_rng
def check_optimizer(name_or_factory: str | Callable, params: dict | None = None):
    """An optimizer factory (``f(params, **table)``) on a tiny model.

    Checks: returns a ``torch.optim.Optimizer``; a step changes every parameter with a
    gradient; after a round trip through gantool's checkpoint (tensors in safetensors,
    the rest as JSON) the next steps are bit-identical.
    """
    s = _Subject("optimizer", name_or_factory, params)

    def fresh(seed):
        torch.manual_seed(seed)
        model = _tiny_model()
        return model, s.build(params=list(model.parameters()))

    model, opt = fresh(0)
    s.expect(isinstance(opt, torch.optim.Optimizer), f"built a {type(opt).__name__}, expected a torch.optim.Optimizer")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    s.call("step", _train_steps, model, opt, 1, seed=0)
    unchanged = [k for k, v in model.state_dict().items() if torch.equal(v, before[k])]
    s.expect(not unchanged, f"a step leaves parameters unchanged: {unchanged}")
    s.call("step", _train_steps, model, opt, 2, seed=1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "check.safetensors"
        s.call("saving its state_dict in a gantool checkpoint (tensors, or JSON-serialisable values)",
               save_checkpoint, path, modules={"model": model}, optimizers={"x": opt}, rng={}, metadata={})
        tensors, meta = load_checkpoint(path)
    model2, opt2 = fresh(1)
    restore_module(model2, tensors, "model")
    s.call("restoring its state_dict from a gantool checkpoint", restore_optimizer, opt2, tensors, meta, "x")
    _train_steps(model, opt, 3, seed=2)
    s.call("step after a restore", _train_steps, model2, opt2, 3, seed=2)
    differ = _differing(model.state_dict(), model2.state_dict())
    s.expect(not differ, f"steps after a checkpoint round trip differ from uninterrupted ones in {differ}")


@_keeps_global_rng
def check_scheduler(name_or_factory: str | Callable, params: dict | None = None, *, total_steps: int = 20):
    """A scheduler factory (``f(optimizer, total_steps, **table)``), for runs of 1 and ``total_steps`` steps.

    Checks: ``step()`` and a JSON-serialisable ``state_dict()`` (the engine stores it as
    JSON); the learning rate stays finite and >= 0; restored half-way the way the engine
    restores it (optimizer from the checkpoint, then the scheduler's JSON state), the
    remaining learning rates are identical.
    """
    s = _Subject("scheduler", name_or_factory, params)

    def fresh(total):
        optimizer = torch.optim.SGD(_tiny_model().parameters(), lr=0.1)
        return optimizer, s.build(optimizer=optimizer, total_steps=total)

    def advance(optimizer, scheduler, steps) -> list[list[float]]:
        lrs = []
        for _ in range(steps):
            optimizer.step()
            s.call("step", scheduler.step)
            lrs.append([float(group["lr"]) for group in optimizer.param_groups])
        return lrs

    for total in sorted({1, total_steps}):
        optimizer, scheduler = fresh(total)
        for method in ("step", "state_dict", "load_state_dict"):
            s.expect(callable(getattr(scheduler, method, None)),
                     f"built a {type(scheduler).__name__} without {method}()")
        lrs = advance(optimizer, scheduler, total)
        bad = [(i + 1, lr) for i, lr in enumerate(lrs) if not all(math.isfinite(v) and v >= 0 for v in lr)]
        s.expect(not bad, f"learning rate not finite and >= 0 at (step, lr) {bad[:3]} of {total}")

        half = total // 2
        optimizer, scheduler = fresh(total)
        advance(optimizer, scheduler, half)
        state = s.call("state_dict", scheduler.state_dict)
        try:
            text = json.dumps(state)
        except (TypeError, ValueError) as e:
            raise s.error(f"state_dict() is not JSON-serialisable ({e}); the engine stores it as JSON") from None
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "check.safetensors"
            save_checkpoint(path, modules={}, optimizers={"x": optimizer}, rng={}, metadata={})
            tensors, meta = load_checkpoint(path)
        optimizer, scheduler = fresh(total)
        restore_optimizer(optimizer, tensors, meta, "x")
        s.call("load_state_dict", scheduler.load_state_dict, json.loads(text))
        resumed = advance(optimizer, scheduler, total - half)
        s.expect(resumed == lrs[half:], f"run of {total} steps, resumed at step {half}: learning rates {resumed} "
                                        f"instead of {lrs[half:]}")


# ----------------------------------------------------------------------------- dataset, metric


@_keeps_global_rng
def check_dataset(name_or_factory: str | Callable, params: dict | None = None):
    """A dataset: ``image_shape`` (C, H, W), ``len`` > 0, items float32 (C, H, W) in [-1, 1];
    ``as_tensor()`` is None or uint8 (N, C, H, W) agreeing with the items; built twice,
    the same images (resume and data order rely on it). A labelled dataset
    (``num_classes`` > 0) has ``num_classes`` class names and ``labels()``: int64 (N,) in
    [0, num_classes), the same when built twice."""
    s = _Subject("dataset", name_or_factory, params)
    ds = s.build()
    shape = tuple(getattr(ds, "image_shape", ()))
    s.expect(len(shape) == 3 and all(isinstance(d, int) and d > 0 for d in shape),
             f"image_shape is {getattr(ds, 'image_shape', None)!r}, expected (C, H, W) positive ints")
    s.expect(callable(getattr(ds, "as_tensor", None)), "has no as_tensor(); subclass gantool.Dataset")
    s.expect(isinstance(getattr(ds, "hflip", False), bool),
             f"hflip is {getattr(ds, 'hflip', None)!r}, expected a bool")
    images = s.call("as_tensor", ds.as_tensor)
    n = s.call("len", len, ds)
    s.expect(n > 0, "is empty")
    if images is not None:
        s.expect(torch.is_tensor(images) and images.dtype == torch.uint8 and tuple(images.shape) == (n, *shape),
                 f"as_tensor() gave {getattr(images, 'dtype', type(images).__name__)} "
                 f"{tuple(getattr(images, 'shape', ()))}, expected uint8 {(n, *shape)}")
    again = s.build()
    for i in sorted({0, n // 2, n - 1}):
        item = s.call(f"dataset[{i}]", ds.__getitem__, i)
        s.expect(torch.is_tensor(item) and item.dtype == torch.float32 and tuple(item.shape) == shape,
                 f"item {i} is {getattr(item, 'dtype', type(item).__name__)} {tuple(getattr(item, 'shape', ()))}, "
                 f"expected float32 {shape}")
        s.expect(bool(torch.isfinite(item).all()) and -1 <= item.min() and item.max() <= 1,
                 f"item {i} ranges over [{item.min():.3g}, {item.max():.3g}], expected [-1, 1]")
        if images is not None:
            expected = images[i].float() / 127.5 - 1
            s.expect(torch.allclose(item, expected, atol=1e-5), f"item {i} is not as_tensor()[{i}] / 127.5 - 1")
        s.expect(_same(item, again[i]), f"item {i} differs between two datasets built from the same parameters")
    _check_labels(s, ds, again, n)


def _check_labels(s: _Subject, ds, again, n: int):
    k = getattr(ds, "num_classes", 0)
    s.expect(isinstance(k, int) and k >= 0, f"num_classes is {k!r}, expected an int >= 0 (0: no labels)")
    labels = s.call("labels()", ds.labels) if hasattr(ds, "labels") else None
    if not k:
        s.expect(labels is None, "labels() returned labels but num_classes is 0; set num_classes")
        return
    names = getattr(ds, "class_names", None)
    s.expect(names is not None and len(names) == k and all(isinstance(x, str) for x in names),
             f"class_names is {names!r}, expected {k} strings (one per class)")
    s.expect(torch.is_tensor(labels) and labels.dtype == torch.int64 and tuple(labels.shape) == (n,),
             f"labels() gave {getattr(labels, 'dtype', type(labels).__name__)} {tuple(getattr(labels, 'shape', ()))}, "
             f"expected int64 ({n},)")
    s.expect(int(labels.min()) >= 0 and int(labels.max()) < k, f"labels range over [{int(labels.min())}, "
             f"{int(labels.max())}], expected [0, {k})")
    s.expect(_same(labels, again.labels()), "labels() differ between two datasets built from the same parameters")


@_keeps_global_rng
def check_metric(name_or_factory: str | Callable, params: dict | None = None, *, n: int = 16,
                 generator: nn.Module | None = None, dataset=None):
    """A metric, computed as the engine does (eval mode, no grad, on the CPU) on a tiny
    generator and 64 random 16 px images, or on the ``generator``/``dataset`` you pass.
    A metric with ``conditioning = "required"`` gets a conditional generator and images
    labelled with 10 classes, and at least 2 samples per class.

    Checks: a dict of finite floats; ``goals`` maps result keys to "min"/"max"; two calls
    give the same values; the global torch RNG is left untouched (training draws from
    it: a run with evaluations must equal one without); ``protocol`` is JSON-serialisable.
    """
    s = _Subject("metric", name_or_factory, params)
    metric = s.build()
    classes = 10 if s.conditioning() == "required" else 0  # class-conditional metrics: the digit classes
    n = max(n, 2 * classes)
    dataset = dataset if dataset is not None else _TinyDataset(num_classes=classes)
    if generator is None:
        torch.manual_seed(0)
        generator = _TinyGenerator(dataset.image_shape, num_classes=classes)
    generator.eval()
    goals = getattr(metric, "goals", {})
    s.expect(isinstance(goals, dict) and all(v in ("min", "max") for v in goals.values()),
             f"goals is {goals!r}; expected a dict of result key -> 'min' or 'max'")
    results = []
    for _ in range(2):
        rng = torch.get_rng_state()
        with torch.no_grad():
            values = s.call("compute", metric.compute, generator, dataset, n=n, device=torch.device("cpu"))
        s.expect(torch.equal(rng, torch.get_rng_state()),
                 "compute moves the global torch RNG; draw from a seeded torch.Generator of your own")
        s.expect(isinstance(values, dict) and values, f"compute returned {values!r}, expected a non-empty dict")
        try:
            values = {str(k): float(v) for k, v in values.items()}
        except (TypeError, ValueError) as e:
            raise s.error(f"compute returned values that are not numbers: {values!r} ({e})") from None
        bad = {k: v for k, v in values.items() if not math.isfinite(v)}
        s.expect(not bad, f"compute returned non-finite values {bad}")
        results.append(values)
    s.expect(results[0] == results[1], f"two calls give different values: {results[0]} and {results[1]}")
    unknown = sorted(set(goals) - set(results[0]))
    s.expect(not unknown, f"goals names keys compute() does not return: {unknown}")
    try:
        json.dumps(getattr(metric, "protocol", None))
    except (TypeError, ValueError) as e:
        raise s.error(f"protocol is not JSON-serialisable ({e}); it is written to summary.json") from None


# ----------------------------------------------------------------------------- training runs


class _StopAt(Callback):
    """Ends a run after ``step`` steps as a user would stop it, so it can be resumed."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, run):
        if run.step == self.step:
            run.request_stop("gantool.testing: stop half-way")


def _fit(data: dict, registry, out: Path, what: str, *, resume: bool = False, stop_at: int | None = None):
    from rich.console import Console

    from gantool.engine import Trainer
    from gantool.recipe import recipe_from_dict

    try:
        recipe = recipe_from_dict(copy.deepcopy(data), "tiny_recipe")
        trainer = Trainer(recipe, registry, out, resume=resume, console=Console(file=io.StringIO()))
        if stop_at is not None:
            trainer.callbacks.append(_StopAt(stop_at))
        summary = trainer.fit()
    except Exception as e:
        raise AssertionError(f"tiny training run ({what}) failed: {type(e).__name__}: {e}") from e
    if summary["status"] not in ("finished", "stopped"):
        raise AssertionError(f"tiny training run ({what}) ended {summary['status']!r}")
    return trainer, summary


@_keeps_global_rng
def check_callback(name_or_factory: str | Callable, params: dict | None = None, *, tmp_path: Path) -> Path:
    """A callback: cheap to build (``gantool check`` builds it) with every event method; then
    in a tiny run (``tiny_recipe``, with evaluations) stopped after 2 steps and resumed to
    the end; both parts must end "finished" or "stopped". Returns the run directory, so a
    test can look at what the callback wrote."""
    s = _Subject("callback", name_or_factory, params)
    callback = s.build()
    missing = [e for e in CALLBACK_EVENTS if not callable(getattr(callback, e, None))]
    s.expect(not missing, f"has no {', '.join(missing)}; subclass gantool.Callback")
    data = tiny_recipe(callbacks={"under_test": {"type": s.type, **s.params}},
                       eval={"metrics": ["gantool:checkerboard"], "every": 2, "n_samples": 16},
                       train={"sample_every": 2, "checkpoint_every": 2})
    out = Path(tmp_path) / "callback_run"
    try:
        _fit(data, s.registry, out, "stopped after 2 steps", stop_at=2)
        _fit(data, s.registry, out, "resumed", resume=True)
    except AssertionError as e:
        raise s.error(str(e)) from e
    return out


@_keeps_global_rng
def check_resume(*, tmp_path: Path, **tables):
    """A tiny run (``tiny_recipe(**tables)``) straight, and stopped half-way then resumed:
    the final checkpoints must be bit-identical, tensor by tensor, with the same optimizer
    and scheduler settings. Components are named by their registered names (install your
    plugin, e.g. ``pip install -e .``)."""
    from gantool.plugins import get_registry

    data, registry, tmp_path = tiny_recipe(**tables), get_registry(), Path(tmp_path)
    trainer, _ = _fit(data, registry, tmp_path / "straight", "straight")
    half = trainer.total_steps // 2
    if half < 1:
        raise AssertionError(f"check_resume needs at least 2 steps; the recipe has {trainer.total_steps}")
    _fit(data, registry, tmp_path / "resumed", f"stopped after {half} steps", stop_at=half)
    _fit(data, registry, tmp_path / "resumed", "resumed", resume=True)
    a, meta_a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.safetensors")
    b, meta_b = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.safetensors")
    differ = _differing(a, b)
    components = ", ".join(f"{k} {v['qualified_name']}" for k, v in meta_a["components"].items())
    if differ:
        raise AssertionError(
            f"a run resumed at step {half} of {trainer.total_steps} ends with other tensors than a straight run: "
            f"{differ}; components: {components}. Draw randomness from the global torch RNG (or a generator you "
            "checkpoint) and keep state that must survive a resume in buffers or state_dict()")
    for key in ("optimizers", "schedulers"):
        if meta_a.get(key) != meta_b.get(key):
            raise AssertionError(f"a resumed run ends with other {key} state than a straight run: "
                                 f"{meta_b.get(key)} instead of {meta_a.get(key)}; components: {components}")


def check_capturable(*, tmp_path: Path, **tables) -> list[str]:
    """A tiny run (``tiny_recipe(**tables)``) eager, and with its step captured once and
    replayed as ``[train] cuda_graphs`` does on a GPU, must end bit-identical.

    The replay runs on the CPU (``graphs.replay_on_any_device``): the step's Python runs
    at the capture (step 3 of 6), and the replays reuse its step numbers, as a CUDA graph
    would. A component that decides on the host from ``ctx.step`` or ``ctx.batch`` then
    trains other weights, and the check fails. Host reads such as ``.item()``, which only
    a real capture refuses, are not caught here. Returns what keeps the step eager: empty
    when it is captured; otherwise, e.g. a component that declares ``capturable = False``,
    nothing is compared.
    """
    from gantool import graphs
    from gantool.plugins import get_registry

    data, registry, tmp_path = tiny_recipe(**tables), get_registry(), Path(tmp_path)
    eager = copy.deepcopy(data)
    eager["train"]["cuda_graphs"] = False
    trainer, _ = _fit(eager, registry, tmp_path / "eager", "eager")
    reasons = graphs.blockers(trainer.plan)
    if reasons:
        return reasons
    with graphs.replay_on_any_device():
        replayed, _ = _fit(data, registry, tmp_path / "replayed", "captured and replayed")
    if replayed.update.graph is None or replayed.update.graph.inputs is None:
        raise AssertionError("the step was not captured: the tiny run needs more than "
                             f"{graphs.WARMUP_STEPS} steps, and [train] cuda_graphs must not be false")
    a, meta = load_checkpoint(tmp_path / "eager" / "checkpoints" / "last.safetensors")
    b, _ = load_checkpoint(tmp_path / "replayed" / "checkpoints" / "last.safetensors")
    differ = _differing(a, b)
    if differ:
        components = ", ".join(f"{k} {v['qualified_name']}" for k, v in meta["components"].items())
        raise AssertionError(
            f"replaying a captured step trains other tensors than eager steps: {differ}; components: "
            f"{components}. A CUDA graph runs the step's Python once: compute what changes per step on the "
            "device (a buffer, torch.where), or declare the component capturable = False")
    return []
