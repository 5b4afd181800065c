"""The paper's tables and figures from a folder of runs (a grid's output_dir, or any folder of run folders).

    python experiments/report.py experiments/mujoco_cpu.toml          # the grid's output_dir
    python experiments/report.py runs/grid-mujoco-cpu --resamples 5000

Reads every eval.json under the folder (distillation runs: those with a "method", "student" or "test_levels"
entry; teacher runs of train_teacher.py: the others with a top-level "mean_return") and each distillation run's
tensorboard events (through tensorboard's EventAccumulator), and writes <folder>/report/: report.md, report.json
(every number of the tables; paths relative to the folder) and the figures (PNG):

- fractions of the teacher per domain and student size, geometric IQM with a stratified-bootstrap 95% CI
  (paper Table 1, and Table 7 for the `ppo` column), imperfect teachers (Table 2);
- P(PPD > baseline), the probability that PPD beats a baseline on a random environment and seed, with a CI;
- scores per environment, mean +- std over seeds (Table 5);
- training curves per method (Figure 1) and per environment;
- per environment, the fraction of the teacher against environment steps and the steps at which each method
  reaches 0.5, 0.8 and 0.9 of the teacher (how fast, Figure 1's question).

The definitions are in the report itself and in experiments/stats.py.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import shlex
import sys
import tomllib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)
from experiments import stats  # noqa: E402

MUJOCO = {"Ant", "HalfCheetah", "Hopper", "Humanoid", "HumanoidStandup", "InvertedPendulum", "InvertedDoublePendulum",
          "Pusher", "Reacher", "Swimmer", "Walker2d"}
ARCH_ORDER = ("smaller", "same", "larger")
LABEL_ORDER = ("atari", "mujoco", "mlp", "procgen (test)", "procgen (train)", "atari (raw score)")
BASELINES = ("ppo", "teacher-distill", "student-distill")
CURVE_TAG = "charts/episodic_return"


def domain_of(env_id: str) -> str:
    if env_id.startswith("procgen:"):
        return "procgen"
    if env_id.endswith("NoFrameskip-v4") or env_id.startswith("ALE/"):
        return "atari"
    return "mujoco" if env_id.split("-v")[0] in MUJOCO else "mlp"


def flag_value(command: str, flag: str, default=None):
    """The value of the last `flag VALUE` or `flag=VALUE` in a recorded command line."""
    try:
        tokens = shlex.split(command or "")
    except ValueError:
        tokens = (command or "").split()
    value = default
    for i, tok in enumerate(tokens):
        if tok == flag and i + 1 < len(tokens):
            value = tokens[i + 1]
        elif tok.startswith(flag + "="):
            value = tok.split("=", 1)[1]
    return value


def method_label(method: str, lam: Optional[float]) -> str:
    if method == "ppd" and lam not in (None, 1.0):
        return f"ppd λ={lam:g}"
    return method


def method_order(label: str) -> tuple:
    if label in BASELINES:
        return (BASELINES.index(label), 0.0)
    return (len(BASELINES), float(label.split("=")[1]) if "=" in label else 1.0)


def _mean_return(summary) -> Optional[float]:
    return summary.get("mean_return") if isinstance(summary, dict) else None


def distill_measures(e: dict) -> dict:
    """{measure label: (student score, teacher score)} of one distillation eval.json, whatever script wrote it:
    Atari human-normalized (top-level "human_normalized" dict, or inside each summary), Procgen on test and
    training levels ("test_levels"/"train_levels" blocks, or top-level test plus "train_levels")."""
    d = domain_of(e["env_id"])
    if d == "procgen":
        if "student" in e.get("test_levels", {}):
            test = (_mean_return(e["test_levels"].get("student")), _mean_return(e["test_levels"].get("teacher")))
        else:
            test = (_mean_return(e.get("student")), _mean_return(e.get("teacher")))
        tl = e.get("train_levels") or {}
        out = {"procgen (test)": test}
        if "student" in tl:
            out["procgen (train)"] = (_mean_return(tl.get("student")), _mean_return(tl.get("teacher")))
        return out
    if d == "atari":
        hn = e.get("human_normalized")
        if isinstance(hn, dict) and hn.get("student") is not None and hn.get("teacher") is not None:
            return {"atari": (hn["student"], hn["teacher"])}
        s, t = (e.get(k, {}).get("human_normalized") for k in ("student", "teacher"))
        if s is not None and t is not None:
            return {"atari": (s, t)}
        return {"atari (raw score)": (_mean_return(e.get("student")), _mean_return(e.get("teacher")))}
    return {d: (_mean_return(e.get("student")), _mean_return(e.get("teacher")))}


def teacher_measures(e: dict, random_human: Optional[tuple]) -> dict:
    """{measure label: score} of a train_teacher.py eval.json (Atari made human-normalized when the game's
    random and human scores are known from a distillation run)."""
    d = domain_of(e["env_id"])
    if d == "procgen":
        out = {"procgen (test)": e.get("mean_return")}
        if isinstance(e.get("train_levels"), dict):
            out["procgen (train)"] = e["train_levels"].get("mean_return")
        return out
    if d == "atari":
        out = {"atari (raw score)": e.get("mean_return")}
        if random_human and e.get("mean_return") is not None:
            rnd, hum = random_human
            out["atari"] = (e["mean_return"] - rnd) / (hum - rnd)
        return out
    return {d: e.get("mean_return")}


@dataclass
class Result:
    run_dir: str
    env_id: str
    method: str
    arch: str
    lam: Optional[float]
    noise: float
    seed: int
    teacher_ref: str
    global_step: int
    scores: dict
    raw_teacher: Optional[float]  # the teacher's raw evaluation return in this run (curve normalization)
    fractions: dict = field(default_factory=dict)  # label -> fraction of the (original) teacher, or None
    clean_teacher: dict = field(default_factory=dict)  # label -> original teacher's score
    notes: dict = field(default_factory=dict)  # label -> why the fraction is missing / where the reference came from

    @property
    def label(self) -> str:
        return method_label(self.method, self.lam)


def _teacher_ref(command: str) -> str:
    teacher = flag_value(command, "--teacher")
    if teacher is None:
        return "(script default)"
    if not os.path.isabs(teacher):
        teacher = os.path.join(REPO, teacher)
    teacher = os.path.realpath(teacher)
    return os.path.dirname(teacher) if teacher.endswith(".pt") else teacher


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _relocate(path: str, runs_dir: str) -> str:
    """A teacher folder recorded on the machine that ran the grid, found again in this copy of the grid's folder
    (same trailing components, e.g. teachers/Hopper-v5__s1) when the recorded path is gone."""
    if not os.path.isabs(path) or os.path.exists(path) or _inside(path, runs_dir):
        return path
    parts = path.strip(os.sep).split(os.sep)
    for k in range(len(parts) - 1, 1, -1):
        candidate = os.path.join(runs_dir, *parts[-k:])
        if os.path.isdir(candidate):
            return os.path.realpath(candidate)
    return path


def load_runs(runs_dir: str):
    """(distillation results, {teacher run dir: eval dict})."""
    runs_dir = os.path.realpath(runs_dir)
    results, teachers, random_human = [], {}, {}
    for path in sorted(glob.glob(os.path.join(runs_dir, "**", "eval.json"), recursive=True)):
        try:
            with open(path) as f:
                e = json.load(f)
        except (OSError, json.JSONDecodeError):
            continue
        run_dir = os.path.realpath(os.path.dirname(path))
        if not isinstance(e, dict) or "env_id" not in e:
            continue
        if not ("student" in e or "test_levels" in e or "method" in e):  # a teacher (train_teacher.py)
            if "mean_return" in e:
                teachers[run_dir] = e
            continue
        hn = e.get("human_normalized")
        if isinstance(hn, dict) and hn.get("random") is not None and hn.get("human") is not None:
            random_human[e["env_id"]] = (hn["random"], hn["human"])
        command = e.get("command", "")
        method = e.get("method") or ("ppd" if e.get("distill_coef", 1) else "ppo")
        lam = e.get("distill_coef") if method in ("ppd", "ppo") else None
        if method == "ppd" and e.get("distill_coef_schedule", "constant") != "constant":  # lambda not a constant
            method = f"ppd-{e['distill_coef_schedule']}"
        teacher_raw = e.get("teacher", {})
        if "student" in e.get("test_levels", {}):  # Procgen PPD: curves are on training levels
            teacher_raw = e.get("train_levels", {}).get("teacher") or e["test_levels"].get("teacher", {})
        elif domain_of(e["env_id"]) == "procgen" and isinstance(e.get("train_levels"), dict):
            teacher_raw = e["train_levels"].get("teacher") or teacher_raw
        results.append(Result(run_dir, e["env_id"], method, e.get("student_arch", "same"),
                              None if lam is None else float(lam), float(e.get("teacher_noise_std") or 0.0),
                              int(flag_value(command, "--seed", 1)), _relocate(_teacher_ref(command), runs_dir),
                              int(e.get("global_step", 0)), distill_measures(e), _mean_return(teacher_raw)))
    return results, teachers, random_human


def compute_fractions(results: list, teachers: dict, random_human: dict) -> None:
    """Fill each result's fraction of the teacher: student / teacher of the same run, or for an imperfect
    (noisy) teacher student / original teacher, whose score comes from a noise-0 run of the same teacher and seed
    (same evaluation protocol and seeds) or else from the teacher run's own eval.json."""
    clean = defaultdict(list)
    for r in results:
        if r.noise == 0:
            for label, (_, t) in r.scores.items():
                if t is not None:
                    clean[(r.teacher_ref, r.seed, label)].append(t)
    for r in results:
        for label, (s, t) in r.scores.items():
            ref, source = t, "same run"
            if r.noise > 0:
                values = clean.get((r.teacher_ref, r.seed, label))
                if values:
                    ref, source = float(np.mean(values)), "noise-0 run of the same teacher and seed"
                elif r.teacher_ref in teachers:
                    ref = teacher_measures(teachers[r.teacher_ref], random_human.get(r.env_id)).get(label)
                    source = "the teacher run's eval.json"
                else:
                    ref, source = None, "no original-teacher score found"
            r.clean_teacher[label] = ref
            if s is None or ref is None:
                r.fractions[label], r.notes[label] = None, f"missing score ({source})"
            elif ref <= 0:
                r.fractions[label], r.notes[label] = None, f"reference teacher score {ref:.4g} <= 0"
            else:
                r.fractions[label], r.notes[label] = s / ref, source


def aggregate(env_groups: dict, n_resamples: int, seed: int, eps: float) -> dict:
    groups = [np.asarray(env_groups[k], dtype=float) for k in sorted(env_groups)]
    point, lo, hi = stats.stratified_bootstrap(groups, lambda a: stats.geometric_iqm(a, eps), n_resamples, seed)
    pooled = np.concatenate(groups)
    return {"geometric_iqm": float(point), "ci": [float(lo), float(hi)], "environments": len(groups),
            "runs": int(len(pooled)), "clipped": int((pooled <= eps).sum())}


def cell(a: Optional[dict]) -> str:
    if not a:
        return "-"
    mark = "†" if a["clipped"] else ""
    return f"{a['geometric_iqm']:.2f}x [{a['ci'][0]:.2f}, {a['ci'][1]:.2f}]{mark} ({a['runs']})"


def num(x: float) -> str:
    ax = abs(x)
    return f"{x:.0f}" if ax >= 100 else f"{x:.2f}" if ax >= 1 else f"{x:.3f}"


def mean_std_cell(values: list) -> str:
    if not values:
        return "-"
    m, s = stats.mean_std(values)
    return f"{num(m)} ± {num(s)} ({len(values)})"


def md_table(header: list, rows: list) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("-" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def sort_labels(labels) -> list:
    return sorted(labels, key=lambda x: (LABEL_ORDER.index(x) if x in LABEL_ORDER else len(LABEL_ORDER), x))


def sort_archs(archs) -> list:
    return sorted(archs, key=lambda a: ARCH_ORDER.index(a) if a in ARCH_ORDER else len(ARCH_ORDER))


# ----------------------------------------------------------------------------------------------------
# Training curves
# ----------------------------------------------------------------------------------------------------
def read_curve(run_dir: str):
    """(steps, values) of the training episodes' returns, read with tensorboard's own EventAccumulator."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(run_dir, size_guidance={"scalars": 0})
    acc.Reload()
    if CURVE_TAG not in acc.Tags().get("scalars", []):
        return None
    events = acc.Scalars(CURVE_TAG)
    return np.array([ev.step for ev in events], float), np.array([ev.value for ev in events], float)


def load_curves(results: list) -> dict:
    """{run_dir: (steps, values)} of the exact-teacher (noise 0) runs that logged training episodes; runs still
    going or without events are simply absent."""
    curves = {}
    for r in results:
        if r.noise == 0:
            c = read_curve(r.run_dir)
            if c is not None and len(c[0]):
                curves[r.run_dir] = c
    return curves


def event_files(run_dir: str) -> list:
    return sorted(glob.glob(os.path.join(run_dir, "events.out.tfevents.*")))


def curve_bins(panel: list, curves: dict) -> tuple:
    """30 bins over the steps every run of the panel reached: (edges, centres)."""
    edges = np.linspace(0, max(min(r.global_step or curves[r.run_dir][0].max() for r in panel), 1), 31)
    return edges, (edges[1:] + edges[:-1]) / 2


def curve_style(label: str) -> str:
    return ":" if label == "teacher-distill" else "-"


def curve_legend(label: str) -> str:
    """teacher-distill's training episodes are the teacher's own (it acts): say so wherever its curve is drawn."""
    return label + " (teacher acts)" if label == "teacher-distill" else label


def plot_curves(results: list, curves: dict, out_dir: str, n_resamples: int, seed: int) -> list:
    """curves.png (IQM over environments and seeds of return / teacher's evaluation return, per domain and
    student size, 95% stratified-bootstrap band) and curves_per_env.png (raw returns, mean over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in results if r.run_dir in curves]
    if not runs:
        return []
    written = []
    colors = {}

    def color(label):
        if label not in colors:
            colors[label] = f"C{len(colors)}"
        return colors[label]

    style, legend = curve_style, curve_legend

    def bins(panel: list) -> tuple:
        return curve_bins(panel, curves)

    def finish(ax, title: str, ylabel: str) -> None:
        ax.set_title(title)
        ax.set_xlabel("environment steps")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)

    def save(fig, name: str) -> None:
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, name), dpi=110)
        plt.close(fig)
        written.append(os.path.join(out_dir, name))

    # ---- aggregate per domain and size (Figure 1)
    domains = sorted({domain_of(r.env_id) for r in runs})
    archs = sort_archs({r.arch for r in runs})
    fig, axes = plt.subplots(len(domains), len(archs), figsize=(4.2 * len(archs), 3.3 * len(domains)), squeeze=False)
    for i, d in enumerate(domains):
        for j, arch in enumerate(archs):
            ax = axes[i][j]
            panel = [r for r in runs
                     if domain_of(r.env_id) == d and r.arch == arch and r.raw_teacher and r.raw_teacher > 0]
            if not panel:
                ax.set_visible(False)
                continue
            edges, x = bins(panel)
            for label in sorted({r.label for r in panel}, key=method_order):
                by_env = defaultdict(list)
                for r in panel:
                    if r.label == label:
                        steps, values = curves[r.run_dir]
                        by_env[r.env_id].append(stats.curve_on_grid(steps, values, edges) / r.raw_teacher)
                groups = [np.stack(v) for _, v in sorted(by_env.items())]
                mid, lo, hi = stats.stratified_bootstrap(groups, stats.iqm, n_resamples, seed)
                ax.plot(x, mid, style(label), color=color(label), label=legend(label))
                ax.fill_between(x, lo, hi, color=color(label), alpha=0.2, lw=0)
            ax.axhline(1.0, color="k", ls="--", lw=1)
            finish(ax, f"{d}, {arch} student", "training return / teacher")
    save(fig, "curves.png")

    # ---- per environment (Figures 9-11)
    envs = sorted({r.env_id for r in runs}, key=lambda e: (domain_of(e), e))
    fig, axes = plt.subplots(len(envs), len(archs), figsize=(4.2 * len(archs), 3.0 * len(envs)), squeeze=False)
    for i, env_id in enumerate(envs):
        for j, arch in enumerate(archs):
            ax = axes[i][j]
            panel = [r for r in runs if r.env_id == env_id and r.arch == arch]
            if not panel:
                ax.set_visible(False)
                continue
            edges, x = bins(panel)
            for label in sorted({r.label for r in panel}, key=method_order):
                ys = np.stack([stats.curve_on_grid(*curves[r.run_dir], edges) for r in panel if r.label == label])
                ax.plot(x, ys.mean(0), style(label), color=color(label), label=f"{legend(label)} ({len(ys)})")
            teacher = [r.raw_teacher for r in panel if r.raw_teacher is not None]
            if teacher:
                ax.axhline(float(np.mean(teacher)), color="k", ls="--", lw=1, label="teacher (evaluation)")
            finish(ax, f"{env_id}, {arch} student", "training episode return")
    save(fig, "curves_per_env.png")
    return written


THRESHOLDS = (0.5, 0.8, 0.9)


def teacher_eval_return(r: Result, teachers: dict) -> tuple:
    """(the teacher's deterministic evaluation return, its source): the teacher run's own eval.json, else the
    distillation run's evaluation of its teacher. Procgen curves are on training levels: the score there."""
    e = teachers.get(r.teacher_ref)
    if e is not None:
        v = e.get("mean_return")
        if domain_of(r.env_id) == "procgen":
            v = e["train_levels"].get("mean_return") if isinstance(e.get("train_levels"), dict) else None
        if isinstance(v, (int, float)):
            return float(v), "teacher run's eval.json"
    return r.raw_teacher, "distillation run's evaluation of its teacher"


def safe_name(env_id: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in env_id)


def steps_to_teacher(results: list, teachers: dict, curves: dict, out_dir: str) -> tuple:
    """Per environment, training return / teacher's evaluation return against environment steps: one panel per
    student size, one line per method (mean over seeds, min-max band), PNG steps_to_teacher_<env>.png; and the
    first bin where the seed mean reaches each of THRESHOLDS. Returns (rows for report.json, {env_id: PNG path})."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = []  # (result, teacher return, source); a teacher at or below 0 gives no fraction
    for r in results:
        if r.run_dir in curves:
            ref, source = teacher_eval_return(r, teachers)
            if ref is not None and ref > 0:
                runs.append((r, ref, source))
    labels = sorted({x[0].label for x in runs}, key=method_order)
    colors = {label: f"C{i}" for i, label in enumerate(labels)}
    rows, figures = [], {}
    for env_id in sorted({x[0].env_id for x in runs}, key=lambda e: (domain_of(e), e)):
        archs = sort_archs({x[0].arch for x in runs if x[0].env_id == env_id})
        fig, axes = plt.subplots(1, len(archs), figsize=(4.2 * len(archs), 3.3), squeeze=False)
        for ax, arch in zip(axes[0], archs):
            panel = [x for x in runs if x[0].env_id == env_id and x[0].arch == arch]
            edges, centres = curve_bins([x[0] for x in panel], curves)
            for label in sorted({x[0].label for x in panel}, key=method_order):
                group = sorted((x for x in panel if x[0].label == label), key=lambda x: x[0].seed)
                ys = np.stack([stats.curve_on_grid(*curves[r.run_dir], edges) / ref for r, ref, _ in group])
                mean = ys.mean(0)
                ax.plot(centres, mean, curve_style(label), color=colors[label],
                        label=f"{curve_legend(label)} ({len(ys)})")
                ax.fill_between(centres, ys.min(0), ys.max(0), color=colors[label], alpha=0.2, lw=0)
                reached = {}
                for t in THRESHOLDS:
                    step = stats.first_crossing(centres, mean, t)
                    reached[f"{t:g}"] = None if step is None else int(round(step))
                rows.append({"env_id": env_id, "arch": arch, "method": label, "runs": len(ys),
                             "seeds": [r.seed for r, _, _ in group],
                             "curve_of": "teacher" if label == "teacher-distill" else "student",
                             "teacher_return": [ref for _, ref, _ in group],
                             "teacher_source": sorted({src for _, _, src in group}),
                             "bin_steps": float(edges[1] - edges[0]), "reached": reached,
                             "last_bin_fraction": float(mean[-1]), "run_dirs": [r.run_dir for r, _, _ in group]})
            ax.axhline(1.0, color="k", ls="--", lw=1)
            ax.set_title(f"{env_id}, {arch} student")
            ax.set_xlabel("environment steps")
            ax.set_ylabel("training return / teacher")
            ax.legend(fontsize=7)
        fig.tight_layout()
        path = os.path.join(out_dir, f"steps_to_teacher_{safe_name(env_id)}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        figures[env_id] = path
    return rows, figures


def plot_fractions(table: dict, out_dir: str) -> Optional[str]:
    """fractions.png: the geometric IQM and its CI per domain, student size and method (noise 0)."""
    if not table:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = sort_labels({k[0] for k in table})
    fig, axes = plt.subplots(1, len(labels), figsize=(5 * len(labels), 3.6), squeeze=False)
    for ax, dlabel in zip(axes[0], labels):
        keys = [k for k in table if k[0] == dlabel]
        archs = sort_archs({k[1] for k in keys})
        methods = sorted({k[2] for k in keys}, key=method_order)
        width = 0.8 / max(1, len(methods))
        for m_i, m in enumerate(methods):
            xs, ys, err = [], [], [[], []]
            for a_i, a in enumerate(archs):
                agg = table.get((dlabel, a, m))
                if agg:
                    xs.append(a_i - 0.4 + width * (m_i + 0.5))
                    ys.append(agg["geometric_iqm"])
                    err[0].append(agg["geometric_iqm"] - agg["ci"][0])
                    err[1].append(agg["ci"][1] - agg["geometric_iqm"])
            ax.errorbar(xs, ys, yerr=err, fmt="o", capsize=3, label=m)
        ax.axhline(1.0, color="k", ls="--", lw=1)
        ax.set_xticks(range(len(archs)), archs)
        ax.set_title(dlabel)
        ax.set_ylabel("fraction of teacher (geometric IQM, 95% CI)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = os.path.join(out_dir, "fractions.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------------------
# The report
# ----------------------------------------------------------------------------------------------------
def write_report(runs_dir: str, out_dir: Optional[str] = None, n_resamples: int = 2000, seed: int = 0,
                 eps: float = stats.EPS, curves: bool = True) -> str:
    runs_dir = os.path.realpath(runs_dir)
    out_dir = out_dir or os.path.join(runs_dir, "report")
    os.makedirs(out_dir, exist_ok=True)

    def rel(path: str) -> str:
        """Paths in the report are relative to the grid's folder: absolute ones only name the machine that ran it."""
        return os.path.relpath(os.path.realpath(path), runs_dir) if os.path.isabs(path) else path

    repo = os.path.realpath(REPO)
    shown = os.path.relpath(runs_dir, repo) if _inside(runs_dir, repo) else os.path.basename(runs_dir)
    results, teachers, random_human = load_runs(runs_dir)
    compute_fractions(results, teachers, random_human)
    numbers = {"runs_dir": shown, "paths": "relative to runs_dir (the grid's output folder)",
               "made": f"{datetime.datetime.now():%Y-%m-%d %H:%M:%S}",
               "settings": {"resamples": n_resamples, "bootstrap_seed": seed, "eps": eps, "confidence": 0.95},
               "fractions": [], "imperfect_teachers": [], "probability_of_improvement": [], "per_environment": [],
               "steps_to_teacher": [], "figures": [], "excluded": [], "runs": []}
    command = f"python experiments/report.py {shown if _inside(runs_dir, repo) else '<this folder>'}"
    md = ["# Distillation grid report\n",
          f"Runs in the grid's output folder `{shown}`: {len(results)} distillation runs and {len(teachers)} teacher "
          f"runs with an eval.json. Made {numbers['made']} by `{command}`. Paths are relative to that folder.\n"]

    manifest = os.path.join(runs_dir, "grid.json")
    unfinished = []
    if os.path.exists(manifest):
        with open(manifest) as f:
            grid_plan = json.load(f)
        planned = grid_plan.get("runs", [])

        def finished(p: dict) -> bool:  # the recorded run_dir, or the same run in this (maybe moved) folder
            moved = os.path.join(runs_dir, os.path.relpath(p["run_dir"], grid_plan.get("output_dir") or runs_dir))
            return any(os.path.exists(os.path.join(d, "eval.json")) for d in (p["run_dir"], moved))

        unfinished = [p["name"] for p in planned if not finished(p)]
        md.append(f"The grid plans {len(planned)} runs; {len(planned) - len(unfinished)} are finished"
                  + (f", {len(unfinished)} are not (listed at the end)." if unfinished else ".") + "\n")

    md.append(f"""## Definitions

- **Score**: the final evaluation in each run's eval.json (student and teacher evaluated with the same protocol and
  seeds): mean return; Atari human-normalized; Procgen on unseen test levels (and, in separate rows, training levels).
- **Fraction of the teacher** per (environment, seed): student score / teacher score of the same run. For an
  imperfect teacher (noise > 0) the denominator is the *original* teacher's score (paper Table 2), from a noise-0
  run of the same teacher and seed, else from the teacher run's own eval.json. An (environment, seed) whose
  reference teacher score is <= 0 has no meaningful fraction and is left out (listed below).
- **Aggregate** over all (environment, seed) pairs of a domain: the geometric interquartile mean, exp of the
  25%-trimmed mean of log(fraction) (floor(n/4) values cut at each end). Fractions <= {eps:g} (a student at or
  below zero) are clipped to {eps:g} before the log; cells where that happened are marked †. 95% CI: percentile
  interval of a stratified bootstrap ({n_resamples} resamples, seed {seed}) that resamples seeds with replacement
  within each environment. Cells: `IQM [CI] (runs)`.
- **P(X > Y)**: the probability that method X beats method Y on a random environment (uniform) and a random seed of
  each: for each environment the fraction of all (X seed, Y seed) pairs with X's fraction of the teacher above Y's
  (ties count 1/2; the Mann-Whitney U over n_X n_Y), averaged over the environments where both were run. 95% CI:
  stratified bootstrap resampling each method's seeds within each environment. 0.5 = no difference; a CI above
  0.5 means X is better beyond seed noise (at this number of seeds).
""")

    # ---- fractions: Table 1 (+ Table 7's ppo column), Table 2
    frac_cells = defaultdict(lambda: defaultdict(list))  # (label, noise, arch, method) -> env -> fractions
    corrupted = defaultdict(lambda: defaultdict(dict))  # (label, noise) -> env -> {seed: corrupted / original}
    for r in results:
        numbers["runs"].append({"run_dir": rel(r.run_dir), "env_id": r.env_id, "method": r.label, "arch": r.arch,
                                "noise": r.noise, "seed": r.seed, "teacher": rel(r.teacher_ref),
                                "event_files": [rel(p) for p in event_files(r.run_dir)], "scores": r.scores,
                                "fractions": r.fractions, "original_teacher": r.clean_teacher, "notes": r.notes})
        for label, f in r.fractions.items():
            if f is None:
                numbers["excluded"].append({"run_dir": rel(r.run_dir), "measure": label, "why": r.notes[label]})
                continue
            frac_cells[(label, r.noise, r.arch, r.label)][r.env_id].append(f)
            if r.noise > 0 and r.scores[label][1] is not None and r.clean_teacher.get(label):
                corrupted[(label, r.noise)][r.env_id][r.seed] = r.scores[label][1] / r.clean_teacher[label]
    aggs = {k: aggregate(v, n_resamples, seed, eps) for k, v in frac_cells.items()}
    for (label, noise, arch, method), a in sorted(aggs.items(), key=lambda kv: str(kv[0])):
        numbers["fractions"].append({"measure": label, "noise": noise, "arch": arch, "method": method, **a})

    md.append("## Fraction of the teacher (paper Table 1; the `ppo` column is Table 7)\n")
    clean_keys = [k for k in aggs if k[1] == 0]
    if not clean_keys:
        md.append("No finished distillation run with an exact teacher yet.\n")
    for arch in sort_archs({k[2] for k in clean_keys}):
        methods = sorted({k[3] for k in clean_keys if k[2] == arch}, key=method_order)
        labels = sort_labels({k[0] for k in clean_keys if k[2] == arch})
        md.append(f"**{arch} student**\n")
        md.append(md_table(["domain"] + methods, [[lab] + [cell(aggs.get((lab, 0, arch, m))) for m in methods]
                                                  for lab in labels]))
    fig_fractions = plot_fractions({(k[0], k[2], k[3]): v for k, v in aggs.items() if k[1] == 0}, out_dir)
    if fig_fractions:
        numbers["figures"].append(rel(fig_fractions))
        md.append(f"\n![fractions of the teacher]({os.path.basename(fig_fractions)})\n")

    noisy_keys = [k for k in aggs if k[1] > 0]
    if noisy_keys:
        md.append("## Imperfect teachers (paper Table 2): fraction of the *original* teacher\n")
        for noise in sorted({k[1] for k in noisy_keys}):
            keys = [k for k in noisy_keys if k[1] == noise]
            methods = sorted({k[3] for k in keys}, key=method_order)
            rows = []
            for lab in sort_labels({k[0] for k in keys}):
                groups = {env: list(by_seed.values()) for env, by_seed in corrupted[(lab, noise)].items()}
                corr = aggregate(groups, n_resamples, seed, eps) if groups else None
                for arch in sort_archs({k[2] for k in keys if k[0] == lab}):
                    rows.append([lab, arch, cell(corr)] + [cell(aggs.get((lab, noise, arch, m))) for m in methods])
                if corr:
                    numbers["imperfect_teachers"].append({"measure": lab, "noise": noise, "corrupted_teacher": corr})
            md.append(f"**teacher noise std {noise:g}**\n")
            md.append(md_table(["domain", "student", "corrupted teacher"] + methods, rows))

    # ---- probability of improvement
    poi_rows = []
    for (label, noise, arch, method) in sorted(frac_cells, key=str):
        if not method.startswith("ppd"):
            continue
        for base in BASELINES:
            other = frac_cells.get((label, noise, arch, base))
            if not other:
                continue
            envs = sorted(set(frac_cells[(label, noise, arch, method)]) & set(other))
            if not envs:
                continue
            x = [frac_cells[(label, noise, arch, method)][e] for e in envs]
            y = [other[e] for e in envs]
            p, lo, hi = stats.probability_of_improvement_ci(x, y, n_resamples, seed)
            numbers["probability_of_improvement"].append(
                {"measure": label, "noise": noise, "arch": arch, "x": method, "y": base, "p": p, "ci": [lo, hi],
                 "environments": len(envs), "runs_x": sum(map(len, x)), "runs_y": sum(map(len, y))})
            poi_rows.append([label, f"{noise:g}", arch, f"{method} > {base}", f"{p:.2f} [{lo:.2f}, {hi:.2f}]",
                             len(envs), f"{sum(map(len, x))} vs {sum(map(len, y))}"])
    md.append("## Does PPD beat the baselines? P(PPD > baseline)\n")
    md.append(md_table(["domain", "noise", "student", "comparison", "P [95% CI]", "envs", "runs"], poi_rows)
              if poi_rows else "No environment has runs of PPD and of a baseline yet.\n")

    # ---- per environment: Table 5 (and Table 6's scores for imperfect teachers)
    md.append("## Scores per environment (paper Table 5): mean ± std over seeds (runs)\n")
    md.append("Student scores in the domain's unit (Atari: human-normalized); std with ddof=1. `teacher` is the "
              "original teacher, `corrupted teacher` the noisy one the students learned from.\n")
    for noise in sorted({r.noise for r in results}):
        sub = [r for r in results if r.noise == noise]
        columns = sorted({(r.arch, r.label) for r in sub},
                         key=lambda c: (ARCH_ORDER.index(c[0]) if c[0] in ARCH_ORDER else 9, c[0], method_order(c[1])))
        rows = []
        for lab in sort_labels({lab for r in sub for lab in r.scores}):
            for env_id in sorted({r.env_id for r in sub if lab in r.scores}):
                runs = [r for r in sub if r.env_id == env_id and lab in r.scores]
                teacher = {r.seed: r.clean_teacher.get(lab) for r in runs if r.clean_teacher.get(lab) is not None}
                row = [lab, env_id, mean_std_cell(list(teacher.values()))]
                if noise > 0:
                    noisy = {r.seed: r.scores[lab][1] for r in runs if r.scores[lab][1] is not None}
                    row.append(mean_std_cell(list(noisy.values())))
                for arch, method in columns:
                    values = [r.scores[lab][0] for r in runs if r.arch == arch and r.label == method
                              and r.scores[lab][0] is not None]
                    row.append(mean_std_cell(values))
                    if values:
                        m, s = stats.mean_std(values)
                        numbers["per_environment"].append({"measure": lab, "env_id": env_id, "noise": noise,
                                                           "arch": arch, "method": method, "mean": m, "std": s,
                                                           "runs": len(values)})
                rows.append(row)
        md.append(f"**teacher noise std {noise:g}**\n")
        header = ["domain", "env", "teacher"] + (["corrupted teacher"] if noise > 0 else [])
        md.append(md_table(header + [f"{a} {m}" for a, m in columns], rows))

    # ---- curves
    md.append("## Training curves (paper Figure 1)\n")
    curve_data = load_curves(results) if curves else {}
    figs = plot_curves(results, curve_data, out_dir, min(n_resamples, 1000), seed)
    numbers["figures"] += [rel(p) for p in figs]
    if figs:
        md.append("Training episodes' returns (tensorboard `charts/episodic_return`), divided by the teacher's "
                  "evaluation return, interquartile mean over environments and seeds with a 95% stratified-bootstrap "
                  "band; dashed: the teacher. Caveats: teacher-distill's training episodes are the *teacher's* (it "
                  "acts); Atari training episodes end at a life loss while evaluation plays full games; Procgen trains "
                  "on training levels (normalized by the teacher's score there).\n")
        for path in figs:
            md.append(f"![{os.path.basename(path)}]({os.path.basename(path)})\n")
    else:
        md.append("No training curves found.\n")

    # ---- how fast each method gets to the teacher, per environment
    md.append("## How fast each method gets to the teacher (Figure 1's question, per environment)\n")
    rows, env_figs = steps_to_teacher(results, teachers, curve_data, out_dir)
    if rows:
        md.append("Per environment, one panel per student size and one line per method: the training episodes' "
                  "returns (`charts/episodic_return`, averaged in the same 30 bins as the curves above) divided by the "
                  "teacher's deterministic evaluation return (`mean_return` of the teacher run's eval.json, else the "
                  "distillation run's own evaluation of its teacher), against the distillation run's environment "
                  "steps; line: mean over seeds, band: min-max over seeds; dashed: the teacher. Exact teachers "
                  "(noise 0) only. The tables give the first step (centre of the first bin, so to one bin's "
                  "resolution) at which the seed mean reaches 0.5, 0.8 and 0.9 of the teacher; `runs`: the seeds "
                  "with training events (fewer while a grid is still running). Caveats: training returns come from "
                  "*sampled* actions (the stochastic policy) while the teacher's score is deterministic, so a curve "
                  "can stay below 1.0 while the deterministic student matches the teacher; ‡ teacher-distill "
                  "(dotted) shows the *teacher's* training episodes (the teacher acts in that baseline), not the "
                  "student's.\n")
        for env_id in sorted(env_figs, key=lambda e: (domain_of(e), e)):
            name = os.path.basename(env_figs[env_id])
            numbers["figures"].append(rel(env_figs[env_id]))
            md.append(f"**{env_id}**\n")
            md.append(f"![{name}]({name})\n")
            table = []
            for row in [x for x in rows if x["env_id"] == env_id]:
                method = row["method"] + (" ‡" if row["curve_of"] == "teacher" else "")
                table.append([row["arch"], method, row["runs"]]
                             + [f"{v:,}" if v is not None else "not reached" for v in row["reached"].values()]
                             + [f"{row['last_bin_fraction']:.2f}"])
            md.append(md_table(["student", "method", "runs"] + [f"{t:g} of teacher" for t in THRESHOLDS]
                               + ["last bin"], table))
        for row in rows:
            numbers["steps_to_teacher"].append({**row, "run_dirs": [rel(p) for p in row["run_dirs"]],
                                                "figure": rel(env_figs[row["env_id"]])})
    else:
        md.append("No training curves of exact-teacher runs with a positive teacher score found.\n")

    if numbers["excluded"]:
        md.append("## Left out of the aggregates\n")
        md.append(md_table(["run", "measure", "why"], [[x["run_dir"], x["measure"], x["why"]]
                                                       for x in numbers["excluded"]]))
    if unfinished:
        md.append("## Planned runs without an eval.json\n")
        md.append(", ".join(f"`{n}`" for n in unfinished[:50]) + (" ..." if len(unfinished) > 50 else "") + "\n")
        numbers["unfinished"] = unfinished

    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump(numbers, f, indent=2, default=str)
    path = os.path.join(out_dir, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(md))
    return path


def runs_dir_of(path: str) -> str:
    """A folder as is; a grid file: its output_dir (relative to the repository root)."""
    if os.path.isdir(path):
        return path
    with open(path, "rb") as f:
        return os.path.join(REPO, tomllib.load(f).get("output_dir", "runs/grid"))


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", help="folder of runs (a grid's output_dir), or the grid file (TOML)")
    parser.add_argument("--output", help="folder of the report (default: <runs>/report)")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    parser.add_argument("--eps", type=float, default=stats.EPS,
                        help="fractions below this are clipped to it before the log")
    parser.add_argument("--no-curves", action="store_true", help="skip the training curves (no tensorboard reading)")
    args = parser.parse_args(argv)
    runs_dir = runs_dir_of(args.path)
    if not os.path.isdir(runs_dir):
        print(f"error: no folder of runs at {runs_dir}", file=sys.stderr)
        return 2
    path = write_report(runs_dir, args.output, args.resamples, args.seed, args.eps, not args.no_curves)
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
