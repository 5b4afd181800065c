"""Proximal Policy Distillation (Spigler, TMLR 2025) with CNN students on Procgen.

PPD is PPO in which the student collects the data and its loss also pulls it towards a frozen teacher
(paper Eq. 2, Algorithm 1):

    L = L_PPO-clip - alpha * H(pi_student) + lambda * KL(pi_teacher || pi_student) * max(ratio, 1 - eps) + c_v * L_V

Every line this script adds to plain PPO (train_teacher.py) ends in `# PPD`: `grep -n "# PPD$" ppd_procgen.py`
lists the whole method, and `grep -v "# PPD$" ppd_procgen.py` is plain PPO on its own --env-id and level flags.
With `--distill-coef 0` the script is PPO, number for number. The student trains on the teacher's levels (its
checkpoint fixes the game, the level range and the difficulty: 200 easy levels in the paper); evaluation samples
actions and runs on unseen test levels and, separately, on the training levels.

    python train_teacher.py --env-id procgen:coinrun --run-name coinrun
    cp runs/coinrun/model.pt teachers/procgen-coinrun.pt
    python ppd_procgen.py --student-arch smaller           # teachers/procgen-coinrun.pt -> Nature-CNN student
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

DEFAULT_TEACHER = "teachers/procgen-coinrun.pt"  # PPD
FORMAT_VERSION = 1  # of the checkpoint dict; bump when its keys change
DOMAINS = ("procgen",)  # of the checkpoints this script reads (load_checkpoint)
# plain PPO's env when the flags leave it out (PPD: the teacher's)
ENV_DEFAULTS = {"procgen_num_levels": 200, "procgen_start_level": 0, "procgen_distribution_mode": "easy"}


@dataclass
class Args:
    # General settings
    teacher: tuple[str, ...] = ()  # PPD
    """teacher checkpoint (it fixes the levels); repeat for several (default: teachers/procgen-coinrun.pt)"""  # PPD
    env_id: Optional[str] = None  # `procgen:<game>` (default: the teacher's; plain PPO: procgen:coinrun)
    procgen_num_levels: Optional[int] = None  # training levels (default and only value: the teacher's; PPO: 200)
    procgen_start_level: Optional[int] = None  # first training level (default and only value: the teacher's; PPO: 0)
    procgen_distribution_mode: Optional[str] = None  # difficulty (default and only value: the teacher's; PPO: easy)
    student_arch: Literal["smaller", "same", "larger"] = "same"  # student network size (paper Table 4)
    exp_name: str = "ppd"  # name of the experiment, part of the default run name
    seed: int = 1  # seed of torch, numpy, random and the environments
    torch_deterministic: bool = True  # sets `torch.backends.cudnn.deterministic`
    cuda: bool = True  # use CUDA when it is available (`--no-cuda` forces the CPU)
    track: bool = False  # also log to Weights & Biases (imported only then)
    wandb_project_name: str = "ppd"  # Weights & Biases project
    wandb_entity: Optional[str] = None  # Weights & Biases entity (team)
    output_dir: str = "runs"  # folder that holds the run folders
    run_name: Optional[str] = None  # run folder under output-dir (default `<env>__<exp-name>__<seed>__<unix time>`)
    checkpoint_every: int = 100_000  # write `checkpoint.pt` every this many env steps; 0: only at the end
    resume: Optional[str] = None  # continue the run of this `checkpoint.pt` or run folder, with the same flags
    eval_episodes: int = 200  # episodes of the final evaluation per level set (test, train), student and teacher

    # Algorithm settings (paper A.3: the teacher's PPO settings except gamma, ent_coef and num_steps)
    distill_coef: float = 1.0  # PPD
    """lambda, weight of the distillation term; 0 gives plain PPO"""  # PPD
    distill_coef_schedule: Literal["constant", "linear", "cosine", "adaptive"] = "constant"  # PPD
    """lambda over the run: constant; linear or cosine decay to 0; adaptive: by the student's shortfall"""  # PPD
    teacher_return: Optional[float] = None  # PPD
    """R_teacher of the adaptive schedule (default: the teacher's train_levels.mean_return, else measured)"""  # PPD
    teacher_weight: tuple[float, ...] = ()  # PPD
    """weight of each teacher's term, one per --teacher, normalized to sum 1 (default: equal weights)"""  # PPD
    kl_direction: Literal["forward", "reverse"] = "forward"  # PPD
    """forward: KL(teacher || student) (the paper's); reverse: KL(student || teacher)"""  # PPD
    teacher_noise_std: float = 0.0  # PPD
    """imperfect teacher (paper Table 2): N(0, std^2) noise on every teacher parameter (paper: 0.05)"""  # PPD
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
FLAG_RANGES = {"seed": ">= 0", "procgen_num_levels": ">= 1", "procgen_start_level": ">= 0", "checkpoint_every": ">= 0"}
FLAG_RANGES["eval_episodes"] = ">= 1"
FLAG_RANGES["teacher_noise_std"] = ">= 0"  # PPD
FLAG_RANGES |= {"total_timesteps": ">= 1", "learning_rate": "> 0", "num_envs": ">= 1", "num_steps": ">= 1"}
FLAG_RANGES |= {"minibatch_size": ">= 1", "update_epochs": ">= 1", "gamma": "in [0, 1]", "gae_lambda": "in [0, 1]"}
FLAG_RANGES |= {"clip_coef": "> 0", "ent_coef": ">= 0", "vf_coef": ">= 0", "max_grad_norm": "> 0", "adam_eps": ">= 0"}


class UsageError(Exception):
    """Bad input: reported as one line on stderr with exit code 2, before anything is written."""


def fail(message: str, code: int = 2) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


RULES = {">= 0": lambda v: v >= 0, ">= 1": lambda v: v >= 1, "> 0": lambda v: v > 0}
RULES |= {"in [0, 1]": lambda v: 0 <= v <= 1, "in [0, 1)": lambda v: 0 <= v < 1}


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


# ---------------------------------------- Environments
PROCGEN_GAMES = tuple("bigfish bossfight caveflyer chaser climber coinrun dodgeball fruitbot heist jumper".split())
PROCGEN_GAMES += tuple("leaper maze miner ninja plunder starpilot".split())


def check_env_id(env_id: str) -> None:
    """Raise UsageError naming the closest known ids when env_id is not a Procgen game."""
    if not env_id.startswith("procgen:"):
        other = "Atari: ppd_atari.py, flat-Box envs: ppd_mujoco.py"
        raise UsageError(f"'{env_id}' is not a Procgen env id (procgen:<game>, e.g. procgen:coinrun); {other}")
    game = env_id.split(":", 1)[1]
    if game not in PROCGEN_GAMES:
        close = difflib.get_close_matches(game, PROCGEN_GAMES, n=3)
        ids = ", ".join(f"procgen:{g}" for g in close or PROCGEN_GAMES[:4])
        raise UsageError(f"unknown Procgen game '{game}'; try one of: {ids}")


class ProcgenVecEnv:
    """Gymnasium-style vector adapter of ProcgenGym3Env: after act(a_t), observe() gives (r_t, o_{t+1}, first)."""

    def __init__(self, env_name, num_envs, seed, num_levels=200, start_level=0, distribution_mode="easy"):
        from procgen import ProcgenGym3Env  # lazy: importing procgen imports the old `gym` (prints a notice)

        levels = dict(num_levels=num_levels, start_level=start_level, distribution_mode=distribution_mode)
        self.env = ProcgenGym3Env(num=num_envs, env_name=env_name, rand_seed=seed, **levels)
        self.num_envs = num_envs
        self.single_observation_space = gym.spaces.Box(0, 255, (3, 64, 64), np.uint8)
        self.single_action_space = gym.spaces.Discrete(self.env.ac_space.eltype.n)  # 15
        self.ep_return, self.ep_length = np.zeros(num_envs, dtype=np.float64), np.zeros(num_envs, dtype=np.int64)

    @staticmethod
    def _to_chw(ob):  # [N,64,64,3] -> [N,3,64,64] uint8
        return np.ascontiguousarray(ob["rgb"].transpose(0, 3, 1, 2))

    def reset(self, seed: int | None = None):
        _, ob, _ = self.env.observe()  # `seed` is ignored: seeded at construction
        return self._to_chw(ob), {}

    def step(self, actions):
        self.env.act(np.asarray(actions))  # cast to int32 inside
        reward, ob, first = self.env.observe()
        self.ep_return += reward
        self.ep_length += 1
        no = np.zeros(self.num_envs, dtype=bool)
        info = {"episode": {"r": self.ep_return.copy(), "l": self.ep_length.copy()}, "_episode": first.copy()}
        self.ep_return[first], self.ep_length[first] = 0.0, 0
        return self._to_chw(ob), reward.astype(np.float32), first.copy(), no, info

    def get_state(self, raw_obs: np.ndarray) -> dict:
        """Each env's procgen state, the episode counters and the last observations, as tensors (weights_only)."""
        saved = {"procgen": [torch.from_numpy(np.frombuffer(s, dtype=np.uint8).copy()) for s in self.env.get_state()]}
        saved["episode_returns"] = torch.from_numpy(self.ep_return.copy())
        saved["episode_lengths"] = torch.from_numpy(self.ep_length.copy())
        saved["raw_obs"] = torch.from_numpy(raw_obs.copy())
        return saved

    def set_state(self, saved: dict) -> np.ndarray:
        """The inverse of get_state, on an env built with the run's flags and seed; returns the last observations."""
        if len(saved["procgen"]) != self.num_envs:
            raise ValueError(f"saved state holds {len(saved['procgen'])} envs, this vector env has {self.num_envs}")
        self.env.set_state([t.numpy().tobytes() for t in saved["procgen"]])
        self.ep_return = saved["episode_returns"].numpy().copy()
        self.ep_length = saved["episode_lengths"].numpy().copy()
        return saved["raw_obs"].numpy().copy()

    def close(self):
        self.env.close()


def level_range(env_config: dict, levels: str = "train") -> tuple:
    """(start_level, num_levels) of the training levels, or for 'test' the level seeds right after them (unseen)."""
    start, count = env_config["procgen_start_level"], env_config["procgen_num_levels"]
    return (start, count) if levels == "train" else (start + count, 100_000)


def make_envs(env_id: str, num_envs: int, seed: int, env_config: dict, levels: str = "train") -> ProcgenVecEnv:
    """Procgen envs on the training ('train') or unseen ('test') levels; the level sequence is drawn from `seed`."""
    start, count = level_range(env_config, levels)
    return ProcgenVecEnv(env_id.split(":", 1)[1], num_envs, seed, count, start, env_config["procgen_distribution_mode"])


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


# ---------------------------------------- Networks (paper Table 4): separate actor and critic
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


# ---------------------------------------- The distillation term (paper Eq. 2)  # PPD
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


def refuse_foreign_teachers(paths, env_id: Optional[str]) -> None:  # PPD
    """UsageError naming the converter when a teacher is a Stable-Baselines3 (.zip) or CleanRL file."""  # PPD
    for path in paths:  # PPD
        if path.endswith((".zip", ".cleanrl_model")):  # PPD
            cmd = f"python -m ppd_tools.convert_teacher {path} --env-id {env_id or '<env>'} --output teacher.pt"  # PPD
            raise UsageError(f"'{path}' is a Stable-Baselines3 / CleanRL file; convert it first: {cmd}")  # PPD


# ---------------------------------------- Checkpoints (SPEC section 7): one file for teachers and students
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
    d = {"format_version": FORMAT_VERSION, "env_id": args.env_id, "domain": "procgen", "arch": args.student_arch}
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


# ---------------------------------------- PPO pieces
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


# ---------------------------------------- Evaluation (SPEC section 5): sampled actions, same seeds for all
def evaluate(actor: Actor, env_id: str, env_config: dict, levels: str, episodes: int, seed: int, device, num_envs=10):
    """(returns, truncated) of `episodes` episodes on the 'test' or 'train' levels; each env plays a fixed quota,
    so short episodes are not favoured."""
    num_envs = min(num_envs, episodes)
    envs = make_envs(env_id, num_envs, seed, env_config, levels)
    quota = np.array([episodes // num_envs + (i < episodes % num_envs) for i in range(num_envs)])
    returns, truncated, steps = [[] for _ in range(num_envs)], 0, 0
    obs, _ = envs.reset(seed=seed)
    actor.eval()
    progress = tqdm(total=episodes, desc="evaluation", unit="episode", miniters=0, leave=False)
    while any(len(r) < q for r, q in zip(returns, quota)):
        with torch.no_grad():
            action = actor(torch.as_tensor(obs, device=device)).sample().cpu().numpy()
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


# ---------------------------------------- Run folders
STRUCTURAL = ("env_id", "student_arch", "seed", "num_envs", "num_steps", "minibatch_size", *ENV_DEFAULTS)
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
        if args.distill_coef < 0:  # PPD
            raise UsageError(f"--distill-coef must be >= 0 (0 gives plain PPO), got {args.distill_coef}")  # PPD
        args.teacher = (args.teacher,) if isinstance(args.teacher, str) else tuple(args.teacher)  # PPD
        args.teacher = args.teacher or (DEFAULT_TEACHER,)  # PPD
        args.teacher_weight = teacher_weights(args.teacher_weight, len(args.teacher))  # normalized, sum 1  # PPD
        if args.teacher_return is not None and not math.isfinite(args.teacher_return):  # PPD
            raise UsageError(f"--teacher-return must be a finite number, got {args.teacher_return}")  # PPD
        if args.env_id is not None:  # PPD
            check_env_id(args.env_id)  # PPD
        refuse_foreign_teachers(args.teacher, None)  # converted for its own env (MLP or Atari, not Procgen)  # PPD
        teacher_ckpts = [load_checkpoint(args.teacher[0], env_id=args.env_id)]  # the first sets the game  # PPD
        args.env_id = args.env_id or teacher_ckpts[0]["env_id"]  # PPD
        teacher_ckpts += [load_checkpoint(path, env_id=args.env_id) for path in args.teacher[1:]]  # PPD
        args.env_id = args.env_id or "procgen:coinrun"
        check_env_id(args.env_id)
        given = {k: getattr(args, k) for k in ENV_DEFAULTS if getattr(args, k) is not None}
        env_config = ENV_DEFAULTS | given
        env_config = teacher_ckpts[0]["env_config"]  # the env as the teacher saw it (its levels, difficulty)  # PPD
        if any(env_config[k] != v for k, v in given.items()):  # PPD
            raise UsageError(f"the level flags ({given}) differ from the teacher's levels; leave them out")  # PPD
        levels = ("procgen_start_level", "procgen_num_levels", "procgen_distribution_mode")  # PPD
        first = [env_config[k] for k in levels]  # PPD
        for path, ckpt in zip(args.teacher[1:], teacher_ckpts[1:]):  # the test levels are unseen by every one  # PPD
            if [ckpt["env_config"][k] for k in levels] != first:  # PPD
                trained = f"teacher '{path}' was trained on levels {[ckpt['env_config'][k] for k in levels]}"  # PPD
                same = f"the first teacher on {first}; give teachers trained on the same levels"  # PPD
                raise UsageError(f"{trained} (start, count, mode), {same}")  # PPD
        if env_config["procgen_num_levels"] == 0:  # procgen's 0 means every level, none left for testing  # PPD
            all_levels = f"teacher '{args.teacher[0]}' was trained on all levels (num_levels 0)"  # PPD
            raise UsageError(f"{all_levels}: there are no unseen levels to evaluate on")  # PPD
        if args.total_timesteps < args.num_envs * args.num_steps:
            rollout = f"({args.num_envs} x {args.num_steps} = {args.num_envs * args.num_steps} steps)"
            raise UsageError(f"--total-timesteps {args.total_timesteps} is less than one rollout {rollout}")
        num_minibatches, minibatch_size = minibatch_split(args.num_envs * args.num_steps, args.minibatch_size)
        envs = make_envs(args.env_id, args.num_envs, args.seed, env_config)
        for path in args.teacher:  # PPD
            load_checkpoint(path, args.env_id, envs.single_observation_space.shape, envs.single_action_space)  # PPD
        default_name = f"{args.env_id.replace('/', '-')}__{args.exp_name}__{args.seed}__{int(time.time())}"
        run_dir, resume_state = prepare_run(args, default_name)
    except UsageError as e:
        fail(str(e))
    batch_size = args.num_envs * args.num_steps
    num_iterations = args.total_timesteps // batch_size
    obs_shape, action_space = envs.single_observation_space.shape, envs.single_action_space
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")

    def run_eval(actor: Actor, levels: str, episodes: int = args.eval_episodes) -> dict:
        return eval_summary(*evaluate(actor, args.env_id, env_config, levels, episodes, args.seed + 10_000, device))

    # the teachers are built before seeding, so that the student's initialization matches plain PPO's  # PPD
    teachers = [agent_from_checkpoint(ckpt) for ckpt in teacher_ckpts]  # PPD
    # frozen; channels_last halves the CNN's forward time on a CPU (measured; on a GPU left as it is)  # PPD
    teacher_format = torch.channels_last if device.type == "cpu" else torch.contiguous_format  # PPD
    for k, teacher in enumerate(teachers):  # PPD
        if args.teacher_noise_std > 0:  # PPD
            add_teacher_noise(teacher, args.teacher_noise_std, args.seed + 1000 * k)  # PPD
        teacher.to(device, memory_format=teacher_format).eval().requires_grad_(False)  # PPD
    teacher_weight = torch.tensor(args.teacher_weight, device=device)  # w_k  # PPD
    # R_teacher of the adaptive lambda (training levels, where the student's return is measured): the flag, else  # PPD
    # the interrupted run's, else the checkpoint's evaluation (not of a noisy teacher), else measured here  # PPD
    teacher_return = args.teacher_return if args.distill_coef_schedule == "adaptive" else None  # PPD
    if args.distill_coef_schedule == "adaptive" and teacher_return is None:  # PPD
        teacher_return = (resume_state or {}).get("train_state", {}).get("teacher_return")  # PPD
        if teacher_return is None and args.teacher_noise_std == 0:  # PPD
            teacher_return = ((teacher_ckpts[0].get("eval") or {}).get("train_levels") or {}).get("mean_return")  # PPD
        if teacher_return is None:  # PPD
            print("measuring the teacher's return for the adaptive lambda (10 episodes)", flush=True)  # PPD
            teacher_return = run_eval(teachers[0].actor, "train", min(10, args.eval_episodes))["mean_return"]  # PPD

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic

    agent = Agent(ARCHS[args.student_arch], obs_shape, action_space).to(device)
    optimizer = optim.Adam(agent.parameters(), lr=args.learning_rate, eps=args.adam_eps)
    return_rms, discounted_return = RunningMeanStd(), np.zeros(args.num_envs)
    global_step, start_iteration, saved_envs, recent_returns = 0, 1, None, []
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
        saved_envs, recent_returns = ts.get("envs"), ts.get("recent_returns", [])
        if "discounted_return" in ts:
            discounted_return = ts["discounted_return"].numpy()
        if saved_envs is None:  # a checkpoint without the envs' state (older version): fresh episodes
            envs.close()  # a gym3 env is seeded only at construction
            envs = make_envs(args.env_id, args.num_envs, args.seed + global_step, env_config)
        # otherwise the envs, built with the original seed, are set to the saved state below
        print(f"resuming {run_dir} at step {global_step}", flush=True)

    if args.track:
        import wandb

        run = dict(name=os.path.basename(run_dir), sync_tensorboard=True, save_code=True)
        wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, config=vars(args), **run)
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
            then = "then writing a checkpoint (Ctrl-C again stops at once)"
            print(f"\nCtrl-C: finishing this update, {then}", file=sys.stderr)
        stop.update(signal=signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def save_checkpoint(iteration: int) -> None:
        state = model_dict(agent, args, obs_shape, action_space, env_config, global_step)
        np_rng = tuple(torch.from_numpy(x) if isinstance(x, np.ndarray) else x for x in np.random.get_state())
        ts = {"optimizer": optimizer.state_dict(), "return_rms": return_rms.state_dict(), "iteration": iteration}
        ts.update(torch_rng=torch.get_rng_state(), numpy_rng=np_rng, python_rng=random.getstate())
        ts.update(envs=envs.get_state(raw_obs), discounted_return=torch.from_numpy(discounted_return.copy()))
        ts["recent_returns"] = list(recent_returns)
        ts["teacher_return"] = teacher_return  # R_teacher of the adaptive lambda  # PPD
        atomic_save(state | {"train_state": ts}, os.path.join(run_dir, "checkpoint.pt"))

    # storage: frames stay uint8 on the device; the networks convert each batch they see
    T, N = args.num_steps, args.num_envs
    obs = torch.zeros((T, N) + obs_shape, dtype=torch.uint8, device=device)
    actions = torch.zeros((T, N) + action_space.shape, device=device)
    logprobs, rewards = torch.zeros((T, N), device=device), torch.zeros((T, N), device=device)
    dones, values = torch.zeros((T, N), device=device), torch.zeros((T, N), device=device)

    # a resumed run continues the very episodes it was in (procgen's own state of each env, saved in the checkpoint)
    raw_obs, _ = envs.reset()
    if saved_envs is not None:
        raw_obs = envs.set_state(saved_envs)
    next_obs = torch.as_tensor(raw_obs, device=device)
    start_time, start_step = time.time(), global_step
    bar = dict(unit="step", dynamic_ncols=True, mininterval=1 if sys.stderr.isatty() else 30)
    progress = tqdm(total=args.total_timesteps, initial=global_step, desc=os.path.basename(run_dir), **bar)
    iteration = start_iteration - 1
    for iteration in range(start_iteration, num_iterations + 1):
        if args.anneal_lr:
            optimizer.param_groups[0]["lr"] = (1.0 - (iteration - 1.0) / num_iterations) * args.learning_rate
        student_return = float(np.mean(recent_returns)) if recent_returns else None  # PPD
        schedule = (args.distill_coef_schedule, args.distill_coef, global_step, args.total_timesteps)  # PPD
        distill_coef = distill_coef_at(*schedule, student_return, teacher_return)  # PPD

        # ---- rollout: the student acts (student-driven distillation)
        agent.eval()
        for step in range(args.num_steps):
            global_step += args.num_envs
            obs[step] = next_obs
            with torch.no_grad():
                action, logprob, _, value, _ = agent.get_action_and_value(next_obs)
            values[step], actions[step], logprobs[step] = value, action, logprob
            raw_obs, reward, terminated, truncated, info = envs.step(action.cpu().numpy())
            done = np.logical_or(terminated, truncated)  # procgen never truncates: no cut episode to bootstrap
            if args.norm_reward:  # scale by the running std of the discounted return (SB3's VecNormalize)
                discounted_return = discounted_return * args.gamma + reward
                return_rms.update(discounted_return)
                reward = np.clip(reward / np.sqrt(return_rms.var + 1e-8), -10, 10)
                discounted_return[done] = 0.0
            rewards[step] = torch.as_tensor(reward, dtype=torch.float32, device=device)
            dones[step] = torch.as_tensor(done, dtype=torch.float32, device=device)
            next_obs = torch.as_tensor(raw_obs, device=device)
            for i in np.flatnonzero(info.get("_episode", [])):
                recent_returns = (recent_returns + [float(info["episode"]["r"][i])])[-20:]
                writer.add_scalar("charts/episodic_return", info["episode"]["r"][i], global_step)
                writer.add_scalar("charts/episodic_length", info["episode"]["l"][i], global_step)

        # ---- advantages (GAE)
        with torch.no_grad():
            next_value = agent.get_value(next_obs)
        advantages, returns = compute_gae(rewards, values, dones, next_value, args.gamma, args.gae_lambda)

        # ---- PPD update
        agent.train()
        b_obs = obs.reshape((-1,) + obs_shape)
        b_logprobs, b_actions = logprobs.reshape(-1), actions.reshape((-1,) + action_space.shape)
        b_advantages, b_returns, b_values = advantages.reshape(-1), returns.reshape(-1), values.reshape(-1)
        # a teacher depends only on the states: one forward per rollout and teacher, in minibatch-sized chunks  # PPD
        with torch.no_grad():  # PPD
            chunks = b_obs.split(minibatch_size)  # PPD
            b_teacher_logits = [torch.cat([t.actor(x).logits for x in chunks]) for t in teachers]  # PPD
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
                kl_per_teacher = [kl_divergence(t, dist.logits, args.kl_direction) for t in mb_teacher_logits]  # PPD
                kl_per_teacher = torch.stack(kl_per_teacher)  # PPD
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
        stats = {"charts/learning_rate": optimizer.param_groups[0]["lr"], "losses/value_loss": v_loss.item()}
        stats |= {"losses/policy_loss": pg_loss.item(), "losses/entropy": entropy_loss.item()}
        stats |= {"losses/old_approx_kl": old_approx_kl.item(), "losses/approx_kl": approx_kl.item()}
        stats |= {"losses/clipfrac": np.mean(clipfracs), "losses/explained_variance": explained_var}
        stats |= {"losses/distill_loss": distill_loss.item(), "distill/kl": np.mean(kls)}  # PPD
        stats |= {f"distill/kl_teacher{k}": v for k, v in enumerate(torch.stack(teacher_kls).mean(0).tolist())}  # PPD
        stats |= {"distill/lambda": distill_coef, "distill/greedy_agreement": np.mean(agreements)}  # PPD
        stats["charts/SPS"] = sps
        for tag, value in stats.items():
            writer.add_scalar(tag, value, global_step)
        progress.update(batch_size)
        postfix = {"sps": sps, "ret": f"{np.mean(recent_returns):.1f}" if recent_returns else "-"}
        postfix.update(kl=f"{np.mean(kls):.3f}", lam=f"{distill_coef:.3g}")  # PPD
        progress.set_postfix(postfix, refresh=False)

        # ---- checkpoint, and a clean stop on SIGTERM / Ctrl-C
        every = args.checkpoint_every
        if stop["signal"] is not None or (every and global_step // every > (global_step - batch_size) // every):
            save_checkpoint(iteration)
        if stop["signal"] is not None:
            writer.close()
            stopped = f"stopped by signal {stop['signal']} at step {global_step}; checkpoint written"
            print(f"\n{stopped}, continue with --resume {run_dir}", file=sys.stderr)
            sys.exit(128 + stop["signal"])
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the evaluation below may be killed at once: resume redoes it
    signal.signal(signal.SIGINT, signal.default_int_handler)
    progress.close()
    save_checkpoint(iteration)
    envs.close()

    # ---- final evaluation (SPEC section 5): student and teacher, sampled actions, same protocol and seeds,
    # on unseen levels (generalization, the paper's Table 1) and on the training levels (its Table 8)
    clean_teachers = None  # PPD
    if args.teacher_noise_std > 0:  # the uncorrupted teachers too, the reference of the paper's Table 2  # PPD
        clean_teachers = [agent_from_checkpoint(ckpt).to(device) for ckpt in teacher_ckpts]  # PPD
    evaluation = {"env_id": args.env_id, "method": "ppo", "student_arch": args.student_arch, "global_step": global_step}
    evaluation.update(deterministic=False, seed=args.seed, env_config=env_config)
    evaluation.update(method="ppd" if args.distill_coef > 0 else "ppo", distill_coef=args.distill_coef)  # PPD
    evaluation.update(teacher_checkpoint=args.teacher[0], teacher_noise_std=args.teacher_noise_std)  # PPD
    evaluation.update(teacher_checkpoints=list(args.teacher), teacher_weights=list(args.teacher_weight))  # PPD
    evaluation["distill_coef_schedule"] = args.distill_coef_schedule  # PPD
    evaluation["teacher_reference_return"] = teacher_return  # R_teacher of an adaptive lambda  # PPD
    for levels in ("test", "train"):
        start_level, num_levels = level_range(env_config, levels)
        block = {"start_level": start_level, "num_levels": num_levels, "student": run_eval(agent.actor, levels)}
        block["teachers"] = [run_eval(teacher.actor, levels) for teacher in teachers]  # PPD
        block["teacher"] = block["teachers"][0]  # "teacher" and fraction_of_teacher: the first teacher's  # PPD
        if clean_teachers is not None:  # PPD
            block["teachers_clean"] = [run_eval(teacher.actor, levels) for teacher in clean_teachers]  # PPD
            block["teacher_clean"] = block["teachers_clean"][0]  # PPD
        teacher_score = block["teacher"]["mean_return"]  # PPD
        fraction = block["student"]["mean_return"] / teacher_score if teacher_score != 0 else None  # PPD
        block["fraction_of_teacher"] = fraction  # PPD
        evaluation[f"{levels}_levels"] = block
    evaluation["command"] = " ".join(["python"] + sys.argv)

    student_eval = evaluation["test_levels"]["student"]
    model_eval = {"env_id": args.env_id, "arch": args.student_arch, "seed": args.seed, "global_step": global_step}
    model_eval.update(deterministic=False, **student_eval, train_levels=evaluation["train_levels"]["student"])
    model = model_dict(agent, args, obs_shape, action_space, env_config, global_step, model_eval)
    atomic_save(model, os.path.join(run_dir, "model.pt"))
    atomic_save(evaluation, os.path.join(run_dir, "eval.json"), as_json=True)
    writer.add_scalar("eval/student_mean_return", student_eval["mean_return"], global_step)
    writer.close()

    def row(name: str, s: dict) -> str:
        return f"    {name}: {s['mean_return']:9.2f} +- {s['std_return']:.2f}"

    print(f"\n{args.env_id}, {args.eval_episodes} episodes per level set, sampled actions:")
    for levels in ("test", "train"):
        e = evaluation[f"{levels}_levels"]
        rows = [f"  {levels} levels [{e['start_level']}, {e['start_level'] + e['num_levels']}):"]
        rows.append(row("teacher (noisy)" if args.teacher_noise_std > 0 else "teacher", e["teacher"]))  # PPD
        if clean_teachers is not None:  # PPD
            rows.append(row("teacher (without noise)", e["teacher_clean"]))  # PPD
        for k, (t, w) in enumerate(zip(e["teachers"], args.teacher_weight)):  # PPD
            if len(teachers) > 1:  # PPD
                rows.append(row(f"teacher {k} (weight {w:.3g})", t))  # PPD
        rows.append(row(f"student ({args.student_arch})", e["student"]))
        fraction = e["fraction_of_teacher"]  # PPD
        rows[-1] += f"   = {'n/a' if fraction is None else f'{fraction:.1%}'} of the teacher"  # PPD
        print("\n".join(rows))
    print(f"  student saved to {os.path.join(run_dir, 'model.pt')}, numbers in {os.path.join(run_dir, 'eval.json')}")
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
