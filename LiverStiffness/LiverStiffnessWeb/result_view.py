"""The Result card's content: the numbers and the MRE band bar from a ``Report`` (and, from a model
trained on elastograms, its stiffness map's regional means), and the files its download buttons
send (taken from the run's folder as written, never made a second time).
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

from liverstiffness.report import Report

BAND_COLOURS = ["#4caf50", "#cddc39", "#ffc107", "#ff7043", "#d32f2f"]
BAR_MAX_KPA = 8.0      # the MRE bar's right end


def result_card(r: Report) -> dict:
    """The state the Result card shows: texts already formatted, bar positions in % of the bar."""
    lo, hi = r.interval_kpa
    bands = []
    for i, b in enumerate(r.mre_bands):
        top = b["high_kpa"] if b["high_kpa"] is not None else BAR_MAX_KPA
        width = 100 * (min(top, BAR_MAX_KPA) - b["low_kpa"]) / BAR_MAX_KPA
        bands.append({"label": b["label"], "low": b["low_kpa"], "width": width,
                      "colour": BAND_COLOURS[i % len(BAND_COLOURS)]})
    pos = lambda v: max(0.0, min(100.0, 100 * v / BAR_MAX_KPA))  # noqa: E731
    folds = r.fold_predictions_kpa or []
    return {"kpa": f"{r.stiffness_kpa:.2f}", "interval": f"{lo:.2f}–{hi:.2f}", "coverage": f"{r.interval_coverage:.0%}",
            "category": r.category, "bands": bands, "marker": pos(r.stiffness_kpa), "lo": pos(lo), "hi": pos(hi),
            "folds": ", ".join(f"{v:.2f}" for v in folds),
            "spread": f"{min(folds):.2f}–{max(folds):.2f}" if folds else "",
            "warnings": r.warnings or [],
            "synthetic": r.synthetic_model, "device": r.device,
            # The sequences used, and each missing one with why ("T2w only (no T1w: not given; ...)").
            "sequences": r.sequences_text, "sequences_used": list(r.sequences_used),
            "sequences_missing": dict(r.sequences_missing),
            "reference": (r.preprocessing or {}).get("reference_sequence") or (r.sequences_used or ["t1w"])[0],
            "mask": (r.mask or {}).get("source", "given"),
            "stiffness_map": stiffness_map_card(r)}


def stiffness_map_card(r: Report) -> dict | None:
    """The stiffness map's part of the card (a model trained on elastograms): its note, its liver
    mean and its regional means as rows (region, kPa as text), in the report's order; None for a
    result without a map (nothing is shown then)."""
    sm = r.stiffness_map
    if not sm or "stiffness_map" not in (r.outputs or {}):
        return None
    note = (sm.get("note") or "a model estimate, not a measurement").strip().rstrip(".")
    mean = sm.get("liver_mean_kpa")
    return {"note": note[:1].upper() + note[1:] + ".", "unit": sm.get("unit", "kPa"),
            "liver_mean": f"{mean:.2f}" if mean is not None else "",
            "regions": [{"region": name, "kpa": f"{v:.2f}"} for name, v in (sm.get("regions_kpa") or {}).items()
                        if v is not None],
            "regions_by": sm.get("regions_by", "")}


def report_json(out: Path) -> bytes:
    return (out / "report.json").read_bytes()


def report_page(out: Path, report: Report) -> bytes:
    """The same one-page report the command line writes (report_page.py), not a second one."""
    return (out / report.outputs["report_page"]).read_bytes()


def maps_zip(out: Path) -> bytes:
    """Every file of the run's folder in one zip (the "Maps (zip)" button)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(out.iterdir()):
            if f.is_file():
                z.write(f, f.name)
    return buf.getvalue()
