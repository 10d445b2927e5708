"""The synthetic cohort generator: labels, determinism, geometry, and disease physics."""
import numpy as np
import SimpleITK as sitk

from liverstiffness.imageio import read_dwi
from liverstiffness.manifest import read_manifest
from liverstiffness.phantom import DiseaseState, generate_cohort
from liverstiffness.phantom.anatomy import Patient, build_anatomy
from liverstiffness.phantom.cohort import sample_patient, sample_state, synthesize_exam
from liverstiffness.phantom.sites import SITES
from liverstiffness.phantom.tissues import TISSUES


def test_label_distribution_is_right_skewed_like_a_referral_cohort():
    rng = np.random.default_rng(0)
    kpa = []
    for _ in range(3000):
        p = sample_patient(rng, seed=0)
        s = sample_state(rng, p)
        kpa.append(s.stiffness_kpa(float(np.exp(rng.normal(0, 0.07)))))
    kpa = np.array(kpa)
    assert 2.6 <= np.median(kpa) <= 3.2                      # median near 2.8–3 kPa
    assert np.mean((kpa >= 1.5) & (kpa <= 8.0)) > 0.95        # most values 1.5–8 kPa
    assert kpa.max() < 13.0 and np.mean(kpa >= 5.0) > 0.03    # a cirrhotic tail, to ~12 kPa
    assert np.mean(kpa) > np.median(kpa)                      # right skew


def test_manifest_and_geometry_of_each_file(small_cohort):
    manifest, records, truth = small_cohort
    assert len(records) == 8 and len(truth) == 8
    for rec in records:
        site = SITES[rec.site].small()
        t1, t2, mask = (sitk.ReadImage(str(p)) for p in (rec.t1w, rec.t2w, rec.mask))
        dwi = sitk.ReadImage(str(rec.dwi))
        assert np.allclose(t1.GetSpacing(), site.t1w.spacing, atol=1e-4)
        assert np.allclose(t2.GetSpacing(), site.t2w.spacing, atol=1e-4)
        assert np.allclose(dwi.GetSpacing()[:3], site.dwi.spacing, atol=1e-4)
        assert dwi.GetDimension() == 4 and dwi.GetSize()[3] == len(site.b_values) == len(rec.dwi_b)
        # the mask is on the T1w grid, binary, and not empty
        assert mask.GetSize() == t1.GetSize() and np.allclose(mask.GetOrigin(), t1.GetOrigin())
        m = sitk.GetArrayFromImage(mask)
        assert set(np.unique(m)) == {0, 1}
        assert rec.vendor == SITES[rec.site].vendor and rec.field_strength == SITES[rec.site].field_t
        assert 0.5 < rec.stiffness_kpa < 20 and rec.facts.sex in ("F", "M")
    assert {r.site for r in records} == {"A", "B", "C"}


def test_same_seed_same_cohort_and_other_seed_differs(tmp_path):
    a = generate_cohort(tmp_path / "a", n=2, seed=5, sites=("B",), progress=False)
    b = generate_cohort(tmp_path / "b", n=2, seed=5, sites=("B",), progress=False)
    c = generate_cohort(tmp_path / "c", n=2, seed=6, sites=("B",), progress=False)
    ra, rb, rc = (read_manifest(m) for m in (a, b, c))
    assert [r.stiffness_kpa for r in ra] == [r.stiffness_kpa for r in rb]
    arr = lambda r: sitk.GetArrayFromImage(sitk.ReadImage(str(r.t2w)))  # noqa: E731
    assert np.array_equal(arr(ra[1]), arr(rb[1]))
    assert not np.array_equal(arr(ra[1]), arr(rc[1]))


def _exam(tmp_path, fibrosis, site="A"):
    patient = Patient(sex="F", age=50, bmi=26, seed=123)
    state = DiseaseState(fibrosis=fibrosis, inflammation=0.2, pdff=3.0)
    truth = synthesize_exam(tmp_path / f"f{fibrosis}", patient, state, SITES[site], "small", np.random.default_rng(9))
    return tmp_path / f"f{fibrosis}", truth


def test_fibrosis_moves_relaxation_diffusion_and_morphology_as_in_phantom_md(tmp_path):
    patient = Patient(sex="M", age=60, bmi=27, seed=7)
    maps = {}
    for f in (0.0, 4.0):
        anat = build_anatomy(patient, DiseaseState(f, 0.2, 2.0), 1.5, 3.0, (420, 340, 280), np.random.default_rng(3))
        maps[f] = anat
    liver = {f: maps[f].labels == TISSUES["liver"].label for f in maps}
    t1 = {f: np.median(maps[f].t1[liver[f]]) for f in maps}
    t2 = {f: np.median(maps[f].t2[liver[f]]) for f in maps}
    adc = {f: np.median(maps[f].adc[liver[f]]) for f in maps}
    assert 550 <= t1[0.0] <= 620 and 690 <= t1[4.0] <= 820           # 1.5 T, healthy → cirrhotic
    assert 43 <= t2[0.0] <= 49 and t2[4.0] - t2[0.0] >= 7
    assert adc[0.0] >= 1.3 and adc[0.0] <= 1.6 and 0.9 <= adc[4.0] <= 1.25
    tr0, tr4 = maps[0.0].truth, maps[4.0].truth
    assert tr0["caudate_right_lobe_ratio"] < 0.5 and tr4["caudate_right_lobe_ratio"] > 0.65
    assert tr4["spleen_length_mm"] > 130 > tr0["spleen_length_mm"]
    assert tr4["nodularity_amplitude"] > 5 * tr0["nodularity_amplitude"]
    # reticular heterogeneity: wider T2 spread in the cirrhotic liver
    spread = {f: np.std(maps[f].t2[liver[f]]) / t2[f] for f in maps}
    assert spread[4.0] > 2 * spread[0.0]


def test_fibrosis_is_visible_in_the_acquired_images(tmp_path):
    (d0, _), (d4, _) = _exam(tmp_path, 0.0), _exam(tmp_path, 4.0)
    out = {}
    for d in (d0, d4):
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(d / "mask.nii.gz"))) > 0
        dwi = read_dwi(d / "dwi.nii.gz", SITES["A"].b_values)
        adc = sitk.Resample(dwi.adc, sitk.ReadImage(str(d / "mask.nii.gz")), sitk.Transform(), sitk.sitkNearestNeighbor)
        out[d] = (np.median(sitk.GetArrayFromImage(adc)[mask]), mask.sum())
    assert out[d4][0] < out[d0][0] - 0.2      # liver ADC falls with fibrosis (≈0.08 per stage)


def test_small_case_is_fast(tmp_path):
    import time
    t = time.perf_counter()
    generate_cohort(tmp_path, n=2, seed=1, sites=("A",), progress=False)
    assert (time.perf_counter() - t) / 2 < 1.5  # generous bound for a loaded CI core; typically ~0.5 s
