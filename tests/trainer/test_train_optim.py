"""Optimisers and LR schedules follow the reference's semantics."""

import math

import pytest
import torch

from trainer.optim import Schedule, build_optimizer

# The schedules are stepped here without optimizer steps; torch warns about that order.
pytestmark = pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")


def _cfg(**hp):
    base = {"learning_rate": 1e-3, "optimizer": "adamw", "optim_weight_decay": 0.01, "optim_betas": [0.9, 0.99],
            "scheduler": None, "warmup_fraction": 0.2, "plateau_patience": 2}
    return {"hyperparams": {**base, **hp}}


def _opt(cfg):
    return build_optimizer(cfg, [torch.nn.Parameter(torch.zeros(3))])


@pytest.mark.parametrize("kind,cls", [("adamw", torch.optim.AdamW), ("adam", torch.optim.Adam), ("sgd", torch.optim.SGD)])
def test_optimizer_kinds_and_hyperparameters(kind, cls):
    opt = _opt(_cfg(optimizer=kind))
    assert type(opt) is cls
    group = opt.param_groups[0]
    assert group["lr"] == pytest.approx(1e-3)
    if kind != "sgd":
        assert group["weight_decay"] == 0.01 and tuple(group["betas"]) == (0.9, 0.99)
    else:
        assert group["weight_decay"] == 0  # the reference passes only the learning rate to SGD


def test_one_cycle_matches_reference_construction():
    cfg = _cfg(scheduler="one_cycle_lr")
    ours = _opt(cfg)
    sched = Schedule(cfg, ours, total_steps=10)
    ref_opt = _opt(cfg)
    ref = torch.optim.lr_scheduler.OneCycleLR(ref_opt, max_lr=1e-3, total_steps=10, pct_start=0.2,
                                              cycle_momentum=False, div_factor=1000)
    assert sched.lr() == pytest.approx(1e-6)  # starts at max_lr / div_factor
    lrs, ref_lrs = [], []
    for _ in range(12):  # two steps past the end must not raise (OneCycleLR itself would)
        lrs.append(sched.lr())
        sched.after_step()
    for _ in range(10):
        ref_lrs.append(ref_opt.param_groups[0]["lr"])
        ref_opt.step()
        ref.step() if ref.last_epoch < 9 else None
    assert lrs[:10] == pytest.approx(ref_lrs)
    assert max(lrs) == pytest.approx(1e-3) and lrs.index(max(lrs)) == 1  # torch ends warm-up at step pct_start * total - 1


def test_reduce_on_plateau_halves_after_patience_with_cooldown():
    cfg = _cfg(scheduler="reduce_on_plateau", plateau_patience=1)
    sched = Schedule(cfg, _opt(cfg), total_steps=100)
    sched.after_step()
    assert sched.lr() == pytest.approx(1e-3)  # not stepped per batch
    for loss in (1.0, 1.0, 1.0):  # best, bad 1, bad 2 > patience 1 -> halve
        sched.after_validation(loss)
    assert sched.lr() == pytest.approx(5e-4)
    for _ in range(4):  # cooldown of 4 evaluations
        sched.after_validation(1.0)
    assert sched.lr() == pytest.approx(5e-4)


def test_cycle_then_plateau_warms_up_then_waits_for_validation():
    cfg = _cfg(scheduler="cycle_then_plateau", warmup_fraction=0.5, plateau_patience=0)
    sched = Schedule(cfg, _opt(cfg), total_steps=10)
    assert sched.warmup_steps == 5 and sched.lr() == pytest.approx(1e-6)
    sched.after_validation(1.0)  # ignored during warm-up
    for _ in range(5):
        sched.after_step()
    assert not sched.in_warmup and sched.lr() == pytest.approx(1e-3)
    for _ in range(3):
        sched.after_step()
    assert sched.lr() == pytest.approx(1e-3)  # flat after warm-up until the plateau acts
    sched.after_validation(1.0)
    sched.after_validation(2.0)
    assert sched.lr() == pytest.approx(5e-4)


def test_no_scheduler_is_constant_and_state_round_trips():
    cfg = _cfg(scheduler=None)
    sched = Schedule(cfg, _opt(cfg), total_steps=5)
    for _ in range(3):
        sched.after_step()
        sched.after_validation(1.0)
    assert sched.lr() == pytest.approx(1e-3)

    cfg = _cfg(scheduler="one_cycle_lr")
    a = Schedule(cfg, _opt(cfg), total_steps=20)
    for _ in range(7):
        a.after_step()
    b = Schedule(cfg, _opt(cfg), total_steps=20)
    b.load_state_dict(a.state_dict())
    b.optimizer.param_groups[0]["lr"] = a.lr()  # the optimizer state carries the lr in a real resume
    a.after_step()
    b.after_step()
    assert math.isclose(a.lr(), b.lr()) and b.steps_done == 8
    with pytest.raises(ValueError, match="scheduler"):
        Schedule(_cfg(scheduler=None), _opt(cfg), 5).load_state_dict(a.state_dict())


@pytest.mark.parametrize("kind", ["one_cycle_lr", "cycle_then_plateau"])
def test_resume_with_another_step_count_continues_at_the_same_fraction(kind):
    """An elastic resume (2 ranks -> 1) doubles the optimizer steps of the run: the saved schedule
    continues from the same fraction of it, and runs to the new end without raising."""
    cfg = _cfg(scheduler=kind, warmup_fraction=0.5)
    two = Schedule(cfg, _opt(cfg), total_steps=8)
    for _ in range(2):
        two.after_step()
    one = Schedule(cfg, _opt(cfg), total_steps=16)
    one.load_state_dict(two.state_dict())
    fresh = Schedule(cfg, _opt(cfg), total_steps=16)
    for _ in range(4):
        fresh.after_step()
    assert one.steps_done == 4 and one.lr() == pytest.approx(fresh.lr())
    for _ in range(14):
        one.after_step()
        fresh.after_step()
        assert one.lr() == pytest.approx(fresh.lr())
