"""MODEL_CARD.md for a trained model folder: what it is, what it saw, how well, and for what."""
from __future__ import annotations

from pathlib import Path

from .model.checkpoint import EnsembleMeta


def write_model_card(model_dir: Path, meta: EnsembleMeta) -> Path:
    cv = meta.metrics.get("cross_validation", {})
    t, b = cv.get("transformer", {}), cv.get("baseline", {})
    tr = meta.trained_on
    cal = meta.calibration
    warning = ("> **Not for clinical use.** This model was trained on synthetic MRI phantoms only "
               "(`liverstiffness synth`). It exists to demonstrate and test the software.\n\n" if meta.synthetic else "")
    lines = [
        f"# Model card: {meta.name} {meta.version}", "", warning + "## Intended use", "", meta.intended_use, "",
        "## Inputs", "",
        f"- Channels: {', '.join(meta.spec.channels)} on a liver-centred crop of {meta.spec.size} voxels (x, y, z) "
        f"at {meta.spec.spacing_mm} mm (LPS, axis-aligned).",
        f"- Normalisation: {meta.spec.normalisation}.",
        f"- Preprocessing: rigid registration of T2w/DWI to T1w {'on' if meta.preprocess.register else 'off'}, "
        f"N4 bias correction {'on' if meta.preprocess.n4 else 'off'}.",
        "- Clinical covariates: age (years), sex (F/M), BMI (kg/m²), PDFF (%); each may be unknown.",
        "- Output: ln(stiffness, kPa) from each fold model; the report gives their geometric mean.", "",
        "## Architecture", "",
        f"3-D vision transformer from MONAI blocks: patch {meta.config.patch_size} (z, y, x), hidden {meta.config.hidden_size}, "
        f"{meta.config.num_layers} layers × {meta.config.num_heads} heads, CLS + covariate tokens; "
        f"an ensemble of {len(meta.folds)} cross-validation fold models.", "",
        "## Training cohort", "",
        f"- {tr.get('n_exams')} exams of {tr.get('n_patients')} patients.",
        f"- By site: {tr.get('by_site')}; by vendor: {tr.get('by_vendor')}; by field strength (T): {tr.get('by_field_strength_T')}.",
        f"- Stiffness (kPa): median {tr.get('stiffness_kpa', {}).get('median')}, 5th–95th percentile "
        f"{tr.get('stiffness_kpa', {}).get('p5')}–{tr.get('stiffness_kpa', {}).get('p95')}.", "",
        "## Cross-validation (out-of-fold, patient-grouped, site-balanced)", "",
        "| model | n | Pearson r | MAE (kPa) |", "|---|---|---|---|",
        f"| transformer ensemble member | {t.get('n')} | {t.get('pearson_r')} | {t.get('mae_kpa')} |",
        f"| ridge baseline | {b.get('n')} | {b.get('pearson_r')} | {b.get('mae_kpa')} |", "",
        "## Uncertainty", "",
        (f"{cal.method}; nominal coverage {cal.coverage:.0%}, conformal half-width {cal.q_log:.3f} on the ln scale "
         f"(×/÷ {2.718281828 ** cal.q_log:.2f}), from {cal.n_calibration} out-of-fold exams." if cal else "none"), "",
        "## Weights", "",
        *[f"- `{f['file']}` SHA-256 `{f.get('sha256', '')}` (best epoch {f.get('best_epoch')})" for f in meta.folds], "",
        "## Limitations", "",
        "- Validated only on the cohorts named above; check an external site with `liverstiffness evaluate` before use.",
        "- The label (MRE) itself varies 5–10 % between repeat exams, which bounds any model's agreement.",
        "- A poor liver mask skews the estimate: run `liverstiffness qa` first.",
    ]
    path = Path(model_dir) / "MODEL_CARD.md"
    path.write_text("\n".join(lines) + "\n")
    return path
