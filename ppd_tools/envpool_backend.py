"""`--env-backend envpool` of the MLP scripts (ppd_mujoco.py, train_teacher.py): envpool's C++ MuJoCo envs, stepped
by its own threads, behind the interface of the scripts' gymnasium SyncVectorEnv. The scripts import this module only
when the flag asks for it, so a script copied alone runs with its default backend, gymnasium.

    pip install --no-deps -r requirements-envpool.txt

Kept: gymnasium's spaces (a checkpoint does not depend on the backend); SAME_STEP autoreset (at the step that ends
an episode, info["final_obs"] holds its last observation, which a truncation is bootstrapped from, and the returned
observation is the next episode's first); episode statistics in info["episode"] / info["_episode"]. Given up: the
envs' state cannot be read or set (a resumed run starts new episodes, seeded by the step) and the mass options; the
physics are envpool's own build of MuJoCo: the same task by a teacher's score, not the same trajectories
(results/env_backends.md).
"""

import os
from typing import Optional

import gymnasium as gym
import numpy as np


def envpool_problem(env_id: str, torso_scale: float, spread: float) -> Optional[str]:
    """None, or one line saying why envpool cannot train this: asked before training."""
    try:
        import envpool
    except ImportError:
        return "--env-backend envpool needs envpool: pip install --no-deps -r requirements-envpool.txt"
    if env_id not in envpool.list_all_envs():
        return f"envpool has no {env_id}; use --env-backend gymnasium"
    if torso_scale != 1.0 or spread > 0:
        masses = "--env-backend envpool cannot change body masses (--torso-mass-scale, --mass-randomization)"
        return masses + "; use --env-backend gymnasium"
    return None


class EnvpoolEnvs:
    """num_envs envpool envs with make_envs' interface; reset(seed) makes a new pool, seeded so."""

    def __init__(self, env_id: str, num_envs: int):
        import envpool

        threads = min(num_envs, os.cpu_count() or 1)
        self.make = lambda seed: envpool.make(env_id, "gymnasium", num_envs=num_envs, seed=seed, num_threads=threads)
        spaces = gym.make(env_id)  # gymnasium's spaces: a checkpoint does not depend on the backend
        self.single_observation_space, self.single_action_space = spaces.observation_space, spaces.action_space
        self.num_envs, self.pool = num_envs, None

    def reset(self, seed: int):
        self.pool = self.make(seed)  # envpool seeds its envs when it makes them
        self.returns, self.lengths = np.zeros(self.num_envs), np.zeros(self.num_envs, dtype=np.int64)
        return self.pool.reset()[0], {}

    def step(self, actions: np.ndarray):
        obs, reward, terminated, truncated, _ = self.pool.step(actions)
        self.returns, self.lengths = self.returns + reward, self.lengths + 1
        done, info = terminated | truncated, {}
        if done.any():  # envpool would reset at the next step; resetting now is gymnasium's SAME_STEP autoreset
            info = {"final_obs": obs.copy(), "_final_obs": done, "_episode": done}
            info["episode"] = {"r": self.returns.copy(), "l": self.lengths.copy()}
            first_obs, first_info = self.pool.reset(np.flatnonzero(done))
            obs[first_info["env_id"]] = first_obs
            self.returns[done], self.lengths[done] = 0.0, 0
        return obs, reward, terminated, truncated, info

    def close(self) -> None:
        self.pool.close()
