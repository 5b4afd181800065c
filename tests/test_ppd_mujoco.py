"""ppd_mujoco.py: PPD is PPO plus the `# PPD` lines, the objective is paper Eq. 2, and it learns."""

import json
import os
import re
import types

import numpy as np
import pytest
import torch
from torch.distributions import Categorical, Independent, Normal
from torch.distributions import kl_divergence as torch_kl

import ppd_mujoco
from conftest import REPO, run_script

CARTPOLE_TEACHER = os.path.join(REPO, "teachers", "CartPole-v1.pt")
HOPPER_TEACHER = os.path.join(REPO, "teachers", "Hopper-v5.pt")
TINY = ["--num-envs", "2", "--num-steps", "32", "--minibatch-size", "32", "--total-timesteps", "192", "--eval-episodes", "2"]


def scalars(run_dir: str) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def same_parameters(a: dict, b: dict) -> bool:
    return all(torch.equal(a[part][k], b[part][k]) for part in ("actor", "critic") for k in a[part])


@pytest.mark.parametrize("teacher, gamma, ent, backend", [(CARTPOLE_TEACHER, "0.999", "0.0", "gymnasium"),
                                                           (HOPPER_TEACHER, "0.995", "0.0", "gymnasium"),
                                                           (HOPPER_TEACHER, "0.995", "0.0", "envpool")])
def test_lambda_zero_reproduces_ppo_exactly(tmp_path, teacher, gamma, ent, backend):
    env_id = torch.load(teacher, weights_only=True)["env_id"]
    common = TINY + ["--seed", "3", "--gamma", gamma, "--ent-coef", ent, "--env-backend", backend, "--output-dir", tmp_path]
    ppd = run_script("ppd_mujoco.py", "--teacher", teacher, "--distill-coef", "0", "--run-name", "ppd", *common)
    assert ppd.returncode == 0, ppd.stderr
    ppo = run_script("train_teacher.py", "--env-id", env_id, "--frozen-obs-norm", teacher, "--run-name", "ppo", *common)
    assert ppo.returncode == 0, ppo.stderr
    a, b = (torch.load(tmp_path / r / "model.pt", weights_only=True) for r in ("ppd", "ppo"))
    assert same_parameters(a, b)
    sa, sb = scalars(tmp_path / "ppd"), scalars(tmp_path / "ppo")
    for tag in ("losses/policy_loss", "losses/value_loss", "losses/entropy", "losses/approx_kl", "charts/episodic_return"):
        assert sa[tag] == sb[tag], tag
    # ... and lambda > 0 does change the run, so the comparison above can fail
    ppd1 = run_script("ppd_mujoco.py", "--teacher", teacher, "--distill-coef", "1", "--run-name", "ppd1", *common)
    assert ppd1.returncode == 0, ppd1.stderr
    assert not same_parameters(torch.load(tmp_path / "ppd1" / "model.pt", weights_only=True), b)


@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_analytic_kl_equals_torch_kl_divergence(direction):
    g = torch.Generator().manual_seed(0)
    t_logits, s_logits = torch.randn(64, 6, generator=g) * 3, torch.randn(64, 6, generator=g)
    p, q = Categorical(logits=t_logits), Categorical(logits=s_logits)
    expected = torch_kl(p, q) if direction == "forward" else torch_kl(q, p)
    torch.testing.assert_close(ppd_mujoco.kl_divergence((t_logits,), (s_logits,), direction), expected)

    t_mean, s_mean = torch.randn(64, 3, generator=g), torch.randn(64, 3, generator=g)
    t_log_std, s_log_std = torch.randn(64, 3, generator=g) * 0.5, torch.randn(64, 3, generator=g) * 0.5
    p, q = Independent(Normal(t_mean, t_log_std.exp()), 1), Independent(Normal(s_mean, s_log_std.exp()), 1)
    expected = torch_kl(p, q) if direction == "forward" else torch_kl(q, p)
    got = ppd_mujoco.kl_divergence((t_mean, t_log_std), (s_mean, s_log_std), direction)
    assert got.shape == (64,)  # summed over the action dimensions
    torch.testing.assert_close(got, expected)
    assert (ppd_mujoco.kl_divergence((t_mean, t_log_std), (t_mean, t_log_std), direction).abs() < 1e-6).all()


def test_dist_params_round_trip_to_kl_zero():
    actor = ppd_mujoco.Actor(ppd_mujoco.mlp(4, [8], 2, 0.01), __import__("gymnasium").spaces.Box(-1, 1, (2,)))
    dist = actor(torch.randn(5, 4))
    mean, log_std = ppd_mujoco.dist_params(dist)
    torch.testing.assert_close(log_std, actor.log_std.expand(5, 2))
    assert (ppd_mujoco.kl_divergence((mean, log_std), ppd_mujoco.dist_params(dist)) == 0).all()


def distill_line() -> str:
    """The script's own line that forms the PPD term (paper Eq. 2), so the tests below test the shipped code."""
    source = open(os.path.join(REPO, "ppd_mujoco.py")).read()
    (line,) = re.findall(r"^\s*(distill_loss = .*?)\s*# PPD$", source, re.M)
    return line


def distill_term(kl: torch.Tensor, ratio: torch.Tensor, clip_coef: float = 0.2) -> torch.Tensor:
    scope = {"torch": torch, "kl": kl, "ratio": ratio, "args": types.SimpleNamespace(clip_coef=clip_coef)}
    exec(distill_line(), scope)
    return scope["distill_loss"]


def test_distill_term_passes_no_gradient_through_ratio_below_clip():
    kl = torch.tensor([0.5, 2.0], requires_grad=True)
    ratio = torch.tensor([0.5, 0.7], requires_grad=True)  # both below 1 - eps = 0.8
    distill_term(kl, ratio).backward()
    assert torch.equal(ratio.grad, torch.zeros(2))
    torch.testing.assert_close(kl.grad, torch.full((2,), 0.8 / 2))  # d/dkl of mean(kl * 0.8)


def test_distill_term_passes_gradient_through_ratio_and_kl_above_clip():
    kl = torch.tensor([0.5, 2.0], requires_grad=True)
    ratio = torch.tensor([0.9, 1.5], requires_grad=True)  # unclipped: max(ratio, 1 - eps) = ratio, also above 1 + eps
    loss = distill_term(kl, ratio)
    torch.testing.assert_close(loss, (0.5 * 0.9 + 2.0 * 1.5) / 2 * torch.ones(()))
    loss.backward()
    torch.testing.assert_close(ratio.grad, kl.detach() / 2)
    torch.testing.assert_close(kl.grad, ratio.detach() / 2)


def test_teacher_is_frozen_bit_identical_and_never_gets_gradients(tmp_path, monkeypatch):
    built = []
    original = ppd_mujoco.agent_from_checkpoint

    def spy(ckpt):
        built.append(original(ckpt))
        return built[-1]

    monkeypatch.setattr(ppd_mujoco, "agent_from_checkpoint", spy)
    args = ppd_mujoco.Args(teacher=CARTPOLE_TEACHER, num_envs=2, num_steps=32, minibatch_size=32, total_timesteps=256,
                           eval_episodes=2, output_dir=str(tmp_path), run_name="r", cuda=False)
    ppd_mujoco.main(args)
    (teacher,) = built
    saved = torch.load(CARTPOLE_TEACHER, weights_only=True)
    assert same_parameters({"actor": teacher.actor.state_dict(), "critic": teacher.critic.state_dict()}, saved)
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert not teacher.training


def test_teacher_noise_is_seeded_and_changes_every_parameter():
    agent_a = ppd_mujoco.agent_from_checkpoint(torch.load(CARTPOLE_TEACHER, weights_only=True))
    agent_b = ppd_mujoco.agent_from_checkpoint(torch.load(CARTPOLE_TEACHER, weights_only=True))
    clean = [p.detach().clone() for p in agent_a.parameters()]
    ppd_mujoco.add_teacher_noise(agent_a, 0.05, seed=7)
    ppd_mujoco.add_teacher_noise(agent_b, 0.05, seed=7)
    for p, q, c in zip(agent_a.parameters(), agent_b.parameters(), clean):
        assert torch.equal(p, q)  # same seed, same corruption
        assert (p != c).all()  # every entry moved
        assert p.numel() < 20 or 0.03 < (p - c).std() < 0.07


def test_ppd_student_reaches_ninety_percent_of_cartpole_teacher(tmp_path):
    result = run_script("ppd_mujoco.py", "--teacher", CARTPOLE_TEACHER, "--total-timesteps", "36864",
                        "--eval-episodes", "10", "--output-dir", tmp_path, "--run-name", "learn", timeout=240)
    assert result.returncode == 0, result.stderr
    evaluation = json.load(open(tmp_path / "learn" / "eval.json"))
    assert evaluation["teacher"]["mean_return"] == pytest.approx(500.0)
    assert evaluation["student"]["mean_return"] >= 0.9 * evaluation["teacher"]["mean_return"], evaluation["student"]
    assert evaluation["fraction_of_teacher"] == pytest.approx(
        evaluation["student"]["mean_return"] / evaluation["teacher"]["mean_return"])
    agreement = scalars(tmp_path / "learn")["distill/greedy_agreement"]
    assert agreement[-1][1] > 0.9 and agreement[-1][1] > agreement[0][1]
    # the student is saved in the teacher format and can itself be a teacher
    student = run_script("ppd_mujoco.py", "--teacher", tmp_path / "learn" / "model.pt", *TINY, "--output-dir", tmp_path,
                         "--run-name", "next")
    assert student.returncode == 0, student.stderr


def test_reverse_kl_and_noisy_teacher_run_and_report_both_scores(tmp_path):
    result = run_script("ppd_mujoco.py", "--teacher", CARTPOLE_TEACHER, "--kl-direction", "reverse",
                        "--teacher-noise-std", "0.05", *TINY, "--output-dir", tmp_path, "--run-name", "rev")
    assert result.returncode == 0, result.stderr
    evaluation = json.load(open(tmp_path / "rev" / "eval.json"))
    assert evaluation["teacher_noise_std"] == 0.05 and evaluation["teacher"]["episodes"] == 2
    assert evaluation["teacher_clean"]["mean_return"] == pytest.approx(500.0)  # the uncorrupted reference
    kl = scalars(tmp_path / "rev")["distill/kl"]
    assert all(np.isfinite(v) and v >= 0 for _, v in kl)


@pytest.mark.parametrize("flags, message", [
    (["--distill-coef", "-1"], "--distill-coef must be >= 0"),
    (["--teacher", "nowhere.pt"], "does not exist"),
    (["--env-id", "Hopper-v5"], "was trained on CartPole-v1"),
    (["--num-envs", "3", "--num-steps", "7", "--minibatch-size", "10"], "equal minibatches"),
])
def test_bad_input_is_one_line_error_before_anything_is_written(tmp_path, flags, message):
    args = ["--teacher", CARTPOLE_TEACHER, "--output-dir", tmp_path / "out", *flags]
    result = run_script("ppd_mujoco.py", *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.stderr
    assert not (tmp_path / "out").exists()


def test_pixel_teacher_is_refused_with_the_script_to_use(tmp_path):
    fake = torch.load(CARTPOLE_TEACHER, weights_only=True)
    fake.update(domain="atari", env_id="PongNoFrameskip-v4")
    torch.save(fake, tmp_path / "pong.pt")
    result = run_script("ppd_mujoco.py", "--teacher", tmp_path / "pong.pt", "--output-dir", tmp_path / "out")
    assert result.returncode == 2 and "ppd_atari.py" in result.stderr


def test_non_finite_loss_stops_run_naming_the_term_and_keeps_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    import gymnasium as gym

    make_envs = ppd_mujoco.make_envs
    calls = {"steps": 0}

    def reward_turns_nan_in_third_rollout(reward):
        calls["steps"] += 1
        return reward * np.nan if calls["steps"] > 2 * 32 else reward

    def make_nan_envs(*args):
        envs = make_envs(*args)  # RecordEpisodeStatistics(SyncVectorEnv): the NaN goes in between
        envs.env = gym.wrappers.vector.TransformReward(envs.env, reward_turns_nan_in_third_rollout)
        return envs

    monkeypatch.setattr(ppd_mujoco, "make_envs", make_nan_envs)
    args = ppd_mujoco.Args(teacher=CARTPOLE_TEACHER, num_envs=2, num_steps=32, minibatch_size=32, total_timesteps=640,
                           checkpoint_every=64, eval_episodes=2, output_dir=str(tmp_path), run_name="nan", cuda=False)
    with pytest.raises(SystemExit) as stopped:
        ppd_mujoco.main(args)
    assert stopped.value.code == 3
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert message.startswith("error: non-finite") and "value_loss" in message and "update 3" in message
    checkpoint = torch.load(tmp_path / "nan" / "checkpoint.pt", weights_only=True)
    assert checkpoint["global_step"] == 128  # the last good update's
    assert all(torch.isfinite(v).all() for part in ("actor", "critic") for v in checkpoint[part].values())
    assert not (tmp_path / "nan" / "model.pt").exists()
