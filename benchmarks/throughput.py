"""Throughput on Hopper-v5 with the paper's distillation settings, all measured in one run on one machine.

Times, for the same number of environment steps and the same vector env settings (18 envs): raw random-action env
stepping on each backend (gymnasium's SyncVectorEnv, envpool); train_teacher.py (PPO); ppd_mujoco.py (PPD, the
shipped teacher) on each backend; student_distill.py on each backend; the authors' library sb3_distill (its PPD, on SB3's PPO) and
Stable-Baselines3's PPO, both with the same hyperparameters (n_steps 64, minibatch 512, 4 epochs, gamma 0.999,
GAE 0.9, lr 3e-4, separate 256-256 ReLU MLPs, VecNormalize of observations and rewards, as the scripts normalize;
sb3_distill's teacher is an untrained SB3 PPO of the same size: its weights do not change the work). The measurements
are interleaved (round robin) and repeated, so that the machine's noise spreads over all of them alike; only the
ratios within one run mean anything on a shared machine.

    pip install -r benchmarks/requirements.txt                  # stable-baselines3 and sb3_distill, only for this
    pip install --no-deps -r requirements-envpool.txt           # the envpool backend
    python benchmarks/throughput.py --steps 46080 --repeats 3

sb3_distill is not on the package index: benchmarks/requirements.txt installs it from its public repository at a fixed
commit (without network access to GitHub: `git clone` a copy of it, then `pip install --no-deps <that folder>`).

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
sys.path.insert(0, ".")
from ppd_mujoco import make_envs
envs = make_envs("{env}", {n}, backend="{backend}")
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
kwargs = dict(seed=0, device="cpu", policy_kwargs=dict(net_arch=dict(pi=[256, 256], vf=[256, 256]), activation_fn=nn.ReLU))
settings = dict(n_steps={T}, batch_size=512, n_epochs=4, gamma=0.999, gae_lambda=0.9, learning_rate=3e-4, ent_coef=0.0,
                clip_range=0.2, vf_coef=0.5, max_grad_norm=0.5)
if {distill}:
    from sb3_distill import ProximalPolicyDistillation
    model = ProximalPolicyDistillation("MlpPolicy", env, **settings, **kwargs)
    model.set_teacher(PPO("MlpPolicy", env, **kwargs), distill_lambda=1.0)
else:
    model = PPO("MlpPolicy", env, **settings, **kwargs)
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
    if name.startswith("raw") or name.startswith("sb3"):
        backend = "envpool" if name == "raw_envpool" else "gymnasium"
        code = (RAW if name.startswith("raw") else SB3).format(env=ENV, n=NUM_ENVS, T=NUM_STEPS, steps=steps,
                                                               backend=backend, distill=name == "sb3_distill_ppd")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO)
        match = re.search(r"SPS ([\d.]+)", result.stdout)
        if not match:
            raise RuntimeError(f"{name} failed: {result.stderr[-2000:]}")
        return float(match.group(1))
    script, flags = {
        "train_teacher": ("train_teacher.py", ["--env-id", ENV, "--gamma", "0.999", "--ent-coef", "0.0"]),
        "ppd_mujoco": ("ppd_mujoco.py", ["--teacher", "teachers/Hopper-v5.pt", "--gamma", "0.999"]),
        "ppd_mujoco_envpool": ("ppd_mujoco.py", ["--teacher", "teachers/Hopper-v5.pt", "--gamma", "0.999",
                                                 "--env-backend", "envpool"]),
        "student_distill": ("student_distill.py", ["--teacher", "teachers/Hopper-v5.pt"]),
        "student_distill_envpool": ("student_distill.py", ["--teacher", "teachers/Hopper-v5.pt", "--env-backend", "envpool"]),
    }[name]
    common = COMMON if not name.startswith("student_distill") else [f for f in COMMON if f not in ("--num-steps", str(NUM_STEPS), "--minibatch-size", "512")]
    run_name = f"{name}-{rep}"
    result = subprocess.run([sys.executable, script, *flags, *common, "--total-timesteps", str(steps), "--output-dir", out,
                             "--run-name", run_name], capture_output=True, text=True, env=env, cwd=REPO)
    if result.returncode:
        raise RuntimeError(f"{name} failed: {result.stderr[-2000:]}")
    return last_sps(os.path.join(out, run_name))


def commit() -> str:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                           cwd=REPO).stdout.strip()
    return head + (" (with uncommitted changes)" if dirty else "")


def torch_cuda_available() -> bool:
    result = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.is_available())"], capture_output=True, text=True)
    return result.stdout.strip() == "True"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=46080, help="environment steps per measurement (a multiple of 18 x 64)")
    parser.add_argument("--repeats", type=int, default=3, help="repetitions of each measurement, interleaved")
    parser.add_argument("--only", nargs="*", default=["raw_gymnasium", "raw_envpool", "train_teacher", "ppd_mujoco",
                                                      "ppd_mujoco_envpool", "student_distill", "student_distill_envpool",
                                                      "sb3_distill_ppd", "sb3_ppo"])
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
    for name in ("ppd_mujoco_envpool", "ppd_mujoco"):
        if {name, "sb3_distill_ppd"} <= sps.keys():
            ratios[f"{name}_over_sb3_distill_ppd"] = summary[name]["median"] / summary["sb3_distill_ppd"]["median"]
    if {"ppd_mujoco_envpool", "ppd_mujoco"} <= sps.keys():
        ratios["ppd_envpool_over_gymnasium"] = summary["ppd_mujoco_envpool"]["median"] / summary["ppd_mujoco"]["median"]
    if {"student_distill_envpool", "student_distill"} <= sps.keys():
        ratios["student_distill_envpool_over_gymnasium"] = (summary["student_distill_envpool"]["median"]
                                                            / summary["student_distill"]["median"])
    if {"raw_envpool", "raw_gymnasium"} <= sps.keys():
        ratios["raw_envpool_over_gymnasium"] = summary["raw_envpool"]["median"] / summary["raw_gymnasium"]["median"]
    if {"ppd_mujoco", "sb3_ppo"} <= sps.keys():
        ratios["ppd_over_sb3_ppo"] = summary["ppd_mujoco"]["median"] / summary["sb3_ppo"]["median"]
    if {"ppd_mujoco", "train_teacher"} <= sps.keys():
        ratios["ppd_wall_time_over_ppo"] = summary["train_teacher"]["median"] / summary["ppd_mujoco"]["median"]
    if {"ppd_mujoco", "raw_gymnasium"} <= sps.keys():
        ratios["ppd_over_raw_env"] = summary["ppd_mujoco"]["median"] / summary["raw_gymnasium"]["median"]
    paired = {f"{a}_over_{b}": [x / y for x, y in zip(sps[a], sps[b])]
              for a, b in (("ppd_mujoco_envpool", "sb3_distill_ppd"), ("ppd_mujoco", "sb3_distill_ppd"),
                           ("ppd_mujoco_envpool", "ppd_mujoco")) if {a, b} <= sps.keys()}
    result = {"env": ENV, "num_envs": NUM_ENVS, "num_steps": NUM_STEPS, "steps_per_measurement": args.steps,
              "repeats": args.repeats, "machine": f"{platform.machine()}, {os.cpu_count()} cores, no GPU",
              "made_by": "python benchmarks/throughput.py " + " ".join(sys.argv[1:]), "commit": commit(),
              "steps_per_second": summary,
              "ratios": ratios, "ratios_per_repeat": paired, "date": time.strftime("%Y-%m-%d")}
    os.makedirs(os.path.join(REPO, "results"), exist_ok=True)
    with open(os.path.join(REPO, "results", "throughput.json"), "w") as f:
        json.dump(result, f, indent=2)
    lines = [f"# Throughput, {ENV}, {NUM_ENVS} envs x {NUM_STEPS} steps, CPU ({result['machine']})", "",
             f"Made by `{result['made_by']}` at commit {result['commit']} ({args.repeats} interleaved repeats of {args.steps} steps; training loop "
             "steps/s as the scripts log them, start-up and final evaluation excluded).", "",
             "| what | median steps/s | min | max |", "|-|-|-|-|"]
    lines += [f"| {name} | {s['median']:.0f} | {s['min']:.0f} | {s['max']:.0f} |" for name, s in summary.items()]
    lines += ["", "| ratio (of the medians) | value |", "|-|-|"] + [f"| {k} | {v:.2f} |" for k, v in ratios.items()]
    if paired:
        lines += ["", "Within each repeat (the two measured minutes apart, so the machine's load is more alike):", "",
                  "| ratio | per repeat |", "|-|-|"]
        lines += [f"| {k} | {', '.join(f'{x:.2f}' for x in v)} |" for k, v in paired.items()]
    lines += ["", "CUDA: " + ("the scripts above ran with --no-cuda; a GPU is present, rerun them without it for a CUDA column"
                    if torch_cuda_available() else "no GPU on this machine, so no CUDA column (the scripts use CUDA when present).")]
    with open(os.path.join(REPO, "results", "throughput.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
