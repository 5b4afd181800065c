"""Throughput on Hopper-v5 with the paper's distillation settings, all measured in one run on one machine.

Times, for the same number of environment steps and the same vector env settings (18 envs, SyncVectorEnv):
raw random-action env stepping; train_teacher.py (PPO); ppd_mujoco.py (PPD, the shipped teacher);
student_distill.py; and Stable-Baselines3's PPO with the same hyperparameters (n_steps 64, minibatch 512,
4 epochs, gamma 0.999, GAE 0.9, lr 3e-4, separate 256-256 ReLU MLPs, VecNormalize). The measurements are
interleaved (round robin) and repeated, so that the machine's noise spreads over all of them alike; only the
ratios within one run mean anything on a shared machine.

    pip install -r benchmarks/requirements.txt       # stable-baselines3, only for this benchmark
    python benchmarks/throughput.py --steps 46080 --repeats 3

Writes results/throughput.json and results/throughput.md.
"""

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV, NUM_ENVS, NUM_STEPS = "Hopper-v5", 18, 64
COMMON = ["--num-envs", str(NUM_ENVS), "--num-steps", str(NUM_STEPS), "--minibatch-size", "512", "--eval-episodes", "1",
          "--checkpoint-every", "0", "--no-cuda"]

RAW = """
import sys, time, numpy as np, gymnasium as gym
envs = gym.wrappers.vector.RecordEpisodeStatistics(gym.vector.SyncVectorEnv(
    [lambda: gym.make("{env}") for _ in range({n})], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP))
envs.reset(seed=0)
rng = np.random.default_rng(0)
steps = {steps} // {n}
start = time.perf_counter()
for _ in range(steps):
    envs.step(rng.uniform(-1, 1, (envs.num_envs,) + envs.single_action_space.shape).astype(np.float32))
print("SPS", steps * {n} / (time.perf_counter() - start))
"""

SB3 = """
import time, torch.nn as nn
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize
env = VecNormalize(make_vec_env("{env}", n_envs={n}, seed=0), gamma=0.999)
model = PPO("MlpPolicy", env, n_steps={T}, batch_size=512, n_epochs=4, gamma=0.999, gae_lambda=0.9, learning_rate=3e-4,
            ent_coef=0.0, clip_range=0.2, vf_coef=0.5, max_grad_norm=0.5, seed=0, device="cpu",
            policy_kwargs=dict(net_arch=dict(pi=[256, 256], vf=[256, 256]), activation_fn=nn.ReLU))
start = time.perf_counter()
model.learn(total_timesteps={steps})
print("SPS", model.num_timesteps / (time.perf_counter() - start))
"""


def last_sps(run_dir: str) -> float:
    """The script's own steps/s over its training loop (start-up and final evaluation excluded)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(run_dir)
    acc.Reload()
    return float(acc.Scalars("charts/SPS")[-1].value)


def measure(name: str, steps: int, out: str, rep: int) -> float:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    if name in ("raw", "sb3_ppo"):
        code = (RAW if name == "raw" else SB3).format(env=ENV, n=NUM_ENVS, T=NUM_STEPS, steps=steps)
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO)
        match = re.search(r"SPS ([\d.]+)", result.stdout)
        if not match:
            raise RuntimeError(f"{name} failed: {result.stderr[-2000:]}")
        return float(match.group(1))
    script, flags = {
        "train_teacher": ("train_teacher.py", ["--env-id", ENV, "--gamma", "0.999", "--ent-coef", "0.0"]),
        "ppd_mujoco": ("ppd_mujoco.py", ["--teacher", "teachers/Hopper-v5.pt", "--gamma", "0.999"]),
        "student_distill": ("student_distill.py", ["--teacher", "teachers/Hopper-v5.pt"]),
    }[name]
    common = COMMON if name != "student_distill" else [f for f in COMMON if f not in ("--num-steps", str(NUM_STEPS), "--minibatch-size", "512")]
    run_name = f"{name}-{rep}"
    result = subprocess.run([sys.executable, script, *flags, *common, "--total-timesteps", str(steps), "--output-dir", out,
                             "--run-name", run_name], capture_output=True, text=True, env=env, cwd=REPO)
    if result.returncode:
        raise RuntimeError(f"{name} failed: {result.stderr[-2000:]}")
    return last_sps(os.path.join(out, run_name))


def torch_cuda_available() -> bool:
    result = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.is_available())"], capture_output=True, text=True)
    return result.stdout.strip() == "True"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=46080, help="environment steps per measurement (a multiple of 18 x 64)")
    parser.add_argument("--repeats", type=int, default=3, help="repetitions of each measurement, interleaved")
    parser.add_argument("--only", nargs="*", default=["raw", "train_teacher", "ppd_mujoco", "student_distill", "sb3_ppo"])
    args = parser.parse_args()
    sps = {name: [] for name in args.only}
    with tempfile.TemporaryDirectory() as out:
        for rep in range(args.repeats):
            for name in args.only:
                sps[name].append(measure(name, args.steps, out, rep))
                print(f"repeat {rep}: {name:16s} {sps[name][-1]:8.0f} steps/s", flush=True)
    summary = {name: {"median": float(np.median(v)), "min": float(np.min(v)), "max": float(np.max(v)), "runs": v}
               for name, v in sps.items()}
    ratios = {}
    if {"ppd_mujoco", "sb3_ppo"} <= sps.keys():
        ratios["ppd_over_sb3_ppo"] = summary["ppd_mujoco"]["median"] / summary["sb3_ppo"]["median"]
    if {"ppd_mujoco", "train_teacher"} <= sps.keys():
        ratios["ppd_wall_time_over_ppo"] = summary["train_teacher"]["median"] / summary["ppd_mujoco"]["median"]
    if {"ppd_mujoco", "raw"} <= sps.keys():
        ratios["ppd_over_raw_env"] = summary["ppd_mujoco"]["median"] / summary["raw"]["median"]
    result = {"env": ENV, "num_envs": NUM_ENVS, "num_steps": NUM_STEPS, "steps_per_measurement": args.steps,
              "repeats": args.repeats, "machine": f"{platform.machine()}, {os.cpu_count()} cores, no GPU",
              "made_by": "python benchmarks/throughput.py " + " ".join(sys.argv[1:]), "steps_per_second": summary,
              "ratios": ratios, "date": time.strftime("%Y-%m-%d")}
    os.makedirs(os.path.join(REPO, "results"), exist_ok=True)
    with open(os.path.join(REPO, "results", "throughput.json"), "w") as f:
        json.dump(result, f, indent=2)
    lines = [f"# Throughput, {ENV}, {NUM_ENVS} envs x {NUM_STEPS} steps, CPU ({result['machine']})", "",
             f"Made by `{result['made_by']}` ({args.repeats} interleaved repeats of {args.steps} steps; training loop "
             "steps/s as the scripts log them, start-up and final evaluation excluded).", "",
             "| what | median steps/s | min | max |", "|-|-|-|-|"]
    lines += [f"| {name} | {s['median']:.0f} | {s['min']:.0f} | {s['max']:.0f} |" for name, s in summary.items()]
    lines += ["", "| ratio | value |", "|-|-|"] + [f"| {k} | {v:.2f} |" for k, v in ratios.items()]
    lines += ["", "CUDA: " + ("the scripts above ran with --no-cuda; a GPU is present, rerun them without it for a CUDA column"
                    if torch_cuda_available() else "no GPU on this machine, so no CUDA column (the scripts use CUDA when present).")]
    with open(os.path.join(REPO, "results", "throughput.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
