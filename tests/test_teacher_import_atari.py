"""Bring your own Atari teacher (issue #9, issue 16): `python -m ppd_tools.convert_teacher` converts a Stable-Baselines3
PPO .zip (CnnPolicy, as the RL Zoo's Atari agents) and a CleanRL ppo_atari.py state dict, both the Nature-CNN
actor-critic with one trunk, into a checkpoint that ppd_atari.py, student_distill.py and teacher_distill.py read; the
converted teacher gives the library's own action probabilities and value on the same Pong frames, the scripts distill
from it, bad files are refused by the converter with one line before anything is written, and ppd_atari.py given the
foreign file itself points to the converter in one line.

The CleanRL network is ppo_atari.py's Agent, written out below; the SB3 teachers are SB3's own PPO
(stable-baselines3 comes from requirements-test.txt). About 40 s here, most of it in the script run.
"""

import io
import json
import zipfile

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn as nn
from conftest import run_module, run_script
from torch.distributions import Categorical

import ppd_atari
import student_distill as sd
import teacher_distill as td
from ppd_tools import convert_teacher as ct

MODULES = pytest.mark.parametrize("module", [ppd_atari, sd, td], ids=["ppd_atari", "student_distill", "teacher_distill"])
ENV_ID = "PongNoFrameskip-v4"  # 6 actions


def convert(*flags) -> dict:
    """The converter in-process, its flags parsed as on its command line; returns the checkpoint it wrote."""
    import tyro

    return ct.main(tyro.cli(ct.Args, args=[str(f) for f in flags]))


def converted(module, source, folder) -> dict:
    """`source` converted for Pong into folder/teacher.pt, read back as `module` reads its --teacher."""
    convert(source, "--env-id", ENV_ID, "--output", folder / "teacher.pt", "--force")
    return module.load_checkpoint(str(folder / "teacher.pt"), ENV_ID)


def pong_frames(n_envs: int = 4, steps: int = 60) -> np.ndarray:
    """[n_envs * steps // 2, 4, 84, 84] uint8 frame stacks of random Pong play, as the script's envs give them."""
    envs = ppd_atari.make_envs(ENV_ID, n_envs, 0, 4)
    envs.reset(seed=0)
    rng, frames = np.random.default_rng(0), []
    for t in range(steps):
        obs, *_ = envs.step(rng.integers(0, 6, n_envs))
        if t % 2:
            frames.append(obs)
    envs.close()
    return np.concatenate(frames)


@pytest.fixture(scope="module")
def frames():
    return pong_frames()


def layer_init(layer, std=np.sqrt(2), bias_const=0.0):
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


class CleanRLAtariAgent(nn.Module):
    """cleanrl/ppo_atari.py's Agent (the same in ppo_atari_envpool.py), with `outputs` for the comparison."""

    def __init__(self, n_actions: int):
        super().__init__()
        self.network = nn.Sequential(
            layer_init(nn.Conv2d(4, 32, 8, stride=4)), nn.ReLU(),
            layer_init(nn.Conv2d(32, 64, 4, stride=2)), nn.ReLU(),
            layer_init(nn.Conv2d(64, 64, 3, stride=1)), nn.ReLU(),
            nn.Flatten(),
            layer_init(nn.Linear(64 * 7 * 7, 512)), nn.ReLU(),
        )
        self.actor = layer_init(nn.Linear(512, n_actions), std=0.01)
        self.critic = layer_init(nn.Linear(512, 1), std=1)

    def outputs(self, x):
        hidden = self.network(x / 255.0)
        return Categorical(logits=self.actor(hidden)).probs, self.critic(hidden).squeeze(-1)


def perturbed(module: nn.Module) -> nn.Module:
    """Every parameter moved off its initial value (a zero bias or a tiny head would hide a wrong mapping)."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    return module


def cleanrl_teacher(path, n_actions: int = 6) -> CleanRLAtariAgent:
    torch.manual_seed(0)
    agent = perturbed(CleanRLAtariAgent(n_actions))
    torch.save(agent.state_dict(), path)
    return agent


def imported_outputs(module, ckpt: dict, frames: np.ndarray):
    agent = module.agent_from_checkpoint(ckpt)
    x = torch.as_tensor(frames)
    with torch.no_grad():
        return agent.actor(x).probs, agent.get_value(x)


def assert_same(ours, theirs):
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b.reshape(a.shape), rtol=1e-5, atol=1e-5)


@MODULES
def test_cleanrl_atari_teacher_gives_cleanrls_own_probabilities_and_value(module, frames, tmp_path):
    agent = cleanrl_teacher(tmp_path / "pong.cleanrl_model")
    ckpt = converted(module, tmp_path / "pong.cleanrl_model", tmp_path)
    assert ckpt["arch_config"] == {"cnn": "nature", "channels": [32, 64, 64], "fc": 512}
    assert ckpt["env_config"]["frame_skip"] == 4 and ckpt["obs_shape"] == [4, 84, 84]
    ours = imported_outputs(module, ckpt, frames)
    with torch.no_grad():
        theirs = agent.outputs(torch.as_tensor(frames).float())
    assert_same(ours, theirs)
    assert float(ours[0].max(-1).values.std()) > 1e-3  # the frames are told apart: the check is not on a constant


@pytest.fixture(scope="module", params=[True, False], ids=["shared-trunk", "separate-trunks"])
def sb3_teacher(request, tmp_path_factory):
    """SB3's own PPO CnnPolicy on Pong's spaces (untrained, every parameter perturbed), saved by model.save()."""
    import stable_baselines3  # noqa: F401  (requirements-test.txt: a missing package fails here, it does not skip)
    from stable_baselines3 import PPO

    class FramesEnv(gym.Env):  # Pong's spaces after VecFrameStack + VecTransposeImage: channels first
        observation_space = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
        action_space = gym.spaces.Discrete(6)

        def reset(self, seed=None, options=None):
            return self.observation_space.sample(), {}

        def step(self, action):
            return self.observation_space.sample(), 0.0, False, False, {}

    shared, path = request.param, tmp_path_factory.mktemp("sb3") / "pong.zip"
    model = PPO("CnnPolicy", FramesEnv(), policy_kwargs={"share_features_extractor": shared}, seed=0, device="cpu")
    perturbed(model.policy)
    model.save(path)
    return model, str(path), shared


@MODULES
def test_sb3_atari_teacher_gives_sb3s_own_probabilities_and_value(module, sb3_teacher, frames, tmp_path):
    model, path, shared = sb3_teacher
    ckpt = converted(module, path, tmp_path)
    assert ckpt["arch_config"] == {"cnn": "nature", "channels": [32, 64, 64], "fc": 512}
    x = torch.as_tensor(frames)
    with torch.no_grad():
        theirs = model.policy.get_distribution(x).distribution.probs, model.policy.predict_values(x)
    assert_same(imported_outputs(module, ckpt, frames), theirs)
    critic_trunk = ckpt["critic"]["convs.0.weight"]
    assert torch.equal(critic_trunk, ckpt["actor"]["body.convs.0.weight"]) == shared


@pytest.mark.parametrize("script", ["ppd_atari.py", "student_distill.py"])
def test_script_distills_from_a_converted_cleanrl_atari_teacher(script, tmp_path):
    cleanrl_teacher(tmp_path / "pong.cleanrl_model")
    result = run_module("ppd_tools.convert_teacher", tmp_path / "pong.cleanrl_model", "--env-id", ENV_ID, "--output",
                        tmp_path / "pong.pt")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines() == [
        f"wrote {tmp_path / 'pong.pt'}: the CleanRL teacher of {ENV_ID} (Nature-CNN 32-64-64 fc 512, 6 actions, frame skip "
        f"4); distill from it with --teacher {tmp_path / 'pong.pt'} (ppd_atari.py, student_distill.py, teacher_distill.py)"]
    result = run_script(script, "--teacher", tmp_path / "pong.pt", "--env-id", ENV_ID,
                        "--student-arch", "smaller", "--num-envs", "2", "--num-steps", "16", "--total-timesteps", "64",
                        *(["--minibatch-size", "16"] if script == "ppd_atari.py" else []), "--eval-episodes", "1",
                        "--output-dir", tmp_path, "--run-name", "run", timeout=300)
    assert result.returncode == 0, result.stderr
    evaluation = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert evaluation["teacher"]["episodes"] == 1 and np.isfinite(evaluation["teacher"]["mean_return"])
    model = ppd_atari.load_checkpoint(str(tmp_path / "run" / "model.pt"))
    assert model["env_config"]["frame_skip"] == 4  # the foreign teacher's env: SB3's and CleanRL's frame skip
    teacher = model["args"]["teacher"]  # ppd_atari.py: the tuple of its teachers
    assert (teacher if isinstance(teacher, str) else teacher[0]).endswith("pong.pt") and model["global_step"] == 64
    assert model["domain"] == "atari" and model["arch_config"]["cnn"] == "nature"


def sb3_zip(path, state: dict) -> None:
    """A file of SB3's model.save() layout holding `state` as the policy (no SB3 needed)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("data", json.dumps({"policy_class": "ActorCriticCnnPolicy"}))
        archive.writestr("policy.pth", buffer.getvalue())


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    state = perturbed(CleanRLAtariAgent(6)).state_dict()
    torch.save(perturbed(CleanRLAtariAgent(4)).state_dict(), folder / "four_actions.cleanrl_model")
    torch.save({"actor.0.weight": torch.zeros(64, 4), "actor.0.bias": torch.zeros(64)}, folder / "mlp.cleanrl_model")
    trunk = {f"features_extractor.cnn.{i}.{t}": state[f"network.{i}.{t}"] for i in (0, 2, 4) for t in ("weight", "bias")}
    trunk.update({f"features_extractor.linear.0.{t}": state[f"network.7.{t}"] for t in ("weight", "bias")})
    heads = {"action_net.weight": state["actor.weight"], "action_net.bias": state["actor.bias"],
             "value_net.weight": state["critic.weight"], "value_net.bias": state["critic.bias"]}
    sb3_zip(folder / "net_arch.zip", {**trunk, "mlp_extractor.policy_net.0.weight": torch.zeros(64, 512),
                                      "mlp_extractor.policy_net.0.bias": torch.zeros(64), **heads})
    (folder / "garbage.zip").write_bytes(b"not a zip")
    (folder / "truncated.cleanrl_model").write_bytes((folder / "four_actions.cleanrl_model").read_bytes()[:5000])
    return folder


BAD_CASES = {  # converter flags (but --output): words the error line must hold
    "no env id": (["{bad}/four_actions.cleanrl_model"], ["--env-id"]),
    "other action space": (["{bad}/four_actions.cleanrl_model", "--env-id", ENV_ID], ["action space", "'n': 4", "'n': 6"]),
    "MLP policy": (["{bad}/mlp.cleanrl_model", "--env-id", ENV_ID], ["not a CleanRL PPO Nature-CNN", "ppo_atari.py"]),
    "SB3 with net_arch": (["{bad}/net_arch.zip", "--env-id", ENV_ID],
                          ["not a Stable-Baselines3 PPO Nature-CNN", "mlp_extractor.policy_net.0"]),
    "not a zip": (["{bad}/garbage.zip", "--env-id", ENV_ID], ["cannot read Stable-Baselines3", "model.save()"]),
    "truncated": (["{bad}/truncated.cleanrl_model", "--env-id", ENV_ID], ["cannot read CleanRL"]),
    "missing": (["{bad}/nothing.zip", "--env-id", ENV_ID], ["does not exist"]),
    "unknown game": (["{bad}/four_actions.cleanrl_model", "--env-id", "PonNoFrameskip-v4"],
                     ["closest known", "PongNoFrameskip-v4"]),
    "statistics for an Atari teacher": (["{bad}/four_actions.cleanrl_model", "--env-id", ENV_ID, "--obs-rms", "{bad}/x.npz"],
                                        ["--obs-rms", "raw frames"]),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_foreign_atari_teacher_is_refused_with_one_line_before_anything_is_written(case, bad_files, tmp_path, capsys):
    flags, words = BAD_CASES[case]
    with pytest.raises(SystemExit) as refused:
        convert(*[f.format(bad=bad_files) for f in flags], "--output", tmp_path / "out" / "teacher.pt")
    assert refused.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert not (tmp_path / "out").exists()


def test_ppd_atari_given_a_foreign_teacher_points_to_the_converter_in_one_line(bad_files, tmp_path, capsys):
    import tyro

    path = str(bad_files / "four_actions.cleanrl_model")
    args = tyro.cli(ppd_atari.Args, args=["--teacher", path, "--env-id", ENV_ID, "--output-dir", str(tmp_path / "out"),
                                          "--no-cuda"])
    with pytest.raises(SystemExit) as refused:
        ppd_atari.main(args)
    assert refused.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: '{path}' is a Stable-Baselines3 / CleanRL file; convert it first: python -m ppd_tools.convert_teacher "
        f"{path} --env-id {ENV_ID} --output teacher.pt"]
    assert not (tmp_path / "out").exists()
