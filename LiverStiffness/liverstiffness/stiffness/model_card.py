"""MODEL_CARD.md for a trained model folder: what it is, what it saw, how well, and for what."""
from __future__ import annotations

from pathlib import Path

from .checkpoint import EnsembleMeta
from .network import READOUTS

COVARIATE_WORDS = {"age": "age (years)", "sex": "sex (F/M)", "bmi": "BMI (kg/m²)", "pdff": "PDFF (%)", "ast": "AST (U/L)",
                   "alt": "ALT (U/L)", "platelets": "platelets (10⁹/L)", "fib4": "FIB-4 (from age, AST, ALT, platelets)"}

# Held-out sites, by the name of their metrics file: an external site was looked at only once the
# model was frozen; a development site was held out of training but steered the recipe (its numbers
# were compared while choosing settings), so it is not an independent validation.
HELD_OUT = {"external": ("External validation", "held out of training and of development"),
            "development": ("Development site", "held out of training, but used to choose the recipe: not an "
                                                "independent validation")}


def _held_out_sections(model_dir: Path) -> list[str]:
    """Each held-out site's validation with its ablation (``external_*`` / ``development_*_metrics.json``)."""
    import json

    lines = []
    for kind, (title, what) in HELD_OUT.items():
        for path in sorted(model_dir.glob(f"{kind}_*_metrics.json")):
            m = json.loads(path.read_text())
            name = path.stem.replace("_metrics", "").replace(f"{kind}_", "").replace("_", " ")
            lines += [f"## {title}: {name}", "", f"{name[0].upper() + name[1:]}: {what}. From `{path.name}` "
                      "(`liverstiffness evaluate --ablation`).", "",
                      "| model | n | Pearson r (95% CI) | MAE (kPa) | full − this, r (95% CI) |", "|---|---|---|---|---|"]
            for variant, a in m.get("ablation", {}).items():
                d = a.get("full_minus_this_r") or {}
                diff = f"{d.get('difference')} ({d.get('ci95')})" if d else ""
                lines.append(f"| {variant.replace('_', ' ')} | {a['n']} | {a['pearson_r']} ({a['pearson_r_ci95']}) | "
                             f"{a['mae_kpa']} | {diff} |")
            t = m.get("transformer", {})
            subsets = {v: a for v, a in m.get("ablation", {}).items() if a.get("interval_coverage") is not None
                       and a.get("sequences")}
            if subsets:
                lines += ["", "Per subset of the sequences (each with its own interval): 90 % coverage (median width, kPa): "
                          + "; ".join(f"{a['sequences'].replace('+', ', ')} {a['interval_coverage']:.2f} "
                                      f"({a['interval_median_width_kpa']:.2f})" for a in subsets.values()) + "."]
            lines += ["", f"Interval coverage there: {t.get('interval_coverage')} (median width "
                      f"{t.get('interval_median_width_kpa')} kPa). Bootstrap: {m.get('bootstrap', 'resampling exams')}.",
                      ""]
    return lines


def _sequences_section(meta: EnsembleMeta) -> list[str]:
    """What each subset of the sequences is worth: out-of-fold r, its own interval, a category or not."""
    from .augment import SUBSET_VARIANTS
    from .ensemble import MIN_SUBSET_R_FOR_CATEGORY

    cv = (meta.metrics.get("cross_validation") or {}).get("ablation") or {}
    subsets = (meta.calibration.subset_residuals if meta.calibration else {}) or {}
    lines = ["## Exams without some sequences", "",
             "Any non-empty subset of T1w, T2w and DWI may be given. Per subset: the out-of-fold r of the training "
             "cohort with only those sequences, whether the interval has its own calibration, and whether a category "
             f"is given (out-of-fold r at least {MIN_SUBSET_R_FOR_CATEGORY}).", "",
             "| sequences | out-of-fold r | own interval calibration | category |", "|---|---|---|---|"]
    for key, variant in SUBSET_VARIANTS.items():
        r = (cv.get(variant) or {}).get("pearson_r")
        own = "yes" if key == "t1w+t2w+dwi" or key in subsets else "no (full residuals: too narrow)"
        given = "yes" if key == "t1w+t2w+dwi" or (r is not None and r >= MIN_SUBSET_R_FOR_CATEGORY) else "withheld"
        lines.append(f"| {key.replace('+', ', ')} | {'' if r is None else r} | {own} | {given} |")
    out_of_distribution = ("Out-of-distribution check in the model's feature space: fitted "
                           f"(`{meta.feature_distribution['file']}`)." if meta.feature_distribution else
                           "Out-of-distribution check in the model's feature space: not fitted (too few held-out exams, "
                           "or a folder trained before it).")
    return lines + ["", out_of_distribution, ""]


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
        "- Clinical covariates: " + ", ".join(COVARIATE_WORDS[c] for c in meta.config.covariates) + "; each may be unknown.",
        "- Output: ln(stiffness, kPa) from each fold model; the report gives their geometric mean.", "",
        "## Architecture", "",
        "3-D transformer from MONAI blocks: a convolutional stem on log intensities"
        + (" and on log intensities relative to the liver's mean" if meta.config.liver_relative else "")
        + f" ({meta.config.stem_channels} "
        f"features, half resolution), patch tokens of {meta.config.patch_size} stem voxels (z, y, x; a "
        f"{meta.config.grid} grid), hidden {meta.config.hidden_size}, {meta.config.num_layers} layers × "
        f"{meta.config.num_heads} heads with LayerScale ({meta.config.layer_scale}), with CLS, covariate, "
        "sequence-presence and liver-summary tokens; the estimate is read from "
        + READOUTS[meta.config.readout] + " through a small MLP"
        + (", plus a linear term on the standardised liver summary and covariates trained with it from zero. "
           if meta.config.linear_readout else ". ") +
        f"An ensemble of {len(meta.folds)} cross-validation fold models, trained with sequence and image-token "
        "dropout so that the ablations below are inputs the model has seen."
        + (" A map decoder (MONAI UNETR up-blocks from the patch tokens and the stem's features) gives a stiffness "
           "map centred on the estimate, trained on the cohort's elastograms beside the global loss; the map is a "
           "model estimate, not a measurement." if meta.config.map_decoder else " Trained on the number only (no "
           "elastograms): no stiffness map."), "",
        "## Training cohort", "",
        f"- {tr.get('n_exams')} exams of {tr.get('n_patients')} patients.",
        f"- By site: {tr.get('by_site')}; by vendor: {tr.get('by_vendor')}; "
        f"by field strength (T): {tr.get('by_field_strength_T')}.",
        f"- Stiffness (kPa): median {tr.get('stiffness_kpa', {}).get('median')}, 5th–95th percentile "
        f"{tr.get('stiffness_kpa', {}).get('p5')}–{tr.get('stiffness_kpa', {}).get('p95')}.", "",
        "## Cross-validation (out-of-fold, patient-grouped, site-balanced)", "",
        "| model | n | Pearson r | MAE (kPa) |", "|---|---|---|---|",
        f"| transformer ensemble member | {t.get('n')} | {t.get('pearson_r')} | {t.get('mae_kpa')} |",
        f"| ridge baseline | {b.get('n')} | {b.get('pearson_r')} | {b.get('mae_kpa')} |",
        *[f"| ablation: {name.replace('_', ' ')} | {m.get('n')} | {m.get('pearson_r')} | {m.get('mae_kpa')} |"
          for name, m in cv.get("ablation", {}).items() if name != "full"], "",
        *_held_out_sections(Path(model_dir)),
        "## Uncertainty", "",
        (f"{cal.method}, nominal coverage {cal.coverage:.0%}, from {cal.n_calibration} out-of-fold residuals. "
         f"Guarantee for exams exchangeable with the training cohort: coverage ≥ {cal.guaranteed_coverage:.0%} "
         "(Barber et al. 2021, Theorem 4); none at a site the model never saw, where the measured coverage is "
         "the evidence." if cal else "none"), "",
        *_sequences_section(meta),
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
