"""student_distill.py and teacher_distill.py in the MLP domain: exact resume (a run killed with SIGKILL and resumed
with --resume ends bit-identical to an uninterrupted one) and the seed report's mass-randomized Hopper as an option
of the training envs (evaluation always in the unmodified env).

All runs start from the shipped Hopper teacher (teachers/Hopper-v5.pt) with a budget of 10 rollouts; each resume test
takes about 20-30 s on 2 busy cores, most of it importing torch in the subprocesses and evaluating the teacher.
"""

import json
import os
import random
import signal
import time

import numpy as np
import pytest
import torch
from conftest import REPO, run_script, start_script

import student_distill as sd
import teacher_distill as td

HOPPER_TEACHER = os.path.join(REPO, "teachers", "Hopper-v5.pt")
MODULES = {"student_distill.py": sd, "teacher_distill.py": td}
TINY = ["--teacher", HOPPER_TEACHER, "--num-envs", 4, "--num-steps", 64, "--total-timesteps", 2560,
        "--checkpoint-every", 256, "--eval-episodes", 2, "--no-cuda"]
MASS = ["--torso-mass-scale", 0.7, "--mass-randomization", 0.3]


def one_line_error(capsys, call) -> str:
    with pytest.raises(SystemExit) as refused:
        call()
    assert refused.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    return lines[0]


# ----------------------------------------------------------------------------------------------------
# 1. exact resume: SIGKILL after a checkpoint, --resume, the same parameters and eval.json as without the kill
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mass", [False, True], ids=["nominal", "mass-randomized"])
@pytest.mark.parametrize("script", list(MODULES))
def test_run_killed_and_resumed_ends_bit_identical_to_an_uninterrupted_run(script, mass, tmp_path, capsys):
    flags = TINY + (MASS if mass else [])
    uninterrupted = start_script(script, *flags, "--output-dir", tmp_path / "a", "--run-name", "r")
    killed = start_script(script, *flags, "--output-dir", tmp_path / "b", "--run-name", "r")
    run_dir = tmp_path / "b" / "r"
    while not (run_dir / "checkpoint.pt").exists():  # the first checkpoint, after the first rollout
        assert killed.poll() is None, killed.communicate()[1][-3000:]
        time.sleep(0.01)
    delay = random.uniform(0, 0.8)  # somewhere in the remaining 9 rollouts (about 1.3 s unloaded)
    time.sleep(delay)
    killed.send_signal(signal.SIGKILL)
    killed.communicate()
    assert not (run_dir / "model.pt").exists(), f"the run finished before the kill after {delay:.2f} s"
    killed_at = torch.load(run_dir / "checkpoint.pt", weights_only=True)["global_step"]

    if mass:  # a changed env flag is refused on resume, before anything is written
        message = one_line_error(capsys, lambda: MODULES[script].main(MODULES[script].Args(
            teacher=HOPPER_TEACHER, num_envs=4, num_steps=64, total_timesteps=2560, checkpoint_every=256, eval_episodes=2,
            cuda=False, torso_mass_scale=0.7, mass_randomization=0.2, resume=str(run_dir))))
        assert "--mass-randomization 0.3 (now 0.2)" in message, message
    resumed = run_script(script, *flags, "--output-dir", tmp_path / "b", "--run-name", "r", "--resume", run_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"at step {killed_at}" in resumed.stdout
    assert uninterrupted.wait(timeout=120) == 0, uninterrupted.communicate()[1][-3000:]

    a, b = (torch.load(tmp_path / x / "r" / "model.pt", weights_only=True) for x in "ab")
    for part in ("actor", "critic"):
        assert a[part].keys() == b[part].keys()
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), (part, f"killed at step {killed_at}")
    eval_a, eval_b = (json.load(open(tmp_path / x / "r" / "eval.json")) for x in "ab")
    assert eval_a.pop("command") != eval_b.pop("command")
    assert eval_a == eval_b, f"killed at step {killed_at}"
    assert eval_a["global_step"] == 2560


# ----------------------------------------------------------------------------------------------------
# 2. the seed report's mass-randomized Hopper: training envs only
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("module", [sd, td], ids=["student_distill", "teacher_distill"])
def test_training_env_masses_change_between_episodes_and_evaluation_env_is_unmodified(module):
    config = {"torso_mass_scale": 0.7, "mass_randomization": 0.3}
    nominal = module.make_envs("Hopper-v5", "mlp", {}, 1, 0).unwrapped.envs[0].unwrapped.model.body_mass.copy()
    envs = module.make_envs("Hopper-v5", "mlp", config, 1, 0)
    model = envs.unwrapped.envs[0].unwrapped.model
    torso = [model.body(i).name for i in range(model.nbody)].index("torso")
    envs.reset(seed=0)
    rng, masses = np.random.default_rng(0), [model.body_mass.copy()]
    while len(masses) < 4:  # random actions end a Hopper episode in a few dozen steps; SAME_STEP autoreset
        _, _, terminated, truncated, _ = envs.step(rng.uniform(-1, 1, (1, 3)))
        if terminated[0] or truncated[0]:
            masses.append(model.body_mass.copy())
    for m in masses:
        assert m[torso] == pytest.approx(0.7 * nominal[torso])
        others = np.arange(len(m)) != torso
        assert np.all((m[others] >= 0.7 * nominal[others]) & (m[others] <= 1.3 * nominal[others]))
    assert all(not np.array_equal(m, n) for m, n in zip(masses, masses[1:]))  # new masses every episode
    evaluation_envs = module.make_envs("Hopper-v5", "mlp", config, 1, 0, evaluation=True)
    evaluation_envs.reset(seed=0)
    assert np.array_equal(evaluation_envs.unwrapped.envs[0].unwrapped.model.body_mass, nominal)


@pytest.mark.parametrize("module", [sd, td], ids=["student_distill", "teacher_distill"])
def test_mass_options_default_to_the_teachers_and_reach_training_envs_only(module, tmp_path, monkeypatch):
    teacher = torch.load(HOPPER_TEACHER, weights_only=True)
    config = teacher["env_config"]  # the shipped teacher: unmodified Hopper (1.0, 0.0; older teachers lack the keys)
    assert (config.get("torso_mass_scale", 1.0), config.get("mass_randomization", 0.0)) == (1.0, 0.0)
    teacher["env_config"] = {**teacher["env_config"], "torso_mass_scale": 0.7, "mass_randomization": 0.3}
    torch.save(teacher, tmp_path / "teacher.pt")
    built = []  # (torso scale, spread, backend) of every vector env made: the training envs, then the evaluations'
    original = module.make_mlp_envs

    def make_mlp_envs(env_id, num_envs, *mass):
        built.append(mass)
        return original(env_id, num_envs, *mass)

    monkeypatch.setattr(module, "make_mlp_envs", make_mlp_envs)
    evaluation = module.main(module.Args(teacher=str(tmp_path / "teacher.pt"), num_envs=2, num_steps=5, total_timesteps=20,
                                         eval_episodes=1, student_arch="smaller", cuda=False, output_dir=str(tmp_path),
                                         run_name="run"))
    # training; student and teacher evaluations (these always on gymnasium, as training is by default)
    assert built == [(0.7, 0.3, "gymnasium"), (1.0, 0.0, "gymnasium"), (1.0, 0.0, "gymnasium")]
    assert evaluation["train_env"] == {"torso_mass_scale": 0.7, "mass_randomization": 0.3}
    assert evaluation["eval_env"] == "Hopper-v5, unmodified"
    assert json.load(open(tmp_path / "run" / "eval.json"))["train_env"] == evaluation["train_env"]
    model = torch.load(tmp_path / "run" / "model.pt", weights_only=True)  # the student, a teacher of the same env
    assert (model["env_config"]["torso_mass_scale"], model["env_config"]["mass_randomization"]) == (0.7, 0.3)


@pytest.mark.parametrize("module", [sd, td], ids=["student_distill", "teacher_distill"])
def test_mass_options_are_refused_outside_mujoco(module, tmp_path, capsys):
    pixel = torch.load(os.path.join(REPO, "teachers", "CartPole-v1.pt"), weights_only=True)
    pixel.update(env_id="PongNoFrameskip-v4", domain="atari")  # refused before the checkpoint is checked against the env
    torch.save(pixel, tmp_path / "pixel.pt")
    out = tmp_path / "out"
    message = one_line_error(capsys, lambda: module.main(module.Args(teacher=str(tmp_path / "pixel.pt"), torso_mass_scale=0.7,
                                                                     output_dir=str(out))))
    assert "--torso-mass-scale and --mass-randomization apply to MuJoCo envs only" in message, message
    message = one_line_error(capsys, lambda: module.main(module.Args(teacher=os.path.join(REPO, "teachers", "CartPole-v1.pt"),
                                                                     mass_randomization=0.3, output_dir=str(out))))
    assert "CartPole-v1 has none" in message, message
    assert not out.exists()
