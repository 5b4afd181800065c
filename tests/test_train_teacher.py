"""train_teacher.py: GAE, minibatch split, checkpoint format, the CLI's outputs, resume, and bad input.

Only the MLP domain (CartPole-v1, Hopper-v5) with tiny budgets: the whole file runs in 60-80 s on 2 busy cores, most
of it spent importing torch in the ~16 subprocesses.
"""

import dataclasses
import glob
import hashlib
import json
import os
import re
import shutil
import signal
import time

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import run_script, start_script

import train_teacher as tt

ROLLOUT = 2 * 32  # --num-envs 2 --num-steps 32
FAST = ["--num-envs", "2", "--num-steps", "32", "--minibatch-size", "64", "--arch", "smaller", "--eval-episodes", "2"]
CARTPOLE = ["--env-id", "CartPole-v1", *FAST, "--checkpoint-every", str(ROLLOUT)]  # the flags of the shared CartPole run


def teacher(*args, **kw):
    return run_script("train_teacher.py", *args, **kw)


def tree(path) -> dict:
    """Every file under path with its size, mtime and content hash: equal before and after = nothing written."""
    out = {}
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            p = os.path.join(root, name)
            st = os.stat(p)
            digest = hashlib.sha256(open(p, "rb").read()).hexdigest() if os.path.isfile(p) else "dir"
            out[os.path.relpath(p, path)] = (st.st_size, st.st_mtime_ns, digest)
    return out


def scalar_steps(run_dir: str, tag: str) -> list:
    """Steps of `tag` over all event files of the run, each file read on its own and without the accumulator's
    purge of out-of-order steps (which would hide a step logged twice)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps = []
    for path in sorted(glob.glob(os.path.join(run_dir, "events.out.tfevents.*"))):
        acc = EventAccumulator(path, size_guidance={"scalars": 0}, purge_orphaned_data=False)
        acc.Reload()
        if tag in acc.Tags()["scalars"]:
            steps += [e.step for e in acc.Scalars(tag)]
    return sorted(steps)


# ----------------------------------------------------------------------------------------------------
# 1. GAE
# ----------------------------------------------------------------------------------------------------
def test_gae_cuts_at_termination_and_at_bootstrapped_truncation():
    gamma, lam = 0.9, 0.8  # gamma * lambda = 0.72
    # env 0: terminated at t=1 (no bootstrap); the next episode starts at t=2 and runs past the rollout (V=1.0)
    # env 1: truncated at t=2: its reward 1.0 already holds + gamma * V(final obs) = 0.9 * 2.0 (added by the
    #        rollout), so GAE cuts there too; a new episode starts at t=3 and runs past the rollout (V=0.5)
    rewards = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 1.0 + 0.9 * 2.0], [1.0, 1.0]], dtype=torch.float64)
    values = torch.tensor([[0.5, 1.0], [0.4, 0.5], [0.3, 0.25], [0.2, 0.0]], dtype=torch.float64)
    dones = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], dtype=torch.float64)
    last_value = torch.tensor([1.0, 0.5], dtype=torch.float64)

    # env 0, worked backwards (delta_t = r_t + gamma * V_{t+1} * (1 - done_t) - V_t; A_t = delta_t + 0.72 * (1 - done_t) * A_{t+1})
    #   t=3: delta = 1 + 0.9*1.0 - 0.2 = 1.7                    A = 1.7
    #   t=2: delta = 1 + 0.9*0.2 - 0.3 = 0.88                   A = 0.88 + 0.72*1.7 = 2.104
    #   t=1: done:  delta = 1 - 0.4 = 0.6                        A = 0.6  (nothing from t=2 leaks back)
    #   t=0: delta = 1 + 0.9*0.4 - 0.5 = 0.86                   A = 0.86 + 0.72*0.6 = 1.292
    # env 1:
    #   t=3: delta = 1 + 0.9*0.5 - 0.0 = 1.45                   A = 1.45
    #   t=2: done:  delta = 2.8 - 0.25 = 2.55                    A = 2.55 (no gamma*V(obs of the next episode))
    #   t=1: delta = 0 + 0.9*0.25 - 0.5 = -0.275                A = -0.275 + 0.72*2.55 = 1.561
    #   t=0: delta = 0 + 0.9*0.5 - 1.0 = -0.55                  A = -0.55 + 0.72*1.561 = 0.57392
    expected_adv = torch.tensor([[1.292, 0.57392], [0.6, 1.561], [2.104, 2.55], [1.7, 1.45]], dtype=torch.float64)
    # returns = advantages + values
    expected_ret = torch.tensor([[1.792, 1.57392], [1.0, 2.061], [2.404, 2.8], [1.9, 1.45]], dtype=torch.float64)

    adv, ret = tt.compute_gae(rewards, values, dones, last_value, gamma, lam)
    torch.testing.assert_close(adv, expected_adv, rtol=0, atol=1e-12)
    torch.testing.assert_close(ret, expected_ret, rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------------------------------
# 2. minibatch split
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("batch, requested, expected", [
    (18 * 64, 512, (2, 576)),    # the paper's PPD rollout: 1152 samples -> 2 x 576 (SPEC section 2)
    (18 * 256, 512, (9, 512)),   # the teacher's rollout divides exactly
    (18 * 64, 400, (3, 384)),    # 384 is closer to 400 than 576 is (rounds, does not floor)
    (24 * 64, 1000, (2, 768)),   # 768 is closer to 1000 than 1536 is
    (64, 512, (1, 64)),          # a rollout smaller than the request is one minibatch
])
def test_minibatch_split_gives_whole_number_of_equal_minibatches_closest_to_request(batch, requested, expected):
    assert tt.minibatch_split(batch, requested) == expected


@pytest.mark.parametrize("batch, requested", [(7 * 3, 10), (18 * 64, 0)])
def test_minibatch_split_refuses_what_does_not_split(batch, requested):
    with pytest.raises(tt.UsageError):
        tt.minibatch_split(batch, requested)  # 21 / 10 -> 2 minibatches of 10.5


# ----------------------------------------------------------------------------------------------------
# 3. checkpoint round trip
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("env_id", ["Hopper-v5", "CartPole-v1"])
def test_checkpoint_round_trip_keeps_policy_value_and_obs_normalization(env_id, tmp_path):
    env = gym.make(env_id)
    obs_space, action_space = env.observation_space, env.action_space
    args = tt.Args(env_id=env_id, arch="smaller")
    torch.manual_seed(0)
    agent = tt.Agent("mlp", tt.ARCHS["mlp"]["smaller"], obs_space.shape, action_space)
    if isinstance(action_space, gym.spaces.Box):
        with torch.no_grad():  # a log-std that is not the initial zero, so losing it would show
            agent.actor.log_std.copy_(torch.linspace(-1.0, 0.5, agent.actor.log_std.shape[1]))
    rng = np.random.default_rng(0)
    obs_rms = tt.RunningMeanStd(obs_space.shape)
    for _ in range(3):
        obs_rms.update(rng.normal(2.0, 3.0, size=(16,) + obs_space.shape))

    path = str(tmp_path / "model.pt")
    tt.atomic_save(tt.model_dict(agent, "mlp", args, obs_space.shape, action_space, obs_rms, global_step=1234), path)
    assert os.listdir(tmp_path) == ["model.pt"]  # no temporary file left behind

    torch.manual_seed(1)  # a fresh agent would have other weights: the loaded one must not be a fresh one
    ckpt = tt.load_checkpoint(path, env_id=env_id, obs_shape=obs_space.shape, action_space=action_space)
    loaded = tt.agent_from_checkpoint(ckpt)
    loaded_rms = tt.RunningMeanStd(obs_space.shape).load_state_dict(ckpt["obs_rms"])
    fresh = tt.Agent("mlp", tt.ARCHS["mlp"]["smaller"], obs_space.shape, action_space)

    raw = rng.normal(2.0, 3.0, size=(8,) + obs_space.shape)
    x = torch.as_tensor(obs_rms.normalize(raw))
    np.testing.assert_array_equal(loaded_rms.normalize(raw), obs_rms.normalize(raw))
    np.testing.assert_array_equal(loaded_rms.mean, obs_rms.mean)
    np.testing.assert_array_equal(loaded_rms.var, obs_rms.var)
    assert loaded_rms.count == obs_rms.count
    assert not np.allclose(obs_rms.mean, 0) and not np.allclose(obs_rms.var, 1)

    with torch.no_grad():
        d0, d1, df = agent.actor(x), loaded.actor(x), fresh.actor(x)
        if isinstance(action_space, gym.spaces.Box):
            torch.testing.assert_close(d1.base_dist.loc, d0.base_dist.loc, rtol=0, atol=0)
            torch.testing.assert_close(d1.base_dist.scale, d0.base_dist.scale, rtol=0, atol=0)
            assert not torch.allclose(df.base_dist.loc, d0.base_dist.loc)
        else:
            torch.testing.assert_close(d1.logits, d0.logits, rtol=0, atol=0)
            assert not torch.allclose(df.logits, d0.logits)
        torch.testing.assert_close(loaded.get_value(x), agent.get_value(x), rtol=0, atol=0)
    assert ckpt["global_step"] == 1234 and ckpt["env_id"] == env_id and ckpt["args"]["arch"] == "smaller"


def test_load_checkpoint_refuses_another_env(tmp_path):
    env = gym.make("CartPole-v1")
    agent = tt.Agent("mlp", tt.ARCHS["mlp"]["smaller"], env.observation_space.shape, env.action_space)
    path = str(tmp_path / "model.pt")
    tt.atomic_save(tt.model_dict(agent, "mlp", tt.Args(env_id="CartPole-v1", arch="smaller"), env.observation_space.shape,
                                 env.action_space, tt.RunningMeanStd(env.observation_space.shape), 0), path)
    with pytest.raises(tt.UsageError, match="CartPole-v1"):
        tt.load_checkpoint(path, env_id="Acrobot-v1")
    with pytest.raises(tt.UsageError):
        tt.load_checkpoint(path, obs_shape=(6,))
    with pytest.raises(tt.UsageError):
        tt.load_checkpoint(path, action_space=gym.spaces.Discrete(3))


# ----------------------------------------------------------------------------------------------------
# 4. a short run writes everything a run should write
# ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cartpole_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cartpole")
    result = teacher(*CARTPOLE, "--total-timesteps", 2 * ROLLOUT, "--output-dir", out, "--run-name", "run")
    assert result.returncode == 0, result.stderr
    return out / "run"


@pytest.fixture(scope="module")
def hopper_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("hopper")
    result = teacher("--env-id", "Hopper-v5", *FAST, "--total-timesteps", 3 * ROLLOUT, "--output-dir", out,
                     "--run-name", "run")
    assert result.returncode == 0, result.stderr
    return out / "run"


def test_cli_run_writes_model_checkpoint_events_and_eval(cartpole_run):
    files = os.listdir(cartpole_run)
    assert {"model.pt", "checkpoint.pt", "eval.json"} <= set(files)
    assert glob.glob(str(cartpole_run / "events.out.tfevents.*"))
    assert not [f for f in files if ".tmp" in f]  # atomic saves leave no temporary file

    with open(cartpole_run / "eval.json") as f:
        evaluation = json.load(f)
    assert evaluation["episodes"] == 2 == len(evaluation["returns"])
    assert evaluation["mean_return"] == pytest.approx(np.mean(evaluation["returns"]), rel=1e-12)
    assert evaluation["std_return"] == pytest.approx(np.std(evaluation["returns"]), rel=1e-12, abs=1e-12)
    assert all(r >= 1 for r in evaluation["returns"])  # CartPole pays 1 per step: these are real episodes

    model = tt.load_checkpoint(str(cartpole_run / "model.pt"), env_id="CartPole-v1")
    assert model["eval"] == evaluation
    assert model["global_step"] == evaluation["global_step"] == 2 * ROLLOUT
    assert "train_state" not in model  # the final model is the policy only
    assert "train_state" in tt.load_checkpoint(str(cartpole_run / "checkpoint.pt"), env_id="CartPole-v1")
    assert scalar_steps(str(cartpole_run), "charts/SPS") == [ROLLOUT, 2 * ROLLOUT]


def test_hopper_model_stores_obs_normalization_statistics(hopper_run):
    model = tt.load_checkpoint(str(hopper_run / "model.pt"), env_id="Hopper-v5")
    rms = model["obs_rms"]
    assert tuple(rms["mean"].shape) == tuple(rms["var"].shape) == (11,)
    # updated with every observation collected: the reset (2 envs) and then 3 rollouts of 64 steps
    assert 3 * ROLLOUT <= rms["count"] <= 3 * ROLLOUT + 2 + 1e-3
    assert rms["mean"].abs().max() > 1e-3 and (rms["var"] - 1).abs().max() > 1e-3
    assert torch.all(rms["var"] > 0)
    assert tuple(model["obs_shape"]) == (11,) and model["action_space"]["shape"] == [3]


def test_frozen_obs_norm_keeps_the_given_statistics_unchanged(hopper_run, tmp_path):
    result = teacher("--env-id", "Hopper-v5", *FAST, "--total-timesteps", ROLLOUT, "--output-dir", tmp_path,
                     "--run-name", "frozen", "--frozen-obs-norm", hopper_run / "model.pt")
    assert result.returncode == 0, result.stderr
    given = torch.load(hopper_run / "model.pt", weights_only=True)["obs_rms"]
    kept = torch.load(tmp_path / "frozen" / "model.pt", weights_only=True)["obs_rms"]
    assert torch.equal(given["mean"], kept["mean"]) and torch.equal(given["var"], kept["var"])
    assert given["count"] == kept["count"]


# ----------------------------------------------------------------------------------------------------
# 5. resume
# ----------------------------------------------------------------------------------------------------
def test_resume_continues_to_the_new_total_without_repeating_a_step(cartpole_run, tmp_path):
    run_dir = tmp_path / "r"  # a copy of a finished 2-rollout run, resumed to 4 rollouts
    shutil.copytree(cartpole_run, run_dir)
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["global_step"] == 2 * ROLLOUT

    result = teacher(*CARTPOLE, "--total-timesteps", 4 * ROLLOUT, "--resume", run_dir)
    assert result.returncode == 0, result.stderr
    assert f"at step {2 * ROLLOUT}" in result.stdout
    assert torch.load(run_dir / "model.pt", weights_only=True)["global_step"] == 4 * ROLLOUT
    assert json.load(open(run_dir / "eval.json"))["global_step"] == 4 * ROLLOUT
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["global_step"] == 4 * ROLLOUT
    assert scalar_steps(str(run_dir), "charts/SPS") == [ROLLOUT * k for k in range(1, 5)]
    assert os.listdir(tmp_path) == ["r"]  # resumed in place, no second run folder


def test_sigterm_writes_a_checkpoint_and_the_run_resumes_to_its_total(tmp_path):
    total = 30 * ROLLOUT
    common = [*CARTPOLE, "--total-timesteps", total]
    proc = start_script("train_teacher.py", *common, "--output-dir", tmp_path, "--run-name", "r")
    run_dir = tmp_path / "r"
    try:
        deadline = time.time() + 60
        while not (run_dir / "checkpoint.pt").exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, "the run ended before it could be interrupted: " + proc.stderr.read()[-2000:]
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert "--resume" in stderr
    assert not (run_dir / "model.pt").exists() and not (run_dir / "eval.json").exists()  # it did not finish
    ckpt = tt.load_checkpoint(str(run_dir / "checkpoint.pt"), env_id="CartPole-v1")
    stopped_at = ckpt["global_step"]
    assert stopped_at % ROLLOUT == 0 and 0 < stopped_at < total
    assert f"at step {stopped_at};" in stderr  # the message names the step the checkpoint holds

    resumed = teacher(*common, "--resume", run_dir)
    assert resumed.returncode == 0, resumed.stderr
    assert f"at step {stopped_at}" in resumed.stdout
    assert torch.load(run_dir / "model.pt", weights_only=True)["global_step"] == total
    # every rollout logged once, those before the signal included (the interrupted run's log must reach the disk)
    assert scalar_steps(str(run_dir), "charts/SPS") == [ROLLOUT * k for k in range(1, total // ROLLOUT + 1)]


def test_run_stopped_during_final_evaluation_is_finished_by_resume(cartpole_run, tmp_path):
    run_dir = tmp_path / "r"
    shutil.copytree(cartpole_run, run_dir)
    os.remove(run_dir / "model.pt")  # what a kill during the final evaluation leaves: the final checkpoint only
    os.remove(run_dir / "eval.json")
    result = teacher(*CARTPOLE, "--total-timesteps", 2 * ROLLOUT, "--resume", run_dir)
    assert result.returncode == 0, result.stderr
    assert torch.load(run_dir / "model.pt", weights_only=True)["global_step"] == 2 * ROLLOUT
    assert scalar_steps(str(run_dir), "charts/SPS") == [ROLLOUT, 2 * ROLLOUT]  # evaluated, nothing trained again


# ----------------------------------------------------------------------------------------------------
# 6. bad input: one line on stderr, non-zero exit, nothing written
# ----------------------------------------------------------------------------------------------------
def assert_refused(result, *words):
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:"), lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])


def test_unknown_env_id_is_refused_with_a_suggestion(tmp_path):
    result = teacher("--env-id", "Hoper-v5", *FAST, "--total-timesteps", ROLLOUT, "--output-dir", tmp_path / "out")
    assert_refused(result, "Hoper-v5", "Hopper-v5")
    assert os.listdir(tmp_path) == []


def test_minibatch_split_that_does_not_divide_is_refused(tmp_path):
    # 7 x 3 = 21 samples, 10 requested -> 2 minibatches of 10.5
    result = teacher("--env-id", "CartPole-v1", "--num-envs", "7", "--num-steps", "3", "--minibatch-size", "10",
                     "--total-timesteps", "21", "--output-dir", tmp_path / "out")
    assert_refused(result, "21", "minibatch")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("damage", ["random_bytes", "truncated"])
def test_unreadable_frozen_obs_norm_checkpoint_is_refused(damage, cartpole_run, tmp_path):
    bad = tmp_path / "bad.pt"
    if damage == "random_bytes":
        bad.write_bytes(np.random.default_rng(0).bytes(4096))
    else:
        data = (cartpole_run / "model.pt").read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    before = tree(tmp_path)
    result = teacher("--env-id", "CartPole-v1", *FAST, "--total-timesteps", ROLLOUT, "--output-dir", tmp_path / "out",
                     "--frozen-obs-norm", bad)
    assert_refused(result, str(bad))
    assert tree(tmp_path) == before


def test_frozen_obs_norm_checkpoint_of_another_env_is_refused(cartpole_run, tmp_path):
    before = tree(cartpole_run)
    result = teacher("--env-id", "Hopper-v5", *FAST, "--total-timesteps", ROLLOUT, "--output-dir", tmp_path / "out",
                     "--frozen-obs-norm", cartpole_run / "model.pt")
    assert_refused(result, "CartPole-v1", "Hopper-v5")
    assert os.listdir(tmp_path) == []
    assert tree(cartpole_run) == before


def test_output_folder_that_cannot_be_created_is_refused(tmp_path):
    # tests run as root, who may write into a chmod 555 folder; but no one can make a folder inside a file
    (tmp_path / "afile").write_text("a file, not a folder")
    before = tree(tmp_path)
    out = tmp_path / "afile" / "sub"
    result = teacher("--env-id", "CartPole-v1", *FAST, "--total-timesteps", ROLLOUT, "--output-dir", out)
    assert_refused(result, str(out))
    assert tree(tmp_path) == before


def test_existing_run_folder_is_never_overwritten(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "marker.txt").write_text("keep me")
    before = tree(tmp_path)
    result = teacher("--env-id", "CartPole-v1", *FAST, "--total-timesteps", ROLLOUT, "--output-dir", tmp_path,
                     "--run-name", "x")
    assert_refused(result, str(tmp_path / "x"), "exists")
    assert tree(tmp_path) == before


# ----------------------------------------------------------------------------------------------------
# 7. --help
# ----------------------------------------------------------------------------------------------------
def test_help_mentions_every_args_field_and_the_minibatch_rule():
    result = teacher("--help")
    assert result.returncode == 0, result.stderr
    # the flags in the options column, not mentions in another flag's description
    listed = set()
    for line in result.stdout.splitlines():
        m = re.match(r"│ (-h, )?(--[\w-]+(?:, --[\w-]+)*)", line)
        if m:
            listed.update(m.group(2).split(", "))
    missing = [f.name for f in dataclasses.fields(tt.Args) if "--" + f.name.replace("_", "-") not in listed]
    assert listed and not missing, missing
    text = re.sub(r"[\s│]+", " ", result.stdout)  # undo the help box's line wrapping
    assert "equal minibatches" in text


@pytest.mark.parametrize("domain, obs_shape, n_actions, arch, expected", [
    ("atari", (4, 84, 84), 6, "same", 1.09e6), ("atari", (4, 84, 84), 6, "larger", 8.33e6),
    ("procgen", (3, 64, 64), 15, "same", 626.0e3), ("procgen", (3, 64, 64), 15, "larger", 4.60e6),
])
def test_impala_actor_parameter_counts_match_the_paper(domain, obs_shape, n_actions, arch, expected):
    import gymnasium as gym

    agent = tt.Agent(domain, tt.ARCHS[domain][arch], obs_shape, gym.spaces.Discrete(n_actions))
    count = sum(p.numel() for p in agent.actor.parameters())
    assert abs(count - expected) / expected < 0.01, count
    assert sum(p.numel() for p in agent.critic.parameters()) == count - (n_actions - 1) * (agent.actor.body.head.in_features + 1)
