"""Throughput of the pixel PPD scripts on this machine: environment stepping alone vs the whole training loop.

For Atari (PongNoFrameskip-v4) and Procgen (coinrun), and per student size (smaller = Nature-CNN, same = IMPALA-CNN,
larger = IMPALA-CNN 32-64-64 fc 1024), with the paper's teacher (IMPALA-CNN, random weights: the cost does not
depend on them):

  * env: random actions in 18 envs, the script's own env factory (AtariVectorEnv / the Procgen adapter);
  * loop: `ppd_atari.py` / `ppd_procgen.py` itself, 18 envs x 8 steps per rollout (144 samples, one minibatch,
    4 epochs), stopped by SIGTERM after its second rollout; what is timed is the second rollout + teacher forward +
    update, from the first checkpoint's write to the second rollout's log entry. The paper's rollout (18 x 64,
    2 minibatches of 576) costs the same per sample up to batch-size effects, so these rates carry over;
  * teacher forward and student update of the IMPALA-CNN in the contiguous (NCHW) and channels_last memory
    formats (why the scripts put the teacher, and only the teacher, in channels_last on a CPU).

Every measurement of a domain is taken within one run of this script, with one torch thread, so the ratios are
comparable even though the machine is shared with other jobs and absolute rates drift.

    OMP_NUM_THREADS=1 python benchmarks/pixel_throughput.py     # writes results/pixel_throughput.{json,md}
"""

import argparse
import glob
import json
import os
import platform
import signal
import subprocess
import sys
import time

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import ppd_atari  # noqa: E402
import ppd_procgen  # noqa: E402
import train_teacher  # noqa: E402

DOMAINS = {
    "atari": {"script": "ppd_atari.py", "env_id": "PongNoFrameskip-v4", "module": ppd_atari, "obs_shape": (4, 84, 84), "actions": 6},
    "procgen": {"script": "ppd_procgen.py", "env_id": "procgen:coinrun", "module": ppd_procgen, "obs_shape": (3, 64, 64), "actions": 15},
}
ENV_CONFIG = {"frame_skip": 4, "procgen_num_levels": 200, "procgen_start_level": 0, "procgen_distribution_mode": "easy"}
NUM_ENVS, NUM_STEPS = 18, 8
PAPER = {"distill_steps": 2_000_000, "teacher_steps": {"atari": 10_000_000, "procgen": 30_000_000}}


def make_envs(domain: str, num_envs: int, seed: int):
    d = DOMAINS[domain]
    if domain == "atari":
        return d["module"].make_envs(d["env_id"], num_envs, seed, ENV_CONFIG["frame_skip"])
    return d["module"].make_envs(d["env_id"], num_envs, seed, ENV_CONFIG)


def env_rate(domain: str, steps: int = 300) -> float:
    """Environment steps per second with random actions, 18 envs."""
    envs = make_envs(domain, NUM_ENVS, 0)
    envs.reset(seed=0)
    rng = np.random.default_rng(0)
    actions = rng.integers(0, envs.single_action_space.n, (steps, NUM_ENVS))
    for a in actions[:20]:  # warm-up
        envs.step(a)
    t0 = time.perf_counter()
    for a in actions[20:]:
        envs.step(a)
    rate = NUM_ENVS * (steps - 20) / (time.perf_counter() - t0)
    envs.close()
    return rate


def save_teacher(domain: str, path: str) -> None:
    d = DOMAINS[domain]
    action_space = __import__("gymnasium").spaces.Discrete(d["actions"])
    torch.manual_seed(0)
    agent = train_teacher.Agent(domain, train_teacher.ARCHS[domain]["same"], d["obs_shape"], action_space)
    train_teacher.atomic_save(train_teacher.model_dict(agent, domain, train_teacher.Args(env_id=d["env_id"], arch="same"),
                                                       d["obs_shape"], action_space, None, 0), path)


def sps_event(run_dir: str, step: int) -> float:
    """Wall time at which the run logged charts/SPS for `step`."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for path in glob.glob(os.path.join(run_dir, "events.out.tfevents.*")):
        acc = EventAccumulator(path, size_guidance={"scalars": 0})
        acc.Reload()
        for e in acc.Scalars("charts/SPS") if "charts/SPS" in acc.Tags()["scalars"] else []:
            if e.step == step:
                return e.wall_time
    raise RuntimeError(f"no charts/SPS at step {step} in {run_dir}")


def loop_rate(domain: str, arch: str, teacher: str, out_dir: str, num_steps: int = NUM_STEPS) -> dict:
    """Seconds and steps/s of the second rollout + update of the real script (see the module docstring)."""
    d = DOMAINS[domain]
    batch = NUM_ENVS * num_steps
    run_name = f"{domain}-{arch}-{num_steps}-{int(time.time())}"
    run_dir = os.path.join(out_dir, run_name)
    command = [d["script"], "--teacher", teacher, "--student-arch", arch, "--num-envs", str(NUM_ENVS),
               "--num-steps", str(num_steps), "--total-timesteps", str(100 * batch), "--checkpoint-every", str(batch),
               "--output-dir", os.path.relpath(out_dir, REPO), "--run-name", run_name]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.Popen([sys.executable, *command], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    checkpoint = os.path.join(run_dir, "checkpoint.pt")
    try:
        while not os.path.exists(checkpoint):  # written at the end of the first rollout + update
            if proc.poll() is not None:
                raise RuntimeError(f"{' '.join(command)} ended early:\n{proc.stderr.read()[-2000:]}")
            time.sleep(0.05)
        first_done = os.stat(checkpoint).st_mtime  # the first checkpoint: the second rollout starts right after
        proc.send_signal(signal.SIGTERM)  # finish the second rollout + update, checkpoint, exit
        _, stderr = proc.communicate(timeout=1800)
    finally:
        if proc.poll() is None:
            proc.kill()
    if torch.load(checkpoint, weights_only=True)["global_step"] != 2 * batch:
        raise RuntimeError(f"{run_dir}: expected to stop after 2 rollouts:\n{stderr[-2000:]}")
    seconds = sps_event(run_dir, 2 * batch) - first_done
    return {"seconds": round(seconds, 2), "steps": batch, "num_steps": num_steps, "steps_per_second": round(batch / seconds, 2),
            "command": "OMP_NUM_THREADS=1 python " + " ".join(command)}


def memory_format_times(domain: str, repeats: int = 3) -> dict:
    """Median seconds of the IMPALA-CNN (arch 'same') teacher forward on 576 frames and of a student update step
    (actor and critic forward + backward) on 128 frames, contiguous vs channels_last, alternated."""
    d = DOMAINS[domain]
    action_space = __import__("gymnasium").spaces.Discrete(d["actions"])
    torch.manual_seed(0)
    agent = d["module"].Agent(d["module"].ARCHS["same"], d["obs_shape"], action_space)
    frames = torch.randint(0, 256, (576,) + d["obs_shape"], dtype=torch.uint8)
    times = {f"{what}_{fmt}": [] for what in ("teacher_forward_576", "student_update_128") for fmt in ("nchw", "channels_last")}
    for _ in range(repeats):
        for fmt, memory_format in (("nchw", torch.contiguous_format), ("channels_last", torch.channels_last)):
            agent = agent.to(memory_format=memory_format)
            t0 = time.perf_counter()
            with torch.no_grad():
                torch.cat([agent.actor(x).logits for x in frames.split(576)])
            times[f"teacher_forward_576_{fmt}"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            _, logprob, _, value, _ = agent.get_action_and_value(frames[:128])
            (logprob.mean() + value.mean()).backward()
            times[f"student_update_128_{fmt}"].append(time.perf_counter() - t0)
    return {k: round(float(np.median(v)), 3) for k, v in times.items()}


def hours(steps: float, rate: float) -> str:
    h = steps / rate / 3600
    return f"{h:.0f} h" if h < 48 else f"{h / 24:.0f} days"


def write_md(results: dict, path: str) -> None:
    md = ["# Pixel PPD throughput on this machine (CPU only)\n",
          f"Made by `OMP_NUM_THREADS=1 python benchmarks/pixel_throughput.py` on {results['machine']}. One torch thread; "
          "the machine was shared with other jobs, so absolute rates drift by tens of percent between runs: compare "
          "the numbers of one domain, which were measured back to back.\n",
          f"- **env**: random actions, {NUM_ENVS} envs, the script's env factory (before and after the loop measurements).",
          f"- **loop**: the script itself with {NUM_ENVS} envs x {NUM_STEPS} steps per rollout (144 samples, one "
          "minibatch, 4 epochs, IMPALA-CNN teacher of the paper's size): the second rollout + teacher forward + update, "
          "timed from the first checkpoint's write to the second rollout's log entry (the run is then stopped by "
          "SIGTERM). For the Nature-CNN student also with the paper's rollout (18 x 64 in 2 minibatches of 576), "
          "the last row of each domain: per sample it cost the same on Procgen and about 25% more on Atari here (larger "
          "batches touch more memory), so the 144-sample rates are slightly optimistic for the paper's rollout.",
          "- **paper-scale cost** at these rates: a PPD run of 2M steps with this student; a teacher of 10M (Atari) or "
          "30M (Procgen, SPEC section 2) PPO steps at the rate of the same-size (IMPALA) loop, which overestimates it "
          "slightly (PPO has no teacher forward). Paper scale needs a GPU.\n",
          "| domain | student | env steps/s (before / after) | loop steps/s | env / loop | seconds per rollout | PPD, 2M steps | teacher (PPO) |",
          "|---|---|---|---|---|---|---|---|"]
    for domain in ("atari", "procgen"):
        r = results[domain]
        env_sps = r["env_steps_per_second"]
        for arch in ("smaller", "same", "larger", "smaller_paper_rollout"):
            loop = r["loop"][arch]
            teacher_cost = hours(PAPER["teacher_steps"][domain], r["loop"]["same"]["steps_per_second"]) if arch == "same" else ""
            name = (f"{arch} ({r['arch_names'][arch]})" if arch in r["arch_names"] else "smaller, paper rollout 18 x 64")
            md.append(f"| {r['env_id']} | {name} | {env_sps[0]:.0f} / {env_sps[1]:.0f} | "
                      f"{loop['steps_per_second']:.1f} | {np.mean(env_sps) / loop['steps_per_second']:.0f}x | "
                      f"{loop['seconds']:.1f} ({loop['steps']} samples) | {hours(PAPER['distill_steps'], loop['steps_per_second'])} | {teacher_cost} |")
    md += ["\nIMPALA-CNN (arch `same`) in the two memory formats (median seconds, one thread):\n",
           "| domain | teacher forward, 576 frames: NCHW / channels_last | student forward + backward, 128 frames: NCHW / channels_last |",
           "|---|---|---|"]
    for domain in ("atari", "procgen"):
        m = results[domain]["memory_format"]
        md.append(f"| {results[domain]['env_id']} | {m['teacher_forward_576_nchw']:.2f} / {m['teacher_forward_576_channels_last']:.2f} | "
                  f"{m['student_update_128_nchw']:.2f} / {m['student_update_128_channels_last']:.2f} |")
    md += ["\nThe scripts put the teacher in channels_last on a CPU (its forward is the part that gains most); the "
           "student stays in the default format so that `--distill-coef 0` reproduces `train_teacher.py` bit for bit "
           "(a different memory format changes the floating-point summation order).\n",
           "Commands of the loop measurements:\n"]
    for domain in ("atari", "procgen"):
        for arch in ("smaller", "same", "larger", "smaller_paper_rollout"):
            md.append(f"    {results[domain]['loop'][arch]['command']}")
    with open(path, "w") as f:
        f.write("\n".join(md) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domains", nargs="+", default=["atari", "procgen"], choices=list(DOMAINS))
    parser.add_argument("--archs", nargs="+", default=["smaller", "same", "larger"], choices=["smaller", "same", "larger"])
    parser.add_argument("--runs-dir", default=os.path.join(REPO, "runs", "pixel_throughput"))
    parser.add_argument("--out", default=os.path.join(REPO, "results"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.makedirs(args.runs_dir, exist_ok=True)
    path = os.path.join(args.out, "pixel_throughput.json")
    results = json.load(open(path)) if os.path.exists(path) else {}
    results["machine"] = (f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), no GPU, "
                          f"torch {torch.__version__}, {time.strftime('%Y-%m-%d')}")
    for domain in args.domains:
        teacher = os.path.join(args.runs_dir, f"teacher-{domain}.pt")
        save_teacher(domain, teacher)
        r = {"env_id": DOMAINS[domain]["env_id"], "num_envs": NUM_ENVS, "num_steps": NUM_STEPS,
             "arch_names": {"smaller": "Nature-CNN", "same": "IMPALA-CNN 16-32-32", "larger": "IMPALA-CNN 32-64-64"},
             "loop": results.get(domain, {}).get("loop", {})}
        before = env_rate(domain)
        print(f"{domain}: env {before:.0f} steps/s", flush=True)
        for arch in args.archs:
            r["loop"][arch] = loop_rate(domain, arch, os.path.relpath(teacher, REPO), args.runs_dir)
            print(f"{domain} {arch}: loop {r['loop'][arch]['steps_per_second']:.1f} steps/s", flush=True)
        # the paper's rollout (18 x 64, 2 minibatches of 576) with the cheap student: how far the small rollout carries over
        r["loop"]["smaller_paper_rollout"] = loop_rate(domain, "smaller", os.path.relpath(teacher, REPO), args.runs_dir, 64)
        print(f"{domain} smaller, 18 x 64: loop {r['loop']['smaller_paper_rollout']['steps_per_second']:.1f} steps/s", flush=True)
        r["env_steps_per_second"] = [round(before, 1), round(env_rate(domain), 1)]
        r["memory_format"] = memory_format_times(domain)
        print(f"{domain}: {r['memory_format']}", flush=True)
        results[domain] = r
        with open(path, "w") as f:
            json.dump(results, f, indent=2)
    if all(d in results for d in DOMAINS):
        write_md(results, os.path.join(args.out, "pixel_throughput.md"))


if __name__ == "__main__":
    main()
