"""MODEL_CARD.md and LICENSE-WEIGHTS.md for a segmentation model folder."""
from __future__ import annotations

import json
from pathlib import Path

from .config import AUX_WEIGHT, SWA_EVERY, SegNetConfig, SegTrainConfig
from .metrics import mm_text
from .model_folder import SegModelMeta, read_meta, write_meta

CHAOS = ("CHAOS challenge data (Kavur et al., \"CHAOS Challenge - combined (CT-MR) healthy abdominal organ "
         "segmentation\", Medical Image Analysis 69, 2021; zenodo.org/record/3431873), T2-SPIR MRI with manual labels")
CHAOS_LICENCE = "CC BY-SA 4.0 (https://creativecommons.org/licenses/by-sa/4.0/)"
LICENCE = ("Weights: CC BY-SA 4.0, as the CHAOS training data they derive from (attribution: the CHAOS "
           "challenge organisers, Kavur et al. 2021; share alike). The code that trains and runs them: Apache-2.0.")
LIMITS = [
    ("Trained on 15 healthy liver donors' abdominal MRI (CHAOS), 1.5 T Philips scanners, axial T2-SPIR only: "
     "other sequences (T1w, DWI, non-fat-suppressed T2), 3 T, other vendors, children and diseased livers "
     "(cirrhosis, large tumours, resections, ascites) were never seen in real scans (synthetic exams, where "
     "given, add other contrasts on the same anatomy)."),
    "A check by a person is part of its use: open the mask in Segment Editor and fix it before an estimate.",
    "Research use only; not a medical device.",
]


def training_lines(model_dir: Path) -> list[str]:
    """The recipe from the folder's ``config.json`` (written by training), when it is there."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        return []
    c = json.loads(path.read_text())
    organ = "none"
    if c.get("organ_intensity_prob"):
        organ = (f"each labelled organ's signal (liver, kidneys, spleen) scaled by its own factor in "
                 f"{tuple(c['organ_intensity_range'])} with probability {c['organ_intensity_prob']} per organ "
                 "(liver and spleen go dark with iron, brighter with oedema)")
        if c.get("organ_intensity_keep_bright"):
            organ += "; the organ's vessels (voxels well above its median) keep their signal, as iron darkens the " \
                     "parenchyma, not the blood"
    return ["## Training", "",
            f"- {_runs(c)}{c['folds']} folds over cases, {c['steps']} AdamW steps per fold of {c['batch_size']} slices "
            f"({c['patch_yx'][0]} × {c['patch_yx'][1]} voxels), learning rate {c['lr']} (warm-up, cosine decay), "
            f"Dice + cross-entropy loss{' (the Dice over the batch)' if c.get('batch_dice') else ''}, {_seeds(c)}"
            # named only when not the defaults, so older cards read as they did
            + (f", weight decay {c['weight_decay']:g}"
               if c.get("weight_decay", SegTrainConfig.weight_decay) != SegTrainConfig.weight_decay else "")
            + (f", dropout {c['net']['dropout']:g} after each convolution"
               if c.get("net", {}).get("dropout", SegNetConfig.dropout) else "") + ".",
            # a config.json without scale_aug predates the option: those folders trained at ±15 %
            f"- Augmentation (MONAI): rotation, scaling (up to ±{c.get('scale_aug', 0.15):.0%} per axis), shifts, "
            "elastic deformation, lower resolution, bias field, gamma, intensity scale and shift, blur, noise; no flips "
            "(the liver's side is anatomy).",
            f"- Organ-wise intensity: {organ}.",
            *([f"- The other {c['net']['aux_organs']} labelled organs (kidneys, spleen) learnt as extra outputs beside "
               f"the liver (their loss weighted {AUX_WEIGHT}), a training aid: the model outputs the liver only."]
              if c.get("net", {}).get("aux_organs") else []),
            *([f"- Each fold network started from a network of an earlier folder (`{c['init_from']}` when it was "
               "trained; the one per fold that never saw the fold's held-out cases, Weights below names it), not "
               "from random weights" + _earlier(c.get("init_recipe")) + "."] if c.get("init_from") else []),
            *([f"- Stochastic weight averaging: each network is the mean of its weights over the last "
               f"{c['swa']:.0%} of its steps (every {SWA_EVERY} steps, the learning rate held where the schedule was "
               "when the averaging began)."] if c.get("swa") else []),
            *([f"- Synthetic exams drawn for {c['synthetic_share']:.0%} of the training samples (the rest from the "
               "real scans)."] if c.get("synthetic_share") is not None else []), ""]


def _earlier(c: dict | None) -> str:
    """How the networks a folder started from were trained (config.json's init_recipe, itself maybe continued)."""
    if not c:
        return ""
    return (f"; those were trained as {_runs(c)}{c['folds']} folds, {c['steps']} AdamW steps per fold at learning rate "
            f"{c['lr']}, {_seeds(c)}" + (", the weights averaged" if c.get("swa") else "")
            + (f", themselves started from an earlier folder{_earlier(c.get('init_recipe'))}" if c.get("init_from") else ""))


def _runs(c: dict) -> str:
    runs = c.get("runs", 1)
    return f"{runs} independent runs of " if runs > 1 else ""


def _seeds(c: dict) -> str:
    runs = c.get("runs", 1)
    return f"seed {c['seed']}" if runs == 1 else f"seeds {c['seed']}–{c['seed'] + runs - 1} (one per run)"


def _scales(scales) -> str:
    return ", ".join(f"{s:g}×" for s in scales if s != 1.0)


def _score_table(scores: dict) -> list[str]:
    """A markdown table of Dice / HD95 / mean surface distance summaries, one row per source of cases."""
    rows = ["| cases | n | Dice mean ± SD (min–max) | HD95 mm mean ± SD (min–max) | mean surface distance mm |",
            "|---|---|---|---|---|"]
    for source, m in scores.items():
        d, h, s = m["dice"], m["hd95_mm"], m["mean_surface_mm"]
        rows.append(f"| {source} | {m['n']} | {d['mean']:.3f} ± {d['sd']:.3f} ({d['min']:.3f}–{d['max']:.3f}) | "
                    f"{mm_text(h['mean'])} ± {mm_text(h['sd'])} ({mm_text(h['min'])}–{mm_text(h['max'])}) | "
                    f"{mm_text(s['mean'], '.2f')} |")
    return rows


def _unseen_lines(unseen: dict | None) -> list[str]:
    """The test on labelled cases outside the training data (``bench/seg_unseen.py --update-model``), when run."""
    if not unseen:
        return []
    per_case = ", ".join(f"{c}: {v:.3f}" for c, v in unseen["cases"].items())
    about = [f"Cases: {unseen['data']}.", ""] if unseen.get("data") else []
    return ["## Accuracy on real cases no network trained on", "", unseen["protocol"], "", *about,
            *_score_table({"real": unseen["real"]}), "", f"Per case (Dice): {per_case}.", ""]


def write_model_card(model_dir: Path, meta: SegModelMeta) -> Path:
    model_dir = Path(model_dir)
    rows = _score_table(meta.metrics.get("held_out", {}))
    tr = meta.trained_on
    lines = [
        f"# Model card: {meta.name} {meta.version} (automatic liver mask)", "",
        "## What it does", "",
        ("Segments the liver in an axial T2-weighted abdominal MRI and returns a binary mask on the image's own grid "
         "(largest connected component, holes filled) with a confidence (mean liver probability, agreement between "
         "the fold networks and between the test-time scales). It proposes a mask for a person to check; it does "
         "not replace that check."), "",
        "## Input", "",
        f"- Sequence: {meta.spec.sequence}.",
        (f"- Resampled to {meta.spec.spacing_mm} mm (x, y, z), {meta.spec.orientation}; results are resampled back "
         "onto the input grid."),
        f"- Intensity: percentiles {meta.spec.percentiles} of the image mapped to 0 and 1, clipped.", "",
        "## Architecture", "",
        (f"MONAI UNet, 2-D with 2.5-D input: each axial slice with {meta.net.context} neighbour(s) on either side "
         f"({meta.net.in_channels} channels) → the slice's liver logit; channels {meta.net.channels}, strides "
         f"{meta.net.strides}, {meta.net.num_res_units} residual unit(s), {meta.net.norm} norm. An ensemble of "
         f"{len(meta.folds)} fold networks{f' ({meta.runs} runs)' if meta.runs > 1 else ''} (mean probability, "
         f"threshold {meta.inference.threshold})."
         + (f" Test-time augmentation: the image also run at {_scales(meta.inference.tta_scales)} the model's in-plane "
            "spacing, the probabilities averaged on the input grid." if len(meta.inference.tta_scales) > 1 else "")), "",
        "## Training data", "",
        f"- {CHAOS}; licence {CHAOS_LICENCE}.",
        ("- The copy used (the Q-Net repository's copy of the CHAOS T2-SPIR cases) was preprocessed by a research "
         "group (Q-Net): intensity clipped at the top 0.5 %, resampled to 1.25 × 1.25 × 7.7 mm, cropped to 256 × 256."),
        *[f"- {k}: {v}" for k, v in tr.items()], "",
        *training_lines(model_dir),
        "## Held-out accuracy (cases never seen by the networks that scored them)", "",
        meta.metrics.get("protocol", ""), "", *rows, "",
        *_unseen_lines(meta.metrics.get("unseen")),
        "## Weights", "",
        *[f"- `{f['file']}` SHA-256 `{f['sha256']}`; held out: {', '.join(f['held_out'])}"
          + (f"; started from `{f['started_from']['file']}` (SHA-256 `{f['started_from']['sha256'][:12]}…`)"
             if "started_from" in f else "") for f in meta.folds], "",
        "## Licence", "", LICENCE, "See LICENSE-WEIGHTS.md.", "",
        "## Limits", "", *[f"- {x}" for x in LIMITS],
    ]
    path = model_dir / "MODEL_CARD.md"
    path.write_text("\n".join(lines) + "\n")
    write_weights_licence(model_dir)
    return path


def write_weights_licence(model_dir: Path) -> Path:
    text = f"""# Licence of the liver segmentation weights in this folder

The weight files (`*.pt`) were trained on {CHAOS}.
That data is licensed {CHAOS_LICENCE}; the weights are an adaptation of it and are
therefore shared under the same licence, **CC BY-SA 4.0**:

- Attribution: CHAOS challenge (A. E. Kavur, N. S. Gezer, M. Barış, et al., "CHAOS Challenge - combined
  (CT-MR) healthy abdominal organ segmentation", Medical Image Analysis 69 (2021) 101950), and the
  LiverStiffness developers for the training.
- Share alike: if you redistribute these weights or weights derived from them (fine-tuned, pruned,
  converted), do so under CC BY-SA 4.0 or a compatible licence, with this notice.
- No warranty; research use only, not a medical device.

The source code that trains and runs the weights is licensed separately under Apache-2.0 (LICENSE at
the repository root). Synthetic phantom exams generated by `liverstiffness synth`, if used in training,
carry no third-party terms.
"""
    path = Path(model_dir) / "LICENSE-WEIGHTS.md"
    path.write_text(text)
    return path


def record_metrics(model_dir: str | Path, key: str, value) -> None:
    """Set ``metrics[key]`` in a model folder's seg_model.json and rewrite its card (a benchmark of the folder)."""
    meta = read_meta(model_dir)
    meta.metrics[key] = value
    write_meta(model_dir, meta)
    write_model_card(model_dir, meta)
