"""gantool report: one self-contained HTML page per run or comparison, checked in a real headless browser.

Two tiny runs with different recipes are trained once per module: an unconditional one
(checkerboard on 64 samples, keep_best) and a conditional one (checkerboard on 32 samples,
so the protocols differ). The comparison logic is also tested on its own, without a browser.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import types

import pytest
from conftest import TINY_RECIPE, invoke_cli as gantool, train_run as train
from PIL import Image, ImageStat

from gantool import report
from gantool.report import Score, rank, recipe_differences

HOSTILE = '# </pre><script>alert("recipe")</script> & <b>bold</b>\n'
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    recipe = root / "tiny.toml"
    recipe.write_text(TINY_RECIPE)
    a = train(recipe, root / "plain", 'eval.metrics=["checkerboard"]', "eval.every=4", "eval.n_samples=64",
              "train.keep_best=checkerboard_diff_db")
    b = train(recipe, root / "conditional", "train.conditional=true", "train.sample_grid=20",
              "generator.base_channels=4", 'eval.metrics=["checkerboard"]', "eval.every=4", "eval.n_samples=32")
    with open(a / "recipe.toml", "a") as f:  # text from a run folder must reach the page escaped
        f.write(HOSTILE)
    return types.SimpleNamespace(a=a, b=b, root=root)


# ---------------------------------------------------------------- the comparison logic, no browser

def score(value, goal="min", **protocol):
    return Score("fid", value, goal, "fid", protocol or {"n_fake": 100, "features": "digits"})


def test_rank_marks_the_best_by_goal():
    assert rank([score(3.0), score(1.0), score(2.0)]) == ({1}, "best = min")
    assert rank([score(0.3, "max"), score(0.9, "max"), None]) == ({1}, "best = max")
    assert rank([score(1.0), score(1.0)])[0] == {0, 1}  # a tie marks both
    assert rank([score(1.0), None]) == (set(), "")  # nothing to compare


def test_rank_refuses_different_or_unknown_protocols_and_goals():
    a, b = score(1.0, n_fake=100, features="digits", seed=0), score(2.0, n_fake=50, features="inception", seed=0)
    assert rank([a, b]) == (set(), "not ranked: protocols differ in features, n_fake")
    lists_ignored = score(2.0, n_fake=100, features="digits", seed=0, per_class=[1, 2])  # results, not settings
    assert rank([a, lists_ignored]) == ({0}, "best = min")
    assert rank([a, score(2.0, n_fake=100, features="digits")])[1] == "not ranked: protocols differ in seed"
    assert rank([score(1.0), Score("fid", 2.0, "min")])[1] == "not ranked: protocol not recorded"
    assert rank([score(1.0), score(2.0, goal=None)])[1] == "not ranked: goal unknown"
    assert rank([score(1.0), score(2.0, goal="max")])[1] == "not ranked: goals differ"


def test_recipe_differences_flatten_key_paths():
    one = {"run": {"name": "a"}, "train": {"epochs": 2, "ema_decay": 0.9}, "eval": {"metrics": ["fid"]}}
    two = {"run": {"name": "a"}, "train": {"epochs": 3}, "eval": {"metrics": ["fid", "kid"]},
           "augment": {"type": "ada"}}
    assert recipe_differences([one, two]) == [
        ("augment.type", [None, '"ada"']), ("eval.metrics", ['["fid"]', '["fid", "kid"]']),
        ("train.ema_decay", ["0.9", None]), ("train.epochs", ["2", "3"])]


# ---------------------------------------------------------------- the page, without a browser

def test_report_pages(runs, monkeypatch):
    gantool("report", runs.a)
    page = (runs.a / "report.html").read_text()
    assert "<script>alert" not in page and "&lt;/pre&gt;&lt;script&gt;alert(&quot;recipe&quot;)" in page
    assert not re.search(r"""(src|href)=["'](?!data:|#)""", page), "only data: URIs and in-page links"
    assert page.count('data-step="') == len(list((runs.a / "samples").glob("step_*.png")))
    assert "checkerboard_diff_db" in page and "n_fake=64" in page and "best.safetensors" in page

    monkeypatch.chdir(runs.root)  # several runs: ./report.html unless --out
    result = gantool("report", runs.a, runs.b)
    both = (runs.root / "report.html").read_text()
    assert "wrote report.html" in result.output
    row = re.search(r'<tr data-key="checkerboard_diff_db">.*?</tr>', both).group(0)
    assert "not ranked: protocols differ in " in row and "n_fake" in row and 'class="num best"' not in row
    assert "train.conditional" in both and "generator.base_channels" in both  # recipe differences
    assert both.count('class="classes"') == 1 and ">9</span>" in both  # class names beside the conditional grid


def test_comparison_marks_the_best_when_protocols_match(runs, tmp_path):
    copies = [shutil.copytree(runs.a, tmp_path / name) for name in ("x", "y")]
    summary = json.loads((copies[1] / "summary.json").read_text())
    summary["metrics"]["checkerboard_diff_db"] = -100.0
    (copies[1] / "summary.json").write_text(json.dumps(summary))
    gantool("report", *copies, "--out", tmp_path / "cmp.html")
    row = re.search(r'<tr data-key="checkerboard_diff_db">.*?</tr>', (tmp_path / "cmp.html").read_text()).group(0)
    cells = re.findall(r'<td class="num( best)?">', row)
    assert cells == ["", " best"] and "best = min" in row  # lower is better for checkerboard_diff_db


def test_caps_and_skipped_images_are_said_on_the_page(tmp_path, monkeypatch):
    run = tmp_path / "fake"
    (run / "samples").mkdir(parents=True)
    (run / "recipe.toml").write_text('[run]\nname = "fake"\n')
    for step in range(1, 61):
        Image.new("L", (6, 6), step * 4).save(run / "samples" / f"step_{step:07d}.png")
    (run / "samples" / "sample_seed0.png").write_bytes(b"not a png")
    big = Image.effect_noise((300, 300), 80).convert("L")
    big.save(run / "samples" / "sample_big.png")
    monkeypatch.setattr(report, "MAX_IMAGE_BYTES", 20_000)
    gantool("report", run)
    page = (run / "report.html").read_text()
    steps = [int(s) for s in re.findall(r'data-step="(\d+)"', page)]
    assert len(steps) == 50 and steps[0] == 1 and steps[-1] == 60 and steps == sorted(set(steps))
    assert "showing 50 of 60 sample grids" in page
    assert "skipped samples/sample_big.png" in page and "over the" in page
    assert "skipped samples/sample_seed0.png: not a PNG image" in page


@pytest.mark.parametrize("setup, message", [
    (lambda d: None, "not a gantool run directory"),
    (lambda d: (d / "recipe.toml").write_text("[run\n"), "recipe.toml: not valid TOML"),
    (lambda d: (d / "summary.json").write_text("{"), "summary.json: not valid JSON"),
    (lambda d: (d / "metrics.jsonl").mkdir(), "not a gantool run directory"),
])
def test_errors_are_one_line(tmp_path, setup, message):
    run = tmp_path / "run"
    run.mkdir()
    setup(run)
    result = gantool("report", run, code=2)
    assert message in result.output and result.output.count("\n") == 1 and "Traceback" not in result.output


def test_usage_errors_are_one_line(runs, tmp_path):
    for args, message in [((tmp_path / "nope",), "no such run directory"),
                          ((runs.a / "recipe.toml",), "not a file"),
                          ((runs.a, runs.a), "given twice"),
                          ((runs.a, "--out", tmp_path / "missing" / "r.html"), "--out")]:
        result = gantool("report", *args, code=2)
        assert message in result.output and result.output.count("\n") == 1, result.output


# ---------------------------------------------------------------- the page in a real browser

@pytest.fixture(scope="module")
def browser():
    executable = shutil.which("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        executable = None
    if not executable:
        pytest.skip("needs Debian's chromium (apt-get install chromium) and playwright")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=executable, args=BROWSER_ARGS)
        yield chromium
        chromium.close()


def open_page(browser, path):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    seen = types.SimpleNamespace(console=[], errors=[], requests=[])
    page.on("console", lambda m: seen.console.append((m.type, m.text)))
    page.on("pageerror", lambda e: seen.errors.append(str(e)))
    page.on("request", lambda r: seen.requests.append(r.url))
    page.goto(path.resolve().as_uri())
    page.wait_for_load_state("load")
    return page, seen


@pytest.mark.parametrize("which", ["one", "both"])
def test_report_in_a_browser(runs, browser, tmp_path, which):
    targets = [runs.a] if which == "one" else [runs.a, runs.b]
    out = tmp_path / "report.html"
    gantool("report", *targets, "--out", out)
    page, seen = open_page(browser, out)

    images = page.eval_on_selector_all("img", "els => els.map(i => [i.complete, i.naturalWidth])")
    assert images and all(complete and width > 0 for complete, width in images), images
    paths = page.eval_on_selector_all("svg.chart path.line", "els => els.map(p => p.getAttribute('d'))")
    points = [len(re.findall(r"[ML]-?[\d.]+,-?[\d.]+", d)) for d in paths]
    assert paths and all(n >= 1 for n in points) and max(points) >= 3, paths
    assert page.locator("svg.chart circle title").count() > 0  # hover text on every point

    slider = page.locator(".slider").first
    shown = ("el => { const i = [...el.querySelectorAll('.frame img')].find(i => !i.hidden); "
             "return [i.dataset.step, i.src]; }")
    last_step, last_src = slider.evaluate(shown)
    slider.locator("input").focus()
    page.keyboard.press("Home")
    first_step, first_src = slider.evaluate(shown)
    assert int(first_step) < int(last_step) and first_src != last_src
    assert slider.locator("output").inner_text().startswith(f"step {first_step}")

    shot = tmp_path / f"{which}.png"
    page.screenshot(path=shot, full_page=True)
    image = Image.open(io.BytesIO(shot.read_bytes())).convert("L")
    assert image.width >= 1000 and image.height >= 800 and ImageStat.Stat(image).stddev[0] > 10
    page.close()

    assert not seen.errors, seen.errors
    assert not [m for m in seen.console if m[0] == "error"], seen.console
    assert seen.requests and all(url.startswith(("file:", "data:")) for url in seen.requests), seen.requests
