"""ppd_atari.py and ppd_procgen.py, issue 9 parts 2 and 3 as in ppd_mujoco.py (tests/test_ppd_extensions.py has the
behaviour in depth): several teachers, whose PPD terms are summed with their weights and logged one by one, and lambda
schedules, logged every update. About 60 s here."""

import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import run_script
from test_ppd_pixels import DOMAINS, ROLLOUT, TINY, assert_refused, scalars

import ppd_atari
import ppd_mujoco
import ppd_procgen
import train_teacher as tt

MODULES = pytest.mark.parametrize("module", [ppd_atari, ppd_procgen], ids=["atari", "procgen"])


def tiny_teacher(domain: str, path, seed: int, **teacher_args) -> str:
    """An untrained Nature-CNN agent in train_teacher.py's checkpoint format; `seed` makes teachers that differ."""
    d = DOMAINS[domain]
    action_space = gym.spaces.Discrete(d["actions"])
    torch.manual_seed(seed)
    agent = tt.Agent(domain, tt.ARCHS[domain]["smaller"], d["obs_shape"], action_space)
    with torch.no_grad():  # a head of real size, so that two teachers' policies, and their KLs, differ clearly
        agent.actor.body.head.weight.mul_(100.0)
    args = tt.Args(env_id=d["env_id"], arch="smaller", **{**d["teacher_args"], **teacher_args})
    tt.atomic_save(tt.model_dict(agent, domain, args, d["obs_shape"], action_space, None, 0), str(path))
    return str(path)


@MODULES
def test_schedules_and_weights_are_those_of_ppd_mujoco(module):
    for schedule in ("constant", "linear", "cosine", "adaptive"):
        for step in (0, 100, 250, 999, 1000):
            for student in (None, -50.0, 0.0, 100.0, 150.0, 250.0):
                args = (schedule, 2.0, step, 1000, student, 200.0)
                assert module.distill_coef_at(*args) == ppd_mujoco.distill_coef_at(*args), args
    for weights, n in (((), 1), ((), 3), ((3, 1), 2), ((0, 2), 2)):
        assert module.teacher_weights(weights, n) == ppd_mujoco.teacher_weights(weights, n)


@pytest.mark.parametrize("domain", ["atari", "procgen"])
def test_two_teachers_kl_is_their_weighted_sum_and_lambda_follows_the_linear_schedule(domain, tmp_path):
    d = DOMAINS[domain]
    a, b = tiny_teacher(domain, tmp_path / "a.pt", 1), tiny_teacher(domain, tmp_path / "b.pt", 2)
    result = run_script(d["script"], "--teacher", a, "--teacher", b, "--teacher-weight", "3", "--teacher-weight", "1",
                        "--distill-coef", "2", "--distill-coef-schedule", "linear", "--student-arch", "smaller", *TINY,
                        "--total-timesteps", 2 * ROLLOUT, "--output-dir", tmp_path, "--run-name", "run", timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    run = tmp_path / "run"
    # lambda of the update logged at the end of each rollout, computed from the step count at its start
    assert scalars(run, "distill/lambda") == [(ROLLOUT, 2.0), (2 * ROLLOUT, 1.0)]
    kl, kl0, kl1 = (np.array([v for _, v in scalars(run, tag)]) for tag in ("distill/kl", "distill/kl_teacher0", "distill/kl_teacher1"))
    assert len(kl) == 2 and np.allclose(kl, 0.75 * kl0 + 0.25 * kl1, rtol=1e-5)
    assert np.max(np.abs(kl0 - kl1)) > 0.1 * np.max(kl)  # two different teachers: the weights matter
    evaluation = json.loads((run / "eval.json").read_text())
    assert evaluation["teacher_weights"] == [0.75, 0.25] and evaluation["distill_coef_schedule"] == "linear"
    assert evaluation["teacher_checkpoints"] == [a, b] and evaluation["teacher_checkpoint"] == a
    blocks = [evaluation] if domain == "atari" else [evaluation["test_levels"], evaluation["train_levels"]]
    for block in blocks:
        assert len(block["teachers"]) == 2 and block["teacher"] == block["teachers"][0]
    assert "teacher 1 (weight 0.25)" in result.stdout
    if domain == "atari":  # the scheduled lambda is the one in the loss: with lambda 2 throughout, the first update
        # (lambda 2 in both runs) is the same and the second (lambda 1 above) is not
        constant = run_script(d["script"], "--teacher", a, "--teacher", b, "--teacher-weight", "3", "--teacher-weight", "1",
                              "--distill-coef", "2", "--student-arch", "smaller", *TINY, "--total-timesteps", 2 * ROLLOUT,
                              "--output-dir", tmp_path, "--run-name", "constant", timeout=300)
        assert constant.returncode == 0, constant.stderr[-2000:]
        assert scalars(tmp_path / "constant", "distill/lambda") == [(ROLLOUT, 2.0), (2 * ROLLOUT, 2.0)]
        first, second = scalars(tmp_path / "constant", "distill/kl"), scalars(run, "distill/kl")
        assert first[0] == second[0] and first[1] != second[1]


def test_two_copies_of_one_teacher_train_bit_identically_to_that_teacher_alone(tmp_path):
    d = DOMAINS["atari"]
    teacher = tiny_teacher("atari", tmp_path / "t.pt", 1)
    common = ["--student-arch", "smaller", *TINY, "--total-timesteps", 2 * ROLLOUT, "--output-dir", tmp_path]
    one = run_script(d["script"], "--teacher", teacher, *common, "--run-name", "one")
    two = run_script(d["script"], "--teacher", teacher, "--teacher", teacher, *common, "--run-name", "two")
    assert one.returncode == 0 and two.returncode == 0, one.stderr[-2000:] + two.stderr[-2000:]
    a, b = (torch.load(tmp_path / name / "model.pt", weights_only=True)["actor"] for name in ("one", "two"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_adaptive_reference_is_measured_on_the_teachers_games_when_its_checkpoint_has_no_score(tmp_path):
    d = DOMAINS["atari"]
    teacher = tiny_teacher("atari", tmp_path / "t.pt", 1)  # no evaluation in the checkpoint
    result = run_script(d["script"], "--teacher", teacher, "--distill-coef-schedule", "adaptive", "--student-arch", "smaller",
                        *TINY, "--total-timesteps", 2 * ROLLOUT, "--output-dir", tmp_path, "--run-name", "run", timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "measuring the teacher's return" in result.stdout
    evaluation = json.loads((tmp_path / "run" / "eval.json").read_text())
    # the start evaluation uses the final one's seed and greedy actions: with 1 game both play the very same game
    assert evaluation["teacher_reference_return"] == evaluation["teacher"]["mean_return"]
    saved = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["train_state"]
    assert saved["teacher_return"] == evaluation["teacher_reference_return"]
    # no full game ends in 2 tiny rollouts: lambda stays --distill-coef
    assert [v for _, v in scalars(tmp_path / "run", "distill/lambda")] == [1.0, 1.0]


@pytest.mark.parametrize("domain, second, flags, words", [
    ("atari", {}, ["--teacher-weight", "1"], ["--teacher-weight was given 1 time(s) for 2 teacher(s)"]),
    ("procgen", {}, ["--teacher-weight", "1", "--teacher-weight", "-1"], ["must be finite, >= 0 and not all 0"]),
    ("atari", {"frame_skip": 4}, [], ["frame skip 4", "first teacher with 3"]),
    ("procgen", {"procgen_start_level": 0}, [], ["was trained on levels [0, 50, 'easy']", "same levels"]),
])
def test_bad_teacher_lists_are_one_line_errors_before_anything_is_written(domain, second, flags, words, tmp_path):
    d = DOMAINS[domain]
    a, b = tiny_teacher(domain, tmp_path / "a.pt", 1), tiny_teacher(domain, tmp_path / "b.pt", 2, **second)
    result = run_script(d["script"], "--teacher", a, "--teacher", b, *flags, "--output-dir", tmp_path / "out")
    assert_refused(result, *words)
    assert not (tmp_path / "out").exists()


def test_procgen_refuses_a_foreign_teacher_file_with_one_line_naming_the_converter(tmp_path):
    path = tmp_path / "agent.cleanrl_model"
    path.write_bytes(b"anything")
    result = run_script("ppd_procgen.py", "--teacher", path, "--output-dir", tmp_path / "out")
    assert_refused(result, f"error: '{path}' is a Stable-Baselines3 / CleanRL file; convert it first: python -m "
                   f"ppd_tools.convert_teacher {path} --env-id <env> --output teacher.pt")
    assert not (tmp_path / "out").exists()
