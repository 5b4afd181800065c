"""Proximal Policy Distillation (Spigler, TMLR 2025) with MLP students: MuJoCo and any flat-Box gymnasium env.

PPD is PPO in which the student collects the data and its loss also pulls it towards a frozen teacher
(paper Eq. 2, Algorithm 1):

    L = L_PPO-clip - alpha * H(pi_student) + lambda * KL(pi_teacher || pi_student) * max(ratio, 1 - eps) + c_v * L_V

Every line this script adds to plain PPO ends in `# PPD` and no other line does, so that

    grep -v "# PPD$" ppd_mujoco.py > ppo.py                  # plain PPO, train_teacher.py's number for number
    diff <(grep -v "# PPD$" ppd_mujoco.py) ppd_mujoco.py     # the whole method

With `--distill-coef 0` the script is PPO with the teacher's frozen observation statistics.

    python ppd_mujoco.py                                   # shipped Hopper-v5 teacher -> same-size student
    python ppd_mujoco.py --teacher teachers/CartPole-v1.pt --total-timesteps 50000
    python ppd_mujoco.py --teacher a.pt --teacher-weight 0.75 --teacher b.pt --teacher-weight 0.25   # two teachers
    python ppd_mujoco.py --distill-coef-schedule adaptive        # lambda -> 0 as the student reaches the teacher
    python -m ppd_tools.convert_teacher ppo.zip --env-id Pendulum-v1 --vecnormalize vecnormalize.pkl --output sb3.pt
    python ppd_mujoco.py --teacher sb3.pt                  # an SB3 teacher, converted first (CleanRL's too)
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
from torch.distributions import Categorical, Independent, Normal
from tqdm import tqdm

torch.distributions.Distribution.set_default_validate_args(False)  # pure overhead: the networks give valid parameters

FORMAT_VERSION = 1  # of the checkpoint dict; bump when its keys change
DOMAINS = ("mlp",)  # of the checkpoints this script reads (load_checkpoint)
DEFAULT_TEACHER = "teachers/Hopper-v5.pt"  # PPD


@dataclass
class Args:
    teacher: tuple[str, ...] = ()  # PPD
    """teacher model.pt; repeat it for several teachers, see --teacher-weight (default: teachers/Hopper-v5.pt)"""  # PPD
    env_id: Optional[str] = None  # gymnasium id with a flat Box observation (default: the teacher's env)
    torso_mass_scale: Optional[float] = None  # training envs' torso mass factor, MuJoCo (default: the teacher's)
    mass_randomization: Optional[float] = None  # training masses x U(1-x, 1+x) per episode (default: the teacher's)
    student_arch: Literal["smaller", "same", "larger"] = "same"  # MLP 128-64, 256-256, 512-512 (paper Table 4)
    exp_name: str = "ppd"  # name of the experiment, part of the default run name
    seed: int = 1  # seed of torch, numpy, random and the environments
    torch_deterministic: bool = True  # sets `torch.backends.cudnn.deterministic`
    cuda: bool = True  # use CUDA when it is available
    track: bool = False  # also log to Weights & Biases
    wandb_project_name: str = "ppd"  # Weights & Biases project
    wandb_entity: Optional[str] = None  # Weights & Biases entity (team)
    output_dir: str = "runs"  # folder that holds the run folders
    run_name: Optional[str] = None  # run folder, never overwritten (default `<env>__<exp-name>__<seed>__<unix time>`)
    checkpoint_every: int = 100_000  # write checkpoint.pt every this many env steps; 0: only at the end
    resume: Optional[str] = None  # continue the run of this checkpoint.pt or run folder (give the same flags)
    eval_episodes: int = 50  # episodes of the final evaluation of the student and of each teacher
    env_backend: Literal["gymnasium", "envpool"] = "gymnasium"  # training envs; envpool: faster, see README
    capture_video: bool = False  # write video.gif: one greedy episode of each teacher and of the student
    video_seconds: float = 10.0  # length of each clip of --capture-video, in seconds of env time

    # Algorithm settings (paper A.3: the teacher's PPO settings except gamma, ent_coef and num_steps)
    distill_coef: float = 1.0  # PPD
    """lambda, weight of the distillation term; 0 gives plain PPO"""  # PPD
    distill_coef_schedule: Literal["constant", "linear", "cosine", "adaptive"] = "constant"  # PPD
    """lambda over the run: linear, cosine: decay to 0; adaptive: times the student's shortfall from R_teacher"""  # PPD
    teacher_return: Optional[float] = None  # PPD
    """R_teacher of adaptive (default: the checkpoint's, else measured; measured for a noisy teacher)"""  # PPD
    teacher_weight: tuple[float, ...] = ()  # PPD
    """weight of each --teacher's term, in the same order, normalized to sum 1 (default: equal weights)"""  # PPD
    kl_direction: Literal["forward", "reverse"] = "forward"  # PPD
    """forward: KL(teacher || student) (the paper's); reverse: KL(student || teacher)"""  # PPD
    teacher_noise_std: float = 0.0  # PPD
    """imperfect teacher (paper Table 2: 0.05): N(0, std^2) noise on its parameters, seeded by --seed"""  # PPD
    total_timesteps: int = 2_000_000  # environment steps to train
    learning_rate: float = 3e-4  # Adam learning rate
    anneal_lr: bool = False  # decay the learning rate linearly to 0
    num_envs: int = 18  # parallel environments
    num_steps: int = 64  # steps per environment per rollout
    minibatch_size: int = 512  # a rollout is split into the whole number of equal minibatches closest to this
    update_epochs: int = 4  # passes over each rollout
    gamma: Optional[float] = None  # discount factor (default 0.999; 0.995 for Swimmer and Hopper)
    gae_lambda: float = 0.9  # lambda of generalized advantage estimation
    clip_coef: float = 0.2  # PPO clip coefficient epsilon (also of the distillation term)
    ent_coef: float = 0.0  # entropy coefficient alpha
    vf_coef: float = 0.5  # value loss coefficient c_v
    max_grad_norm: float = 0.5  # gradient clipping norm
    norm_adv: bool = True  # normalize advantages per minibatch
    norm_reward: bool = True  # scale rewards by a running std of the discounted return
    adam_eps: float = 1e-5  # Adam epsilon


# the range of every numeric flag, checked before anything is written (a flag left at None gets a valid default)
FLAG_RANGES = {"seed": ">= 0", "checkpoint_every": ">= 0", "eval_episodes": ">= 1", "video_seconds": "> 0"}
FLAG_RANGES |= {"torso_mass_scale": "> 0", "mass_randomization": "in [0, 1)"}
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
def check_env_id(env_id: str) -> None:
    """UsageError naming the closest known ids of an unknown env, or the script for a pixel env (even unregistered)."""
    atari = (env_id.startswith("ALE/") or env_id.endswith("NoFrameskip-v4")) and "-ram" not in env_id
    if env_id.startswith("procgen:") or atari:
        pixel = f"{env_id} is a pixel env (Atari or Procgen); this script distills MLP policies on flat-observation"
        raise UsageError(pixel + " envs: use ppd_atari.py or ppd_procgen.py")
    if env_id not in gym.registry:
        close = ", ".join(difflib.get_close_matches(env_id, list(gym.registry.keys()), n=3, cutoff=0.5)) or "none"
        unknown = f"gymnasium does not know the env id '{env_id}'; closest known ids: {close}"
        raise UsageError(unknown + " (pixel envs: ppd_atari.py, ppd_procgen.py)")


class MassRandomization(gym.Wrapper):
    """The seed report's Hopper (any MuJoCo env with a 'torso' body): torso mass x torso_scale for good; at every reset
    every other body's mass x U(1 - spread, 1 + spread) (domain randomization, Tobin et al. 2017) from its RNG."""

    def __init__(self, env: gym.Env, torso_scale: float, spread: float):
        super().__init__(env)
        model = env.unwrapped.model
        self.torso = [model.body(i).name for i in range(model.nbody)].index("torso")
        self.spread, self.nominal = spread, model.body_mass.copy()
        self.nominal[self.torso] *= torso_scale
        model.body_mass[:] = self.nominal

    def reset(self, **kwargs):
        result = self.env.reset(**kwargs)  # first: a reset with a seed re-seeds the RNG drawn from below
        if self.spread > 0:
            scale = self.env.unwrapped.np_random.uniform(1 - self.spread, 1 + self.spread, len(self.nominal))
            scale[self.torso] = 1.0
            self.env.unwrapped.model.body_mass[:] = self.nominal * scale
        return result


def check_mass_options(env_id: str, torso_scale: float, spread: float) -> None:
    if torso_scale == 1.0 and spread == 0.0:
        return
    model = getattr(gym.make(env_id).unwrapped, "model", None)
    if model is None or "torso" not in [model.body(i).name for i in range(model.nbody)]:
        need = "--torso-mass-scale and --mass-randomization need a MuJoCo env with a body named 'torso', "
        raise UsageError(need + f"{env_id} has none; drop them or use Hopper-v5, Walker2d-v5, Ant-v5, ...")


def make_envs(env_id: str, num_envs: int, torso_scale=1.0, spread=0.0, backend="gymnasium") -> gym.vector.VectorEnv:
    """Flat-Box envs in one process; SAME_STEP autoreset: info['final_obs'] lets a truncation be bootstrapped."""

    def make_env():
        env = gym.make(env_id)
        return MassRandomization(env, torso_scale, spread) if torso_scale != 1.0 or spread > 0 else env

    if backend == "envpool":  # ppd_tools/envpool_backend.py, imported only for this feature
        from ppd_tools.envpool_backend import EnvpoolEnvs

        envs = EnvpoolEnvs(env_id, num_envs)
    else:
        envs = gym.vector.SyncVectorEnv([make_env] * num_envs, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
        envs = gym.wrappers.vector.RecordEpisodeStatistics(envs)
    obs_space, action_space = envs.single_observation_space, envs.single_action_space
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
        raise UsageError(f"{env_id} has observation space {obs_space}; this script needs a flat Box")
    if not isinstance(action_space, (gym.spaces.Box, gym.spaces.Discrete)):
        raise UsageError(f"{env_id} has action space {action_space}; only Box and Discrete are supported")
    return envs


def time_limit_of(env: gym.Env):
    while not isinstance(env, gym.wrappers.TimeLimit) and hasattr(env, "env"):
        env = env.env
    return env


def env_state(envs: gym.vector.VectorEnv, raw_obs: np.ndarray):
    """What a resumed run needs to take the very steps of the uninterrupted run: per env its physics, RNG and time-limit
    counter; the episode statistics and last observations. None if out of reach (the run then starts new episodes)."""
    if not isinstance(envs, gym.vector.VectorEnv):  # --env-backend envpool: out of reach
        return None
    per_env = []
    for env in envs.unwrapped.envs:
        core, elapsed = env.unwrapped, getattr(time_limit_of(env), "_elapsed_steps", None)
        state = {"rng": core.np_random.bit_generator.state, "elapsed_steps": elapsed}
        if hasattr(core, "model") and hasattr(core, "data"):  # MuJoCo
            import mujoco

            physics = np.empty(mujoco.mj_stateSize(core.model, mujoco.mjtState.mjSTATE_INTEGRATION))
            mujoco.mj_getState(core.model, core.data, physics, mujoco.mjtState.mjSTATE_INTEGRATION)
            state.update(physics=torch.from_numpy(physics), body_mass=torch.from_numpy(core.model.body_mass.copy()))
            # derived positions that a step reads before it simulates (Ant's torso x for its forward reward, Humanoid's
            # centre of mass): mj_setState leaves them stale, and the first step after a resume would differ
            state.update(xpos=torch.from_numpy(core.data.xpos.copy()), xipos=torch.from_numpy(core.data.xipos.copy()))
        elif isinstance(getattr(core, "state", None), (np.ndarray, tuple, list)):  # classic control
            state["physics"] = torch.as_tensor(np.array(core.state, dtype=np.float64))
        else:
            return None
        per_env.append(state)
    saved = {"envs": per_env, "raw_obs": torch.from_numpy(raw_obs.copy())}
    saved["episode_returns"] = torch.from_numpy(envs.episode_returns.copy())
    saved["episode_lengths"] = torch.from_numpy(envs.episode_lengths.copy())
    return saved | {"episode_count": int(envs.episode_count)}


def set_env_state(envs: gym.vector.VectorEnv, saved: dict) -> np.ndarray:
    """The inverse of env_state on freshly reset envs; returns the last observations."""
    for env, state in zip(envs.unwrapped.envs, saved["envs"]):
        core, time_limit = env.unwrapped, time_limit_of(env)
        core.np_random.bit_generator.state = state["rng"]
        if state["elapsed_steps"] is not None:
            time_limit._elapsed_steps = state["elapsed_steps"]
        if "body_mass" in state:
            import mujoco

            core.model.body_mass[:] = state["body_mass"].numpy()
            mujoco.mj_setState(core.model, core.data, state["physics"].numpy(), mujoco.mjtState.mjSTATE_INTEGRATION)
            if "xpos" in state:  # absent from checkpoints written before it was saved
                core.data.xpos[:], core.data.xipos[:] = state["xpos"].numpy(), state["xipos"].numpy()
        else:
            core.state = state["physics"].numpy()
    envs.episode_returns, envs.episode_lengths = saved["episode_returns"].numpy(), saved["episode_lengths"].numpy()
    envs.episode_count = saved["episode_count"]
    return saved["raw_obs"].numpy()


class RunningMeanStd:
    """Running mean and variance (Chan et al.) as SB3's VecNormalize, whose clip and epsilon a loaded state may set."""

    def __init__(self, shape=()):
        self.mean, self.var, self.count = np.zeros(shape, np.float64), np.ones(shape, np.float64), 1e-4
        self.clip, self.epsilon = 10.0, 1e-8

    def update(self, x: np.ndarray) -> None:
        batch_mean, batch_var, batch_count = x.mean(0), x.var(0), x.shape[0]
        delta, total = batch_mean - self.mean, self.count + batch_count
        self.mean = self.mean + delta * batch_count / total
        m2 = self.var * self.count + batch_var * batch_count + delta**2 * self.count * batch_count / total
        self.var, self.count = m2 / total, total

    def normalize(self, x: np.ndarray) -> np.ndarray:
        return np.clip((x - self.mean) / np.sqrt(self.var + self.epsilon), -self.clip, self.clip).astype(np.float32)

    def state_dict(self) -> dict:
        state = {"mean": torch.tensor(self.mean), "var": torch.tensor(self.var), "count": float(self.count)}
        if (self.clip, self.epsilon) != (10.0, 1e-8):  # only then: scripts without these keys assume the defaults
            state.update(clip=float(self.clip), epsilon=float(self.epsilon))
        return state

    def load_state_dict(self, state: dict) -> "RunningMeanStd":
        self.mean, self.var = state["mean"].numpy().astype(np.float64), state["var"].numpy().astype(np.float64)
        self.count = state["count"]
        self.clip, self.epsilon = state.get("clip", 10.0), state.get("epsilon", 1e-8)
        return self


# ---- Networks (paper Table 4): separate actor and critic of the same architecture
ARCHS = {"smaller": {"hidden": [128, 64]}, "same": {"hidden": [256, 256]}, "larger": {"hidden": [512, 512]}}
ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}  # arch_config["activation"] (absent: relu, ours)


def layer_init(layer: nn.Module, std: float = np.sqrt(2), bias_const: float = 0.0) -> nn.Module:
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


def mlp(in_dim: int, hidden: list, out_dim: int, head_std: float, activation: str = "relu") -> nn.Sequential:
    layers, last = [], in_dim
    for h in hidden:
        layers += [layer_init(nn.Linear(last, h)), ACTIVATIONS[activation]()]
        last = h
    return nn.Sequential(*layers, layer_init(nn.Linear(last, out_dim), std=head_std))


class Actor(nn.Module):
    """pi(a|s): Categorical over logits, or a diagonal Gaussian with a state-independent log-std."""

    def __init__(self, body: nn.Module, action_space: gym.Space):
        super().__init__()
        self.body = body
        self.continuous = isinstance(action_space, gym.spaces.Box)
        if self.continuous:
            self.log_std = nn.Parameter(torch.zeros(1, int(np.prod(action_space.shape))))

    def forward(self, obs: torch.Tensor):
        out = self.body(obs)
        if self.continuous:
            return Independent(Normal(out, self.log_std.expand_as(out).exp()), 1)
        return Categorical(logits=out)


class Agent(nn.Module):
    def __init__(self, config: dict, obs_shape: tuple, action_space: gym.Space):
        super().__init__()
        n_out = int(np.prod(action_space.shape)) if isinstance(action_space, gym.spaces.Box) else int(action_space.n)
        n_in, hidden, activation = int(np.prod(obs_shape)), config["hidden"], config.get("activation", "relu")
        self.actor = Actor(mlp(n_in, hidden, n_out, head_std=0.01, activation=activation), action_space)
        self.critic = mlp(n_in, hidden, 1, head_std=1.0, activation=activation)

    def get_value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(obs).squeeze(-1)

    def get_action_and_value(self, obs: torch.Tensor, action: Optional[torch.Tensor] = None):
        dist = self.actor(obs)
        if action is None:
            action = dist.sample()
        return action, dist.log_prob(action), dist.entropy(), self.get_value(obs), dist


def greedy_action(dist) -> torch.Tensor:
    return dist.base_dist.loc if isinstance(dist, Independent) else dist.probs.argmax(-1)


# ---- The distillation term (paper Eq. 2)  # PPD
def dist_params(dist) -> tuple:  # PPD
    """(logits,) of a Categorical or (mean, log_std) of a diagonal Gaussian: what is kept of a teacher."""  # PPD
    if isinstance(dist, Independent):  # PPD
        return dist.base_dist.loc, dist.base_dist.scale.log()  # PPD
    return (dist.logits,)  # PPD


def kl_divergence(teacher: tuple, student: tuple, direction: str = "forward") -> torch.Tensor:  # PPD
    """Analytic KL over the whole action distribution, per state; forward: KL(teacher || student)."""  # PPD
    p, q = (teacher, student) if direction == "forward" else (student, teacher)  # PPD
    if len(p) == 1:  # Categorical: (logits,)  # PPD
        log_p, log_q = torch.log_softmax(p[0], -1), torch.log_softmax(q[0], -1)  # PPD
        return (log_p.exp() * (log_p - log_q)).sum(-1)  # PPD
    (mean_p, log_std_p), (mean_q, log_std_q) = p, q  # diagonal Gaussian, summed over the action dimensions  # PPD
    var_ratio = torch.exp(2 * (log_std_p - log_std_q))  # PPD
    return (0.5 * (var_ratio + ((mean_p - mean_q) / log_std_q.exp()) ** 2 - 1) - (log_std_p - log_std_q)).sum(-1)  # PPD


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


# ---- Checkpoints (SPEC section 7): one self-describing file, the same for teachers and students
def space_dict(space: gym.Space) -> dict:
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "discrete", "n": int(space.n)}
    return {"type": "box", "shape": list(space.shape), "low": space.low.tolist(), "high": space.high.tolist()}


def space_from_dict(d: dict) -> gym.Space:
    if d["type"] == "discrete":
        return gym.spaces.Discrete(d["n"])
    return gym.spaces.Box(np.array(d["low"], np.float32), np.array(d["high"], np.float32), dtype=np.float32)


def atomic_save(obj, path: str, as_json: bool = False) -> None:
    """Write to a temporary file in the same folder, then rename: a crash never leaves half a file."""
    tmp = f"{path}.tmp{os.getpid()}"
    if as_json:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)
    else:
        torch.save(obj, tmp)
    os.replace(tmp, path)


def model_dict(agent: Agent, args: Args, obs_shape, action_space, obs_rms, global_step, evaluation=None) -> dict:
    d = {"format_version": FORMAT_VERSION, "env_id": args.env_id, "domain": "mlp", "arch": args.student_arch}
    d |= {"arch_config": ARCHS[args.student_arch], "actor": agent.actor.state_dict()}
    d |= {"critic": agent.critic.state_dict(), "obs_shape": list(obs_shape), "action_space": space_dict(action_space)}
    d["obs_rms"] = obs_rms.state_dict()
    d["env_config"] = {"torso_mass_scale": args.torso_mass_scale, "mass_randomization": args.mass_randomization}
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


# ---- Evaluation (SPEC section 5): deterministic actions, same protocol and seeds for teacher and student
def evaluate(actor: Actor, env_id: str, episodes: int, seed: int, device, obs_rms, num_envs: int = 10) -> tuple:
    """Returns of `episodes` full episodes; each env plays a fixed quota, so short episodes are not favoured."""
    num_envs = min(num_envs, episodes)
    envs = make_envs(env_id, num_envs)
    quota = np.array([episodes // num_envs + (i < episodes % num_envs) for i in range(num_envs)])
    returns, truncated, steps = [[] for _ in range(num_envs)], 0, 0
    obs, _ = envs.reset(seed=seed)
    actor.eval()
    progress = tqdm(total=episodes, desc="evaluation", unit="episode", miniters=0, leave=False)
    while any(len(r) < q for r, q in zip(returns, quota)):
        with torch.no_grad():
            action = greedy_action(actor(torch.as_tensor(obs_rms.normalize(obs), device=device))).cpu().numpy()
        if actor.continuous:
            action = np.clip(action, envs.single_action_space.low, envs.single_action_space.high)
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
STRUCTURAL = ("env_id", "torso_mass_scale", "mass_randomization", "student_arch", "seed", "num_envs", "num_steps")
STRUCTURAL += ("minibatch_size", "env_backend")  # with the above: the flags a resumed run must keep
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
        if args.env_id is not None:
            check_env_id(args.env_id)
        refuse_foreign_teachers(args.teacher, args.env_id)  # converted first, by ppd_tools/convert_teacher.py  # PPD
        teacher_ckpt = load_checkpoint(args.teacher[0], args.env_id)  # PPD
        args.env_id = args.env_id or teacher_ckpt["env_id"]  # the first teacher sets the env  # PPD
        args.env_id = args.env_id or "Hopper-v5"
        for name, off in (("torso_mass_scale", 1.0), ("mass_randomization", 0.0)):  # a flag left at None: off
            if getattr(args, name) is None:
                off = teacher_ckpt["env_config"].get(name, off)  # train where the teacher did  # PPD
                setattr(args, name, off)
        check_mass_options(args.env_id, args.torso_mass_scale, args.mass_randomization)
        if args.env_backend == "envpool":  # ppd_tools/envpool_backend.py, imported only for this feature
            try:
                from ppd_tools.envpool_backend import envpool_problem
            except ImportError:
                raise UsageError("--env-backend envpool needs the repository's ppd_tools/ folder beside this script")
            if problem := envpool_problem(args.env_id, args.torso_mass_scale, args.mass_randomization):
                raise UsageError(problem)
        if args.capture_video:  # films with ppd_tools/video.py, imported only for this feature
            try:
                from ppd_tools.video import video_problem
            except ImportError:
                raise UsageError("--capture-video needs the repository's ppd_tools/ folder beside this script")
            if problem := video_problem(args.env_id, "mlp"):
                raise UsageError(f"--capture-video: {problem}; or leave out --capture-video")
        if args.gamma is None:
            args.gamma = 0.995 if any(k in args.env_id for k in ("Swimmer", "Hopper")) else 0.999
        batch_size = args.num_envs * args.num_steps
        if args.total_timesteps < batch_size:
            rollout = f"({args.num_envs} x {args.num_steps} = {batch_size} steps)"
            raise UsageError(f"--total-timesteps {args.total_timesteps} is less than one rollout {rollout}")
        _, minibatch_size = minibatch_split(batch_size, args.minibatch_size)
        mass = (args.torso_mass_scale, args.mass_randomization)
        envs = make_envs(args.env_id, args.num_envs, *mass, args.env_backend)
        obs_shape, action_space = envs.single_observation_space.shape, envs.single_action_space
        teacher_ckpts = [load_checkpoint(p, args.env_id, obs_shape, action_space) for p in args.teacher]  # PPD
        default_name = f"{args.env_id.replace('/', '-')}__{args.exp_name}__{args.seed}__{int(time.time())}"
        run_dir, resume_state = prepare_run(args, default_name)
    except UsageError as e:
        fail(str(e))
    num_iterations = args.total_timesteps // batch_size
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")
    threads = torch.get_num_threads()  # the update's; the rollout may take fewer (below)
    eval_seed = args.seed + 10_000  # the final evaluation's (SPEC section 5): every policy on the same episodes

    def score(actor: Actor, rms: RunningMeanStd, episodes: int = args.eval_episodes) -> dict:
        """Evaluation (SPEC section 5): every policy with the same protocol and seeds."""
        return eval_summary(*evaluate(actor, args.env_id, episodes, eval_seed, device, rms))

    # the teachers are built before seeding, so that the student's initialization matches plain PPO's  # PPD
    teachers = [agent_from_checkpoint(ckpt) for ckpt in teacher_ckpts]  # PPD
    for k, teacher in enumerate(teachers):  # PPD
        if args.teacher_noise_std > 0:  # PPD
            add_teacher_noise(teacher, args.teacher_noise_std, args.seed + 1000 * k)  # PPD
        teacher.to(device).eval().requires_grad_(False)  # frozen  # PPD
    # each teacher sees observations normalized by its own frozen statistics, the student by the first one's  # PPD
    teacher_obs_rms = [RunningMeanStd(obs_shape).load_state_dict(ckpt["obs_rms"]) for ckpt in teacher_ckpts]  # PPD
    teacher_weight = torch.tensor(args.teacher_weight, device=device)  # w_k  # PPD
    # R_teacher of the adaptive lambda: the flag, else the resumed run's, else the checkpoint's, else measured  # PPD
    teacher_return = args.teacher_return if args.distill_coef_schedule == "adaptive" else None  # PPD
    if args.distill_coef_schedule == "adaptive" and teacher_return is None:  # PPD
        teacher_return = (resume_state or {}).get("train_state", {}).get("teacher_return")  # PPD
        if teacher_return is None and args.teacher_noise_std == 0:  # a noisy teacher's own return is unknown  # PPD
            teacher_return = (teacher_ckpts[0].get("eval") or {}).get("mean_return")  # PPD
        if teacher_return is None:  # PPD
            print("measuring the teacher's return for the adaptive lambda (10 episodes)", flush=True)  # PPD
            episodes = min(10, args.eval_episodes)  # PPD
            teacher_return = score(teachers[0].actor, teacher_obs_rms[0], episodes)["mean_return"]  # PPD

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic

    agent = Agent(ARCHS[args.student_arch], obs_shape, action_space).to(device)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=args.adam_eps)
    obs_rms = RunningMeanStd(obs_shape)  # observation normalization, updated from the rollouts (SB3's VecNormalize)
    # both networks see the observations normalized by the first teacher's statistics, frozen (paper A.2)  # PPD
    obs_rms.load_state_dict(teacher_ckpts[0]["obs_rms"])  # PPD
    return_rms, discounted_return = RunningMeanStd(), np.zeros(args.num_envs)
    global_step, start_iteration, saved_envs, recent_returns = 0, 1, None, []
    if resume_state is not None:
        agent.actor.load_state_dict(resume_state["actor"])
        agent.critic.load_state_dict(resume_state["critic"])
        ts = resume_state["train_state"]
        optimizer.load_state_dict(ts["optimizer"])
        obs_rms.load_state_dict(resume_state["obs_rms"])
        return_rms.load_state_dict(ts["return_rms"])
        torch.set_rng_state(ts["torch_rng"])
        np.random.set_state(tuple(x.numpy() if torch.is_tensor(x) else x for x in ts["numpy_rng"]))
        random.setstate(ts["python_rng"])
        global_step, start_iteration = resume_state["global_step"], ts["iteration"] + 1
        saved_envs, recent_returns = ts.get("envs"), ts.get("recent_returns", [])
        if "discounted_return" in ts:
            discounted_return = ts["discounted_return"].numpy()
        print(f"resuming {run_dir} at step {global_step}", flush=True)

    if args.track:
        import wandb

        run = dict(project=args.wandb_project_name, entity=args.wandb_entity, name=os.path.basename(run_dir))
        wandb.init(**run, config=vars(args), sync_tensorboard=True, save_code=True)
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
            finishing = "\nCtrl-C: finishing this update, then writing a checkpoint"
            print(finishing + " (Ctrl-C again stops at once)", file=sys.stderr)
        stop.update(signal=signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def save_checkpoint(iteration: int) -> None:
        np_rng = tuple(torch.from_numpy(x) if isinstance(x, np.ndarray) else x for x in np.random.get_state())
        ts = {"optimizer": optimizer.state_dict(), "return_rms": return_rms.state_dict(), "iteration": iteration}
        ts |= {"torch_rng": torch.get_rng_state(), "numpy_rng": np_rng, "python_rng": random.getstate()}
        ts |= {"envs": env_state(envs, raw_obs), "discounted_return": torch.from_numpy(discounted_return.copy())}
        ts["recent_returns"] = list(recent_returns)
        ts["teacher_return"] = teacher_return  # R_teacher of the adaptive lambda  # PPD
        state = model_dict(agent, args, obs_shape, action_space, obs_rms, global_step) | {"train_state": ts}
        atomic_save(state, os.path.join(run_dir, "checkpoint.pt"))

    # ALGO Logic: storage setup
    obs = torch.zeros((args.num_steps, args.num_envs) + obs_shape, device=device)
    actions = torch.zeros((args.num_steps, args.num_envs) + action_space.shape, device=device)
    logprobs, rewards, dones, values = (torch.zeros((args.num_steps, args.num_envs), device=device) for _ in range(4))
    raw_observations = np.zeros((args.num_steps, args.num_envs) + obs_shape)  # for the teachers' normalizations  # PPD

    # a resumed run continues the very episodes it was in (or, for envs whose state is out of reach, new ones)
    fresh = resume_state is not None and saved_envs is None
    raw_obs, _ = envs.reset(seed=args.seed + global_step if fresh else args.seed)
    if saved_envs is not None:
        raw_obs = set_env_state(envs, saved_envs)

    def normalize_obs(raw: np.ndarray, update: bool) -> np.ndarray:
        """What the networks see; update: new observations (not final ones) also update the statistics."""
        update = False  # the teacher's statistics stay frozen  # PPD
        if update:
            obs_rms.update(raw)
        return obs_rms.normalize(raw)

    next_obs = torch.as_tensor(normalize_obs(raw_obs, update=saved_envs is None), device=device)
    start_time, start_step = time.time(), global_step
    bar = dict(unit="step", dynamic_ncols=True, mininterval=1 if sys.stderr.isatty() else 30)
    progress = tqdm(total=args.total_timesteps, initial=global_step, desc=os.path.basename(run_dir), **bar)
    iteration = start_iteration - 1
    for iteration in range(start_iteration, num_iterations + 1):
        if args.anneal_lr:
            optimizer.param_groups[0]["lr"] = (1.0 - (iteration - 1.0) / num_iterations) * args.learning_rate
        recent = float(np.mean(recent_returns)) if recent_returns else None  # PPD
        schedule = (args.distill_coef_schedule, args.distill_coef)  # PPD
        distill_coef = distill_coef_at(*schedule, global_step, args.total_timesteps, recent, teacher_return)  # PPD

        # ---- rollout
        # the student acts: student-driven distillation  # PPD
        agent.eval()
        # envpool steps the envs on its own threads, which torch's would compete with for the cores, and a batch
        # of num_envs states gains nothing from several threads (results/throughput.md: faster, same numbers)
        torch.set_num_threads(1 if args.env_backend == "envpool" else threads)
        for step in range(args.num_steps):
            global_step += args.num_envs
            obs[step] = next_obs
            raw_observations[step] = raw_obs  # PPD
            with torch.no_grad():
                action, logprob, _, value, _ = agent.get_action_and_value(next_obs)
            values[step], actions[step], logprobs[step] = value, action, logprob
            env_action = action.cpu().numpy()
            if agent.actor.continuous:
                env_action = np.clip(env_action, action_space.low, action_space.high)
            raw_obs, reward, terminated, truncated, info = envs.step(env_action)
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
                final_obs = normalize_obs(np.stack(info["final_obs"][truncated_only]), update=False)
                with torch.no_grad():
                    reward[truncated_only] += args.gamma * agent.get_value(torch.as_tensor(final_obs, device=device))
            rewards[step], dones[step] = reward, torch.as_tensor(done, dtype=torch.float32, device=device)
            next_obs = torch.as_tensor(normalize_obs(raw_obs, update=True), device=device)
            for i in np.flatnonzero(info.get("_episode", [])):
                recent_returns = (recent_returns + [float(info["episode"]["r"][i])])[-20:]
                writer.add_scalar("charts/episodic_return", info["episode"]["r"][i], global_step)
                writer.add_scalar("charts/episodic_length", info["episode"]["l"][i], global_step)
        torch.set_num_threads(threads)

        # ---- advantages (GAE)
        with torch.no_grad():
            last_value = agent.get_value(next_obs)
            advantages, returns = compute_gae(rewards, values, dones, last_value, args.gamma, args.gae_lambda)

        # ---- PPO update
        # plus the distillation term of paper Eq. 2, from the teachers' outputs on the rollout  # PPD
        agent.train()
        b_obs, b_actions = obs.reshape((-1,) + obs_shape), actions.reshape((-1,) + action_space.shape)
        b_logprobs, b_advantages, b_returns, b_values = (x.reshape(-1) for x in (logprobs, advantages, returns, values))
        b_raw_obs = raw_observations.reshape((-1,) + obs_shape)  # PPD
        # a teacher depends only on the states: one forward pass per rollout, (logits,) or (mean, log_std)  # PPD
        with torch.no_grad():  # each teacher sees the observations normalized by its own statistics  # PPD
            b_obs_t = [torch.as_tensor(rms.normalize(b_raw_obs), device=device) for rms in teacher_obs_rms]  # PPD
            b_teachers = [dist_params(teacher.actor(x)) for teacher, x in zip(teachers, b_obs_t)]  # PPD
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
                pg_loss1 = -mb_advantages * ratio
                pg_loss2 = -mb_advantages * torch.clamp(ratio, 1 - args.clip_coef, 1 + args.clip_coef)
                pg_loss = torch.max(pg_loss1, pg_loss2).mean()
                v_loss = ((newvalue - b_returns[mb_inds]) ** 2).mean()  # c_v * (V - R)^2, as SB3 (CleanRL halves it)
                entropy_loss = entropy.mean()
                mb_teachers = [tuple(x[mb_inds] for x in b_teacher) for b_teacher in b_teachers]  # PPD
                student = dist_params(dist)  # PPD
                kl_per_teacher = torch.stack([kl_divergence(t, student, args.kl_direction) for t in mb_teachers])  # PPD
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
                    teacher_kls.append(kl_per_teacher.mean(1).tolist())  # PPD
                    if agent.actor.continuous:  # distance between the Gaussians' means (first teacher)  # PPD
                        agreements.append((dist.base_dist.loc - mb_teachers[0][0]).norm(dim=-1).mean().item())  # PPD
                    else:  # fraction of states where both pick the same greedy action (first teacher)  # PPD
                        same = dist.logits.argmax(-1) == mb_teachers[0][0].argmax(-1)  # PPD
                        agreements.append(same.float().mean().item())  # PPD

        # ---- logging
        y_pred, y_true = b_values.cpu().numpy(), b_returns.cpu().numpy()
        var_y = np.var(y_true)
        explained_var = np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y
        sps = int((global_step - start_step) / (time.time() - start_time))
        logs = {"charts/learning_rate": optimizer.param_groups[0]["lr"], "losses/value_loss": v_loss.item()}
        logs |= {"losses/policy_loss": pg_loss.item(), "losses/entropy": entropy_loss.item()}
        logs |= {"losses/old_approx_kl": old_approx_kl.item(), "losses/approx_kl": approx_kl.item()}
        logs |= {"losses/clipfrac": np.mean(clipfracs), "losses/explained_variance": explained_var}
        logs |= {"losses/distill_loss": distill_loss.item(), "distill/kl": np.mean(kls)}  # PPD
        logs |= {f"distill/kl_teacher{k}": v for k, v in enumerate(np.mean(teacher_kls, axis=0))}  # PPD
        logs["distill/lambda"] = distill_coef  # PPD
        closeness = "mean_action_distance" if agent.actor.continuous else "greedy_agreement"  # PPD
        logs[f"distill/{closeness}"] = np.mean(agreements)  # PPD
        logs["charts/SPS"] = sps
        for tag, value in logs.items():
            writer.add_scalar(tag, value, global_step)
        progress.update(batch_size)
        postfix = {"sps": sps, "ret": f"{np.mean(recent_returns):.1f}" if recent_returns else "-"}
        postfix.update(kl=f"{np.mean(kls):.3f}", lam=f"{distill_coef:.3g}")  # PPD
        progress.set_postfix(postfix, refresh=False)

        # ---- checkpoint: every --checkpoint-every steps, and when a signal asks to stop
        every = args.checkpoint_every
        if stop["signal"] is not None or (every and global_step // every > (global_step - batch_size) // every):
            save_checkpoint(iteration)
        if stop["signal"] is not None:
            writer.close()
            stopped = f"\nstopped by signal {stop['signal']} at step {global_step}; checkpoint written"
            print(f"{stopped}, continue with --resume {run_dir}", file=sys.stderr)
            sys.exit(128 + stop["signal"])
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the evaluation below may be killed at once: resume redoes it
    signal.signal(signal.SIGINT, signal.default_int_handler)
    progress.close()
    save_checkpoint(iteration)
    envs.close()

    # ---- final evaluation (SPEC section 5): every policy with the same protocol and seeds
    student_eval = score(agent.actor, obs_rms)
    evaluation = {"env_id": args.env_id, "method": "ppo", "student_arch": args.student_arch, "global_step": global_step}
    train_env = {"torso_mass_scale": args.torso_mass_scale, "mass_randomization": args.mass_randomization}
    evaluation |= {"deterministic": True, "seed": args.seed, "train_env": train_env}
    evaluation |= {"eval_env": f"{args.env_id}, unmodified", "student": student_eval}
    evaluation["command"] = " ".join(["python"] + sys.argv)
    # each teacher with its own normalization; "teacher" and fraction_of_teacher: the first teacher's  # PPD
    teacher_evals = [score(teacher.actor, rms) for teacher, rms in zip(teachers, teacher_obs_rms)]  # PPD
    teacher_eval, teacher_mean = teacher_evals[0], teacher_evals[0]["mean_return"]  # PPD
    fraction = student_eval["mean_return"] / teacher_mean if teacher_mean != 0 else None  # PPD
    evaluation["method"] = "ppd" if args.distill_coef > 0 else "ppo"  # PPD
    evaluation |= {"distill_coef": args.distill_coef, "teacher_checkpoint": args.teacher[0]}  # PPD
    evaluation |= {"teacher_noise_std": args.teacher_noise_std, "teacher_checkpoints": list(args.teacher)}  # PPD
    evaluation |= {"teacher_weights": list(args.teacher_weight), "teachers": teacher_evals}  # PPD
    evaluation["distill_coef_schedule"] = args.distill_coef_schedule  # PPD
    evaluation["teacher_reference_return"] = teacher_return  # R_teacher of the adaptive lambda  # PPD
    evaluation |= {"teacher": teacher_eval, "fraction_of_teacher": fraction}  # PPD
    if args.teacher_noise_std > 0:  # the uncorrupted teachers too, the reference of the paper's Table 2  # PPD
        evaluation["teachers_clean"] = []  # PPD
        for ckpt, rms in zip(teacher_ckpts, teacher_obs_rms):  # PPD
            evaluation["teachers_clean"].append(score(agent_from_checkpoint(ckpt).to(device).actor, rms))  # PPD
        evaluation["teacher_clean"] = evaluation["teachers_clean"][0]  # PPD
    if args.capture_video:  # same env seed as the evaluation's first episode
        from ppd_tools.video import film

        policies = []
        for k, (teacher, rms) in enumerate(zip(teachers, teacher_obs_rms)):  # PPD
            policies.append((f"teacher{'' if len(teachers) == 1 else f' {k}'}", teacher.actor, rms))  # PPD
        policies.append((f"student ({args.student_arch})", agent.actor, obs_rms))
        video = os.path.join(run_dir, "video.gif")
        evaluation["video"] = film(video, policies, args.env_id, "mlp", {}, eval_seed, device, args.video_seconds)
    model = model_dict(agent, args, obs_shape, action_space, obs_rms, global_step, student_eval)
    model_path, eval_path = os.path.join(run_dir, "model.pt"), os.path.join(run_dir, "eval.json")
    atomic_save(model, model_path)
    atomic_save(evaluation, eval_path, as_json=True)
    writer.add_scalar("eval/student_mean_return", student_eval["mean_return"], global_step)
    writer.close()
    rows = []
    rows.append((f"teacher{' (noisy)' if args.teacher_noise_std > 0 else ''}", teacher_eval))  # PPD
    if len(teacher_evals) > 1:  # PPD
        rows += [(f"teacher {k} (weight {args.teacher_weight[k]:.3g})", e) for k, e in enumerate(teacher_evals)]  # PPD
    rows.append((f"student ({args.student_arch})", student_eval))
    summary = f"\n{args.env_id}, {args.eval_episodes} evaluation episodes (deterministic):\n"
    summary += "\n".join(f"  {name}: {e['mean_return']:9.2f} +- {e['std_return']:.2f}" for name, e in rows)
    summary += f"   = {'n/a' if fraction is None else format(fraction, '.1%')} of the teacher"  # PPD
    summary += f"\n  student saved to {model_path}, numbers in {eval_path}"
    print(summary + (f", video in {os.path.join(run_dir, 'video.gif')}" if args.capture_video else ""))
    return evaluation


if __name__ == "__main__":
    import tyro

    try:
        main(tyro.cli(Args, config=(tyro.conf.UseAppendAction,)))  # --teacher, --teacher-weight: one per teacher
        interrupted = False
    except KeyboardInterrupt:  # a second Ctrl-C, or one outside training: the checkpoints written so far are kept
        interrupted = True
    if interrupted:  # here, after the progress bar that the exception held has been closed
        fail("stopped by Ctrl-C; continue from the last checkpoint.pt with --resume <run folder>", code=130)
