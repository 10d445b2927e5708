"""Shared fixtures: small synthetic cohorts built once per test session, and the real scans."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

# Under pytest-xdist (`make test` runs one worker per core) each worker gets its share of the cores:
# torch, OpenMP and ITK would otherwise each start a thread per core in every worker, and on 2 cores
# two oversubscribed torch processes run several times slower than one. Set before torch is imported;
# child processes the tests start inherit it.
if os.environ.get("PYTEST_XDIST_WORKER"):
    _threads = str(max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"):
        os.environ.setdefault(_var, _threads)

import pytest  # noqa: E402

from liverstiffness.cli.main import main  # noqa: E402
from liverstiffness.dicom.synthetic_study import write_exam_study  # noqa: E402
from liverstiffness.manifest import read_manifest  # noqa: E402
from liverstiffness.phantom import generate_cohort  # noqa: E402

REAL = Path(__file__).resolve().parents[1] / "Data"      # Testing/Data: the real scans the tests read (README.md there)


@pytest.fixture(scope="session")
def small_cohort(tmp_path_factory):
    """Eight small exams from three sites; returns (manifest path, records, truth rows)."""
    out = tmp_path_factory.mktemp("cohort")
    manifest = generate_cohort(out, n=8, seed=11, sites=("A", "B", "C"), size="small", progress=False)
    truth = list(csv.DictReader(open(out / "truth.csv")))
    return manifest, read_manifest(manifest), truth


@pytest.fixture(scope="session")
def one_case(small_cohort):
    return small_cohort[1][0]


@pytest.fixture(scope="session")
def real_data():
    missing = [d for d in ("chaos_t2spir", "prostatex_0000_dicom") if not (REAL / d).is_dir()]
    if missing:
        pytest.fail(f"real test data missing: {', '.join(str(REAL / d) for d in missing)} "
                    "(Testing/Data is part of the repository; restore it from git)")
    return REAL


@pytest.fixture(scope="session")
def dicom_studies(small_cohort, tmp_path_factory):
    """One DICOM study per vendor layout: sites A, B, C of the shared small cohort written as studies,
    and sites D and E made by `liverstiffness synth --format dicom`. Returns manifest records."""
    records = []
    for rec in read_manifest(small_cohort[0])[:3]:      # sites A (GE 1.5 T), B (Siemens 3 T), C (Philips 1.5 T)
        rec.study = write_exam_study(rec, tmp_path_factory.mktemp(f"study_{rec.case_id}"))
        records.append(rec)
    out = tmp_path_factory.mktemp("synth_dicom")
    assert main(["synth", "--out", str(out), "--n", "2", "--seed", "5", "--sites", "D,E", "--format", "dicom", "--quiet"]) == 0
    records += read_manifest(out / "manifest.csv")
    assert {(r.vendor, float(r.field_strength)) for r in records} == {
        ("GE", 1.5), ("Siemens", 3.0), ("Philips", 1.5), ("Siemens", 1.5), ("GE", 3.0)}
    return records


@pytest.fixture(scope="session")
def tiny_model(small_cohort, tmp_path_factory):
    """A 2-fold, 2-epoch model of a small transformer: fast, for pipeline tests (not accuracy)."""
    from liverstiffness.stiffness.network import ModelConfig
    from liverstiffness.stiffness.train import TrainConfig, train_cv

    out = tmp_path_factory.mktemp("model")
    cfg = TrainConfig(folds=2, epochs=2, seed=0, register=False, workers=1, batch_size=4,
                      model=ModelConfig(hidden_size=32, mlp_dim=64, num_layers=2, num_heads=2))
    return train_cv(small_cohort[0], out, cfg, progress=False)


@pytest.fixture(scope="session")
def model_without_maps(small_cohort, tmp_path_factory):
    """A smaller model trained on the same cohort without its elastograms (``dense_weight`` 0): no
    map decoder, so no stiffness map, as every model trained before maps existed."""
    from liverstiffness.stiffness.network import ModelConfig
    from liverstiffness.stiffness.train import TrainConfig, train_cv

    cfg = TrainConfig(folds=2, epochs=1, seed=0, register=False, workers=1, batch_size=4, dense_weight=0.0,
                      model=ModelConfig(hidden_size=16, mlp_dim=32, num_layers=1, num_heads=2))
    return train_cv(small_cohort[0], tmp_path_factory.mktemp("model_without_maps"), cfg, progress=False)


@pytest.fixture(scope="session")
def study_case(dicom_studies):
    """The Siemens 1.5 T study: a dual-echo T1w, a fat-suppressed T2w distractor, three b-values."""
    return next(r for r in dicom_studies if r.vendor == "Siemens" and r.field_strength == 1.5)


@pytest.fixture(scope="session")
def predicted(study_case, tiny_model, tmp_path_factory):
    """`predict --study --dicom-out` on the Siemens 1.5 T study with the NAFLD table: (report, folder)."""
    out = tmp_path_factory.mktemp("pred_study")
    code = main(["predict", "--study", str(study_case.study), "--model", str(tiny_model), "--device", "cpu",
                 "--cutoffs", "nafld-liang-2023", "--out", str(out / "result"), "--dicom-out", str(out / "dicom")])
    assert code == 0
    return json.loads((out / "result" / "report.json").read_text()), out


@pytest.fixture
def scene():
    """A fresh MRML scene (PyPI slicer-core) set as slicer.mrmlScene, cleared afterwards. Imported
    here, not at the top: only the MRML tests pay for loading Slicer's libraries."""
    import slicer

    s = slicer.vtkMRMLScene()
    slicer.mrmlScene = s
    yield s
    s.Clear(1)


# The files that take longest on 2 cores (`pytest --durations`), heaviest first. pytest-xdist's
# --dist loadfile hands whole files to the workers in collection order: starting with the long ones
# keeps one worker from finishing the suite alone on a long file picked up last.
HEAVY_FIRST = ("test_segmentation.py", "test_learning.py", "test_web.py", "test_bundle.py", "test_web_subsets.py",
               "test_web_followup.py", "test_batch_faults.py", "test_model.py", "test_predict.py", "test_dicom_output.py",
               "test_federated.py", "test_web_stiffness_map.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))   # stable: file order kept otherwise
