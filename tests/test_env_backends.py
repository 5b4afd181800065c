"""Issue 19, `--env-backend envpool` (ppd_mujoco.py, train_teacher.py, student_distill.py, teacher_distill.py): envpool's C++ MuJoCo envs behind the
interface of gymnasium's SyncVectorEnv, keeping what the scripts rely on:
- the same task: a fixed teacher's greedy return agrees on the two backends (HalfCheetah-v5: no terminations, so
  the return measures the dynamics rather than the luck of a fall; Hopper-v5 over 100 episodes each:
  results/env_backends.md);
- gymnasium's SAME_STEP autoreset: at the step that ends an episode, info["final_obs"] holds its last observation
  (what a truncation is bootstrapped from), the returned observation is the next episode's first, and
  info["episode"] the finished episode's return and length;
- `--distill-coef 0` is PPO: the stripped ppd_mujoco.py (tests/test_ppd_markers.py) and train_teacher.py agree bit
  for bit on envpool too;
- determinism and resume: the same seed gives the same run; envpool's env state cannot be read, so a resumed run
  starts new episodes (seeded by the step, as Atari's) instead of continuing the interrupted ones: not the
  uninterrupted run's numbers, but the same numbers every time it is resumed from the same checkpoint;
- bad input (an env envpool lacks, mass options, a pixel env) is a one-line error, before anything is written.
The gymnasium backend, the default, is what every other test runs."""

import json
import os
import shutil
import sys

import numpy as np
import pytest
import torch

import ppd_mujoco
from conftest import REPO, run_script

sys.path.insert(0, os.path.join(REPO, "benchmarks"))
from env_backends import greedy_returns  # noqa: E402  (what results/env_backends.md was made with)

TINY = ["--num-envs", "4", "--num-steps", "64", "--minibatch-size", "128", "--eval-episodes", "2", "--no-cuda"]


def test_a_teacher_scores_the_same_on_both_backends():
    teacher = os.path.join(REPO, "teachers", "HalfCheetah-v5.pt")
    gym_returns = np.array(greedy_returns(teacher, "gymnasium", 20, seed=100))
    pool_returns = np.array(greedy_returns(teacher, "envpool", 20, seed=100))
    difference = pool_returns.mean() - gym_returns.mean()
    stderr = np.sqrt(gym_returns.var(ddof=1) / 20 + pool_returns.var(ddof=1) / 20)
    assert gym_returns.mean() > 5000  # the teacher runs: the comparison is about a policy that does something
    assert abs(difference) < 3 * stderr, (gym_returns.mean(), pool_returns.mean(), stderr)
    assert abs(difference) < 0.02 * gym_returns.mean()


@pytest.mark.parametrize("backend", ["gymnasium", "envpool"])
def test_autoreset_is_same_step_with_the_final_observation_and_episode_statistics(backend):
    envs = ppd_mujoco.make_envs("Hopper-v5", 6, backend=backend)
    obs, _ = envs.reset(seed=0)
    rng = np.random.default_rng(0)
    running, lengths, ended = np.zeros(6), np.zeros(6, dtype=int), 0
    for _ in range(300):  # random actions: a Hopper falls within tens of steps
        obs, reward, terminated, truncated, info = envs.step(rng.uniform(-1, 1, (6, 3)).astype(np.float32))
        running, lengths = running + reward, lengths + 1
        done = terminated | truncated
        assert np.array_equal(info.get("_final_obs", np.zeros(6, bool)), done)
        assert np.array_equal(info.get("_episode", np.zeros(6, bool)), done)
        for i in np.flatnonzero(done):
            last, first = info["final_obs"][i], obs[i]
            assert not (0.7 < last[0] and abs(last[1]) < 0.2) or truncated[i]  # fallen: height or angle out of range
            assert abs(first[0] - 1.25) < 0.01 and np.abs(first[5:]).max() < 0.02  # a fresh start: standing, at rest
            assert info["episode"]["r"][i] == pytest.approx(running[i]) and info["episode"]["l"][i] == lengths[i]
            running[i], lengths[i], ended = 0.0, 0, ended + 1
    envs.close()
    assert ended > 20


def outcome(run_dir: str) -> tuple:
    with open(os.path.join(run_dir, "eval.json")) as f:
        evaluation = json.load(f)
    evaluation.pop("command")
    model = torch.load(os.path.join(run_dir, "model.pt"), weights_only=True)
    return evaluation, torch.cat([v.flatten() for net in ("actor", "critic") for v in model[net].values()])


def test_same_seed_same_run_and_resume_starts_new_episodes_reproducibly(tmp_path):
    flags = ["--teacher", "teachers/Hopper-v5.pt", "--env-backend", "envpool", *TINY, "--output-dir", tmp_path]
    for name in ("a", "b"):
        result = run_script("ppd_mujoco.py", *flags, "--total-timesteps", "1024", "--run-name", name)
        assert result.returncode == 0, result.stderr[-2000:]
    a, b = outcome(tmp_path / "a"), outcome(tmp_path / "b")
    assert a[0] == b[0] and torch.equal(a[1], b[1])
    # an interrupted run: the checkpoint at 512 steps of a run that then stops (as --total-timesteps 512 leaves it)
    result = run_script("ppd_mujoco.py", *flags, "--total-timesteps", "512", "--run-name", "cut")
    assert result.returncode == 0, result.stderr[-2000:]
    ckpt = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=False)
    assert ckpt["global_step"] == 512 and ckpt["train_state"]["envs"] is None  # envpool's state: out of reach
    os.remove(tmp_path / "cut" / "model.pt")
    os.remove(tmp_path / "cut" / "eval.json")
    shutil.copytree(tmp_path / "cut", tmp_path / "cut2")
    for name in ("cut", "cut2"):
        result = run_script("ppd_mujoco.py", *flags, "--total-timesteps", "1024", "--run-name", name,
                            "--resume", tmp_path / name)
        assert result.returncode == 0, result.stderr[-2000:]
        assert "resuming" in result.stdout
    c, c2 = outcome(tmp_path / "cut"), outcome(tmp_path / "cut2")
    assert c[0] == c2[0] and torch.equal(c[1], c2[1])  # resumed twice from one checkpoint: the same numbers
    assert not torch.equal(a[1], c[1])  # but new episodes: not the uninterrupted run's


def test_resume_refuses_another_backend(tmp_path):
    flags = ["--teacher", "teachers/Hopper-v5.pt", *TINY, "--total-timesteps", "256", "--output-dir", tmp_path]
    assert run_script("ppd_mujoco.py", *flags, "--run-name", "r").returncode == 0
    os.remove(tmp_path / "r" / "model.pt")
    result = run_script("ppd_mujoco.py", *flags, "--total-timesteps", "512", "--run-name", "r",
                        "--env-backend", "envpool", "--resume", tmp_path / "r")
    assert result.returncode == 2
    assert "--env-backend 'gymnasium' (now 'envpool')" in result.stderr


@pytest.mark.parametrize("script", ["student_distill.py", "teacher_distill.py"])
def test_the_baselines_on_envpool_same_seed_same_run_and_no_change_of_backend_on_resume(tmp_path, script):
    flags = ["--teacher", "teachers/Hopper-v5.pt", "--num-envs", "4", "--eval-episodes", "2", "--no-cuda"]
    flags += ["--output-dir", tmp_path, "--total-timesteps", "512"]
    for name in ("a", "b"):
        result = run_script(script, *flags, "--env-backend", "envpool", "--run-name", name)
        assert result.returncode == 0, result.stderr[-2000:]
    a, b = outcome(tmp_path / "a"), outcome(tmp_path / "b")
    assert a[0] == b[0] and torch.equal(a[1], b[1])
    assert a[0]["student"]["episodes"] == 2 and a[0]["global_step"] == 500  # 25 rollouts of 4 envs x 5 steps
    ckpt = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)
    assert ckpt["train_state"]["envs"] is None  # envpool's state: out of reach, a resumed run starts new episodes
    assert "env_backend" not in ckpt["env_config"]  # how the envs were stepped is not part of the student's env
    os.remove(tmp_path / "a" / "model.pt")
    result = run_script(script, *flags, "--total-timesteps", "1024", "--run-name", "a", "--resume", tmp_path / "a")
    assert result.returncode == 2
    assert "--env-backend 'envpool' (now 'gymnasium')" in result.stderr


@pytest.mark.parametrize("script, flags, message", [
    ("train_teacher.py", ["--env-id", "Hopper-v2"], "envpool has no Hopper-v2; use --env-backend gymnasium"),
    ("train_teacher.py", ["--env-id", "Hopper-v5", "--mass-randomization", "0.1"], "cannot change body masses"),
    ("train_teacher.py", ["--env-id", "PongNoFrameskip-v4"], "applies to the MLP domain only"),
    ("ppd_mujoco.py", ["--teacher", "teachers/Hopper-v5.pt", "--torso-mass-scale", "0.5"], "cannot change body masses"),
    ("student_distill.py", ["--teacher", "teachers/Hopper-v5.pt", "--mass-randomization", "0.1"], "cannot change body"),
    ("teacher_distill.py", ["--teacher", "teachers/Hopper-v5.pt", "--torso-mass-scale", "0.5"], "cannot change body"),
])
def test_what_envpool_cannot_do_is_a_one_line_error(tmp_path, script, flags, message):
    result = run_script(script, *flags, "--env-backend", "envpool", "--output-dir", tmp_path, "--run-name", "x")
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not os.path.exists(tmp_path / "x")
