"""Bring your own teacher (issue #9, issue 16): a Stable-Baselines3 PPO .zip (with its VecNormalize statistics) and a
CleanRL PPO state dict, converted by `python -m ppd_tools.convert_teacher` and read by student_distill.py /
teacher_distill.py / ppd_mujoco.py, give the very action distributions and values that the library's own policy gives
on the same raw observations; the scripts distill from them and carry the teacher's normalization into the student;
ppd_mujoco.py mixes them with other teachers, each on its own normalization; bad files are refused by the converter with
one line before anything is written, an existing output is kept; a script given the .zip itself points to the converter
in one line and writes nothing.

The SB3 teachers are built here (untrained, every parameter perturbed so no layer is at its initial value);
stable-baselines3 comes from requirements-test.txt (a missing package fails these tests, it does not skip them).
About 30 s on 2 busy cores, most of it in the two short script runs.
"""

import json
import os
import pickle
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn as nn
from conftest import REPO, run_module, run_script, script_env
from torch.distributions import Categorical, Normal

import ppd_mujoco as pm
import student_distill as sd
import teacher_distill as td
from ppd_tools import convert_teacher as ct

MODULES = pytest.mark.parametrize("module", [sd, td, pm], ids=["student_distill", "teacher_distill", "ppd_mujoco"])
CARTPOLE_TEACHER = os.path.join(REPO, "teachers", "CartPole-v1.pt")


def convert(*flags) -> dict:
    """The converter in-process, its flags parsed as on its command line; returns the checkpoint it wrote."""
    import tyro

    return ct.main(tyro.cli(ct.Args, args=[str(f) for f in flags]))


def raw_observations(env_id: str, n: int = 300) -> np.ndarray:
    """Observations of random play, plus some 30 times larger: clipping (or its absence) must be the library's."""
    env = gym.make(env_id)
    env.action_space.seed(0)
    obs, _ = env.reset(seed=0)
    out = []
    for _ in range(n):
        out.append(obs)
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            obs, _ = env.reset()
    out = np.array(out, np.float32)
    return np.concatenate([out, 30 * out[:30]])


def imported_outputs(module, ckpt: dict, raw: np.ndarray):
    """The imported teacher's ((mean, std) or (probs,)) and values on raw observations, as the script computes them."""
    agent = module.agent_from_checkpoint(ckpt)
    x = torch.as_tensor(module.RunningMeanStd(tuple(ckpt["obs_shape"])).load_state_dict(ckpt["obs_rms"]).normalize(raw))
    with torch.no_grad():
        dist = agent.actor(x)
        params = (dist.base_dist.loc, dist.base_dist.scale) if agent.actor.continuous else (dist.probs,)
        return params, agent.get_value(x)


def assert_same(ours, theirs):
    (our_params, our_value), (their_params, their_value) = ours, theirs
    assert len(our_params) == len(their_params)
    for a, b in zip(our_params + (our_value,), their_params + (their_value,)):
        torch.testing.assert_close(a, b.reshape(a.shape), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------------
# Stable-Baselines3
# ----------------------------------------------------------------------------------------------------
SB3_CASES = {  # env: (VecNormalize kwargs or None, policy_kwargs): non-default clip, no VecNormalize, ReLU, Discrete
    "Pendulum-v1": ({"clip_obs": 5.0}, {}),
    "Hopper-v5": (None, {"activation_fn": nn.ReLU, "net_arch": {"pi": [32, 32], "vf": [32, 32]}}),
    "CartPole-v1": ({}, {}),
}


class SB3Teacher:
    """An SB3 PPO saved to `zip` (and its VecNormalize, stepped 300 random steps, to `vecnormalize`), with `outputs`:
    SB3's own action distribution and value on raw observations, normalized by the VecNormalize."""

    def __init__(self, folder, env_id: str, normalize, policy_kwargs: dict, **ppo_kwargs):
        from stable_baselines3 import PPO
        from stable_baselines3.common.env_util import make_vec_env
        from stable_baselines3.common.vec_env import VecNormalize

        venv = make_vec_env(env_id, n_envs=2, seed=0)
        self.zip, self.vecnormalize, self.venv = str(folder / f"{env_id}.zip"), None, None
        if normalize is not None:
            self.venv = venv = VecNormalize(venv, **normalize)
            venv.reset()
            for _ in range(150):
                venv.step(np.array([venv.action_space.sample() for _ in range(2)]))
            self.vecnormalize = str(folder / f"{env_id}_vecnormalize.pkl")
            venv.save(self.vecnormalize)
        self.model = PPO("MlpPolicy", venv, policy_kwargs=policy_kwargs, seed=0, device="cpu", **ppo_kwargs)
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in self.model.policy.parameters():
                p.add_(0.3 * torch.randn(p.shape, generator=generator))
        self.model.save(self.zip)

    def normalize(self, raw: np.ndarray) -> np.ndarray:
        return self.venv.normalize_obs(raw) if self.venv is not None else raw

    def outputs(self, raw: np.ndarray):
        x = torch.as_tensor(self.normalize(raw))
        with torch.no_grad():
            dist = self.model.policy.get_distribution(x).distribution
            value = self.model.policy.predict_values(x).squeeze(-1)
        return ((dist.mean, dist.stddev) if isinstance(dist, Normal) else (dist.probs,)), value


@pytest.fixture(scope="module")
def sb3_teachers(tmp_path_factory):
    import stable_baselines3  # noqa: F401  (requirements-test.txt: a missing package fails here, it does not skip)
    folder = tmp_path_factory.mktemp("sb3")
    return {env_id: SB3Teacher(folder, env_id, *case) for env_id, case in SB3_CASES.items()}


@pytest.fixture(scope="module")
def converted(sb3_teachers, tmp_path_factory):
    """env id: the .pt that the command `python -m ppd_tools.convert_teacher` made of its SB3 teacher (and VecNormalize)"""
    folder = tmp_path_factory.mktemp("converted")
    paths = {}
    for env_id, teacher in sb3_teachers.items():
        paths[env_id] = str(folder / f"{env_id}.pt")
        result = run_module("ppd_tools.convert_teacher", teacher.zip, "--env-id", env_id, "--output", paths[env_id],
                            *(["--vecnormalize", teacher.vecnormalize] if teacher.vecnormalize else []))
        assert result.returncode == 0, result.stderr
        lines = result.stdout.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"wrote {paths[env_id]}: the Stable-Baselines3 teacher of {env_id}")
        assert "ppd_mujoco.py" in lines[0] and ("VecNormalize" in lines[0]) == (teacher.vecnormalize is not None)
    return paths


@MODULES
@pytest.mark.parametrize("env_id", list(SB3_CASES))
def test_sb3_teacher_gives_sb3s_own_action_distribution_and_value(module, env_id, sb3_teachers, converted):
    teacher, raw = sb3_teachers[env_id], raw_observations(env_id)
    ckpt = module.load_checkpoint(converted[env_id], env_id)  # the converted file, as the script reads its --teacher
    assert ckpt["arch_config"] == ({"hidden": [32, 32], "activation": "relu"} if env_id == "Hopper-v5"
                                   else {"hidden": [64, 64], "activation": "tanh"})  # SB3's default for PPO
    assert_same(imported_outputs(module, ckpt, raw), teacher.outputs(raw))
    if teacher.venv is None:  # raw observations, the large ones too, reach the network unclipped
        assert np.abs(raw).max() > 10
        rms = module.RunningMeanStd((raw.shape[1],)).load_state_dict(ckpt["obs_rms"])
        np.testing.assert_array_equal(rms.normalize(raw), raw)


def test_sb3_teacher_is_read_without_stable_baselines3_installed(sb3_teachers):
    teacher = sb3_teachers["Pendulum-v1"]
    code = ("import sys; sys.modules['stable_baselines3'] = None  # any import of it fails\n"
            "from ppd_tools import convert_teacher as ct\n"
            f"ckpt = ct.import_teacher({teacher.zip!r}, 'Pendulum-v1', {teacher.vecnormalize!r})\n"
            "import json; print(json.dumps([ckpt['obs_rms']['clip'], ckpt['obs_rms']['mean'].tolist()]))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=script_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    clip, mean = json.loads(result.stdout.strip().splitlines()[-1])
    assert clip == 5.0 and mean == teacher.venv.obs_rms.mean.tolist()


class RunsACommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickled by plain pickle, this would run `touch marker`
        return os.system, (f"touch {self.marker}",)


def test_vecnormalize_file_runs_no_code_of_its_own(tmp_path):
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(RunsACommand(tmp_path / "ran")))
    with pytest.raises(ct.UsageError, match="cannot read --vecnormalize"):
        ct.vecnormalize_obs_rms(str(tmp_path / "evil.pkl"))
    assert not (tmp_path / "ran").exists()


SHORT_RUN = {"student_distill.py": [], "teacher_distill.py": [],  # a rollout of 100 steps or less, then 1 evaluation episode
             "ppd_mujoco.py": ["--num-steps", 50, "--minibatch-size", 100]}


def own_return(policy, env_id: str = "Pendulum-v1", seed: int = 1 + 10_000) -> float:
    """Return of policy(raw observation) -> action on the scripts' first evaluation episode (seed + 10000)."""
    env, total, done = gym.make(env_id), 0.0, False
    obs, _ = env.reset(seed=seed)
    while not done:
        obs, reward, terminated, truncated, _ = env.step(policy(obs))
        total, done = total + reward, terminated or truncated
    return total


@pytest.mark.parametrize("script", list(SHORT_RUN))
def test_script_distills_from_a_converted_sb3_teacher_and_its_student_keeps_the_teachers_normalization(
        script, sb3_teachers, converted, tmp_path):
    teacher = sb3_teachers["Pendulum-v1"]
    result = run_script(script, "--teacher", converted["Pendulum-v1"], "--env-id", "Pendulum-v1", "--num-envs", 2,
                        "--total-timesteps", 100, "--eval-episodes", 1, "--no-cuda", "--output-dir", tmp_path,
                        "--run-name", "run", *SHORT_RUN[script])
    assert result.returncode == 0, result.stderr[-2000:]
    evaluation = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert evaluation["teacher_checkpoint"] == converted["Pendulum-v1"]

    # the teacher's score is that of SB3's own deterministic policy on the same evaluation episode (seed + 10000)
    total = own_return(lambda obs: teacher.model.predict(teacher.normalize(obs[None]), deterministic=True)[0][0])
    assert evaluation["teacher"]["mean_return"] == pytest.approx(total, rel=1e-4)

    # the student normalizes exactly as the SB3 teacher (clip 5), so it can be the next teacher
    student = sd.load_checkpoint(str(tmp_path / "run" / "model.pt"), "Pendulum-v1")
    raw = raw_observations("Pendulum-v1")
    rms = sd.RunningMeanStd((3,)).load_state_dict(student["obs_rms"])
    np.testing.assert_array_equal(rms.normalize(raw), teacher.normalize(raw))


# ----------------------------------------------------------------------------------------------------
# CleanRL: the Agents of ppo_continuous_action.py and ppo.py, copied (default sizes: 64-64, Tanh)
# ----------------------------------------------------------------------------------------------------
def layer_init(layer, std=np.sqrt(2), bias_const=0.0):
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


class CleanRLContinuousAgent(nn.Module):  # cleanrl/ppo_continuous_action.py
    def __init__(self, obs_dim, act_dim):
        super().__init__()
        self.critic = nn.Sequential(layer_init(nn.Linear(obs_dim, 64)), nn.Tanh(), layer_init(nn.Linear(64, 64)), nn.Tanh(),
                                    layer_init(nn.Linear(64, 1), std=1.0))
        self.actor_mean = nn.Sequential(layer_init(nn.Linear(obs_dim, 64)), nn.Tanh(), layer_init(nn.Linear(64, 64)), nn.Tanh(),
                                        layer_init(nn.Linear(64, act_dim), std=0.01))
        self.actor_logstd = nn.Parameter(torch.zeros(1, act_dim))

    def outputs(self, x):  # what get_action_and_value builds: Normal(action_mean, exp(actor_logstd)), and the value
        action_mean = self.actor_mean(x)
        probs = Normal(action_mean, torch.exp(self.actor_logstd.expand_as(action_mean)))
        return (probs.mean, probs.stddev), self.critic(x)


class CleanRLDiscreteAgent(nn.Module):  # cleanrl/ppo.py
    def __init__(self, obs_dim, n):
        super().__init__()
        self.critic = nn.Sequential(layer_init(nn.Linear(obs_dim, 64)), nn.Tanh(), layer_init(nn.Linear(64, 64)), nn.Tanh(),
                                    layer_init(nn.Linear(64, 1), std=1.0))
        self.actor = nn.Sequential(layer_init(nn.Linear(obs_dim, 64)), nn.Tanh(), layer_init(nn.Linear(64, 64)), nn.Tanh(),
                                   layer_init(nn.Linear(64, n), std=0.01))

    def outputs(self, x):
        return (Categorical(logits=self.actor(x)).probs,), self.critic(x)


def cleanrl_teacher(path, agent: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    with torch.no_grad():
        for p in agent.parameters():
            p.add_(0.3 * torch.randn_like(p))
    torch.save(agent.state_dict(), path)
    return agent


def normalize_observation_stats(env_id: str, steps: int = 300):
    """gymnasium's NormalizeObservation after random play, frozen (the wrapper ppo_continuous_action.py trains with)."""
    env = gym.wrappers.NormalizeObservation(gym.make(env_id))
    env.action_space.seed(0)
    env.reset(seed=0)
    for _ in range(steps):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()
    env.update_running_mean = False
    return env


@MODULES
@pytest.mark.parametrize("with_stats", [True, False], ids=["obs-rms", "raw-obs"])
def test_cleanrl_continuous_teacher_gives_cleanrls_own_action_distribution_and_value(module, with_stats, tmp_path, capsys):
    agent = cleanrl_teacher(tmp_path / "hopper.cleanrl_model", CleanRLContinuousAgent(11, 3))
    raw = raw_observations("Hopper-v5")
    if with_stats:
        wrapper = normalize_observation_stats("Hopper-v5")
        np.savez(tmp_path / "obs_rms.npz", mean=wrapper.obs_rms.mean, var=wrapper.obs_rms.var)
        x = np.clip(wrapper.observation(raw), -10, 10)  # CleanRL: NormalizeObservation, then clipped to +-10
    else:
        x = raw
    convert(tmp_path / "hopper.cleanrl_model", "--env-id", "Hopper-v5", "--output", tmp_path / "hopper.pt",
            *(["--obs-rms", tmp_path / "obs_rms.npz"] if with_stats else []))
    ckpt = module.load_checkpoint(str(tmp_path / "hopper.pt"), "Hopper-v5")
    with torch.no_grad():
        assert_same(imported_outputs(module, ckpt, raw), agent.outputs(torch.as_tensor(x)))
    assert ("without --obs-rms" in capsys.readouterr().err) != with_stats  # warned only without the statistics


@MODULES
def test_cleanrl_discrete_teacher_gives_cleanrls_own_probabilities_and_value(module, tmp_path):
    agent = cleanrl_teacher(tmp_path / "cartpole.cleanrl_model", CleanRLDiscreteAgent(4, 2))
    raw = raw_observations("CartPole-v1")
    convert(tmp_path / "cartpole.cleanrl_model", "--env-id", "CartPole-v1", "--output", tmp_path / "cartpole.pt")
    ckpt = module.load_checkpoint(str(tmp_path / "cartpole.pt"), "CartPole-v1")
    with torch.no_grad():
        assert_same(imported_outputs(module, ckpt, raw), agent.outputs(torch.as_tensor(raw)))


@MODULES
def test_our_checkpoints_still_build_relu_networks(module):
    ckpt = module.load_checkpoint(CARTPOLE_TEACHER)
    assert "activation" not in ckpt["arch_config"]
    assert any(isinstance(m, nn.ReLU) for m in module.agent_from_checkpoint(ckpt).modules())
    assert not any(isinstance(m, nn.Tanh) for m in module.agent_from_checkpoint(ckpt).modules())


# ----------------------------------------------------------------------------------------------------
# ppd_mujoco.py: converted foreign teachers among several, each with the statistics it was converted with
# ----------------------------------------------------------------------------------------------------
def test_ppd_mujoco_distills_from_an_sb3_and_a_cleanrl_teacher_each_on_its_own_normalization(sb3_teachers, converted,
                                                                                             tmp_path):
    sb3 = sb3_teachers["Pendulum-v1"]
    cleanrl = cleanrl_teacher(tmp_path / "pendulum.cleanrl_model", CleanRLContinuousAgent(3, 1))
    wrapper = normalize_observation_stats("Pendulum-v1")
    np.savez(tmp_path / "obs_rms.npz", mean=wrapper.obs_rms.mean, var=wrapper.obs_rms.var)
    convert(tmp_path / "pendulum.cleanrl_model", "--env-id", "Pendulum-v1", "--obs-rms", tmp_path / "obs_rms.npz",
            "--output", tmp_path / "pendulum_cleanrl.pt")
    result = run_script("ppd_mujoco.py", "--env-id", "Pendulum-v1", "--teacher", converted["Pendulum-v1"],
                        "--teacher", tmp_path / "pendulum_cleanrl.pt", "--num-envs", 2, "--total-timesteps", 100,
                        "--eval-episodes", 1, "--no-cuda", "--output-dir", tmp_path, "--run-name", "run",
                        *SHORT_RUN["ppd_mujoco.py"])
    assert result.returncode == 0, result.stderr[-2000:]
    evaluation = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert evaluation["teacher_checkpoints"] == [converted["Pendulum-v1"], str(tmp_path / "pendulum_cleanrl.pt")]

    # each teacher scores what the library's own policy scores on its own normalization: SB3's VecNormalize (clip 5),
    # CleanRL's NormalizeObservation then clipped to +-10
    def cleanrl_policy(obs):
        with torch.no_grad():
            mean = cleanrl.actor_mean(torch.as_tensor(np.clip(wrapper.observation(obs), -10, 10), dtype=torch.float32))
        return np.clip(mean.numpy(), -2.0, 2.0)

    sb3_return = own_return(lambda obs: sb3.model.predict(sb3.normalize(obs[None]), deterministic=True)[0][0])
    assert [t["mean_return"] for t in evaluation["teachers"]] == pytest.approx([sb3_return, own_return(cleanrl_policy)], rel=1e-4)
    assert sb3_return != pytest.approx(own_return(cleanrl_policy), rel=1e-2)  # two different teachers, told apart

    # the student normalizes as the first teacher
    student = pm.load_checkpoint(str(tmp_path / "run" / "model.pt"), "Pendulum-v1")
    raw = raw_observations("Pendulum-v1")
    np.testing.assert_array_equal(pm.RunningMeanStd((3,)).load_state_dict(student["obs_rms"]).normalize(raw), sb3.normalize(raw))


# ----------------------------------------------------------------------------------------------------
# bad input: one line naming the problem and the fix, nothing written
# ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, sb3_teachers):
    folder = tmp_path_factory.mktemp("bad")
    (folder / "garbage.zip").write_bytes(b"not a zip file at all")
    (folder / "garbage.pkl").write_bytes(b"not a pickle")
    conv = nn.Conv2d(4, 32, 8, stride=4)  # CleanRL's ppo_atari: network.0 is the first conv
    torch.save({"network.0.weight": conv.weight, "network.0.bias": conv.bias}, folder / "atari.cleanrl_model")
    torch.save({"qf1.0.weight": torch.zeros(64, 3), "qf1.0.bias": torch.zeros(64)}, folder / "sac.cleanrl_model")
    os.rename(SB3Teacher(folder, "Pendulum-v1", None, {}, use_sde=True).zip, folder / "gsde.zip")
    return folder


def bad_cases(files, sb3):
    pendulum, cartpole = sb3["Pendulum-v1"], sb3["CartPole-v1"]
    return {  # converter flags (but --output): words the error line must hold
        "no env id": ([pendulum.zip], ["--env-id"]),
        "other env": ([cartpole.zip, "--env-id", "Acrobot-v1"], ["maps 4 observations to 2", "Acrobot-v1 has 6 and 3"]),
        "discrete env for a Gaussian": ([pendulum.zip, "--env-id", "CartPole-v1"], ["Gaussian", "--env-id"]),
        "pixel env": ([cartpole.zip, "--env-id", "procgen:coinrun"], ["procgen:coinrun"]),
        "unknown env": ([cartpole.zip, "--env-id", "CartPol-v1"], ["closest known ids", "CartPole-v1"]),
        "not a zip": ([files / "garbage.zip", "--env-id", "Pendulum-v1"], ["cannot read Stable-Baselines3", "model.save()"]),
        "missing": ([files / "nothing.zip", "--env-id", "Pendulum-v1"], ["does not exist"]),
        "gSDE": ([files / "gsde.zip", "--env-id", "Pendulum-v1"], ["gSDE"]),
        "other env's statistics": ([pendulum.zip, "--env-id", "Pendulum-v1", "--vecnormalize", cartpole.vecnormalize],
                                   ["shape (4,)", "Pendulum-v1 has (3,)"]),
        "not a VecNormalize": ([pendulum.zip, "--env-id", "Pendulum-v1", "--vecnormalize", files / "garbage.pkl"],
                               ["cannot read --vecnormalize", "VecNormalize.save()"]),
        "CleanRL Atari": ([files / "atari.cleanrl_model", "--env-id", "Pendulum-v1"], ["ppo_atari", "Atari --env-id"]),
        "unknown layout": ([files / "sac.cleanrl_model", "--env-id", "Pendulum-v1"], ["is not a CleanRL PPO MLP policy"]),
        "our own checkpoint": ([CARTPOLE_TEACHER, "--env-id", "CartPole-v1"], ["needs no conversion", "--teacher"]),
        "obs-rms for SB3": ([pendulum.zip, "--env-id", "Pendulum-v1", "--obs-rms", files / "x.npz"], ["--obs-rms", "CleanRL"]),
        "vecnormalize for CleanRL": ([files / "sac.cleanrl_model", "--env-id", "Pendulum-v1", "--vecnormalize",
                                     cartpole.vecnormalize], ["--vecnormalize", "Stable-Baselines3"]),
    }


BAD_CASE_NAMES = ["no env id", "other env", "discrete env for a Gaussian", "pixel env", "unknown env", "not a zip",
                  "missing", "gSDE", "other env's statistics", "not a VecNormalize", "CleanRL Atari", "unknown layout",
                  "our own checkpoint", "obs-rms for SB3", "vecnormalize for CleanRL"]


@pytest.mark.parametrize("case", BAD_CASE_NAMES)
def test_bad_foreign_teacher_is_refused_with_one_line_before_anything_is_written(case, bad_files, sb3_teachers,
                                                                                  tmp_path, capsys):
    flags, words = bad_cases(bad_files, sb3_teachers)[case]
    with pytest.raises(SystemExit) as refused:
        convert(*flags, "--output", tmp_path / "out" / "teacher.pt")
    assert refused.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert not (tmp_path / "out").exists()


def test_converter_command_refuses_in_one_line_and_writes_nothing(sb3_teachers, tmp_path):
    for flags, words in [([sb3_teachers["Pendulum-v1"].zip, "--output", tmp_path / "t.pt"], ["--env-id"]),
                         ([sb3_teachers["Pendulum-v1"].zip, "--env-id", "Pendulum-v1"], ["pass --output"]),
                         ([sb3_teachers["Pendulum-v1"].zip, "--env-id", "Pendulum-v1", "--output", tmp_path / "t.zip"],
                          ["--output", "teacher.pt"])]:
        result = run_module("ppd_tools.convert_teacher", *flags)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:"), result.stderr
        assert all(word in lines[0] for word in words), (words, lines[0])
        assert result.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_converter_help_documents_every_flag():
    import dataclasses
    import re

    result = run_module("ppd_tools.convert_teacher", "--help")
    assert result.returncode == 0 and result.stdout.startswith("usage: python -m ppd_tools.convert_teacher"), result.stderr
    entries, flag = {}, None  # flag -> the text of its entry in the help boxes (a description may wrap)
    for line in result.stdout.replace("│", " ").splitlines():
        m = re.match(r" {1,3}(?:-h, )?(--[\w-]+|SOURCE)(.*)", line)
        if m:
            flag, entries[m.group(1)] = m.group(1), m.group(2)
        elif flag and re.match(r" {10,}\S", line):
            entries[flag] += " " + line.strip()
    fields = ["SOURCE" if f.name == "source" else "--" + f.name.replace("_", "-") for f in dataclasses.fields(ct.Args)]
    assert fields == ["SOURCE", "--env-id", "--vecnormalize", "--obs-rms", "--output", "--force"]
    undocumented = [f for f in fields if not re.search(r"[a-z]{3,}.*\((default:|required)", re.sub(r"\{[^}]*\}", "", entries.get(f, "")))]
    assert not undocumented, (undocumented, result.stdout)


def test_converter_keeps_an_existing_output_unless_forced(sb3_teachers, tmp_path, capsys):
    teacher, output = sb3_teachers["CartPole-v1"], tmp_path / "teacher.pt"
    output.write_bytes(b"someone's file")
    with pytest.raises(SystemExit) as refused:
        convert(teacher.zip, "--env-id", "CartPole-v1", "--vecnormalize", teacher.vecnormalize, "--output", output)
    assert refused.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "already exists" in lines[0] and "--force" in lines[0], lines
    assert output.read_bytes() == b"someone's file" and sorted(p.name for p in tmp_path.iterdir()) == ["teacher.pt"]

    convert(teacher.zip, "--env-id", "CartPole-v1", "--vecnormalize", teacher.vecnormalize, "--output", output, "--force")
    assert capsys.readouterr().out.startswith(f"wrote {output}: ")
    ckpt = torch.load(output, weights_only=True)
    assert ckpt["env_id"] == "CartPole-v1" and ckpt["arch"] == "stable-baselines3"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["teacher.pt"]  # written in place: no temporary file left


# ----------------------------------------------------------------------------------------------------
# a script given the foreign file itself: one line naming the converter, nothing written
# ----------------------------------------------------------------------------------------------------
POINTER = ("is a Stable-Baselines3 / CleanRL file; convert it first: python -m ppd_tools.convert_teacher {path} --env-id "
           "{env} --output teacher.pt")


@MODULES
@pytest.mark.parametrize("suffix", [".zip", ".cleanrl_model"])
def test_script_given_a_foreign_teacher_points_to_the_converter_in_one_line(module, suffix, sb3_teachers, tmp_path,
                                                                           capsys):
    import tyro

    path = sb3_teachers["Pendulum-v1"].zip if suffix == ".zip" else str(tmp_path / "agent.cleanrl_model")
    args = tyro.cli(module.Args, args=["--teacher", path, "--env-id", "Pendulum-v1", "--output-dir",
                                       str(tmp_path / "out"), "--no-cuda"])
    with pytest.raises(SystemExit) as refused:
        module.main(args)
    assert refused.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"error: '{path}' " + POINTER.format(path=path, env="Pendulum-v1")]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("script", ["student_distill.py", "ppd_mujoco.py"])
def test_script_command_given_an_sb3_zip_points_to_the_converter_and_writes_nothing(script, sb3_teachers, tmp_path):
    path = sb3_teachers["CartPole-v1"].zip
    teachers = ["--teacher", CARTPOLE_TEACHER, "--teacher", path] if script == "ppd_mujoco.py" else ["--teacher", path]
    result = run_script(script, *teachers, "--output-dir", tmp_path / "out")  # ppd_mujoco.py: the second of two teachers
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: '{path}' " + POINTER.format(path=path, env="<env>")]
    assert not (tmp_path / "out").exists()


def test_scripts_no_longer_take_the_statistics_flags(tmp_path):
    result = run_script("ppd_mujoco.py", "--teacher", "x.zip", "--teacher-vecnormalize", "v.pkl", "--output-dir",
                        tmp_path / "out")
    assert result.returncode == 2 and "--teacher-vecnormalize" in result.stderr
    assert not (tmp_path / "out").exists()
