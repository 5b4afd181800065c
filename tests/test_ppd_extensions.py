"""ppd_mujoco.py, issue 9 parts 2 and 3: several teachers (a weighted sum of their PPD terms, each teacher on its own
observation normalization) and a distillation coefficient lambda that follows a schedule (linear, cosine, or adaptive:
zero once the student's returns reach the teacher's)."""

import json
import math
import os

import numpy as np
import pytest
import torch

import ppd_mujoco
from conftest import REPO, run_script

CARTPOLE_TEACHER = os.path.join(REPO, "teachers", "CartPole-v1.pt")
TINY = ["--num-envs", "2", "--num-steps", "32", "--minibatch-size", "32", "--total-timesteps", "192", "--eval-episodes", "2",
        "--no-cuda"]


def scalars(run_dir) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def parameters(run_dir) -> dict:
    model = torch.load(os.path.join(run_dir, "model.pt"), weights_only=True)
    return {f"{net}.{k}": v for net in ("actor", "critic") for k, v in model[net].items()}


def constant_teacher(path, preferred: int, logit: float = 5.0) -> str:
    """The CartPole teacher with its actor's last layer overwritten: logits +logit for `preferred`, -logit for the
    other action, whatever the state."""
    ckpt = torch.load(CARTPOLE_TEACHER, weights_only=True)
    actor = dict(ckpt["actor"])
    actor["body.4.weight"] = torch.zeros_like(actor["body.4.weight"])
    actor["body.4.bias"] = torch.full_like(actor["body.4.bias"], -logit)
    actor["body.4.bias"][preferred] = logit
    torch.save({**ckpt, "actor": actor}, path)
    return str(path)


# ---- lambda schedules -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("schedule, step, expected", [
    ("constant", 0, 2.0), ("constant", 500, 2.0), ("constant", 1000, 2.0),
    ("linear", 0, 2.0), ("linear", 250, 1.5), ("linear", 500, 1.0), ("linear", 1000, 0.0),
    ("cosine", 0, 2.0), ("cosine", 500, 1.0), ("cosine", 1000, 0.0),
    ("cosine", 250, 1.0 + math.sqrt(0.5)),  # 2 * (1 + cos(pi / 4)) / 2: slower than linear at first
])
def test_time_schedules_give_lambda_at_chosen_steps(schedule, step, expected):
    got = ppd_mujoco.distill_coef_at(schedule, 2.0, step, 1000, recent_student_return=123.0, teacher_return=456.0)
    assert got == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("student, expected", [(0.0, 2.0), (-50.0, 2.0), (100.0, 1.0), (150.0, 0.5), (200.0, 0.0),
                                               (300.0, 0.0)])
def test_adaptive_lambda_is_the_students_shortfall_relative_to_the_teacher(student, expected):
    # teacher 200: a student at 0 (or worse) gets all of lambda, at 100 half, at or above the teacher none
    for step in (0, 700):  # does not depend on the step
        assert ppd_mujoco.distill_coef_at("adaptive", 2.0, step, 1000, student, 200.0) == pytest.approx(expected)


def test_adaptive_lambda_is_the_coefficient_before_the_first_episode_and_works_for_negative_returns():
    assert ppd_mujoco.distill_coef_at("adaptive", 2.0, 0, 1000, None, 200.0) == 2.0
    # a negative teacher return (e.g. Pendulum): the shortfall is still measured in units of |R_teacher|
    assert ppd_mujoco.distill_coef_at("adaptive", 1.0, 0, 1000, -300.0, -100.0) == 1.0
    assert ppd_mujoco.distill_coef_at("adaptive", 1.0, 0, 1000, -150.0, -100.0) == pytest.approx(0.5)
    assert ppd_mujoco.distill_coef_at("adaptive", 1.0, 0, 1000, -50.0, -100.0) == 0.0


def test_linear_lambda_is_recomputed_and_logged_every_update(tmp_path):
    result = run_script("ppd_mujoco.py", "--teacher", CARTPOLE_TEACHER, *TINY, "--total-timesteps", "320",
                        "--distill-coef", "2", "--distill-coef-schedule", "linear", "--output-dir", tmp_path, "--run-name", "lin")
    assert result.returncode == 0, result.stderr[-2000:]
    logged = scalars(tmp_path / "lin")["distill/lambda"]
    # logged at the end of each rollout of 64 steps, computed from the step count at its start
    assert [s for s, _ in logged] == [64, 128, 192, 256, 320]
    assert [v for _, v in logged] == pytest.approx([2.0 * (1 - (s - 64) / 320) for s, _ in logged])
    assert json.load(open(tmp_path / "lin" / "eval.json"))["distill_coef_schedule"] == "linear"


def test_adaptive_run_takes_the_teachers_return_from_its_checkpoint_and_lambda_follows_the_students_returns(tmp_path):
    teacher = torch.load(CARTPOLE_TEACHER, weights_only=True)
    teacher["eval"] = {**teacher["eval"], "mean_return": 40.0}  # a teacher said to be worth 40: students soon match it
    torch.save(teacher, tmp_path / "t.pt")
    result = run_script("ppd_mujoco.py", "--teacher", tmp_path / "t.pt", *TINY, "--total-timesteps", "640",
                        "--distill-coef-schedule", "adaptive", "--output-dir", tmp_path, "--run-name", "ad")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "measuring" not in result.stdout  # the checkpoint's score is used, no evaluation at the start
    evaluation = json.load(open(tmp_path / "ad" / "eval.json"))
    assert evaluation["teacher_reference_return"] == 40.0
    logs = scalars(tmp_path / "ad")
    episodes = logs["charts/episodic_return"]
    for step, value in logs["distill/lambda"]:  # lambda of the update that ended at `step`: episodes up to its start
        recent = [r for s, r in episodes if s <= step - 64][-20:]
        expected = ppd_mujoco.distill_coef_at("adaptive", 1.0, 0, 1, float(np.mean(recent)) if recent else None, 40.0)
        assert value == pytest.approx(expected, abs=1e-6), step
    assert logs["distill/lambda"][0][1] == 1.0 and min(v for _, v in logs["distill/lambda"]) < 1.0


def test_adaptive_reference_of_a_noisy_teacher_is_measured_and_a_resumed_run_reuses_it(tmp_path):
    common = ["--teacher", CARTPOLE_TEACHER, *TINY, "--teacher-noise-std", "0.3", "--distill-coef-schedule", "adaptive",
              "--output-dir", tmp_path]
    whole = run_script("ppd_mujoco.py", *common, "--total-timesteps", "640", "--run-name", "whole")
    assert whole.returncode == 0, whole.stderr[-2000:]
    assert "measuring" in whole.stdout
    evaluation = json.load(open(tmp_path / "whole" / "eval.json"))
    # the noisy teacher's own return, not the clean checkpoint's 500: the start evaluation uses the final one's
    # seeds, so with 2 evaluation episodes both measure the very same episodes
    assert evaluation["teacher_reference_return"] == evaluation["teacher"]["mean_return"] != 500.0
    assert evaluation["teacher_clean"]["mean_return"] == 500.0
    # an interrupted run (here: one that stopped at 320 steps) continues with the reference it had, not a new one
    part = run_script("ppd_mujoco.py", *common, "--total-timesteps", "320", "--run-name", "part")
    assert part.returncode == 0, part.stderr[-2000:]
    saved = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)["train_state"]["teacher_return"]
    assert saved == evaluation["teacher_reference_return"]
    resumed = run_script("ppd_mujoco.py", *common, "--total-timesteps", "640", "--run-name", "part",
                         "--resume", tmp_path / "part")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming" in resumed.stdout and "measuring" not in resumed.stdout
    a, b = parameters(tmp_path / "whole"), parameters(tmp_path / "part")
    assert all(torch.equal(a[k], b[k]) for k in a)


# ---- several teachers -------------------------------------------------------------------------------------------------
def test_teacher_weights_are_normalized_and_default_to_equal():
    assert ppd_mujoco.teacher_weights((), 1) == (1.0,)
    assert ppd_mujoco.teacher_weights((), 4) == (0.25,) * 4
    assert ppd_mujoco.teacher_weights((3, 1), 2) == (0.75, 0.25)
    assert ppd_mujoco.teacher_weights((0, 2), 2) == (0.0, 1.0)


@pytest.mark.parametrize("flags, message", [
    (["--teacher-weight", "0.5"], "--teacher-weight was given 1 time(s) for 2 teacher(s)"),
    (["--teacher-weight", "1", "--teacher-weight", "1", "--teacher-weight", "1"], "given 3 time(s) for 2"),
    (["--teacher-weight", "1", "--teacher-weight", "-0.5"], "must be finite, >= 0 and not all 0"),
    (["--teacher-weight", "0", "--teacher-weight", "0"], "must be finite, >= 0 and not all 0"),
    (["--teacher", "teachers/Hopper-v5.pt"], "was trained on Hopper-v5, not CartPole-v1"),  # a third teacher, other env
])
def test_bad_teacher_lists_are_one_line_errors_before_anything_is_written(tmp_path, flags, message):
    result = run_script("ppd_mujoco.py", "--teacher", CARTPOLE_TEACHER, "--teacher", CARTPOLE_TEACHER, *flags,
                        "--output-dir", tmp_path / "out")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.stderr
    assert not (tmp_path / "out").exists()


def test_help_shows_teacher_flags_as_repeatable_and_the_schedules():
    result = run_script("ppd_mujoco.py", "--help")
    assert result.returncode == 0
    text = " ".join(word for word in result.stdout.split() if word != "│")  # the help box's wrapped lines, joined
    assert "--teacher STR" in text and "(default: teachers/Hopper-v5.pt) (repeatable)" in text
    assert "--teacher-weight FLOAT" in text and "{constant,linear,cosine,adaptive}" in text
    assert "noisy teacher" in text  # --teacher-return says whose return a noisy teacher's reference is


def test_two_copies_of_one_teacher_with_equal_weights_train_bit_identically_to_that_teacher_alone(tmp_path):
    # 0.5 * KL + 0.5 * KL == KL exactly in floating point: the weighted sum must reduce to the single-teacher loss
    one = run_script("ppd_mujoco.py", "--teacher", CARTPOLE_TEACHER, *TINY, "--output-dir", tmp_path, "--run-name", "one")
    two = run_script("ppd_mujoco.py", "--teacher", CARTPOLE_TEACHER, "--teacher", CARTPOLE_TEACHER, *TINY,
                     "--output-dir", tmp_path, "--run-name", "two")
    assert one.returncode == 0 and two.returncode == 0, one.stderr[-2000:] + two.stderr[-2000:]
    a, b = parameters(tmp_path / "one"), parameters(tmp_path / "two")
    assert all(torch.equal(a[k], b[k]) for k in a)
    logs = scalars(tmp_path / "two")
    assert logs["distill/kl"] == logs["distill/kl_teacher0"] == logs["distill/kl_teacher1"]
    assert json.load(open(tmp_path / "two" / "eval.json"))["teacher_weights"] == [0.5, 0.5]


def test_two_teachers_pull_the_student_to_their_weighted_mixture(tmp_path):
    """Teacher A always prefers action 0, teacher B action 1. With forward KL, sum_k w_k KL(p_k || q) =
    sum_k w_k KL(p_k || m) + KL(m || q) with m = sum_k w_k p_k, so the term is smallest where the student q = m:
    P(action 0) = 0.75 for weights 0.75 / 0.25. lambda 50 makes the PPO term negligible beside it."""
    a, b = constant_teacher(tmp_path / "a.pt", 0), constant_teacher(tmp_path / "b.pt", 1)
    result = run_script("ppd_mujoco.py", "--teacher", a, "--teacher-weight", "3", "--teacher", b, "--teacher-weight", "1",
                        "--distill-coef", "50", "--num-envs", "2", "--num-steps", "32", "--minibatch-size", "64",
                        "--total-timesteps", "1280", "--eval-episodes", "2", "--no-cuda", "--output-dir", tmp_path,
                        "--run-name", "mix")
    assert result.returncode == 0, result.stderr[-2000:]
    evaluation = json.load(open(tmp_path / "mix" / "eval.json"))
    assert evaluation["teacher_checkpoints"] == [a, b] and evaluation["teacher_weights"] == [0.75, 0.25]
    assert len(evaluation["teachers"]) == 2 and evaluation["teacher"] == evaluation["teachers"][0]
    assert all(t["episodes"] == 2 for t in evaluation["teachers"])

    logs = scalars(tmp_path / "mix")
    kl, kl_a, kl_b = (logs[t][-1][1] for t in ("distill/kl", "distill/kl_teacher0", "distill/kl_teacher1"))
    assert kl == pytest.approx(0.75 * kl_a + 0.25 * kl_b, rel=1e-5)  # the logged KL is the weighted one
    logits_a, logits_b = torch.tensor([[5.0, -5.0]]), torch.tensor([[-5.0, 5.0]])
    mixture = (0.75 * logits_a.softmax(-1) + 0.25 * logits_b.softmax(-1)).log()
    minimum = (0.75 * ppd_mujoco.kl_divergence((logits_a,), (mixture,)) + 0.25 * ppd_mujoco.kl_divergence((logits_b,), (mixture,))).item()
    assert minimum == pytest.approx(0.5623, abs=1e-3)  # the entropy of (0.75, 0.25), as the teachers are near one-hot
    assert minimum <= kl < minimum + 0.02  # mean KL(m || student) over the training states below 0.02
    # KL(p_A || q) ~ -log q(0): the student's action-0 probability on its own states is about 0.75
    assert 0.7 < math.exp(-kl_a) < 0.8 and 0.2 < math.exp(-kl_b) < 0.3


def test_each_teacher_sees_observations_normalized_by_its_own_statistics(tmp_path):
    """Teacher B is the CartPole teacher with its normalization mean moved by half a std and its first layer's bias
    moved to compensate: the same policy on raw observations, a different one on the first teacher's normalization."""
    ckpt = torch.load(CARTPOLE_TEACHER, weights_only=True)
    std = torch.sqrt(ckpt["obs_rms"]["var"] + 1e-8)
    shift = 0.5 * std
    moved = {**ckpt, "obs_rms": {**ckpt["obs_rms"], "mean": ckpt["obs_rms"]["mean"] + shift},
             "actor": dict(ckpt["actor"])}
    w = ckpt["actor"]["body.0.weight"].double()
    moved["actor"]["body.0.bias"] = (ckpt["actor"]["body.0.bias"].double() + w @ (shift / std)).float()
    torch.save(moved, tmp_path / "moved.pt")

    states = np.random.default_rng(0).normal(ckpt["obs_rms"]["mean"].numpy(), std.numpy(), (256, 4))
    actor_a = ppd_mujoco.agent_from_checkpoint(ckpt).actor
    actor_b = ppd_mujoco.agent_from_checkpoint(moved).actor
    rms_a = ppd_mujoco.RunningMeanStd((4,)).load_state_dict(ckpt["obs_rms"])
    rms_b = ppd_mujoco.RunningMeanStd((4,)).load_state_dict(moved["obs_rms"])
    with torch.no_grad():
        logits_a = actor_a(torch.as_tensor(rms_a.normalize(states))).logits
        torch.testing.assert_close(actor_b(torch.as_tensor(rms_b.normalize(states))).logits, logits_a, rtol=1e-4, atol=1e-4)
        assert (actor_b(torch.as_tensor(rms_a.normalize(states))).logits - logits_a).abs().max() > 0.5  # the test can fail

    result = run_script("ppd_mujoco.py", "--teacher", CARTPOLE_TEACHER, "--teacher", tmp_path / "moved.pt", *TINY,
                        "--output-dir", tmp_path, "--run-name", "norm")
    assert result.returncode == 0, result.stderr[-2000:]
    logs = scalars(tmp_path / "norm")
    for (_, kl_a), (_, kl_b) in zip(logs["distill/kl_teacher0"], logs["distill/kl_teacher1"], strict=True):
        assert kl_b == pytest.approx(kl_a, rel=1e-3)
    teachers = json.load(open(tmp_path / "norm" / "eval.json"))["teachers"]
    assert teachers[0]["returns"] == teachers[1]["returns"]  # evaluated on its own normalization too
