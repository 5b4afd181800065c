"""Hopper-v5 from the shipped teacher: PPD into three student sizes, PPO alone, student-distill and teacher-distill.

The paper's Figure 1 / Table 7 question on one environment, at a budget that fits a 2-core CPU. Runs the grid
one run at a time (finished runs, those with an eval.json, are skipped; interrupted ones resume from their
checkpoint), then writes results/hopper_distill.{json,md,png}.

    python benchmarks/hopper_distill.py --budget 250000 --seeds 1 2 3
    python benchmarks/hopper_distill.py --report-only      # tables and plot from the runs already there
"""

import argparse
import glob
import json
import os
import subprocess
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# (label, script, extra flags): PPD at three sizes, then the baselines on the larger student
GRID = [
    ("ppd-smaller", "ppd_mujoco.py", ["--student-arch", "smaller"]),
    ("ppd-same", "ppd_mujoco.py", ["--student-arch", "same"]),
    ("ppd-larger", "ppd_mujoco.py", ["--student-arch", "larger"]),
    ("ppo-larger", "ppd_mujoco.py", ["--student-arch", "larger", "--distill-coef", "0", "--exp-name", "ppo"]),
    ("student-distill-larger", "student_distill.py", ["--student-arch", "larger"]),
    ("teacher-distill-larger", "teacher_distill.py", ["--student-arch", "larger"]),
]


def run_grid(args) -> None:
    for label, script, flags in GRID:
        if args.only and label not in args.only:
            continue
        for seed in args.seeds:
            run_dir = os.path.join(args.out, f"{label}__s{seed}")
            if os.path.exists(os.path.join(run_dir, "eval.json")):
                continue
            cmd = [sys.executable, script, "--teacher", args.teacher, *flags, "--seed", str(seed),
                   "--total-timesteps", str(args.budget), "--eval-episodes", str(args.eval_episodes)]
            cmd += ["--resume", run_dir] if os.path.exists(os.path.join(run_dir, "checkpoint.pt")) else \
                   ["--output-dir", args.out, "--run-name", os.path.basename(run_dir)]
            if os.path.exists(run_dir) and not os.path.exists(os.path.join(run_dir, "checkpoint.pt")):
                os.rename(run_dir, run_dir + ".failed")  # died before its first checkpoint: start over
            print(" ".join(cmd[1:]), flush=True)
            with open(run_dir + ".log", "w") as log:
                code = subprocess.call(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
            if code:
                print(f"  FAILED ({code}); see {run_dir}.log", flush=True)


def returns_curve(run_dir: str, bins: np.ndarray) -> np.ndarray:
    """Mean training-episode return in each step bin, read with tensorboard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(run_dir, size_guidance={"scalars": 0})
    acc.Reload()
    events = acc.Scalars("charts/episodic_return")
    steps, values = np.array([e.step for e in events]), np.array([e.value for e in events])
    idx = np.digitize(steps, bins) - 1
    return np.array([values[idx == i].mean() if (idx == i).any() else np.nan for i in range(len(bins) - 1)])


def report(args) -> None:
    rows, curves = [], {}
    bins = np.linspace(0, args.budget, 26)
    for label, script, flags in GRID:
        evals = []
        for path in sorted(glob.glob(os.path.join(args.out, f"{label}__s*", "eval.json"))):
            evals.append(json.load(open(path)))
            curves.setdefault(label, []).append(returns_curve(os.path.dirname(path), bins))
        if not evals:
            continue
        fractions = [e["fraction_of_teacher"] for e in evals]
        rows.append({"run": label, "script": script, "flags": " ".join(flags), "seeds": len(evals),
                     "global_step": evals[0]["global_step"],
                     "student_return_mean": float(np.mean([e["student"]["mean_return"] for e in evals])),
                     "teacher_return_mean": float(np.mean([e["teacher"]["mean_return"] for e in evals])),
                     "fraction_per_seed": fractions, "fraction_mean": float(np.mean(fractions)),
                     "fraction_std": float(np.std(fractions)), "commands": [e["command"] for e in evals]})
    os.makedirs(os.path.join(REPO, "results"), exist_ok=True)
    out = os.path.join(REPO, "results", "hopper_distill")
    with open(out + ".json", "w") as f:
        json.dump({"budget": args.budget, "eval_episodes": args.eval_episodes, "teacher": args.teacher,
                   "made_by": "python benchmarks/hopper_distill.py " + " ".join(sys.argv[1:]), "rows": rows}, f, indent=2)
    with open(out + ".md", "w") as f:
        f.write(f"# Hopper-v5: distilling the shipped teacher, {args.budget:,} environment steps per run\n\n"
                f"Final evaluation: {args.eval_episodes} deterministic episodes per run, student and teacher on the same "
                f"seeds. Fraction = student return / teacher return, per seed, then mean +- std over seeds.\n"
                f"Runs made by `python benchmarks/hopper_distill.py --budget {args.budget}` (the exact command of each run "
                f"is in results/hopper_distill.json); this report by `python benchmarks/hopper_distill.py "
                f"{' '.join(sys.argv[1:])}`.\n\n"
                "| run | seeds | student return | teacher return | fraction of teacher | per seed |\n|-|-|-|-|-|-|\n")
        for r in rows:
            f.write(f"| {r['run']} | {r['seeds']} | {r['student_return_mean']:.0f} | {r['teacher_return_mean']:.0f} | "
                    f"{r['fraction_mean']:.2f} +- {r['fraction_std']:.2f} | "
                    f"{', '.join(f'{x:.2f}' for x in r['fraction_per_seed'])} |\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    centers = (bins[1:] + bins[:-1]) / 2
    for label, runs in curves.items():
        mean = np.nanmean(np.stack(runs), 0)
        ax.plot(centers, mean, label=label + (" (teacher's episodes)" if label.startswith("teacher-distill") else ""))
    if rows:
        ax.axhline(rows[0]["teacher_return_mean"], color="k", ls="--", lw=1, label="teacher (evaluation)")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("training episode return (mean over seeds)")
    ax.set_title("Hopper-v5: distillation from the shipped teacher")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out + ".png", dpi=120)
    print(open(out + ".md").read())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=int, default=250_000, help="environment steps per run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="seeds of each configuration")
    parser.add_argument("--eval-episodes", type=int, default=50, help="final evaluation episodes (student and teacher)")
    parser.add_argument("--teacher", default="teachers/Hopper-v5.pt", help="teacher checkpoint")
    parser.add_argument("--out", default=os.path.join(REPO, "runs", "hopper_distill"), help="folder of the runs")
    parser.add_argument("--only", nargs="*", help="run only these labels of the grid")
    parser.add_argument("--report-only", action="store_true", help="skip running, only write the report")
    args = parser.parse_args()
    if not args.report_only:
        run_grid(args)
    report(args)
