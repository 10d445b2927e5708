"""Training with elastograms and the stiffness map ``predict`` writes (stiffness/dense.py)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from liverstiffness.cli.main import main
from liverstiffness.preprocess import InputSpec, PreprocessOptions
from liverstiffness.stiffness.data import load_cohort
from liverstiffness.stiffness.dense import dense_loss, map_agreement, regions
from liverstiffness.stiffness.network import ModelConfig, StiffnessTransformer

SMALL = ModelConfig(hidden_size=32, mlp_dim=64, num_layers=2, num_heads=2, map_decoder=True)


@pytest.fixture(scope="module")
def cohort(small_cohort, tmp_path_factory):
    return load_cohort(small_cohort[1], InputSpec(), PreprocessOptions(register=False),
                       tmp_path_factory.mktemp("dense_cache"), 1, False)


def test_elastogram_targets_sit_on_the_liver_in_the_mre_slab(cohort):
    liver = cohort.images[:, 4] > 0.5
    assert cohort.has_maps and cohort.dense.shape == (8, 2, 24, 40, 64)
    for i, rec in enumerate(cohort.records):
        target, w = cohort.dense[i, 0], cohort.dense[i, 1] > 0
        slices = np.flatnonzero(w.any(axis=(1, 2)))
        # 4 × 10 mm of MRE on the crop's 8 mm slices, only inside the liver.
        assert 3 <= len(slices) <= 7 and np.ptp(slices) <= 6 and not (w & ~liver[i]).any()
        assert np.exp(target[w]).mean() == pytest.approx(rec.stiffness_kpa, rel=0.15)


def test_map_is_centred_on_the_estimate_and_the_dense_loss_weighs_only_targets(cohort):
    torch.manual_seed(0)
    net = StiffnessTransformer(SMALL).eval()
    x = torch.as_tensor(cohort.images[:2])
    est, log_map = net(x, torch.as_tensor(cohort.cov[:2]), torch.as_tensor(cohort.known[:2]), return_map=True)
    liver = x[:, 4] > 0.5
    for i in range(2):     # the map's geometric mean over the liver is the estimate
        assert log_map[i][liver[i]].mean().item() == pytest.approx(est[i].item(), abs=1e-4)
    t = torch.as_tensor(cohort.dense[:2]).clone()
    far = t.clone()
    far[:, 0] += 5.0 * (1 - t[:, 1])    # wrong values where the weight is 0 change nothing
    assert dense_loss(log_map, t).item() == pytest.approx(dense_loss(log_map, far).item())
    t[:, 1] = 0
    assert dense_loss(log_map, t).item() == 0.0
    with pytest.raises(ValueError, match="no map decoder"):
        StiffnessTransformer(ModelConfig(hidden_size=32, mlp_dim=64, num_layers=2, num_heads=2))(
            x, torch.as_tensor(cohort.cov[:2]), torch.as_tensor(cohort.known[:2]), return_map=True)


@pytest.mark.slow
def test_training_with_maps_learns_them(cohort):
    from liverstiffness.stiffness.train import DistInfo, TrainConfig, train_fold

    logs = []
    cfg = TrainConfig(epochs=12, min_epochs=1, batch_size=4, lr=2e-3, warmup_epochs=1, model=SMALL, augment=True)
    net, _ = train_fold(cohort.subset(range(6)), cohort.subset([6, 7]), cfg, 0, torch.device("cpu"), DistInfo(),
                        "maps", logs.append)
    mse = [e["train_map_mse"] for e in logs if "train_map_mse" in e]
    assert len(mse) == 12 and np.mean(mse[-3:]) < 0.6 * np.mean(mse[:2]), mse
    # Without the dense loss there is no map loss to log.
    logs.clear()
    train_fold(cohort.subset(range(6)), cohort.subset([6, 7]), TrainConfig(epochs=1, min_epochs=1, model=SMALL,
               dense_weight=0.0), 0, torch.device("cpu"), DistInfo(), "no maps", logs.append)
    assert not any("train_map_mse" in e for e in logs)


def test_map_agreement_scores_a_perfect_and_a_flat_map(cohort):
    truth = cohort.dense[:, 0].astype(np.float64)
    liver = cohort.images[:, 4]
    perfect = map_agreement(truth, cohort.dense, liver)
    assert perfect["voxel_r"] == 1.0 and perfect["region_r"] == 1.0 and perfect["within_20_percent"] == 1.0
    flat = np.zeros_like(truth) + np.log(2.5)
    m = map_agreement(flat, cohort.dense, liver)
    assert np.isnan(m["voxel_r"]) and m["voxel_r_ci95"] is None and m["within_20_percent"] < 1.0
    names = set(regions(liver[0] > 0.5))
    assert {"right lobe", "left lobe"} <= names and len(names) == 10


def test_predict_writes_the_stiffness_map_in_kpa(tiny_model, one_case, tmp_path):
    """The shared tiny model was trained on the small cohort, which has elastograms: it has a map."""
    meta = json.loads((tiny_model / "model.json").read_text())
    assert meta["architecture"]["map_decoder"] is True
    assert "A map decoder" in (tiny_model / "MODEL_CARD.md").read_text()
    out = tmp_path / "res"
    assert main(["predict", "--model", str(tiny_model), "--t1w", str(one_case.t1w), "--t2w", str(one_case.t2w),
                 "--dwi", str(one_case.dwi), "--dwi-b", ",".join(str(b) for b in one_case.dwi_b),
                 "--mask", str(one_case.mask), "--no-qa", "--out", str(out)]) == 0
    rep = json.loads((out / "report.json").read_text())
    sm = rep["stiffness_map"]
    assert sm["unit"] == "kPa" and "not a measurement" in sm["note"] and rep["schema_version"] == 3
    assert {"right lobe", "left lobe"} <= set(sm["regions_kpa"])
    img = sitk.ReadImage(str(out / rep["outputs"]["stiffness_map"]))
    arr = sitk.GetArrayFromImage(img)
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(one_case.mask))) > 0
    assert img.GetSize() == sitk.ReadImage(str(one_case.t1w)).GetSize()     # on the reference (T1w) grid
    assert (arr[~mask] == 0).all() and (arr[mask] > 0).mean() > 0.95
    inside = arr[mask & (arr > 0)]
    # Carried back to the T1w grid: its geometric mean over the liver stays near the estimate.
    assert np.exp(np.log(inside).mean()) == pytest.approx(rep["stiffness_kpa"], rel=0.1)
    assert (out / rep["outputs"]["stiffness_map_montage"]).stat().st_size > 10_000


@pytest.mark.slow
def test_a_model_trained_without_maps_writes_none(small_cohort, model_without_maps, tmp_path):
    model = model_without_maps
    assert json.loads((model / "model.json").read_text())["architecture"]["map_decoder"] is False
    assert "no stiffness map" in (model / "MODEL_CARD.md").read_text()
    rec = small_cohort[1][1]
    out = tmp_path / "res"
    assert main(["predict", "--model", str(model), "--t1w", str(rec.t1w), "--mask", str(rec.mask), "--no-qa",
                 "--no-montage", "--out", str(out)]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert "stiffness_map" not in rep and "stiffness_map" not in rep["outputs"]


def test_evaluate_scores_the_map_against_the_elastograms(tiny_model, small_cohort, tmp_path, capsys):
    assert main(["evaluate", "--model", str(tiny_model), "--manifest", str(small_cohort[0]), "--out",
                 str(tmp_path / "ev"), "--device", "cpu", "--quiet"]) == 0
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())["stiffness_map"]
    assert m["n_exams"] == 8 and m["n_voxels"] > 1000
    assert -1 <= m["voxel_r"] <= 1 and m["voxel_r_ci95"][0] <= m["voxel_r"] <= m["voxel_r_ci95"][1]
    assert 0 <= m["within_20_percent"] <= 1 and "region_r" in m
    assert "stiffness map vs elastograms (8 exams)" in capsys.readouterr().out
