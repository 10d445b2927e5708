"""``liverstiffness evaluate``: the validation report of a model on a labelled manifest."""
from __future__ import annotations

from .options import add_device_option


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="validate a model on a labelled manifest (metrics.json + plots)",
                       description="Writes metrics.json (n, Pearson r with 95% bootstrap CI, MAE, bias, Bland-Altman "
                                   "limits, AUROC at 2.5/3.0/3.5/5.0 kPa, interval coverage, per site/vendor, residual "
                                   "bias vs age/sex/BMI/steatosis with p-values), predictions.csv and PNG plots; the "
                                   "ridge baseline stored with the model is reported beside the transformer.")
    p.add_argument("--model", required=True, help="model folder (from `liverstiffness train`)")
    p.add_argument("--manifest", required=True, help="manifest CSV with stiffness_kpa")
    p.add_argument("--out", required=True, help="report folder")
    add_device_option(p)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--ablation", action="store_true",
                   help="also evaluate the model without its image tokens and without each sequence (T1w, T2w, DWI), "
                        "which training's input dropout prepared it for; metrics.json gets an 'ablation' key with "
                        "r (95%% bootstrap CI), MAE and paired-bootstrap differences from the full model")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..stiffness.evaluate import evaluate_model

    rep = evaluate_model(args.model, args.manifest, args.out, args.device, args.workers, progress=not args.quiet,
                         ablation=args.ablation)
    t, b = rep["transformer"], rep.get("baseline", {})
    print(f"n = {t['n']}: r = {t['pearson_r']} (95% CI {t['pearson_r_ci95']}), MAE {t['mae_kpa']} kPa, "
          f"coverage {t.get('interval_coverage')}; baseline r = {b.get('pearson_r')} → {args.out}/metrics.json")
    for name, m in rep.get("ablation", {}).items():
        diff = m.get("full_minus_this_r")
        extra = f"; full − this: {diff['difference']} (95% CI {diff['ci95']})" if diff else ""
        print(f"  {name:22s} r = {m['pearson_r']} (95% CI {m['pearson_r_ci95']}), MAE {m['mae_kpa']} kPa{extra}")
    m = rep.get("stiffness_map")
    if m and m.get("n_exams"):
        print(f"stiffness map vs elastograms ({m['n_exams']} exams): voxel r = {m['voxel_r']} (95% CI "
              f"{m['voxel_r_ci95']}), region r = {m['region_r']} (95% CI {m['region_r_ci95']}), bias "
              f"{m['bias_kpa']} kPa, {m['within_20_percent']:.0%} of voxels within ±20%")
    return 0
