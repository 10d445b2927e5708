"""The transformer learns from the images, and its maps point at what it learned.

A small phantom cohort gets its stiffness planted in one known region — the spleen's brightness
on T1w, T2w and DWI, outside the liver, where no liver statistic can see it — and a small model
is trained on it with the project's own training step and recipe. Then: training loss falls; the model beats the ridge baseline on
held-out exams by reading that region; its estimate varies across exams and collapses without the
image tokens; and its attention and gradient maps concentrate on the spleen (pointing game).
"""
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy import ndimage
from scipy.stats import pearsonr

from liverstiffness.imageio import read_dwi, read_mask, read_volume
from liverstiffness.phantom.tissues import TISSUES
from liverstiffness.preprocess import ExamImages, InputSpec, PreprocessOptions, prepare
from liverstiffness.stiffness.attention import compute_maps, map_summary
from liverstiffness.stiffness.baseline import RidgeBaseline, features
from liverstiffness.stiffness.data import CohortArrays
from liverstiffness.stiffness.ensemble import predict_log
from liverstiffness.stiffness.network import ModelConfig
from liverstiffness.stiffness.train import DistInfo, TrainConfig, train_fold

pytestmark = pytest.mark.slow   # trains a model on the planted-signal cohort

N_TRAIN, N_TEST = 144, 32
LIVER_NOISE_SD = 0.15     # the liver's own random factor (ln), which carries no label
SPLEEN_GAIN = 2.0         # ln of the spleen's brightness per unit of ln kPa


def _crop_and_spleen(rec):
    exam = ExamImages(read_volume(rec.t1w), read_volume(rec.t2w), read_dwi(rec.dwi, rec.dwi_b), read_mask(rec.mask))
    prep = prepare(exam, InputSpec(), PreprocessOptions(register=False))
    labels = sitk.ReadImage(str(rec.t1w.parent / "truth_labels.nii.gz"))
    on_crop = sitk.Resample(labels, prep.crop, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    return prep.tensor, sitk.GetArrayFromImage(on_crop) == TISSUES["spleen"].label


@pytest.fixture(scope="module")
def planted(small_cohort):
    """Crops of the phantom exams, each reused with a random label written into the brightness of
    its spleen on T1w, T2w and DWI (×2.2 per unit of ln kPa around the mean), while the liver's own
    signal gets a random factor that carries no label."""
    bases = [_crop_and_spleen(rec) for rec in small_cohort[1]]
    assert all(s.sum() > 20 for _, s in bases), "the spleen must lie inside the model's crop"
    rng = np.random.default_rng(0)
    n = N_TRAIN + N_TEST
    y = rng.uniform(np.log(2.0), np.log(8.0), n).astype(np.float32)
    # The phantom's own spleen brightness differs between exams (site parameters, iron, size):
    # each base exam's spleen is first brought to the cohort's typical level, so that the planted
    # factor is the only spleen signal (the texture stays).
    ref = [np.median([np.median(x[c][s]) for x, s in bases]) for c in (0, 1, 2)]
    images, spleens = [], []
    for i in range(n):
        x, spleen = bases[i % len(bases)]
        x = x.copy()
        liver = x[4] > 0.5
        for c in (0, 1, 2):
            x[c][spleen] *= ref[c] / np.median(x[c][spleen]) * np.exp(SPLEEN_GAIN * (y[i] - y.mean()))
        for c in (0, 1, 2):
            x[c][liver] *= np.exp(rng.normal(0, LIVER_NOISE_SD))
        images.append(x)
        spleens.append(spleen)
    records = [type("R", (), {"stiffness_kpa": float(np.exp(v)), "patient_id": str(i)})() for i, v in enumerate(y)]
    data = CohortArrays(np.stack(images), np.zeros((n, 4), np.float32), np.zeros((n, 4), bool), records, {})
    return data, np.stack(spleens)


@pytest.fixture(scope="module")
def trained(planted):
    data, _ = planted
    # The product's network (readout, stem input, linear term) and training recipe (site
    # augmentation, input dropout), only smaller. With the earlier mean readout this recipe did not
    # pick the spleen signal up at all (held-out r −0.13 to 0.14 in ten runs; docs/developing.md).
    cfg = TrainConfig(epochs=40, min_epochs=10, patience=40, batch_size=16, lr=1e-3,
                      model=ModelConfig(hidden_size=32, mlp_dim=64, num_layers=2, num_heads=2))
    idx = np.arange(N_TRAIN)
    log = []
    net, info = train_fold(data.subset(idx[:-16]), data.subset(idx[-16:]), cfg, 0, torch.device("cpu"),
                           DistInfo(), "planted", log.append)
    return net, log


def _test_part(planted):
    data, spleens = planted
    idx = np.arange(N_TRAIN, N_TRAIN + N_TEST)
    return data.subset(idx), spleens[idx]


def test_training_loss_falls(trained):
    _, log = trained
    mse = [e["train_mse"] for e in log if "train_mse" in e]
    assert np.mean(mse[-3:]) < 0.7 * np.mean(mse[:2])


def test_model_reads_the_spleen_where_a_liver_ridge_cannot(trained, planted):
    net, _ = trained
    data, _ = planted
    test, _ = _test_part(planted)
    pred = predict_log([net], test.images, test.cov, test.known, torch.device("cpu"), amp=False)[0]
    r_model = pearsonr(test.log_kpa, pred)[0]
    train = data.subset(np.arange(N_TRAIN))
    spec = InputSpec()
    X, names = features(train.images, train.cov, train.known, spec.channels, 0.288)
    Xt, _ = features(test.images, test.cov, test.known, spec.channels, 0.288)
    ridge = RidgeBaseline.fit(X, train.log_kpa, names)
    r_ridge = pearsonr(test.log_kpa, ridge.predict_log(Xt))[0]
    assert r_model > 0.5 and r_model > r_ridge + 0.3, (r_model, r_ridge)
    # The estimate varies across exams as the label does, and it comes from the image tokens:
    # without them the model has only the (label-free) summary and covariates.
    assert np.std(pred) > 0.25 * np.std(test.log_kpa)
    blind = predict_log([net], test.images, test.cov, test.known, torch.device("cpu"), amp=False,
                        variant="without_image_tokens")[0]
    assert abs(pearsonr(test.log_kpa, blind)[0]) < 0.4


@pytest.fixture(scope="module")
def pointing(trained, planted):
    """Pointing game (Zhang et al. 2016) on 12 held-out exams: does each map's hottest point fall
    on the spleen, within a voxel's tolerance (rollout: its top patch overlaps the spleen;
    gradient maps: the peak of the map smoothed over 3 voxels)? And how much of each map lies in
    the spleen against the spleen's share of the crop (what a uniform map would give: ratio 1)?
    A random peak would hit the (dilated) spleen about one time in twenty."""
    net, _ = trained
    test, spleens = _test_part(planted)
    cov, known = torch.zeros(1, 4), torch.zeros(1, 4, dtype=torch.bool)
    kinds = ("rollout", "saliency_t2w", "gradcam")
    ratio, hits = {k: [] for k in kinds}, {k: 0 for k in kinds}
    n, chance, informative = 12, [], []
    for x, spleen in zip(test.images[:n], spleens[:n]):
        maps, _ = compute_maps([net], torch.as_tensor(x[None]), cov, known, InputSpec().channels)
        chance.append(ndimage.binary_dilation(spleen).mean())
        for kind in kinds:
            m = maps[kind]
            assert m.mean() == pytest.approx(1.0, rel=1e-3)     # unit: times the uniform share
            ratio[kind].append(m[spleen].mean())              # = (share in spleen) / (spleen's share)
            if kind == "rollout":
                hits[kind] += bool(spleen[m >= 0.999 * m.max()].any())
            else:
                peak = np.unravel_index(np.argmax(ndimage.uniform_filter(m, 3)), m.shape)
                hits[kind] += bool(ndimage.binary_dilation(spleen)[peak])
        informative.append(map_summary(maps["saliency_t2w"])["informative"])
    assert np.mean(chance) < 0.1
    print("pointing game:", {k: round(float(np.mean(v)), 2) for k, v in ratio.items()}, hits)
    return {"n": n, "ratio": {k: float(np.mean(v)) for k, v in ratio.items()}, "hits": hits,
            "informative": informative}


def test_attention_rollout_and_saliency_point_at_the_spleen(pointing):
    """With the mean readout (every token weighed alike) a model that read the spleen (r 0.63)
    had maps that did not point at it (saliency 1.05 times the spleen's share, rollout near
    uniform); attention pooling with the feature maxima, on liver-relative input, singles the
    spleen out, and the maps follow. Rollout is a map of patch tokens (48 mm cubes of the crop):
    a patch that holds spleen holds its surroundings too, which dilutes its share in the spleen."""
    ratio, hits, n = pointing["ratio"], pointing["hits"], pointing["n"]
    assert ratio["rollout"] > 1.5 and ratio["saliency_t2w"] > 3.0, pointing
    assert hits["rollout"] >= n // 2 and hits["saliency_t2w"] >= n // 3, pointing
    assert all(pointing["informative"]), pointing


@pytest.mark.xfail(strict=True, reason=(
    "Known: trained with the product's recipe (site augmentation, input dropout, linear term), "
    "GradCAM on the conv stem does not concentrate on the spleen (0.65 times its share), while "
    "rollout and saliency do; without the regularisers it did (12 times). Strict: a pass is reported."))
def test_gradcam_points_at_the_spleen(pointing):
    assert pointing["ratio"]["gradcam"] > 3.0 and pointing["hits"]["gradcam"] >= pointing["n"] // 6, pointing
