"""Issue 15: every numeric flag of every script is checked against its range before anything is written (one line
on stderr, exit 2, no run folder), and an Atari game that cannot end is cut at --eval-max-frames, counted in eval.json
and shown in the evaluation's progress bar."""

import dataclasses
import json
import math
import re
import typing

import pytest
import torch

import ppd_atari
import ppd_mujoco
import ppd_procgen
import student_distill
import teacher_distill
import train_teacher
from conftest import run_script

MODULES = [train_teacher, ppd_mujoco, ppd_atari, ppd_procgen, student_distill, teacher_distill]
OWN_CHECKS = {"distill_coef", "teacher_return", "teacher_weight"}  # PPD flags with checks of their own (and tests)
BAD = {">= 0": [-1], ">= 1": [0], "> 0": [0, -0.001], "in [0, 1]": [-0.1, 1.5], "in [0, 1)": [-0.1, 1.0]}


def numeric_flags(module) -> dict:
    """{flag: int or float} for every numeric field of the script's Args (Optional and tuples included)."""
    hints = typing.get_type_hints(module.Args)
    out = {}
    for field in dataclasses.fields(module.Args):
        kinds = set(typing.get_args(hints[field.name]) or (hints[field.name],))
        if float in kinds or int in kinds:
            out[field.name] = float if float in kinds else int
    return out


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_every_numeric_flag_has_a_range(module):
    assert set(numeric_flags(module)) - OWN_CHECKS == set(module.FLAG_RANGES)
    assert set(module.FLAG_RANGES.values()) <= set(module.RULES)


CASES = [(module, name, rule, bad) for module in MODULES for name, rule in module.FLAG_RANGES.items()
         for bad in BAD[rule] + ([math.nan, math.inf] if numeric_flags(module)[name] is float else [])
         if not (numeric_flags(module)[name] is int and bad != int(bad))]


@pytest.mark.parametrize("module,name,rule,bad", CASES, ids=[f"{m.__name__}-{n}={b}" for m, n, _, b in CASES])
def test_a_value_out_of_range_is_a_one_line_error_and_nothing_is_written(module, name, rule, bad, tmp_path, capsys):
    args = module.Args(output_dir=str(tmp_path / "out"), run_name="run")
    setattr(args, name, bad)
    with pytest.raises(SystemExit) as e:
        module.main(args)
    assert e.value.code == 2
    assert capsys.readouterr().err.splitlines() == [f"error: --{name.replace('_', '-')} must be {rule}, got {bad}"]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("script,flags,message", [  # the values issue 15 tried, as a user types them
    ("train_teacher.py", ["--env-id", "CartPole-v1", "--gamma", "1.5"], "--gamma must be in [0, 1], got 1.5"),
    ("train_teacher.py", ["--env-id", "CartPole-v1", "--clip-coef", "-0.2"], "--clip-coef must be > 0, got -0.2"),
    ("ppd_mujoco.py", ["--teacher-noise-std", "-1"], "--teacher-noise-std must be >= 0, got -1.0"),
    ("student_distill.py", ["--learning-rate", "nan"], "--learning-rate must be > 0, got nan"),
    ("teacher_distill.py", ["--learning-rate", "-0.001"], "--learning-rate must be > 0, got -0.001"),
])
def test_the_values_of_the_issue_are_refused_from_the_command_line(script, flags, message, tmp_path):
    result = run_script(script, *flags, "--output-dir", tmp_path / "out")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"error: {message}"]
    assert not (tmp_path / "out").exists()


class Noop(torch.nn.Module):
    """Always NOOP (action 0): on Breakout the ball is served once at the start (FIRE reset) and never again after
    the first lost life, so the game goes on until the frame cap."""

    continuous = False

    def forward(self, obs):
        logits = torch.full((obs.shape[0], 4), -10.0)
        logits[:, 0] = 0.0
        return torch.distributions.Categorical(logits=logits)


EVALUATE = {  # each Atari script's evaluate(), 3 games of Breakout cut at 2000 frames (500 steps at frame skip 4)
    "train_teacher": lambda: train_teacher.evaluate(
        Noop(), train_teacher.Args(env_id="BreakoutNoFrameskip-v4", eval_max_frames=2000), "atari", 3, 1, "cpu"),
    "ppd_atari": lambda: ppd_atari.evaluate(Noop(), "BreakoutNoFrameskip-v4", 4, 3, 1, "cpu", max_frames=2000),
    "student_distill": lambda: student_distill.evaluate(
        Noop(), "BreakoutNoFrameskip-v4", "atari", {"frame_skip": 4}, 3, 1, "cpu", max_frames=2000),
    "teacher_distill": lambda: teacher_distill.evaluate(
        Noop(), "BreakoutNoFrameskip-v4", "atari", {"frame_skip": 4}, 3, 1, "cpu", max_frames=2000),
}


@pytest.mark.parametrize("script", list(EVALUATE))
def test_a_game_that_never_ends_is_cut_at_the_frame_cap_counted_and_shown(script, capsys):
    returns, truncated = EVALUATE[script]()
    assert len(returns) == 3 and truncated == 3
    err = capsys.readouterr().err
    shown = [int(s) for s in re.findall(r"steps=(\d+)", err)]  # redrawn every 0.1 s while the games go on
    assert "evaluation" in err and len(shown) >= 2 and shown == sorted(shown) and max(shown) <= 3 * 500, err[-500:]
    summary = train_teacher.eval_summary(returns, truncated)
    assert summary["truncated_episodes"] == 3 and summary["episodes"] == 3


def test_a_short_atari_run_finishes_and_eval_json_counts_the_cut_games(tmp_path):
    # issue 15's run, which sat in its final evaluation for minutes, with a cap a short check can afford
    result = run_script("train_teacher.py", "--env-id", "BreakoutNoFrameskip-v4", "--total-timesteps", "128",
                        "--num-envs", "4", "--num-steps", "32", "--minibatch-size", "64", "--arch", "smaller",
                        "--eval-episodes", "3", "--eval-max-frames", "2000", "--no-cuda", "--output-dir", tmp_path,
                        "--run-name", "r", timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    evaluation = json.load(open(tmp_path / "r" / "eval.json"))
    assert evaluation["episodes"] == 3 and 0 <= evaluation["truncated_episodes"] <= 3
    assert "evaluation" in result.stderr
