"""`gantool export`: a checkpoint's generator as an ONNX or TorchScript file that runs without gantool.

The generator is rebuilt from the checkpoint alone (as `gantool sample` does), exported on the
CPU in eval mode with a dynamic batch dimension, then loaded back and run (onnxruntime, or
``torch.jit.load``) on seeded latents at two batch sizes other than the one it was exported
with. Its output must match PyTorch's to ``TOLERANCE``; only then is the file moved into place,
beside a JSON sidecar that says what the model takes and returns. A failed export or check
leaves no file behind and keeps a previous export.

ONNX goes through ``torch.onnx.export(dynamo=True)``, the default and recommended exporter of
torch >= 2.9 (it needs onnxscript); ``dynamic_shapes`` marks the batch dimension of every input.
Before torch 2.7 the TorchScript-based exporter is used instead: torch 2.4's export has no
``dynamic_shapes``, and the dynamo exporter of 2.5 and 2.6 fails on BatchNorm in eval mode.
TorchScript goes through ``torch.jit.trace``, which PyTorch has deprecated: tracing records
``z.shape[0]`` as a size op, so the batch stays dynamic, and the check proves it.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import traceback
import warnings
from pathlib import Path

import torch

import gantool
from gantool.errors import GantoolError, RunFailed

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
TOLERANCE = 1e-4  # max |exported - PyTorch| on images in [-1, 1], fp32 on the CPU
EXAMPLE_BATCH = 2  # the batch traced; the check runs other sizes to prove the dimension is dynamic
CHECK_BATCHES = (1, 8)
SEED = 0
MAX_ONNX_BYTES = 2**31 - 2**26  # one protobuf holds at most 2 GiB, and the graph needs some of it
INPUT_NAMES = ("z", "labels")
OUTPUT_NAME = "images"
# torch 2.5 and 2.6's dynamo exporter stops at eval-mode BatchNorm ("'tuple' object has no attribute 'dtype'")
DYNAMO_ONNX = torch.__version__ >= "2.7"
LEGACY_OPSET = 17  # torch < 2.7 only: an opset its TorchScript-based exporter writes


def require_extra(fmt: str) -> None:
    """A one-line error (exit 2) when the optional ``export`` extra that ``fmt`` needs is missing."""
    if fmt != "onnx":
        return
    for module in ("onnx", "onnxruntime", "onnxscript"):
        try:
            __import__(module)
        except ImportError:
            raise GantoolError("gantool export --format onnx needs onnx, onnxruntime and onnxscript "
                               f"({module} is not installed); pip install 'gantool[export]'") from None


def default_output(path: Path, run_dir: Path | None, fmt: str, *, best: bool = False) -> Path:
    """RUN/export/generator.onnx (generator_best.onnx with --best), else <checkpoint>.onnx beside it."""
    suffix = FORMATS[fmt]
    if run_dir is not None:
        return run_dir / "export" / f"generator{'_best' if best else ''}{suffix}"
    return path.with_suffix(suffix)


def sidecar_path(out: Path) -> Path:
    """FILE.json (generator.onnx.json): an ONNX and a TorchScript export can sit side by side."""
    return out.with_name(f"{out.name}.json")


def example_inputs(generator, n: int, num_classes: int, seed: int = SEED) -> tuple[torch.Tensor, ...]:
    """Seeded latents (and int64 labels in 0..num_classes-1 for a conditional generator), drawn on the CPU."""
    from gantool.sampling import seeded_latents

    z = seeded_latents(generator, n, seed)
    if not num_classes:
        return (z,)
    return z, torch.randint(0, num_classes, (n,), generator=torch.Generator().manual_seed(seed + 1))


def export_checkpoint(target: Path, registry, fmt: str, out: Path | None = None, *,
                      ema: bool | None = None, best: bool = False) -> dict:
    """Export the generator of ``RUN_OR_CHECKPOINT``, check it and write it with its sidecar; the sidecar's dict."""
    from gantool import sampling

    if fmt not in FORMATS:
        raise GantoolError(f"--format {fmt}: use one of {', '.join(FORMATS)}")
    require_extra(fmt)  # before the checkpoint is read: the missing package is the first thing to fix
    path, run_dir = sampling.resolve_checkpoint(target, best=best)
    out = Path(out) if out is not None else default_output(path, run_dir, fmt, best=best)
    if out.is_dir():
        raise GantoolError(f"--out {out}: is a folder; pass a file name, e.g. {out / ('generator' + FORMATS[fmt])}")
    generator, meta, source = sampling.load_generator(path, registry, torch.device("cpu"), ema=ema)
    generator = generator.float().eval()
    names = sampling.class_names(meta)
    component = meta["components"]["generator"]
    what = f"generator {component['qualified_name']!r} (plugin {component['plugin']} {component['version']})"
    example = example_inputs(generator, EXAMPLE_BATCH, len(names))
    sidecar = sidecar_path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise GantoolError(f"--out {out}: cannot create {out.parent} ({e.strerror}); pass --out elsewhere") from None
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        details = write_model(generator, example, fmt, tmp, what)
        diff = check_parity(generator, tmp, fmt, len(names), what)
        info = describe(generator, example, fmt, meta, path, source, names, diff, details, out)
        os.replace(tmp, out)
        write_sidecar(info, sidecar)
    finally:
        tmp.unlink(missing_ok=True)
    return {**info, "out": str(out), "sidecar": str(sidecar)}


@contextlib.contextmanager
def _quiet():
    """Hide the exporters' deprecation warnings, log lines and printed graph dumps: the outcome is checked."""
    logger = logging.getLogger("torch")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:  # torch.export prints a failed graph to sys.stderr; the error line says what failed and where
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()), \
                contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def write_model(generator, example: tuple, fmt: str, dest: Path, what: str) -> dict:
    """Export ``generator`` (eval mode, CPU) to ``dest``; format details for the sidecar (the ONNX opset).

    A generator the exporter cannot handle (data-dependent control flow, an unsupported op) is one
    line naming the component and the line of its code that failed (exit 1).
    """
    names = list(INPUT_NAMES[: len(example)])
    try:
        with _quiet(), torch.no_grad():
            if fmt == "onnx":
                nbytes = sum(p.numel() * p.element_size() for p in generator.state_dict().values())
                if nbytes > MAX_ONNX_BYTES:
                    raise GantoolError(f"{what}: {nbytes / 2**30:.1f} GiB of weights do not fit in one ONNX file; "
                                       "use --format torchscript")
                if not DYNAMO_ONNX:
                    return _write_onnx_traced(generator, example, names, dest)
                batch = torch.export.Dim("batch")
                program = torch.onnx.export(generator, example, dynamo=True, verbose=False, input_names=names,
                                            output_names=[OUTPUT_NAME],
                                            dynamic_shapes=tuple({0: batch} for _ in example))
                program.save(dest, external_data=False)
                opset = next(o.version for o in program.model_proto.opset_import if o.domain in ("", "ai.onnx"))
                return {"opset": int(opset), "exporter": "torch.onnx.export(dynamo=True)"}
            traced = torch.jit.trace(generator, example, check_trace=False)
            torch.jit.save(traced, str(dest))
            return {"exporter": "torch.jit.trace"}
    except GantoolError:
        raise
    except OSError as e:
        raise GantoolError(f"{dest.parent}: cannot write the exported model ({e.strerror}); "
                           "pass --out elsewhere") from None
    except Exception as e:  # any exporter failure is the component's, reported in one line
        hint = "try --format torchscript" if fmt == "onnx" else "try --format onnx"
        raise RunFailed(f"{what} cannot be exported to {fmt}: {_cause(e)}; {hint}, or make its forward "
                        "traceable (no Python branches on tensor values, the batch size read from z.shape[0])") from e


def _write_onnx_traced(generator, example: tuple, names: list[str], dest: Path) -> dict:
    """torch < 2.7: the TorchScript-based exporter, the batch marked in ``dynamic_axes``.

    Unlike the dynamo exporter, tracing does not refuse a Python branch on a tensor: it records
    the branch taken (shape checks, as in DCGAN's layers, are such branches, and harmless). The
    check at other batch sizes then catches a branch that depends on the batch size.
    """
    torch.onnx.export(generator, example, str(dest), input_names=names, output_names=[OUTPUT_NAME],
                      dynamic_axes={name: {0: "batch"} for name in (*names, OUTPUT_NAME)},
                      opset_version=LEGACY_OPSET)
    return {"opset": LEGACY_OPSET, "exporter": "torch.onnx.export (TorchScript-based)"}


def _cause(error: BaseException, *, code: bool = True) -> str:
    """The innermost cause of an exporter error and (``code``) the last line of non-torch code it passed through."""
    inner, seen = error, set()
    while (inner.__cause__ or inner.__context__) is not None and id(inner) not in seen:
        seen.add(id(inner))
        inner = inner.__cause__ or inner.__context__
    lines = [line.strip() for line in str(inner).splitlines() if line.strip()] or [""]
    if lines[0].startswith("The following operation failed in the TorchScript interpreter"):
        lines = lines[-1:]  # the error itself comes last, after TorchScript's own traceback
    elif type(inner).__module__.startswith("onnxruntime"):
        lines = [" ".join(lines)]  # short messages whose detail (which index, what size) is on the next line
    prefix = f"{type(inner).__name__}: "
    text = (lines[0] if lines[0].startswith(prefix) else prefix + lines[0]).rstrip(": ")
    torch_dir = str(Path(torch.__file__).parent)
    frames = [f for f in traceback.extract_tb(inner.__traceback__)
              if not f.filename.startswith((torch_dir, "<")) and f.filename != __file__]
    if frames and code:
        f = frames[-1]
        text += f" (at {f.filename}:{f.lineno}: {f.line})"
    return text


def load_exported(dest: Path, fmt: str):
    """The exported file as a function of the inputs, loaded as a deployment would: onnxruntime or torch.jit.load."""
    if fmt == "onnx":
        import onnx
        import onnxruntime

        onnx.checker.check_model(str(dest))
        session = onnxruntime.InferenceSession(str(dest), providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]

        def run_session(*inputs):
            return torch.from_numpy(session.run([OUTPUT_NAME], {k: t.numpy() for k, t in zip(names, inputs)})[0])

        return run_session
    with _quiet():
        model = torch.jit.load(str(dest), map_location="cpu")

    def run(*inputs):
        with _quiet(), torch.no_grad():
            return model(*inputs)

    return run


def check_parity(generator, dest: Path, fmt: str, num_classes: int, what: str) -> float:
    """Largest |exported - PyTorch| over seeded inputs at each of ``CHECK_BATCHES``; RunFailed above ``TOLERANCE``."""
    runtime = "onnxruntime" if fmt == "onnx" else "torch.jit.load"
    try:
        exported = load_exported(dest, fmt)
    except Exception as e:  # the exporter wrote a file its own runtime cannot load
        raise RunFailed(f"{what}: {runtime} cannot load the exported {fmt} model ({_cause(e, code=False)}); "
                        "nothing written") from e
    worst = 0.0
    for n in CHECK_BATCHES:
        inputs = example_inputs(generator, n, num_classes)
        try:
            with torch.no_grad():
                expected = generator(*inputs).float()
        except Exception as e:  # the generator itself cannot take this batch size
            raise RunFailed(f"{what} fails in PyTorch at batch size {n} ({_cause(e)}); nothing written") from e
        try:
            got = exported(*inputs)
        except Exception as e:  # the exported file does not run: one line, exit 1
            raise RunFailed(f"{what}: the exported {fmt} model fails at batch size {n} "
                            f"({runtime}: {_cause(e, code=False)}); its batch dimension may be fixed "
                            "(read the batch size from z.shape[0]); nothing written") from e
        if got.shape != expected.shape:
            raise RunFailed(f"{what}: the exported {fmt} model returns {tuple(got.shape)} at batch size {n}, "
                            f"PyTorch {tuple(expected.shape)}; its batch dimension is fixed; nothing written")
        diff = (got.float() - expected).abs().max().item()
        if not diff <= worst:  # also keeps a NaN
            worst = diff
    if not worst <= TOLERANCE:
        raise RunFailed(f"{what}: the exported {fmt} model ({runtime}) differs from PyTorch by up to {worst:.3g} "
                        f"at batch sizes {' and '.join(map(str, CHECK_BATCHES))} (tolerance {TOLERANCE:g}); "
                        "nothing written")
    return worst


def describe(generator, example, fmt, meta, path, source, names, diff, details, out: Path) -> dict:
    """The sidecar: what the exported model takes and returns, where it came from, how it was checked."""
    from gantool.interfaces import Generator

    component = meta["components"]["generator"]
    z = example[0]
    shape = [int(s) for s in meta["components"]["dataset"]["image_shape"]]
    own = type(generator).sample_latent is not Generator.sample_latent
    inputs = [{"name": "z", "shape": ["batch", *z.shape[1:]], "dtype": str(z.dtype).removeprefix("torch."),
               "distribution": f"{type(generator).__name__}.sample_latent" if own else "standard normal"}]
    if names:
        inputs.append({"name": "labels", "shape": ["batch"], "dtype": "int64",
                       "range": [0, len(names) - 1]})
    info = {
        "format": fmt,
        "file": out.name,
        **details,
        "latent_shape": list(z.shape[1:]),
        "image_shape": shape,
        "value_range": [-1, 1],
        "inputs": inputs,
        "outputs": [{"name": OUTPUT_NAME, "shape": ["batch", *shape], "dtype": "float32"}],
        "conditional": bool(names),
    }
    if names:
        info.update(num_classes=len(names), class_names=names)
    info.update({
        "gantool_version": gantool.__version__,
        "torch_version": torch.__version__,
        "source": {"checkpoint": str(path), "step": meta.get("step"), "weights": source,
                   "generator": component["qualified_name"], "plugin": component["plugin"],
                   "plugin_version": component["version"]},
        "check": {"runtime": "onnxruntime" if fmt == "onnx" else "torch.jit.load", "batch_sizes": list(CHECK_BATCHES),
                  "max_abs_diff": diff, "tolerance": TOLERANCE, "seed": SEED},
    })
    return info


def write_sidecar(info: dict, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(info, indent=2) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
