"""The synthetic cohort generator: labels, determinism, geometry, anatomy, masks and disease physics."""
import csv

import numpy as np
import SimpleITK as sitk

from liverstiffness.imageio import read_dwi
from liverstiffness.manifest import read_manifest
from liverstiffness.phantom import DiseaseState, generate_cohort
from liverstiffness.phantom.anatomy import Patient, build_anatomy
from liverstiffness.phantom.atlas import HELD_OUT, TRAINING
from liverstiffness.phantom.cohort import SynthConfig, _plan, sample_patient, sample_state, synthesize_exam
from liverstiffness.phantom.disease import PersonTraits
from liverstiffness.phantom.sites import SITES
from liverstiffness.phantom.tissues import TISSUES

FOV = (420, 340, 280)


def _neutral(template=2, seed=7):
    """A patient with average biology (no person-level offsets), for physics checks."""
    p = Patient(sex="M", age=60, bmi=27, seed=seed, template=template)
    p.traits = PersonTraits()
    return p


def test_label_distribution_is_right_skewed_like_a_referral_cohort():
    rng = np.random.default_rng(0)
    kpa = []
    for _ in range(3000):
        p = sample_patient(rng, seed=0)
        s = sample_state(rng, p)
        kpa.append(s.stiffness_kpa(float(np.exp(rng.normal(0, 0.08)))))
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


def test_annotator_mask_is_close_to_the_truth_but_not_the_truth(small_cohort):
    _, records, truth = small_cohort
    for rec, row in zip(records, truth):
        m = sitk.GetArrayFromImage(sitk.ReadImage(str(rec.mask))) > 0
        labels = sitk.GetArrayFromImage(sitk.ReadImage(str(rec.t1w.parent / "truth_labels.nii.gz")))
        liver = labels == TISSUES["liver"].label
        assert 0.88 <= float(row["mask_dice"]) <= 0.985          # a voxel or two of boundary error
        assert (m & ~liver).any() and (liver & ~m).any()         # drawn, not copied: errors both ways
        # ... but it is the liver: most of the mask is liver tissue (the rest vessels and edge)
        assert (m & liver).sum() > 0.8 * m.sum()


def test_same_seed_same_cohort_other_seed_differs_and_workers_change_nothing(tmp_path):
    a = generate_cohort(tmp_path / "a", n=3, seed=5, sites=("B", "E"), progress=False)
    b = generate_cohort(tmp_path / "b", n=3, seed=5, sites=("B", "E"), progress=False, workers=2)
    c = generate_cohort(tmp_path / "c", n=3, seed=6, sites=("B", "E"), progress=False)
    ra, rb, rc = (read_manifest(m) for m in (a, b, c))
    assert [r.stiffness_kpa for r in ra] == [r.stiffness_kpa for r in rb]
    assert (tmp_path / "a" / "truth.csv").read_text() == (tmp_path / "b" / "truth.csv").read_text()
    arr = lambda p: sitk.GetArrayFromImage(sitk.ReadImage(str(p)))  # noqa: E731
    for x, y in zip(ra, rb):
        for key in ("t1w", "t2w", "dwi", "mask"):
            assert np.array_equal(arr(getattr(x, key)), arr(getattr(y, key)))
    assert not np.array_equal(arr(ra[1].t2w), arr(rc[1].t2w))


def test_training_sites_never_use_held_out_anatomy_and_site_e_only_uses_it():
    plan = _plan(SynthConfig(n=120, seed=3, sites=("A", "B", "C", "D", "E")))
    used = {}
    for exam in plan:
        used.setdefault(exam.site.name == "E", set()).add(exam.patient.template)
    assert used[False] <= set(TRAINING) and used[True] <= set(HELD_OUT)
    assert len(used[False]) >= 8 and len(used[True]) >= 3     # the pools are actually drawn from
    assert not set(TRAINING) & set(HELD_OUT)


def test_anatomy_varies_between_patients():
    rng = np.random.default_rng(1)
    vols, shapes = [], []
    for i in range(6):
        p = sample_patient(rng, seed=int(rng.integers(2**31)))
        a = build_anatomy(p, DiseaseState(1.0, 0.2, 5.0), 1.5, 4.0, FOV, np.random.default_rng(i))
        vols.append(a.truth["liver_volume_ml"])
        idx = np.argwhere(a.liver)
        shapes.append(np.sqrt(np.sort(np.linalg.eigvalsh(np.cov(idx.T)))))
        assert 900 < vols[-1] < 3200
    assert np.std(vols) / np.mean(vols) > 0.08                 # livers of different size ...
    ratios = np.array([s[1] / s[2] for s in shapes])
    assert np.ptp(ratios) > 0.08                                # ... and shape
    # one template, two people: the same organ, deformed differently
    p1, p2 = (Patient(sex="F", age=40, bmi=b, seed=s, template=TRAINING[0]) for s, b in ((1, 21), (2, 36)))
    a1, a2 = (build_anatomy(p, DiseaseState(1.0, 0.2, 5.0), 1.5, 4.0, FOV, np.random.default_rng(0)) for p in (p1, p2))
    inter = (a1.liver & a2.liver).sum()
    assert inter / min(a1.liver.sum(), a2.liver.sum()) < 0.95
    assert a2.truth["subcutaneous_fat_mm"] > a1.truth["subcutaneous_fat_mm"] + 5     # BMI 36 vs 21


def test_fibrosis_moves_relaxation_diffusion_and_morphology_as_in_phantom_md():
    patient = _neutral()
    maps = {f: build_anatomy(patient, DiseaseState(f, 0.2, 2.0), 1.5, 4.0, FOV, np.random.default_rng(3))
            for f in (0.0, 4.0)}
    liver = {f: maps[f].labels == TISSUES["liver"].label for f in maps}
    spleen = {f: maps[f].labels == TISSUES["spleen"].label for f in maps}
    t1, t2, adc = ({f: np.median(getattr(maps[f], k)[liver[f]]) for f in maps} for k in ("t1", "t2", "adc"))
    assert 550 <= t1[0.0] <= 620 and 690 <= t1[4.0] <= 820           # 1.5 T, healthy → cirrhotic
    assert 43 <= t2[0.0] <= 49 and t2[4.0] - t2[0.0] >= 7
    assert 1.3 <= adc[0.0] <= 1.6 and 0.9 <= adc[4.0] <= 1.25
    # The fall itself, not only the two ends: 0.05–0.1 × 10⁻³ mm²/s per stage (docs/phantom.md, AJR 2009);
    # the ranges above alone would pass a liver whose ADC hardly moved (1.30 → 1.25).
    assert 4 * 0.05 <= adc[0.0] - adc[4.0] <= 4 * 0.1, (adc[0.0], adc[4.0])
    tr0, tr4 = maps[0.0].truth, maps[4.0].truth
    assert tr4["caudate_right_lobe_ratio"] > 1.2 * tr0["caudate_right_lobe_ratio"]
    assert tr4["spleen_volume_ml"] > 1.6 * tr0["spleen_volume_ml"]     # splenomegaly
    assert tr4["nodularity_mm"] > 5 * tr0["nodularity_mm"]
    # the spleen's own values do not move with the liver's fibrosis: liver/spleen contrast changes
    for k in ("t2", "adc"):
        s0, s4 = (np.median(getattr(maps[f], k)[spleen[f]]) for f in maps)
        assert abs(s4 - s0) < 0.02 * s0
    # patchy fibrosis: the local stage spreads in the cirrhotic liver, not in the healthy one
    assert tr4["liver_stage_sd"] > 0.3 and tr0["liver_stage_sd"] == 0.0


def test_morphology_changes_mainly_at_f3_f4():
    patient = _neutral(template=TRAINING[3])
    tr = {f: build_anatomy(patient, DiseaseState(f, 0.2, 2.0), 1.5, 4.0, FOV, np.random.default_rng(3)).truth
          for f in (0.0, 2.0, 4.0)}
    early = tr[2.0]["spleen_volume_ml"] / tr[0.0]["spleen_volume_ml"]
    late = tr[4.0]["spleen_volume_ml"] / tr[2.0]["spleen_volume_ml"]
    assert late > 1.4 and early < 1.2
    assert tr[2.0]["nodularity_mm"] == tr[0.0]["nodularity_mm"] < tr[4.0]["nodularity_mm"]


def _exam(tmp_path, fibrosis, site="A"):
    state = DiseaseState(fibrosis=fibrosis, inflammation=0.2, pdff=3.0)
    synthesize_exam(tmp_path / f"f{fibrosis}", _neutral(seed=123), state, SITES[site], "small", np.random.default_rng(9))
    return tmp_path / f"f{fibrosis}"


def test_fibrosis_is_visible_in_the_acquired_images(tmp_path):
    out = {}
    for f in (0.0, 4.0):
        d = _exam(tmp_path, f)
        mask_img = sitk.ReadImage(str(d / "mask.nii.gz"))
        mask = sitk.GetArrayFromImage(mask_img) > 0
        labels = sitk.GetArrayFromImage(sitk.ReadImage(str(d / "truth_labels.nii.gz")))
        dwi = read_dwi(d / "dwi.nii.gz", SITES["A"].b_values)
        on_t1 = lambda img, mask_img=mask_img: sitk.GetArrayFromImage(  # noqa: E731
            sitk.Resample(img, mask_img, sitk.Transform(), sitk.sitkLinear))
        adc, t2 = on_t1(dwi.adc), on_t1(sitk.ReadImage(str(d / "t2w.nii.gz")))
        spleen = labels == TISSUES["spleen"].label
        out[f] = (np.median(adc[mask]), np.median(t2[mask]) / np.median(t2[spleen]))
    assert out[4.0][0] < out[0.0][0] - 0.2      # liver ADC falls with fibrosis (≈0.08 per stage)
    assert out[4.0][1] > 1.2 * out[0.0][1]      # and the liver brightens against the spleen on T2w


def test_sites_differ_in_contrast_not_only_in_scale():
    a, b = SITES["A"], SITES["B"]
    assert a.gre != b.gre and a.fse.fat_sat != b.fse.fat_sat and a.field_t != b.field_t
    assert len({s.b_values for s in SITES.values()}) >= 3
    assert any(len(s.b_values) == 2 for s in SITES.values())


def test_small_case_is_fast(tmp_path):
    import time
    t = time.perf_counter()
    generate_cohort(tmp_path, n=2, seed=1, sites=("A",), progress=False)
    assert (time.perf_counter() - t) / 2 < 3.0  # generous bound for a loaded CI core; typically ~0.8 s


def test_truth_csv_has_the_latent_state_and_the_scanner_state(small_cohort):
    manifest = small_cohort[0]
    with open(manifest.parent / "truth.csv") as fh:
        rows = list(csv.DictReader(fh))
    for key in ("stiffness_kpa_noiseless", "fibrosis", "iron", "template", "spleen_volume_ml",
                "caudate_right_lobe_ratio", "nodularity_mm", "mask_dice", "b1", "gain_t1w"):
        assert key in rows[0]
    assert all(int(float(r["template"])) in TRAINING for r in rows)


def test_the_other_hospital_generator_differs_in_anatomy_protocols_and_markers(tmp_path):
    """The second generator configuration (``synth --generator other``): another template split,
    other protocols on every site, weaker T1 and stronger ADC markers; the default is unchanged."""
    from liverstiffness.cli.main import main
    from liverstiffness.phantom.generators import GENERATORS

    default, other = GENERATORS["default"], GENERATORS["other"]
    assert default.sites() == SITES and default.templates(False) == TRAINING
    assert set(other.templates(True)) <= set(default.templates(False))          # E's anatomy: templates trained on by default
    assert set(default.templates(True)) <= set(other.templates(False))
    assert all(other.sites()[s] != SITES[s] and other.sites()[s].field_t == SITES[s].field_t for s in SITES)
    # Fibrosis moves the liver T1 less and the ADC more (same person, same exam seed, F0 against F4).
    shift = {}
    for g in (default, other):
        tr = {f: build_anatomy(_neutral(template=TRAINING[3]), DiseaseState(f, 0.2, 2.0), 1.5, 4.0, FOV,
                               np.random.default_rng(3), g.markers).truth for f in (0.0, 4.0)}
        shift[g.name] = (tr[4.0]["liver_t1_ms"] - tr[0.0]["liver_t1_ms"], tr[4.0]["liver_adc"] - tr[0.0]["liver_adc"])
    assert 0.45 < shift["other"][0] / shift["default"][0] < 0.8
    assert 1.05 < shift["other"][1] / shift["default"][1] < 1.4
    assert main(["synth", "--out", str(tmp_path / "o"), "--n", "2", "--seed", "5", "--sites", "A,E",
                 "--generator", "other", "--quiet"]) == 0
    import json
    assert json.loads((tmp_path / "o" / "cohort.json").read_text())["generator"] == "other"
    rows = list(csv.DictReader(open(tmp_path / "o" / "manifest.csv")))
    assert [r["dwi_b"] for r in rows] == ["50;500", "50;800"]                  # b = 50, not 0, as the lowest b
