"""Federated training on NVIDIA FLARE (``liverstiffness.federated``): real FLARE simulator runs on
the shared small cohort, split by site into one manifest per hospital.

- two sites, one round: an ordinary model folder that ``Ensemble.load`` and ``predict`` take;
- what the server received (its audit of every message): the network's state_dict tensors and
  numbers, never an image array, a case id, a patient id or a path;
- a site that fails in a round is left out and the others finish (``--min-clients``), and a
  simulator killed after a round resumes from it;
- the pieces without FLARE: the ridge from sums, pooled metrics, the message check, the CLI's
  input checks, the exported job.

nvflare is a test dependency (CI installs it): without it these tests fail with the install line.
"""
from __future__ import annotations

import csv
import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from liverstiffness.federated import messages, pooling, ridge
from liverstiffness.federated.settings import Recipe
from liverstiffness.stiffness.network import ModelConfig

SMALL = ModelConfig(hidden_size=16, mlp_dim=32, num_layers=1, num_heads=2)


@pytest.fixture(autouse=True)
def _nvflare():
    try:
        import nvflare  # noqa: F401
    except ImportError:
        from liverstiffness.federated.job import NVFLARE_MISSING

        pytest.fail(NVFLARE_MISSING)


def _recipe(rounds: int) -> Recipe:
    return Recipe(rounds=rounds, local_epochs=1, batch_size=4, register=False, dense_weight=0.0, model=SMALL.to_dict())


@pytest.fixture(scope="module")
def site_manifests(small_cohort, tmp_path_factory):
    """One manifest per site of the small cohort (absolute image paths): {site: path}."""
    manifest = Path(small_cohort[0])
    rows = list(csv.DictReader(open(manifest, newline="")))
    folder = tmp_path_factory.mktemp("sites")
    out = {}
    for site in sorted({r["site"] for r in rows}):
        path = folder / f"site_{site}.csv"
        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            for r in rows:
                if r["site"] == site:
                    writer.writerow({k: (str(manifest.parent / v) if k in ("t1w", "t2w", "dwi", "mask", "mre_map",
                                                                            "mre_confidence") and v else v)
                                     for k, v in r.items()})
        out[site] = path
    return out


def _run(sites: dict, out: Path, rounds: int, **kw):
    from liverstiffness.federated.job import FederatedRun, prepare, simulate

    run = prepare(FederatedRun(sites=sites, out=out, recipe=_recipe(rounds), synthetic=True, quiet=True, **kw))
    return run, simulate(run)


@pytest.fixture(scope="module")
def federated_model(site_manifests, tmp_path_factory):
    """Sites A and B (3 exams each), one round of one local epoch: (run, model folder)."""
    out = tmp_path_factory.mktemp("federated") / "model"
    return _run({s: site_manifests[s] for s in ("A", "B")}, out, rounds=1)


@pytest.mark.slow
def test_two_sites_one_round_give_a_model_folder_that_loads_and_predicts(federated_model, small_cohort, tmp_path):
    import torch

    from liverstiffness.cli.main import main
    from liverstiffness.federated import state
    from liverstiffness.stiffness.ensemble import Ensemble

    run, out = federated_model
    ens = Ensemble.load(out, device="cpu")
    assert len(ens.models) == 1 and ens.meta.config.hidden_size == 16
    fed = ens.meta.metrics["federated"]
    assert fed["sites_reported"] == ["A", "B"] and fed["best_round"] == 1 and fed["rounds"] == 1
    # The interval: split conformal from the held-out residuals of both sites (one patient each).
    assert ens.meta.calibration.n_calibration == 2 == ens.meta.folds[0]["n_held_out"]
    assert set(ens.meta.calibration.residual_fold) == {0}
    assert ens.meta.trained_on["n_exams"] == 6 and ens.meta.trained_on["by_site"] == {"A": 3, "B": 3}
    assert ens.meta.input_statistics is None and ens.meta.feature_distribution is None
    # The folder's weights are the chosen global model, and training moved them from the start.
    saved = torch.load(out / "fold0.pt", weights_only=True)
    final = state.load_weights(run.state_dir / state.FINAL)
    assert all(np.array_equal(saved[k].numpy(), final[k]) for k in final)
    start = state.initial_weights(run.recipe)
    assert not np.allclose(final["head.2.bias"], start["head.2.bias"])
    card = (out / "MODEL_CARD.md").read_text()
    assert "## Federated training" in card and "## Cross-validation" not in card and "Split conformal" in card
    assert "Ridge baseline: Not fitted" in card and not (out / "baseline.json").exists()
    # No preprocessed images in the model folder: the sites' caches are in the work folder beside it.
    assert not any(p.suffix == ".npz" for p in out.rglob("*"))
    assert any(run.work_dir.glob("sites/*/cache/*/*.npz"))

    exam = next(r for r in small_cohort[1] if r.site == "C")       # a site that took no part
    code = main(["predict", "--model", str(out), "--t1w", str(exam.t1w), "--t2w", str(exam.t2w), "--dwi", str(exam.dwi),
                 "--dwi-b", ",".join(str(int(b)) for b in exam.dwi_b), "--mask", str(exam.mask), "--device", "cpu",
                 "--out", str(tmp_path / "pred")])
    assert code == 0
    report = json.loads((tmp_path / "pred" / "report.json").read_text())
    assert np.isfinite(report["stiffness_kpa"]) and report["model"]["name"] == "liverstiffness-federated"


def _walk(x, path=""):
    if isinstance(x, dict):
        for k, v in x.items():
            yield from _walk(k, f"{path}.<key>")
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from _walk(v, f"{path}[{i}]")
    else:
        yield path, x


def _depth(x) -> int:
    return 1 + max((_depth(v) for v in x), default=0) if isinstance(x, list) else 0


@pytest.mark.slow
def test_sites_send_only_weights_and_numbers(federated_model, small_cohort, site_manifests):
    from liverstiffness.federated import state
    from liverstiffness.stiffness.network import StiffnessTransformer

    run, _ = federated_model
    audit_path = run.state_dir / state.AUDIT
    entries = [json.loads(line) for line in audit_path.read_text().splitlines()]
    assert all(e["refused"] is None for e in entries)
    assert sorted((e["task"], e["round"], e["site"]) for e in entries) == [
        ("report", 1, "A"), ("report", 1, "B"), ("train", 0, "A"), ("train", 0, "B"), ("validate", 1, "A"),
        ("validate", 1, "B")]
    names = {k: list(v.shape) for k, v in StiffnessTransformer(SMALL).state_dict().items()}
    for e in entries:
        if e["task"] == "train":
            assert e["params"] == names and e["param_types"] == ["ndarray"]      # exactly the state_dict's tensors
        else:
            assert e["params"] == {}
        for where, leaf in _walk({"metrics": e["metrics"], "meta": e["meta"]}):
            if isinstance(leaf, str):       # strings: FLARE's site name, our fixed keys, count labels
                assert leaf in ("A", "B") or ".<key>" in where, (where, leaf)
            else:
                assert leaf is None or isinstance(leaf, (int, float, bool)), (where, leaf)
        lists = [v for _, v in _walk_lists(e["metrics"])]
        assert all(_depth(v) <= 2 for v in lists)        # nothing shaped like an image
    # No identifier, path or file name of any exam appears anywhere in what the server received.
    text = audit_path.read_text()
    for r in small_cohort[1]:
        for secret in (r.case_id, r.patient_id, Path(r.t1w).parent.name, str(Path(r.t1w).parent)):
            assert secret not in text
    assert str(site_manifests["A"]) not in text
    # The held-out residuals arrive sorted and without exam identity; the sums give the pooled metrics.
    report = next(e for e in entries if e["task"] == "report")["metrics"]
    assert report["residuals"]["t1w+t2w+dwi"] == sorted(report["residuals"]["t1w+t2w+dwi"])


def _walk_lists(x, path=""):
    if isinstance(x, dict):
        for k, v in x.items():
            yield from _walk_lists(v, f"{path}.{k}")
    elif isinstance(x, list):
        yield path, x


def test_the_message_check_refuses_images_identifiers_and_foreign_weights():
    shapes = {"w": (2, 3), "b": (3,)}
    ok = {"w": np.zeros((2, 3)), "b": np.zeros(3)}
    messages.check("train", ok, {"val_sse": 1.0, "n_val": 2}, {messages.NUM_STEPS: 5}, shapes)
    refused = [
        ("train", {**ok, "image": np.zeros((4, 4, 4))}, {"val_sse": 1.0, "n_val": 2}),   # a tensor not in the network
        ("train", {**ok, "w": np.zeros((3, 2))}, {"val_sse": 1.0, "n_val": 2}),          # wrong shape
        ("train", {**ok, "b": np.array([0, np.nan, 0])}, {"val_sse": 1.0, "n_val": 2}),  # diverged
        ("train", ok, {"val_sse": 1.0, "n_val": 2, "case_id": 3}),                      # a field not in the message
        ("validate", ok, {"val_sse": 1.0, "n_val": 2}),                                 # weights where none belong
        ("report", {}, {"n_held_out": "P011-0003"}),                                    # a string leaf
        ("report", {}, {"residuals": {"t1w+t2w+dwi": np.zeros((2, 8, 8)).tolist()}}),  # an image as lists
        ("report", {}, {"residuals": {"A011-0000": [0.1]}}),                           # an id as a key
        ("report", {}, {"counts": {"by_vendor": {"x" * 40: 1}}}),                      # a long label
    ]
    for task, params, metrics in refused:
        with pytest.raises(messages.MessageRefused):
            messages.check(task, params, metrics, {messages.NUM_STEPS: 5}, shapes)


@pytest.mark.slow
def test_a_failed_site_is_left_out_and_a_killed_run_resumes_after_its_last_round(site_manifests, tmp_path):
    """Two rounds, min_clients 1. The simulator (FLARE server and both clients) is killed with
    SIGKILL after round 1; the same run started again resumes at round 2, where site B's script
    fails: A finishes the round, the validation and the report alone."""
    import psutil

    from liverstiffness.errors import InputError
    from liverstiffness.federated import state
    from liverstiffness.stiffness.ensemble import Ensemble

    sites = {s: site_manifests[s] for s in ("A", "B")}
    out = tmp_path / "model"
    kw = {"min_clients": 1, "site_args": {"B": ["--fail-in-round", "1"]}}
    outcome = {}

    def first():
        try:
            _run(sites, out, rounds=2, **kw)
            outcome["finished"] = True
        except BaseException as exc:  # noqa: BLE001 - the killed run's error is the expected outcome
            outcome["error"] = exc

    thread = threading.Thread(target=first)
    thread.start()
    state_dir = out.parent / "model.federated" / "server"
    deadline = time.time() + 240
    while time.time() < deadline and (state.read_progress(state_dir) or {}).get("completed_rounds", 0) < 1:
        assert thread.is_alive(), outcome
        time.sleep(0.1)
    simulators = [p for p in psutil.Process().children(recursive=True)
                  if "nvflare.private.fed.app.simulator.simulator" in " ".join(p.cmdline())]
    assert simulators, "no FLARE simulator process found"
    os.killpg(simulators[0].pid, signal.SIGKILL)          # simulator_run starts it in its own session
    thread.join(120)
    done = state.read_progress(state_dir)["completed_rounds"]       # 1, or 2 on a slow poll
    assert isinstance(outcome.get("error"), InputError) and f"after round {done} of 2" in str(outcome["error"])
    assert not (out / "model.json").exists()

    run, folder = _run(sites, out, rounds=2, **kw)
    fed = Ensemble.load(folder, device="cpu").meta.metrics["federated"]
    assert fed["resumed_at"] == [done] and fed["sites_reported"] == ["A"] and fed["sites_validated"] == ["A"]
    trains = [(e["round"], e["site"]) for e in map(json.loads, (run.state_dir / state.AUDIT).read_text().splitlines())
              if e["task"] == "train"]
    assert sorted(trains) == [(0, "A"), (0, "B"), (1, "A")]      # round 1 was not repeated; B left out of round 2
    assert f"Resumed after round(s) {done}" in (folder / "MODEL_CARD.md").read_text()


def test_ridge_from_site_sums_is_the_pooled_ridge():
    from sklearn.linear_model import Ridge

    from liverstiffness.stiffness.baseline import features

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 5)) * [1, 10, 0.1, 3, 1] + [0, 5, 1, -2, 0]
    y = X @ [0.3, -0.02, 2.0, 0.1, 0.0] + rng.normal(scale=0.1, size=60)
    parts = [ridge.site_sums(X[s], y[s]) for s in (slice(0, 20), slice(20, 45), slice(45, 60))]
    mean, scale, coef, intercept = ridge.solve(ridge._add(parts), 3.0)
    Z = (X - X.mean(0)) / (X.std(0) + 1e-8)
    ref = Ridge(alpha=3.0).fit(Z, y)
    assert np.allclose(coef, ref.coef_, atol=1e-8) and np.isclose(intercept, ref.intercept_)
    pred = ((X - mean) / scale) @ coef + intercept
    assert np.isclose(ridge.sse(ridge._arrays(parts[1]), mean, scale, coef, intercept), np.sum((y[20:45] - pred[20:45]) ** 2))
    base, info = ridge.fit(parts, [f"f{i}" for i in range(5)])
    assert info["sites"] == 3 and base.alpha in ridge.ALPHAS and np.corrcoef(base.predict_log(X), y)[0, 1] > 0.95
    # The server names the features as stiffness.baseline.features does.
    from liverstiffness.federated.assemble import ridge_feature_names
    from liverstiffness.stiffness.covariates import ALL_COVARIATES

    images = rng.random((2, 5, 6, 8, 8)).astype(np.float32)
    images[:, 4] = 0
    images[:, 4, 2:4, 3:6, 3:6] = 1
    k = len(ALL_COVARIATES)
    _, names = features(images, np.zeros((2, k)), np.ones((2, k), bool), ("t1w", "t2w", "dwi", "adc", "mask"), 0.3)
    assert names == ridge_feature_names()


def test_pooled_metrics_and_interval_equal_those_of_the_pooled_exams():
    from liverstiffness.stiffness.evaluate import cv_metrics
    from liverstiffness.stiffness.interval import FULL

    rng = np.random.default_rng(1)
    y = rng.uniform(0.5, 2.0, 30)
    p = y + rng.normal(scale=0.2, size=30)
    sums = pooling.add_sums([pooling.agreement_sums(np.exp(y[s]), np.exp(p[s])) for s in (slice(0, 12), slice(12, 30))])
    assert pooling.metrics_from_sums(sums) == cv_metrics(y, p)
    cal = pooling.calibration([{FULL: sorted(np.abs(y - p)[:12])}, {FULL: sorted(np.abs(y - p)[12:])}], 0.8)
    low, high = cal.interval(np.array([[1.0]]))
    r = np.sort(np.abs(y - p))[int(np.ceil(0.8 * 31)) - 1]          # split conformal: the ⌈(1−α)(n+1)⌉-th residual
    assert np.allclose([low[0], high[0]], np.exp([1.0 - r, 1.0 + r]))


def test_bad_input_is_one_line_and_exit_2(site_manifests, tmp_path, capsys):
    from liverstiffness.cli.federated import main

    out = str(tmp_path / "m")
    base = ["--rounds", "1", "--local-epochs", "1", "--out", out]
    cases = [
        (["--site", f"A={site_manifests['A']}"], "at least two sites"),
        (["--site", f"A={site_manifests['A']}", "--site", f"B={site_manifests['B']}", "--min-clients", "3"], "--min-clients"),
        (["--site", f"A={site_manifests['A']}", "--site", f"C={site_manifests['C']}"], "at least 3"),
        (["--site", f"A={site_manifests['A']}", "--site", f"A={site_manifests['B']}"], "twice"),
        (["--site", f"server={site_manifests['A']}", "--site", f"B={site_manifests['B']}"], "not 'server'"),
        (["--site", f"A={site_manifests['A']}", "--site", f"B={tmp_path / 'none.csv'}"], "not found"),
    ]
    for args, words in cases:
        assert main(args + base) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and words in err and "\n" not in err
    assert not Path(out).exists() and not (tmp_path / "m.federated").exists()


def test_the_job_exports_for_a_provisioned_system(site_manifests, tmp_path):
    from liverstiffness.federated.job import CLIENT_IN_JOB, JOB_NAME, FederatedRun, export_job

    run = FederatedRun(sites={"A": Path("/data/a.csv"), "B": Path("/data/b.csv")}, out=Path("/srv/models/fed"),
                       recipe=_recipe(3), min_clients=2, synthetic=True)
    job = export_job(run, tmp_path / "job")
    assert job == tmp_path / "job" / JOB_NAME
    meta = json.loads((job / "meta.json").read_text())
    assert meta["min_clients"] == 2 and set(meta["deploy_map"]) == {"app_server", "app_A", "app_B"}
    server = json.loads((job / "app_server" / "config" / "config_fed_server.json").read_text())
    ctl = server["workflows"][0]
    assert ctl["path"] == "liverstiffness.federated.controller.FederatedStiffness"
    assert ctl["args"]["recipe"]["rounds"] == 3 and ctl["args"]["min_clients"] == 2
    client = json.loads((job / "app_A" / "config" / "config_fed_client.json").read_text())
    args = client["executors"][0]["executor"]["args"]
    assert args["task_script_path"] == CLIENT_IN_JOB and (job / "app_A" / "custom" / CLIENT_IN_JOB).is_file()
    assert "/data/a.csv" in args["task_script_args"] and "/data/b.csv" not in json.dumps(client)
