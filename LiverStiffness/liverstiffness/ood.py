"""Is an exam like the exams the model was trained on? Out-of-range flagging.

At training time :func:`summarise_cohort` condenses what the model saw — statistics of its input
inside and around the liver, the liver's volume, the patient facts — into robust ranges that go
into ``model.json`` (``input_statistics``). At prediction time :func:`check_exam` computes the
same features for one prepared exam and lists those outside the training range. An estimate
from such inputs is an extrapolation: the report, the Slicer panel and the batch CSV say so.

A feature is outside when it lies beyond the training cohort's 1st–99th percentile range by more
than :data:`RANGE_MARGIN` of that range (so that 2 % of training exams are not flagged by
construction), or, for sex, when the training cohort had no exam of that sex.
"""
from __future__ import annotations

import numpy as np

STATISTICS_VERSION = 1
#: How far beyond the training 1st–99th percentile range (as a share of it) a value is flagged.
RANGE_MARGIN = 0.1
INTENSITY_CHANNELS = ("t1w", "t2w", "dwi")
LABELS = {
    "liver_p10": "{c} liver 10th percentile (× body median)",
    "liver_p90": "{c} liver 90th percentile (× body median)",
    "context_mean": "{c} mean around the liver (× body median)",
    "adc_liver_median": "liver ADC median (10⁻³ mm²/s)",
    "liver_volume_ml": "liver volume on the model's grid (mL)",
    "age": "age (years)", "bmi": "BMI (kg/m²)", "pdff": "PDFF (%)",
}


def exam_features(tensor: np.ndarray, channels, voxel_ml: float, facts=None) -> dict:
    """Features of one model input [C, z, y, x] (channels as in the input spec) and its facts;
    None where a feature is not available (a sequence not given: its channel is zero; no ADC;
    unknown fact)."""
    mask = tensor[list(channels).index("mask")]
    liver = mask > 0.5
    around = mask < 0.05
    out: dict = {}
    for c in INTENSITY_CHANNELS:
        if c not in channels:
            continue
        v = tensor[list(channels).index(c)]
        if not v.any():                 # not given: nothing to compare (the report names it missing)
            out.update({f"{c}_liver_p10": None, f"{c}_liver_p90": None, f"{c}_context_mean": None})
            continue
        inside = v[liver]
        out[f"{c}_liver_p10"] = float(np.percentile(inside, 10)) if inside.size else None
        out[f"{c}_liver_p90"] = float(np.percentile(inside, 90)) if inside.size else None
        out[f"{c}_context_mean"] = float(v[around].mean()) if around.any() else None
    if "adc" in channels:
        a = tensor[list(channels).index("adc")][liver]
        out["adc_liver_median"] = float(np.median(a)) if a.size and np.any(a > 0) else None
    out["liver_volume_ml"] = float(mask.sum() * voxel_ml)
    for name in ("age", "bmi", "pdff"):
        value = getattr(facts, name, None) if facts is not None else None
        out[name] = float(value) if value is not None else None
    return out


def _summary(values: list) -> dict | None:
    v = np.array([x for x in values if x is not None], float)
    if v.size == 0:
        return None
    med = float(np.median(v))
    return {"n": int(v.size), "p1": float(np.percentile(v, 1)), "p99": float(np.percentile(v, 99)),
            "median": med, "mad": float(np.median(np.abs(v - med))), "min": float(v.min()), "max": float(v.max())}


def summarise_cohort(images: np.ndarray, channels, voxel_ml: float, facts_list) -> dict:
    """Robust per-feature ranges of a training cohort's model inputs [N, C, z, y, x] and facts
    (one PatientFacts per exam): the ``input_statistics`` of ``model.json``."""
    rows = [exam_features(x, channels, voxel_ml, f) for x, f in zip(images, facts_list)]
    names = list(rows[0]) if rows else []
    sexes = [getattr(f, "sex", None) for f in facts_list]
    return {
        "version": STATISTICS_VERSION,
        "n_exams": len(rows),
        "definition": "per feature of the model input (liver = mask channel > 0.5, around = < 0.05) and the "
                      "patient facts: 1st/99th percentiles, median, MAD, min, max over the training exams",
        "features": {k: s for k in names if (s := _summary([r[k] for r in rows])) is not None},
        "adc_missing_fraction": float(np.mean([r.get("adc_liver_median") is None for r in rows])) if rows else 0.0,
        "sex_counts": {s: sexes.count(s) for s in ("F", "M")},
    }


def _label(name: str) -> str:
    for key, text in LABELS.items():
        if name == key:
            return text
        if name.endswith("_" + key):
            return text.format(c=name[: -len(key) - 1].upper())
    return name


def check_exam(tensor: np.ndarray, channels, voxel_ml: float, facts, statistics: dict | None) -> dict:
    """Compare one prepared exam with the training statistics; the report's ``input_range``.

    ``checked`` False when the model carries no statistics (older model folders): the report then
    says that out-of-range inputs could not be detected."""
    if not statistics or statistics.get("version") != STATISTICS_VERSION:
        return {"checked": False, "in_range": None, "outside": [],
                "note": "this model folder has no training-cohort statistics (model.json input_statistics): "
                        "whether the inputs lie outside what the model was trained on could not be checked"}
    feats = exam_features(tensor, channels, voxel_ml, facts)
    outside = []
    for name, value in feats.items():
        s = statistics["features"].get(name)
        if value is None or s is None:
            continue
        margin = RANGE_MARGIN * (s["p99"] - s["p1"])
        if value < s["p1"] - margin or value > s["p99"] + margin:
            outside.append({"feature": name, "label": _label(name), "value": round(value, 4),
                            "training_p1": round(s["p1"], 4), "training_p99": round(s["p99"], 4)})
    sex = getattr(facts, "sex", None)
    if sex in ("F", "M") and statistics.get("sex_counts", {}).get(sex, 1) == 0:
        outside.append({"feature": "sex", "label": "sex", "value": sex, "training_p1": None, "training_p99": None})
    has_dwi = "dwi" in channels and tensor[list(channels).index("dwi")].any()
    if (has_dwi and feats.get("adc_liver_median") is None and "adc" in channels
            and statistics.get("adc_missing_fraction", 1.0) == 0):
        outside.append({"feature": "adc_missing", "label": "ADC map (every training exam had one)", "value": "missing",
                        "training_p1": None, "training_p99": None})
    return {"checked": True, "in_range": not outside, "outside": outside, "n_training_exams": statistics.get("n_exams")}


def describe(result: dict) -> str:
    """One line for warnings and the CSV: 'in range', 'not checked' or what lies outside."""
    if not result.get("checked"):
        return "not checked"
    if result["in_range"]:
        return "in range"
    parts = []
    distance = result.get("feature_distance") or {}
    if distance and not distance.get("in_distribution", True):
        parts.append(f"out of distribution in the model's feature space ({distance['ratio_to_threshold']:.1f} x the "
                     "99th percentile of held-out training exams with the same sequences)")
    for o in result["outside"]:
        if o["training_p1"] is None:
            parts.append(f"{o['label']}: {o['value']}")
        else:
            parts.append(f"{o['label']} {o['value']:.3g} (training {o['training_p1']:.3g}–{o['training_p99']:.3g})")
    return "outside the training range: " + "; ".join(parts)
