"""Pong with a trained teacher in one command: a PPO teacher, then PPD and student-distill students, on one GPU.

Stages (each one a run of the repo's scripts, as a subprocess, in --output-dir):

  teacher       train_teacher.py, the paper's IMPALA teacher (arch `same`) and PPO settings, up to --teacher-steps;
                stopped early once its training return is steady (mean of the last --steady-window finished games
                >= --steady-return), else at its share of the time (--teacher-fraction, its evaluation included)
  ppd-larger    ppd_atari.py --student-arch larger   (IMPALA 32-64-64, fc 1024)
  ppd-smaller   ppd_atari.py --student-arch smaller  (Nature-CNN 32-32-32, fc 128)
  sd-larger     student_distill.py --student-arch larger
                the three students share what is left of the time (their evaluations included); with --student-steps
                0 (auto) the first runs until its share of the time is spent (at most 2M steps, the paper's budget)
                and the other two get the environment steps it reached, so all three learn from equal budgets; that
                share is its seconds per step among the three's, from the timing pass, so that all three fit

A run is cut by sending SIGTERM: the script finishes its update, writes checkpoint.pt and exits 143, and the
benchmark then evaluates it with `--resume <run> --total-timesteps <step reached>`. Every stage skips itself
when its eval.json exists, and continues from its checkpoint.pt otherwise, so running the same command again
after a cut goes on where it stopped. The report (atari_gpu.json, atari_gpu.md, atari_gpu.png) is rewritten
after every stage; a SIGTERM to the benchmark (e.g. from `timeout`) stops the running stage the same way and
writes the report of what finished.

Evaluation: full games (all lives), greedy actions, --eval-episodes games per policy, the scripts' protocol; scores
also human-normalized, beside the paper's Table 5 Pong row. A short timing pass (--profile-steps) steps the same
ALE vector env with random actions and times the networks' rollout forward and update step on the device, and
the report splits each stage's time into env / forward / backward.

    python benchmarks/atari_gpu.py                       # one GPU, 9 minutes (what the H200 run is for)
    python benchmarks/atari_gpu.py --minutes 0.1 --num-envs 2 --num-steps 5 --student-steps 10 \\
        --eval-episodes 1 --eval-max-frames 200 --profile-steps 3       # CPU toy (what tests/test_atari_gpu.py runs)
"""

import argparse
import glob
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import ppd_atari  # noqa: E402

ENV_ID = "PongNoFrameskip-v4"
PAPER_SOURCE = "G. Spigler, Proximal Policy Distillation, TMLR 06/2025, Table 5 (human-normalized, mean of 5 seeds)"
PAPER_HEADER = ["env teacher smaller same-size larger", "score td sd ppd td sd ppd td sd ppd"]
PAPER_PONG_ROW = "pong 1.17 0.98 1.13 1.14 1.16 1.17 1.17 1.17 1.17 1.17"  # as printed in the paper
PAPER_COLUMNS = ["teacher", "smaller td", "smaller sd", "smaller ppd", "same td", "same sd", "same ppd",
                 "larger td", "larger sd", "larger ppd"]
PAPER_PONG = dict(zip(PAPER_COLUMNS, map(float, PAPER_PONG_ROW.split()[1:])))
NETWORKS = {"same": "IMPALA-CNN 16-32-32, fc 256", "larger": "IMPALA-CNN 32-64-64, fc 1024",
            "smaller": "Nature-CNN 32-32-32, fc 128"}
# name, script, method, network, the paper's Table 5 column
STAGES = [("teacher", "train_teacher.py", "PPO teacher", "same", "teacher"),
          ("ppd-larger", "ppd_atari.py", "PPD", "larger", "larger ppd"),
          ("ppd-smaller", "ppd_atari.py", "PPD", "smaller", "smaller ppd"),
          ("sd-larger", "student_distill.py", "student-distill", "larger", "larger sd")]
PAPER_DISTILL_STEPS = 2_000_000  # ppd_atari.py's and student_distill.py's default --total-timesteps
SD_NUM_STEPS = 5  # student_distill.py's rollout length (paper Algorithm 2), kept in every run
STOP = {"signal": None, "child": None}  # a SIGTERM/SIGINT to the benchmark: stop the running stage, report, exit


def steady(returns: list, window: int, threshold: float) -> bool:
    """The teacher's early stop: at least `window` finished training games, and the mean of the last `window` is
    at least `threshold`."""
    return window > 0 and len(returns) >= window and float(np.mean(returns[-window:])) >= threshold


class Events:
    """The scalars of a run folder's tensorboard event files, read incrementally while the run writes them."""

    def __init__(self, run_dir: str):
        self.run_dir, self.loaders, self.scalars = run_dir, {}, {}

    def poll(self) -> "Events":
        from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

        for path in sorted(glob.glob(os.path.join(self.run_dir, "events.out.tfevents.*"))):
            loader = self.loaders.setdefault(path, LegacyEventFileLoader(path))
            for event in loader.Load():
                for v in event.summary.value:
                    if v.WhichOneof("value") == "simple_value":
                        self.scalars.setdefault(v.tag, []).append((event.step, v.simple_value))
        return self

    def values(self, tag: str) -> list:
        return [v for _, v in self.scalars.get(tag, [])]

    def last_step(self, tag: str):
        return self.scalars[tag][-1][0] if self.scalars.get(tag) else None


def script_flags(name: str, args, teacher_path: str) -> list:
    """The flags of a stage's script (the paper's settings are the scripts' defaults; only the pool size, rollout
    length of a toy, evaluation and device are set here)."""
    _, script, _, arch, _ = next(s for s in STAGES if s[0] == name)
    flags = ["--num-envs", args.num_envs, "--eval-episodes", args.eval_episodes,
             "--eval-max-frames", args.eval_max_frames,
             "--seed", args.seed, "--checkpoint-every", args.checkpoint_every, "--no-restart-games-at-checkpoint"]
    if script == "train_teacher.py":
        flags += ["--env-id", ENV_ID, "--arch", arch]
    else:
        flags += ["--teacher", teacher_path, "--student-arch", arch]
    if args.num_steps and script != "student_distill.py":
        flags += ["--num-steps", args.num_steps]
    if not torch.cuda.is_available():
        flags.append("--no-cuda")
    elif not args.torch_deterministic:
        flags.append("--no-torch-deterministic")
    return [script] + [str(f) for f in flags]


def rollout_size(name: str, args) -> int:
    script = next(s for s in STAGES if s[0] == name)[1]
    steps = SD_NUM_STEPS if script == "student_distill.py" else args.num_steps or (256 if name == "teacher" else 64)
    return args.num_envs * steps


def run_stage(name: str, args, teacher_path: str, total: int, deadline: float, stop_rule=None, log=print) -> dict:
    """Train one stage until `total` steps, `deadline` (time.time()) or `stop_rule(training returns)`, then evaluate;
    returns the stage record (also written to <run>/stage.json). A stage whose eval.json exists is skipped."""
    run_dir = os.path.join(args.output_dir, name)
    record_path = os.path.join(run_dir, "stage.json")
    if os.path.exists(os.path.join(run_dir, "eval.json")):
        log(f"{name}: eval.json exists, skipped")
        record = json.load(open(record_path)) if os.path.exists(record_path) else {"stage": name}
        return {**record, "skipped": True}
    resume = os.path.exists(os.path.join(run_dir, "checkpoint.pt"))
    if os.path.isdir(run_dir) and not resume:  # died before its first checkpoint: nothing to continue
        shutil.rmtree(run_dir)
    batch = rollout_size(name, args)
    final = total // batch * batch
    base = script_flags(name, args, teacher_path) + ["--output-dir", args.output_dir, "--run-name", name]
    cmd = base + ["--total-timesteps", str(total)] + (["--resume", run_dir] if resume else [])
    log_path = os.path.join(args.output_dir, f"{name}.log")
    t0, cut, commands = time.time(), None, []
    with open(log_path, "a") as log_file:
        commands.append("python " + " ".join(cmd))
        log(f"{name}: {commands[-1]}")
        proc = subprocess.Popen([sys.executable, *cmd], cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT)
        STOP["child"], events = proc, Events(run_dir)
        while proc.poll() is None:
            time.sleep(args.poll_seconds)
            last = events.poll().last_step("charts/SPS")  # logged at the end of every update
            # cut only inside the training loop (its SIGTERM handler installed: an update was logged) and while at
            # least one more update is to come, so the signal cannot land in the final checkpoint or the evaluation
            if cut is None and last is not None and last + 2 * batch <= final:
                if STOP["signal"] is not None:
                    cut = "stopped by a signal to the benchmark"
                elif time.time() >= deadline:
                    cut = "time limit"
                elif stop_rule is not None and stop_rule(events.values("charts/episodic_return")):
                    cut = "steady return"
                if cut:
                    log(f"{name}: stopping at step ~{last + batch} ({cut})")
                    proc.send_signal(signal.SIGTERM)
        train_seconds = time.time() - t0
        events.poll()
        eval_seconds = None
        if proc.returncode in (143, -signal.SIGTERM) and STOP["signal"] is None:  # cut: evaluate at the step reached
            text = open(log_path, errors="replace").read()
            found = re.findall(r"stopped by signal \d+ at step (\d+)", text)
            if not found:
                raise RuntimeError(f"{name} was stopped without a checkpoint; see {log_path}")
            step = int(found[-1])
            cmd = base + ["--total-timesteps", str(step), "--resume", run_dir]
            commands.append("python " + " ".join(cmd))
            log(f"{name}: {commands[-1]}")
            t1 = time.time()
            proc = subprocess.Popen([sys.executable, *cmd], cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT)
            STOP["child"] = proc
            proc.wait()
            eval_seconds = time.time() - t1
        STOP["child"] = None
    if proc.returncode != 0:
        if STOP["signal"] is not None:
            return {"stage": name, "stopped": True}
        tail = open(log_path, errors="replace").read().strip().splitlines()[-1:]
        raise RuntimeError(f"{name} failed (exit {proc.returncode}): {tail[0] if tail else ''} (log: {log_path})")
    ev = json.load(open(os.path.join(run_dir, "eval.json")))
    sps = events.values("charts/SPS")
    record = {"stage": name, "commands": commands, "total_timesteps_requested": total, "global_step": ev["global_step"],
              "stopped_early": cut, "wall_seconds": round(time.time() - t0, 1),
              "train_seconds": round(train_seconds, 1),
              "eval_process_seconds": None if eval_seconds is None else round(eval_seconds, 1),
              "run_sps": sps[-1] if sps else None, "log": os.path.relpath(log_path, REPO)}
    with open(record_path, "w") as f:
        json.dump(record, f, indent=2)
    log(f"{name}: {ev['global_step']:,} steps, {record['run_sps']} steps/s in training, {record['wall_seconds']:.0f} s")
    return record


# ----------------------------------------------------------------------------------------------------
# Profile: where a stage's time goes (env, forward, backward), from a short timing pass on the device
# ----------------------------------------------------------------------------------------------------
def _timed(fn, repeats: int, device) -> float:
    fn()  # warm-up (cuDNN picks its kernels, the allocator grows)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeats


def profile(args, device) -> dict:
    """Seconds per env step (all envs), per rollout forward (as the scripts: frames to the device as uint8, the
    sampled actions back to the host) and per update minibatch (forward, backward, clip, Adam) of each network."""
    n, repeats = args.num_envs, args.profile_steps
    envs = ppd_atari.make_envs(ENV_ID, n, args.seed, 4)
    obs, _ = envs.reset(seed=args.seed)
    rng = np.random.default_rng(args.seed)
    frames = []

    def env_step():
        frames.append(envs.step(rng.integers(0, envs.single_action_space.n, n))[0])

    env_s = _timed(env_step, repeats, device)
    obs_shape, space = envs.single_observation_space.shape, envs.single_action_space
    envs.close()
    pool = torch.as_tensor(np.concatenate(frames), device=device)  # uint8 on the device, as the scripts' buffers
    sizes = {s[0]: rollout_size(s[0], args) for s in STAGES}
    out = {"device": str(device), "num_envs": n, "repeats": repeats, "env_step_s": env_s, "networks": {}}
    for arch in ("same", "larger", "smaller"):
        agent = ppd_atari.Agent(ppd_atari.ARCHS[arch], obs_shape, space).to(device)
        optimizer = torch.optim.Adam(agent.parameters(), lr=3e-4, eps=1e-5)
        host_obs = frames[-1]

        def rollout_forward():
            with torch.no_grad():
                action, _, _, _, _ = agent.get_action_and_value(torch.as_tensor(host_obs, device=device))
            action.cpu().numpy()

        net = {"rollout_forward_s": _timed(rollout_forward, repeats, device), "update_s": {}, "nograd_forward_s": {}}
        for size in sorted({ppd_atari.minibatch_split(b, 512)[1] for b in sizes.values()}):
            batch = pool[torch.randint(len(pool), (size,), device=device)]
            actions = torch.randint(int(space.n), (size,), device=device)

            def update():
                _, logprob, entropy, value, _ = agent.get_action_and_value(batch, actions)
                loss = -logprob.mean() - 0.01 * entropy.mean() + (value ** 2).mean()
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(agent.parameters(), 0.5)
                optimizer.step()

            def nograd_forward():
                with torch.no_grad():
                    agent.actor(batch).logits

            net["update_s"][size] = _timed(update, repeats, device)
            net["nograd_forward_s"][size] = _timed(nograd_forward, repeats, device)
        out["networks"][arch] = net
        del agent, optimizer
    if device.type == "cuda":
        torch.cuda.empty_cache()
    out["stages"] = {name: stage_model(name, args, out) for name, *_ in STAGES}
    return out


def stage_model(name: str, args, prof: dict) -> dict:
    """One rollout and its update, from the timings: env, forward (the acting network; for a student also the
    teacher once on the rollout) and backward (forward + backward + Adam of every minibatch)."""
    _, script, _, arch, _ = next(s for s in STAGES if s[0] == name)
    batch = rollout_size(name, args)
    steps = batch // args.num_envs
    n_mb, mb = ppd_atari.minibatch_split(batch, 512) if script != "student_distill.py" else (1, batch)
    epochs = 1 if script == "student_distill.py" else 4
    net, teacher = prof["networks"][arch], prof["networks"]["same"]
    env = steps * prof["env_step_s"]
    forward = steps * net["rollout_forward_s"] + (0 if name == "teacher" else n_mb * teacher["nograd_forward_s"][mb])
    backward = epochs * n_mb * net["update_s"][mb]
    total = env + forward + backward
    return {"rollout": f"{args.num_envs} x {steps}", "env_s": env, "forward_s": forward, "backward_s": backward,
            "env_share": env / total, "forward_share": forward / total, "backward_share": backward / total,
            "modeled_sps": batch / total}


def first_student_share(prof: dict | None, names: list) -> float:
    """The first student's share of the students' training time when the others get the steps it reaches: the
    share of its seconds per step among theirs (1 / modeled steps/s of each stage), so all finish together;
    equal shares without a profile."""
    if not prof:
        return 1 / len(names)
    seconds_per_step = [1 / prof["stages"][name]["modeled_sps"] for name in names]
    return seconds_per_step[0] / sum(seconds_per_step)


# ----------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------
def git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                             text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True,
                               text=True).stdout.strip()
        return sha + (" (with uncommitted changes)" if dirty else "") if sha else "unknown"
    except OSError:
        return "unknown"


def machine() -> str:
    gpu = f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), {gpu}"


def collect(args, records: dict) -> dict:
    """The report's numbers, from the run folders (eval.json, stage.json, event files)."""
    models = {}
    for name, script, method, arch, column in STAGES:
        run_dir = os.path.join(args.output_dir, name)
        path = os.path.join(run_dir, "eval.json")
        if not os.path.exists(path):
            models[name] = None
            continue
        ev = json.load(open(path))
        own = ev if name == "teacher" else ev["student"]
        returns = own["returns"]
        events = Events(run_dir).poll()
        record = records.get(name) or {}
        models[name] = {
            "method": method, "network": f"{arch} ({NETWORKS[arch]})", "script": script,
            "run_dir": os.path.relpath(run_dir, REPO),
            "global_step": ev["global_step"], "stopped_early": record.get("stopped_early"),
            "train_seconds": record.get("train_seconds"), "wall_seconds": record.get("wall_seconds"),
            "run_sps": record.get("run_sps"), "commands": record.get("commands"),
            "eval": {"episodes": own["episodes"], "truncated_episodes": own["truncated_episodes"], "returns": returns,
                     "mean_return": own["mean_return"], "std_return": own["std_return"]},
            "human_normalized": ppd_atari.human_normalized("pong", own["mean_return"]),
            "paper_table5": {"column": column, "human_normalized": PAPER_PONG[column]},
            "training_curve": [[s, v] for s, v in events.scalars.get("charts/episodic_return", [])],
        }
        if name != "teacher":
            models[name]["teacher_eval_in_this_run"] = ev["teacher"]["mean_return"]
            models[name]["fraction_of_teacher"] = ev.get("fraction_of_teacher")
    return models


def write_report(args, results: dict) -> None:
    out = args.report_dir
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "atari_gpu.json"), "w") as f:
        json.dump(results, f, indent=2)
    models, toy = results["models"], results["toy_budget"]
    md = ["# Pong with a trained teacher: PPO teacher, PPD and student-distill students\n",
          f"Made by `{results['command']}` at commit {results['commit']} on {results['machine']} (torch device: "
          f"{results['device']}), {results['wall_seconds'] / 60:.1f} min of wall time for a budget of "
          f"{args.minutes:g} min"
          + (" (the stages finished before this invocation were skipped)." if results["skipped_stages"] else ".")]
    if toy:
        most = max([m["global_step"] for m in models.values() if m] or [0])
        md.append(f"\n**Toy budget: not evidence.** This run checks that the command works end to end; its networks "
                  f"saw {most:,} environment steps at most" + (f" and its evaluation games were cut after "
                  f"{args.eval_max_frames:,} emulator frames." if args.eval_max_frames < 108_000 else "."))
    md += ["\nEvaluation: full games (all lives), greedy actions, the scripts' protocol; human-normalized = (score - "
           "random) / (human - random) with Pong's random -20.7 and human 14.6 (Badia et al. 2020). Every student "
           "learns from the teacher above, for the environment steps shown.\n",
           "| model | network | env steps | stopped | training process (s) | steps/s | games (cut) | score "
           "| human-normalized | paper, Table 5 |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, _, method, arch, column in STAGES:
        m = models.get(name)
        if m is None:
            md.append(f"| {method} ({name}) | {arch} | not run | | | | | | | {PAPER_PONG[column]} ({column}) |")
            continue
        e = m["eval"]
        md.append(f"| {method} ({name}) | {m['network']} | {m['global_step']:,} "
                  f"| {m['stopped_early'] or 'at its budget'} "
                  f"| {m['train_seconds'] if m['train_seconds'] is not None else '-'} | {m['run_sps'] or '-'} "
                  f"| {e['episodes']} ({e['truncated_episodes']}) | {e['mean_return']:.1f} +- {e['std_return']:.1f} "
                  f"| {m['human_normalized']:.2f} | {PAPER_PONG[column]} ({column}) |")
    md += ["\nThe paper's Table 5, Pong row, as printed (" + PAPER_SOURCE + "; td = teacher-distill, "
           "sd = student-distill; the paper's teachers trained 10M steps, its students 2M):\n",
           *[f"    {line}" for line in PAPER_HEADER],
           f"    {PAPER_PONG_ROW}"]
    prof = results.get("profile")
    if prof:
        md.append(f"\nWhere the time goes (a timing pass on {prof['device']}, {prof['num_envs']} envs, "
                  f"{prof['repeats']} repeats: random-action env steps, the rollout forward with its host copy of the "
                  "actions, the update's forward + backward + Adam per minibatch), per rollout and update:\n")
        for line in results["profile_lines"]:
            md.append(f"- {line}")
    md.append("\nCommands of each stage:\n")
    for name, *_ in STAGES:
        for c in (models.get(name) or {}).get("commands") or []:
            md.append(f"    {c}")
    md.append("\n![training curves](atari_gpu.png)")
    with open(os.path.join(out, "atari_gpu.md"), "w") as f:
        f.write("\n".join(md) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, names, title in ((axes[0], ["teacher"], "teacher (PPO)"),
                             (axes[1], ["ppd-larger", "ppd-smaller", "sd-larger"], "students (distillation)")):
        for i, name in enumerate(names):
            m = models.get(name)
            if not m:
                continue
            color = f"C{i}"
            if m["training_curve"]:
                steps, values = zip(*m["training_curve"])
                ax.plot(steps, values, color=color, lw=1, label=f"{name}: training games")
            ax.plot([m["global_step"]], [m["eval"]["mean_return"]], marker="*", ms=11, color=color, ls="none",
                    label=f"{name}: evaluation ({m['eval']['episodes']} games)")
        ax.axhline(-20.7, color="gray", ls=":", lw=0.8, label="random (-20.7)")
        ax.axhline(14.6, color="gray", ls="--", lw=0.8, label="human (14.6)")
        ax.set_title(title + (" (toy budget)" if toy else ""), fontsize=10)
        ax.set_xlabel("environment steps")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    axes[0].set_ylabel("Pong score (full game)")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "atari_gpu.png"), dpi=100)
    plt.close(fig)


def profile_lines(prof: dict, models: dict) -> list:
    lines = []
    for name, *_ in STAGES:
        s = prof["stages"][name]
        run_sps = (models.get(name) or {}).get("run_sps")
        lines.append(f"{name}: env {s['env_share']:.0%} | forward {s['forward_share']:.0%} | backward "
                     f"{s['backward_share']:.0%} of a {s['rollout']} rollout and its update (timings give "
                     f"{s['modeled_sps']:,.0f} steps/s; the run measured {run_sps if run_sps is not None else '-'})")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=9.0, help="wall-time budget of the whole command, profile, "
                        "training, evaluations and report included (default 9: one 10-minute GPU command)")
    parser.add_argument("--teacher-fraction", type=float, default=0.5,
                        help="share of --minutes for the teacher, its evaluation included (default 0.5)")
    parser.add_argument("--teacher-steps", type=int, default=10_000_000,
                        help="the teacher's environment-step cap (default 10M, the paper's; the time limit and the "
                             "early stop end it sooner)")
    parser.add_argument("--steady-return", type=float, default=18.0,
                        help="early stop of the teacher: mean training return of its last --steady-window games "
                             "(default 18)")
    parser.add_argument("--steady-window", type=int, default=20,
                        help="games in that mean (default 20; 0: no early stop)")
    parser.add_argument("--student-steps", type=int, default=0,
                        help="environment steps of every student; 0 (default): the first student (ppd-larger) runs "
                             "until its share of the time (at most 2M, the paper's; the share follows the three "
                             "stages' speeds in the profile), the others get the steps it reached")
    parser.add_argument("--num-envs", type=int, default=max(8, os.cpu_count() or 1),
                        help="parallel envs of every stage (default: the CPU cores, at least 8, here %(default)s; "
                             "the scripts' default, the paper's, is 18)")
    parser.add_argument("--num-steps", type=int, default=0,
                        help="rollout length of the teacher and the PPD students (default 0: the scripts', 256 "
                             "and 64); student-distill keeps its 5-step rollouts")
    parser.add_argument("--eval-episodes", type=int, default=10,
                        help="full games per policy in each evaluation (default 10; the scripts play 10 at a time)")
    parser.add_argument("--eval-max-frames", type=int, default=108_000,
                        help="an evaluation game is cut after this many emulator frames (default 108k, the usual cap)")
    parser.add_argument("--eval-seconds", type=float, default=30.0,
                        help="time kept for an evaluation process of one policy, its start-up included (default 30; "
                             "replaced by 1.2 x the teacher's once that is measured); a student's process plays twice")
    parser.add_argument("--report-seconds", type=float, default=10.0, help="time kept for the report at the end")
    parser.add_argument("--profile-steps", type=int, default=50,
                        help="repeats of each timed operation in the profile (default 50; 0: no profile)")
    parser.add_argument("--seed", type=int, default=1, help="seed of every stage (default 1)")
    parser.add_argument("--checkpoint-every", type=int, default=500_000,
                        help="the scripts' periodic checkpoint, in env steps, the games going on (default 500k; a "
                             "SIGTERM always writes one); what a rerun continues from after a hard kill")
    parser.add_argument("--torch-deterministic", action="store_true",
                        help="keep the scripts' cudnn.deterministic (default on CUDA: off, for speed)")
    parser.add_argument("--output-dir", default=os.path.join("runs", "atari_gpu"),
                        help="folder of the stages' runs and logs, relative to the repo (default runs/atari_gpu)")
    parser.add_argument("--report-dir", default=None,
                        help="folder of atari_gpu.{json,md,png} (default: --output-dir)")
    parser.add_argument("--poll-seconds", type=float, default=0.5, help="how often a running stage is checked")
    args = parser.parse_args()
    for flag in ("minutes", "teacher_steps", "num_envs", "eval_episodes", "eval_max_frames", "poll_seconds"):
        if getattr(args, flag) <= 0:
            parser.error(f"--{flag.replace('_', '-')} must be positive, got {getattr(args, flag)}")
    if not 0 < args.teacher_fraction < 1:
        parser.error(f"--teacher-fraction must be between 0 and 1, got {args.teacher_fraction}")
    for flag in ("student_steps", "num_steps", "profile_steps", "steady_window", "checkpoint_every"):
        if getattr(args, flag) < 0:
            parser.error(f"--{flag.replace('_', '-')} must be 0 or more, got {getattr(args, flag)}")
    args.output_dir = os.path.relpath(os.path.join(REPO, args.output_dir), REPO)
    args.report_dir = os.path.join(REPO, args.report_dir or args.output_dir)
    os.makedirs(os.path.join(REPO, args.output_dir), exist_ok=True)
    os.chdir(REPO)

    def on_signal(signum, frame):
        STOP["signal"] = signum
        if STOP["child"] is not None and STOP["child"].poll() is None:
            STOP["child"].send_signal(signal.SIGTERM)  # the script finishes its update and writes its checkpoint

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def log(message: str) -> None:
        print(f"[{time.time() - t_start:6.1f} s] {message}", flush=True)

    t_start = time.time()
    budget = args.minutes * 60
    end = t_start + budget - args.report_seconds
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    command = "python " + " ".join([os.path.relpath(os.path.abspath(sys.argv[0]), REPO)] + sys.argv[1:])
    results = {"command": command, "commit": git_commit(), "machine": machine(), "device": str(device),
               "env_id": ENV_ID, "budget_minutes": args.minutes, "num_envs": args.num_envs,
               "toy_budget": device.type != "cuda" or args.minutes < 2,
               "paper_table5": {"source": PAPER_SOURCE, "header": PAPER_HEADER, "pong_row": PAPER_PONG_ROW,
                                "pong": PAPER_PONG},
               "settings": "the scripts' defaults (the paper's) except: num_envs %d (paper 18)%s; frame skip 4 (the "
                           "scripts' default)" % (args.num_envs,
                                                  f", num_steps {args.num_steps}" if args.num_steps else "")}
    prof_path = os.path.join(args.output_dir, "profile.json")
    records, skipped = {}, []

    def report(final: bool = False) -> None:
        results["models"] = collect(args, records)
        results["skipped_stages"] = skipped
        results["wall_seconds"] = round(time.time() - t_start, 1)
        if results.get("profile"):
            results["profile_lines"] = profile_lines(results["profile"], results["models"])
        write_report(args, results)
        if final:
            for line in results.get("profile_lines", []):
                print(f"profile {line}", flush=True)

    if args.profile_steps and not os.path.exists(prof_path):
        log(f"profile on {device}: {args.num_envs} envs, {args.profile_steps} repeats")
        results["profile"] = profile(args, device)
        with open(prof_path, "w") as f:
            json.dump(results["profile"], f, indent=2)
    elif os.path.exists(prof_path):
        results["profile"] = json.load(open(prof_path))

    try:
        run_stages(args, t_start, budget, end, records, skipped, report, log, results.get("profile"))
    except RuntimeError as e:
        report()
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    report(final=True)
    for name, *_ in STAGES:
        m = results["models"].get(name)
        if m:
            log(f"{name}: {m['global_step']:,} steps at {m['run_sps']} steps/s; score {m['eval']['mean_return']:.1f} "
                f"({m['eval']['episodes']} games), human-normalized {m['human_normalized']:.2f} "
                f"(paper {m['paper_table5']['human_normalized']})")
    log(f"report: {os.path.relpath(os.path.join(args.report_dir, 'atari_gpu.md'), REPO)} (+ .json, .png)")
    if STOP["signal"] is not None:
        sys.exit(128 + STOP["signal"])


def run_stages(args, t_start: float, budget: float, end: float, records: dict, skipped: list, report, log,
               prof: dict | None) -> None:
    # ---- 1. teacher: its share of the time, its evaluation included; early stop once its return is steady
    teacher_dir = os.path.join(args.output_dir, "teacher")
    teacher_deadline = t_start + args.teacher_fraction * budget - args.eval_seconds
    rule = (lambda returns: steady(returns, args.steady_window, args.steady_return)) if args.steady_window else None
    records["teacher"] = run_stage("teacher", args, "", args.teacher_steps, teacher_deadline, rule, log)
    if records["teacher"].get("skipped"):
        skipped.append("teacher")
    if records["teacher"].get("eval_process_seconds"):  # one policy's evaluation, start-up included: now measured
        args.eval_seconds = 1.2 * records["teacher"]["eval_process_seconds"]
    report()
    teacher_path = os.path.join(teacher_dir, "model.pt")

    # ---- 2. students: equal shares of what is left, each with two evaluations (student and teacher)
    student_steps = args.student_steps
    names = [s[0] for s in STAGES[1:]]
    for i, name in enumerate(names):
        if STOP["signal"] is not None:
            break
        if not student_steps and i > 0:  # auto: the steps the first student reached
            first = json.load(open(os.path.join(args.output_dir, names[0], "eval.json")))
            student_steps = first["global_step"]
        if i == 0 and not student_steps:  # auto: its steps become everyone's, so its share follows their speeds
            left = end - time.time() - len(names) * 2 * args.eval_seconds
            deadline = time.time() + first_student_share(prof, names) * left
        else:
            share = (end - time.time()) / (len(names) - i)
            deadline = time.time() + share - 2 * args.eval_seconds
        records[name] = run_stage(name, args, teacher_path, student_steps or PAPER_DISTILL_STEPS, deadline, None, log)
        if records[name].get("skipped"):
            skipped.append(name)
        report()


if __name__ == "__main__":
    main()
