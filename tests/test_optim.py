"""Built-in optimizers and lr schedules, built through the registry as a recipe builds them."""

from __future__ import annotations

import json
import math

import pytest
import torch

from gantool import GantoolError
from gantool.plugins import get_registry


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))


def _train(model, opt, steps=5):
    torch.manual_seed(1)
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(16, 4)).square().mean().backward()
        opt.step()
    return [p.detach().clone() for p in model.parameters()]


def _build_opt(name, params, table=None):
    return get_registry().build("optimizer", name, table or {}, params=list(params))


def _build_sched(name, opt, total_steps, table=None):
    return get_registry().build("scheduler", name, table or {}, optimizer=opt, total_steps=total_steps)


def test_adam_is_bit_identical_to_torch_adam():
    table = {"lr": 1e-3, "betas": [0.0, 0.9], "weight_decay": 1e-4}
    a, b = _model(), _model()
    ours = _build_opt("adam", a.parameters(), table)
    ref = torch.optim.Adam(b.parameters(), lr=1e-3, betas=(0.0, 0.9), weight_decay=1e-4)
    assert isinstance(ours, torch.optim.Adam)
    for x, y in zip(_train(a, ours), _train(b, ref)):
        assert torch.equal(x, y)


def test_adam_defaults_are_dcgans():
    group = _build_opt("adam", _model().parameters()).param_groups[0]
    assert (group["lr"], group["betas"], group["weight_decay"], group["eps"]) == (2e-4, (0.5, 0.999), 0.0, 1e-8)
    assert not group["fused"]  # fused kernels only for CUDA parameters


@pytest.mark.parametrize("name, cls, lr", [
    ("adam", torch.optim.Adam, 2e-4),
    ("adamw", torch.optim.AdamW, 2e-4),
    ("rmsprop", torch.optim.RMSprop, 5e-5),
    ("sgd", torch.optim.SGD, 0.01),
])
def test_each_optimizer_steps(name, cls, lr):
    model = _model()
    before = [p.detach().clone() for p in model.parameters()]
    opt = _build_opt(name, model.parameters())
    assert type(opt) is cls and opt.param_groups[0]["lr"] == lr
    after = _train(model, opt, steps=2)
    assert all(not torch.equal(x, y) for x, y in zip(before, after))


def test_adamw_weight_decay_default():
    assert _build_opt("adamw", _model().parameters()).param_groups[0]["weight_decay"] == 0.01


def test_sgd_nesterov_momentum():
    opt = _build_opt("sgd", _model().parameters(), {"momentum": 0.9, "nesterov": True})
    assert opt.param_groups[0]["nesterov"] and opt.param_groups[0]["momentum"] == 0.9


@pytest.mark.parametrize("name, table, words", [
    ("sgd", {"nesterov": True}, ["nesterov", "momentum > 0"]),
    ("adam", {"lr": math.inf}, ["lr", "finite"]),
    ("adam", {"lr": 0.0}, ["lr", "> 0"]),
    ("adam", {"lr": math.nan}, ["lr"]),
    ("adam", {"betas": [0.5, 1.0]}, ["betas", "< 1"]),
    ("adam", {"betas": [0.5]}, ["betas", "2 values"]),
    ("adam", {"lrr": 1e-3}, ["lrr", "did you mean 'lr'"]),
    ("adam", {"params": []}, ["params", "set by the engine"]),
    ("rmsprop", {"momentum": "0.9"}, ["momentum", "expected a number"]),
])
def test_bad_optimizer_params_are_gantool_errors(name, table, words):
    with pytest.raises(GantoolError) as e:
        _build_opt(name, _model().parameters(), table)
    assert all(w in str(e.value) for w in words), str(e.value)


def _lrs(sched, steps):
    """The lr used at each of ``steps`` generator steps, stepping as the engine does."""
    out = []
    for _ in range(steps):
        out.append(sched.get_last_lr()[0])
        sched.optimizer.step()
        sched.step()
    return out


def _sgd(lr=0.1):
    return torch.optim.SGD(_model().parameters(), lr=lr)


def test_constant():
    assert _lrs(_build_sched("constant", _sgd(), 5), 6) == [0.1] * 6


def test_linear_decays_to_zero_at_total_steps():
    sched = _build_sched("linear", _sgd(), 4)
    assert _lrs(sched, 4) == pytest.approx([0.1, 0.075, 0.05, 0.025])
    assert sched.get_last_lr() == [0.0]
    _lrs(sched, 3)
    assert sched.get_last_lr() == [0.0]  # stays at zero past the end


def test_linear_with_start_step():
    sched = _build_sched("linear", _sgd(), 8, {"start_step": 4})
    assert _lrs(sched, 8) == pytest.approx([0.1] * 5 + [0.075, 0.05, 0.025])
    assert sched.get_last_lr() == [0.0]


@pytest.mark.parametrize("total, start, expected", [
    (1, 0, [0.1, 0.0, 0.0]), (1, 5, [0.1, 0.0, 0.0]), (3, 3, [0.1, 0.1, 0.1, 0.0]), (0, 0, [0.0, 0.0]),
])
def test_linear_short_runs_do_not_divide_by_zero(total, start, expected):
    assert _lrs(_build_sched("linear", _sgd(), total, {"start_step": start}), len(expected)) == pytest.approx(expected)


def test_cosine_reaches_min_lr():
    sched = _build_sched("cosine", _sgd(), 4, {"min_lr": 0.01})
    assert _lrs(sched, 4) == pytest.approx([0.1, 0.01 + 0.09 * (1 + math.cos(math.pi / 4)) / 2, 0.055,
                                            0.01 + 0.09 * (1 + math.cos(3 * math.pi / 4)) / 2])
    assert sched.get_last_lr() == pytest.approx([0.01])
    _lrs(sched, 2)
    assert sched.get_last_lr() == pytest.approx([0.01])  # no restart after the end


def test_cosine_defaults_to_zero_and_handles_one_step():
    sched = _build_sched("cosine", _sgd(), 1)
    assert _lrs(sched, 1) == [0.1] and sched.get_last_lr() == pytest.approx([0.0])


def test_cosine_min_lr_above_lr_is_an_error():
    with pytest.raises(GantoolError, match="min_lr"):
        _build_sched("cosine", _sgd(0.1), 10, {"min_lr": 0.5})


def test_warmup_reaches_base_lr_at_warmup_steps():
    sched = _build_sched("warmup", _sgd(), 10, {"warmup_steps": 4, "start_factor": 0.2})
    assert _lrs(sched, 7) == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1, 0.1, 0.1])
    assert _build_sched("warmup", _sgd(), 10).get_last_lr() == pytest.approx([0.001])


def test_warmup_longer_than_the_run():
    lrs = _lrs(_build_sched("warmup", _sgd(), 3, {"warmup_steps": 1000}), 3)
    assert lrs == pytest.approx([0.001, 0.001 + 0.099 / 1000, 0.001 + 2 * 0.099 / 1000])


def test_bad_scheduler_params():
    with pytest.raises(GantoolError, match="warmup_steps"):
        _build_sched("warmup", _sgd(), 10, {"warmup_steps": 0})
    with pytest.raises(GantoolError, match="total_steps"):
        _build_sched("linear", _sgd(), 10, {"total_steps": 5})


@pytest.mark.parametrize("name, table", [
    ("constant", {}), ("linear", {"start_step": 3}), ("cosine", {"min_lr": 1e-3}), ("warmup", {"warmup_steps": 5}),
])
def test_scheduler_state_survives_a_json_round_trip(name, table):
    """A resume rebuilds optimizer and schedule, restores both, and continues with the same lrs."""
    model = _model()
    opt = _build_opt("adam", model.parameters(), {"lr": 1e-3})
    sched = _build_sched(name, opt, 10, table)
    _lrs(sched, 4)
    saved_opt, saved = opt.state_dict(), json.loads(json.dumps(sched.state_dict()))
    expected = _lrs(sched, 6)

    opt2 = _build_opt("adam", model.parameters(), {"lr": 1e-3})
    sched2 = _build_sched(name, opt2, 10, table)
    opt2.load_state_dict(saved_opt)
    sched2.load_state_dict(saved)
    assert _lrs(sched2, 6) == expected
