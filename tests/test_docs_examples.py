"""The code in docs/plugins.md runs and passes gantool.testing, so the page cannot drift."""

import re

import pytest

from conftest import ROOT
from gantool import testing


@pytest.fixture(scope="module")
def examples() -> dict:
    """Every ```python block of docs/plugins.md, executed in one namespace."""
    text = (ROOT / "docs" / "plugins.md").read_text()
    namespace = {}
    for block in re.findall(r"```python\n(.*?)```", text, flags=re.S):
        exec(compile(block, "docs/plugins.md", "exec"), namespace)  # noqa: S102 - our own docs
    return namespace


def test_the_loss_example_meets_the_contract(examples):
    testing.check_loss(examples["RpGAN"])


def test_the_augmentation_example_meets_the_contract(examples):
    testing.check_augmentation(examples["InstanceNoise"], {"sigma": 0.2})


def test_the_callback_example_writes_its_log_and_stops_a_run(examples, tmp_path):
    run_dir = testing.check_callback(examples["StopWhenFlat"], {"patience": 1}, tmp_path=tmp_path)
    assert (run_dir / "flat.log").read_text().count("\n") >= 2


def test_the_conditional_generator_example_meets_the_contract(examples):
    testing.check_generator(examples["LabelledGenerator"])  # also built with num_classes = 3
