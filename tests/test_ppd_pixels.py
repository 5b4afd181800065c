"""ppd_atari.py and ppd_procgen.py: lambda 0 is train_teacher.py's PPO bit for bit, the environment comes from the
teacher's checkpoint, what a run writes, human-normalized scores, the Procgen level split, and a student that
learns a peaked teacher's greedy actions.

Nature-CNN students and teachers with tiny budgets (2 envs x 16 steps x 2 rollouts); each Atari run evaluates one
full game of Pong (about 760 steps) for the student and one for the teacher. The whole file: 2 min 20 s on the 2
shared cores (load about 2), most of it in the 7 script runs and the 45-second distillation.
"""

import glob
import json
import os
import shutil

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import run_script

import ppd_atari
import ppd_procgen
import train_teacher as tt

ROLLOUT = 2 * 16  # --num-envs 2 --num-steps 16
TINY = ["--num-envs", "2", "--num-steps", "16", "--minibatch-size", "16", "--eval-episodes", "1",
        "--checkpoint-every", str(ROLLOUT)]  # and --total-timesteps, 2 rollouts unless said
# The tiny teachers use a non-default env config, so that a script that ignored the teacher's config would
# train on another env and fail the lambda-0 comparison: frame skip 3 on Atari, levels [5, 55) on Procgen.
DOMAINS = {
    "atari": {"script": "ppd_atari.py", "module": ppd_atari, "env_id": "PongNoFrameskip-v4", "obs_shape": (4, 84, 84),
              "actions": 6, "teacher_args": {"frame_skip": 3}, "ppo_flags": ["--frame-skip", "3"]},
    "procgen": {"script": "ppd_procgen.py", "module": ppd_procgen, "env_id": "procgen:coinrun", "obs_shape": (3, 64, 64),
                "actions": 15, "teacher_args": {"procgen_start_level": 5, "procgen_num_levels": 50},
                "ppo_flags": ["--procgen-start-level", "5", "--procgen-num-levels", "50"]},
}


def scalars(run_dir, tag: str) -> list:
    """[(step, value)] of `tag` over all event files of the run."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = []
    for path in sorted(glob.glob(os.path.join(str(run_dir), "events.out.tfevents.*"))):
        acc = EventAccumulator(path, size_guidance={"scalars": 0}, purge_orphaned_data=False)
        acc.Reload()
        if tag in acc.Tags()["scalars"]:
            out += [(e.step, e.value) for e in acc.Scalars(tag)]
    return sorted(out)


def scalar_tags(run_dir) -> set:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for path in glob.glob(os.path.join(str(run_dir), "events.out.tfevents.*")):
        acc = EventAccumulator(path, size_guidance={"scalars": 0})
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    return tags


def assert_refused(result, *words):
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:"), lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])


# ----------------------------------------------------------------------------------------------------
# runs shared by the tests below: per domain, a tiny teacher, PPO (train_teacher.py), PPD with lambda 0 and 1
# ----------------------------------------------------------------------------------------------------
def save_tiny_teacher(domain: str, path: str) -> None:
    """An untrained Nature-CNN agent in train_teacher.py's checkpoint format, with a non-default env config."""
    d = DOMAINS[domain]
    action_space = gym.spaces.Discrete(d["actions"])
    torch.manual_seed(12345)  # not the students' seed: the teacher differs from every student
    agent = tt.Agent(domain, tt.ARCHS[domain]["smaller"], d["obs_shape"], action_space)
    args = tt.Args(env_id=d["env_id"], arch="smaller", **d["teacher_args"])
    tt.atomic_save(tt.model_dict(agent, domain, args, d["obs_shape"], action_space, None, 0), path)


@pytest.fixture(scope="module", params=["atari", "procgen"])
def runs(request, tmp_path_factory):
    domain = request.param
    d = DOMAINS[domain]
    out = tmp_path_factory.mktemp(domain)
    teacher = str(out / "teacher.pt")
    save_tiny_teacher(domain, teacher)
    ppo = run_script("train_teacher.py", "--env-id", d["env_id"], "--arch", "smaller", "--gamma", "0.999",
                     "--ent-coef", "0.0", *d["ppo_flags"], *TINY, "--total-timesteps", 2 * ROLLOUT,
                     "--output-dir", out, "--run-name", "ppo")
    assert ppo.returncode == 0, ppo.stderr
    ppd = {}
    for coef in ("0", "1"):
        result = run_script(d["script"], "--teacher", teacher, "--student-arch", "smaller", "--distill-coef", coef, *TINY,
                            "--total-timesteps", 2 * ROLLOUT, "--output-dir", out, "--run-name", f"ppd{coef}")
        assert result.returncode == 0, result.stderr
        ppd[coef] = out / f"ppd{coef}"
    return {"domain": domain, "teacher": teacher, "ppo": out / "ppo", "ppd0": ppd["0"], "ppd1": ppd["1"]}


# ----------------------------------------------------------------------------------------------------
# (a) lambda 0 = PPO
# ----------------------------------------------------------------------------------------------------
def test_lambda_zero_reproduces_train_teacher_ppo_bit_for_bit(runs):
    ppo = torch.load(runs["ppo"] / "checkpoint.pt", weights_only=True)
    ppd0 = torch.load(runs["ppd0"] / "checkpoint.pt", weights_only=True)
    assert ppo["global_step"] == ppd0["global_step"] == 2 * ROLLOUT
    for net in ("actor", "critic"):
        assert ppo[net].keys() == ppd0[net].keys()
        for name, tensor in ppo[net].items():
            assert torch.equal(tensor, ppd0[net][name]), f"{net}.{name} differs"

    compared = [t for t in scalar_tags(runs["ppo"]) if t.startswith("losses/") or t in ("charts/learning_rate", "charts/episodic_return")]
    assert {"losses/policy_loss", "losses/value_loss", "losses/entropy", "losses/approx_kl", "losses/clipfrac"} <= set(compared)
    for tag in compared:
        expected, got = scalars(runs["ppo"], tag), scalars(runs["ppd0"], tag)
        assert [s for s, _ in got] == [s for s, _ in expected] == [ROLLOUT, 2 * ROLLOUT], tag
        np.testing.assert_array_equal([v for _, v in got], [v for _, v in expected], err_msg=tag)

    # the distillation term was computed (the teacher is not the student) and only its weight 0 kept it out
    assert all(v > 1e-4 for _, v in scalars(runs["ppd0"], "distill/kl"))


def test_distillation_term_changes_the_update_when_lambda_is_one(runs):
    ppd0 = torch.load(runs["ppd0"] / "checkpoint.pt", weights_only=True)
    ppd1 = torch.load(runs["ppd1"] / "checkpoint.pt", weights_only=True)
    assert not all(torch.equal(ppd0["actor"][k], ppd1["actor"][k]) for k in ppd0["actor"])
    assert all(v > 0 for _, v in scalars(runs["ppd1"], "losses/distill_loss"))


# ----------------------------------------------------------------------------------------------------
# (b) what a run writes
# ----------------------------------------------------------------------------------------------------
def test_short_run_writes_checkpoint_model_events_and_eval(runs):
    run_dir, domain = runs["ppd1"], runs["domain"]
    module = DOMAINS[domain]["module"]
    files = os.listdir(run_dir)
    assert {"model.pt", "checkpoint.pt", "eval.json"} <= set(files)
    assert glob.glob(str(run_dir / "events.out.tfevents.*"))
    assert not [f for f in files if ".tmp" in f]
    for tag in ("losses/distill_loss", "distill/kl", "distill/greedy_agreement", "losses/policy_loss", "charts/SPS"):
        assert [s for s, _ in scalars(run_dir, tag)] == [ROLLOUT, 2 * ROLLOUT], tag
    assert all(0.0 <= v <= 1.0 for _, v in scalars(run_dir, "distill/greedy_agreement"))

    evaluation = json.load(open(run_dir / "eval.json"))
    model = module.load_checkpoint(str(run_dir / "model.pt"), env_id=DOMAINS[domain]["env_id"])
    assert "train_state" not in model and "train_state" in torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert model["global_step"] == evaluation["global_step"] == 2 * ROLLOUT
    assert model["domain"] == domain and model["arch"] == "smaller"
    teacher_config = torch.load(runs["teacher"], weights_only=True)["env_config"]
    assert model["env_config"] == teacher_config  # the student can be the next teacher, in the same env
    module.agent_from_checkpoint(model)  # and it loads as one

    assert evaluation["seed"] == 1 and evaluation["teacher_checkpoint"] == runs["teacher"]
    if domain == "atari":
        assert evaluation["frame_skip"] == 3 and evaluation["deterministic"] is True
        normalized = evaluation["human_normalized"]
        assert (normalized["random"], normalized["human"]) == (-20.7, 14.6)
        for who in ("student", "teacher"):
            e = evaluation[who]
            assert e["episodes"] == 1 == len(e["returns"])
            assert -21 <= e["returns"][0] <= 21 and e["returns"][0] != 0  # a full game of Pong: someone reached 21
            assert normalized[who] == pytest.approx((e["mean_return"] + 20.7) / (14.6 + 20.7), rel=1e-12)
        assert evaluation["fraction_of_teacher_measure"] == "human_normalized"
        assert evaluation["fraction_of_teacher"] == pytest.approx(normalized["student"] / normalized["teacher"], rel=1e-12)
        assert model["eval"]["human_normalized"] == normalized["student"]
    else:
        assert evaluation["deterministic"] is False
        test, train = evaluation["test_levels"], evaluation["train_levels"]
        assert (test["start_level"], test["num_levels"]) == (55, 100_000)  # right after the teacher's levels [5, 55)
        assert (train["start_level"], train["num_levels"]) == (5, 50)
        for block in (test, train):
            for who in ("student", "teacher"):
                assert block[who]["episodes"] == 1 == len(block[who]["returns"])
                assert block[who]["mean_return"] in (0.0, 10.0)  # CoinRun pays 10 for the coin, else 0
        assert model["eval"]["train_levels"] == train["student"]
    assert model["eval"]["mean_return"] == (evaluation["student"] if domain == "atari" else evaluation["test_levels"]["student"])["mean_return"]


def test_resume_continues_to_the_new_total_without_repeating_a_step(runs, tmp_path):
    # Procgen sets each env to its saved state; Atari restarts the games, seeded by the step
    run_dir = tmp_path / "r"
    shutil.copytree(runs["ppd1"], run_dir)
    result = run_script(DOMAINS[runs["domain"]]["script"], "--teacher", runs["teacher"], "--student-arch", "smaller",
                        "--distill-coef", "1", *TINY, "--total-timesteps", 3 * ROLLOUT, "--resume", run_dir)
    assert result.returncode == 0, result.stderr
    assert f"at step {2 * ROLLOUT}" in result.stdout
    assert torch.load(run_dir / "model.pt", weights_only=True)["global_step"] == 3 * ROLLOUT
    assert [s for s, _ in scalars(run_dir, "distill/kl")] == [ROLLOUT, 2 * ROLLOUT, 3 * ROLLOUT]
    assert json.load(open(run_dir / "eval.json"))["global_step"] == 3 * ROLLOUT


@pytest.mark.parametrize("domain", ["atari", "procgen"])
def test_missing_teacher_is_refused_with_a_hint_to_train_one(domain, tmp_path):
    d = DOMAINS[domain]
    assert d["module"].DEFAULT_TEACHER == {"atari": "teachers/PongNoFrameskip-v4.pt", "procgen": "teachers/procgen-coinrun.pt"}[domain]
    missing = str(tmp_path / "no-such-teacher.pt")
    result = run_script(d["script"], "--teacher", missing, *TINY, "--total-timesteps", 2 * ROLLOUT, "--output-dir", tmp_path / "out")
    assert_refused(result, missing, "train_teacher.py")
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------------------------------
# (c) human-normalized scores
# ----------------------------------------------------------------------------------------------------
# game: (random, human, a raw score, its human-normalized score computed by hand)
PAPER_GAMES = {
    "atlantis": (12850.0, 29028.1, 45206.2, 2.0),           # (45206.2 - 12850) / (29028.1 - 12850) = 32356.2 / 16178.1
    "beam_rider": (363.9, 16926.5, 8645.2, 0.5),            # 8281.3 / 16562.6
    "crazy_climber": (10780.5, 35829.4, 110976.1, 4.0),     # 100195.6 / 25048.9
    "demon_attack": (152.1, 1971.0, 0.0, -0.0836220),       # -152.1 / 1818.9
    "enduro": (0.0, 860.5, 1721.0, 2.0),
    "freeway": (0.0, 29.6, 22.2, 0.75),
    "ms_pacman": (307.3, 6951.6, 1636.16, 0.2),             # 1328.86 / 6644.3
    "pong": (-20.7, 14.6, 21.0, 1.1813031),                 # 41.7 / 35.3
    "qbert": (163.9, 13455.0, 6809.45, 0.5),                # 6645.55 / 13291.1
    "seaquest": (68.4, 42054.7, 2167.715, 0.05),            # 2099.315 / 41986.3
    "zaxxon": (32.5, 9173.3, 18314.1, 2.0),                 # 18281.6 / 9140.8
}


@pytest.mark.parametrize("game", sorted(PAPER_GAMES))
def test_human_normalized_score_maps_random_to_0_human_to_1_and_a_known_score_right(game):
    random_score, human_score, raw, expected = PAPER_GAMES[game]
    assert ppd_atari.HUMAN_RANDOM_SCORES[game] == (random_score, human_score)
    assert ppd_atari.human_normalized(game, random_score) == 0.0
    assert ppd_atari.human_normalized(game, human_score) == pytest.approx(1.0, rel=1e-12)
    assert ppd_atari.human_normalized(game, raw) == pytest.approx(expected, rel=1e-6)


def test_human_normalized_table_covers_the_paper_games_by_their_ale_rom_names():
    from ale_py.roms import get_all_rom_ids

    ids = ["AtlantisNoFrameskip-v4", "BeamRiderNoFrameskip-v4", "CrazyClimberNoFrameskip-v4", "DemonAttackNoFrameskip-v4",
           "EnduroNoFrameskip-v4", "FreewayNoFrameskip-v4", "MsPacmanNoFrameskip-v4", "PongNoFrameskip-v4",
           "QbertNoFrameskip-v4", "SeaquestNoFrameskip-v4", "ZaxxonNoFrameskip-v4"]
    assert sorted(ppd_atari.atari_game(i) for i in ids) == sorted(ppd_atari.HUMAN_RANDOM_SCORES) == sorted(PAPER_GAMES)
    assert set(ppd_atari.HUMAN_RANDOM_SCORES) <= set(get_all_rom_ids())
    assert ppd_atari.atari_game("ALE/MsPacman-v5") == "ms_pacman"
    assert ppd_atari.human_normalized("breakout", 30.0) is None  # outside the paper's table: no normalized score


# ----------------------------------------------------------------------------------------------------
# (d) Procgen: evaluation on unseen levels only, training on the teacher's levels only
# ----------------------------------------------------------------------------------------------------
class UniformActor(torch.nn.Module):
    """Random play at no network cost: the level split does not depend on the policy."""

    def forward(self, obs):
        return torch.distributions.Categorical(logits=torch.zeros(obs.shape[0], 15))


def level_seeds(envs) -> np.ndarray:
    """The current level seed of each env of a ProcgenVecEnv (procgen's info, read only here: it is slow)."""
    return np.array([d["level_seed"] for d in envs.env.get_info()], dtype=np.int64)


def test_procgen_evaluation_serves_only_unseen_levels_and_training_only_the_teachers_levels(monkeypatch):
    config = {"frame_skip": 4, "procgen_start_level": 5, "procgen_num_levels": 50, "procgen_distribution_mode": "easy"}
    seen = {"test": [], "train": []}

    class Recording(ppd_procgen.ProcgenVecEnv):  # records the level of every episode start, the first ones included
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.record = seen[self.split]
            self.record.extend(level_seeds(self))

        def step(self, actions):
            out = super().step(actions)
            self.record.extend(level_seeds(self)[out[2]])  # out[2]: terminated = a new episode starts now
            return out

    def make_recording_envs(env_id, num_envs, seed, env_config, levels="train"):
        Recording.split = levels
        start, count = ppd_procgen.level_range(env_config, levels)
        return Recording(env_id.split(":", 1)[1], num_envs, seed, count, start, env_config["procgen_distribution_mode"])

    # the evaluation as main() runs it: its own env factory, with the level split main() asks for
    original = ppd_procgen.make_envs
    monkeypatch.setattr(ppd_procgen, "make_envs", make_recording_envs)
    returns, _ = ppd_procgen.evaluate(UniformActor(), "procgen:coinrun", config, "test", episodes=40, seed=10_001,
                                      device="cpu", num_envs=40)
    assert len(returns) == 40
    monkeypatch.setattr(ppd_procgen, "make_envs", original)
    assert len(seen["test"]) >= 40 + 40  # every env's first level and the level after its episode
    assert min(seen["test"]) >= 55, sorted(seen["test"])[:5]  # never a training level (or one below them)
    assert len(set(seen["test"])) >= 70  # really many levels, not one unseen level again and again

    # the training env, built as main() builds it (default split), draws from the teacher's levels only
    envs = ppd_procgen.make_envs("procgen:coinrun", 64, 1, config)
    train_seeds = list(level_seeds(envs))
    rng = np.random.default_rng(0)
    for _ in range(150):
        _, _, terminated, _, _ = envs.step(rng.integers(0, 15, 64))
        if terminated.any():
            train_seeds += list(level_seeds(envs)[terminated])
    envs.close()
    assert len(train_seeds) > 64  # the first levels and those after some episodes ended
    assert set(train_seeds) <= set(range(5, 55))
    assert len(set(train_seeds)) >= 30


# ----------------------------------------------------------------------------------------------------
# a short distillation: the student learns a peaked random teacher's state-dependent greedy actions
# ----------------------------------------------------------------------------------------------------
def test_student_learns_the_greedy_actions_of_a_peaked_teacher(tmp_path):
    """benchmarks/pixel_distill_check.py in short (results/pixel_distill_check.md has the full check): a Nature-CNN
    student distils a random IMPALA teacher on coinrun for 15 small rollouts (3840 steps, about 40 s here)."""
    from benchmarks import pixel_distill_check as check

    info = check.make_peaked_teacher("procgen", str(tmp_path / "teacher.pt"))
    assert info["constant_action_baseline"] < 0.25  # its greedy action depends on the state
    result = run_script("ppd_procgen.py", "--teacher", tmp_path / "teacher.pt", "--student-arch", "smaller",
                        "--num-envs", "8", "--num-steps", "32", "--minibatch-size", "128", "--total-timesteps", "3840",
                        "--eval-episodes", "1", "--output-dir", tmp_path, "--run-name", "run", timeout=300)
    assert result.returncode == 0, result.stderr
    agreement = [v for _, v in scalars(tmp_path / "run", "distill/greedy_agreement")]
    assert len(agreement) == 15
    assert agreement[0] < 0.3  # it starts near chance (1/15) or the best constant action
    final = np.mean(agreement[-3:])
    assert final >= 0.35 and final >= info["constant_action_baseline"] + 0.15, agreement


def test_student_learns_the_greedy_actions_of_a_peaked_teacher_on_pong(tmp_path):
    """The same on Pong, with the benchmark's Atari settings (lambda 5, lr 1e-3, 16 Adam steps per rollout): 15 small
    rollouts (3840 steps, about 40 s here); the benchmark reaches 0.77 in 40 rollouts of 1152 steps."""
    from benchmarks import pixel_distill_check as check

    info = check.make_peaked_teacher("atari", str(tmp_path / "teacher.pt"))
    assert info["constant_action_baseline"] < 0.3  # its greedy action depends on the state
    result = run_script("ppd_atari.py", "--teacher", tmp_path / "teacher.pt", "--student-arch", "smaller",
                        "--num-envs", "8", "--num-steps", "32", "--minibatch-size", "64", "--learning-rate", "1e-3",
                        "--distill-coef", "5", "--total-timesteps", "3840", "--eval-episodes", "1", "--output-dir", tmp_path,
                        "--run-name", "run", timeout=300)
    assert result.returncode == 0, result.stderr
    agreement = [v for _, v in scalars(tmp_path / "run", "distill/greedy_agreement")]
    assert len(agreement) == 15
    final = np.mean(agreement[-3:])
    assert final >= 0.45 and final >= info["constant_action_baseline"] + 0.15 and final >= agreement[0] + 0.15, agreement


# ----------------------------------------------------------------------------------------------------
# --help
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("domain", ["atari", "procgen"])
def test_help_documents_every_flag_and_the_minibatch_rule(domain, capsys):
    import dataclasses
    import re

    import tyro

    module = DOMAINS[domain]["module"]
    with pytest.raises(SystemExit):
        tyro.cli(module.Args, args=["--help"])
    out = capsys.readouterr().out
    entries, flag = {}, None  # flag -> the text of its entry in the options box (a description may wrap)
    for line in out.replace("│", " ").splitlines():
        m = re.match(r" {1,3}(?:-h, )?(--[\w-]+)(.*)", line)
        if m:
            flag, entries[m.group(1)] = m.group(1), m.group(2)
        elif flag and re.match(r" {10,}\S", line):
            entries[flag] += " " + line.strip()
    fields = ["--" + f.name.replace("_", "-") for f in dataclasses.fields(module.Args)]
    missing = [f for f in fields if f not in entries]
    undocumented = [f for f in fields if f in entries and not re.search(r"[a-z]{3,}.*\(default:", re.sub(r"\{[^}]*\}", "", entries[f]))]
    assert not missing and not undocumented, (missing, undocumented)
    # the env flags of plain PPO (the script without its `# PPD` lines) take only the teacher's values here
    for flag in DOMAINS[domain]["ppo_flags"][::2]:
        assert "only value: the teacher's" in entries[flag], entries[flag]
    assert "equal minibatches" in re.sub(r"[\s│]+", " ", out)


def test_teacher_training_in_the_pixel_domain_writes_checkpoint_model_events_and_eval(runs):
    run = runs["ppo"]
    assert (run / "checkpoint.pt").exists() and list(run.glob("events.out.tfevents.*"))
    model = torch.load(run / "model.pt", weights_only=True)
    evaluation = json.load(open(run / "eval.json"))
    assert model["domain"] == runs["domain"] and model["global_step"] == evaluation["global_step"] == 2 * ROLLOUT
    assert evaluation["episodes"] == len(evaluation["returns"]) >= 1
    assert model["eval"]["mean_return"] == evaluation["mean_return"]
    if runs["domain"] == "procgen":
        assert evaluation["deterministic"] is False and "train_levels" in evaluation
