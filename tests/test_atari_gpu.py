"""benchmarks/atari_gpu.py end to end on the CPU with a toy budget: the teacher is cut by the time limit and
evaluated from its checkpoint, the three students train and are evaluated, and the JSON, markdown and PNG report
them; a second invocation skips every finished stage. Plus the teacher's early-stop rule on synthetic returns."""

import json
import math
import os
import shutil
import sys

from conftest import REPO, run_script

sys.path.insert(0, os.path.join(REPO, "benchmarks"))

import atari_gpu  # noqa: E402

OUT = os.path.join("runs", "test_atari_gpu")
TOY = ["--minutes", "0.1", "--num-envs", "2", "--num-steps", "5", "--student-steps", "10", "--eval-episodes", "1",
       "--eval-max-frames", "200", "--profile-steps", "1", "--output-dir", OUT]
STAGES = ["teacher", "ppd-larger", "ppd-smaller", "sd-larger"]


def test_steady_rule():
    assert not atari_gpu.steady([21.0] * 19, window=20, threshold=18)  # too few games yet
    assert atari_gpu.steady([-21.0] * 50 + [18.0] * 20, window=20, threshold=18)
    assert not atari_gpu.steady([-21.0] * 50 + [18.0] * 19 + [17.0], window=20, threshold=18)
    assert atari_gpu.steady([-21.0] * 50 + [21.0] * 10 + [15.0] * 10, window=20, threshold=18)  # mean 18
    assert not atari_gpu.steady([21.0] * 40, window=0, threshold=18)  # window 0: no early stop


def test_first_student_share():
    names = ["ppd-larger", "ppd-smaller", "sd-larger"]
    prof = {"stages": {"ppd-larger": {"modeled_sps": 1000.0}, "ppd-smaller": {"modeled_sps": 4000.0},
                       "sd-larger": {"modeled_sps": 2000.0}}}
    share = atari_gpu.first_student_share(prof, names)
    assert math.isclose(share, 1 / 1.75)  # 1 s of 1 + 0.25 + 0.5 per 1000 steps: all three end together
    assert math.isclose(atari_gpu.first_student_share(None, names), 1 / 3)  # no profile: equal shares


def test_toy_end_to_end_and_rerun():
    shutil.rmtree(os.path.join(REPO, OUT), ignore_errors=True)
    result = run_script("benchmarks/atari_gpu.py", *TOY, timeout=240)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    out = os.path.join(REPO, OUT)
    for line in ("profile teacher: env", "profile ppd-larger: env", "teacher: stopping at step"):
        assert line in result.stdout, result.stdout[-2000:]
    assert "steps/s" in result.stdout

    results = json.load(open(os.path.join(out, "atari_gpu.json")))
    for key in ("command", "commit", "machine", "device", "models", "profile", "paper_table5", "toy_budget"):
        assert key in results
    assert results["device"] == "cpu" and results["toy_budget"] is True
    assert results["paper_table5"]["pong_row"] == "pong 1.17 0.98 1.13 1.14 1.16 1.17 1.17 1.17 1.17 1.17"
    models = results["models"]
    assert sorted(models) == sorted(STAGES)
    assert models["teacher"]["stopped_early"] == "time limit" and len(models["teacher"]["commands"]) == 2
    assert "--resume" in models["teacher"]["commands"][1]
    for name in STAGES:
        m = models[name]
        assert m["global_step"] >= 10 and m["eval"]["episodes"] == 1 == len(m["eval"]["returns"])
        assert os.path.exists(os.path.join(REPO, m["run_dir"], "model.pt"))
        for number in (m["eval"]["mean_return"], m["human_normalized"], m["run_sps"], m["train_seconds"]):
            assert math.isfinite(number)
        assert math.isclose(m["human_normalized"], (m["eval"]["mean_return"] + 20.7) / 35.3)
    assert [models[n]["global_step"] for n in STAGES[1:]] == [10, 10, 10]  # equal student budgets
    assert models["ppd-smaller"]["paper_table5"] == {"column": "smaller ppd", "human_normalized": 1.14}
    for stage in results["profile"]["stages"].values():
        assert abs(stage["env_share"] + stage["forward_share"] + stage["backward_share"] - 1) < 1e-9

    md = open(os.path.join(out, "atari_gpu.md")).read()
    assert "Toy budget: not evidence" in md
    assert "    pong 1.17 0.98 1.13 1.14 1.16 1.17 1.17 1.17 1.17 1.17" in md
    rows = [line for line in md.splitlines() if line.startswith("| ") and "(" in line.split("|")[1]]
    assert [r.split("|")[1].strip() for r in rows] == ["PPO teacher (teacher)", "PPD (ppd-larger)", "PPD (ppd-smaller)",
                                                        "student-distill (sd-larger)"]
    assert all(r.count("|") == 11 for r in rows)
    with open(os.path.join(out, "atari_gpu.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"

    again = run_script("benchmarks/atari_gpu.py", *TOY, timeout=120)
    assert again.returncode == 0, again.stderr[-2000:]
    for name in STAGES:
        assert f"{name}: eval.json exists, skipped" in again.stdout
    assert "python train_teacher.py" not in again.stdout
    assert json.load(open(os.path.join(out, "atari_gpu.json")))["skipped_stages"] == STAGES
    shutil.rmtree(out)

