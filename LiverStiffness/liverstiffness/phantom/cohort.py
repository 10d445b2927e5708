"""Write a synthetic cohort: one folder of NIfTI files per exam and ``manifest.csv``.

Each sequence is its own NIfTI on its own grid (T1w and T2w 3-D, DWI 4-D with the site's
b-values in order); the liver mask is on the T1w grid. ``truth.csv`` beside the manifest keeps the
latent state and morphology of each exam, and ``truth_labels.nii.gz`` in each exam folder the
tissue labels on the T1w grid, for tests; a model never reads either.
"""
from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from ..errors import InputError
from ..manifest import ExamRecord, PatientFacts, write_manifest
from .anatomy import FOV_CENTRE, DiseaseState, Patient, build_anatomy
from .sequences import acquire, bias_field, dwi_signal, grid_image, resample, sequence_grid, t1w_signal, t2w_signal
from .sites import SITES, SiteProfile

MRE_REPEATABILITY_CV = 0.07     # within-subject CV of MRE (5–10%): the label's noise floor
REPEAT_EXAM_FRACTION = 0.15     # share of exams that are a patient's follow-up
PDFF_KNOWN_FRACTION = 0.85      # PDFF is often not measured
ANATOMY_SPACING_MM = {"small": 3.0, "normal": 2.0}


@dataclass
class SynthConfig:
    n: int
    seed: int = 0
    sites: tuple[str, ...] = ("A", "B", "C", "D")
    size: str = "small"

    def validate(self) -> "SynthConfig":
        if self.n < 1:
            raise InputError("--n", f"must be at least 1, got {self.n}")
        unknown = [s for s in self.sites if s not in SITES]
        if unknown or not self.sites:
            raise InputError("--sites", f"unknown site(s) {','.join(unknown) or '(none)'}; choose from {','.join(SITES)}")
        if self.size not in ANATOMY_SPACING_MM:
            raise InputError("--size", f"must be small or normal, got {self.size!r}")
        return self


def sample_patient(rng: np.random.Generator, seed: int) -> Patient:
    sex = "F" if rng.random() < 0.5 else "M"
    age = float(np.clip(rng.normal(52, 14), 18, 85))
    bmi = float(np.clip(np.exp(rng.normal(np.log(28.0), 0.18)), 18, 45))
    return Patient(sex=sex, age=round(age, 1), bmi=round(bmi, 1), seed=seed)


def sample_state(rng: np.random.Generator, patient: Patient) -> DiseaseState:
    pdff = float(np.clip(rng.normal(1.0 + 0.7 * (patient.bmi - 24.0), 5.0), 0.0, 35.0))
    # Weak associations with age and BMI (PHANTOM.md).
    f = float(np.clip(4.0 * rng.beta(1.3, 2.5) + 0.006 * (patient.age - 50), 0.0, 4.0))
    inflammation = float(np.clip(rng.beta(1.5, 3.5) + 0.01 * pdff, 0.0, 1.0))
    return DiseaseState(fibrosis=f, inflammation=inflammation, pdff=pdff)


def synthesize_exam(case_dir: Path, patient: Patient, state: DiseaseState, site: SiteProfile,
                    size: str, rng: np.random.Generator) -> dict:
    """Write t1w/t2w/dwi/mask NIfTI files of one exam; returns the ground truth."""
    if size == "small":
        site = site.small()
    anat = build_anatomy(patient, state, site.field_t, ANATOMY_SPACING_MM[size], (420.0, 340.0, 280.0), rng)
    shifts = {k: rng.normal(0, site.shift_sd_mm) for k in ("t2w", "dwi")}  # breath-hold vs T1w
    t1_sig, t2_sig = t1w_signal(anat, site), t2w_signal(anat, site)
    level = lambda s: float(np.median(s[anat.liver]))  # noqa: E731 - liver signal for SNR
    t1 = acquire(anat, t1_sig, site, site.t1w, (0, 0, 0), site.noise * level(t1_sig), rng)
    t2 = acquire(anat, t2_sig, site, site.t2w, shifts["t2w"], site.noise * level(t2_sig), rng)
    dwi_bias = bias_field(sequence_grid(site.dwi, FOV_CENTRE), site.bias_amplitude, rng)
    distortion = float(rng.uniform(0.3, 1.0) * site.dwi_distortion_mm)
    b0_level = level(dwi_signal(anat, site, 0.0))
    dwi = sitk.JoinSeries([
        acquire(anat, dwi_signal(anat, site, b), site, site.dwi, shifts["dwi"], site.dwi_noise * b0_level, rng,
                distortion_mm=distortion, bias=dwi_bias)
        for b in site.b_values
    ])
    # The annotator draws the mask on the T1w grid (partial volume > 50 %).
    frac = resample(grid_image(anat.grid, anat.liver.astype(np.float32)), sequence_grid(site.t1w, FOV_CENTRE))
    mask = sitk.Cast(frac > 0.5, sitk.sitkUInt8)
    mask.CopyInformation(t1)
    # Ground-truth tissue labels on the T1w grid (tissues.TISSUES): for QA tests, never a model input.
    labels = sitk.Resample(grid_image(anat.grid, anat.labels), t1, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    case_dir.mkdir(parents=True, exist_ok=True)
    for name, img in (("t1w", t1), ("t2w", t2), ("dwi", dwi), ("mask", mask), ("truth_labels", labels)):
        sitk.WriteImage(img, str(case_dir / f"{name}.nii.gz"), useCompression=True)
    truth = dict(anat.truth)
    truth.update({f"shift_{k}_{ax}_mm": float(v[i]) for k, v in shifts.items() for i, ax in enumerate("xyz")})
    truth["dwi_distortion_mm"] = distortion
    return truth


def generate_cohort(out: str | Path, n: int, seed: int = 0, sites=("A", "B", "C", "D"), size: str = "small",
                    progress: bool = True) -> Path:
    """Generate ``n`` exams under ``out``; returns the manifest path. Deterministic per seed."""
    cfg = SynthConfig(n=n, seed=seed, sites=tuple(sites), size=size).validate()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a folder")
    rng = np.random.default_rng(cfg.seed)
    records, truths, last = [], [], None
    t0 = time.perf_counter()
    for i in tqdm(range(cfg.n), desc="synth", unit="exam", disable=not progress):
        if last is not None and last["exams"] == 1 and rng.random() < REPEAT_EXAM_FRACTION:
            patient, site = last["patient"], last["site"]   # follow-up exam at the same site
            prev = last["state"]
            state = DiseaseState(float(np.clip(prev.fibrosis + rng.normal(0.1, 0.15), 0, 4)),
                                 float(np.clip(prev.inflammation + rng.normal(0, 0.1), 0, 1)),
                                 float(np.clip(prev.pdff + rng.normal(0, 1.5), 0, 35)))
            last["exams"] += 1
        else:
            pid = len({r.patient_id for r in records})
            site = SITES[cfg.sites[pid % len(cfg.sites)]]
            patient = sample_patient(rng, seed=int(rng.integers(2**31)))
            patient.pid = f"P{cfg.seed:03d}-{pid:04d}"  # sample_patient draws the body; the id is the cohort's
            state = sample_state(rng, patient)
            last = {"patient": patient, "site": site, "state": state, "exams": 1}
        case_id = f"{site.name}{cfg.seed:03d}-{i:04d}"
        exam_rng = np.random.default_rng([cfg.seed, i])
        truth = synthesize_exam(out / case_id, patient, state, site, cfg.size, exam_rng)
        kpa = state.stiffness_kpa(float(np.exp(exam_rng.normal(0, MRE_REPEATABILITY_CV))))
        pdff_known = exam_rng.random() < PDFF_KNOWN_FRACTION
        d = out / case_id
        records.append(ExamRecord(
            case_id=case_id, patient_id=patient.pid, site=site.name, vendor=site.vendor,
            field_strength=site.field_t, t1w=d / "t1w.nii.gz", t2w=d / "t2w.nii.gz", dwi=d / "dwi.nii.gz",
            mask=d / "mask.nii.gz", dwi_b=site.b_values,
            facts=PatientFacts(age=patient.age, sex=patient.sex, bmi=patient.bmi,
                               pdff=round(state.pdff, 1) if pdff_known else None),
            stiffness_kpa=round(float(kpa), 3)))
        truths.append({"case_id": case_id, "stiffness_kpa_noiseless": state.stiffness_kpa(), **truth})
    manifest = out / "manifest.csv"
    write_manifest(manifest, records)
    with open(out / "truth.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(truths[0]))
        w.writeheader()
        w.writerows(truths)
    if progress:
        print(f"wrote {cfg.n} exam(s) from site(s) {','.join(cfg.sites)} to {manifest} "
              f"in {time.perf_counter() - t0:.1f} s")
    return manifest
