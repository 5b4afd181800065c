"""Distillation check that needs no trained teacher and runs on a CPU (minutes per domain).

The teacher is a fixed, randomly initialized IMPALA-CNN (the paper's teacher architecture) whose actor output layer
is rescaled so that its policy is peaked AND depends on the state:

  * the output layer's weights are multiplied by a factor k and its bias is set so that every action's logit has
    mean 0 over frames of random play (without the centering, a random network's greedy action is the same in
    every state: measured 288 of 288 frames on Pong and 283 of 288 on coinrun, so a student could match it by
    learning one constant action);
  * k is chosen so that the logits' standard deviation over those frames is 3 (`logit_std`), which gives the
    teacher's most likely action about 0.6 of the probability on average (x650 on Pong, x145 on coinrun).

ppd_atari.py / ppd_procgen.py then distill it into a Nature-CNN student (`--student-arch smaller`) (Procgen with the
paper's settings; Pong with lambda 5, lr 1e-3 and minibatches of 288, see DOMAINS), and the check reads distill/greedy_agreement (fraction of the student's own states where the student's
and the teacher's greedy actions agree) from the run's event file. Two baselines: chance (1 / number of actions)
and the best constant action (the most frequent teacher greedy action on the calibration frames).

After training, the final student plays 18 x 256 fresh steps (new env seed, sampled actions) and the agreement
is measured again on those states, with the teacher's most frequent greedy action there as the constant baseline.

    python benchmarks/pixel_distill_check.py              # both domains, writes results/pixel_distill_check.{json,md,png}
                                                          # (about 10 + 3 minutes on 2 cores)
    python benchmarks/pixel_distill_check.py --domains procgen --iterations 0 8
"""

import argparse
import glob
import json
import os
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

# Procgen runs with the paper's PPD settings. Pong does not reach 0.6 with them in a CPU budget (40 rollouts: last
# rollout 0.51, fresh states 0.28, below the best constant action; see the git history of results/), so it takes more
# and larger distillation steps: lambda 5, lr 1e-3 and minibatches of 288 (16 Adam steps per rollout instead of 8).
DOMAINS = {
    "atari": {"script": "ppd_atari.py", "env_id": "PongNoFrameskip-v4", "module": ppd_atari,
              "flags": ["--learning-rate", "1e-3", "--distill-coef", "5", "--minibatch-size", "288"],
              "settings": "departs from the paper's PPD settings to fit a CPU budget: lambda 5 (paper 1), lr 1e-3 "
                          "(paper 3e-4), 4 minibatches of 288 (paper 2 of 576); as the paper: 18 envs x 64 steps, "
                          "4 epochs, gamma 0.999, ent_coef 0"},
    "procgen": {"script": "ppd_procgen.py", "env_id": "procgen:coinrun", "module": ppd_procgen, "flags": [],
                "settings": "the paper's PPD settings: 18 envs x 64 steps, 2 minibatches of 576, 4 epochs, lambda 1, "
                            "lr 3e-4, gamma 0.999, ent_coef 0"},
}
ENV_CONFIG = {"frame_skip": 4, "procgen_num_levels": 200, "procgen_start_level": 0, "procgen_distribution_mode": "easy"}


def calibration_frames(domain: str, num_envs: int = 18, steps: int = 64, seed: int = 0) -> torch.Tensor:
    """Frames of random play (every 4th step of each env), uint8 [N, C, H, W]."""
    d = DOMAINS[domain]
    if domain == "atari":
        envs = ppd_atari.make_envs(d["env_id"], num_envs, seed, ENV_CONFIG["frame_skip"])
    else:
        envs = ppd_procgen.make_envs(d["env_id"], num_envs, seed, ENV_CONFIG)
    obs, _ = envs.reset(seed=seed)
    rng = np.random.default_rng(seed)
    frames = []
    for t in range(steps):
        obs, *_ = envs.step(rng.integers(0, envs.single_action_space.n, num_envs))
        if t % 4 == 0:
            frames.append(obs)
    envs.close()
    return torch.as_tensor(np.concatenate(frames))


def make_peaked_teacher(domain: str, path: str, logit_std: float = 3.0, seed: int = 0) -> dict:
    """Save a random IMPALA-CNN teacher (arch 'same') with a peaked, state-dependent policy as a checkpoint of
    train_teacher.py's format; returns what was done (scale, baselines)."""
    d = DOMAINS[domain]
    frames = calibration_frames(domain, seed=seed)
    obs_shape, n_actions = tuple(frames.shape[1:]), int(6 if domain == "atari" else 15)
    action_space = __import__("gymnasium").spaces.Discrete(n_actions)
    torch.manual_seed(seed)
    agent = train_teacher.Agent(domain, train_teacher.ARCHS[domain]["same"], obs_shape, action_space)
    body = agent.actor.body
    with torch.no_grad():
        features = body.fc(body.convs(frames.float() / 255.0))
        logits = body.head(features)
        raw_constant = float(np.bincount(logits.argmax(-1).numpy(), minlength=n_actions).max() / len(frames))
        centered = logits - logits.mean(0)
        scale = logit_std / float(centered.std(0).mean())
        body.head.weight.mul_(scale)
        body.head.bias.copy_(-scale * (logits - body.head.bias).mean(0))  # mean logit 0 for every action
        new_logits = body.head(features)
        probs = torch.softmax(new_logits, -1)
    greedy = new_logits.argmax(-1).numpy()
    counts = np.bincount(greedy, minlength=n_actions)
    args = train_teacher.Args(env_id=d["env_id"], arch="same")
    train_teacher.atomic_save(train_teacher.model_dict(agent, domain, args, obs_shape, action_space, None, 0), path)
    return {"teacher_arch": "same (IMPALA-CNN 16-32-32, fc 256), random init, seed %d" % seed,
            "output_layer_scale": scale, "logit_std_over_frames": logit_std,
            "calibration_frames": len(frames),
            "greedy_action_counts": counts.tolist(),
            "constant_action_baseline": float(counts.max() / len(frames)),
            "constant_action_baseline_before_centering": raw_constant,
            "teacher_mean_max_prob": float(probs.max(-1).values.mean()),
            "chance": 1.0 / n_actions}


def scalars(run_dir: str, tag: str) -> list:
    """[(step, value)] of a tag over the run's event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = []
    for path in sorted(glob.glob(os.path.join(run_dir, "events.out.tfevents.*"))):
        acc = EventAccumulator(path, size_guidance={"scalars": 0})
        acc.Reload()
        if tag in acc.Tags()["scalars"]:
            out += [(e.step, e.value) for e in acc.Scalars(tag)]
    return sorted(out)


def fresh_agreement(domain: str, student_path: str, teacher_path: str, seed: int = 777, num_envs: int = 18,
                    steps: int = 256) -> dict:
    """The final student plays `steps` x `num_envs` fresh steps (sampled actions); greedy-action agreement with the
    teacher on those states, and the teacher's most frequent greedy action there as a constant baseline."""
    d = DOMAINS[domain]
    module = d["module"]
    student = module.agent_from_checkpoint(module.load_checkpoint(student_path)).eval()
    teacher = module.agent_from_checkpoint(module.load_checkpoint(teacher_path)).eval()
    if domain == "atari":
        envs = module.make_envs(d["env_id"], num_envs, seed, ENV_CONFIG["frame_skip"])
    else:
        envs = module.make_envs(d["env_id"], num_envs, seed, ENV_CONFIG)
    obs, _ = envs.reset(seed=seed)
    torch.manual_seed(seed)
    agree, teacher_actions = [], []
    for _ in range(steps):
        x = torch.as_tensor(obs)
        with torch.no_grad():
            student_dist, teacher_logits = student.actor(x), teacher.actor(x).logits
        agree.append((student_dist.logits.argmax(-1) == teacher_logits.argmax(-1)).numpy())
        teacher_actions.append(teacher_logits.argmax(-1).numpy())
        obs, *_ = envs.step(student_dist.sample().numpy())
    envs.close()
    counts = np.bincount(np.concatenate(teacher_actions), minlength=teacher_logits.shape[-1])
    return {"fresh_states": int(counts.sum()), "fresh_agreement": float(np.mean(agree)),
            "fresh_constant_action_baseline": float(counts.max() / counts.sum())}


def game_ends_per_rollout(run_dir: str, batch: int = 18 * 64) -> list:
    """Number of full games (Atari) or episodes (Procgen) that ended in each rollout of the run."""
    steps = np.array([s for s, _ in scalars(run_dir, "charts/episodic_length")], dtype=np.int64)
    rollouts = len(scalars(run_dir, "distill/greedy_agreement"))
    return np.bincount((steps - 1) // batch, minlength=rollouts)[:rollouts].tolist() if len(steps) else [0] * rollouts


def run_check(domain: str, out_dir: str, total_timesteps: int, chunk_timesteps: int = 0, timeout: float = 900) -> dict:
    """Distil a peaked teacher with the domain's PPD script; with chunk_timesteps, in runs of that many steps, each
    continuing the last with --resume (no single process runs for more than a few minutes on the shared machine)."""
    d = DOMAINS[domain]
    os.makedirs(out_dir, exist_ok=True)
    teacher_path = os.path.join(out_dir, f"peaked-teacher-{domain}.pt")
    teacher = make_peaked_teacher(domain, teacher_path)
    run_name = f"distill-check-{domain}-{int(time.time())}"
    run_dir = os.path.join(out_dir, run_name)
    command = [d["script"], "--teacher", os.path.relpath(teacher_path, REPO), "--student-arch", "smaller",
               "--eval-episodes", "1", "--output-dir", os.path.relpath(out_dir, REPO), "--run-name", run_name, *d["flags"]]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "CUDA_VISIBLE_DEVICES": ""}
    chunks = list(range(chunk_timesteps or total_timesteps, total_timesteps, chunk_timesteps or total_timesteps)) + [total_timesteps]
    commands, wall = [], 0.0
    for i, steps in enumerate(chunks):
        cmd = command + ["--total-timesteps", str(steps)] + (["--resume", os.path.relpath(run_dir, REPO)] if i else [])
        t0 = time.time()
        result = subprocess.run([sys.executable, *cmd], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
        wall += time.time() - t0
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stderr[-3000:]}")
        commands.append("OMP_NUM_THREADS=1 python " + " ".join(cmd))
        print(f"  {domain}: {steps} steps done ({wall:.0f} s)", flush=True)
    curve = scalars(run_dir, "distill/greedy_agreement")
    kl = scalars(run_dir, "distill/kl")
    return {"env_id": d["env_id"], "student_arch": "smaller (Nature-CNN 32-32-32, fc 128)", **teacher,
            "total_timesteps": total_timesteps, "wall_seconds": round(wall, 1),
            "settings": d["settings"],
            "agreement_curve": [[s, round(v, 4)] for s, v in curve], "kl_curve": [[s, round(v, 4)] for s, v in kl],
            "first_agreement": curve[0][1], "final_agreement": curve[-1][1],
            "best_agreement": max(v for _, v in curve),
            "first_step_at_or_above_0.6": next((s for s, v in curve if v >= 0.6), None),
            "episode_ends_per_rollout": game_ends_per_rollout(run_dir),
            **fresh_agreement(domain, os.path.join(run_dir, "model.pt"), teacher_path),
            "run_dir": os.path.relpath(run_dir, REPO), "commands": commands}


def write_results(results: dict, out: str) -> None:
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "pixel_distill_check.json"), "w") as f:
        json.dump(results, f, indent=2)
    md = ["# Pixel distillation check: a peaked random IMPALA teacher distilled into a Nature-CNN student\n",
          "Made by `python benchmarks/pixel_distill_check.py` on a 2-core CPU (no GPU), one torch thread, while other",
          "jobs shared the machine. Teacher: a randomly initialized IMPALA-CNN (the paper's teacher architecture) whose",
          "output layer is scaled and centered so that its policy is peaked and its greedy action depends on the state",
          "(see the script's docstring). Student: Nature-CNN (`--student-arch smaller`), trained by `ppd_atari.py` /",
          "`ppd_procgen.py` (settings below). Agreement: fraction of the student's states (its own rollouts)",
          "where the student's and the teacher's greedy actions are the same (`distill/greedy_agreement`, mean over",
          "the update's minibatches), and again on fresh states after training.\n",
          "| | Atari (PongNoFrameskip-v4) | Procgen (coinrun) |", "|---|---|---|"]
    doms = [results[k] for k in ("atari", "procgen")]
    rows = [("environment steps (rollouts)", lambda r: f"{r['total_timesteps']:,} ({len(r['agreement_curve'])})"),
            ("wall time of the run", lambda r: f"{r['wall_seconds'] / 60:.1f} min"),
            ("settings", lambda r: r["settings"]),
            ("actions / chance", lambda r: f"{len(r['greedy_action_counts'])} / {r['chance']:.3f}"),
            ("teacher output-layer scale; mean max-probability", lambda r: f"x{r['output_layer_scale']:.0f}; {r['teacher_mean_max_prob']:.2f}"),
            ("best constant action (random-play frames), without / with centering",
             lambda r: f"{r['constant_action_baseline_before_centering']:.3f} / {r['constant_action_baseline']:.3f}"),
            ("agreement, first rollout", lambda r: f"{r['first_agreement']:.3f}"),
            ("**agreement, last rollout**", lambda r: f"**{r['final_agreement']:.3f}**"),
            ("best rollout; first step at >= 0.6", lambda r: f"{r['best_agreement']:.3f}; {r['first_step_at_or_above_0.6'] or 'never'}"),
            ("agreement on fresh states after training (best constant action there)",
             lambda r: f"{r['fresh_agreement']:.3f} ({r['fresh_constant_action_baseline']:.3f}, {r['fresh_states']} states)")]
    for label, fmt in rows:
        md.append(f"| {label} | " + " | ".join(fmt(r) if r else "-" for r in doms) + " |")
    md.append("\nAgreement per rollout, and (in brackets) the number of episodes (Atari: full games) that ended in it:\n")
    for name, r in zip(("Atari", "Procgen"), doms):
        if r:
            ends = r.get("episode_ends_per_rollout") or [0] * len(r["agreement_curve"])
            md.append(f"- {name}: " + ", ".join(f"{v:.2f} [{e}]" for (_, v), e in zip(r["agreement_curve"], ends)))
    md += ["\nReading it:\n",
           "- The agreement is measured on the student's own rollouts during the 4 update epochs, so it also counts "
           "states the student has just been fitted on; the fresh-state row is the held-out number.",
           "- **Procgen** passes with the paper's settings: from chance to about 0.6, and as high on fresh states and "
           "levels (the states are visually diverse, so the random teacher's decisions follow large image features).",
           "- **Atari (Pong)** passes 0.6 after about 10 rollouts and ends near 0.77; on fresh states (new games, "
           "another seed) the final student agrees about 0.7 of the time, well above the teacher's most frequent action "
           "there. The agreement dips whenever many of the 18 games end together (they start together: see the brackets) "
           "and a new game phase begins. This needs settings that depart from the paper's (the settings row): with "
           "lambda 1, lr 3e-4 and 8 Adam steps per rollout the same 40 rollouts ended at 0.51 on the student's rollouts "
           "and 0.28 on 18 x 64 fresh states, below the best constant action (this file at commit 27c6eb4). Pong frames "
           "differ only in small objects (ball, paddles, score), so the random teacher's greedy action is a fine-grained "
           "function of them that takes more and larger distillation steps than the paper's settings give in a CPU "
           "budget; a trained Pong teacher, whose decisions follow the ball, is the test of the paper's settings."]
    md.append("\nCommands (one line per process; with `--chunk-iterations` a run is continued with `--resume`):\n")
    for r in doms:
        if r:
            md += [f"    {c}" for c in r["commands"]]
    md.append("\n![agreement curves](pixel_distill_check.png)")
    with open(os.path.join(out, "pixel_distill_check.md"), "w") as f:
        f.write("\n".join(md) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, (name, r) in zip(axes, zip(("Atari: PongNoFrameskip-v4", "Procgen: coinrun"), doms)):
        if not r:
            continue
        steps, values = zip(*r["agreement_curve"])
        ax.plot(steps, values, marker="o", label="student-teacher greedy agreement")
        ax.axhline(r["chance"], color="gray", ls=":", label=f"chance (1/{len(r['greedy_action_counts'])})")
        ax.axhline(r["constant_action_baseline"], color="gray", ls="--", label="best constant action")
        ax.plot([steps[-1]], [r["fresh_agreement"]], marker="*", ms=12, color="C3", ls="none",
                label="final student on fresh states")
        ax.axhline(0.6, color="green", ls="-", lw=0.8, label="0.6")
        ax.set_title(name)
        ax.set_xlabel("environment steps")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("greedy-action agreement")
    ax = next(ax for ax in axes if ax.lines)
    handles, labels = ax.get_legend_handles_labels()
    labels = [label.split(" (1/")[0] for label in labels]  # chance differs per domain: drawn in each panel
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=8, frameon=False)
    fig.suptitle("PPD of a peaked random IMPALA teacher into a Nature-CNN student (CPU)", fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(os.path.join(out, "pixel_distill_check.png"), dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domains", nargs="+", default=["atari", "procgen"], choices=list(DOMAINS))
    parser.add_argument("--iterations", nargs=2, type=int, default=[40, 16], metavar=("ATARI", "PROCGEN"),
                        help="rollouts of 18 x 64 steps per domain")
    parser.add_argument("--chunk-iterations", type=int, default=0,
                        help="rollouts per process, the run continued with --resume (0: one process). A resume starts "
                             "fresh games in all envs at once, which shows as a dip of the agreement on Pong")
    parser.add_argument("--runs-dir", default=os.path.join(REPO, "runs", "pixel_distill_check"))
    parser.add_argument("--out", default=os.path.join(REPO, "results"))
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing: rewrite the .md and .png from the existing .json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    path = os.path.join(args.out, "pixel_distill_check.json")
    results = json.load(open(path)) if os.path.exists(path) else {}  # a domain not rerun keeps its last result
    if args.report_only:
        if not results:
            parser.error(f"--report-only rewrites the report from {path}, which does not exist; run the check first")
        return write_results({"atari": None, "procgen": None, **results}, args.out)
    for domain in args.domains:
        iterations = args.iterations[list(DOMAINS).index(domain)]
        print(f"{domain}: {iterations} rollouts ...", flush=True)
        results[domain] = run_check(domain, args.runs_dir, iterations * 18 * 64, args.chunk_iterations * 18 * 64)
        print(f"{domain}: agreement {results[domain]['first_agreement']:.3f} -> {results[domain]['final_agreement']:.3f} "
              f"(fresh states {results[domain]['fresh_agreement']:.3f}) in {results[domain]['wall_seconds']:.0f} s", flush=True)
        results.setdefault("atari", None), results.setdefault("procgen", None)
        write_results(results, args.out)


if __name__ == "__main__":
    main()
