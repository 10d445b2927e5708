"""The FLARE job and how it runs: FLARE's simulator on one machine, or exported for real sites.

Why FedJob directly and not ``FedAvgRecipe``: the recipe puts FLARE's stock FedAvg on the server,
which stops the job when one site fails (``controller``). The job here is what the recipe builds
otherwise: a FedAvg controller on the server (``FederatedStiffness``) and, at each site, FLARE's
Client API running ``client.py`` in-process (``ScriptRunner``). ``liverstiffness`` is declared an
app package, so FLARE imports it from each site's installation instead of copying its modules
into the job; every site installs the same version.

Before anything runs, the inputs are checked (``prepare``): at least two sites, plain site names,
each manifest readable with at least three patients, ``min_clients`` between 1 and the number
of sites, and a state folder that either is new or belongs to the same run (resume).
"""
from __future__ import annotations

import copy
import json
import os
import re
import shlex
import shutil
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import InputError
from ..manifest import read_manifest
from . import state
from .settings import Recipe
from .site import check_records

CLIENT_SCRIPT = Path(__file__).resolve().with_name("client.py")
#: Where FLARE finds the client script inside an exported job (its custom folder keeps the package path).
CLIENT_IN_JOB = "liverstiffness/federated/client.py"
JOB_NAME = "liverstiffness_federated"
SITE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")
NVFLARE_MISSING = ("federated training needs NVIDIA FLARE: pip install 'nvflare==2.9.0' "
                   "(or pip install 'liverstiffness[federated]')")


def require_nvflare() -> None:
    try:
        import nvflare  # noqa: F401
    except ImportError:
        raise InputError("nvflare", NVFLARE_MISSING) from None


def parse_sites(values: list[str]) -> dict[str, Path]:
    """``NAME=MANIFEST`` pairs → {name: manifest}; names are FLARE site names."""
    sites = {}
    for value in values or []:
        name, sep, path = value.partition("=")
        if not sep or not path:
            raise InputError("--site", f"{value!r} is not NAME=MANIFEST")
        if not SITE_NAME.fullmatch(name) or name.lower() == "server":
            raise InputError("--site", f"site name {name!r} must be letters, digits, '-' or '_' (and not 'server')")
        if name in sites:
            raise InputError("--site", f"site {name} is given twice")
        sites[name] = Path(path)
    if len(sites) < 2:
        raise InputError("--site", f"federated training needs at least two sites, got {len(sites)}")
    return sites


@dataclass
class FederatedRun:
    """One federated training run. ``work``: the server's state (resume), FLARE's simulator
    workspace and, in the simulator, each site's cache (default: ``<out>.federated`` beside
    ``out``: preprocessed images never go into the model folder)."""

    sites: dict[str, Path]
    out: Path
    recipe: Recipe
    min_clients: int | None = None            # default: every site
    name: str = "liverstiffness-federated"
    synthetic: bool | None = None             # None: a truth.csv beside every manifest
    workers: int = 1
    device: str = "auto"
    work: Path | None = None
    straggler_wait_s: int = 3600
    quiet: bool = False
    site_args: dict = field(default_factory=dict)   # extra client arguments per site (the tests' fault injection)

    @property
    def work_dir(self) -> Path:
        return Path(self.work) if self.work else self.out.parent / f"{self.out.name}.federated"

    @property
    def state_dir(self) -> Path:
        return self.work_dir / "server"


def check_settings(run: FederatedRun) -> int:
    """The checks that need no file (also for ``--export-job``); returns ``min_clients``."""
    if len(run.sites) < 2:
        raise InputError("--site", f"federated training needs at least two sites, got {len(run.sites)}")
    if run.recipe.rounds < 1:
        raise InputError("--rounds", f"must be at least 1, got {run.recipe.rounds}")
    if run.recipe.local_epochs < 1:
        raise InputError("--local-epochs", f"must be at least 1, got {run.recipe.local_epochs}")
    if not 0.5 <= run.recipe.coverage < 1:
        raise InputError("--coverage", f"must be in [0.5, 1), got {run.recipe.coverage}")
    min_clients = len(run.sites) if run.min_clients is None else run.min_clients
    if not 1 <= min_clients <= len(run.sites):
        raise InputError("--min-clients", f"must be between 1 and the number of sites ({len(run.sites)}), got {min_clients}")
    return min_clients


def prepare(run: FederatedRun) -> FederatedRun:
    """Check every input before anything is written; returns the run with its defaults filled in
    (``min_clients``, ``synthetic``, the map decoder when the manifests name elastograms)."""
    run = replace(run, out=Path(run.out).resolve(), sites={k: Path(v).resolve() for k, v in run.sites.items()})
    min_clients = check_settings(run)
    maps = False
    for name, manifest in run.sites.items():
        records = read_manifest(manifest, require_label=True)
        check_records(records, f"site {name} manifest {manifest}")
        maps = maps or any(r.mre_map for r in records)
    recipe = run.recipe
    if maps and recipe.dense_weight > 0 and not recipe.model.get("map_decoder"):
        recipe = replace(recipe, model={**recipe.model, "map_decoder": True})
    synthetic = run.synthetic
    if synthetic is None:
        synthetic = all((m.parent / "truth.csv").is_file() for m in run.sites.values())
    run = replace(run, recipe=recipe, min_clients=min_clients, synthetic=synthetic)
    progress = state.read_progress(run.state_dir)
    if progress is not None and not state.same_run(progress, run.recipe, list(run.sites)):
        raise InputError(f"--out {run.out}", f"{run.work_dir} holds a federated run with other settings or sites "
                                             "(it resumes only the same run): remove it or choose another --out")
    return run


def build_job(run: FederatedRun, simulated: bool = True):
    """The FLARE job of a prepared run. Simulated, each site's work folder is ``<work>/sites``;
    exported, each site's own (``client``: ``$LIVERSTIFFNESS_FEDERATED_WORK`` or a folder in the job's
    workspace)."""
    from nvflare.job_config.api import FedJob
    from nvflare.job_config.script_runner import FrameworkType, ScriptRunner

    from .controller import FederatedStiffness

    job = FedJob(name=JOB_NAME, min_clients=run.min_clients)
    job.set_app_packages(["liverstiffness"])
    options = {"name": run.name, "synthetic": bool(run.synthetic), "straggler_wait_s": run.straggler_wait_s}
    job.to_server(FederatedStiffness(run.recipe.to_dict(), list(run.sites), str(run.state_dir), str(run.out),
                                     run.min_clients, options))
    for name, manifest in run.sites.items():
        args = ["--manifest", str(manifest), *(["--work", str(run.work_dir / "sites")] if simulated else []),
                "--workers", str(run.workers), "--device", run.device, *run.site_args.get(name, [])]
        job.to(ScriptRunner(script=str(CLIENT_SCRIPT), script_args=shlex.join(args), framework=FrameworkType.PYTORCH),
               name)
    return job


def export_job(run: FederatedRun, folder: str | Path) -> Path:
    """The job as a folder for a provisioned FLARE system (``nvflare job submit`` / the admin
    console). Paths in it are the sites' and the server's own: each site's manifest as given, the
    server's state and model folder at ``--out`` (each site's work folder is its own, ``client``).
    The client script is referred to inside the job, not by this machine's path."""
    require_nvflare()
    folder = Path(folder)
    build_job(run, simulated=False).export_job(str(folder))
    job_dir = folder / JOB_NAME
    for config in job_dir.glob("app_*/config/config_fed_client.json"):
        d = json.loads(config.read_text())
        for executor in d.get("executors", []):
            args = executor.get("executor", {}).get("args", {})
            if "task_script_path" in args:
                args["task_script_path"] = CLIENT_IN_JOB
        config.write_text(json.dumps(d, indent=4))
        if not (config.parent.parent / "custom" / CLIENT_IN_JOB).is_file():
            raise RuntimeError(f"FLARE did not copy the client script into {config.parent.parent / 'custom'}")
    return job_dir


def _log_config(path: Path) -> Path:
    """FLARE's default logging with only errors on the console (the files keep everything)."""
    from nvflare.fuel.utils.log_utils import default_log_dict

    d = copy.deepcopy(default_log_dict)
    d["handlers"]["consoleHandler"]["level"] = "ERROR"
    path.write_text(json.dumps(d))
    return path


def _server_error(flare_ws: Path) -> str:
    for log in sorted(flare_ws.rglob("error_log.txt")):
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        if lines:
            return lines[-1][-300:]
    return "no error logged"


def _report_progress(run: FederatedRun, stop: threading.Event) -> None:
    seen = set()
    while not stop.wait(1.0):
        progress = state.read_progress(run.state_dir) or {}
        for k, mse in progress.get("val_mse_by_round", {}).items():
            if ("val", k) not in seen:
                seen.add(("val", k))
                print(f"  model after round {k}: pooled validation MSE {mse:.4f} (ln kPa²)", flush=True)
        done = progress.get("completed_rounds")
        if done and ("round", done) not in seen:
            seen.add(("round", done))
            print(f"  round {done}/{run.recipe.rounds} done", flush=True)


def simulate(run: FederatedRun) -> Path:
    """Run a prepared job in FLARE's simulator (one client per site, each in its own thread) and
    return the model folder. A run on a state folder of the same run resumes after its last
    completed round. A simulator that ends otherwise (a failure, a kill; FLARE's ``simulator_run``
    turns Ctrl-C and SIGTERM into code -9 after ending its processes) is one line saying after
    which round it stopped."""
    require_nvflare()
    run.work_dir.mkdir(parents=True, exist_ok=True)
    flare_ws = run.work_dir / "flare"
    shutil.rmtree(flare_ws, ignore_errors=True)          # the simulator's scratch; the state is in <work>/server
    flare_ws.mkdir()
    log_config = _log_config(run.work_dir / "flare_log_config.json")
    job = build_job(run)
    stop = threading.Event()
    reporter = None if run.quiet else threading.Thread(target=_report_progress, args=(run, stop), daemon=True)
    if reporter:
        reporter.start()
    quiet_bars = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"      # the sites' epoch bars: their train_log.jsonl has the curves
    try:
        rc = job.simulator_run(str(flare_ws), clients=list(run.sites), threads=len(run.sites),
                               log_config=str(log_config))
    finally:
        stop.set()
        if quiet_bars is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = quiet_bars
    progress = state.read_progress(run.state_dir) or {}
    if rc != 0 or not (run.out / "model.json").is_file():
        raise InputError("federated run", f"FLARE's simulator ended with code {rc} after round "
                                          f"{progress.get('completed_rounds', 0)} of {run.recipe.rounds} "
                                          f"({_server_error(flare_ws)}); logs in {flare_ws}; the same command "
                                          "resumes after the last completed round")
    return run.out
