"""From an experiment grid (a small TOML file) to the paper's tables, locally or on SLURM, in one command.

    python experiments/grid.py experiments/mujoco_cpu.toml --workers 2            # this machine, 2 jobs at a time
    python experiments/grid.py experiments/paper_slurm.toml --executor slurm      # a SLURM cluster (submitit)
    python experiments/grid.py experiments/mujoco_cpu.toml --dry-run              # the commands, nothing run
    python experiments/report.py experiments/mujoco_cpu.toml                      # the report again, from the runs

Stage 1 trains the teachers the grid needs (train_teacher.py, one per environment and seed); stage 2 distils
from them as soon as each teacher is ready: PPD and the PPO-only baseline (`ppo`: the PPD script with
--distill-coef 0, paper Table 7) with ppd_mujoco.py (MLP envs), ppd_atari.py (`<Game>NoFrameskip-v4`, `ALE/...`)
or ppd_procgen.py (`procgen:<game>`); `student-distill` and `teacher-distill` with student_distill.py and
teacher_distill.py in every domain. Then experiments/report.py writes `<output_dir>/report/report.md`.

Layout of the output folder (run folder names follow from the grid's values, nothing else):

    <output_dir>/teachers/<env>__s<seed>/                              train_teacher.py run (model.pt, eval.json)
    <output_dir>/distill/<env>__<method>__<arch>[__lam<l>][__noise<s>][__<tag>]__s<seed>/
    <output_dir>/{teachers,distill}/<run>.log                          the script's output, every attempt
    <output_dir>/{teachers,distill}/<run>.spec.json                    the grid values the run was made with
    <output_dir>/grid.json, runner.log, report/                        plan, runner log, report
    <output_dir>/.submitit/, .locks/                                   submitit's files, one lock per running job

Running the same grid again is safe and cheap: a run with an eval.json is finished and skipped; one with a
checkpoint.pt but no eval.json (interrupted: killed, preempted, timed out) continues with `--resume <run_dir>`;
a run folder without either (died before its first checkpoint) is moved aside to `<run>.incomplete-<time>` and
started again. A failed run is reported with the tail of its log and does not stop the others; a distillation
whose teacher failed is reported as skipped. A run whose recorded grid values differ from the grid's (you edited
budgets or flags but kept the output folder) is reported as a conflict and left alone: use a new output_dir.

Execution goes through submitit in both cases: `--executor local` uses its LocalExecutor (one process per job on
this machine), `--executor slurm` its SlurmExecutor, with the parameters of the TOML's [executor] tables (and
--executor-param): generic ones (timeout_min, cpus_per_task, gpus_per_node, mem_gb) everywhere, `slurm_*` ones
(slurm_partition, slurm_account, slurm_qos, slurm_additional_parameters, ...) on SLURM only. submitit's local
executor starts every submitted job at once, so at most --workers jobs are submitted at a time (a thread pool
whose threads each submit one job and wait for it). On a timeout or preemption submitit calls the job's
checkpoint(): it sends SIGTERM to the training script (which writes checkpoint.pt and exits) and requeues the job,
which then resumes. Keep the runner alive while the jobs run (on a cluster: in tmux/screen on the login node, or
in a small CPU job of its own).

The TOML file (all keys but [[environments]] are optional; see experiments/*.toml):

    output_dir = "runs/grid-mujoco"      # relative to the repository root; --output-dir overrides
    threads_per_job = 1                  # OMP_NUM_THREADS / MKL_NUM_THREADS of every job (default: inherited)

    [[environments]]                     # one table per environment
    env_id = "Hopper-v5"
    teacher_timesteps = 1_000_000        # the teacher's budget (default: [teacher] total_timesteps, else the script's)
    distill_timesteps = 200_000          # optional: this environment's distillation budget
    teacher_flags = ["--num-envs", "8"]  # optional: extra train_teacher.py flags for this environment
    teacher_seed = 2                     # optional: this environment's one shared teacher seed ([teacher] seed's role)

    [teacher]
    total_timesteps = 1_000_000
    eval_episodes = 50
    seed = 1                             # optional: ONE teacher per environment (this seed) shared by every
                                         # distillation seed, instead of one teacher per environment and seed

    [distill]                            # the distillation grid: the cartesian product of these lists
    methods = ["ppd", "student-distill", "teacher-distill", "ppo"]
    student_archs = ["smaller", "same", "larger"]
    seeds = [1, 2, 3]                    # also the teachers' seeds: one teacher per environment and seed
    distill_coefs = [1.0]                # lambda: PPD only (ppo is lambda 0; the two baselines have none)
    teacher_noise_stds = [0.0]           # imperfect teachers (paper Table 2); ppo ignores it
    total_timesteps = 2_000_000
    eval_episodes = 50

    [[distill.grid]]                     # optional sub-grids, each the product of its own lists; keys it lacks
    methods = ["ppd", "student-distill", "teacher-distill"]  # come from [distill]; without any sub-grid the
    student_archs = ["larger"]                               # grid is [distill] itself
    teacher_noise_stds = [0.05]
    environments = ["Hopper-v5"]         # optional: only these env ids
    flags = []                           # optional: extra flags for these runs only
    tag = ""                             # optional: appended to the run names (to tell sub-grids apart)

    [flags]                              # extra flags per script, for every run of that script
    "ppd_mujoco.py" = ["--num-envs", "18"]
    "train_teacher.py" = []

    [executor]                           # submitit parameters of every job
    timeout_min = 1440
    slurm_partition = "gpu"
    [executor.teacher]                   # overrides for the teacher jobs
    timeout_min = 2880
    [executor.distill]                   # overrides for the distillation jobs
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime
import fcntl
import itertools
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import tomllib
from dataclasses import asdict, dataclass, field
from typing import Optional

import submitit

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHODS = ("ppd", "student-distill", "teacher-distill", "ppo")
ARCHS = ("smaller", "same", "larger")
SCRIPTS = ("train_teacher.py", "ppd_mujoco.py", "ppd_atari.py", "ppd_procgen.py", "student_distill.py", "teacher_distill.py")
DEFAULT_TIMEOUT_MIN = 3 * 24 * 60  # submitit's local executor kills a job after 2 minutes unless told otherwise

TOP_KEYS = {"output_dir", "threads_per_job", "environments", "teacher", "distill", "flags", "executor"}
ENV_KEYS = {"env_id", "teacher_timesteps", "distill_timesteps", "teacher_flags", "teacher_seed"}
TEACHER_KEYS = {"total_timesteps", "eval_episodes", "seed"}
GRID_KEYS = {"methods", "student_archs", "seeds", "distill_coefs", "teacher_noise_stds", "total_timesteps",
             "eval_episodes", "flags", "tag", "environments"}
LIST_KEYS = {"methods", "student_archs", "seeds", "distill_coefs", "teacher_noise_stds", "environments", "flags",
             "teacher_flags"}


class ConfigError(Exception):
    """A grid file that cannot be run: reported as one line, before anything is launched."""


def detect_domain(env_id: str) -> str:
    """'atari', 'procgen' or 'mlp', by the same rule as the training scripts."""
    if env_id.startswith("procgen:"):
        return "procgen"
    if env_id.endswith("NoFrameskip-v4") or env_id.startswith("ALE/"):
        return "atari"
    return "mlp"


def distill_script(method: str, env_id: str) -> str:
    if method in ("student-distill", "teacher-distill"):
        return method.replace("-", "_") + ".py"
    return {"mlp": "ppd_mujoco.py", "atari": "ppd_atari.py", "procgen": "ppd_procgen.py"}[detect_domain(env_id)]


def slug(env_id: str) -> str:
    return env_id.replace("/", "-").replace(":", "-")


def fmt(x: float) -> str:
    return f"{x:g}"


# ----------------------------------------------------------------------------------------------------
# The grid: TOML -> list of runs
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Run:
    stage: str  # "teacher" or "distill"
    name: str
    script: str
    flags: tuple  # every flag but --output-dir, --run-name and --resume
    env_id: str
    seed: int
    method: Optional[str] = None
    student_arch: Optional[str] = None
    distill_coef: Optional[float] = None
    teacher_noise_std: Optional[float] = None
    teacher: Optional[str] = None  # name of the teacher run this distillation needs
    resources: dict = field(default_factory=dict, compare=False, hash=False)

    def folder(self, output_dir: str) -> str:
        return os.path.join(output_dir, "teachers" if self.stage == "teacher" else "distill")

    def run_dir(self, output_dir: str) -> str:
        return os.path.join(self.folder(output_dir), self.name)

    def spec(self) -> dict:
        """What identifies the run's result: compared with the spec recorded when it was started."""
        return {"stage": self.stage, "name": self.name, "script": self.script, "flags": list(self.flags)}


def _check_keys(table: dict, allowed: set, where: str) -> None:
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table, got {table!r}")
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(allowed))}")
    for key in set(table) & LIST_KEYS - ({"flags"} if "output_dir" in allowed else set()):
        if not isinstance(table[key], list):
            raise ConfigError(f"{where}: '{key}' must be a list, got {table[key]!r}")


def _flag_list(value, where: str) -> list:
    if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
        raise ConfigError(f"{where}: flags must be a list of strings, got {value!r}")
    return [str(v) for v in value]


def load_config(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            cfg = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"grid file '{path}' does not exist")
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"grid file '{path}' is not valid TOML: {e}")
    _check_keys(cfg, TOP_KEYS, path)
    envs = cfg.get("environments")
    if not envs or not isinstance(envs, list):
        raise ConfigError(f"{path}: no [[environments]] table")
    ids = []
    for i, env in enumerate(envs):
        _check_keys(env, ENV_KEYS, f"{path}: environments[{i}]")
        if not isinstance(env.get("env_id"), str):
            raise ConfigError(f"{path}: environments[{i}] needs env_id = \"...\"")
        ids.append(env["env_id"])
        seed = env.get("teacher_seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise ConfigError(f"{path}: environments[{i}] teacher_seed must be an integer, got {seed!r}")
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{path}: an env_id is listed twice in [[environments]]")
    _check_keys(cfg.get("teacher", {}), TEACHER_KEYS, f"{path}: [teacher]")
    shared = cfg.get("teacher", {}).get("seed")
    if shared is not None and (not isinstance(shared, int) or isinstance(shared, bool)):
        raise ConfigError(f"{path}: [teacher] seed must be an integer (one teacher shared by all seeds), got {shared!r}")
    distill = cfg.get("distill", {})
    _check_keys(distill, GRID_KEYS | {"grid"}, f"{path}: [distill]")
    for i, sub in enumerate(distill.get("grid", [])):
        _check_keys(sub, GRID_KEYS, f"{path}: [[distill.grid]] number {i + 1}")
    for script, flags in cfg.get("flags", {}).items():
        if script not in SCRIPTS:
            raise ConfigError(f"{path}: [flags] names '{script}', not one of {', '.join(SCRIPTS)}")
        _flag_list(flags, f"{path}: [flags] {script}")
    executor = cfg.get("executor", {})
    for stage in ("teacher", "distill"):
        if stage in executor and not isinstance(executor[stage], dict):
            raise ConfigError(f"{path}: [executor] '{stage}' must be a table ([executor.{stage}])")
    return cfg


def executor_parameters(cfg: dict, stage: str, overrides: dict) -> dict:
    """submitit parameters of one stage: [executor], then [executor.<stage>], then --executor-param."""
    table = cfg.get("executor", {})
    params = {"timeout_min": DEFAULT_TIMEOUT_MIN}
    params.update({k: v for k, v in table.items() if k not in ("teacher", "distill")})
    params.update(table.get(stage, {}))
    params.update(overrides)
    params.setdefault("name", f"ppd-{stage}")
    return params


CONSTRUCTOR_PARAMETERS = ("max_num_timeout", "python", "max_pickle_size_gb")  # of submitit's executors, not jobs


def make_executor(kind: str, folder: str, params: dict):
    """submitit.AutoExecutor for 'local' or 'slurm' with the given parameters. `<cluster>_max_num_timeout` (requeues
    allowed after timeouts), `<cluster>_python` and `<cluster>_max_pickle_size_gb` go to its constructor, the rest
    to update_parameters, which checks every name (slurm_* ones too when running locally)."""
    params = dict(params)
    ctor = {k: params.pop(k) for k in list(params) if k.split("_", 1)[-1] in CONSTRUCTOR_PARAMETERS and "_" in k}
    executor = submitit.AutoExecutor(folder=os.path.join(folder, "%j"), cluster=kind, **ctor)
    executor.update_parameters(**params)
    return executor


def expand(cfg: dict, overrides: Optional[dict] = None) -> list:
    """The runs of a grid, teachers first, each once, in a deterministic order."""
    overrides = overrides or {}
    envs = {e["env_id"]: e for e in cfg["environments"]}
    flags = {k: _flag_list(v, k) for k, v in cfg.get("flags", {}).items()}
    teacher_cfg = cfg.get("teacher", {})
    distill = cfg.get("distill", {})
    defaults = {k: v for k, v in distill.items() if k != "grid"}
    subgrids = distill.get("grid") or [{}]
    resources = {stage: executor_parameters(cfg, stage, overrides) for stage in ("teacher", "distill")}

    distills, teacher_seeds = {}, {}
    for i, sub in enumerate(subgrids):
        g = {**defaults, **sub}
        where = f"[[distill.grid]] number {i + 1}" if distill.get("grid") else "[distill]"
        methods = g.get("methods", ["ppd"])
        archs = g.get("student_archs", ["same"])
        seeds = g.get("seeds", [1])
        lambdas = g.get("distill_coefs", [1.0])
        noises = g.get("teacher_noise_stds", [0.0])
        env_ids = g.get("environments", list(envs))
        tag = str(g.get("tag", ""))
        extra = _flag_list(g.get("flags", []), where)
        for name, values, allowed in (("methods", methods, METHODS), ("student_archs", archs, ARCHS),
                                      ("environments", env_ids, tuple(envs))):
            bad = [v for v in values if v not in allowed]
            if bad:
                raise ConfigError(f"{where}: {name} {bad} not among {', '.join(allowed)}")
        if not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
            raise ConfigError(f"{where}: seeds must be integers, got {seeds}")
        if not all(isinstance(x, (int, float)) and x >= 0 for x in list(lambdas) + list(noises)):
            raise ConfigError(f"{where}: distill_coefs and teacher_noise_stds must be numbers >= 0")
        if 0 in lambdas and "ppd" in methods:
            raise ConfigError(f"{where}: distill_coefs 0 is plain PPO: use the method 'ppo' instead")
        for env_id, method, arch, lam, noise, seed in itertools.product(env_ids, methods, archs, lambdas, noises, seeds):
            lam = {"ppd": float(lam), "ppo": 0.0}.get(method)  # the baselines have no lambda
            noise = 0.0 if method == "ppo" else float(noise)  # PPO alone never looks at its teacher
            script = distill_script(method, env_id)
            teacher_seed = envs[env_id].get("teacher_seed", teacher_cfg.get("seed", seed))
            teacher = f"{slug(env_id)}__s{teacher_seed}"
            budget = g["total_timesteps"] if "total_timesteps" in sub else envs[env_id].get(
                "distill_timesteps", defaults.get("total_timesteps"))
            name = "__".join([slug(env_id), method, arch] + ([f"lam{fmt(lam)}"] if method == "ppd" else [])
                             + ([f"noise{fmt(noise)}"] if noise > 0 else []) + ([tag] if tag else []) + [f"s{seed}"])
            run_flags = ["--teacher", f"@teacher:{teacher}", "--student-arch", arch, "--seed", str(seed)]
            if lam is not None:
                run_flags += ["--distill-coef", fmt(lam)]
            if method == "ppo":
                run_flags += ["--exp-name", "ppo"]
            if noise > 0:
                run_flags += ["--teacher-noise-std", fmt(noise)]
            if budget is not None:
                run_flags += ["--total-timesteps", str(budget)]
            if g.get("eval_episodes") is not None:
                run_flags += ["--eval-episodes", str(g["eval_episodes"])]
            run_flags += flags.get(script, []) + extra
            run = Run("distill", name, script, tuple(run_flags), env_id, seed, method, arch, lam, noise, teacher,
                      resources["distill"])
            if name in distills and distills[name] != run:
                raise ConfigError(f"two sub-grids define the run {name} with different flags or budgets; give one of "
                                  "them a tag")
            distills[name] = run
            teacher_seeds.setdefault(env_id, set()).add(teacher_seed)

    teachers = []
    for env_id, env in envs.items():
        budget = env.get("teacher_timesteps", teacher_cfg.get("total_timesteps"))
        for seed in sorted(teacher_seeds.get(env_id, ())):
            run_flags = ["--env-id", env_id, "--seed", str(seed)]
            if budget is not None:
                run_flags += ["--total-timesteps", str(budget)]
            if teacher_cfg.get("eval_episodes") is not None:
                run_flags += ["--eval-episodes", str(teacher_cfg["eval_episodes"])]
            run_flags += flags.get("train_teacher.py", []) + _flag_list(env.get("teacher_flags", []), env_id)
            teachers.append(Run("teacher", f"{slug(env_id)}__s{seed}", "train_teacher.py", tuple(run_flags), env_id,
                                seed, resources=resources["teacher"]))
    return teachers + list(distills.values())


def resolve_flags(run: Run, output_dir: str) -> list:
    """The run's flags with its teacher's checkpoint path filled in."""
    teacher_model = os.path.join(output_dir, "teachers", run.teacher or "", "model.pt")
    return [teacher_model if f == f"@teacher:{run.teacher}" else f for f in run.flags]


# ----------------------------------------------------------------------------------------------------
# One job: runs one script to the end (fresh, resumed or restarted); what submitit pickles and runs
# ----------------------------------------------------------------------------------------------------
def run_state(run_dir: str) -> str:
    """'finished' (a readable eval.json), 'resume' (checkpoint.pt, no eval.json), 'restart' (a folder without
    either: died before its first checkpoint; or an eval.json cut short) or 'fresh' (nothing there)."""
    eval_path = os.path.join(run_dir, "eval.json")
    if os.path.exists(eval_path):
        try:
            with open(eval_path) as f:
                json.load(f)
            return "finished"
        except (OSError, ValueError):  # cut short while being written: the run's end cannot be resumed, redo it
            return "restart"
    if os.path.exists(os.path.join(run_dir, "checkpoint.pt")):
        return "resume"
    return "restart" if os.path.exists(run_dir) else "fresh"


def build_command(script: str, flags: list, run_dir: str, state: str) -> list:
    cmd = [sys.executable, os.path.join(REPO, script), *flags,
           "--output-dir", os.path.dirname(run_dir), "--run-name", os.path.basename(run_dir)]
    return cmd + ["--resume", run_dir] if state == "resume" else cmd


def log_tail(path: str, lines: int = 15) -> str:
    """The last lines of a log, progress-bar redraws (carriage returns) reduced to their last state."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64_000))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    out = [line.rstrip().split("\r")[-1] for line in text.split("\n")]
    out = [line for line in out if line.strip()]
    return "\n".join(out[-lines:])


class GridJob(submitit.helpers.Checkpointable):
    """Runs one training script to completion in a subprocess. Idempotent: whatever the run folder holds when
    the job starts (nothing, an interrupted run, a finished one) decides what it does. On a SLURM timeout or
    preemption (submitit's signal) the script gets SIGTERM, writes its checkpoint and exits; the requeued job then
    resumes it."""

    def __init__(self):
        self._proc = None

    def __getstate__(self):
        return {}

    def __setstate__(self, state):
        self._proc = None

    def __call__(self, job: dict) -> dict:
        run_dir, log_path = job["run_dir"], job["run_dir"] + ".log"
        os.makedirs(os.path.dirname(run_dir), exist_ok=True)
        locks = os.path.join(os.path.dirname(os.path.dirname(run_dir)), ".locks")
        os.makedirs(locks, exist_ok=True)
        lock = open(os.path.join(locks, os.path.basename(os.path.dirname(run_dir)) + "__" + os.path.basename(run_dir)), "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return {"returncode": None, "state": "busy", "seconds": 0.0,
                    "error": f"another process is running {run_dir} (an earlier runner's job still finishing?)"}
        try:
            state = run_state(run_dir)
            if state == "finished":
                return {"returncode": 0, "state": state, "seconds": 0.0}
            if state == "restart":
                os.rename(run_dir, f"{run_dir}.incomplete-{datetime.datetime.now():%Y%m%d-%H%M%S}")
            cmd = build_command(job["script"], job["flags"], run_dir, state)
            tmp = run_dir + ".spec.json.tmp"
            with open(tmp, "w") as f:
                json.dump({**job["spec"], "command": shlex.join(cmd)}, f, indent=2)
            os.replace(tmp, run_dir + ".spec.json")
            env = dict(os.environ)
            if job.get("threads"):
                env.update(OMP_NUM_THREADS=str(job["threads"]), MKL_NUM_THREADS=str(job["threads"]))
            start = time.time()
            with open(log_path, "a") as log:
                log.write(f"\n=== {datetime.datetime.now():%Y-%m-%d %H:%M:%S} ({state}): {shlex.join(cmd)}\n")
                log.flush()
                # the script ignores submitit's preemption signal (SLURM may send it to every process of the job):
                # checkpoint() below answers it with the SIGTERM the scripts handle
                self._proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                              preexec_fn=_ignore_preemption_signal)
                returncode = self._proc.wait()
            return {"returncode": returncode, "state": state, "seconds": time.time() - start,
                    "finished": os.path.exists(os.path.join(run_dir, "eval.json"))}
        finally:
            lock.close()

    def checkpoint(self, job: dict):
        proc = self._proc
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGTERM)  # the script finishes its update, writes checkpoint.pt and exits
            # not proc.wait(): this runs in a signal handler that interrupted proc.wait() in __call__, which holds
            # Popen's wait lock; reap the child directly. Leave a margin before submitit's hard kill.
            delay = float(os.environ.get("SUBMITIT_LOCAL_SIGNAL_DELAY_S") or 90)
            deadline = time.time() + max(5.0, delay - 10)
            while time.time() < deadline:
                try:
                    if os.waitpid(proc.pid, os.WNOHANG)[0]:
                        break
                except ChildProcessError:
                    break
                time.sleep(0.2)
            else:
                proc.kill()
        return submitit.helpers.DelayedSubmission(GridJob(), job)


def _ignore_preemption_signal() -> None:
    signal.signal(getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")), signal.SIG_IGN)


# ----------------------------------------------------------------------------------------------------
# The runner
# ----------------------------------------------------------------------------------------------------
class Runner:
    def __init__(self, runs: list, output_dir: str, executor: str, workers: int, threads: Optional[int]):
        self.runs, self.output_dir, self.workers, self.threads = runs, output_dir, workers, threads
        self.executor_kind = executor
        self.log_file = open(os.path.join(output_dir, "runner.log"), "a")
        self.log_lock, self.submit_lock = threading.Lock(), threading.Lock()
        self.executors = {}

    def log(self, message: str) -> None:
        with self.log_lock:
            print(message, flush=True)
            self.log_file.write(f"{datetime.datetime.now():%Y-%m-%d %H:%M:%S} {message}\n")
            self.log_file.flush()

    def executor(self, run: Run):
        if run.stage not in self.executors:
            self.executors[run.stage] = make_executor(self.executor_kind, os.path.join(self.output_dir, ".submitit"),
                                                      run.resources)
        return self.executors[run.stage]

    def execute(self, run: Run) -> dict:
        """Submit one job, wait for it (in a worker thread of the pool)."""
        run_dir = run.run_dir(self.output_dir)
        job = {"run_dir": run_dir, "script": run.script, "flags": resolve_flags(run, self.output_dir),
               "spec": run.spec(), "threads": self.threads}
        with self.submit_lock:
            submitted = self.executor(run).submit(GridJob(), job)
        self.log(f"launch {run.stage} {run.name} ({run_state(run_dir)}; job {submitted.job_id})")
        return submitted.result()

    def check_spec(self, run: Run) -> Optional[str]:
        """None, or why the run folder belongs to another grid configuration."""
        path = run.run_dir(self.output_dir) + ".spec.json"
        if not os.path.exists(path) or not os.path.exists(run.run_dir(self.output_dir)):
            return None  # nothing made with the recorded flags (e.g. a run that failed at once): nothing to protect
        with open(path) as f:
            recorded = json.load(f)
        recorded.pop("command", None)
        if recorded != run.spec():
            return (f"{path} records other flags ({' '.join(map(str, recorded.get('flags', [])))}) than the grid's "
                    f"({' '.join(run.flags)}); use a new output_dir, or delete that run")
        return None

    def run(self) -> int:
        runs = self.runs
        states = {r.name: run_state(r.run_dir(self.output_dir)) for r in runs}
        for stage in ("teacher", "distill"):
            group = [r for r in runs if r.stage == stage]
            counts = {s: sum(states[r.name] == s for r in group) for s in ("finished", "resume", "restart", "fresh")}
            self.log(f"plan: {len(group)} {stage} runs: {counts['finished']} finished, {counts['resume']} to resume, "
                     f"{counts['restart']} to restart, {counts['fresh']} to start")
        outcome = {}  # name -> "finished" | "done" | "failed" | "skipped" | "conflict"
        for r in runs:
            if (why := self.check_spec(r)) is not None:  # finished or not: its numbers are not this grid's
                outcome[r.name] = "conflict"
                self.log(f"CONFLICT {r.stage} {r.name}: {why}")
            elif states[r.name] == "finished":
                outcome[r.name] = "finished"

        pending = {}
        waiting = {}  # teacher name -> distillations waiting for it

        def ready(r: Run) -> bool:
            return r.teacher is None or outcome.get(r.teacher) in ("finished", "done")

        with cf.ThreadPoolExecutor(max_workers=self.workers) as pool:
            def launch(r: Run) -> None:
                pending[pool.submit(self.execute, r)] = r

            def release(teacher_name: str) -> None:
                for d in waiting.pop(teacher_name, []):
                    if ready(d):
                        launch(d)
                    else:
                        outcome[d.name] = "skipped"
                        why = {"failed": "failed", "conflict": "is in conflict with the grid"}.get(outcome[teacher_name],
                                                                                                   outcome[teacher_name])
                        self.log(f"skip distill {d.name}: its teacher {teacher_name} {why}")

            for r in runs:
                if r.name in outcome:
                    continue
                if r.teacher is not None and outcome.get(r.teacher) not in ("finished", "done"):
                    waiting.setdefault(r.teacher, []).append(r)
                else:
                    launch(r)
            for name in [t for t in waiting if outcome.get(t) in ("failed", "skipped", "conflict")]:
                release(name)
            while pending:
                done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    r = pending.pop(fut)
                    log_path = r.run_dir(self.output_dir) + ".log"
                    try:
                        result = fut.result()
                        error = result.get("error")
                    except Exception as e:  # the job itself failed (submission, pickling, SLURM)
                        result, error = {}, f"{type(e).__name__}: {str(e).strip()[-2000:]}"
                    if error is None and result.get("returncode") == 0 and result.get("finished", True):
                        outcome[r.name] = "done"
                        self.log(f"done {r.stage} {r.name} in {result.get('seconds', 0):.1f} s")
                    else:
                        outcome[r.name] = "failed"
                        why = error or f"exit code {result.get('returncode')}"
                        self.log(f"FAILED {r.stage} {r.name} ({why}); log {log_path}; its tail:\n"
                                 + "\n".join("    " + line for line in log_tail(log_path).splitlines()))
                    if r.stage == "teacher":
                        release(r.name)

        counts = {s: sum(v == s for v in outcome.values()) for s in ("finished", "done", "failed", "skipped", "conflict")}
        launched = counts["done"] + counts["failed"]
        self.log(f"summary: {len(runs)} runs: {counts['finished']} already finished, {launched} launched "
                 f"({counts['done']} done, {counts['failed']} failed), {counts['skipped']} skipped (no teacher), "
                 f"{counts['conflict']} in conflict with the grid")
        return 0 if counts["done"] + counts["finished"] == len(runs) else 1


def parse_param(text: str):
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--executor-param needs KEY=VALUE, got '{text}'")
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]  # numbers, booleans, "strings", [lists], {tables}
    except tomllib.TOMLDecodeError:
        parsed = value  # a bare word: a string
    return key, parsed


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="grid file (TOML)")
    parser.add_argument("--executor", choices=["local", "slurm"], default="local",
                        help="submitit executor: local (this machine) or slurm")
    parser.add_argument("--workers", type=int, default=None,
                        help="jobs submitted at a time (default: 1 locally, up to 512 on SLURM)")
    parser.add_argument("--output-dir", help="folder of the runs (default: the grid's output_dir)")
    parser.add_argument("--executor-param", type=parse_param, action="append", default=[], metavar="KEY=VALUE",
                        help="submitit parameter for every job, over the grid's [executor] tables "
                             "(e.g. slurm_partition=gpu, timeout_min=600); repeatable")
    parser.add_argument("--threads-per-job", type=int, help="OMP_NUM_THREADS of every job (over threads_per_job)")
    parser.add_argument("--dry-run", action="store_true", help="print the runs and their commands, run nothing")
    parser.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config)
        runs = expand(cfg, dict(args.executor_param))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    output_dir = os.path.abspath(args.output_dir or os.path.join(REPO, cfg.get("output_dir", "runs/grid")))
    try:  # every executor parameter is checked now (slurm_* names too), not after the teachers have trained
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            for stage in ("teacher", "distill"):
                make_executor("local", tmp, executor_parameters(cfg, stage, dict(args.executor_param)))
    except (NameError, AssertionError, TypeError, ValueError) as e:
        print(f"error: executor parameters: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    if args.dry_run:
        for r in runs:
            run_dir = r.run_dir(output_dir)
            print(f"[{r.stage}] {r.name} ({run_state(run_dir)}): "
                  f"{shlex.join(build_command(r.script, resolve_flags(r, output_dir), run_dir, 'fresh')[1:])}")
        n_teachers = sum(r.stage == "teacher" for r in runs)
        print(f"{len(runs)} runs: {n_teachers} teachers, {len(runs) - n_teachers} distillations")
        return 0

    os.makedirs(output_dir, exist_ok=True)
    lock = open(os.path.join(output_dir, ".grid.lock"), "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"error: another runner is working on {output_dir}", file=sys.stderr)
        return 2
    with open(os.path.join(output_dir, "grid.json"), "w") as f:
        json.dump({"config": os.path.abspath(args.config), "output_dir": output_dir,
                   "runs": [{**asdict(r), "flags": resolve_flags(r, output_dir), "run_dir": r.run_dir(output_dir)}
                            for r in runs]}, f, indent=2, default=str)
    workers = args.workers or (1 if args.executor == "local" else max(1, min(len(runs), 512)))
    runner = Runner(runs, output_dir, args.executor, workers, args.threads_per_job or cfg.get("threads_per_job"))
    runner.log(f"grid {args.config} -> {output_dir}: executor {args.executor}, {workers} worker(s)")
    code = runner.run()
    if not args.no_report:
        sys.path.insert(0, REPO)
        from experiments import report

        try:
            path = report.write_report(output_dir)
            runner.log(f"report: {path}")
        except Exception as e:  # a report problem must not hide the grid's outcome
            runner.log(f"report FAILED: {type(e).__name__}: {e}")
            code = code or 1
    return code


if __name__ == "__main__":
    if REPO not in sys.path:
        sys.path.insert(0, REPO)
    # submitit pickles GridJob by reference: make it importable as experiments.grid in the jobs too
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))
    from experiments import grid as _grid

    sys.exit(_grid.main())
