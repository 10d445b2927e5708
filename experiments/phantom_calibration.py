"""How strong is each marker in the synthetic cohorts? The phantom's calibration table.

    python -m experiments.phantom_calibration [--n-train 300] [--n-test 90] [--workers 2] [--work DIR]
                                        [--no-project-ridge] [--no-register] [--out calibration.md]
    (from the repository root, as a module: it imports ``bench/results_md.py``)

Generates (or reuses, when the manifest is there) a training cohort from sites A–D and an
external cohort from site E (held-out anatomy templates), then measures, per exam:

- simple liver statistics, from the images and the annotator's mask (what a summary-statistics
  model sees): per-sequence liver mean in vendor units and as a ratio to the body's median in the
  model's crop, liver CV, p90/p10, texture, ADC, volume, surface roughness, principal proportions;
- spatial markers, from the images and the exact tissue labels (``truth_labels.nii.gz``) with
  the sequences aligned by the known breath-hold shifts: liver-to-spleen and liver-to-muscle
  signal ratios, spleen volume, caudate/right-lobe ratio, surface nodularity, regional
  heterogeneity and its signature across sequences (fibrotic patches brighten T2w and darken T1w;
  focal fat brightens both);

and prints each one's Pearson r with the kPa label, then three ridge regressions trained on A–D
and tested on E (Pearson r of predicted against labelled kPa): the project's own baseline
(``liverstiffness.stiffness.baseline`` on the model's preprocessed crops), a ridge on the simple
statistics, and an "oracle" ridge that also gets the spatial markers (how much information a
model that reads the images spatially could find) — and the label-noise ceiling (r of the
noiseless with the noisy label). Targets (issue 14, docs/phantom.md): simple statistics |r| ≤ 0.5,
project ridge on E ≤ ~0.65, oracle ≥ 0.85, ceiling ~0.95.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from liverstiffness.imageio import read_dwi
from liverstiffness.manifest import read_manifest
from liverstiffness.phantom import generate_cohort
from liverstiffness.phantom.tissues import TISSUES

ROOT = Path(__file__).resolve().parents[1]

CROP_MM = (384.0, 240.0, 192.0)     # the model's liver-centred crop (preprocess.InputSpec)
L = {name: t.label for name, t in TISSUES.items()}
SEQS = ("t1w", "t2w", "dwi")
SIMPLE = [f"{s}_{k}" for s in SEQS for k in ("raw", "body_ratio", "cv", "p90_p10", "texture")] + \
    ["adc_mean", "adc_cv", "liver_volume_ml", "surface_roughness", "axis_ratio_2_1", "axis_ratio_3_1"]
SPATIAL = ["t1w_liver_spleen", "t2w_liver_spleen", "dwi_liver_spleen", "adc_liver_spleen",
           "t1w_liver_muscle", "t2w_liver_muscle", "dwi_liver_muscle",
           "spleen_volume_ml", "spleen_to_liver_volume", "caudate_right_lobe_ratio", "nodularity_mm", "perihepatic_fluid_ml",
           "t2w_regional_cv", "t1w_regional_cv", "adc_regional_cv", "t1w_t2w_anticorrelation", "t2w_adc_anticorrelation",
           "fibrosis_pattern_sd"]
COVARIATES = ["age", "sex_m", "bmi", "pdff", "pdff_known"]


def _on(img: sitk.Image, ref: sitk.Image, shift=None, nearest=False) -> np.ndarray:
    tr = sitk.TranslationTransform(3, [float(s) for s in shift]) if shift is not None else sitk.Transform()
    interp = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    return sitk.GetArrayFromImage(sitk.Resample(img, ref, tr, interp, 0.0, sitk.sitkFloat32))


def _surface_roughness(m: np.ndarray, sp) -> float:
    """Exposed voxel-face area over volume^(2/3) (a sphere gives ~4.8 on a fine grid)."""
    area = 0.0
    for ax, (a, b) in enumerate(((1, 2), (0, 2), (0, 1))):
        faces = np.abs(np.diff(np.pad(m.astype(np.int8), [(1, 1) if i == ax else (0, 0) for i in range(3)]), axis=ax)).sum()
        area += faces * sp[a] * sp[b]
    vol = m.sum() * np.prod(sp)
    return float(area / vol ** (2 / 3))


def _blocks(arr, m, k):
    """Means of ``arr`` over blocks of k (z, y, x) voxels that lie mostly inside ``m``."""
    sh = [s // kk * kk for s, kk in zip(arr.shape, k)]
    a = arr[:sh[0], :sh[1], :sh[2]] * m[:sh[0], :sh[1], :sh[2]]
    mm = m[:sh[0], :sh[1], :sh[2]].astype(float)
    r = lambda x: x.reshape(sh[0] // k[0], k[0], sh[1] // k[1], k[1], sh[2] // k[2], k[2]).sum((1, 3, 5))
    s, n = r(a), r(mm)
    ok = n >= 0.8 * np.prod(k)
    return s[ok] / n[ok]


def measure(job) -> dict:
    rec_row, truth_row = job
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    rec = rec_row
    t1 = sitk.ReadImage(str(rec.t1w), sitk.sitkFloat32)
    sp = np.array(t1.GetSpacing())[::-1]          # z, y, x
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(rec.mask))) > 0
    lab = sitk.GetArrayFromImage(sitk.ReadImage(str(rec.t1w.parent / "truth_labels.nii.gz")))
    dwi = read_dwi(rec.dwi, rec.dwi_b)
    shift = {s: [float(truth_row[f"shift_{s}_{ax}_mm"]) for ax in "xyz"] for s in ("t2w", "dwi")}
    t2 = sitk.ReadImage(str(rec.t2w), sitk.sitkFloat32)
    raw = {"t1w": sitk.GetArrayFromImage(t1), "t2w": _on(t2, t1), "dwi": _on(dwi.high_b, t1)}
    aligned = {"t1w": raw["t1w"], "t2w": _on(t2, t1, shift["t2w"]), "dwi": _on(dwi.high_b, t1, shift["dwi"])}
    adc_raw = _on(dwi.adc, t1) if dwi.adc is not None else None
    adc_al = _on(dwi.adc, t1, shift["dwi"]) if dwi.adc is not None else None
    out = {"case_id": rec.case_id, "site": rec.site, "patient_id": rec.patient_id, "kpa": rec.stiffness_kpa,
           "kpa_noiseless": float(truth_row["stiffness_kpa_noiseless"]),
           "age": rec.facts.age, "sex_m": float(rec.facts.sex == "M"), "bmi": rec.facts.bmi,
           "pdff": rec.facts.pdff if rec.facts.pdff is not None else 0.0, "pdff_known": float(rec.facts.pdff is not None)}

    # --- simple liver statistics (annotator mask) ---
    centre = np.argwhere(mask).mean(0)
    half = (np.array(CROP_MM)[::-1] / 2 / sp).astype(int)
    box = tuple(slice(max(int(c - h), 0), int(c + h)) for c, h in zip(centre, half))
    t1c = raw["t1w"][box]
    body = t1c > 0.1 * np.percentile(t1c, 99)
    body = np.stack([ndimage.binary_fill_holes(b) for b in body])
    inner = ndimage.binary_erosion(mask, np.ones((1, 3, 3)))
    for s in SEQS:
        v = raw[s][mask]
        out[f"{s}_raw"] = float(v.mean())
        out[f"{s}_body_ratio"] = float(np.median(v) / np.median(raw[s][box][body]))
        out[f"{s}_cv"] = float(v.std() / v.mean())
        out[f"{s}_p90_p10"] = float(np.percentile(v, 90) / max(np.percentile(v, 10), 1e-6))
        lap = ndimage.laplace(raw[s])[inner]
        out[f"{s}_texture"] = float(np.abs(lap).mean() / v.mean())
    if adc_raw is not None:
        out["adc_mean"] = float(np.median(adc_raw[mask]))
        out["adc_cv"] = float(adc_raw[mask].std() / max(adc_raw[mask].mean(), 1e-6))
    else:
        out["adc_mean"] = out["adc_cv"] = np.nan
    out["liver_volume_ml"] = float(mask.sum() * np.prod(sp) / 1000)
    out["surface_roughness"] = _surface_roughness(mask, sp)
    pts = np.argwhere(mask) * sp
    ev = np.sort(np.linalg.eigvalsh(np.cov(pts.T)))[::-1]
    out["axis_ratio_2_1"], out["axis_ratio_3_1"] = float(np.sqrt(ev[1] / ev[0])), float(np.sqrt(ev[2] / ev[0]))

    # --- spatial markers (exact labels, sequences aligned) ---
    ero = lambda m: ndimage.binary_erosion(m, np.ones((1, 3, 3)))
    liver_p, spleen, muscle = ero(lab == L["liver"]), ero(lab == L["spleen"]), ero(lab == L["muscle"])
    for s in SEQS:
        lv = np.median(aligned[s][liver_p])
        out[f"{s}_liver_spleen"] = float(lv / np.median(aligned[s][spleen])) if spleen.any() else np.nan
        if s != "adc":
            out[f"{s}_liver_muscle"] = float(lv / np.median(aligned[s][muscle]))
    out["adc_liver_spleen"] = float(np.median(adc_al[liver_p]) / np.median(adc_al[spleen])) \
        if adc_al is not None and spleen.any() else np.nan
    out["spleen_volume_ml"] = float(truth_row["spleen_volume_ml"])
    out["spleen_to_liver_volume"] = out["spleen_volume_ml"] / float(truth_row["liver_volume_ml"])
    out["caudate_right_lobe_ratio"] = float(truth_row["caudate_right_lobe_ratio"])
    out["nodularity_mm"] = float(truth_row["nodularity_mm"])
    near_liver = ndimage.distance_transform_edt(~np.isin(lab, (L["liver"], L["blood"])), sampling=sp) < 15.0
    out["perihepatic_fluid_ml"] = float((near_liver & (lab == L["fluid"])).sum() * np.prod(sp) / 1000)
    k = tuple(max(1, round(b / s)) for b, s in zip((16.0, 16.0, 16.0), sp))
    bl = {s: _blocks(aligned[s], liver_p, k) for s in SEQS}
    bl["adc"] = _blocks(adc_al, liver_p, k) if adc_al is not None else None
    for s in ("t1w", "t2w", "adc"):
        b = bl[s]
        out[f"{s}_regional_cv"] = float(b.std() / b.mean()) if b is not None and len(b) > 3 else np.nan
    z = {s: (b - b.mean()) / (b.std() + 1e-9) for s, b in bl.items() if b is not None and len(b) > 3}
    out["t1w_t2w_anticorrelation"] = float(-np.mean(z["t1w"] * z["t2w"])) if "t2w" in z else np.nan
    out["t2w_adc_anticorrelation"] = float(-np.mean(z["t2w"] * z["adc"])) if "adc" in z else np.nan
    # Amplitude of the regional pattern along the direction fibrosis moves a block (T2w up, T1w
    # and ADC down), in relative units; normal perfusion patches (T2w and ADC up) and focal fat
    # (T1w up) mostly fall outside it.
    if bl["adc"] is not None and len(bl["t1w"]) > 3:
        rel = {s: b / np.median(b) - 1 for s, b in bl.items()}
        out["fibrosis_pattern_sd"] = float(np.std(rel["t2w"] - rel["t1w"] - rel["adc"]))
    else:
        out["fibrosis_pattern_sd"] = np.nan
    return out


def pearson(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    ok = np.isfinite(a) & np.isfinite(b)
    return float(np.corrcoef(a[ok], b[ok])[0, 1]) if ok.sum() > 3 else float("nan")


def _matrix(rows, names, fill=None):
    X = np.array([[r.get(n, np.nan) for n in names] for r in rows], float)
    fill = np.nanmedian(X, axis=0) if fill is None else fill
    return np.where(np.isfinite(X), X, fill), fill


def ridge_r(train, test, names) -> tuple[float, float]:
    """Ridge (ln kPa) trained on ``train``, Pearson r of kPa on ``test``, and 5-fold
    patient-grouped CV r inside ``train``."""
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import GroupKFold

    def fit_predict(tr, te):
        Xtr, fill = _matrix(tr, names)
        Xte, _ = _matrix(te, names, fill)
        mu, sd = Xtr.mean(0), Xtr.std(0) + 1e-9
        m = RidgeCV(alphas=np.logspace(-2, 3, 21)).fit((Xtr - mu) / sd, np.log([r["kpa"] for r in tr]))
        return np.exp(m.predict((Xte - mu) / sd))

    held = pearson(fit_predict(train, test), [r["kpa"] for r in test])
    oof = np.zeros(len(train))
    groups = [r["patient_id"] for r in train]
    for tr_i, te_i in GroupKFold(5).split(train, groups=groups):
        oof[te_i] = fit_predict([train[i] for i in tr_i], [train[i] for i in te_i])
    return held, pearson(oof, [r["kpa"] for r in train])


def project_ridge(train_manifest: Path, test_manifest: Path, cache: Path, register: bool, workers: int):
    """The project's baseline: features of the model's preprocessed crops, RidgeBaseline."""
    from liverstiffness.preprocess import InputSpec, PreprocessOptions
    from liverstiffness.stiffness.baseline import RidgeBaseline, features
    from liverstiffness.stiffness.data import load_cohort

    spec, opts = InputSpec(), PreprocessOptions(register=register)
    out = []
    data = [load_cohort(read_manifest(m), spec, opts, cache, workers, progress=True) for m in (train_manifest, test_manifest)]
    voxel_ml = float(np.prod(spec.spacing_mm)) / 1000
    (Xtr, names), (Xte, _) = (features(d.images, d.cov, d.known, spec.channels, voxel_ml) for d in data)
    model = RidgeBaseline.fit(Xtr, data[0].log_kpa, names)
    pred = np.exp(model.predict_log(Xte))
    out.append(pearson(pred, np.exp(data[1].log_kpa)))
    from sklearn.model_selection import GroupKFold
    oof = np.zeros(len(Xtr))
    groups = [r.patient_id for r in data[0].records]
    for tr_i, te_i in GroupKFold(5).split(Xtr, groups=groups):
        m = RidgeBaseline.fit(Xtr[tr_i], data[0].log_kpa[tr_i], names)
        oof[te_i] = np.exp(m.predict_log(Xtr[te_i]))
    out.append(pearson(oof, np.exp(data[0].log_kpa)))
    return out, opts


def cohort(path: Path, n: int, seed: int, sites, workers: int) -> Path:
    manifest = path / "manifest.csv"
    if manifest.is_file() and len(read_manifest(manifest)) == n:
        return manifest
    return generate_cohort(path, n=n, seed=seed, sites=sites, workers=workers, progress=True)


def measure_cohort(manifest: Path, workers: int) -> list[dict]:
    recs = read_manifest(manifest)
    with open(manifest.parent / "truth.csv") as fh:
        truth = {r["case_id"]: r for r in csv.DictReader(fh)}
    jobs = [(r, truth[r.case_id]) for r in recs]
    if workers > 1:
        with ProcessPoolExecutor(workers) as ex:
            return list(ex.map(measure, jobs, chunksize=4))
    return [measure(j) for j in jobs]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-train", type=int, default=300)
    p.add_argument("--n-test", type=int, default=90)
    p.add_argument("--seed", type=int, default=101)
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--work", type=Path, default=ROOT / "build" / "phantom_calibration")
    p.add_argument("--no-project-ridge", action="store_true", help="skip the preprocessing the project ridge needs")
    p.add_argument("--no-register", action="store_true", help="project ridge without rigid registration (faster)")
    p.add_argument("--out", type=Path, default=None, help="write the markdown table here too")
    p.add_argument("--no-results", action="store_true", help="do not replace the phantom section of bench/RESULTS.md")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    train_m = cohort(args.work / "train_ABCD", args.n_train, args.seed, ("A", "B", "C", "D"), args.workers)
    test_m = cohort(args.work / "external_E", args.n_test, args.seed + 1, ("E",), args.workers)
    train, test = measure_cohort(train_m, args.workers), measure_cohort(test_m, args.workers)

    lines = [(f"Cohorts: {len(train)} exams from sites A–D (seed {args.seed}), {len(test)} from site E "
              f"(seed {args.seed + 1}; anatomy from held-out templates), size small."), "",
             "| marker | r with kPa, A–D | r with kPa, E |", "|---|---|---|"]
    kpa_tr, kpa_te = [r["kpa"] for r in train], [r["kpa"] for r in test]
    worst = 0.0
    lines.append("| **simple liver statistics (annotator mask)** | | |")
    for n in SIMPLE:
        a, b = pearson([r[n] for r in train], kpa_tr), pearson([r[n] for r in test], kpa_te)
        worst = max(worst, abs(a))
        lines.append(f"| {n} | {a:+.2f} | {b:+.2f} |")
    lines.append("| **spatial markers (exact labels)** | | |")
    for n in SPATIAL:
        a, b = pearson([r[n] for r in train], kpa_tr), pearson([r[n] for r in test], kpa_te)
        lines.append(f"| {n} | {a:+.2f} | {b:+.2f} |")
    lines += ["", "| model (ln kPa ridge; Pearson r of kPa) | trained A–D, tested on E | 5-fold CV on A–D (patient-grouped) |",
              "|---|---|---|"]
    if not args.no_project_ridge:
        (held, oof), opts = project_ridge(train_m, test_m, args.work / "cache", not args.no_register, args.workers)
        lines.append(f"| project ridge baseline (`liverstiffness.stiffness.baseline`, crops with register={opts.register}) "
                     f"| {held:.2f} | {oof:.2f} |")
    held, oof = ridge_r(train, test, SIMPLE + COVARIATES)
    lines.append(f"| ridge on the simple statistics above + covariates | {held:.2f} | {oof:.2f} |")
    held, oof = ridge_r(train, test, SIMPLE + SPATIAL + COVARIATES)
    lines.append(f"| oracle ridge: + spatial markers | {held:.2f} | {oof:.2f} |")
    held, oof = ridge_r(train, test, SPATIAL + COVARIATES)
    lines.append(f"| oracle ridge on the spatial markers + covariates only | {held:.2f} | {oof:.2f} |")
    ceil_tr = pearson([r["kpa_noiseless"] for r in train], kpa_tr)
    ceil_te = pearson([r["kpa_noiseless"] for r in test], kpa_te)
    lines.append(f"| label-noise ceiling (noiseless vs noisy label) | {ceil_te:.2f} | {ceil_tr:.2f} |")
    lines += ["", (f"Largest |r| of a simple liver statistic on A–D: {worst:.2f}. "
                   f"Run time {time.perf_counter() - t0:.0f} s.")]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    if not args.no_results:
        from bench.results_md import write_section

        cmd = "python -m experiments.phantom_calibration " + " ".join(argv if argv is not None else sys.argv[1:])
        write_section([f"# Phantom calibration (`{cmd.strip()}`)", "",
                       f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} CPU cores. "
                       "Targets (issue 14): every simple liver statistic |r| ≤ 0.5, project ridge on the held-out "
                       "site ≤ ~0.65, while the spatial markers carry much more (oracle ridge).", "", text],
                      mark="bench_phantom")
    with open(args.work / "markers.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(train[0]))
        w.writeheader()
        w.writerows(train + test)
    return 0


if __name__ == "__main__":
    sys.exit(main())
