"""Proximal Policy Distillation (Spigler, TMLR 2025) with CNN students on Atari.

PPD is PPO in which the student collects the data and its loss also pulls it towards a frozen teacher (paper Eq. 2,
Algorithm 1):

    L = L_PPO-clip - alpha * H(pi_student) + lambda * KL(pi_teacher || pi_student) * max(ratio, 1 - eps) + c_v * L_V

Every line this script adds to plain PPO (train_teacher.py) ends in `# PPD`: `grep -v "# PPD$" ppd_atari.py` is
plain PPO on its own --env-id and --frame-skip. With `--distill-coef 0` the script is PPO, number for number. The
game and the frame skip are the teacher's; evaluation plays full games (all lives) with greedy actions and reports
human-normalized scores.

    python train_teacher.py --env-id PongNoFrameskip-v4 --run-name pong
    cp runs/pong/model.pt teachers/PongNoFrameskip-v4.pt
    python ppd_atari.py --student-arch smaller             # teachers/PongNoFrameskip-v4.pt -> Nature-CNN student
"""

import difflib
import json
import math
import os
import random
import signal
import sys
import time
from dataclasses import asdict, dataclass
from typing import Literal, Optional

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.optim as optim
from torch.distributions import Categorical
from tqdm import tqdm

# the distributions' argument checks are pure overhead on every policy call: the networks give valid parameters
torch.distributions.Distribution.set_default_validate_args(False)

DEFAULT_TEACHER = "teachers/PongNoFrameskip-v4.pt"  # PPD
FORMAT_VERSION = 1  # of the checkpoint dict; bump when its keys change
DOMAINS = ("atari",)  # of the checkpoints this script reads (load_checkpoint)


@dataclass
class Args:
    # General settings
    teacher: tuple[str, ...] = ()  # PPD
    """teacher model.pt, repeatable (the first fixes the game; default: teachers/PongNoFrameskip-v4.pt)"""  # PPD
    env_id: Optional[str] = None  # `<Game>NoFrameskip-v4` or `ALE/<Game>-v5` (default: the teacher's)
    frame_skip: Optional[int] = None  # frame skip (default and only value: the teacher's)
    student_arch: Literal["smaller", "same", "larger"] = "same"  # Nature-CNN, IMPALA, IMPALA x2 (paper Table 4)
    exp_name: str = "ppd"  # name of the experiment, part of the default run name
    seed: int = 1  # seed of torch, numpy, random and the environments
    torch_deterministic: bool = True  # sets `torch.backends.cudnn.deterministic`
    cuda: bool = True  # use CUDA when it is available (`--no-cuda` forces the CPU)
    track: bool = False  # also log to Weights & Biases (imported only then)
    wandb_project_name: str = "ppd"  # Weights & Biases project
    wandb_entity: Optional[str] = None  # Weights & Biases entity (team)
    output_dir: str = "runs"  # folder that holds the run folders
    run_name: Optional[str] = None  # run folder, never overwritten (default `<env>__<exp-name>__<seed>__<unix time>`)
    checkpoint_every: int = 100_000  # write checkpoint.pt every this many env steps; 0: only at the end
    restart_games_at_checkpoint: bool = True  # Atari: restart the games after each checkpoint, so resume is exact
    resume: Optional[str] = None  # continue the run of this checkpoint.pt or run folder (give the same flags)
    eval_episodes: int = 50  # full games (greedy actions) of the final evaluation of the student and each teacher
    eval_max_frames: int = 108_000  # Atari: cut an evaluation game after this many emulator frames
    capture_video: bool = False  # write video.gif: one greedy game of each teacher and of the student
    video_seconds: float = 10.0  # length of each clip of --capture-video, in seconds of game time (at most one game)

    # Algorithm settings (paper A.3: the teacher's PPO settings except gamma, ent_coef and num_steps)
    distill_coef: float = 1.0  # PPD
    """lambda, weight of the distillation term; 0 gives plain PPO"""  # PPD
    distill_coef_schedule: Literal["constant", "linear", "cosine", "adaptive"] = "constant"  # PPD
    """lambda over the run: constant; linear, cosine: to 0 at the end; adaptive: x the student's shortfall"""  # PPD
    teacher_return: Optional[float] = None  # PPD
    """R_teacher of the adaptive schedule (default: the checkpoint's eval, else a 10-game evaluation)"""  # PPD
    teacher_weight: tuple[float, ...] = ()  # PPD
    """weight of each teacher's term, one per --teacher, normalized to sum 1 (default: equal weights)"""  # PPD
    kl_direction: Literal["forward", "reverse"] = "forward"  # PPD
    """forward: KL(teacher || student) (the paper's); reverse: KL(student || teacher)"""  # PPD
    teacher_noise_std: float = 0.0  # PPD
    """imperfect teacher (paper Table 2, 0.05): N(0, std^2) noise on every teacher parameter"""  # PPD
    total_timesteps: int = 2_000_000  # environment steps to train
    learning_rate: float = 3e-4  # Adam learning rate
    anneal_lr: bool = False  # decay the learning rate linearly to 0
    num_envs: int = 18  # parallel environments
    num_steps: int = 64  # steps per environment per rollout
    minibatch_size: int = 512  # requested size: a rollout splits into the closest whole number of equal minibatches
    update_epochs: int = 4  # passes over each rollout
    gamma: float = 0.999  # discount factor
    gae_lambda: float = 0.9  # lambda of generalized advantage estimation
    clip_coef: float = 0.2  # PPO clip coefficient epsilon (also clips the distillation term)
    ent_coef: float = 0.0  # entropy coefficient alpha
    vf_coef: float = 0.5  # value loss coefficient c_v
    max_grad_norm: float = 0.5  # gradient clipping norm
    norm_adv: bool = True  # normalize advantages per minibatch
    norm_reward: bool = True  # scale rewards by a running estimate of the std of the discounted return
    adam_eps: float = 1e-5  # Adam epsilon


# the range of every numeric flag, checked before anything is written (a flag left at None gets a valid default)
FLAG_RANGES = {"seed": ">= 0", "frame_skip": ">= 1", "checkpoint_every": ">= 0", "eval_episodes": ">= 1"}
FLAG_RANGES |= {"eval_max_frames": ">= 1", "video_seconds": "> 0"}
FLAG_RANGES["teacher_noise_std"] = ">= 0"  # PPD
FLAG_RANGES |= {"total_timesteps": ">= 1", "learning_rate": "> 0", "num_envs": ">= 1", "num_steps": ">= 1"}
FLAG_RANGES |= {"minibatch_size": ">= 1", "update_epochs": ">= 1", "gamma": "in [0, 1]", "gae_lambda": "in [0, 1]"}
FLAG_RANGES |= {"clip_coef": "> 0", "ent_coef": ">= 0", "vf_coef": ">= 0", "max_grad_norm": "> 0", "adam_eps": ">= 0"}
RULES = {">= 0": lambda v: v >= 0, ">= 1": lambda v: v >= 1, "> 0": lambda v: v > 0}
RULES |= {"in [0, 1]": lambda v: 0 <= v <= 1, "in [0, 1)": lambda v: 0 <= v < 1}


class UsageError(Exception):
    """Bad input: reported as one line on stderr with exit code 2, before anything is written."""


def fail(message: str, code: int = 2) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def check_ranges(args: Args, ranges: dict) -> None:
    """Every numeric flag finite and in its range (FLAG_RANGES); UsageError naming the first that is not."""
    for name, rule in ranges.items():
        value = getattr(args, name)
        if value is not None and not (math.isfinite(value) and RULES[rule](value)):
            raise UsageError(f"--{name.replace('_', '-')} must be {rule}, got {value}")


def stop_if_not_finite(loss, grad_norm, terms: dict, iteration: int, run_dir: str) -> None:
    """A NaN or inf stops the run before it reaches the parameters (and so any checkpoint), naming the term."""
    if torch.isfinite(torch.stack([loss.detach(), grad_norm])).all():
        return
    bad = [name for name, value in terms.items() if not torch.isfinite(value).all()] or ["gradient"]
    print(file=sys.stderr)  # off the progress bar's line
    msg = f"non-finite {', '.join(bad)} in update {iteration}; the run stopped, its last good checkpoint is in "
    fail(msg + f"{run_dir} (try a lower --learning-rate, or check the env's rewards and observations)", code=3)


# ---- Environments
def atari_game(env_id: str) -> str:
    """PongNoFrameskip-v4 / ALE/Pong-v5 / MsPacmanNoFrameskip-v4 -> ale-py's ROM name 'pong' / 'ms_pacman'."""
    name = env_id.split("/")[-1].split("-")[0].removesuffix("NoFrameskip")
    return "".join("_" + c.lower() if c.isupper() and i else c.lower() for i, c in enumerate(name))


def check_env_id(env_id: str) -> None:
    """Raise UsageError naming the closest known ids when env_id is not an Atari game of ale-py."""
    from ale_py.roms import get_all_rom_ids

    if not (env_id.endswith("NoFrameskip-v4") or env_id.startswith("ALE/")):
        others = "Procgen: ppd_procgen.py, flat-Box envs: ppd_mujoco.py"
        raise UsageError(f"'{env_id}' is not an Atari env id (<Game>NoFrameskip-v4 or ALE/<Game>-v5); {others}")
    roms = get_all_rom_ids()
    if atari_game(env_id) not in roms:
        close = difflib.get_close_matches(atari_game(env_id), roms, n=3)
        names = ["".join(p.capitalize() for p in r.split("_")) + "NoFrameskip-v4" for r in close]
        raise UsageError(f"unknown Atari game in '{env_id}'; closest known ids: {', '.join(names) or 'none'}")


class AtariEnvs:
    """ale-py's AtariVectorEnv with the usual preprocessing (84x84 gray, 4-frame stack, noop-30 and FIRE at reset,
    max-pool over skipped frames, minimal action set, raw rewards); screen=True: the full color frame, for videos.
    Training: a life loss (a drop of info["lives"]) gives terminated=True while the game goes on, and final_obs[i] =
    obs[i]; evaluation (eval_mode): terminated at game over only. A game that ends (game over or `max_frames`)
    restarts in the same step, the ALE's info["final_obs"] holding its last frame. Env i is seeded with seed + i."""

    def __init__(self, game, num_envs, seed, frame_skip, sticky, eval_mode, screen=False, max_frames=108_000):
        from ale_py.vector_env import AtariVectorEnv  # imported here: only the Atari domain needs ale-py

        size = dict(img_height=210, img_width=160) if screen else dict(img_height=84, img_width=84)
        opts = dict(grayscale=not screen, stack_num=1 if screen else 4, maxpool=True, noop_max=30, **size)
        opts.update(use_fire_reset=True, episodic_life=False, life_loss_info=False, reward_clipping=False)
        opts.update(frameskip=frame_skip, repeat_action_probability=sticky, max_num_frames_per_episode=max_frames)
        opts.update(full_action_space=False, autoreset_mode="SameStep")
        self.env = AtariVectorEnv(game, num_envs, **opts)
        self.seed, self.eval_mode, self.num_envs = seed, eval_mode, num_envs  # seed: of a first reset() without one
        self.single_observation_space = self.env.single_observation_space  # (4, 84, 84) uint8; screen: (1, 210, 160, 3)
        self.single_action_space = self.env.single_action_space  # Discrete(minimal action set)
        self.lives = np.zeros(num_envs, dtype=np.int32)
        self.ep_return, self.ep_length = np.zeros(num_envs, dtype=np.float64), np.zeros(num_envs, dtype=np.int64)

    def reset(self, seed: int | None = None):
        if seed is None:
            seed, self.seed = self.seed, None
        obs, info = self.env.reset(seed=seed)  # env i is seeded with seed + i (None: random)
        self.lives = info["lives"].copy()
        self.ep_return[:], self.ep_length[:] = 0.0, 0
        return obs, {"lives": info["lives"]}

    def step(self, actions):
        obs, reward, game_over, truncated, ale_info = self.env.step(np.asarray(actions).astype(np.int32))
        reward = reward.astype(np.float32)  # ALE gives int32
        game_end = game_over | truncated  # these envs were reset by the ALE within this step
        lives = ale_info["lives"]
        life_loss = (lives < self.lives) & ~game_end
        self.lives = lives.copy()
        terminated = game_over if self.eval_mode else game_over | life_loss
        final_obs = obs.copy()
        if game_end.any():  # the ALE adds "final_obs" only then
            final_obs[game_end] = ale_info["final_obs"][game_end]
        self.ep_return += reward  # full-game statistics (all lives): raw score, length in agent steps
        self.ep_length += 1
        info = {"lives": lives, "final_obs": final_obs, "_final_obs": terminated | truncated}
        info.update(episode={"r": self.ep_return.copy(), "l": self.ep_length.copy()}, _episode=game_end)
        self.ep_return[game_end], self.ep_length[game_end] = 0.0, 0
        return obs, reward, terminated, truncated, info

    def close(self):
        self.env.close()


def make_envs(env_id, num_envs, seed, frame_skip, eval_mode=False, screen=False, max_frames=108_000) -> AtariEnvs:
    """Atari vector env, DQN/PPO preprocessing (84x84 gray, 4 frames, noop-30, max-pool, minimal action set).
    Training: a life loss gives terminated=True while the game goes on; eval_mode: terminated only at game over.
    Sticky actions 0.25 for 'ALE/...-v5' ids, else 0. Env i is seeded with seed + i by the first reset().
    screen=True: the same games, observed as the full 210x160 color screen (videos)."""
    sticky = 0.25 if env_id.endswith("-v5") else 0.0
    return AtariEnvs(atari_game(env_id), num_envs, seed, frame_skip, sticky, eval_mode, screen, max_frames)


class RunningMeanStd:
    """Running mean and variance (parallel algorithm of Chan et al.), as in SB3's VecNormalize."""

    def __init__(self, shape=()):
        self.mean, self.var, self.count = np.zeros(shape, np.float64), np.ones(shape, np.float64), 1e-4

    def update(self, x: np.ndarray) -> None:
        batch_mean, batch_var, batch_count = x.mean(0), x.var(0), x.shape[0]
        delta, total = batch_mean - self.mean, self.count + batch_count
        self.mean = self.mean + delta * batch_count / total
        m2 = self.var * self.count + batch_var * batch_count + delta**2 * self.count * batch_count / total
        self.var, self.count = m2 / total, total

    def state_dict(self) -> dict:
        return {"mean": torch.tensor(self.mean), "var": torch.tensor(self.var), "count": float(self.count)}

    def load_state_dict(self, state: dict) -> "RunningMeanStd":
        self.mean, self.var = state["mean"].numpy().astype(np.float64), state["var"].numpy().astype(np.float64)
        self.count = state["count"]
        return self


# ---- Human-normalized scores: (score - random) / (human - random)
# (random, human) per ROM: Badia et al. (2020, Agent57), the paper's 11 games (= DeepMind's DQN Zoo atari_data.py)
HUMAN_RANDOM_SCORES = {"pong": (-20.7, 14.6), "freeway": (0.0, 29.6), "ms_pacman": (307.3, 6951.6)}
HUMAN_RANDOM_SCORES.update(qbert=(163.9, 13455.0), beam_rider=(363.9, 16926.5), crazy_climber=(10780.5, 35829.4))
HUMAN_RANDOM_SCORES.update(demon_attack=(152.1, 1971.0), enduro=(0.0, 860.5), seaquest=(68.4, 42054.7))
HUMAN_RANDOM_SCORES.update(zaxxon=(32.5, 9173.3), atlantis=(12850.0, 29028.1))


def human_normalized(game: str, score: float) -> Optional[float]:
    """0 = the random agent's score, 1 = the human tester's; None for a game outside the table."""
    if game not in HUMAN_RANDOM_SCORES:
        return None
    random_score, human_score = HUMAN_RANDOM_SCORES[game]
    return (score - random_score) / (human_score - random_score)


# ---- Networks (paper Table 4): separate actor and critic of the same architecture
ARCHS = {"smaller": {"cnn": "nature", "channels": [32, 32, 32], "fc": 128}}
ARCHS["same"] = {"cnn": "impala", "channels": [16, 32, 32], "fc": 256}
ARCHS["larger"] = {"cnn": "impala", "channels": [32, 64, 64], "fc": 1024}


def layer_init(layer: nn.Module, std: float = np.sqrt(2), bias_const: float = 0.0) -> nn.Module:
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


class NatureCNN(nn.Module):
    """Nature-DQN CNN: conv 8x8 s4 -> conv 4x4 s2 -> conv 3x3 s1 (ReLU) -> flatten -> fc -> ReLU -> head."""

    def __init__(self, in_channels, out_dim, fc=128, channels=(32, 32, 32), in_hw=84, head_std=0.01):
        super().__init__()
        specs = zip((in_channels, *channels[:2]), channels, (8, 4, 3), (4, 2, 1))  # (in, out, kernel, stride)
        layers = [m for i, o, k, s in specs for m in (layer_init(nn.Conv2d(i, o, k, stride=s)), nn.ReLU())]
        self.convs = nn.Sequential(*layers, nn.Flatten())
        with torch.no_grad():  # flattened size for this input size (7x7 at 84, 4x4 at 64)
            n_flat = self.convs(torch.zeros(1, in_channels, in_hw, in_hw)).shape[1]
        self.fc = nn.Sequential(layer_init(nn.Linear(n_flat, fc)), nn.ReLU())
        self.head = layer_init(nn.Linear(fc, out_dim), std=head_std)

    def forward(self, x):
        return self.head(self.fc(self.convs(x.float() / 255.0)))  # uint8 frames in


class ResidualBlock(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv0 = layer_init(nn.Conv2d(channels, channels, 3, padding=1))
        self.conv1 = layer_init(nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x):
        return x + self.conv1(torch.relu(self.conv0(torch.relu(x))))


class ImpalaCNN(nn.Module):
    """IMPALA CNN (Espeholt et al. 2018): per stage conv3x3, maxpool 3 s2, 2 residual blocks; then ReLU, fc, ReLU."""

    def __init__(self, in_channels, out_dim, channels=(16, 32, 32), fc=256, in_hw=84, head_std=0.01):
        super().__init__()
        layers, c_in = [], in_channels
        for c in channels:
            conv = layer_init(nn.Conv2d(c_in, c, 3, padding=1))
            layers += [conv, nn.MaxPool2d(3, stride=2, padding=1), ResidualBlock(c), ResidualBlock(c)]
            c_in = c
        self.convs = nn.Sequential(*layers, nn.Flatten())
        with torch.no_grad():  # 84 -> 42 -> 21 -> 11;  64 -> 32 -> 16 -> 8
            n_flat = self.convs(torch.zeros(1, in_channels, in_hw, in_hw)).shape[1]
        self.fc = nn.Sequential(nn.ReLU(), layer_init(nn.Linear(n_flat, fc)), nn.ReLU())
        self.head = layer_init(nn.Linear(fc, out_dim), std=head_std)

    def forward(self, x):
        return self.head(self.fc(self.convs(x.float() / 255.0)))


def make_body(config: dict, obs_shape: tuple, out_dim: int, head_std: float) -> nn.Module:
    cnn = NatureCNN if config["cnn"] == "nature" else ImpalaCNN
    sizes = dict(channels=tuple(config["channels"]), fc=config["fc"], in_hw=obs_shape[-1])
    return cnn(obs_shape[0], out_dim, **sizes, head_std=head_std)


class Actor(nn.Module):
    """pi(a|s): Categorical over the logits of the CNN."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, obs: torch.Tensor):
        return Categorical(logits=self.body(obs))


class Agent(nn.Module):
    def __init__(self, config: dict, obs_shape: tuple, action_space: gym.Space):
        super().__init__()
        self.actor = Actor(make_body(config, obs_shape, int(action_space.n), head_std=0.01))
        self.critic = make_body(config, obs_shape, 1, head_std=1.0)

    def get_value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(obs).squeeze(-1)

    def get_action_and_value(self, obs: torch.Tensor, action: Optional[torch.Tensor] = None):
        dist = self.actor(obs)
        if action is None:
            action = dist.sample()
        return action, dist.log_prob(action), dist.entropy(), self.get_value(obs), dist


def greedy_action(dist) -> torch.Tensor:
    return dist.logits.argmax(-1)


# ---- The distillation term (paper Eq. 2)  # PPD
def kl_divergence(teacher_logits, student_logits, direction: str = "forward") -> torch.Tensor:  # PPD
    """Analytic KL(teacher || student) ('forward') or KL(student || teacher) ('reverse'), per state."""  # PPD
    log_p, log_q = torch.log_softmax(teacher_logits, -1), torch.log_softmax(student_logits, -1)  # PPD
    if direction == "reverse":  # PPD
        log_p, log_q = log_q, log_p  # PPD
    return (log_p.exp() * (log_p - log_q)).sum(-1)  # PPD


def add_teacher_noise(agent: nn.Module, std: float, seed: int) -> None:  # PPD
    """The paper's imperfect teacher: independent N(0, std^2) noise on every parameter, reproducible by seed."""  # PPD
    generator = torch.Generator().manual_seed(seed)  # PPD
    with torch.no_grad():  # PPD
        for p in agent.parameters():  # PPD
            p.add_(torch.randn(p.shape, generator=generator) * std)  # PPD


def teacher_weights(weights, num_teachers: int) -> tuple:  # PPD
    """--teacher-weight checked and normalized to sum to 1 (equal weights when none are given)."""  # PPD
    weights = tuple(float(w) for w in weights) or (1.0,) * num_teachers  # PPD
    if len(weights) != num_teachers:  # PPD
        given = f"--teacher-weight was given {len(weights)} time(s) for {num_teachers} teacher(s)"  # PPD
        raise UsageError(f"{given}; give one weight per --teacher, in the same order, or none for equal weights")  # PPD
    if not all(math.isfinite(w) and w >= 0 for w in weights) or sum(weights) == 0:  # PPD
        got = ", ".join(map(str, weights))  # PPD
        raise UsageError(f"--teacher-weight must be finite, >= 0 and not all 0, got {got}")  # PPD
    return tuple(w / sum(weights) for w in weights)  # PPD


def distill_coef_at(schedule, coef, step: int, total: int, recent_student_return, teacher_return) -> float:  # PPD
    """lambda at env step `step` of `total`; recent_student_return: None until a training episode ends."""  # PPD
    progress = min(max(step / total, 0.0), 1.0)  # PPD
    if schedule == "constant":  # PPD
        return coef  # PPD
    if schedule == "linear":  # PPD
        return coef * (1.0 - progress)  # PPD
    if schedule == "cosine":  # half a cosine, from coef to 0  # PPD
        return coef * 0.5 * (1.0 + math.cos(math.pi * progress))  # PPD
    if schedule == "adaptive":  # the student's shortfall as a fraction of the teacher's return, in [0, 1]  # PPD
        if recent_student_return is None:  # PPD
            return coef  # PPD
        shortfall = (teacher_return - recent_student_return) / max(abs(teacher_return), 1e-8)  # PPD
        return coef * min(max(shortfall, 0.0), 1.0)  # PPD
    raise ValueError(f"unknown distill-coef schedule '{schedule}'")  # PPD


# ---- Checkpoints: one self-describing file, the same for teachers and students
def space_dict(space: gym.Space) -> dict:
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "discrete", "n": int(space.n)}
    return {"type": "box", "shape": list(space.shape), "low": space.low.tolist(), "high": space.high.tolist()}


def space_from_dict(d: dict) -> gym.Space:
    return gym.spaces.Discrete(d["n"])


def atomic_save(obj, path: str, as_json: bool = False) -> None:
    """Write to a temporary file in the same folder, then rename: a crash never leaves half a file."""
    tmp = f"{path}.tmp{os.getpid()}"
    if as_json:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)
    else:
        torch.save(obj, tmp)
    os.replace(tmp, path)


def model_dict(agent: Agent, args: Args, obs_shape, action_space, env_config, global_step, evaluation=None) -> dict:
    d = {"format_version": FORMAT_VERSION, "env_id": args.env_id, "domain": "atari", "arch": args.student_arch}
    d.update(arch_config=ARCHS[args.student_arch], actor=agent.actor.state_dict(), critic=agent.critic.state_dict())
    d.update(obs_shape=list(obs_shape), action_space=space_dict(action_space), obs_rms=None)
    d["env_config"] = env_config  # the teacher's: a student can become the next teacher
    return d | {"args": asdict(args), "global_step": global_step, "eval": evaluation}


def load_checkpoint(path: str, env_id: Optional[str] = None, obs_shape=None, action_space=None) -> dict:
    """Read a checkpoint and check it against the env; raise UsageError with a one-line reason otherwise."""
    if os.path.isdir(path):
        model = os.path.join(path, "model.pt")
        path = model if os.path.exists(model) else os.path.join(path, "checkpoint.pt")
    if not os.path.isfile(path):
        example = {"mlp": "Hopper-v5", "atari": "PongNoFrameskip-v4", "procgen": "procgen:coinrun"}[DOMAINS[0]]
        train = f"`python train_teacher.py --env-id {env_id or example}`"
        raise UsageError(f"checkpoint '{path}' does not exist; train one with {train} and pass its model.pt")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, not a torch file, ...
        why = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
        hint = "it is truncated or not a checkpoint, train or copy it again"
        raise UsageError(f"cannot read checkpoint '{path}' ({why}); {hint}")
    if not isinstance(ckpt, dict) or "format_version" not in ckpt:
        hint = "pass a model.pt written by train_teacher.py"
        raise UsageError(f"'{path}' is not a checkpoint of these scripts (no format_version); {hint}")
    if ckpt["format_version"] != FORMAT_VERSION:
        version = f"'{path}' has checkpoint format version {ckpt['format_version']}, these scripts read version"
        raise UsageError(f"{version} {FORMAT_VERSION}; re-save it with the matching version of the scripts")
    if ckpt["domain"] not in DOMAINS:
        model = f"a model of the {ckpt['domain']} domain ({ckpt['env_id']})"
        raise UsageError(f"checkpoint '{path}' is {model}; use ppd_{ckpt['domain'].replace('mlp', 'mujoco')}.py for it")
    if env_id is not None and ckpt["env_id"] != env_id:
        hint = f"pass --env-id {ckpt['env_id']} or a checkpoint for {env_id}"
        raise UsageError(f"checkpoint '{path}' was trained on {ckpt['env_id']}, not {env_id}; {hint}")
    hint = "use a checkpoint trained on this env"
    if obs_shape is not None and tuple(ckpt["obs_shape"]) != tuple(obs_shape):
        found = f"checkpoint '{path}' expects observations of shape {tuple(ckpt['obs_shape'])}"
        raise UsageError(f"{found}, the env gives {tuple(obs_shape)}; {hint}")
    if action_space is not None and ckpt["action_space"] != space_dict(action_space):
        found = f"checkpoint '{path}' has action space {ckpt['action_space']}"
        raise UsageError(f"{found}, the env has {space_dict(action_space)}; {hint}")
    if ckpt["domain"] == "mlp" and ckpt.get("obs_rms") is None:
        hint = "without them the policy is useless"
        raise UsageError(f"checkpoint '{path}' has no observation normalization statistics; {hint}")
    return ckpt


def agent_from_checkpoint(ckpt: dict) -> Agent:
    agent = Agent(ckpt["arch_config"], tuple(ckpt["obs_shape"]), space_from_dict(ckpt["action_space"]))
    agent.actor.load_state_dict(ckpt["actor"])
    agent.critic.load_state_dict(ckpt["critic"])
    return agent


def refuse_foreign_teachers(paths, env_id: Optional[str]) -> None:  # PPD
    """UsageError naming the converter when a teacher is a Stable-Baselines3 (.zip) or CleanRL file."""  # PPD
    for path in paths:  # PPD
        if path.endswith((".zip", ".cleanrl_model")):  # PPD
            cmd = f"python -m ppd_tools.convert_teacher {path} --env-id {env_id or '<env>'} --output teacher.pt"  # PPD
            raise UsageError(f"'{path}' is a Stable-Baselines3 / CleanRL file; convert it first: {cmd}")  # PPD


# ---- PPO pieces
def compute_gae(rewards, values, dones, last_value, gamma: float, gae_lambda: float):
    """Generalized advantage estimation over a [T, N] rollout. dones[t] = the episode ended at step t; a
    truncated step has gamma * V(final observation) already added to its reward, so every end cuts here."""
    advantages = torch.zeros_like(rewards)
    last_gae = torch.zeros_like(last_value)
    for t in reversed(range(rewards.shape[0])):
        next_value = last_value if t == rewards.shape[0] - 1 else values[t + 1]
        not_done = 1.0 - dones[t]
        delta = rewards[t] + gamma * next_value * not_done - values[t]
        last_gae = delta + gamma * gae_lambda * not_done * last_gae
        advantages[t] = last_gae
    return advantages, advantages + values


def minibatch_split(batch_size: int, minibatch_size: int) -> tuple:
    """(number of minibatches, their size): the whole number of equal minibatches closest to the request."""
    if minibatch_size <= 0:
        raise UsageError(f"--minibatch-size must be positive, got {minibatch_size}")
    n = max(1, round(batch_size / minibatch_size))
    if batch_size % n:
        why = f"a rollout of {batch_size} samples (num-envs x num-steps) does not split into {n} equal minibatches"
        raise UsageError(why + f" of about {minibatch_size}; change --num-envs, --num-steps or --minibatch-size")
    return n, batch_size // n


# ---- Evaluation: full games, greedy actions, same protocol and seeds for teacher and student
def evaluate(actor, env_id: str, frame_skip: int, episodes: int, seed: int, device, num_envs=10, max_frames=108_000):
    """Raw scores of `episodes` full games; each env plays a fixed quota, so short games are not favoured."""
    num_envs = min(num_envs, episodes)
    envs = make_envs(env_id, num_envs, seed, frame_skip, eval_mode=True, max_frames=max_frames)
    quota = np.array([episodes // num_envs + (i < episodes % num_envs) for i in range(num_envs)])
    returns, truncated, steps = [[] for _ in range(num_envs)], 0, 0
    obs, _ = envs.reset(seed=seed)
    actor.eval()
    progress = tqdm(total=episodes, desc="evaluation", unit="episode", miniters=0, leave=False)
    while any(len(r) < q for r, q in zip(returns, quota)):
        with torch.no_grad():
            action = greedy_action(actor(torch.as_tensor(obs, device=device))).cpu().numpy()
        obs, _, terminated, cut, info = envs.step(action)
        steps += num_envs
        for i in np.flatnonzero(info.get("_episode", [])):
            if len(returns[i]) < quota[i]:
                returns[i].append(float(info["episode"]["r"][i]))
                truncated += int(cut[i] and not terminated[i])  # cut by a time limit, not ended by the env
                progress.update()
        progress.set_postfix(steps=steps, refresh=False)
        progress.update(0)  # redraws at most every 0.1 s: a game that goes on long still shows its steps
    progress.close()
    envs.close()
    return [r for env_returns in returns for r in env_returns], truncated


def eval_summary(returns: list, truncated: int) -> dict:
    """eval.json's numbers; truncated_episodes: episodes cut by a time limit rather than ended by the env."""
    summary = {"mean_return": float(np.mean(returns)), "std_return": float(np.std(returns)), "episodes": len(returns)}
    return summary | {"truncated_episodes": truncated, "returns": returns}


# ---- Run folders
STRUCTURAL = ("env_id", "student_arch", "seed", "num_envs", "num_steps", "minibatch_size", "frame_skip")
STRUCTURAL += ("restart_games_at_checkpoint",)
STRUCTURAL += ("teacher", "distill_coef", "kl_direction", "teacher_noise_std", "teacher_weight")  # PPD
STRUCTURAL += ("distill_coef_schedule", "teacher_return")  # PPD


def prepare_run(args: Args, default_name: str):
    """Validate the output folder (and the checkpoint to resume) before any training; returns (run_dir, state)."""
    if args.resume:
        run_dir = args.resume if os.path.isdir(args.resume) else os.path.dirname(os.path.abspath(args.resume))
        path = os.path.join(run_dir, "checkpoint.pt") if os.path.isdir(args.resume) else args.resume
        state = load_checkpoint(path, env_id=args.env_id)
        if "train_state" not in state:
            hint = "resume from a run's checkpoint.pt"
            raise UsageError(f"'{path}' holds a finished model without training state; {hint}")
        old = state["args"]  # flags newer than the run: as it ran
        if isinstance(old.get("teacher"), str):  # a run from before several teachers  # PPD
            old["teacher"] = (old["teacher"],)  # PPD
        changed = [k for k in STRUCTURAL if k in old and old[k] != getattr(args, k)]
        if changed:
            diffs = ", ".join(f"--{k.replace('_', '-')} {old[k]!r} (now {getattr(args, k)!r})" for k in changed)
            hint = "resume with the run's original flags"
            raise UsageError(f"--resume: these flags differ from the interrupted run: {diffs}; {hint}")
        batch = args.num_envs * args.num_steps
        done = state["global_step"] >= (args.total_timesteps // batch) * batch
        if done and os.path.exists(os.path.join(run_dir, "model.pt")):
            hint = "raise --total-timesteps to continue it"
            raise UsageError(f"the run at {run_dir} already reached {state['global_step']} steps; {hint}")
        return run_dir, state
    run_dir = os.path.join(args.output_dir, args.run_name or default_name)
    if os.path.exists(run_dir):
        raise UsageError(f"run folder '{run_dir}' already exists; pick another --run-name, or --resume {run_dir}")
    try:
        os.makedirs(args.output_dir, exist_ok=True)
    except OSError as e:
        hint = "pass a writable --output-dir"
        raise UsageError(f"cannot create output folder '{args.output_dir}' ({e.strerror}); {hint}")
    if not os.access(args.output_dir, os.W_OK):
        raise UsageError(f"output folder '{args.output_dir}' is not writable; pass a writable --output-dir")
    os.makedirs(run_dir)
    return run_dir, None


def main(args: Args) -> dict:
    # ---- everything that can be wrong with the input is checked before any training or writing
    try:
        check_ranges(args, FLAG_RANGES)
        if args.capture_video:  # films with ppd_tools/video.py, imported only for this feature
            try:
                from ppd_tools.video import film  # noqa: F401  (the ALE always draws its screen: nothing else to check)
            except ImportError:
                raise UsageError("--capture-video needs the repository's ppd_tools/ folder beside this script")
        if args.distill_coef < 0:  # PPD
            raise UsageError(f"--distill-coef must be >= 0 (0 gives plain PPO), got {args.distill_coef}")  # PPD
        args.teacher = (args.teacher,) if isinstance(args.teacher, str) else tuple(args.teacher)  # PPD
        args.teacher = args.teacher or (DEFAULT_TEACHER,)  # PPD
        args.teacher_weight = teacher_weights(args.teacher_weight, len(args.teacher))  # normalized, sum 1  # PPD
        if args.teacher_return is not None and not math.isfinite(args.teacher_return):  # PPD
            raise UsageError(f"--teacher-return must be a finite number, got {args.teacher_return}")  # PPD
        if args.env_id is not None:  # PPD
            check_env_id(args.env_id)  # PPD
        refuse_foreign_teachers(args.teacher, args.env_id)  # converted first, by ppd_tools/convert_teacher.py  # PPD
        teacher_ckpts = [load_checkpoint(args.teacher[0], env_id=args.env_id)]  # the first sets the game  # PPD
        args.env_id = args.env_id or teacher_ckpts[0]["env_id"]  # PPD
        teacher_ckpts += [load_checkpoint(path, env_id=args.env_id) for path in args.teacher[1:]]  # PPD
        args.env_id = args.env_id or "PongNoFrameskip-v4"  # the flags' defaults when no teacher sets them
        check_env_id(args.env_id)
        env_config = {"frame_skip": args.frame_skip or 4}
        env_config = teacher_ckpts[0]["env_config"]  # the env as the teacher saw it (its frame skip)  # PPD
        skip = env_config["frame_skip"]  # PPD
        if args.frame_skip not in (None, skip):  # PPD
            what = f"--frame-skip {args.frame_skip}: the teacher plays with frame skip {skip}"  # PPD
            raise UsageError(f"{what}; leave the flag out")  # PPD
        for path, ckpt in zip(args.teacher[1:], teacher_ckpts[1:]):  # every teacher played this env  # PPD
            if ckpt["env_config"]["frame_skip"] != skip:  # PPD
                other = f"teacher '{path}' plays with frame skip {ckpt['env_config']['frame_skip']}"  # PPD
                raise UsageError(f"{other}, the first teacher with {skip}; give teachers of one frame skip")  # PPD
        batch_size = args.num_envs * args.num_steps
        if args.total_timesteps < batch_size:
            rollout = f"({args.num_envs} x {args.num_steps} = {batch_size} steps)"
            raise UsageError(f"--total-timesteps {args.total_timesteps} is less than one rollout {rollout}")
        num_minibatches, minibatch_size = minibatch_split(batch_size, args.minibatch_size)
        envs = make_envs(args.env_id, args.num_envs, args.seed, env_config["frame_skip"])
        obs_shape, action_space = envs.single_observation_space.shape, envs.single_action_space
        for path in args.teacher:  # PPD
            load_checkpoint(path, args.env_id, obs_shape, action_space)  # PPD
        default_name = f"{args.env_id.replace('/', '-')}__{args.exp_name}__{args.seed}__{int(time.time())}"
        run_dir, resume_state = prepare_run(args, default_name)
    except UsageError as e:
        fail(str(e))
    num_iterations = args.total_timesteps // batch_size
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")

    def run_eval(actor: Actor, episodes: int = args.eval_episodes) -> dict:  # same protocol and seeds for every policy
        fs, seed = env_config["frame_skip"], args.seed + 10_000
        return eval_summary(*evaluate(actor, args.env_id, fs, episodes, seed, device, max_frames=args.eval_max_frames))

    # the teachers are built before seeding, so that the student's initialization matches plain PPO's  # PPD
    teachers = [agent_from_checkpoint(ckpt) for ckpt in teacher_ckpts]  # PPD
    # frozen; channels_last halves the CNN's forward time on a CPU (measured; on a GPU left as it is)  # PPD
    teacher_format = torch.channels_last if device.type == "cpu" else torch.contiguous_format  # PPD
    for k, teacher in enumerate(teachers):  # PPD
        if args.teacher_noise_std > 0:  # PPD
            add_teacher_noise(teacher, args.teacher_noise_std, args.seed + 1000 * k)  # PPD
        teacher.to(device, memory_format=teacher_format).eval().requires_grad_(False)  # PPD
    teacher_weight = torch.tensor(args.teacher_weight, device=device)  # w_k  # PPD
    # R_teacher of the adaptive lambda: the flag, else the resumed run's, else the checkpoint's, else measured  # PPD
    teacher_return = args.teacher_return if args.distill_coef_schedule == "adaptive" else None  # PPD
    if args.distill_coef_schedule == "adaptive" and teacher_return is None:  # PPD
        teacher_return = (resume_state or {}).get("train_state", {}).get("teacher_return")  # PPD
        if teacher_return is None and args.teacher_noise_std == 0:  # a noisy teacher's return is unknown  # PPD
            teacher_return = (teacher_ckpts[0].get("eval") or {}).get("mean_return")  # PPD
        if teacher_return is None:  # PPD
            print("measuring the teacher's return for the adaptive lambda (10 games)", flush=True)  # PPD
            teacher_return = run_eval(teachers[0].actor, min(10, args.eval_episodes))["mean_return"]  # PPD

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic

    agent = Agent(ARCHS[args.student_arch], obs_shape, action_space).to(device)
    optimizer = optim.Adam(agent.parameters(), lr=args.learning_rate, eps=args.adam_eps)
    return_rms, discounted_return = RunningMeanStd(), np.zeros(args.num_envs)
    global_step, start_iteration, env_seed, recent_returns = 0, 1, args.seed, []
    if resume_state is not None:
        agent.actor.load_state_dict(resume_state["actor"])
        agent.critic.load_state_dict(resume_state["critic"])
        ts = resume_state["train_state"]
        optimizer.load_state_dict(ts["optimizer"])
        return_rms.load_state_dict(ts["return_rms"])
        torch.set_rng_state(ts["torch_rng"])
        np.random.set_state(tuple(x.numpy() if torch.is_tensor(x) else x for x in ts["numpy_rng"]))
        random.setstate(ts["python_rng"])
        global_step, start_iteration = resume_state["global_step"], ts["iteration"] + 1
        env_seed = args.seed + global_step  # the new games the uninterrupted run started here (restart at checkpoint)
        recent_returns = ts.get("recent_returns", [])
        print(f"resuming {run_dir} at step {global_step}", flush=True)

    if args.track:
        import wandb

        opts = dict(name=os.path.basename(run_dir), sync_tensorboard=True, save_code=True)
        wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, config=vars(args), **opts)
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(run_dir, purge_step=global_step + 1 if resume_state is not None else None)
    table = "\n".join(f"|{k}|{v}|" for k, v in vars(args).items())
    writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + table)

    # SLURM sends SIGTERM before it kills a job, a user presses Ctrl-C: finish the update, write a checkpoint, exit
    stop = {"signal": None}

    def on_signal(signum, frame) -> None:
        if signum == signal.SIGINT and stop["signal"] == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once (see the end of this file)
        if signum == signal.SIGINT:
            what = "\nCtrl-C: finishing this update, then writing a checkpoint"
            print(f"{what} (Ctrl-C again stops at once)", file=sys.stderr)
        stop.update(signal=signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def save_checkpoint(iteration: int) -> None:
        state = model_dict(agent, args, obs_shape, action_space, env_config, global_step)
        numpy_rng = tuple(torch.from_numpy(x) if isinstance(x, np.ndarray) else x for x in np.random.get_state())
        ts = {"optimizer": optimizer.state_dict(), "return_rms": return_rms.state_dict(), "iteration": iteration}
        ts.update(torch_rng=torch.get_rng_state(), numpy_rng=numpy_rng, python_rng=random.getstate())
        state["train_state"] = {**ts, "recent_returns": list(recent_returns)}
        state["train_state"]["teacher_return"] = teacher_return  # R_teacher of the adaptive lambda  # PPD
        atomic_save(state, os.path.join(run_dir, "checkpoint.pt"))

    # ALGO Logic: storage setup (frames stay uint8 on the device; the networks convert each batch they see)
    obs = torch.zeros((args.num_steps, args.num_envs) + obs_shape, dtype=torch.uint8, device=device)
    actions = torch.zeros((args.num_steps, args.num_envs) + action_space.shape, device=device)
    logprobs = torch.zeros((args.num_steps, args.num_envs), device=device)
    rewards = torch.zeros((args.num_steps, args.num_envs), device=device)
    dones = torch.zeros((args.num_steps, args.num_envs), device=device)
    values = torch.zeros((args.num_steps, args.num_envs), device=device)

    raw_obs, _ = envs.reset(seed=env_seed)
    next_obs = torch.as_tensor(raw_obs, device=device)
    start_time, start_step = time.time(), global_step
    bar = dict(unit="step", dynamic_ncols=True, mininterval=1 if sys.stderr.isatty() else 30)
    progress = tqdm(total=args.total_timesteps, initial=global_step, desc=os.path.basename(run_dir), **bar)
    iteration = start_iteration - 1
    for iteration in range(start_iteration, num_iterations + 1):
        if args.anneal_lr:
            optimizer.param_groups[0]["lr"] = (1.0 - (iteration - 1.0) / num_iterations) * args.learning_rate
        recent_return = float(np.mean(recent_returns)) if recent_returns else None  # PPD
        sched, coef, total = args.distill_coef_schedule, args.distill_coef, args.total_timesteps  # PPD
        distill_coef = distill_coef_at(sched, coef, global_step, total, recent_return, teacher_return)  # PPD

        # ---- rollout: the student acts (student-driven distillation)
        agent.eval()
        for step in range(args.num_steps):
            global_step += args.num_envs
            obs[step] = next_obs
            with torch.no_grad():
                action, logprob, _, value, _ = agent.get_action_and_value(next_obs)
            values[step], actions[step], logprobs[step] = value, action, logprob
            raw_obs, reward, terminated, truncated, info = envs.step(action.cpu().numpy())
            done = np.logical_or(terminated, truncated)
            if args.norm_reward:  # scale by the running std of the discounted return (SB3's VecNormalize)
                discounted_return = discounted_return * args.gamma + reward
                return_rms.update(discounted_return)
                reward = np.clip(reward / np.sqrt(return_rms.var + 1e-8), -10, 10)
                discounted_return[done] = 0.0
            reward = torch.as_tensor(reward, dtype=torch.float32, device=device)
            # a time-limit truncation is not a termination: bootstrap from the value of the final observation
            truncated_only = truncated & ~terminated & info.get("_final_obs", np.zeros_like(truncated))
            if truncated_only.any():
                final_obs = torch.as_tensor(np.stack(info["final_obs"][truncated_only]), device=device)
                with torch.no_grad():
                    reward[truncated_only] += args.gamma * agent.get_value(final_obs)
            rewards[step], dones[step] = reward, torch.as_tensor(done, dtype=torch.float32, device=device)
            next_obs = torch.as_tensor(raw_obs, device=device)
            for i in np.flatnonzero(info.get("_episode", [])):
                recent_returns = (recent_returns + [float(info["episode"]["r"][i])])[-20:]
                writer.add_scalar("charts/episodic_return", info["episode"]["r"][i], global_step)
                writer.add_scalar("charts/episodic_length", info["episode"]["l"][i], global_step)

        # ---- advantages (GAE)
        with torch.no_grad():
            last_value = agent.get_value(next_obs)
            advantages, returns = compute_gae(rewards, values, dones, last_value, args.gamma, args.gae_lambda)

        # ---- PPD update
        agent.train()
        b_obs = obs.reshape((-1,) + obs_shape)
        b_logprobs, b_actions = logprobs.reshape(-1), actions.reshape((-1,) + action_space.shape)
        b_advantages, b_returns, b_values = advantages.reshape(-1), returns.reshape(-1), values.reshape(-1)
        # a teacher depends only on the states: one forward per rollout and teacher, in minibatch-sized chunks  # PPD
        with torch.no_grad():  # PPD
            chunks = b_obs.split(minibatch_size)  # PPD
            b_teacher_logits = [torch.cat([teacher.actor(x).logits for x in chunks]) for teacher in teachers]  # PPD
        clipfracs = []
        kls, agreements, teacher_kls = [], [], []  # PPD
        for epoch in range(args.update_epochs):
            b_inds = torch.randperm(batch_size, device=device)
            for start in range(0, batch_size, minibatch_size):
                mb_inds = b_inds[start : start + minibatch_size]
                _, newlogprob, entropy, newvalue, dist = agent.get_action_and_value(b_obs[mb_inds], b_actions[mb_inds])
                logratio = newlogprob - b_logprobs[mb_inds]
                ratio = logratio.exp()
                with torch.no_grad():
                    old_approx_kl = (-logratio).mean()
                    approx_kl = ((ratio - 1) - logratio).mean()
                    clipfracs.append(((ratio - 1.0).abs() > args.clip_coef).float().mean().item())
                mb_advantages = b_advantages[mb_inds]
                if args.norm_adv:
                    mb_advantages = (mb_advantages - mb_advantages.mean()) / (mb_advantages.std() + 1e-8)
                # PPO-clip objective (Schulman et al. 2017, Eq. 7), as a loss
                clipped_ratio = torch.clamp(ratio, 1 - args.clip_coef, 1 + args.clip_coef)
                pg_loss = torch.max(-mb_advantages * ratio, -mb_advantages * clipped_ratio).mean()
                v_loss = ((newvalue - b_returns[mb_inds]) ** 2).mean()  # c_v * (V - R)^2, as SB3 (CleanRL halves it)
                entropy_loss = entropy.mean()
                mb_teacher_logits = [logits[mb_inds] for logits in b_teacher_logits]  # PPD
                kl_k = [kl_divergence(t, dist.logits, args.kl_direction) for t in mb_teacher_logits]  # PPD
                kl_per_teacher = torch.stack(kl_k)  # PPD
                # several teachers: sum_k w_k KL_k * max(ratio, 1 - eps) = (sum_k w_k KL_k) * max(ratio, 1 - eps)  # PPD
                kl = (teacher_weight[:, None] * kl_per_teacher).sum(0)  # PPD
                # paper Eq. 2: the KL is weighted by max(ratio, 1 - eps), PPO's clip on the lower side only  # PPD
                distill_loss = (kl * torch.clamp(ratio, min=1 - args.clip_coef)).mean()  # PPD
                loss = pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef
                loss = loss + distill_coef * distill_loss  # PPD
                optimizer.zero_grad()
                loss.backward()
                grad_norm = nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                terms = {"policy_loss": pg_loss, "value_loss": v_loss, "entropy": entropy_loss}
                terms["distill_loss"] = distill_loss  # PPD
                stop_if_not_finite(loss, grad_norm, terms, iteration, run_dir)
                optimizer.step()
                with torch.no_grad():  # how close the student's greedy policy is to the teacher's  # PPD
                    kls.append(kl.mean().item())  # PPD
                    teacher_kls.append(kl_per_teacher.mean(1))  # kept on the device, read once per update  # PPD
                    # fraction of states where both pick the same greedy action (first teacher)  # PPD
                    same = dist.logits.argmax(-1) == mb_teacher_logits[0].argmax(-1)  # PPD
                    agreements.append(same.float().mean().item())  # PPD

        # ---- logging
        y_pred, y_true = b_values.cpu().numpy(), b_returns.cpu().numpy()
        var_y = np.var(y_true)
        explained_var = np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y
        sps = int((global_step - start_step) / (time.time() - start_time))
        writer.add_scalar("charts/learning_rate", optimizer.param_groups[0]["lr"], global_step)
        writer.add_scalar("losses/value_loss", v_loss.item(), global_step)
        writer.add_scalar("losses/policy_loss", pg_loss.item(), global_step)
        writer.add_scalar("losses/entropy", entropy_loss.item(), global_step)
        writer.add_scalar("losses/old_approx_kl", old_approx_kl.item(), global_step)
        writer.add_scalar("losses/approx_kl", approx_kl.item(), global_step)
        writer.add_scalar("losses/clipfrac", np.mean(clipfracs), global_step)
        writer.add_scalar("losses/explained_variance", explained_var, global_step)
        writer.add_scalar("losses/distill_loss", distill_loss.item(), global_step)  # PPD
        writer.add_scalar("distill/kl", np.mean(kls), global_step)  # PPD
        for k, teacher_kl in enumerate(torch.stack(teacher_kls).mean(0).tolist()):  # PPD
            writer.add_scalar(f"distill/kl_teacher{k}", teacher_kl, global_step)  # PPD
        writer.add_scalar("distill/lambda", distill_coef, global_step)  # PPD
        writer.add_scalar("distill/greedy_agreement", np.mean(agreements), global_step)  # PPD
        writer.add_scalar("charts/SPS", sps, global_step)
        progress.update(batch_size)
        postfix = {"sps": sps, "ret": f"{np.mean(recent_returns):.1f}" if recent_returns else "-"}
        postfix.update(kl=f"{np.mean(kls):.3f}", lam=f"{distill_coef:.3g}")  # PPD
        progress.set_postfix(postfix, refresh=False)

        # ---- checkpoint (periodic, or on SIGTERM / Ctrl-C)
        every = args.checkpoint_every
        periodic = every and global_step // every > (global_step - batch_size) // every
        if periodic and args.restart_games_at_checkpoint:  # new games, as a run resumed from this checkpoint starts
            raw_obs, _ = envs.reset(seed=args.seed + global_step)
            next_obs = torch.as_tensor(raw_obs, device=device)
            discounted_return[:] = 0.0  # as a resumed run has it
        if stop["signal"] is not None or periodic:
            save_checkpoint(iteration)
        if stop["signal"] is not None:
            writer.close()
            what = f"\nstopped by signal {stop['signal']} at step {global_step}; checkpoint written"
            print(f"{what}, continue with --resume {run_dir}", file=sys.stderr)
            sys.exit(128 + stop["signal"])
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the evaluation below may be killed at once: resume redoes it
    signal.signal(signal.SIGINT, signal.default_int_handler)
    progress.close()
    envs.close()
    save_checkpoint(iteration)

    # ---- final evaluation: student and teacher, full games, same protocol and seeds
    student_eval = run_eval(agent.actor)
    game = atari_game(args.env_id)
    random_score, human_score = HUMAN_RANDOM_SCORES.get(game, (None, None))
    normalized = {"student": human_normalized(game, student_eval["mean_return"])}
    normalized.update(random=random_score, human=human_score)
    evaluation = {"env_id": args.env_id, "method": "ppo", "student_arch": args.student_arch, "global_step": global_step}
    evaluation.update(deterministic=True, full_games=True, frame_skip=env_config["frame_skip"], seed=args.seed)
    evaluation.update(student=student_eval, human_normalized=normalized)
    teacher_evals = [run_eval(teacher.actor) for teacher in teachers]  # PPD
    teacher_eval = teacher_evals[0]  # "teacher" and fraction_of_teacher: the first teacher's  # PPD
    normalized["teacher"] = human_normalized(game, teacher_eval["mean_return"])  # PPD
    evaluation.update(method="ppd" if args.distill_coef > 0 else "ppo", distill_coef=args.distill_coef)  # PPD
    evaluation.update(teacher_checkpoint=args.teacher[0], teacher_noise_std=args.teacher_noise_std)  # PPD
    evaluation.update(teacher_checkpoints=list(args.teacher), teacher_weights=list(args.teacher_weight))  # PPD
    evaluation.update(teachers=teacher_evals, distill_coef_schedule=args.distill_coef_schedule)  # PPD
    evaluation.update(teacher_reference_return=teacher_return, teacher=teacher_eval)  # PPD
    if args.teacher_noise_std > 0:  # the uncorrupted teachers too, the reference of the paper's Table 2  # PPD
        clean = [run_eval(agent_from_checkpoint(ckpt).to(device).actor) for ckpt in teacher_ckpts]  # PPD
        evaluation.update(teachers_clean=clean, teacher_clean=clean[0])  # PPD
        normalized["teacher_clean"] = human_normalized(game, clean[0]["mean_return"])  # PPD
    # the paper's measure: the student's human-normalized score over its teacher's (raw scores off the table)  # PPD
    measure, score, teacher_score = "raw_score", student_eval["mean_return"], teacher_eval["mean_return"]  # PPD
    if random_score is not None:  # PPD
        measure, score, teacher_score = "human_normalized", normalized["student"], normalized["teacher"]  # PPD
    evaluation["fraction_of_teacher"] = score / teacher_score if teacher_score != 0 else None  # PPD
    evaluation["fraction_of_teacher_measure"] = measure  # PPD
    video = os.path.join(run_dir, "video.gif")
    if args.capture_video:  # same env seed as the evaluation's first game
        from ppd_tools.video import film

        policies = [(f"student ({args.student_arch})", agent.actor, None)]
        names = ["teacher"] if len(teachers) == 1 else [f"teacher {k}" for k in range(len(teachers))]  # PPD
        policies[:0] = [(name, teacher.actor, None) for name, teacher in zip(names, teachers)]  # PPD
        seed = args.seed + 10_000
        evaluation["video"] = film(video, policies, args.env_id, "atari", env_config, seed, device, args.video_seconds)
    evaluation["command"] = " ".join(["python"] + sys.argv)

    model_eval = {"env_id": args.env_id, "arch": args.student_arch, "seed": args.seed, "global_step": global_step}
    model_eval.update(deterministic=True, **student_eval, human_normalized=normalized["student"])  # a teacher's layout
    model = os.path.join(run_dir, "model.pt")
    atomic_save(model_dict(agent, args, obs_shape, action_space, env_config, global_step, model_eval), model)
    atomic_save(evaluation, os.path.join(run_dir, "eval.json"), as_json=True)
    writer.add_scalar("eval/student_mean_return", student_eval["mean_return"], global_step)
    writer.close()

    def row(name: str, summary: dict, hns) -> str:
        score = f"{summary['mean_return']:10.2f} +- {summary['std_return']:<9.2f} "
        return f"  {name:24s} {score}" + ("      -" if hns is None else f"{hns:7.3f}")

    rows = [f"\n{args.env_id}, {args.eval_episodes} full games, greedy actions:   raw score      human-normalized"]
    noisy = " (noisy)" if args.teacher_noise_std > 0 else ""  # PPD
    rows.append(row("teacher" + noisy, teacher_eval, normalized["teacher"]))  # PPD
    if args.teacher_noise_std > 0:  # PPD
        rows.append(row("teacher (without noise)", evaluation["teacher_clean"], normalized["teacher_clean"]))  # PPD
    if len(teacher_evals) > 1:  # PPD
        for k, (e, w) in enumerate(zip(teacher_evals, args.teacher_weight)):  # PPD
            rows.append(row(f"teacher {k} (weight {w:.3g})", e, human_normalized(game, e["mean_return"])))  # PPD
    rows.append(row(f"student ({args.student_arch})", student_eval, normalized["student"]))
    fraction = evaluation["fraction_of_teacher"]  # PPD
    fraction = "n/a" if fraction is None else f"{fraction:.1%}"  # PPD
    rows[-1] += f"   = {fraction} of the teacher ({measure.replace('_', '-')})"  # PPD
    where = f"  student saved to {model}, numbers in {os.path.join(run_dir, 'eval.json')}"
    rows.append(where + (f", video in {video}" if args.capture_video else ""))
    print("\n".join(rows))
    return evaluation


if __name__ == "__main__":
    import tyro

    try:
        config = ()
        config = (tyro.conf.UseAppendAction,)  # --teacher and --teacher-weight repeat per teacher  # PPD
        main(tyro.cli(Args, config=config))
        interrupted = False
    except KeyboardInterrupt:  # a second Ctrl-C, or one outside training: the checkpoints written so far are kept
        interrupted = True
    if interrupted:  # here, after the progress bar that the exception held has been closed
        fail("stopped by Ctrl-C; continue from the last checkpoint.pt with --resume <run folder>", code=130)
