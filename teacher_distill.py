"""Teacher-distill (paper Algorithm 3), a baseline of Proximal Policy Distillation (Spigler, TMLR 2025).

Distillation on the teacher's own trajectories: the TEACHER's sampled actions drive the environments, and after
every short rollout (5 steps per env) the student takes ONE gradient step on the whole rollout:

    L = KL(pi_teacher || pi_student) - alpha * H(pi_student) + c_v * (V_student(s) - V_teacher(s))^2

the same update as student_distill.py (Algorithm 2); only who acts differs. No rewards are used for learning; the
teacher's forward that picks each action also gives the update's targets (no second forward, no gradients).

NOTE: the training curve (`charts/episodic_return`, the progress bar's `ret`) shows the TEACHER's episodes, not the
student's: it looks good from the start and says little about the student (the paper warns about this, Figure 8).
The final evaluation (eval.json) always runs the student, beside the teacher.

Env and domain (MLP, Atari, Procgen) come from the teacher checkpoint; the student is saved in the teacher's format,
so it can be the next teacher.

    python teacher_distill.py --teacher teachers/CartPole-v1.pt --total-timesteps 50000
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

# (random, human) per ROM: Badia et al. (2020, Agent57), the paper's 11 games (= DeepMind's DQN Zoo atari_data.py)
HUMAN_RANDOM_SCORES = {"pong": (-20.7, 14.6), "freeway": (0.0, 29.6), "ms_pacman": (307.3, 6951.6)}
HUMAN_RANDOM_SCORES.update(qbert=(163.9, 13455.0), beam_rider=(363.9, 16926.5), crazy_climber=(10780.5, 35829.4))
HUMAN_RANDOM_SCORES.update(demon_attack=(152.1, 1971.0), enduro=(0.0, 860.5), seaquest=(68.4, 42054.7))
HUMAN_RANDOM_SCORES.update(zaxxon=(32.5, 9173.3), atlantis=(12850.0, 29028.1))

ACTING_NOTE = "teacher-distill: the teacher's sampled actions drive the environments, so charts/episodic_return"
ACTING_NOTE += " and the progress bar's `ret` are the TEACHER's episodes, not the student's; the final evaluation"
ACTING_NOTE += " runs the student"


@dataclass
class Args:
    """Teacher-distill (paper Algorithm 3): the teacher's sampled actions drive the envs; one gradient step per
    rollout on KL(teacher || student) - alpha * entropy + c_v * (V_student - V_teacher)^2. NOTE: the training
    curve (charts/episodic_return) reports the TEACHER's episodes; the final evaluation runs the student."""

    # General settings
    teacher: str = "teachers/Hopper-v5.pt"  # teacher checkpoint (a model.pt of these scripts): it sets env and domain
    env_id: Optional[str] = None  # env id (default: the teacher's; if given it must be the teacher's)
    torso_mass_scale: Optional[float] = None  # MuJoCo training envs: scale the torso's mass (default: the teacher's)
    mass_randomization: Optional[float] = None  # MuJoCo training envs: masses x U(1-x, 1+x) (default: the teacher's)
    student_arch: Literal["smaller", "same", "larger"] = "same"  # student network size (paper Table 4)
    exp_name: str = "teacher-distill"  # name of the experiment, part of the default run name
    seed: int = 1  # seed of torch, numpy, random and the environments
    torch_deterministic: bool = True  # sets `torch.backends.cudnn.deterministic`
    cuda: bool = True  # use CUDA when it is available (`--no-cuda` forces the CPU)
    track: bool = False  # also log to Weights & Biases (imported only then)
    wandb_project_name: str = "ppd"  # Weights & Biases project
    wandb_entity: Optional[str] = None  # Weights & Biases entity (team)
    output_dir: str = "runs"  # folder that holds the run folders
    run_name: Optional[str] = None  # run folder (default `<env>__<exp-name>__<seed>__<time>`); never overwritten
    checkpoint_every: int = 100_000  # write `checkpoint.pt` every this many steps; 0: only at the end
    restart_games_at_checkpoint: bool = True  # Atari: restart the games after each checkpoint, so resume is exact
    resume: Optional[str] = None  # continue the run of this `checkpoint.pt` (or run folder), with the same flags
    eval_episodes: Optional[int] = None  # final evaluation episodes per policy (default 50, 200 for Procgen)
    eval_max_frames: int = 108_000  # Atari: cut an evaluation game after this many emulator frames
    env_backend: Literal["gymnasium", "envpool"] = "gymnasium"  # MLP training envs; envpool: faster, see README
    capture_video: bool = False  # write `video.gif`: a greedy episode of the teacher and the student, side by side
    video_seconds: float = 10.0  # length of each clip of --capture-video, in seconds of env time

    # Algorithm settings (paper A.3)
    kl_direction: Literal["forward", "reverse"] = "forward"  # forward: KL(teacher || student), the paper's; or reverse
    teacher_noise_std: float = 0.0  # imperfect teacher (paper Table 2): N(0, std^2) noise on its parameters
    total_timesteps: int = 2_000_000  # environment steps to train
    learning_rate: float = 3e-4  # Adam learning rate
    num_envs: int = 18  # parallel environments
    num_steps: int = 5  # steps per environment per rollout; each rollout gives one gradient step
    ent_coef: float = 0.0  # entropy coefficient alpha
    vf_coef: float = 0.5  # weight c_v of the critic's squared error to the teacher's value
    max_grad_norm: float = 0.5  # gradient clipping norm
    adam_eps: float = 1e-5  # Adam epsilon


# the range of every numeric flag, checked before anything is written (a flag left at None gets a valid default)
FLAG_RANGES = {"seed": ">= 0", "checkpoint_every": ">= 0", "eval_episodes": ">= 1", "eval_max_frames": ">= 1"}
FLAG_RANGES |= {"video_seconds": "> 0", "torso_mass_scale": "> 0", "mass_randomization": "in [0, 1)"}
FLAG_RANGES |= {"teacher_noise_std": ">= 0", "total_timesteps": ">= 1", "learning_rate": "> 0", "num_envs": ">= 1"}
FLAG_RANGES |= {"num_steps": ">= 1", "ent_coef": ">= 0", "vf_coef": ">= 0", "max_grad_norm": "> 0"}
FLAG_RANGES["adam_eps"] = ">= 0"


class UsageError(Exception):
    """Bad input: reported as one line on stderr with exit code 2, before anything is written."""


class NonFiniteLoss(Exception):
    """A NaN or inf in the loss or its gradient, caught before the parameters change; the message names the terms."""


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


# ---- Domains and environments (as in train_teacher.py; the env settings come from the teacher's checkpoint)
PROCGEN_GAMES = ("bigfish", "bossfight", "caveflyer", "chaser", "climber", "coinrun", "dodgeball", "fruitbot", "heist")
PROCGEN_GAMES += ("jumper", "leaper", "maze", "miner", "ninja", "plunder", "starpilot")


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


def check_mass_options(env_id: str, torso_scale: float, spread: float) -> None:
    if torso_scale == 1.0 and spread == 0.0:
        return
    model = getattr(gym.make(env_id).unwrapped, "model", None)
    if model is None or "torso" not in [model.body(i).name for i in range(model.nbody)]:
        need = "--torso-mass-scale and --mass-randomization need a MuJoCo env with a body named 'torso', "
        raise UsageError(need + f"{env_id} has none; drop them or use Hopper-v5, Walker2d-v5, Ant-v5, ...")


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


def make_envs(env_id, domain, env_config, num_envs, seed, evaluation=False, procgen_levels=None, max_frames=108_000):
    """Vector env of the domain: reset(seed), step(actions), full-game episode statistics in info['episode']."""
    get = env_config.get
    if domain == "mlp":  # evaluation: always the unmodified env, on gymnasium
        mass = (1.0, 0.0) if evaluation else (get("torso_mass_scale", 1.0), get("mass_randomization", 0.0))
        return make_mlp_envs(env_id, num_envs, *mass, "gymnasium" if evaluation else get("env_backend", "gymnasium"))
    if domain == "atari":
        return make_atari_envs(env_id, num_envs, seed, get("frame_skip", 4), evaluation, max_frames=max_frames)
    start, count = procgen_levels or (get("procgen_start_level", 0), get("procgen_num_levels", 200))
    game, mode = env_id.split(":", 1)[1], get("procgen_distribution_mode", "easy")
    return ProcgenVecEnv(game, num_envs, seed, count, start, mode)


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


class RunningMeanStd:
    """The teacher's observation statistics (SB3's VecNormalize layout), frozen: loaded, never updated."""

    def __init__(self, shape=()):
        self.mean, self.var, self.count = np.zeros(shape, np.float64), np.ones(shape, np.float64), 1e-4
        self.clip, self.epsilon = 10.0, 1e-8

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
ARCHS = {"mlp": {"smaller": {"hidden": [128, 64]}, "same": {"hidden": [256, 256]}, "larger": {"hidden": [512, 512]}}}
ARCHS["atari"] = {"smaller": {"cnn": "nature", "channels": [32, 32, 32], "fc": 128}}
ARCHS["atari"]["same"] = {"cnn": "impala", "channels": [16, 32, 32], "fc": 256}
ARCHS["atari"]["larger"] = {"cnn": "impala", "channels": [32, 64, 64], "fc": 1024}
ARCHS["procgen"] = ARCHS["atari"]


def layer_init(layer: nn.Module, std: float = np.sqrt(2), bias_const: float = 0.0) -> nn.Module:
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}  # arch_config["activation"] (MLP; absent: relu, ours)


def mlp(in_dim: int, hidden: list, out_dim: int, head_std: float, activation: str = "relu") -> nn.Sequential:
    layers, last = [], in_dim
    for h in hidden:
        layers += [layer_init(nn.Linear(last, h)), ACTIVATIONS[activation]()]
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
        return mlp(int(np.prod(obs_shape)), config["hidden"], out_dim, head_std, config.get("activation", "relu"))
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


def greedy_action(dist) -> torch.Tensor:
    return dist.base_dist.loc if isinstance(dist, Independent) else dist.probs.argmax(-1)


# ---- ALGO LOGIC: the distillation step (paper Algorithm 3, step 5; the same as Algorithm 2's)
def dist_params(dist) -> tuple:
    """(logits,) of a Categorical or (mean, log_std) of a diagonal Gaussian: what is kept of a teacher."""
    if isinstance(dist, Independent):
        return dist.base_dist.loc, dist.base_dist.scale.log()
    return (dist.logits,)


def kl_divergence(teacher: tuple, student: tuple, direction: str = "forward") -> torch.Tensor:
    """Analytic KL over the whole action distribution, per state; forward: KL(teacher || student)."""
    p, q = (teacher, student) if direction == "forward" else (student, teacher)
    if len(p) == 1:  # Categorical: (logits,)
        log_p, log_q = torch.log_softmax(p[0], -1), torch.log_softmax(q[0], -1)
        return (log_p.exp() * (log_p - log_q)).sum(-1)
    (mean_p, log_std_p), (mean_q, log_std_q) = p, q  # diagonal Gaussian, summed over the action dimensions
    var_ratio = torch.exp(2 * (log_std_p - log_std_q))
    return (0.5 * (var_ratio + ((mean_p - mean_q) / log_std_q.exp()) ** 2 - 1) - (log_std_p - log_std_q)).sum(-1)


def add_teacher_noise(agent: nn.Module, std: float, seed: int) -> None:
    """The paper's imperfect teacher: independent N(0, std^2) noise on every parameter, reproducible by seed."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in agent.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * std)


def distill_update(agent: Agent, optimizer, b_obs, b_teacher: tuple, b_teacher_value, args: Args) -> dict:
    """One gradient step on the rollout towards the teacher's outputs; NonFiniteLoss leaves the parameters untouched."""
    dist = agent.actor(b_obs)
    kl = kl_divergence(b_teacher, dist_params(dist), args.kl_direction)
    entropy = dist.entropy().mean()
    v_loss = ((agent.get_value(b_obs) - b_teacher_value) ** 2).mean()  # to the teacher's critic; no 1/2, as the paper
    distill_loss = kl.mean()
    loss = distill_loss - args.ent_coef * entropy + args.vf_coef * v_loss
    optimizer.zero_grad()
    loss.backward()
    grad_norm = nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
    if not torch.isfinite(torch.stack([loss.detach(), grad_norm])).all():
        terms = {"distill_loss": distill_loss, "value_loss": v_loss, "entropy": entropy}
        raise NonFiniteLoss(", ".join(k for k, v in terms.items() if not torch.isfinite(v).all()) or "gradient")
    optimizer.step()
    with torch.no_grad():  # how close the student's greedy policy is to the teacher's (before this step)
        if agent.actor.continuous:  # distance between the Gaussians' means
            distance = (dist.base_dist.loc - b_teacher[0]).norm(dim=-1).mean().item()
            agreement = {"distill/mean_action_distance": distance}
        else:  # fraction of states where both pick the same greedy action
            same = (dist.logits.argmax(-1) == b_teacher[0].argmax(-1)).float().mean().item()
            agreement = {"distill/greedy_agreement": same}
    logs = {"losses/distill_loss": distill_loss.item(), "losses/value_loss": v_loss.item()}
    return logs | {"losses/entropy": entropy.item(), "distill/kl": distill_loss.item(), **agreement}


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


def model_dict(agent, domain, args, obs_shape, action_space, obs_rms, env_config, global_step, evaluation=None) -> dict:
    """The student in the teacher's format; obs_rms and env_config are the teacher's (MLP: this run's masses)."""
    ckpt = {"format_version": FORMAT_VERSION, "env_id": args.env_id, "domain": domain, "arch": args.student_arch}
    ckpt.update(arch_config=ARCHS[domain][args.student_arch], actor=agent.actor.state_dict())
    ckpt.update(critic=agent.critic.state_dict(), obs_shape=list(obs_shape), action_space=space_dict(action_space))
    ckpt.update(obs_rms=obs_rms.state_dict() if obs_rms is not None else None, env_config=env_config)
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


def check_fits_env(ckpt: dict, path: str, obs_shape: tuple, action_space: gym.Space) -> None:
    hint = "use a checkpoint trained on this env"
    if tuple(ckpt["obs_shape"]) != tuple(obs_shape):
        shapes = f"expects observations of shape {tuple(ckpt['obs_shape'])}, the env gives {tuple(obs_shape)}"
        raise UsageError(f"checkpoint '{path}' {shapes}; {hint}")
    if ckpt["action_space"] != space_dict(action_space):
        spaces = f"has action space {ckpt['action_space']}, the env has {space_dict(action_space)}"
        raise UsageError(f"checkpoint '{path}' {spaces}; {hint}")


def agent_from_checkpoint(ckpt: dict) -> Agent:
    agent = Agent(ckpt["domain"], ckpt["arch_config"], tuple(ckpt["obs_shape"]), space_from_dict(ckpt["action_space"]))
    agent.actor.load_state_dict(ckpt["actor"])
    agent.critic.load_state_dict(ckpt["critic"])
    return agent


def refuse_foreign_teachers(paths, env_id: Optional[str]) -> None:
    """UsageError naming the converter when a teacher is a Stable-Baselines3 (.zip) or CleanRL file."""
    for path in paths:
        if path.endswith((".zip", ".cleanrl_model")):
            cmd = f"python -m ppd_tools.convert_teacher {path} --env-id {env_id or '<env>'} --output teacher.pt"
            raise UsageError(f"'{path}' is a Stable-Baselines3 / CleanRL file; convert it first: {cmd}")


# ---- Evaluation (SPEC section 5): student and teacher, same protocol and seeds
def evaluate(
    actor: Actor,
    env_id: str,
    domain: str,
    env_config: dict,
    episodes: int,
    seed: int,
    device,
    obs_rms=None,
    deterministic: bool = True,
    procgen_levels=None,
    num_envs: int = 10,
    max_frames: int = 108_000,
) -> tuple:
    """Returns of `episodes` full episodes, and how many were truncated; each env plays a fixed quota."""
    num_envs = min(num_envs, episodes)
    kw = dict(procgen_levels=procgen_levels, max_frames=max_frames)
    envs = make_envs(env_id, domain, env_config, num_envs, seed, evaluation=True, **kw)
    quota = np.array([episodes // num_envs + (i < episodes % num_envs) for i in range(num_envs)])
    returns, truncated, steps = [[] for _ in range(num_envs)], 0, 0
    obs, _ = envs.reset(seed=seed)
    actor.eval()
    progress = tqdm(total=episodes, desc="evaluation", unit="episode", miniters=0, leave=False)
    while any(len(r) < q for r, q in zip(returns, quota)):
        x = obs_rms.normalize(obs) if obs_rms is not None else obs
        with torch.no_grad():
            dist = actor(torch.as_tensor(x, device=device))
            action = (greedy_action(dist) if deterministic else dist.sample()).cpu().numpy()
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


def eval_levels(env_config: dict) -> tuple:
    """Procgen test levels (start, count): a block of seeds right after the training levels, none a training level."""
    return (env_config.get("procgen_start_level", 0) + env_config.get("procgen_num_levels", 200), 100_000)


def human_normalized(game: str, score: float) -> Optional[float]:
    """0 = the random agent's score, 1 = the human tester's; None for a game outside the table."""
    if game not in HUMAN_RANDOM_SCORES:
        return None
    random_score, human_score = HUMAN_RANDOM_SCORES[game]
    return (score - random_score) / (human_score - random_score)


# ---- Input checks and run folders
STRUCTURAL = ("env_id", "teacher", "torso_mass_scale", "mass_randomization", "student_arch", "seed", "num_envs")
STRUCTURAL += ("num_steps", "kl_direction", "teacher_noise_std", "restart_games_at_checkpoint", "env_backend")


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


def check_args(args: Args) -> tuple:
    """Every input check, before anything is written; returns (teacher, domain, env_config, envs, run_dir, state)."""

    check_ranges(args, FLAG_RANGES)
    if args.env_id is not None:
        check_env_id(args.env_id)  # a typo gets the closest known ids
    refuse_foreign_teachers((args.teacher,), args.env_id)  # converted first, by ppd_tools/convert_teacher.py
    ckpt = load_checkpoint(args.teacher, env_id=args.env_id)
    args.env_id = args.env_id or ckpt["env_id"]
    domain, env_config = ckpt["domain"], ckpt["env_config"]
    for name, off in (("torso_mass_scale", 1.0), ("mass_randomization", 0.0)):  # train where the teacher did
        if getattr(args, name) is None:
            setattr(args, name, env_config.get(name, off))
    if domain != "mlp" and (args.torso_mass_scale != 1.0 or args.mass_randomization != 0.0):
        raise UsageError("--torso-mass-scale and --mass-randomization apply to MuJoCo envs only; drop them")
    if domain == "mlp":
        check_mass_options(args.env_id, args.torso_mass_scale, args.mass_randomization)
        env_config = {**env_config, "torso_mass_scale": args.torso_mass_scale}
        env_config["mass_randomization"] = args.mass_randomization
    if args.env_backend == "envpool":  # ppd_tools/envpool_backend.py, imported only for this feature
        if domain != "mlp":
            raise UsageError("--env-backend envpool applies to the MLP domain only; drop it")
        try:
            from ppd_tools.envpool_backend import envpool_problem
        except ImportError:
            raise UsageError("--env-backend envpool needs the repository's ppd_tools/ folder beside this script")
        if problem := envpool_problem(args.env_id, args.torso_mass_scale, args.mass_randomization):
            raise UsageError(problem)
    if args.eval_episodes is None:
        args.eval_episodes = 200 if domain == "procgen" else 50
    if args.capture_video:  # films with ppd_tools/video.py, imported only for this feature
        try:
            from ppd_tools.video import video_problem
        except ImportError:
            raise UsageError("--capture-video needs the repository's ppd_tools/ folder beside this script")
        if problem := video_problem(args.env_id, domain):
            raise UsageError(f"--capture-video: {problem}; or leave out --capture-video")
    if args.total_timesteps < args.num_envs * args.num_steps:
        rollout = f"({args.num_envs} x {args.num_steps} = {args.num_envs * args.num_steps} steps)"
        raise UsageError(f"--total-timesteps {args.total_timesteps} is less than one rollout {rollout}")
    training = env_config | {"env_backend": args.env_backend}  # how to step them, not saved with the student
    envs = make_envs(args.env_id, domain, training, args.num_envs, args.seed)
    check_fits_env(ckpt, args.teacher, envs.single_observation_space.shape, envs.single_action_space)
    name = f"{args.env_id.replace('/', '-').replace(':', '-')}__{args.exp_name}__{args.seed}__{int(time.time())}"
    return ckpt, domain, env_config, envs, *prepare_run(args, name)


def main(args: Args) -> dict:
    try:
        teacher_ckpt, domain, env_config, envs, run_dir, resume_state = check_args(args)
    except UsageError as e:
        fail(str(e))
    batch_size = args.num_envs * args.num_steps
    num_iterations = args.total_timesteps // batch_size
    obs_shape, action_space = envs.single_observation_space.shape, envs.single_action_space
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")
    threads = torch.get_num_threads()  # the update's; the rollout may take fewer (below)

    # the teacher is built before seeding, so that the student's initialization matches the other scripts'
    teacher = agent_from_checkpoint(teacher_ckpt)
    if args.teacher_noise_std > 0:
        add_teacher_noise(teacher, args.teacher_noise_std, args.seed)
    teacher = teacher.to(device).eval().requires_grad_(False)  # frozen

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic

    agent = Agent(domain, ARCHS[domain][args.student_arch], obs_shape, action_space).to(device)
    optimizer = optim.Adam(agent.parameters(), lr=args.learning_rate, eps=args.adam_eps)
    # MLP domain: the teacher's observation normalization, frozen, for what both networks see (paper A.2)
    obs_rms = RunningMeanStd(obs_shape).load_state_dict(teacher_ckpt["obs_rms"]) if domain == "mlp" else None
    global_step, start_iteration, saved_envs, recent_returns = 0, 1, None, []
    if resume_state is not None:
        agent.actor.load_state_dict(resume_state["actor"])
        agent.critic.load_state_dict(resume_state["critic"])
        ts = resume_state["train_state"]
        optimizer.load_state_dict(ts["optimizer"])
        torch.set_rng_state(ts["torch_rng"])
        np.random.set_state(tuple(x.numpy() if torch.is_tensor(x) else x for x in ts["numpy_rng"]))
        random.setstate(ts["python_rng"])
        global_step, start_iteration = resume_state["global_step"], ts["iteration"] + 1
        saved_envs, recent_returns = ts.get("envs"), ts.get("recent_returns", [])
        if saved_envs is None and domain == "procgen":  # older checkpoint: new episodes (gym3 is seeded when built)
            envs.close()
            envs = make_envs(args.env_id, domain, env_config, args.num_envs, args.seed + global_step)
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
            again = "(Ctrl-C again stops at once)"
            print(f"\nCtrl-C: finishing this update, then writing a checkpoint {again}", file=sys.stderr)
        stop.update(signal=signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def save_checkpoint(iteration: int) -> None:
        state = model_dict(agent, domain, args, obs_shape, action_space, obs_rms, env_config, global_step)
        np_rng = tuple(torch.from_numpy(x) if isinstance(x, np.ndarray) else x for x in np.random.get_state())
        ts = {"optimizer": optimizer.state_dict(), "iteration": iteration, "torch_rng": torch.get_rng_state()}
        ts.update(numpy_rng=np_rng, python_rng=random.getstate(), envs=env_state(envs, raw_obs))
        state["train_state"] = ts | {"recent_returns": list(recent_returns)}
        atomic_save(state, os.path.join(run_dir, "checkpoint.pt"))

    def prepare_obs(raw: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(obs_rms.normalize(raw) if obs_rms is not None else raw, device=device)

    # ALGO LOGIC: storage setup (pixel observations stay uint8); the teacher's outputs are stored as it acts
    obs_dtype = torch.float32 if domain == "mlp" else torch.uint8
    obs = torch.zeros((args.num_steps, args.num_envs) + obs_shape, dtype=obs_dtype, device=device)
    n_out = int(np.prod(action_space.shape)) if agent.actor.continuous else int(action_space.n)
    shape, n_params = (args.num_steps, args.num_envs, n_out), 2 if agent.actor.continuous else 1
    teacher_params = tuple(torch.zeros(shape, device=device) for _ in range(n_params))  # (logits,) or (mean, log_std)
    teacher_values = torch.zeros((args.num_steps, args.num_envs), device=device)
    print(ACTING_NOTE, flush=True)
    writer.add_text("note", ACTING_NOTE)

    # a resumed run continues the very episodes it was in (MLP, Procgen; Atari: the new games, seeded by the step,
    # that the uninterrupted run started right after the checkpoint: --restart-games-at-checkpoint)
    fresh = saved_envs is None and resume_state is not None
    raw_obs, _ = envs.reset(seed=args.seed + global_step if fresh else args.seed)
    if saved_envs is not None:
        raw_obs = set_env_state(envs, saved_envs)
    next_obs = prepare_obs(raw_obs)
    start_time, start_step = time.time(), global_step
    bar = dict(unit="step", dynamic_ncols=True, mininterval=1 if sys.stderr.isatty() else 30)
    progress = tqdm(total=args.total_timesteps, initial=global_step, desc=os.path.basename(run_dir), **bar)
    iteration = start_iteration - 1
    for iteration in range(start_iteration, num_iterations + 1):
        # ---- rollout: the TEACHER acts (Algorithm 3, step 4); rewards (the teacher's) are only logged
        # envpool steps the envs on its own threads, which torch's would compete with for the cores, and a batch
        # of num_envs states gains nothing from several threads (results/throughput.md: faster, same numbers)
        torch.set_num_threads(1 if args.env_backend == "envpool" else threads)
        for step in range(args.num_steps):
            global_step += args.num_envs
            obs[step] = next_obs
            with torch.no_grad():  # this forward picks the action and gives the update's targets: no second one
                teacher_dist = teacher.actor(next_obs)
                action = teacher_dist.sample()
                for buffer, param in zip(teacher_params, dist_params(teacher_dist)):
                    buffer[step] = param
                teacher_values[step] = teacher.get_value(next_obs)
            env_action = action.cpu().numpy()
            if agent.actor.continuous:
                env_action = np.clip(env_action, action_space.low, action_space.high)
            raw_obs, _, _, _, info = envs.step(env_action)
            next_obs = prepare_obs(raw_obs)
            for i in np.flatnonzero(info.get("_episode", [])):
                recent_returns = (recent_returns + [float(info["episode"]["r"][i])])[-20:]
                writer.add_scalar("charts/episodic_return", info["episode"]["r"][i], global_step)
                writer.add_scalar("charts/episodic_length", info["episode"]["l"][i], global_step)
        torch.set_num_threads(threads)

        # ---- one gradient step on the whole rollout (Algorithm 3, step 5)
        b_obs = obs.reshape((-1,) + obs_shape)
        b_teacher = tuple(x.reshape(batch_size, n_out) for x in teacher_params)
        try:
            logs = distill_update(agent, optimizer, b_obs, b_teacher, teacher_values.reshape(-1), args)
        except NonFiniteLoss as e:
            writer.close()
            print(file=sys.stderr)  # off the progress bar's line
            where = f"in update {iteration}; the run stopped, its last good checkpoint is in {run_dir}"
            hint = "(try a lower --learning-rate, or check the teacher checkpoint and the env's observations)"
            fail(f"non-finite {e} {where} {hint}", code=3)

        sps = int((global_step - start_step) / (time.time() - start_time))
        for tag, value in logs.items():
            writer.add_scalar(tag, value, global_step)
        writer.add_scalar("charts/SPS", sps, global_step)
        progress.update(batch_size)
        ret = f"{np.mean(recent_returns):.1f}" if recent_returns else "-"
        progress.set_postfix(sps=sps, ret=ret, kl=f"{logs['distill/kl']:.3f}", refresh=False)

        every = args.checkpoint_every
        periodic = every and global_step // every > (global_step - batch_size) // every
        if periodic and domain == "atari" and args.restart_games_at_checkpoint:  # new games, as a resumed run has
            raw_obs, _ = envs.reset(seed=args.seed + global_step)
            next_obs = prepare_obs(raw_obs)
        if stop["signal"] is not None or periodic:
            save_checkpoint(iteration)
        if stop["signal"] is not None:
            writer.close()
            how = f"checkpoint written, continue with --resume {run_dir}"
            print(f"\nstopped by signal {stop['signal']} at step {global_step}; {how}", file=sys.stderr)
            sys.exit(128 + stop["signal"])
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the evaluation below may be killed at once: resume redoes it
    signal.signal(signal.SIGINT, signal.default_int_handler)
    progress.close()
    save_checkpoint(iteration)
    envs.close()

    # ---- final evaluation (SPEC section 5): student and teacher, same protocol and seeds
    deterministic = domain != "procgen"  # Procgen: stochastic actions, unseen test levels

    def run_eval(actor: Actor, procgen_levels=None) -> dict:
        setup = (args.env_id, domain, env_config, args.eval_episodes, args.seed + 10_000, device, obs_rms)
        return eval_summary(*evaluate(actor, *setup, deterministic, procgen_levels, max_frames=args.eval_max_frames))

    levels = eval_levels(env_config) if domain == "procgen" else None
    student_eval, teacher_eval = run_eval(agent.actor, levels), run_eval(teacher.actor, levels)
    evaluation = {"env_id": args.env_id, "method": "teacher-distill", "student_arch": args.student_arch}
    evaluation.update(seed=args.seed, teacher_checkpoint=args.teacher, global_step=global_step)
    evaluation.update(deterministic=deterministic, kl_direction=args.kl_direction)
    evaluation.update(teacher_noise_std=args.teacher_noise_std, student=student_eval, teacher=teacher_eval)
    if domain == "mlp":
        evaluation["train_env"] = {k: getattr(args, k) for k in ("torso_mass_scale", "mass_randomization")}
        evaluation["eval_env"] = f"{args.env_id}, unmodified"
    student_score, teacher_score = student_eval["mean_return"], teacher_eval["mean_return"]
    if args.teacher_noise_std > 0:  # the uncorrupted teacher too, the reference of the paper's Table 2
        evaluation["teacher_clean"] = run_eval(agent_from_checkpoint(teacher_ckpt).to(device).actor, levels)
    if domain == "procgen":
        evaluation["test_levels"] = {"start_level": levels[0], "num_levels": levels[1]}
        evaluation["train_levels"] = {"student": run_eval(agent.actor), "teacher": run_eval(teacher.actor)}
    if domain == "atari":
        game = atari_game(args.env_id)
        random_score, human_score = HUMAN_RANDOM_SCORES.get(game, (None, None))
        normalized = {"student": human_normalized(game, student_score)}
        normalized.update(teacher=human_normalized(game, teacher_score), random=random_score, human=human_score)
        evaluation["human_normalized"] = normalized
        if random_score is not None:  # the fraction of teacher compares human-normalized scores (SPEC section 5)
            student_score, teacher_score = normalized["student"], normalized["teacher"]
    evaluation["fraction_of_teacher"] = student_score / teacher_score if teacher_score != 0 else None
    if args.capture_video:  # same env seed as the evaluation's first episode
        from ppd_tools.video import film

        policies = [("teacher", teacher.actor, obs_rms), (f"student ({args.student_arch})", agent.actor, obs_rms)]
        film_args = (args.env_id, domain, env_config, args.seed + 10_000, device, args.video_seconds)
        evaluation["video"] = film(os.path.join(run_dir, "video.gif"), policies, *film_args)
    evaluation["command"] = " ".join(["python"] + sys.argv)

    model_eval = {"env_id": args.env_id, "arch": args.student_arch, "global_step": global_step}
    model_eval.update(deterministic=deterministic, **student_eval)  # the layout of a teacher's eval
    if domain == "procgen":
        model_eval["train_levels"] = evaluation["train_levels"]["student"]
    model = model_dict(agent, domain, args, obs_shape, action_space, obs_rms, env_config, global_step, model_eval)
    atomic_save(model, os.path.join(run_dir, "model.pt"))
    atomic_save(evaluation, os.path.join(run_dir, "eval.json"), as_json=True)
    writer.add_scalar("eval/student_mean_return", student_eval["mean_return"], global_step)
    writer.close()
    fraction, s, t = evaluation["fraction_of_teacher"], student_eval, teacher_eval
    mode = "deterministic" if deterministic else "stochastic, test levels"
    noisy, share = " (noisy)" if args.teacher_noise_std > 0 else "", "n/a" if fraction is None else f"{fraction:.1%}"
    lines = [f"\n{args.env_id}, {args.eval_episodes} evaluation episodes ({mode}):"]
    lines.append(f"  teacher{noisy}: {t['mean_return']:9.2f} +- {t['std_return']:.2f}")
    lines.append(f"  student ({args.student_arch}): {s['mean_return']:9.2f} +- {s['std_return']:.2f}")
    lines[-1] += f"   = {share} of the teacher"
    files = f"  student saved to {os.path.join(run_dir, 'model.pt')}, numbers in {os.path.join(run_dir, 'eval.json')}"
    video = f", video in {os.path.join(run_dir, 'video.gif')}" if args.capture_video else ""
    print("\n".join(lines + [files + video]))
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
