"""experiments/: the statistics behind the paper's tables (stats.py) against hand-computed values, the grid's
expansion into script invocations (grid.py), a tiny grid run end to end through submitit's local executor,
interrupted and started again, and the report (report.py) it produces."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO, script_env
from experiments import grid, report, stats

GRID = os.path.join(REPO, "experiments", "grid.py")


# ----------------------------------------------------------------------------------------------------
# stats.py
# ----------------------------------------------------------------------------------------------------
def test_trimmed_mean_cuts_a_floor_quarter_at_each_end():
    assert stats.trimmed_mean([7, 1, 100, 3, 4, 5, 6, 2]) == pytest.approx(np.mean([3, 4, 5, 6]))  # n=8: 2 cut per side
    assert stats.trimmed_mean([10, 1, 2, 3, -50]) == pytest.approx(2.0)  # n=5: 1 cut per side
    assert stats.trimmed_mean([1, 2, 9]) == pytest.approx(4.0)  # n=3: nothing cut
    assert stats.iqm([[1, 2, 3, 40], [0, 0, 8, 8]]).tolist() == pytest.approx([2.5, 4.0])  # along the last axis


def test_geometric_iqm_is_exp_of_the_trimmed_mean_of_the_logs():
    x = np.exp(np.array([5.0, 0, 7, 2, 1, 6, 3, 4]))  # logs 0..7: the middle four are 2, 3, 4, 5
    assert stats.geometric_iqm(x) == pytest.approx(np.exp(3.5))
    assert stats.geometric_iqm([0.5, 4, 1, 2]) == pytest.approx(np.sqrt(2))  # exp(mean(log 1, log 2))
    # non-positive fractions are clipped to eps before the log: finite, and trimmed away when few
    assert stats.geometric_iqm([-3, 0, 1, 1, 1, 1, 1, 1]) == pytest.approx(1.0)
    assert stats.geometric_iqm([-1, 0, 0.0, 2], eps=1e-3) == pytest.approx(1e-3)  # middle two both clipped
    assert stats.geometric_iqm([0.5, 0.5, 0.5], eps=0.1) == pytest.approx(0.5)


def test_stratified_resamples_keep_the_number_of_seeds_of_every_environment():
    groups = [np.array([1.0, 2, 3]), np.array([100.0, 101, 102, 103, 104]), np.array([1000.0, 1001])]
    samples = stats.stratified_resamples(groups, 400, seed=0)
    assert samples.shape == (400, 10)
    for row in samples:
        assert [np.isin(row, g).sum() for g in groups] == [3, 5, 2]
    assert len({tuple(row) for row in samples}) > 100  # it does resample
    assert set(samples[:, 3:8].ravel()) == set(groups[1])
    np.testing.assert_array_equal(samples, stats.stratified_resamples(groups, 400, seed=0))  # seeded


def test_bootstrap_ci_contains_the_estimate_and_narrows_with_more_seeds():
    rng = np.random.default_rng(1)

    def fractions(seeds):
        return [np.exp(rng.normal(mu, 0.3, seeds)) for mu in (-0.2, 0.0, 0.1, 0.3)]

    point, lo, hi = stats.stratified_bootstrap(fractions(3), stats.geometric_iqm, 2000, seed=0)
    assert lo <= point <= hi and lo < hi
    point30, lo30, hi30 = stats.stratified_bootstrap(fractions(30), stats.geometric_iqm, 2000, seed=0)
    assert lo30 <= point30 <= hi30
    assert hi30 - lo30 < 0.5 * (hi - lo)
    # curves: one interval per point
    mid, low, high = stats.stratified_bootstrap([np.ones((3, 5)), 2 * np.ones((2, 5))], stats.iqm, 100)
    assert mid.shape == low.shape == high.shape == (5,)


def test_probability_of_improvement_hand_computed_within_each_environment():
    # env A: 3>1, 3<5, 4>1, 4<5 -> 1/2; env B: 2>1, 2=2, 2>1, 2=2 -> (1 + .5 + 1 + .5) / 4 = 3/4
    x, y = [[3, 4], [2, 2]], [[1, 5], [1, 2]]
    assert stats.probability_of_improvement(x, y) == pytest.approx(0.625)
    assert stats.probability_of_improvement(y, x) == pytest.approx(0.375)  # P(X>Y) + P(Y>X) = 1
    # environments are not pooled: X wins in each, though pooled pairs would let Y win (50 > 1)
    assert stats.probability_of_improvement([[1], [100]], [[0], [50]]) == pytest.approx(1.0)
    p, lo, hi = stats.probability_of_improvement_ci([[1.0, 1.2, 0.9], [2, 3]], [[0.5, 0.6], [1, 1.5]], 500)
    assert (p, lo, hi) == (1.0, 1.0, 1.0)
    rng = np.random.default_rng(0)
    xs, ys = [rng.normal(0.3, 1, 5) for _ in range(4)], [rng.normal(0, 1, 5) for _ in range(4)]
    p, lo, hi = stats.probability_of_improvement_ci(xs, ys, 1000, seed=0)
    assert lo <= p <= hi and 0 < lo < hi < 1


def test_first_crossing_is_the_first_point_at_or_above_the_level():
    assert stats.first_crossing([10, 20, 30, 40], [0.1, 0.6, 0.4, 0.9], 0.5) == 20
    assert stats.first_crossing([10, 20, 30], [0.1, 0.5, 0.9], 0.5) == 20  # reaching counts
    assert stats.first_crossing([10, 20, 30], [0.1, 0.2, 0.3], 0.5) is None


def test_curve_on_grid_bins_and_fills_empty_bins():
    edges = np.array([0, 10, 20, 30, 40.0])
    got = stats.curve_on_grid([1, 2, 35, 36], [1, 3, 10, 20], edges)
    np.testing.assert_allclose(got, [2, 2 + (15 - 2) / 3, 2 + 2 * (15 - 2) / 3, 15])


# ----------------------------------------------------------------------------------------------------
# grid.py: from the TOML file to script invocations
# ----------------------------------------------------------------------------------------------------
def write(path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_expand_routes_each_domain_and_method_to_its_script(tmp_path):
    cfg = grid.load_config(write(tmp_path / "g.toml", """
[[environments]]
env_id = "CartPole-v1"
teacher_timesteps = 1000
[[environments]]
env_id = "PongNoFrameskip-v4"
[[environments]]
env_id = "ALE/Breakout-v5"
[[environments]]
env_id = "procgen:coinrun"
[distill]
methods = ["ppd", "student-distill", "teacher-distill", "ppo"]
student_archs = ["larger"]
seeds = [3]
distill_coefs = [1.0, 2.0]
teacher_noise_stds = [0.0, 0.05]
total_timesteps = 500
[flags]
"ppd_atari.py" = ["--frame-skip", "4"]
"""))
    runs = grid.expand(cfg)
    assert runs == grid.expand(cfg)  # deterministic
    teachers = [r for r in runs if r.stage == "teacher"]
    assert [(r.name, r.script) for r in teachers] == [
        ("CartPole-v1__s3", "train_teacher.py"), ("PongNoFrameskip-v4__s3", "train_teacher.py"),
        ("ALE-Breakout-v5__s3", "train_teacher.py"), ("procgen-coinrun__s3", "train_teacher.py")]
    assert "--total-timesteps" in teachers[0].flags and "--total-timesteps" not in teachers[1].flags
    distill = {r.name: r for r in runs if r.stage == "distill"}
    # per env: ppd 2 lambdas x 2 noises, ppo once (no lambda, no noise), each baseline 2 noises
    assert len(distill) == 4 * (4 + 1 + 2 + 2)
    scripts = {env: {r.method: r.script for r in distill.values() if r.env_id == env} for env in cfg_envs(cfg)}
    assert scripts["CartPole-v1"] == {"ppd": "ppd_mujoco.py", "ppo": "ppd_mujoco.py",
                                      "student-distill": "student_distill.py", "teacher-distill": "teacher_distill.py"}
    assert scripts["PongNoFrameskip-v4"]["ppd"] == scripts["ALE/Breakout-v5"]["ppo"] == "ppd_atari.py"
    assert scripts["procgen:coinrun"]["ppd"] == "ppd_procgen.py"
    assert scripts["procgen:coinrun"]["teacher-distill"] == "teacher_distill.py"
    ppd = distill["PongNoFrameskip-v4__ppd__larger__lam2__noise0.05__s3"]
    flags = list(ppd.flags)
    assert flags[flags.index("--distill-coef") + 1] == "2" and flags[flags.index("--teacher-noise-std") + 1] == "0.05"
    assert flags[-2:] == ["--frame-skip", "4"] and ppd.teacher == "PongNoFrameskip-v4__s3"
    ppo = list(distill["procgen-coinrun__ppo__larger__s3"].flags)
    assert ppo[ppo.index("--distill-coef") + 1] == "0" and "--teacher-noise-std" not in ppo
    sd = list(distill["ALE-Breakout-v5__student-distill__larger__noise0.05__s3"].flags)
    assert "--distill-coef" not in sd and "--frame-skip" not in sd
    resolved = grid.resolve_flags(ppd, "/out")
    assert resolved[resolved.index("--teacher") + 1] == "/out/teachers/PongNoFrameskip-v4__s3/model.pt"


def cfg_envs(cfg):
    return [e["env_id"] for e in cfg["environments"]]


def test_example_grids_expand(capsys):
    assert grid.main([os.path.join(REPO, "experiments", "mujoco_cpu.toml"), "--dry-run"]) == 0
    assert "138 runs: 3 teachers, 135 distillations" in capsys.readouterr().out  # [teacher] seed = 1: shared
    for name, count in (("paper_slurm.toml", None), ("cartpole_tiny.toml", None),
                        ("hopper_udr.toml", "13 runs: 1 teachers, 12 distillations"),
                        ("hopper_adaptive.toml", "7 runs: 1 teachers, 6 distillations")):
        assert grid.main([os.path.join(REPO, "experiments", name), "--dry-run"]) == 0
        assert count is None or count in capsys.readouterr().out


def test_shared_teacher_seed_gives_one_teacher_per_environment_for_every_distillation_seed(tmp_path):
    cfg = grid.load_config(os.path.join(REPO, "experiments", "mujoco_cpu.toml"))
    runs = grid.expand(cfg)
    teachers = [r for r in runs if r.stage == "teacher"]
    assert sorted(r.name for r in teachers) == ["HalfCheetah-v5__s1", "Hopper-v5__s1", "Swimmer-v5__s1"]
    distills = [r for r in runs if r.stage == "distill"]
    assert {r.seed for r in distills} == {1, 2, 3}
    assert {r.teacher for r in distills if r.env_id == "Hopper-v5"} == {"Hopper-v5__s1"}
    del cfg["teacher"]["seed"]  # without it: one teacher per environment and seed
    assert len([r for r in grid.expand(cfg) if r.stage == "teacher"]) == 9
    bad = tmp_path / "bad.toml"
    bad.write_text("[[environments]]\nenv_id = 'CartPole-v1'\n[teacher]\nseed = '1'\n")
    with pytest.raises(grid.ConfigError, match="seed must be an integer"):
        grid.load_config(str(bad))


@pytest.mark.parametrize("text, extra, message", [
    ("[[environments]]\nenv_id = 'CartPole-v1'\n[distill]\nmethod = ['ppd']\n", [], "unknown key(s) method"),
    ("[[environments]]\nenv_id = 'CartPole-v1'\n[distill]\nmethods = ['pdd']\n", [], "['pdd'] not among"),
    ("[[environments]]\nenv_id = 'CartPole-v1'\n[flags]\n'ppd.py' = []\n", [], "not one of"),
    ("[[environments]]\nenv_id = 'CartPole-v1'\n", ["--executor-param", "slurm_partitio=gpu"], "slurm_partitio"),
    ("[distill]\nmethods = ['ppd']\n", [], "no [[environments]]"),
])
def test_bad_grid_is_refused_in_one_line_before_anything_runs(tmp_path, capsys, text, extra, message):
    assert grid.main([write(tmp_path / "g.toml", text), "--output-dir", str(tmp_path / "out"), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err
    assert not (tmp_path / "out").exists()


def test_run_state_and_resume_command(tmp_path):
    run_dir = tmp_path / "r"
    assert grid.run_state(str(run_dir)) == "fresh"
    run_dir.mkdir()
    assert grid.run_state(str(run_dir)) == "restart"
    (run_dir / "checkpoint.pt").write_bytes(b"x")
    assert grid.run_state(str(run_dir)) == "resume"
    cmd = grid.build_command("ppd_mujoco.py", ["--seed", "1"], str(run_dir), "resume")
    assert cmd[-2:] == ["--resume", str(run_dir)] and "--seed" in cmd
    (run_dir / "eval.json").write_text("")  # cut short while being written: not finished
    assert grid.run_state(str(run_dir)) == "restart"
    (run_dir / "eval.json").write_text("{}")
    assert grid.run_state(str(run_dir)) == "finished"


# ----------------------------------------------------------------------------------------------------
# A tiny grid end to end: submitit's local executor, killed halfway, started again; the report
# ----------------------------------------------------------------------------------------------------
TINY = """
output_dir = "runs/unused"
threads_per_job = 1

[[environments]]
env_id = "CartPole-v1"
teacher_timesteps = 384

[teacher]
eval_episodes = 2

[distill]
seeds = [1, 2]
student_archs = ["same"]
total_timesteps = 128
eval_episodes = 2

{subgrids}
[flags]
"train_teacher.py" = ["--num-envs", "2", "--num-steps", "64", "--minibatch-size", "64"]
"ppd_mujoco.py" = ["--num-envs", "2", "--num-steps", "32", "--minibatch-size", "32", "--checkpoint-every", "64"]
"student_distill.py" = ["--num-envs", "2"]

[executor]              # the SLURM parameters are checked by submitit here and used on a cluster only
timeout_min = 30
cpus_per_task = 1
mem_gb = 2
slurm_partition = "debug"
slurm_additional_parameters = {{ requeue = true }}
[executor.teacher]
timeout_min = 20
"""
HAS_STUDENT_DISTILL = os.path.exists(os.path.join(REPO, "student_distill.py"))


def tiny_config(bad_env: bool = False, **replace) -> str:
    """The tiny grid: PPD and PPO on seeds 1 and 2, student-distill on seed 1 (when the script exists); with
    bad_env, also PPD on an env id that does not exist (its teacher fails)."""
    only = '\nenvironments = ["CartPole-v1"]' if bad_env else ""
    subgrids = f'[[distill.grid]]\nmethods = ["ppd", "ppo"]{only}\n'
    if HAS_STUDENT_DISTILL:
        subgrids += f'[[distill.grid]]\nmethods = ["student-distill"]\nseeds = [1]{only}\n'
    if bad_env:
        subgrids += '[[distill.grid]]\nmethods = ["ppd"]\nseeds = [1]\nenvironments = ["NoSuchEnv-v0"]\n'
    text = TINY.format(subgrids=subgrids)
    for old, new in replace.items():
        text = text.replace(old, new)
    if bad_env:
        text += '\n[[environments]]\nenv_id = "NoSuchEnv-v0"\nteacher_timesteps = 384\n'
    return text


def alive_in_group(pgid: int) -> list:
    """Processes of a process group that have not exited (zombies do not count)."""
    alive = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(pid))
    return alive


def eval_files(out: str) -> dict:
    found = {}
    for stage in ("teachers", "distill"):
        folder = os.path.join(out, stage)
        for name in os.listdir(folder) if os.path.isdir(folder) else []:
            path = os.path.join(folder, name, "eval.json")
            if os.path.exists(path):
                found[name] = os.stat(path).st_mtime_ns
    return found


def readable(path: str) -> bool:
    try:
        with open(path) as f:
            json.load(f)
        return True
    except (OSError, ValueError):
        return False


def grid_cmd(config: str, out: str, *extra: str) -> list:
    return [sys.executable, GRID, config, "--executor", "local", "--workers", "2", "--output-dir", out, *extra]


@pytest.fixture(scope="module")
def tiny_grid(tmp_path_factory):
    """Run the tiny grid, kill the runner's whole process group (SIGTERM) once a distillation has finished and
    another one is under way, wait until every process of it has exited, run the grid again to the end (which
    writes the report)."""
    tmp = tmp_path_factory.mktemp("grid")
    config, out = write(tmp / "tiny.toml", tiny_config()), str(tmp / "out")
    n_runs = 2 + 4 + (1 if HAS_STUDENT_DISTILL else 0)
    with open(tmp / "first.log", "w") as log:
        first = subprocess.Popen(grid_cmd(config, out), cwd=REPO, env=script_env(), stdout=log,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 240
    distill = os.path.join(out, "distill")
    while True:  # a distillation finished, and another one started (its run folder exists) but not finished
        names = ([n for n in os.listdir(distill) if os.path.isdir(os.path.join(distill, n))]
                 if os.path.isdir(distill) else [])
        finished = [n for n in names if readable(os.path.join(distill, n, "eval.json"))]
        running = [n for n in names if not os.path.exists(os.path.join(distill, n, "eval.json"))]
        if finished and running:
            break
        assert first.poll() is None, (tmp / "first.log").read_text()
        assert time.time() < deadline, "the grid did not get halfway in time"
        time.sleep(0.1)
    os.killpg(first.pid, signal.SIGTERM)  # the runner and every job it started, as a cluster or Ctrl-C would
    first.wait(30)
    deadline = time.time() + 60
    while alive_in_group(first.pid):  # training scripts write their checkpoint on SIGTERM, then exit
        assert time.time() < deadline, f"processes left: {alive_in_group(first.pid)}"
        time.sleep(0.2)
    before = eval_files(out)
    second = subprocess.run(grid_cmd(config, out), cwd=REPO, env=script_env(), capture_output=True, text=True,
                            timeout=300)
    interrupted = [n for n in running if n not in before]
    return {"config": config, "out": out, "tmp": tmp, "before": before, "after": eval_files(out), "second": second,
            "interrupted": interrupted,
            "first_log": (tmp / "first.log").read_text(), "n_runs": n_runs}


def launched(stdout: str) -> list:
    return re.findall(r"^launch (?:teacher|distill) (\S+) ", stdout, re.M)


def test_interrupted_grid_finishes_without_redoing_finished_runs(tiny_grid):
    second, before, after = tiny_grid["second"], tiny_grid["before"], tiny_grid["after"]
    assert second.returncode == 0, second.stdout + second.stderr
    assert len(after) == tiny_grid["n_runs"]  # every run of the grid has its eval.json
    assert 0 < len([n for n in before if "__s" in n and n.count("__") > 1]) < tiny_grid["n_runs"] - 2  # killed halfway
    for name, mtime in before.items():  # a finished run is never redone
        assert after[name] == mtime, name
    again = launched(second.stdout)
    assert sorted(again) == sorted(set(after) - set(before))
    assert f"{len(before)} already finished, {len(again)} launched ({len(again)} done, 0 failed)" in second.stdout
    assert "launch" in tiny_grid["first_log"]
    for name in after:  # each run's eval.json is the one its grid values ask for
        e = json.load(open(os.path.join(tiny_grid["out"], "teachers" if name.count("__") == 1 else "distill", name,
                                        "eval.json")))
        assert e["env_id"] == "CartPole-v1"
        assert f"--seed {name[-1]}" in e["command"]
        if "__ppo__" in name:
            assert e["method"] == "ppo" and e["distill_coef"] == 0
        elif "__ppd__" in name:
            assert e["method"] == "ppd" and e["distill_coef"] == 1
    # the runs killed mid-way were taken up again: resumed from their checkpoint, or (killed before their first
    # checkpoint) moved aside and started again
    plan = re.search(r"^plan: \d+ distill runs: \d+ finished, (\d+) to resume, (\d+) to restart", second.stdout, re.M)
    assert int(plan.group(1)) + int(plan.group(2)) >= len(tiny_grid["interrupted"]) >= 1
    for name in tiny_grid["interrupted"]:
        log = open(os.path.join(tiny_grid["out"], "distill", name + ".log")).read()
        assert log.count("\n=== ") == 2
        if "(resume): " in log:
            assert re.search(r"^resuming \S+ at step \d+", log, re.M), log
        else:
            assert "(restart): " in log
            moved = os.listdir(os.path.join(tiny_grid["out"], "distill"))
            assert any(n.startswith(name + ".incomplete-") for n in moved)


def test_grid_run_again_launches_nothing(tiny_grid):
    third = subprocess.run(grid_cmd(tiny_grid["config"], tiny_grid["out"], "--no-report"), cwd=REPO, env=script_env(),
                           capture_output=True, text=True, timeout=120)
    assert third.returncode == 0, third.stdout + third.stderr
    assert launched(third.stdout) == []
    assert f"{tiny_grid['n_runs']} already finished, 0 launched" in third.stdout
    assert eval_files(tiny_grid["out"]) == tiny_grid["after"]


def test_report_has_the_tables_and_figures(tiny_grid):
    out = tiny_grid["out"]
    assert f"report: {os.path.join(out, 'report', 'report.md')}" in tiny_grid["second"].stdout
    md = open(os.path.join(out, "report", "report.md")).read()
    numbers = json.load(open(os.path.join(out, "report", "report.json")))
    for heading in ("## Fraction of the teacher", "## Does PPD beat the baselines?", "## Scores per environment",
                    "## Training curves", "## Definitions"):
        assert heading in md
    for png in ("curves.png", "curves_per_env.png", "fractions.png", "steps_to_teacher_CartPole-v1.png"):
        with open(os.path.join(out, "report", png), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        assert f"]({png})" in md
    # the fraction table agrees with the eval.json files: geometric IQM of the per-seed fractions
    methods = ["ppd", "ppo"] + (["student-distill"] if HAS_STUDENT_DISTILL else [])
    for method in methods:
        evals = [json.load(open(os.path.join(out, "distill", n, "eval.json")))
                 for n in os.listdir(os.path.join(out, "distill"))
                 if f"__{method}__" in n and os.path.exists(os.path.join(out, "distill", n, "eval.json"))]
        fractions = [e["student"]["mean_return"] / e["teacher"]["mean_return"] for e in evals]
        row = [f for f in numbers["fractions"] if f["method"] == method and f["arch"] == "same" and f["noise"] == 0]
        assert len(row) == 1 and row[0]["measure"] == "mlp" and row[0]["runs"] == len(evals)
        assert row[0]["geometric_iqm"] == pytest.approx(stats.geometric_iqm(fractions))
        assert row[0]["ci"][0] <= row[0]["geometric_iqm"] <= row[0]["ci"][1]
        assert f"{row[0]['geometric_iqm']:.2f}x [" in md
    comparisons = {(p["x"], p["y"]) for p in numbers["probability_of_improvement"]}
    assert ("ppd", "ppo") in comparisons
    assert "## How fast each method gets to the teacher" in md
    assert {(x["method"], x["runs"]) for x in numbers["steps_to_teacher"]} >= {("ppd", 2), ("ppo", 2)}
    text = md + json.dumps(numbers)
    assert os.path.realpath(out) not in text and os.path.abspath(out) not in text  # paths relative to the grid
    assert sorted(r["run_dir"] for r in numbers["runs"]) == sorted(
        os.path.join("distill", n) for n in os.listdir(os.path.join(out, "distill"))
        if os.path.exists(os.path.join(out, "distill", n, "eval.json")))
    for r in numbers["runs"]:  # one teacher per seed in the tiny grid
        assert r["teacher"] == os.path.join("teachers", f"CartPole-v1__s{r['seed']}")
    assert "| mlp | CartPole-v1 |" in md  # Table 5 row
    assert "same ppd" in md and "same ppo" in md


def test_failed_teacher_is_reported_and_its_distillations_skipped(tiny_grid, tmp_path):
    out = str(tmp_path / "out")
    shutil.copytree(tiny_grid["out"], out, ignore=shutil.ignore_patterns(".submitit", "report"))
    redo = "CartPole-v1__ppo__same__s2"  # a good run to do again: the failure must not stop it
    shutil.rmtree(os.path.join(out, "distill", redo))
    config = write(tmp_path / "g.toml", tiny_config(bad_env=True))
    run = subprocess.run(grid_cmd(config, out, "--no-report"), cwd=REPO, env=script_env(), capture_output=True,
                         text=True, timeout=180)
    assert run.returncode == 1, run.stdout + run.stderr
    failed = re.search(r"^FAILED teacher NoSuchEnv-v0__s1 \(exit code 2\); log (\S+); its tail:\n((?:    .*\n)+)",
                       run.stdout, re.M)
    assert failed, run.stdout
    assert "NoSuchEnv-v0" in failed.group(2)  # the script's own error message, from the log's tail
    assert "skip distill NoSuchEnv-v0__ppd__same__lam1__s1: its teacher NoSuchEnv-v0__s1 failed" in run.stdout
    assert sorted(launched(run.stdout)) == sorted(["NoSuchEnv-v0__s1", redo])  # the skipped one never launched
    assert not os.path.exists(os.path.join(out, "distill", "NoSuchEnv-v0__ppd__same__lam1__s1"))
    assert readable(os.path.join(out, "distill", redo, "eval.json"))
    assert "2 launched (1 done, 1 failed), 1 skipped" in run.stdout


def test_changed_grid_is_a_conflict_not_a_silent_mix(tiny_grid, tmp_path):
    out = str(tmp_path / "out")
    shutil.copytree(tiny_grid["out"], out, ignore=shutil.ignore_patterns(".submitit", "report"))
    config = write(tmp_path / "g.toml", tiny_config(**{"total_timesteps = 128": "total_timesteps = 256"}))
    run = subprocess.run(grid_cmd(config, out, "--no-report"), cwd=REPO, env=script_env(), capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 1
    assert launched(run.stdout) == []
    conflicts = re.findall(r"^CONFLICT distill (\S+): ", run.stdout, re.M)
    assert len(conflicts) == tiny_grid["n_runs"] - 2 and "CONFLICT teacher" not in run.stdout


def test_report_fractions_for_imperfect_teachers_use_the_original_teacher(tmp_path):
    """Synthetic eval.json files: a noisy-teacher run is divided by the clean teacher's score of the same teacher
    and seed; a non-positive reference is left out; Atari and Procgen layouts are read."""
    def put(name, e):
        os.makedirs(tmp_path / name)
        (tmp_path / name / "eval.json").write_text(json.dumps(e))

    def summary(x):
        return {"mean_return": x, "std_return": 0.0, "episodes": 1, "returns": [x]}

    for seed, clean, noisy, student in ((1, 100.0, 40.0, 80.0), (2, 200.0, 50.0, 150.0)):
        cmd = f"python ppd_mujoco.py --teacher {tmp_path}/t{seed}/model.pt --seed {seed}"
        put(f"ppd{seed}", {"env_id": "Hopper-v5", "method": "ppd", "student_arch": "larger", "distill_coef": 1.0,
                           "teacher_noise_std": 0.0, "student": summary(clean * 0.9), "teacher": summary(clean),
                           "global_step": 10, "command": cmd})
        put(f"noisy{seed}", {"env_id": "Hopper-v5", "method": "ppd", "student_arch": "larger", "distill_coef": 1.0,
                             "teacher_noise_std": 0.05, "student": summary(student), "teacher": summary(noisy),
                             "global_step": 10, "command": cmd + " --teacher-noise-std 0.05"})
    put("cheetah", {"env_id": "HalfCheetah-v5", "method": "ppd", "student_arch": "larger", "distill_coef": 1.0,
                    "teacher_noise_std": 0.0, "student": summary(5.0), "teacher": summary(-3.0), "global_step": 10,
                    "command": "python ppd_mujoco.py --seed 1"})
    put("atari", {"env_id": "PongNoFrameskip-v4", "method": "student-distill", "student_arch": "same",
                  "teacher_noise_std": 0.0, "student": summary(10.0), "teacher": summary(14.6),
                  "human_normalized": {"student": 0.87, "teacher": 1.0, "random": -20.7, "human": 14.6},
                  "global_step": 10, "command": "python student_distill.py --seed 4"})
    put("procgen", {"env_id": "procgen:coinrun", "method": "ppd", "student_arch": "same", "distill_coef": 1.0,
                    "teacher_noise_std": 0.0, "global_step": 10, "command": "python ppd_procgen.py --seed 1",
                    "test_levels": {"student": summary(6.0), "teacher": summary(8.0)},
                    "train_levels": {"student": summary(9.0), "teacher": summary(9.0)}})
    path = report.write_report(str(tmp_path), n_resamples=200, curves=False)
    numbers = json.load(open(os.path.join(tmp_path, "report", "report.json")))
    by_key = {(f["measure"], f["noise"], f["method"]): f for f in numbers["fractions"]}
    assert by_key[("mujoco", 0.05, "ppd")]["geometric_iqm"] == pytest.approx(np.sqrt(0.8 * 0.75))  # 80/100, 150/200
    assert by_key[("mujoco", 0.0, "ppd")]["geometric_iqm"] == pytest.approx(0.9)
    assert by_key[("mujoco", 0.0, "ppd")]["environments"] == 1  # HalfCheetah left out: its teacher scored <= 0
    assert by_key[("atari", 0.0, "student-distill")]["geometric_iqm"] == pytest.approx(0.87)
    assert by_key[("procgen (test)", 0.0, "ppd")]["geometric_iqm"] == pytest.approx(0.75)
    assert by_key[("procgen (train)", 0.0, "ppd")]["geometric_iqm"] == pytest.approx(1.0)
    corrupted = numbers["imperfect_teachers"][0]
    assert corrupted["corrupted_teacher"]["geometric_iqm"] == pytest.approx(np.sqrt(0.4 * 0.25))
    assert [x["why"] for x in numbers["excluded"]] == ["reference teacher score -3 <= 0"]
    md = open(path).read()
    assert "## Imperfect teachers" in md and "## Left out of the aggregates" in md


def test_report_steps_to_teacher_and_relative_paths(tmp_path):
    """A fake grid folder with tensorboard events written here: the first steps at which the seed mean of training
    return / the teacher run's evaluation return reaches 0.5, 0.8, 0.9; a run without eval.json (still running) is
    skipped; a grid folder moved from another machine still finds its teacher; no absolute path in the report."""
    from torch.utils.tensorboard import SummaryWriter

    out = tmp_path / "grid-out"
    old = "/old/machine/runs/grid-out"  # where the grid ran: recorded in commands and grid.json

    def run(name, fractions, seed, method="ppd", finished=True, teacher_dir=str(out)):
        """Training returns of 100 * fraction (the teacher run scores 100) on three 1000-step stretches."""
        run_dir = out / "distill" / name
        with SummaryWriter(str(run_dir)) as w:
            for step in range(5, 3000, 10):
                w.add_scalar(report.CURVE_TAG, 100.0 * fractions[step // 1000], step)
        if finished:
            cmd = f"python x.py --teacher {teacher_dir}/teachers/Hopper-v5__s1/model.pt --seed {seed}"
            e = {"env_id": "Hopper-v5", "method": method, "student_arch": "larger", "teacher_noise_std": 0.0,
                 "distill_coef": 0.0 if method == "ppo" else 1.0, "global_step": 3000, "command": cmd,
                 "student": {"mean_return": 90.0}, "teacher": {"mean_return": 120.0}}  # not the denominator
            (run_dir / "eval.json").write_text(json.dumps(e))
        return {"name": name, "run_dir": f"{old}/distill/{name}"}

    os.makedirs(out / "teachers" / "Hopper-v5__s1")
    (out / "teachers" / "Hopper-v5__s1" / "eval.json").write_text(json.dumps({"env_id": "Hopper-v5",
                                                                             "mean_return": 100.0}))
    planned = [run("ppd1", (0.2, 0.8, 0.9), 1), run("ppd2", (0.4, 0.9, 1.0), 2, teacher_dir=old),
               run("ppd3", (1.0, 1.0, 1.0), 3, finished=False), run("ppo1", (0.3, 0.3, 0.3), 1, "ppo"),
               run("td1", (1.0, 1.0, 1.0), 1, "teacher-distill")]
    (out / "grid.json").write_text(json.dumps({"output_dir": old, "runs": planned}))
    path = report.write_report(str(out), n_resamples=50)
    md = open(path).read()
    numbers = json.load(open(out / "report" / "report.json"))
    rows = {x["method"]: x for x in numbers["steps_to_teacher"]}
    # seed means per 100-step bin: 0.3, then 0.85, then 0.95; first bin centres 1050 and 2050
    assert rows["ppd"]["reached"] == {"0.5": 1050, "0.8": 1050, "0.9": 2050}
    assert rows["ppd"]["runs"] == 2 and rows["ppd"]["seeds"] == [1, 2]  # ppd3 has no eval.json yet
    assert rows["ppd"]["teacher_return"] == [100.0, 100.0]
    assert rows["ppd"]["last_bin_fraction"] == pytest.approx(0.95)
    assert rows["ppo"]["reached"] == {"0.5": None, "0.8": None, "0.9": None}
    assert rows["teacher-distill"]["curve_of"] == "teacher"
    assert "| larger | ppd | 2 | 1,050 | 1,050 | 2,050 | 0.95 |" in md
    assert "| larger | ppo | 1 | not reached | not reached | not reached | 0.30 |" in md
    assert "| larger | teacher-distill ‡ | 1 |" in md and "sampled" in md and "deterministic" in md
    png = out / "report" / "steps_to_teacher_Hopper-v5.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "](steps_to_teacher_Hopper-v5.png)" in md
    assert rows["ppd"]["figure"] == os.path.join("report", "steps_to_teacher_Hopper-v5.png")
    assert rows["ppd"]["run_dirs"] == [os.path.join("distill", "ppd1"), os.path.join("distill", "ppd2")]
    assert numbers["unfinished"] == ["ppd3"]  # the moved grid's finished runs are found in this folder
    by_dir = {r["run_dir"]: r for r in numbers["runs"]}
    assert by_dir[os.path.join("distill", "ppd2")]["teacher"] == os.path.join("teachers", "Hopper-v5__s1")
    assert [os.path.dirname(p) for p in by_dir[os.path.join("distill", "ppd1")]["event_files"]] == [
        os.path.join("distill", "ppd1")]
    assert os.path.join("report", "curves.png") in numbers["figures"]
    text = md + json.dumps(numbers)
    for absolute in (str(out), os.path.realpath(out), old, REPO):
        assert absolute not in text


def test_an_environment_can_take_its_teacher_from_another_seed(tmp_path):
    """teacher_seed in [[environments]]: that environment's one teacher (e.g. when seed 1's teacher is inconsistent),
    the others keep [teacher] seed; a non-integer is refused."""
    text = """
[[environments]]
env_id = "CartPole-v1"
[[environments]]
env_id = "Acrobot-v1"
teacher_seed = 2
[teacher]
seed = 1
[distill]
seeds = [1, 3]
"""
    runs = grid.expand(grid.load_config(write(tmp_path / "g.toml", text)))
    assert [r.name for r in runs if r.stage == "teacher"] == ["CartPole-v1__s1", "Acrobot-v1__s2"]
    teachers = {(r.env_id, r.seed): r.teacher for r in runs if r.stage == "distill"}
    assert teachers == {("CartPole-v1", 1): "CartPole-v1__s1", ("CartPole-v1", 3): "CartPole-v1__s1",
                        ("Acrobot-v1", 1): "Acrobot-v1__s2", ("Acrobot-v1", 3): "Acrobot-v1__s2"}
    with pytest.raises(grid.ConfigError, match="teacher_seed must be an integer"):
        grid.load_config(write(tmp_path / "bad.toml", text.replace("teacher_seed = 2", 'teacher_seed = "2"')))
