"""``gantool report RUN [RUN...]``: one self-contained HTML page about one or several runs.

The page makes no request of any kind: images are ``data:`` URIs, the CSS and the small
slider script are inline, and the curves are SVG drawn here in Python. A Content-Security-Policy
meta tag tells the browser to refuse anything else, so a page opened from an e-mail or an
archive years later looks the same. All text from the run folder goes through ``html.escape``.

Sections per run: the sample grid over time (a slider over ``samples/step_NNNNNNN.png``),
the training and evaluation curves of ``metrics.jsonl``, the final metrics with their
protocols, other images in ``samples/`` and the recipe. With several runs a comparison
comes first: the recipe keys that differ, and the final metrics side by side, where the best
value per key is marked only when every run measured it with the same protocol.
"""

from __future__ import annotations

import base64
import contextlib
import html
import json
import math
import os
import re
import stat
import tomllib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from string import Template

import gantool
from gantool.errors import GantoolError
from gantool.plotting import BOOKKEEPING, LABELS, PAIRS, best_record, read_metrics
from gantool.resume import flatten  # the same dotted keys as --resume compares

MAX_GRIDS = 50  # sample grids embedded per run, evenly picked over the steps
MAX_GALLERY = 24  # other images from samples/ (gantool sample outputs)
MAX_IMAGE_BYTES = 4 * 2**20  # a larger PNG is left out of the page, with a note
MAX_TEXT_BYTES = 16 * 2**20  # recipe.toml, summary.json, eval.json
MAX_POINTS = 400  # points per curve, evenly picked
GRID_NAME = re.compile(r"step_(\d+)\.png")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")


@dataclass
class Score:
    """One final metric value and how it was measured."""

    key: str
    value: float
    goal: str | None  # "min", "max" or None when unknown
    metric: str | None = None
    protocol: dict | None = None  # None: not recorded
    source: str = ""
    step: int | None = None


@dataclass
class Run:
    path: Path
    label: str
    recipe_text: str
    recipe: dict
    summary: dict | None
    training: list[dict]
    evals: dict[str, list[tuple[int, float]]]
    grids: list[tuple[int, str, int, int]]  # (step, data URI, width, height)
    gallery: list[tuple[str, str, int, int]]  # (file name, data URI, width, height)
    scores: dict[str, list[Score]]  # source -> scores; the first source is the one compared
    class_names: list[str] = field(default_factory=list)
    best: dict | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def final(self) -> dict[str, Score]:
        first = next(iter(self.scores.values()), [])
        return {s.key: s for s in first}


# ---------------------------------------------------------------- reading a run folder

def load_run(path: Path, label: str, goals_of=None) -> Run:
    """Everything the page shows about one run folder; a one-line error for what cannot be read."""
    path = Path(path)
    try:
        is_dir, exists = path.is_dir(), path.exists()
    except OSError as e:
        raise GantoolError(f"{path}: {e.strerror}; pass a run directory (the folder gantool run --out wrote)") from None
    if not exists:
        raise GantoolError(f"{path}: no such run directory")
    if not is_dir:
        raise GantoolError(f"{path}: gantool report takes a run directory "
                           "(the folder gantool run --out wrote), not a file")
    if not any((path / name).is_file() for name in ("recipe.toml", "metrics.jsonl", "summary.json")):
        raise GantoolError(f"{path}: not a gantool run directory (no recipe.toml, metrics.jsonl or summary.json); "
                           "pass the folder gantool run --out wrote")
    notes: list[str] = []
    recipe_text = _read_text(path / "recipe.toml") if (path / "recipe.toml").is_file() else ""
    try:
        recipe = tomllib.loads(recipe_text)
    except tomllib.TOMLDecodeError as e:
        raise GantoolError(f"{path / 'recipe.toml'}: not valid TOML ({e}); "
                           "restore it from the recipe you ran") from None
    summary = _read_json(path / "summary.json")
    training, evals = [], {}
    if (path / "metrics.jsonl").is_file():
        try:
            training, evals, bad = read_metrics(path / "metrics.jsonl")
        except OSError as e:
            raise GantoolError(f"{path / 'metrics.jsonl'}: cannot read ({e.strerror})") from None
        if bad:
            notes.append(f"skipped {bad} unreadable line(s) of metrics.jsonl")
    grids, gallery = _images(path / "samples", notes)
    components = (summary or {}).get("components") or {}
    dataset = components.get("dataset") if isinstance(components, dict) else None
    class_names = []
    if isinstance(dataset, dict) and dataset.get("num_classes"):
        class_names = [str(n) for n in (dataset.get("class_names") or range(int(dataset["num_classes"])))]
    return Run(path=path, label=label, recipe_text=recipe_text, recipe=recipe, summary=summary, training=training,
               evals=evals, grids=grids, gallery=gallery, class_names=class_names, best=best_record(path),
               scores=final_scores(path, recipe, summary, evals, goals_of or metric_goals), notes=notes)


def _read_bytes(path: Path, limit: int) -> bytes:
    try:
        with open(path, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise GantoolError(f"{path}: not a regular file")
            data = f.read(limit + 1)
    except OSError as e:
        raise GantoolError(f"{path}: cannot read ({e.strerror})") from None
    if len(data) > limit:
        raise GantoolError(f"{path}: larger than {limit // 2**20} MB; is it the file gantool wrote?")
    return data


def _read_text(path: Path) -> str:
    try:
        return _read_bytes(path, MAX_TEXT_BYTES).decode("utf-8")
    except UnicodeDecodeError:
        raise GantoolError(f"{path}: not UTF-8 text; is it the file gantool wrote?") from None


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(_read_text(path))
    except ValueError as e:
        raise GantoolError(f"{path}: not valid JSON ({e}); delete it or rerun the command that wrote it") from None
    if not isinstance(data, dict):
        raise GantoolError(f"{path}: expected a JSON object; delete it or rerun the command that wrote it")
    return data


def _images(folder: Path, notes: list[str]):
    """(grids by step, other PNGs) of ``samples/`` as data URIs, capped in number and size."""
    try:
        files = sorted(p for p in folder.iterdir() if p.suffix == ".png") if folder.is_dir() else []
    except OSError as e:
        raise GantoolError(f"{folder}: cannot list ({e.strerror})") from None
    steps = sorted((int(m.group(1)), p) for p in files if (m := GRID_NAME.fullmatch(p.name)))
    others = [p for p in files if not GRID_NAME.fullmatch(p.name) and p.name != "final.png"]  # final = last step
    if len(steps) > MAX_GRIDS:
        notes.append(f"showing {MAX_GRIDS} of {len(steps)} sample grids, evenly spaced over the steps")
        steps = evenly(steps, MAX_GRIDS)
    if len(others) > MAX_GALLERY:
        notes.append(f"showing {MAX_GALLERY} of {len(others)} other images in samples/")
        others = others[:MAX_GALLERY]
    grids = [(step, *image) for step, p in steps if (image := _data_uri(p, notes))]
    gallery = [(p.name, *image) for p in others if (image := _data_uri(p, notes))]
    return grids, gallery


def _data_uri(path: Path, notes: list[str]) -> tuple[str, int, int] | None:
    """(data URI, width, height) of a PNG; None, with a note, for one too large or not a PNG."""
    try:
        st = path.stat()
    except OSError as e:
        raise GantoolError(f"{path}: cannot read ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        notes.append(f"skipped {path.parent.name}/{path.name}: not a regular file")
        return None
    if st.st_size > MAX_IMAGE_BYTES:
        notes.append(f"skipped {path.parent.name}/{path.name}: {st.st_size / 2**20:.1f} MB, "
                     f"over the {MAX_IMAGE_BYTES / 2**20:g} MB limit per image")
        return None
    data = _read_bytes(path, MAX_IMAGE_BYTES)
    if not data.startswith(PNG_SIGNATURE) or len(data) < 24:
        notes.append(f"skipped {path.parent.name}/{path.name}: not a PNG image")
        return None
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")  # the IHDR chunk
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii"), width, height


def evenly(items: list, k: int) -> list:
    """At most ``k`` items spread evenly, the first and the last always kept."""
    if len(items) <= k:
        return list(items)
    if k == 1:
        return [items[-1]]
    return [items[round(i * (len(items) - 1) / (k - 1))] for i in range(k)]


# ---------------------------------------------------------------- final metrics and comparison

def metric_goals(name: str) -> dict[str, str] | None:
    """The ``goals`` a metric plugin declares, or None when it cannot be loaded here."""
    try:
        from gantool.plugins import get_registry

        return dict(getattr(get_registry().get("metric", name).load(), "goals", {}) or {})
    except Exception:  # noqa: BLE001 - a plugin missing here only means "goal unknown"
        return None


def final_scores(path: Path, recipe: dict, summary: dict | None, evals: dict, goals_of) -> dict[str, list[Score]]:
    """Scores by source: eval.json (``gantool eval``), eval_best.json, the training's last evaluation.

    The first source is the one runs are compared by. eval.json records goals and protocols;
    for the training's own evaluation they come from summary.json and the metric plugins.
    """
    sources: dict[str, list[Score]] = {}
    for name in ("eval.json", "eval_best.json"):
        result = _read_json(path / name)
        if result is not None:
            sources[name] = _eval_json_scores(result, name, path)
    eval_table = recipe.get("eval") if isinstance(recipe.get("eval"), dict) else {}
    names = [str(n) for n in eval_table.get("metrics", []) if isinstance(n, str)]
    values = (summary or {}).get("metrics")
    if isinstance(values, dict) and values:
        protocols = summary.get("eval_protocol") if isinstance(summary.get("eval_protocol"), dict) else {}
        step = summary.get("steps")
        source = "summary.json"
    elif evals:  # an unfinished run: its last logged evaluation, protocol unknown
        step = max(s for points in evals.values() for s, _ in points)
        values = {k: dict(points)[step] for k, points in evals.items() if step in dict(points)}
        protocols, source = None, "metrics.jsonl"
    else:
        return sources
    goals = {name: goals_of(name) for name in names}
    scores = []
    for key, value in values.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        owners = [n for n in names if key in (goals[n] or {})] or (names if len(names) == 1 else [])
        metric = owners[0] if len(owners) == 1 else None
        goal = None if metric is None or goals[metric] is None else goals[metric].get(key, "min")
        protocol = None
        if protocols is not None and metric is not None and metric in protocols:
            protocol = dict(protocols[metric] or {})
            protocol.setdefault("n_fake", eval_table.get("n_samples", 1000))  # as gantool eval records it
        scores.append(Score(key, float(value), goal, metric, protocol, source, step))
    sources[source] = scores
    return sources


def _eval_json_scores(result: dict, name: str, path: Path) -> list[Score]:
    scores = []
    try:
        for m in result.get("metrics", []):
            for key, value in m["values"].items():
                protocol = m.get("protocol")
                scores.append(Score(key, float(value), m.get("goals", {}).get(key), m.get("metric"),
                                    dict(protocol) if isinstance(protocol, dict) else None, name, result.get("step")))
    except (KeyError, TypeError, AttributeError, ValueError):
        raise GantoolError(f"{path / name}: not a gantool eval result; rerun gantool eval {path}") from None
    return scores


def scalar_protocol(protocol: dict) -> dict:
    """The settings of a protocol; lists and tables (per-class results, class names) are not compared."""
    return {k: v for k, v in protocol.items() if not isinstance(v, (dict, list))}


def protocol_differences(protocols: list[dict]) -> list[str]:
    """Protocol keys whose value is not the same in every protocol (a missing key counts as different)."""
    flat = [scalar_protocol(p) for p in protocols]
    keys = sorted(set().union(*flat))
    return [k for k in keys if len({json.dumps(p.get(k, "<missing>"), sort_keys=True) for p in flat}) > 1]


def rank(scores: list[Score | None]) -> tuple[set[int], str]:
    """(indices of the best runs, note). No best is marked when protocols or goals differ or are unknown."""
    present = [(i, s) for i, s in enumerate(scores) if s is not None and math.isfinite(s.value)]
    if len(present) < 2:
        return set(), ""
    if any(s.protocol is None for _, s in present):
        return set(), "not ranked: protocol not recorded"
    differing = protocol_differences([s.protocol for _, s in present])
    if differing:
        return set(), "not ranked: protocols differ in " + ", ".join(differing)
    goals = {s.goal for _, s in present}
    if goals - {"min", "max"}:
        return set(), "not ranked: goal unknown"
    if len(goals) > 1:
        return set(), "not ranked: goals differ"
    goal = goals.pop()
    best = (min if goal == "min" else max)(s.value for _, s in present)
    return {i for i, s in present if s.value == best}, f"best = {goal}"


def recipe_values(recipe: dict) -> dict[str, str]:
    """``{"train.epochs": "10", ...}``: every leaf of a recipe as a dotted key and its TOML-like value."""
    return {key: json.dumps(value, default=str) if not isinstance(value, bool) else str(value).lower()
            for key, value in flatten(recipe).items()}


def recipe_differences(recipes: list[dict]) -> list[tuple[str, list[str | None]]]:
    """(key path, value per recipe or None when unset) for the keys whose values differ."""
    flats = [recipe_values(r) for r in recipes]
    keys = sorted(set().union(*flats))
    return [(k, [f.get(k) for f in flats]) for k in keys if len({f.get(k) for f in flats}) > 1]


# ---------------------------------------------------------------- curves as SVG

def panels(training: list[dict], evals: dict) -> list[tuple[str, list[tuple[str, list[tuple[float, float]]]]]]:
    """(title, [(series label, points)]) grouped as ``gantool plot`` groups them."""
    out = []
    if training:
        keys = [k for k in dict.fromkeys(k for r in training for k in r) if k not in BOOKKEEPING]
        groups = {"losses": ("loss_d", "loss_g"), **{t: p for t, p in PAIRS.items() if set(p) <= set(keys)}}
        grouped = {k for pair in groups.values() for k in pair}
        groups.update({k: (k,) for k in keys if k not in grouped})
        for title, members in groups.items():
            series = [(LABELS.get(k, k), _points(training, k)) for k in members]
            out.append((title, [s for s in series if s[1]]))
    out += [(key, [(key, [(float(s), v) for s, v in points])]) for key, points in evals.items()]
    return [(t, s) for t, s in out if s]


def _points(records: list[dict], key: str) -> list[tuple[float, float]]:
    return [(float(r["step"]), float(r[key])) for r in records
            if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)]


def ticks(lo: float, hi: float, n: int = 4, integer: bool = False) -> list[float]:
    """About ``n`` round tick values covering [lo, hi]; whole numbers only with ``integer`` (steps)."""
    if not hi > lo:
        pad = 1.0 if integer else abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / n
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    step = max(1, round(step)) if integer else step
    first, last = math.floor(lo / step), math.ceil(hi / step)
    return [round(i * step, 12) for i in range(first, last + 1)]


def svg_chart(title: str, series: list[tuple[str, list[tuple[float, float]]]], mark=None, width=460, height=230) -> str:
    """An SVG line chart: axes with round ticks, one path per series, a hover title on every point.

    ``mark`` = (step, value, label) draws a star (the best checkpoint).
    """
    series = [(label, evenly([(x, y) for x, y in pts if math.isfinite(y)], MAX_POINTS)) for label, pts in series]
    xs = [x for _, pts in series for x, _ in pts]
    ys = [y for _, pts in series for _, y in pts] + ([mark[1]] if mark else [])
    if not xs:
        return ""
    left, right, top, bottom = 56, 12, 26, 30
    xt, yt = ticks(min(xs), max(xs), integer=True), ticks(min(ys), max(ys))
    x0, x1, y0, y1 = xt[0], xt[-1], yt[0], yt[-1]

    def px(x):
        return left + (x - x0) / (x1 - x0) * (width - left - right)

    def py(y):
        return height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom)

    e = html.escape
    parts = [(f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
              f'aria-label="{e(title)}"><title>{e(title)}</title>'),
             f'<text class="ct" x="{left}" y="16">{e(title)}</text>']
    for t in yt:
        parts.append(f'<line class="gl" x1="{left}" x2="{width - right}" y1="{py(t):.1f}" y2="{py(t):.1f}"/>'
                     f'<text class="yl" x="{left - 6}" y="{py(t) + 4:.1f}">{t:.4g}</text>')
    for t in xt:
        parts.append(f'<text class="xl" x="{px(t):.1f}" y="{height - bottom + 16}">{t:g}</text>')
    parts.append(f'<line class="ax" x1="{left}" x2="{width - right}" y1="{height - bottom}" y2="{height - bottom}"/>')
    legend_x = width - right - sum(14 + 7 * len(label) + 10 for label, pts in series if pts)
    for i, (label, pts) in enumerate(series):
        color = COLORS[i % len(COLORS)]
        if not pts:
            continue
        d = " ".join(f"{'M' if j == 0 else 'L'}{px(x):.1f},{py(y):.1f}" for j, (x, y) in enumerate(pts))
        parts.append(f'<path class="line" d="{d}" stroke="{color}"><title>{e(label)}</title></path>')
        radius = 2.5 if len(pts) <= 60 else 0
        for x, y in pts:
            parts.append(f'<circle class="pt" cx="{px(x):.1f}" cy="{py(y):.1f}" r="{radius or 4}" fill="{color}" '
                         f'fill-opacity="{1 if radius else 0}">'
                         f'<title>{e(label)}: {y:.5g} at step {x:g}</title></circle>')
        if len(series) > 1:  # left to right, ending at the right edge
            parts.append(f'<rect x="{legend_x}" y="8" width="10" height="10" fill="{color}"/>'
                         f'<text class="lg" x="{legend_x + 14}" y="17">{e(label)}</text>')
            legend_x += 14 + 7 * len(label) + 10
    if mark:
        x, y, label = mark
        parts.append(f'<text class="star" x="{px(x):.1f}" y="{py(y) + 5:.1f}">★<title>{e(label)}: {y:.5g} at step '
                     f'{x:g}</title></text>')
    parts.append(f'<text class="xl" x="{width - right}" y="{height - 2}" text-anchor="end">step</text></svg>')
    return "".join(parts)


# ---------------------------------------------------------------- the page

PAGE = Template("""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; \
script-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
<style>
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#1d2330;color:#fff;padding:18px 32px}header h1{margin:0;font-size:22px;font-weight:600}
header p{margin:4px 0 0;color:#b8c0cc;font-size:13px}
main{max-width:1180px;margin:0 auto;padding:16px 32px 48px}
section.card{background:#fff;border:1px solid #e1e4ea;border-radius:8px;padding:16px 20px;margin:18px 0}
h2{margin:0 0 10px;font-size:19px}h3{margin:18px 0 8px;font-size:15px;color:#424a59}
.meta{color:#5b6475;font-size:13px}.notes{background:#fff8e5;border:1px solid #f0d78c;border-radius:6px;
padding:8px 12px;font-size:13px;margin:10px 0}.notes ul{margin:0;padding-left:18px}
.grids{display:flex;gap:24px;flex-wrap:wrap;align-items:flex-start}
.slider figure{margin:0}.frame{display:flex;gap:6px;align-items:stretch}
.frame img{image-rendering:pixelated;border:1px solid #d5d9e0;background:#000}
.classes{display:flex;flex-direction:column;justify-content:space-around;font-size:12px;color:#5b6475;text-align:right}
.controls{display:flex;gap:10px;align-items:center;margin-top:8px}.controls input{flex:1}
.controls button{border:1px solid #c5cad3;background:#fff;border-radius:4px;padding:2px 10px;cursor:pointer}
.controls output{font-variant-numeric:tabular-nums;min-width:8em;font-size:13px}
.charts{display:flex;flex-wrap:wrap;gap:12px}
.chart{background:#fff;border:1px solid #eceef2;border-radius:6px}
.chart .ct{font-weight:600;font-size:13px;fill:#1d2330}.chart .gl{stroke:#eceef2}.chart .ax{stroke:#9aa2b1}
.chart .yl{font-size:11px;fill:#5b6475;text-anchor:end}.chart .xl{font-size:11px;fill:#5b6475;text-anchor:middle}
.chart .lg{font-size:11px;fill:#424a59}.chart .line{fill:none;stroke-width:1.8}.chart .pt:hover{fill-opacity:1}
.chart .star{font-size:16px;fill:#d62728;text-anchor:middle}
table{border-collapse:collapse;font-size:13px;margin:4px 0}th,td{padding:4px 10px;border-bottom:1px solid #eceef2;
text-align:left;vertical-align:top}th{background:#f2f4f7;font-weight:600}td.num{text-align:right;
font-variant-numeric:tabular-nums}td.best{background:#e3f4e6;font-weight:600}td.best::after{content:" \\2605";
color:#2c8a3c}.note{color:#8a5a00;font-size:12px}.unset{color:#a0a6b2;font-style:italic}
.protocol{color:#5b6475;font-size:12px;max-width:420px}code,pre{font:12.5px/1.4 ui-monospace,Menlo,Consolas,monospace}
pre{background:#f6f7f9;border:1px solid #e1e4ea;border-radius:6px;padding:10px 14px;overflow:auto;max-height:480px}
.gallery{display:flex;flex-wrap:wrap;gap:14px}.gallery figure{margin:0}.gallery img{image-rendering:pixelated;
border:1px solid #d5d9e0}.gallery figcaption,.slider figcaption{font-size:12px;color:#5b6475}
nav a{color:#9cc3ff;margin-right:14px;font-size:13px}
</style></head><body>
<header><h1>$title</h1><p>$subtitle</p><nav>$nav</nav></header>
<main>$body</main>
<script>
document.querySelectorAll(".slider").forEach(function (box) {
  var frames = box.querySelectorAll(".frame img"), range = box.querySelector("input"),
      out = box.querySelector("output"), play = box.querySelector("button"), timer = null;
  function show(i) {
    frames.forEach(function (img, j) { img.hidden = j !== i; });
    out.textContent = "step " + frames[i].dataset.step + "  (" + (i + 1) + " of " + frames.length + ")";
  }
  range.addEventListener("input", function () { show(Number(range.value)); });
  play.addEventListener("click", function () {
    if (timer) { clearInterval(timer); timer = null; play.textContent = "\\u25B6 play"; return; }
    play.textContent = "\\u275A\\u275A pause";
    if (Number(range.value) === frames.length - 1) { range.value = 0; show(0); }
    timer = setInterval(function () {
      var next = Number(range.value) + 1;
      if (next >= frames.length) { clearInterval(timer); timer = null; play.textContent = "\\u25B6 play"; return; }
      range.value = next; show(next);
    }, 400);
  });
  show(Number(range.value));
});
</script>
</body></html>
""")


def render(runs: list[Run]) -> str:
    e = html.escape
    several = len(runs) > 1
    title = "gantool report: " + (", ".join(r.label for r in runs) if several else runs[0].label)
    subtitle = f"{datetime.now().astimezone():%Y-%m-%d %H:%M %Z} · gantool {gantool.__version__}"
    anchors = ([("comparison", "comparison")] if several else []) + [(f"run{i}", r.label) for i, r in enumerate(runs)]
    nav = "".join(f'<a href="#{a}">{e(t)}</a>' for a, t in anchors)
    body = [_comparison(runs)] if several else []
    body += [_run_section(r, f"run{i}") for i, r in enumerate(runs)]
    return PAGE.substitute(title=e(title), subtitle=e(subtitle), nav=nav, body="\n".join(body))


def _comparison(runs: list[Run]) -> str:
    e = html.escape
    head = "".join(f"<th>{e(r.label)}</th>" for r in runs)
    parts = ['<section class="card" id="comparison"><h2>Comparison</h2>', "<h3>Final metrics</h3>"]
    finals = [r.final for r in runs]
    keys = list(dict.fromkeys(k for f in finals for k in f))
    if keys:
        sources = "".join(f"<th class=meta>{e(next(iter(r.scores), '—'))}</th>" for r in runs)
        parts.append(f'<table class="metrics"><tr><th>key</th>{head}<th></th></tr>'
                     f'<tr><th>from</th>{sources}<th></th></tr>')
        for key in keys:
            scores = [f.get(key) for f in finals]
            best, note = rank(scores)
            cells = "".join(f'<td class="num{" best" if i in best else ""}">{_number(s.value)}</td>' if s
                            else '<td class="unset">—</td>' for i, s in enumerate(scores))
            cls = "note" if note.startswith("not ranked") else "meta"
            parts.append(f'<tr data-key="{e(key)}"><th>{e(key)}</th>{cells}<td class="{cls}">{e(note)}</td></tr>')
        parts.append("</table>")
    else:
        parts.append('<p class="meta">No run has evaluated a metric yet '
                     '([eval] metrics in the recipe, or gantool eval).</p>')
    parts.append("<h3>Recipe differences</h3>")
    diffs = recipe_differences([r.recipe for r in runs])
    if diffs:
        parts.append(f'<table class="recipe-diff"><tr><th>key</th>{head}</tr>')
        for key, values in diffs:
            cells = "".join(f"<td><code>{e(v)}</code></td>" if v is not None else '<td class="unset">not set</td>'
                            for v in values)
            parts.append(f"<tr><th><code>{e(key)}</code></th>{cells}</tr>")
        parts.append("</table>")
    else:
        parts.append('<p class="meta">The recipes are identical.</p>')
    charts = []
    titles = ["loss_d", "loss_g"] + list(dict.fromkeys(k for r in runs for k in r.evals))
    for key in titles:
        series = [(r.label, _points(r.training, key) if key in ("loss_d", "loss_g") else
                   [(float(s), v) for s, v in r.evals.get(key, [])]) for r in runs]
        if any(pts for _, pts in series):
            charts.append(svg_chart(LABELS.get(key, key), series))
    if charts:
        parts.append(f'<h3>Curves</h3><div class="charts">{"".join(charts)}</div>')
    parts.append("</section>")
    return "\n".join(parts)


def _run_section(run: Run, anchor: str) -> str:
    e = html.escape
    s = run.summary or {}
    facts = [str(run.path)]
    if s:
        facts.append(f"{s.get('status', '?')}: {s.get('steps', '?')} steps")
        if isinstance(s.get("images_per_s"), (int, float)):
            facts.append(f"{s['images_per_s']:.0f} images/s on {s.get('device', '?')}")
    else:
        facts.append("no summary.json (running, interrupted or crashed)")
    parts = [(f'<section class="card run" id="{anchor}"><h2>{e(run.label)}</h2>'
              f'<p class="meta">{e(" · ".join(facts))}</p>')]
    if run.notes:
        parts.append('<div class="notes"><ul>' + "".join(f"<li>{e(n)}</li>" for n in run.notes) + "</ul></div>")
    parts.append('<div class="grids">')
    parts.append(_slider(run) if run.grids else '<p class="meta">No sample grids in samples/ yet.</p>')
    parts.append("</div>")
    charts = []
    for title, series in panels(run.training, run.evals):
        best = run.best
        mark = (best["step"], best["value"], "best.safetensors") if best and best.get("key") == title else None
        charts.append(svg_chart(title, series, mark=mark))
    if charts:
        parts.append(f'<h3>Curves</h3><div class="charts">{"".join(charts)}</div>')
    parts.append(_metrics_table(run))
    if run.gallery:
        figures = "".join(f'<figure><img src="{uri}" alt="{e(name)}" width="{_display(w, h)}">'
                          f"<figcaption>{e(name)}</figcaption></figure>" for name, uri, w, h in run.gallery)
        parts.append(f'<h3>Other images in samples/</h3><div class="gallery">{figures}</div>')
    recipe = e(run.recipe_text) if run.recipe_text else "(no recipe.toml)"
    parts.append(f"<h3>Recipe</h3><pre class=\"recipe\">{recipe}</pre></section>")
    return "\n".join(parts)


def _display(width: int, height: int) -> int:
    """Display width: a small grid is scaled up by a whole factor (pixels stay square) to about 480 x 640."""
    scale = max(1, min(480 // max(width, 1), 640 // max(height, 1)))
    return min(width * scale, 1000)


def _slider(run: Run) -> str:
    e = html.escape
    last = len(run.grids) - 1
    frames = "".join(f'<img src="{uri}" data-step="{step}" alt="samples at step {step}" width="{_display(w, h)}"'
                     f'{"" if i == last else " hidden"}>' for i, (step, uri, w, h) in enumerate(run.grids))
    labels = ""
    if run.class_names:
        labels = '<div class="classes" title="one row per class">' + "".join(
            f"<span>{e(n)}</span>" for n in run.class_names) + "</div>"
    what = "one row per class, the same latents in each column" if run.class_names else "the same latents at every step"
    return (f'<div class="slider"><figure><div class="frame">{labels}<div>{frames}</div></div>'
            f"<figcaption>Samples over training: {e(what)}</figcaption></figure>"
            f'<div class="controls"><button type="button">\u25b6 play</button>'
            f'<input type="range" min="0" max="{last}" value="{last}" step="1" aria-label="training step">'
            f"<output></output></div></div>")


def _metrics_table(run: Run) -> str:
    e = html.escape
    if not run.scores:
        return ""
    rows = []
    for source, scores in run.scores.items():
        for s in scores:
            protocol = "not recorded" if s.protocol is None else ", ".join(
                f"{k}={_short(v)}" for k, v in s.protocol.items()) or "—"
            rows.append(f"<tr><td>{e(source)}</td><td class=num>{'' if s.step is None else e(str(s.step))}</td>"
                        f"<td>{e(s.metric or '?')}</td><th>{e(s.key)}</th><td class=num>{_number(s.value)}</td>"
                        f"<td>{e(s.goal or '?')}</td><td class=protocol>{e(protocol)}</td></tr>")
    return ('<h3>Final metrics</h3><table class="final"><tr><th>source</th><th>step</th><th>metric</th><th>key</th>'
            "<th>value</th><th>goal</th><th>protocol</th></tr>" + "".join(rows) + "</table>")


def _number(value: float) -> str:
    return html.escape(f"{value:.5g}")


def _short(value, limit: int = 80) -> str:
    text = json.dumps(value, default=str) if isinstance(value, (list, dict)) else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------- entry point

def default_out(run_dirs: list[Path]) -> Path:
    """RUN/report.html for one run; ./report.html for several (no run folder owns a comparison)."""
    return Path(run_dirs[0]) / "report.html" if len(run_dirs) == 1 else Path("report.html")


def labels_for(run_dirs: list[Path]) -> list[str]:
    """Folder names, or the paths as given where two folders share a name."""
    names = [Path(p).resolve().name or str(p) for p in run_dirs]
    return names if len(set(names)) == len(names) else [str(p) for p in run_dirs]


def write_report(run_dirs: list[Path], out: Path | None = None, goals_of=None) -> tuple[Path, list[str]]:
    """Write the page; returns (its path, notes about what was left out)."""
    run_dirs = [Path(p) for p in run_dirs]
    seen = set()
    for p in run_dirs:
        key = p.resolve()
        if key in seen:
            raise GantoolError(f"{p}: given twice; name each run once")
        seen.add(key)
    runs = [load_run(p, label, goals_of) for p, label in zip(run_dirs, labels_for(run_dirs))]
    page = render(runs)
    out = Path(out) if out is not None else default_out(run_dirs)
    if out.is_dir():
        out = out / "report.html"
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        tmp.write_text(page, encoding="utf-8")
        tmp.replace(out)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise GantoolError(f"--out {out}: cannot write ({e.strerror}); pass --out FILE somewhere writable") from None
    return out, [f"{r.label}: {n}" for r in runs for n in r.notes]
