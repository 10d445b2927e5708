"""Write a synthetic cohort: one folder of NIfTI files per exam and ``manifest.csv``.

Each sequence is its own NIfTI on its own grid (T1w and T2w 3-D, DWI 4-D with the site's
b-values in order); the liver mask, as an annotator would draw it, is on the T1w grid.
``cohort.json`` says how the cohort was made (generator, seed, sites, size);
``truth.csv`` beside the manifest keeps the latent state, morphology and scanner state of each
exam, and ``truth_labels.nii.gz`` in each exam folder the exact tissue labels on the T1w grid,
for tests and calibration; a model never reads either. ``mre.nii.gz`` and
``mre_confidence.nii.gz`` are the exam's elastogram as MRE would measure it (``elastogram.py``),
named in the manifest's ``mre_map`` and ``mre_confidence`` columns: what a hospital has beside the
number, and what dense training (``train --dense-weight``) learns from.

Who is scanned where, and with what disease, is drawn first (serially, from the cohort seed);
each exam is then synthesised from its own seed, so the cohort is the same with any number of
worker processes. The blood tests (AST, ALT, platelets; ``labs.py``) come from random streams of
their own, so they changed nothing else a seed makes.
"""
from __future__ import annotations

import csv
import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from ..errors import InputError
from ..manifest import ExamRecord, PatientFacts, write_manifest
from .anatomy import FOV_CENTRE, DiseaseState, Patient, build_anatomy
from .annotator import annotate, dice
from .disease import DEFAULT_MARKERS, Markers, advanced
from .elastogram import simulate
from .generators import GENERATORS, Generator
from .labs import draw_labs
from .sequences import (
    ExamPhysics,
    acquire,
    bias_field,
    dwi_signal,
    grid_image,
    resample,
    sequence_grid,
    t1w_signal,
    t2w_signal,
)
from .sites import SITES, SiteProfile

MRE_REPEATABILITY_CV = 0.08     # within-subject CV of MRE (test–retest 6–11 %): the label's noise floor
MRE_STREAM = 0x4D5245           # the elastogram's own random stream ("MRE"), beside [seed, exam]
REPEAT_EXAM_FRACTION = 0.15     # share of exams that are a patient's follow-up
PDFF_KNOWN_FRACTION = 0.85      # PDFF is often not measured
ANATOMY_SPACING_MM = {"small": 4.0, "normal": 2.0}
ANATOMY_FOV_MM = (420.0, 340.0, 280.0)
CENTRING_SD_MM = 6.0            # how far the technologist's field-of-view centre wanders


@dataclass
class SynthConfig:
    n: int
    seed: int = 0
    sites: tuple[str, ...] = ("A", "B", "C", "D")
    size: str = "small"
    workers: int = 1
    generator: str = "default"      # generators.GENERATORS: "default", or "other" (the second hospital)

    def validate(self) -> SynthConfig:
        if self.n < 1:
            raise InputError("--n", f"must be at least 1, got {self.n}")
        unknown = [s for s in self.sites if s not in SITES]
        if unknown or not self.sites:
            raise InputError("--sites", f"unknown site(s) {','.join(unknown) or '(none)'}; choose from {','.join(SITES)}")
        if self.size not in ANATOMY_SPACING_MM:
            raise InputError("--size", f"must be small or normal, got {self.size!r}")
        if self.workers < 1:
            raise InputError("--workers", f"must be at least 1, got {self.workers}")
        if self.generator not in GENERATORS:
            raise InputError("--generator", f"must be one of {', '.join(GENERATORS)}, got {self.generator!r}")
        return self


def sample_patient(rng: np.random.Generator, seed: int, held_out: bool = False,
                   generator: Generator = GENERATORS["default"]) -> Patient:
    """A patient whose anatomy comes from the generator's training templates (or its held-out ones)."""
    sex = "F" if rng.random() < 0.5 else "M"
    age = float(np.clip(rng.normal(52, 14), 18, 85))
    bmi = float(np.clip(np.exp(rng.normal(np.log(28.0), 0.18)), 18, 45))
    templates = generator.templates(held_out)
    template = int(templates[rng.integers(len(templates))])
    return Patient(sex=sex, age=round(age, 1), bmi=round(bmi, 1), seed=seed, template=template)


def sample_state(rng: np.random.Generator, patient: Patient) -> DiseaseState:
    pdff = float(np.clip(rng.normal(1.0 + 0.7 * (patient.bmi - 24.0), 5.0), 0.0, 35.0))
    # Weak associations with age and BMI (docs/phantom.md).
    f = float(np.clip(4.0 * rng.beta(1.3, 2.5) + 0.006 * (patient.age - 50), 0.0, 4.0))
    pdff *= 1.0 - 0.5 * advanced(f)          # fat fades in advanced disease ("burnt-out")
    inflammation = float(np.clip(rng.beta(1.5, 3.5) + 0.01 * pdff, 0.0, 1.0))
    # Hepatic iron: most livers low, a few overloaded (haemochromatosis, transfusions, ALD).
    iron = float(rng.gamma(1.5, 0.1) + (rng.uniform(0.4, 1.4) if rng.random() < 0.06 else 0.0))
    return DiseaseState(fibrosis=f, inflammation=inflammation, pdff=pdff, iron=iron)


def synthesize_exam(case_dir: Path, patient: Patient, state: DiseaseState, site: SiteProfile,
                    size: str, rng: np.random.Generator, markers: Markers = DEFAULT_MARKERS,
                    on_anatomy=None) -> dict:
    """Write t1w/t2w/dwi/mask/truth_labels NIfTI files of one exam; returns the ground truth.
    ``on_anatomy(anat)``, when given, runs after the images (the elastogram, ``_run``) and its
    dict joins the truth."""
    if size == "small":
        site = site.small()
    anat = build_anatomy(patient, state, site.field_t, ANATOMY_SPACING_MM[size], ANATOMY_FOV_MM, rng, markers)
    phys = ExamPhysics.sample(site, rng)
    centre = tuple(np.asarray(FOV_CENTRE) + rng.normal(0, CENTRING_SD_MM, 3))
    shifts = {k: rng.normal(0, site.shift_sd_mm) for k in ("t2w", "dwi")}  # breath-hold vs T1w
    t1_sig, t2_sig = t1w_signal(anat, site, phys), t2w_signal(anat, site, phys)
    level = lambda s: float(np.median(s[anat.liver]))
    t1 = acquire(anat, t1_sig, site, site.t1w, (0, 0, 0), site.noise * level(t1_sig), rng, centre=centre,
                 gain=phys.gain[0])
    t2 = acquire(anat, t2_sig, site, site.t2w, shifts["t2w"], site.noise * level(t2_sig), rng, centre=centre,
                 gain=phys.gain[1])
    dwi_bias = bias_field(sequence_grid(site.dwi, centre), site.bias_amplitude, rng)
    distortion = float(rng.uniform(0.3, 1.0) * site.dwi_distortion_mm)
    b0_level = level(dwi_signal(anat, site, 0.0, phys))
    dwi = sitk.JoinSeries([
        acquire(anat, dwi_signal(anat, site, b, phys), site, site.dwi, shifts["dwi"], site.dwi_noise * b0_level, rng,
                distortion_mm=distortion, bias=dwi_bias, centre=centre, gain=phys.gain[2])
        for b in site.b_values
    ])
    # The annotator draws the mask on the T1w grid from what the liver covers there.
    t1_grid = sequence_grid(site.t1w, centre)
    frac = sitk.GetArrayFromImage(resample(grid_image(anat.grid, anat.liver.astype(np.float32)), t1_grid))
    mask = sitk.GetImageFromArray(annotate(frac, t1_grid.origin, t1_grid.spacing, rng))
    mask.CopyInformation(t1)
    # Ground-truth tissue labels on the T1w grid (tissues.TISSUES): for QA tests, never a model input.
    labels = sitk.Resample(grid_image(anat.grid, anat.labels), t1, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    case_dir.mkdir(parents=True, exist_ok=True)
    for name, img in (("t1w", t1), ("t2w", t2), ("dwi", dwi), ("mask", mask), ("truth_labels", labels)):
        sitk.WriteImage(img, str(case_dir / f"{name}.nii.gz"), useCompression=True)
    truth = dict(anat.truth)
    truth.update({f"shift_{k}_{ax}_mm": float(v[i]) for k, v in shifts.items() for i, ax in enumerate("xyz")})
    truth["dwi_distortion_mm"] = distortion
    truth.update({"b1": phys.b1, "b1_lr": phys.b1_lr, "adc_exam_scale": phys.adc_scale, "perfusion": phys.perfusion,
                  "dwi_cardiac_loss": phys.cardiac_loss,
                  **{f"gain_{s}": g for s, g in zip(("t1w", "t2w", "dwi"), phys.gain)},
                  "mask_dice": dice(sitk.GetArrayViewFromImage(mask), frac > 0.5)})
    if on_anatomy is not None:
        truth.update(on_anatomy(anat))
    return truth


@dataclass
class _Exam:
    """One planned exam: everything drawn from the cohort's random stream."""

    index: int
    case_id: str
    patient: Patient
    state: DiseaseState
    site: SiteProfile


def _plan(cfg: SynthConfig) -> list[_Exam]:
    rng = np.random.default_rng(cfg.seed)
    generator = GENERATORS[cfg.generator]
    sites = generator.sites()
    plan, last, n_patients = [], None, 0
    for i in range(cfg.n):
        if last is not None and last["exams"] == 1 and rng.random() < REPEAT_EXAM_FRACTION:
            patient, site = last["patient"], last["site"]   # follow-up exam at the same site
            prev = last["state"]
            state = DiseaseState(float(np.clip(prev.fibrosis + rng.normal(0.1, 0.15), 0, 4)),
                                 float(np.clip(prev.inflammation + rng.normal(0, 0.1), 0, 1)),
                                 float(np.clip(prev.pdff + rng.normal(0, 1.5), 0, 35)), prev.iron)
            last["exams"] += 1
        else:
            site = sites[cfg.sites[n_patients % len(cfg.sites)]]
            patient = sample_patient(rng, seed=int(rng.integers(2**31)), held_out=site.held_out_anatomy,
                                     generator=generator)
            patient.pid = f"P{cfg.seed:03d}-{n_patients:04d}"  # sample_patient draws the body; the id is the cohort's
            n_patients += 1
            state = sample_state(rng, patient)
            last = {"patient": patient, "site": site, "state": state, "exams": 1}
        plan.append(_Exam(i, f"{site.name}{cfg.seed:03d}-{i:04d}", patient, state, site))
    return plan


def plan_exams(n: int, seed: int = 0, sites=("A", "B", "C", "D"), generator: str = "default") -> list[_Exam]:
    """Who is scanned where and with what disease, as ``generate_cohort`` would draw it, without
    synthesising images (fast: for checks of the patient facts, labels and blood tests)."""
    return _plan(SynthConfig(n=n, seed=seed, sites=tuple(sites), generator=generator).validate())


def exam_labs(exam: _Exam, cohort_seed: int) -> tuple[float | None, float | None, float | None]:
    """AST, ALT (U/L) and platelets (10⁹/L) of a planned exam (``labs.draw_labs``); None where not drawn."""
    p = exam.patient
    return draw_labs(exam.state, p.age, p.sex, p.bmi, p.seed, cohort_seed, exam.index)


def _run(job) -> tuple[ExamRecord, dict]:
    exam, out, cfg_seed, size, generator = job
    exam_rng = np.random.default_rng([cfg_seed, exam.index])
    d = Path(out) / exam.case_id
    label = {}

    def measure_mre(anat) -> dict:
        # The label's draw comes after the images' (as before elastograms existed); the map has
        # a random stream of its own, so the images and labels of a seed are what they were.
        kpa = round(float(exam.state.stiffness_kpa(float(np.exp(exam_rng.normal(0, MRE_REPEATABILITY_CV))))), 3)
        mre_rng = np.random.default_rng([cfg_seed, exam.index, MRE_STREAM])
        shift = mre_rng.normal(0, exam.site.shift_sd_mm)
        e = simulate(anat, exam.state.inflammation, kpa, shift, mre_rng)
        sitk.WriteImage(e.kpa, str(d / "mre.nii.gz"), useCompression=True)
        sitk.WriteImage(e.confidence, str(d / "mre_confidence.nii.gz"), useCompression=True)
        label["kpa"] = kpa
        return {"mre_roi_voxels": int(e.roi.sum()), "mre_roi_mean_kpa": round(e.roi_mean_kpa, 3),
                **{f"shift_mre_{ax}_mm": float(v) for ax, v in zip("xyz", shift)}}
    truth = synthesize_exam(d, exam.patient, exam.state, exam.site, size, exam_rng, GENERATORS[generator].markers,
                            on_anatomy=measure_mre)
    kpa = label["kpa"]
    pdff_known = exam_rng.random() < PDFF_KNOWN_FRACTION
    p, site = exam.patient, exam.site
    ast, alt, platelets = exam_labs(exam, cfg_seed)
    rec = ExamRecord(
        case_id=exam.case_id, patient_id=p.pid, site=site.name, vendor=site.vendor,
        field_strength=site.field_t, t1w=d / "t1w.nii.gz", t2w=d / "t2w.nii.gz", dwi=d / "dwi.nii.gz",
        mask=d / "mask.nii.gz", dwi_b=site.b_values, mre_map=d / "mre.nii.gz", mre_confidence=d / "mre_confidence.nii.gz",
        facts=PatientFacts(age=p.age, sex=p.sex, bmi=p.bmi, pdff=round(exam.state.pdff, 1) if pdff_known else None,
                           ast=ast, alt=alt, platelets=platelets),
        stiffness_kpa=kpa)
    return rec, {"case_id": exam.case_id, "stiffness_kpa_noiseless": exam.state.stiffness_kpa(), **truth}


def _worker_init() -> None:
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)   # one process per core instead


def generate_cohort(out: str | Path, n: int, seed: int = 0, sites=("A", "B", "C", "D"), size: str = "small",
                    progress: bool = True, workers: int = 1, generator: str = "default") -> Path:
    """Generate ``n`` exams under ``out``; returns the manifest path. Deterministic per seed and
    generator, whatever the number of ``workers`` (processes)."""
    cfg = SynthConfig(n=n, seed=seed, sites=tuple(sites), size=size, workers=workers, generator=generator).validate()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a folder")
    jobs = [(exam, str(out), cfg.seed, cfg.size, cfg.generator) for exam in _plan(cfg)]
    t0 = time.perf_counter()
    bar = tqdm(total=len(jobs), desc="synth", unit="exam", disable=not progress)
    results = []
    if cfg.workers > 1 and len(jobs) > 1:
        ctx = multiprocessing.get_context("spawn")   # no inherited SimpleITK thread pool
        with ProcessPoolExecutor(min(cfg.workers, len(jobs)), mp_context=ctx, initializer=_worker_init) as ex:
            for r in ex.map(_run, jobs, chunksize=2):
                results.append(r)
                bar.update()
    else:
        for job in jobs:
            results.append(_run(job))
            bar.update()
    bar.close()
    records, truths = [r[0] for r in results], [r[1] for r in results]
    manifest = out / "manifest.csv"
    write_manifest(manifest, records)
    with open(out / "truth.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(truths[0]))
        w.writeheader()
        w.writerows(truths)
    # How the cohort was made, so that a result can say which generator it is on.
    (out / "cohort.json").write_text(json.dumps({"generator": cfg.generator, "seed": cfg.seed, "sites": list(cfg.sites),
                                                 "size": cfg.size, "n": cfg.n}, indent=2) + "\n")
    if progress:
        print(f"wrote {cfg.n} exam(s) from site(s) {','.join(cfg.sites)} to {manifest} "
              f"in {time.perf_counter() - t0:.1f} s")
    return manifest
