"""Ship a trained teacher: copy its model.pt to teachers/<env>.pt, its eval.json to results/, and plot its curve.

    python benchmarks/teacher_report.py runs/teacher-Hopper-v5
writes teachers/Hopper-v5.pt, results/teacher-Hopper-v5.eval.json and results/teacher-Hopper-v5.png.
"""

import json
import os
import shutil
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(run_dir: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    evaluation = json.load(open(os.path.join(run_dir, "eval.json")))
    name = evaluation["env_id"].replace("/", "-").replace(":", "-")
    model = torch.load(os.path.join(run_dir, "model.pt"), weights_only=True)
    assert "train_state" not in model and model["eval"]["mean_return"] == evaluation["mean_return"]
    os.makedirs(os.path.join(REPO, "teachers"), exist_ok=True)
    os.makedirs(os.path.join(REPO, "results"), exist_ok=True)
    shutil.copyfile(os.path.join(run_dir, "model.pt"), os.path.join(REPO, "teachers", f"{name}.pt"))
    shutil.copyfile(os.path.join(run_dir, "eval.json"), os.path.join(REPO, "results", f"teacher-{name}.eval.json"))

    acc = EventAccumulator(run_dir, size_guidance={"scalars": 0})
    acc.Reload()
    events = acc.Scalars("charts/episodic_return")
    steps, values = np.array([e.step for e in events]), np.array([e.value for e in events])
    window = max(1, len(values) // 50)
    smooth = np.convolve(values, np.ones(window) / window, mode="valid")
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, values, ".", ms=2, alpha=0.3, label="training episodes")
    ax.plot(steps[window - 1:], smooth, label=f"moving mean of {window}")
    ax.axhline(evaluation["mean_return"], color="k", ls="--", lw=1,
               label=f"final evaluation {evaluation['mean_return']:.0f} ({evaluation['episodes']} episodes)")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("episode return")
    ax.set_title(f"PPO teacher, {evaluation['env_id']} ({evaluation['arch']} network)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(REPO, "results", f"teacher-{name}.png"), dpi=120)
    print(f"teachers/{name}.pt: mean evaluation return {evaluation['mean_return']:.1f} after {evaluation['global_step']} steps "
          f"({evaluation['command']})")


if __name__ == "__main__":
    main(sys.argv[1])
