"""PPO teachers for Proximal Policy Distillation (Spigler, TMLR 2025), in all three of the paper's domains.

Plain PPO-clip (Schulman et al. 2017) with the paper's teacher settings (Appendix A.2, Table 3). It saves a
self-describing checkpoint (`model.pt`) that every distillation script loads with no extra flags. The domain
follows from the env id: a gymnasium env with a flat Box observation (Hopper-v5, CartPole-v1, ...): MLP actor and
critic; `<Game>NoFrameskip-v4` or `ALE/<Game>-v5`: Atari (ale-py's vector env), CNNs; `procgen:<game>`: Procgen
(200 easy levels), CNNs. `--arch smaller|same|larger` picks the network of the paper's Table 4, so this script also
trains the PPO-only baseline students of Table 7.

    python train_teacher.py --env-id CartPole-v1 --total-timesteps 100000
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
from torch.distributions import Categorical, Independent, Normal
from tqdm import tqdm

# the distributions' argument checks are pure overhead on every policy call: the networks give valid parameters
torch.distributions.Distribution.set_default_validate_args(False)

FORMAT_VERSION = 1  # of the checkpoint dict; bump when its keys change
DOMAINS = ("mlp", "atari", "procgen")  # of the checkpoints this script reads (load_checkpoint)


@dataclass
class Args:
    # General settings
    env_id: str = "Hopper-v5"  # flat-Box gymnasium env (MLP), <Game>NoFrameskip-v4, ALE/<Game>-v5 or procgen:<game>
    torso_mass_scale: float = 1.0  # MuJoCo training envs: multiply the torso's mass by this (eval: unmodified)
    mass_randomization: float = 0.0  # MuJoCo training envs: scale other bodies' masses by U(1-x, 1+x) per episode
    env_backend: Literal["gymnasium", "envpool"] = "gymnasium"  # training envs; envpool: faster, see README
    arch: Literal["smaller", "same", "larger"] = "same"  # network size (paper Table 4): `same` is the teacher's
    exp_name: str = "ppo"  # name of the experiment, part of the default run name
    seed: int = 1  # seed of torch, numpy, random and the environments
    torch_deterministic: bool = True  # sets `torch.backends.cudnn.deterministic`
    cuda: bool = True  # use CUDA when it is available (`--no-cuda` forces the CPU)
    track: bool = False  # also log to Weights & Biases (imported only then)
    wandb_project_name: str = "ppd"  # Weights & Biases project
    wandb_entity: Optional[str] = None  # Weights & Biases entity (team)
    output_dir: str = "runs"  # folder that holds the run folders
    run_name: Optional[str] = None  # run folder (default <env>__<exp-name>__<seed>__<time>); never overwritten
    checkpoint_every: int = 100_000  # write checkpoint.pt every this many env steps (0: only at the end)
    restart_games_at_checkpoint: bool = True  # Atari: new games after each checkpoint, so that resume is exact
    resume: Optional[str] = None  # continue the run of this checkpoint.pt or run folder, with the same flags
    eval_episodes: Optional[int] = None  # episodes of the final evaluation (default 50; 200 for Procgen)
    eval_max_frames: int = 108_000  # Atari: cut an evaluation game after this many emulator frames
    frame_skip: int = 4  # Atari: frames per action, max-pooled over the last two
    procgen_num_levels: int = 200  # Procgen: number of training levels (evaluation uses levels outside them)
    procgen_start_level: int = 0  # Procgen: first training level
    procgen_distribution_mode: str = "easy"  # Procgen: difficulty
    frozen_obs_norm: Optional[str] = None  # MLP: normalize observations with this checkpoint's frozen statistics

    # Algorithm settings (paper Table 3; None means the paper's value for the domain)
    total_timesteps: Optional[int] = None  # environment steps to train (default 10M; 30M for Procgen)
    learning_rate: float = 3e-4  # Adam learning rate
    anneal_lr: bool = False  # decay the learning rate linearly to 0
    num_envs: int = 18  # parallel environments
    num_steps: Optional[int] = None  # steps per env per rollout (default 256 for Atari, Swimmer, Hopper; else 512)
    minibatch_size: int = 512  # a rollout is split into the whole number of equal minibatches closest to this
    update_epochs: int = 4  # passes over each rollout
    gamma: float = 0.995  # discount factor
    gae_lambda: float = 0.9  # lambda of generalized advantage estimation
    clip_coef: float = 0.2  # PPO clip coefficient epsilon
    ent_coef: Optional[float] = None  # entropy coefficient (default 0.01 for pixels, Swimmer, Hopper; else 0.0)
    vf_coef: float = 0.5  # value loss coefficient c_v
    max_grad_norm: float = 0.5  # gradient clipping norm
    norm_adv: bool = True  # normalize advantages per minibatch
    norm_reward: bool = True  # scale rewards by a running estimate of the std of the discounted return
    adam_eps: float = 1e-5  # Adam epsilon


# the range of every numeric flag, checked before anything is written (a flag left at None gets a valid default)
FLAG_RANGES = {"seed": ">= 0", "checkpoint_every": ">= 0", "eval_episodes": ">= 1", "eval_max_frames": ">= 1"}
FLAG_RANGES |= {"frame_skip": ">= 1", "procgen_num_levels": ">= 0", "procgen_start_level": ">= 0"}
FLAG_RANGES |= {"torso_mass_scale": "> 0", "mass_randomization": "in [0, 1)", "total_timesteps": ">= 1"}
FLAG_RANGES |= {"learning_rate": "> 0", "num_envs": ">= 1", "num_steps": ">= 1", "minibatch_size": ">= 1"}
FLAG_RANGES |= {"update_epochs": ">= 1", "gamma": "in [0, 1]", "gae_lambda": "in [0, 1]", "clip_coef": "> 0"}
FLAG_RANGES |= {"ent_coef": ">= 0", "vf_coef": ">= 0", "max_grad_norm": "> 0", "adam_eps": ">= 0"}
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


def check_args(args: Args) -> str:
    """Everything that can be wrong with the flags, refused before any training or writing; fills in the per-domain
    defaults (Table 3); returns the domain."""
    check_ranges(args, FLAG_RANGES)
    domain = detect_domain(args.env_id)
    check_env_id(args.env_id)
    short = any(k in args.env_id for k in ("Swimmer", "Hopper"))
    if args.total_timesteps is None:
        args.total_timesteps = 30_000_000 if domain == "procgen" else 10_000_000
    if args.num_steps is None:
        args.num_steps = 256 if domain == "atari" or short else 512
    if args.ent_coef is None:
        args.ent_coef = 0.01 if domain != "mlp" or short else 0.0
    if args.eval_episodes is None:
        args.eval_episodes = 200 if domain == "procgen" else 50
    if domain == "procgen" and args.procgen_num_levels < 1:
        why = "with 0 (all levels) no unseen levels are left to evaluate on"
        raise UsageError(f"--procgen-num-levels must be at least 1: {why}")
    if args.frozen_obs_norm and domain != "mlp":
        raise UsageError("--frozen-obs-norm applies to the MLP domain only (pixel observations are not normalized)")
    if args.torso_mass_scale != 1.0 or args.mass_randomization != 0.0:  # their ranges: FLAG_RANGES
        mass = "--torso-mass-scale and --mass-randomization"
        if domain != "mlp":
            raise UsageError(f"{mass} apply to MuJoCo envs only; drop them")
        model = getattr(gym.make(args.env_id).unwrapped, "model", None)
        if model is None or "torso" not in [model.body(i).name for i in range(model.nbody)]:
            fix = "drop them or use Hopper-v5, Walker2d-v5, Ant-v5, ..."
            raise UsageError(f"{mass} need a MuJoCo env with a body named 'torso', {args.env_id} has none; {fix}")
    if args.env_backend == "envpool":  # ppd_tools/envpool_backend.py, imported only for this feature
        if domain != "mlp":
            raise UsageError("--env-backend envpool applies to the MLP domain only; drop it")
        try:
            from ppd_tools.envpool_backend import envpool_problem
        except ImportError:
            raise UsageError("--env-backend envpool needs the repository's ppd_tools/ folder beside this script")
        if problem := envpool_problem(args.env_id, args.torso_mass_scale, args.mass_randomization):
            raise UsageError(problem)
    if args.total_timesteps < args.num_envs * args.num_steps:
        rollout = f"({args.num_envs} x {args.num_steps} = {args.num_envs * args.num_steps} steps)"
        raise UsageError(f"--total-timesteps {args.total_timesteps} is less than one rollout {rollout}")
    return domain


def stop_if_not_finite(loss, grad_norm, terms: dict, iteration: int, run_dir: str) -> None:
    """A NaN or inf stops the run before it reaches the parameters (and so any checkpoint), naming the term."""
    if torch.isfinite(torch.stack([loss.detach(), grad_norm])).all():
        return
    bad = [name for name, value in terms.items() if not torch.isfinite(value).all()] or ["gradient"]
    print(file=sys.stderr)  # off the progress bar's line
    msg = f"non-finite {', '.join(bad)} in update {iteration}; the run stopped, its last good checkpoint is in "
    fail(msg + f"{run_dir} (try a lower --learning-rate, or check the env's rewards and observations)", code=3)


# ---- environments: every domain's vector env has reset(seed) and step(actions) with SAME_STEP autoreset, full-game
# statistics in info["episode"] / info["_episode"] and, where an episode can be truncated, its last observation in
# info["final_obs"] / info["_final_obs"] (MLP, Atari; Procgen never truncates)
PROCGEN_GAMES = ("bigfish", "bossfight", "caveflyer", "chaser", "climber", "coinrun", "dodgeball", "fruitbot")
PROCGEN_GAMES += ("heist", "jumper", "leaper", "maze", "miner", "ninja", "plunder", "starpilot")


def detect_domain(env_id: str) -> str:
    """'atari', 'procgen' or 'mlp' (any gymnasium env with a flat Box observation)."""
    if env_id.startswith("procgen:"):
        return "procgen"
    if env_id.endswith("NoFrameskip-v4") or env_id.startswith("ALE/"):
        return "atari"
    return "mlp"


def atari_game(env_id: str) -> str:
    """PongNoFrameskip-v4 / ALE/Pong-v5 / MsPacmanNoFrameskip-v4 -> ale-py's ROM name 'pong' / 'ms_pacman'."""
    name = env_id.split("/")[-1].split("-")[0].removesuffix("NoFrameskip")
    return "".join("_" + c.lower() if c.isupper() and i else c.lower() for i, c in enumerate(name))


def check_env_id(env_id: str) -> None:
    """Raise UsageError naming the closest known ids when env_id does not exist."""
    domain = detect_domain(env_id)
    if domain == "procgen":
        game = env_id.split(":", 1)[1]
        if game not in PROCGEN_GAMES:
            close = difflib.get_close_matches(game, PROCGEN_GAMES, n=3) or PROCGEN_GAMES[:4]
            raise UsageError(f"unknown Procgen game '{game}'; try one of: " + ", ".join(f"procgen:{g}" for g in close))
    elif domain == "atari":
        from ale_py.roms import get_all_rom_ids  # imported here: only the Atari domain needs ale-py

        roms = get_all_rom_ids()
        if atari_game(env_id) not in roms:
            close = difflib.get_close_matches(atari_game(env_id), roms, n=3)
            names = ", ".join("".join(p.capitalize() for p in r.split("_")) + "NoFrameskip-v4" for r in close)
            raise UsageError(f"unknown Atari game in '{env_id}'; closest known ids: {names or 'none'}")
    elif env_id not in gym.registry:
        close = ", ".join(difflib.get_close_matches(env_id, list(gym.registry.keys()), n=3, cutoff=0.5))
        hint = "(Atari: <Game>NoFrameskip-v4, Procgen: procgen:<game>)"
        raise UsageError(f"gymnasium does not know the env id '{env_id}'; closest known ids: {close or 'none'} {hint}")


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


def make_mlp_envs(env_id: str, num_envs: int, torso_scale=1.0, spread=0.0, backend="gymnasium") -> gym.vector.VectorEnv:
    """Flat-Box envs in one process (AsyncVectorEnv was never faster on 2 cores)."""

    def make_env():
        env = gym.make(env_id)
        return MassRandomization(env, torso_scale, spread) if torso_scale != 1.0 or spread > 0 else env

    if backend == "envpool":  # ppd_tools/envpool_backend.py, imported only for this feature
        from ppd_tools.envpool_backend import EnvpoolEnvs

        envs = EnvpoolEnvs(env_id, num_envs)
    else:
        same_step = gym.vector.AutoresetMode.SAME_STEP
        envs = gym.vector.SyncVectorEnv([make_env for _ in range(num_envs)], autoreset_mode=same_step)
        envs = gym.wrappers.vector.RecordEpisodeStatistics(envs)
    obs_space, act_space = envs.single_observation_space, envs.single_action_space
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
        raise UsageError(f"{env_id} has observation space {obs_space}; the MLP domain needs a flat Box")
    if not isinstance(act_space, (gym.spaces.Box, gym.spaces.Discrete)):
        raise UsageError(f"{env_id} has action space {act_space}; only Box and Discrete are supported")
    return envs


def make_envs(args: Args, domain: str, num_envs: int, seed: int, evaluation: bool = False, procgen_levels=None):
    if domain == "mlp":  # evaluation: always the unmodified env
        if evaluation:
            return make_mlp_envs(args.env_id, num_envs)
        return make_mlp_envs(args.env_id, num_envs, args.torso_mass_scale, args.mass_randomization, args.env_backend)
    if domain == "atari":
        max_frames = args.eval_max_frames if evaluation else 108_000
        return make_atari_envs(args.env_id, num_envs, seed, args.frame_skip, evaluation, max_frames=max_frames)
    start, count = procgen_levels or (args.procgen_start_level, args.procgen_num_levels)
    return ProcgenVecEnv(args.env_id.split(":", 1)[1], num_envs, seed, count, start, args.procgen_distribution_mode)


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


def make_atari_envs(env_id, num_envs, seed, frame_skip=4, eval_mode=False, screen=False, max_frames=108_000):
    """The usual DQN/PPO preprocessing; eval_mode: full games; sticky actions for 'ALE/...-v5' ids; screen: videos."""
    sticky = 0.25 if env_id.endswith("-v5") else 0.0
    return AtariEnvs(atari_game(env_id), num_envs, seed, frame_skip, sticky, eval_mode, screen, max_frames)


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


def time_limit_of(env: gym.Env):
    while not isinstance(env, gym.wrappers.TimeLimit) and hasattr(env, "env"):
        env = env.env
    return env


def env_state(envs, raw_obs: np.ndarray):
    """Per env physics, RNG and time-limit counter, so that a resumed run takes the very same steps (Atari: None)."""
    if isinstance(envs, ProcgenVecEnv):
        return envs.get_state(raw_obs)
    if not isinstance(envs, gym.vector.VectorEnv):  # Atari's (and envpool's) envs: their state is out of reach
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


def set_env_state(envs, saved: dict) -> np.ndarray:
    """The inverse of env_state on freshly reset envs; returns the last observations."""
    if isinstance(envs, ProcgenVecEnv):
        return envs.set_state(saved)
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


# ---- networks (paper Table 4): separate actor and critic of the same architecture
ARCHS = {"mlp": {"smaller": {"hidden": [128, 64]}, "same": {"hidden": [256, 256]}, "larger": {"hidden": [512, 512]}}}
ARCHS["atari"] = {"smaller": {"cnn": "nature", "channels": [32, 32, 32], "fc": 128}}
ARCHS["atari"]["same"] = {"cnn": "impala", "channels": [16, 32, 32], "fc": 256}
ARCHS["atari"]["larger"] = {"cnn": "impala", "channels": [32, 64, 64], "fc": 1024}
ARCHS["procgen"] = ARCHS["atari"]


def layer_init(layer: nn.Module, std: float = np.sqrt(2), bias_const: float = 0.0) -> nn.Module:
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


def mlp(in_dim: int, hidden: list, out_dim: int, head_std: float) -> nn.Sequential:
    layers, last = [], in_dim
    for h in hidden:
        layers += [layer_init(nn.Linear(last, h)), nn.ReLU()]
        last = h
    return nn.Sequential(*layers, layer_init(nn.Linear(last, out_dim), std=head_std))


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


def make_body(domain: str, config: dict, obs_shape: tuple, out_dim: int, head_std: float) -> nn.Module:
    if domain == "mlp":
        return mlp(int(np.prod(obs_shape)), config["hidden"], out_dim, head_std)
    cnn = NatureCNN if config["cnn"] == "nature" else ImpalaCNN
    size = dict(channels=tuple(config["channels"]), fc=config["fc"], in_hw=obs_shape[-1])
    return cnn(obs_shape[0], out_dim, **size, head_std=head_std)


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
    def __init__(self, domain: str, config: dict, obs_shape: tuple, action_space: gym.Space):
        super().__init__()
        n_out = int(np.prod(action_space.shape)) if isinstance(action_space, gym.spaces.Box) else int(action_space.n)
        self.actor = Actor(make_body(domain, config, obs_shape, n_out, head_std=0.01), action_space)
        self.critic = make_body(domain, config, obs_shape, 1, head_std=1.0)

    def get_value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(obs).squeeze(-1)

    def get_action_and_value(self, obs: torch.Tensor, action: Optional[torch.Tensor] = None):
        dist = self.actor(obs)
        if action is None:
            action = dist.sample()
        return action, dist.log_prob(action), dist.entropy(), self.get_value(obs), dist


def greedy_action(dist) -> torch.Tensor:
    return dist.base_dist.loc if isinstance(dist, Independent) else dist.probs.argmax(-1)


# ---- checkpoints (SPEC section 7): one self-describing file, the same for teachers and students
ENV_CONFIG = ("frame_skip", "procgen_num_levels", "procgen_start_level", "procgen_distribution_mode")
ENV_CONFIG += ("torso_mass_scale", "mass_randomization")


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


def model_dict(agent: Agent, domain: str, args: Args, obs_shape, action_space, obs_rms, global_step, evaluation=None):
    ckpt = {"format_version": FORMAT_VERSION, "env_id": args.env_id, "domain": domain, "arch": args.arch}
    ckpt.update(arch_config=ARCHS[domain][args.arch], actor=agent.actor.state_dict(), critic=agent.critic.state_dict())
    ckpt.update(obs_shape=list(obs_shape), action_space=space_dict(action_space))
    ckpt["obs_rms"] = obs_rms.state_dict() if obs_rms is not None else None
    ckpt["env_config"] = {k: getattr(args, k) for k in ENV_CONFIG}
    ckpt.update(args=asdict(args), global_step=global_step, eval=evaluation)
    return ckpt


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
    agent = Agent(ckpt["domain"], ckpt["arch_config"], tuple(ckpt["obs_shape"]), space_from_dict(ckpt["action_space"]))
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


# ---- evaluation (SPEC section 5)
def evaluate(
    actor, args, domain, episodes, seed, device, obs_rms=None, deterministic=True, procgen_levels=None, num_envs=10
):
    """Returns of `episodes` full episodes; each env plays a fixed quota, so short episodes are not favoured."""
    num_envs = min(num_envs, episodes)
    envs = make_envs(args, domain, num_envs, seed, evaluation=True, procgen_levels=procgen_levels)
    quota = np.array([episodes // num_envs + (i < episodes % num_envs) for i in range(num_envs)])
    returns, truncated, steps = [[] for _ in range(num_envs)], 0, 0
    obs, _ = envs.reset(seed=seed)
    actor.eval()
    progress = tqdm(total=episodes, desc="evaluation", unit="episode", miniters=0, leave=False)
    while any(len(r) < q for r, q in zip(returns, quota)):
        x = obs_rms.normalize(obs) if obs_rms is not None else obs
        with torch.no_grad():
            dist = actor(torch.as_tensor(x, device=device))
            action = greedy_action(dist) if deterministic else dist.sample()
        action = action.cpu().numpy()
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


# ---- run folders: the flags that must not change when a run is resumed
STRUCTURAL = ("env_id", "arch", "seed", "num_envs", "num_steps", "minibatch_size", "frame_skip", "procgen_num_levels")
STRUCTURAL += ("procgen_start_level", "procgen_distribution_mode", "frozen_obs_norm", "torso_mass_scale")
STRUCTURAL += ("mass_randomization", "restart_games_at_checkpoint", "env_backend")


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
    try:
        domain = check_args(args)
        _, minibatch_size = minibatch_split(args.num_envs * args.num_steps, args.minibatch_size)
        frozen = load_checkpoint(args.frozen_obs_norm, env_id=args.env_id) if args.frozen_obs_norm else None
        envs = make_envs(args, domain, args.num_envs, args.seed)
        env_name = args.env_id.replace("/", "-").replace(":", "-")
        run_dir, resume_state = prepare_run(args, f"{env_name}__{args.exp_name}__{args.seed}__{int(time.time())}")
    except UsageError as e:
        fail(str(e))
    batch_size = args.num_envs * args.num_steps
    num_iterations = args.total_timesteps // batch_size
    obs_shape, action_space = envs.single_observation_space.shape, envs.single_action_space

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")
    threads = torch.get_num_threads()  # the update's; the rollout may take fewer (below)

    agent = Agent(domain, ARCHS[domain][args.arch], obs_shape, action_space).to(device)
    optimizer = optim.Adam(agent.parameters(), lr=args.learning_rate, eps=args.adam_eps)
    obs_rms = RunningMeanStd(obs_shape) if domain == "mlp" else None
    if frozen is not None:
        obs_rms.load_state_dict(frozen["obs_rms"])
    return_rms, discounted_return = RunningMeanStd(), np.zeros(args.num_envs)
    global_step, start_iteration, env_seed, saved_envs, recent_returns = 0, 1, args.seed, None, []
    if resume_state is not None:
        agent.actor.load_state_dict(resume_state["actor"])
        agent.critic.load_state_dict(resume_state["critic"])
        ts = resume_state["train_state"]
        optimizer.load_state_dict(ts["optimizer"])
        if obs_rms is not None:
            obs_rms.load_state_dict(resume_state["obs_rms"])
        return_rms.load_state_dict(ts["return_rms"])
        torch.set_rng_state(ts["torch_rng"])
        np.random.set_state(tuple(x.numpy() if torch.is_tensor(x) else x for x in ts["numpy_rng"]))
        random.setstate(ts["python_rng"])
        global_step, start_iteration = resume_state["global_step"], ts["iteration"] + 1
        saved_envs, recent_returns = ts.get("envs"), ts.get("recent_returns", [])
        if "discounted_return" in ts:
            discounted_return = ts["discounted_return"].numpy()
        if saved_envs is None:  # Atari (or an older checkpoint): new games seeded by the step
            env_seed = args.seed + global_step
            if domain == "procgen":  # a gym3 env is seeded only at construction
                envs.close()
                envs = make_envs(args, domain, args.num_envs, env_seed)
        # otherwise (MLP, Procgen) the envs, built with the original seed, are set to the saved state below
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
            msg = "\nCtrl-C: finishing this update, then writing a checkpoint (Ctrl-C again stops at once)"
            print(msg, file=sys.stderr)
        stop.update(signal=signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def save_checkpoint(iteration: int) -> None:
        state = model_dict(agent, domain, args, obs_shape, action_space, obs_rms, global_step)
        numpy_rng = tuple(torch.from_numpy(x) if isinstance(x, np.ndarray) else x for x in np.random.get_state())
        ts = {"optimizer": optimizer.state_dict(), "return_rms": return_rms.state_dict(), "iteration": iteration}
        ts.update(torch_rng=torch.get_rng_state(), numpy_rng=numpy_rng, python_rng=random.getstate())
        ts.update(envs=env_state(envs, raw_obs), discounted_return=torch.from_numpy(discounted_return.copy()))
        state["train_state"] = ts | {"recent_returns": list(recent_returns)}
        atomic_save(state, os.path.join(run_dir, "checkpoint.pt"))

    # ALGO Logic: storage setup
    obs_dtype = torch.uint8 if domain != "mlp" else torch.float32
    obs = torch.zeros((args.num_steps, args.num_envs) + obs_shape, dtype=obs_dtype, device=device)
    actions = torch.zeros((args.num_steps, args.num_envs) + action_space.shape, device=device)
    logprobs, rewards, dones, values = (torch.zeros((args.num_steps, args.num_envs), device=device) for _ in range(4))

    def prepare_obs(raw: np.ndarray, update: bool) -> np.ndarray:
        if obs_rms is None:
            return raw
        if update and frozen is None:
            obs_rms.update(raw)
        return obs_rms.normalize(raw)

    # a resumed MLP or Procgen run continues the very episodes it was in; Atari runs start the new games that the
    # uninterrupted run started right after the checkpoint (--restart-games-at-checkpoint)
    raw_obs, _ = envs.reset(seed=env_seed)
    if saved_envs is not None:
        raw_obs = set_env_state(envs, saved_envs)
    next_obs = torch.as_tensor(prepare_obs(raw_obs, update=saved_envs is None), device=device)
    start_time, start_step = time.time(), global_step
    bar = dict(unit="step", dynamic_ncols=True, mininterval=1 if sys.stderr.isatty() else 30)
    progress = tqdm(total=args.total_timesteps, initial=global_step, desc=os.path.basename(run_dir), **bar)
    iteration = start_iteration - 1
    for iteration in range(start_iteration, num_iterations + 1):
        if args.anneal_lr:
            optimizer.param_groups[0]["lr"] = (1.0 - (iteration - 1.0) / num_iterations) * args.learning_rate

        # ---- rollout
        agent.eval()
        # envpool steps the envs on its own threads, which torch's would compete with for the cores, and a batch
        # of num_envs states gains nothing from several threads (results/throughput.md: faster, same numbers)
        torch.set_num_threads(1 if args.env_backend == "envpool" else threads)
        for step in range(args.num_steps):
            global_step += args.num_envs
            obs[step] = next_obs
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
                final_obs = prepare_obs(np.stack(info["final_obs"][truncated_only]), update=False)
                with torch.no_grad():
                    reward[truncated_only] += args.gamma * agent.get_value(torch.as_tensor(final_obs, device=device))
            rewards[step], dones[step] = reward, torch.as_tensor(done, dtype=torch.float32, device=device)
            next_obs = torch.as_tensor(prepare_obs(raw_obs, update=True), device=device)
            for i in np.flatnonzero(info.get("_episode", [])):
                recent_returns = (recent_returns + [float(info["episode"]["r"][i])])[-20:]
                writer.add_scalar("charts/episodic_return", info["episode"]["r"][i], global_step)
                writer.add_scalar("charts/episodic_length", info["episode"]["l"][i], global_step)
        torch.set_num_threads(threads)

        # ---- advantages (GAE)
        with torch.no_grad():
            next_value = agent.get_value(next_obs)
            advantages, returns = compute_gae(rewards, values, dones, next_value, args.gamma, args.gae_lambda)

        # ---- PPO update
        agent.train()
        b_obs = obs.reshape((-1,) + obs_shape)
        b_logprobs, b_actions = logprobs.reshape(-1), actions.reshape((-1,) + action_space.shape)
        b_advantages, b_returns, b_values = advantages.reshape(-1), returns.reshape(-1), values.reshape(-1)
        clipfracs = []
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
                loss = pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef
                optimizer.zero_grad()
                loss.backward()
                grad_norm = nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                terms = {"policy_loss": pg_loss, "value_loss": v_loss, "entropy": entropy_loss}
                stop_if_not_finite(loss, grad_norm, terms, iteration, run_dir)
                optimizer.step()

        y_pred, y_true = b_values.cpu().numpy(), b_returns.cpu().numpy()
        var_y = np.var(y_true)
        explained_var = np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y
        sps = int((global_step - start_step) / (time.time() - start_time))
        writer.add_scalar("charts/learning_rate", optimizer.param_groups[0]["lr"], global_step)
        losses = {"value_loss": v_loss, "policy_loss": pg_loss, "entropy": entropy_loss}
        for name, value in (losses | {"old_approx_kl": old_approx_kl, "approx_kl": approx_kl}).items():
            writer.add_scalar(f"losses/{name}", value.item(), global_step)
        writer.add_scalar("losses/clipfrac", np.mean(clipfracs), global_step)
        writer.add_scalar("losses/explained_variance", explained_var, global_step)
        writer.add_scalar("charts/SPS", sps, global_step)
        progress.update(batch_size)
        progress.set_postfix(sps=sps, ret=f"{np.mean(recent_returns):.1f}" if recent_returns else "-", refresh=False)

        every = args.checkpoint_every
        periodic = every and global_step // every > (global_step - batch_size) // every
        if periodic and domain == "atari" and args.restart_games_at_checkpoint:  # the games a resumed run starts
            raw_obs, _ = envs.reset(seed=args.seed + global_step)
            next_obs = torch.as_tensor(raw_obs, device=device)
            discounted_return[:] = 0.0
        if stop["signal"] is not None or periodic:
            save_checkpoint(iteration)
        if stop["signal"] is not None:
            writer.close()
            resume = f"checkpoint written, continue with --resume {run_dir}"
            print(f"\nstopped by signal {stop['signal']} at step {global_step}; {resume}", file=sys.stderr)
            sys.exit(128 + stop["signal"])
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the evaluation below may be killed at once: resume redoes it
    signal.signal(signal.SIGINT, signal.default_int_handler)
    progress.close()
    save_checkpoint(iteration)
    envs.close()

    # ---- final evaluation (SPEC section 5), written to eval.json and the model; Procgen: on test levels (a block of
    # seeds right after the training levels, so none is a training level), sampling, and on the training levels
    deterministic, seed = domain != "procgen", args.seed + 10_000
    levels = (args.procgen_start_level + args.procgen_num_levels, 100_000) if domain == "procgen" else None
    test = evaluate(agent.actor, args, domain, args.eval_episodes, seed, device, obs_rms, deterministic, levels)
    evaluation = {"env_id": args.env_id, "arch": args.arch, "seed": args.seed, "global_step": global_step}
    evaluation.update(deterministic=deterministic, **eval_summary(*test))
    if domain == "mlp":
        evaluation["train_env"] = {k: getattr(args, k) for k in ("torso_mass_scale", "mass_randomization")}
        evaluation["eval_env"] = f"{args.env_id}, unmodified"
    if domain == "procgen":
        train = evaluate(agent.actor, args, domain, args.eval_episodes, seed, device, None, False)
        evaluation["train_levels"] = eval_summary(*train)
    evaluation["command"] = " ".join(["python"] + sys.argv)
    model = model_dict(agent, domain, args, obs_shape, action_space, obs_rms, global_step, evaluation)
    atomic_save(model, os.path.join(run_dir, "model.pt"))
    atomic_save(evaluation, os.path.join(run_dir, "eval.json"), as_json=True)
    writer.add_scalar("eval/mean_return", evaluation["mean_return"], global_step)
    writer.close()
    result = f"{evaluation['mean_return']:.2f} +- {evaluation['std_return']:.2f} over {evaluation['episodes']} episodes"
    print(f"{args.env_id}: mean evaluation return {result}; model in {os.path.join(run_dir, 'model.pt')}")
    return evaluation


if __name__ == "__main__":
    import tyro

    try:
        main(tyro.cli(Args))
        interrupted = False
    except KeyboardInterrupt:  # a second Ctrl-C, or one outside training: the checkpoints written so far are kept
        interrupted = True
    if interrupted:  # here, after the progress bar that the exception held has been closed
        fail("stopped by Ctrl-C; continue from the last checkpoint.pt with --resume <run folder>", code=130)
