"""Issue 7 on Procgen (CPU): exact resume. A run SIGKILLed after its first checkpoint and resumed with --resume ends
with exactly the parameters and eval.json (all but the command line) of the uninterrupted run, for train_teacher.py
(procgen domain), ppd_procgen.py and student_distill.py (procgen domain). The checkpoint holds procgen's own state of
each env (gym3 get_state: game, level, level RNG), the adapter's episode counters and the last observations; the
first test checks that restoring them gives the very same future steps, in every script's ProcgenVecEnv.

CoinRun, Nature-CNN networks, 2 envs x 16 steps, 384 steps, a checkpoint per rollout, 1 evaluation episode per level
set; a tiny untrained teacher for the distillation scripts. The whole file: about 2 minutes on 2 busy cores.
"""

import io
import json
import os
import random
import time

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import run_script, start_script

import ppd_procgen
import student_distill
import teacher_distill
import train_teacher as tt

ENV_ID = "procgen:coinrun"
TOTAL = 768  # 24 rollouts, each followed by a checkpoint: student_distill.py trains 12 of them in 0.6 s on a quiet machine
TINY = ["--num-envs", "2", "--num-steps", "16", "--total-timesteps", str(TOTAL), "--checkpoint-every", "32",
        "--eval-episodes", "1", "--no-cuda"]
SCRIPTS = {  # script: its flags besides TINY ({teacher}: the tiny teacher's path)
    "train_teacher.py": ["--env-id", ENV_ID, "--arch", "smaller", "--minibatch-size", "16"],
    "ppd_procgen.py": ["--teacher", "{teacher}", "--student-arch", "smaller", "--minibatch-size", "16"],
    "student_distill.py": ["--teacher", "{teacher}", "--student-arch", "smaller"],
}


def test_procgen_state_restores_the_future_steps_exactly_in_every_script():
    """After 200 steps, the state goes into fresh envs (the original seed; for train_teacher also another one: the
    state alone decides); then 1000 more steps with the same random actions give the same frames, rewards, episode
    ends and episode statistics, across episode ends (new levels drawn by the restored level RNG)."""
    for module in (tt, ppd_procgen, student_distill, teacher_distill):
        rng = np.random.default_rng(0)
        original = module.ProcgenVecEnv("coinrun", 2, seed=3)
        obs, _ = original.reset()
        for _ in range(200):
            obs, *_ = original.step(rng.integers(0, 15, 2))
        saved = original.get_state(obs)
        saved = torch.load(_roundtrip(saved), weights_only=True)  # as a checkpoint holds it
        copies = [module.ProcgenVecEnv("coinrun", 2, seed=seed) for seed in ((3, 99) if module is tt else (3,))]
        for copy in copies:
            copy.reset()
            np.testing.assert_array_equal(copy.set_state(saved), obs)
        episodes = 0
        for t in range(1000):
            actions = rng.integers(0, 15, 2)
            expected = original.step(actions)
            episodes += expected[2].sum()
            for copy in copies:
                got = copy.step(actions)
                for a, b in zip(expected[:4], got[:4]):
                    np.testing.assert_array_equal(a, b, err_msg=f"{module.__name__}, step {t}")
                for key in ("r", "l"):
                    np.testing.assert_array_equal(expected[4]["episode"][key], got[4]["episode"][key])
                np.testing.assert_array_equal(expected[4]["_episode"], got[4]["_episode"])
        assert episodes >= 1, "no episode ended: the level RNG after an episode end went unchecked"
        for env in (original, *copies):
            env.close()


def _roundtrip(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return buffer


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """An untrained Nature-CNN CoinRun agent in train_teacher.py's checkpoint format (as tests/test_ppd_pixels.py)."""
    path = str(tmp_path_factory.mktemp("teacher") / "teacher.pt")
    action_space, obs_shape = gym.spaces.Discrete(15), (3, 64, 64)
    torch.manual_seed(12345)
    agent = tt.Agent("procgen", tt.ARCHS["procgen"]["smaller"], obs_shape, action_space)
    args = tt.Args(env_id=ENV_ID, arch="smaller")
    tt.atomic_save(tt.model_dict(agent, "procgen", args, obs_shape, action_space, None, 0), path)
    return path


def flags(script: str, teacher: str, out, name: str) -> list:
    return [f.format(teacher=teacher) for f in SCRIPTS[script]] + TINY + ["--output-dir", str(out), "--run-name", name]


def outcome(run_dir: str) -> tuple:
    """(eval.json without the command line, every parameter of the final model)."""
    with open(os.path.join(run_dir, "eval.json")) as f:
        evaluation = json.load(f)
    evaluation.pop("command")
    model = torch.load(os.path.join(run_dir, "model.pt"), weights_only=True)
    return evaluation, {f"{net}.{k}": v for net in ("actor", "critic") for k, v in model[net].items()}


@pytest.mark.parametrize("script", list(SCRIPTS))
def test_procgen_run_killed_after_a_checkpoint_resumes_exactly(script, teacher, tmp_path):
    reference = start_script(script, *flags(script, teacher, tmp_path, "reference"))  # alongside the killed run

    run_dir = os.path.join(tmp_path, "killed")
    proc = start_script(script, *flags(script, teacher, tmp_path, "killed"))
    deadline = time.time() + 120
    while not os.path.exists(os.path.join(run_dir, "checkpoint.pt")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    delay = random.uniform(0.0, 0.4)  # well inside the ~1.2 s of training the fastest script has left
    time.sleep(delay)
    proc.kill()
    _, stderr = proc.communicate()
    assert proc.returncode != 0, (f"{script} finished before it was killed ({delay:.2f} s after its first checkpoint; a "
                                  "machine much faster than expected): raise --total-timesteps so that the kill lands in training")
    assert os.path.exists(os.path.join(run_dir, "checkpoint.pt")), stderr[-2000:]
    killed_at = torch.load(os.path.join(run_dir, "checkpoint.pt"), weights_only=True)
    assert killed_at["global_step"] < TOTAL, (f"killed {delay:.2f} s after the first checkpoint, {script} had already "
                                            "finished training: raise --total-timesteps so that the kill lands in training")
    assert killed_at["train_state"]["envs"]["procgen"], "the checkpoint lacks the envs' state"
    resumed = run_script(script, *flags(script, teacher, tmp_path, "killed"), "--resume", run_dir)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming {run_dir} at step {killed_at['global_step']}" in resumed.stdout
    _, stderr = reference.communicate(timeout=120)
    assert reference.returncode == 0, stderr[-2000:]

    (expected_eval, expected), (got_eval, got) = outcome(os.path.join(tmp_path, "reference")), outcome(run_dir)
    assert got_eval == expected_eval
    assert got.keys() == expected.keys()
    for k in expected:
        assert torch.equal(got[k], expected[k]), k
