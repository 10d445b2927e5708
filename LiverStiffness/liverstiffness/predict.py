"""Estimate stiffness for one exam: the report, attention maps and a montage (manifests: ``batch``).

Stages (timed in the report): read → qa → preprocess → model → attention → write. Nothing is
written before reading, QA and preprocessing have accepted the inputs, and the case folder is
assembled in a temporary folder and moved into place at the end, so a failure leaves no partial
result behind.
"""
from __future__ import annotations

import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from . import __version__
from .cutoffs import CATEGORY_WITHHELD, STIFFNESS_LABEL, load_cutoffs
from .errors import InputError
from .imageio import geometry, write_nifti_gz
from .manifest import ExamRecord, PatientFacts
from .ood import check_exam as check_input_range
from .ood import describe as describe_range
from .outputs import REPORT, OutputError, atomic_write_text, publish_folder, staging_path, writing
from .preprocess import SEQUENCE_LABELS, ExamImages, Prepared, prepare, read_exam
from .report import Report
from .stiffness import embedding_ood
from .stiffness.attention import compute_maps, map_summary, sequence_contributions
from .stiffness.covariates import ALL_COVARIATES, LAB_COVARIATES, encode
from .stiffness.dense import REGION_NAMES, predict_map_log, regional_means
from .stiffness.ensemble import Ensemble
from .stiffness.interval import subset_key
from .timing import Stopwatch

DEFAULT_MAP = "rollout"
MAP_UNIT = "times the uniform share over the model's crop (1.0 = uniform)"
STIFFNESS_MAP_NOTE = ("a model estimate of the MRE stiffness map from the routine sequences, not a measurement; "
                      "its geometric mean over the liver is the estimate")


@dataclass
class PredictOptions:
    detail_maps: bool = False        # per-layer and per-head maps as well
    gradient_maps: bool = True       # GradCAM and per-sequence saliency
    montage: bool = True
    qa: bool = True
    qa_thresholds: object | None = None
    segmenter: str = "model"         # for automatic masks: "model" or "totalsegmentator"
    seg_model: str | None = None     # segmentation model folder (default: the shipped one)
    cutoffs: str | None = None       # cut-off table: a name in cutoffs.TABLES or a JSON file (default mayo-60hz)
    rules: str | None = None         # batch rows with a DICOM study: series selection rules (default: shipped)
    dicom_out: str | None = None     # batch rows with a DICOM study: write SEG/PM/SR under <dicom_out>/<case_id>
    left_out: dict = field(default_factory=dict)  # sequence → why the user left it out (present but unusable)


def _infer(ens: Ensemble, prep: Prepared, facts: PatientFacts, opts: PredictOptions) -> tuple[dict, dict, dict]:
    """The estimate (with the maps under "maps"), the attention report, and the attention time.
    The interval is calibrated on the subset of the sequences this exam has."""
    cov, known = encode(facts)
    res = ens.predict(prep.tensor[None], cov[None], known[None], subset=subset_key(prep.sequences))
    res["feature_distance"] = ens.feature_check(prep.tensor[None], cov[None], known[None], res["subset"])
    x = torch.as_tensor(prep.tensor[None], device=ens.device)
    c = torch.as_tensor(cov[None], device=ens.device)
    k = torch.as_tensor(known[None], device=ens.device)
    t = time.perf_counter()
    maps, extra = compute_maps(ens.models, x, c, k, ens.meta.spec.channels, detail=opts.detail_maps,
                               gradient=opts.gradient_maps)
    liver = prep.tensor[ens.meta.spec.channels.index("mask")]
    attention = {"unit": MAP_UNIT, **extra, "maps": {kind: map_summary(arr, liver) for kind, arr in maps.items()},
                 "sequence_contributions_kpa": sequence_contributions(ens.models, x, c, k, res["fold_log"])}
    res["maps"] = maps
    if ens.meta.config.map_decoder:   # the fold networks' maps, averaged in ln kPa as the estimates are
        res["stiffness_map"] = np.exp(predict_map_log(ens.models, prep.tensor[None], cov[None], known[None],
                                                      ens.device)[0])
    return res, attention, {"attention": round(time.perf_counter() - t, 4)}


def predict_exam(exam: ExamRecord, ens: Ensemble, out_dir: str | Path, opts: PredictOptions | None = None,
                 on_stage=None) -> Report:
    """Run one exam from files (``exam.mask`` None: an automatic mask, segmented on the T2w; a
    sequence None: not given; ``opts.left_out``: sequences given but not to be used, with why);
    writes report.json, attention NIfTIs and the montage into ``out_dir``."""
    exam.facts.validate("patient")
    opts = opts or PredictOptions()
    exam = replace(exam, **{name: None for name in opts.left_out})
    watch = Stopwatch()
    stage = on_stage or (lambda name: None)
    stage("read")
    if exam.mask is None:  # automatic mask: segment the T2w, carry it to the reference grid
        from .segmentation.auto_mask import get_segmenter, read_exam_auto
        stage("segment")
        with watch.stage("segment"):
            images, _ = read_exam_auto(exam.t1w, exam.t2w, exam.dwi, exam.dwi_b,
                                       get_segmenter(opts.segmenter, opts.seg_model, ens.device.type))
    else:
        with watch.stage("read"):
            images = read_exam(exam.t1w, exam.t2w, exam.dwi, exam.mask, exam.dwi_b, exam.mask_label)
    images.left_out = dict(opts.left_out)
    return predict_images(images, exam.facts, ens, out_dir, opts, on_stage, watch)


def predict_images(images: ExamImages, facts: PatientFacts, ens: Ensemble, out_dir: str | Path,
                   opts: PredictOptions | None = None, on_stage=None, watch: Stopwatch | None = None,
                   report_extra: dict | None = None) -> Report:
    """Run one exam already in memory (the Slicer module converts its nodes to ``images``).

    ``on_stage(name)`` is called as each stage starts (qa, preprocess, model, write).
    ``watch``: the run's stopwatch when reading was timed by the caller.
    ``report_extra``: more report fields (the DICOM study's series selection, where facts came from).
    """
    opts = opts or PredictOptions()
    cutoffs = load_cutoffs(opts.cutoffs)
    out_dir = Path(out_dir)
    watch = watch or Stopwatch()
    mask_info = images.mask_info
    stage = on_stage or (lambda name: None)
    facts.validate("patient")
    mask_path = images.paths.get("mask", "mask")
    qa_summary, warnings_out, transforms = None, list(images.notes), None
    if mask_info is not None:
        from .segmentation.auto_mask import low_confidence_warning
        warnings_out += [w for w in [low_confidence_warning(mask_info)] if w]
    if opts.qa:
        from .qa import run_qa
        stage("qa")
        with watch.stage("qa"):
            qa_result = run_qa(images, opts.qa_thresholds, register=ens.meta.preprocess.register)
        qa_summary = qa_result.summary()
        transforms = qa_result.transforms if ens.meta.preprocess.register else None
        severe = [f for f in qa_result.flags if f.severity == "severe"]
        if severe:
            raise InputError(f"mask {mask_path}", f"failed QA: {severe[0].code}: {severe[0].message}")
        warnings_out += [f"mask QA {f.code}: {f.message}" for f in qa_result.flags]
    stage("preprocess")
    with watch.stage("preprocess"):
        prep = prepare(images, ens.meta.spec, ens.meta.preprocess, transforms)
    if "dwi" in prep.sequences and not prep.has_adc:
        warnings_out.append("single b-value DWI: no ADC map; the model ran with its ADC channel empty")
    unused = [c for c in LAB_COVARIATES if getattr(facts, c) is not None and c not in ens.meta.config.covariates]
    if unused:
        warnings_out.append(f"blood tests given ({', '.join(unused)}) but this model was trained without them: not used")
    missing = missing_sequences(images)
    if missing:
        warnings_out.append(f"estimated without {', '.join(SEQUENCE_LABELS[s] for s in missing)}: "
                            "the interval is that of exams with the same sequences")
    warnings_out += [r["warning"] for r in prep.registration.values() if r.get("warning")]
    input_range = check_input_range(prep.tensor, ens.meta.spec.channels, float(np.prod(ens.meta.spec.spacing_mm)) / 1000.0,
                                    facts, ens.meta.input_statistics)
    if input_range["checked"] and not input_range["in_range"]:
        warnings_out.append(f"inputs {describe_range(input_range)}: the estimate is an extrapolation")
    stage("model")
    t = time.perf_counter()
    (res, attention, t_att), fallback = ens.with_cpu_fallback(lambda: _infer(ens, prep, facts, opts))
    maps = res.pop("maps")
    stiffness_map = res.pop("stiffness_map", None)
    if fallback:
        warnings_out.append(fallback)
    if res.get("interval_note"):
        warnings_out.append(res["interval_note"])
    distance = res.pop("feature_distance")
    if distance is not None:
        input_range["feature_distance"] = distance
        if not distance["in_distribution"]:
            input_range["in_range"] = False
            warnings_out.append(
                f"out of distribution: the model sees this exam unlike its training exams (feature distance "
                f"{distance['ratio_to_threshold']:.1f} x the {embedding_ood.QUANTILE:.0%} level of held-out training "
                "exams with the same sequences): the estimate and its category are not to be trusted")
    flat = [k for k in ("rollout", "gradcam") if k in attention["maps"] and not attention["maps"][k]["informative"]]
    if flat:
        warnings_out.append(f"{' and '.join(flat)} map(s) near-uniform: they do not show where the model looked")
    watch.add("model", time.perf_counter() - t - t_att["attention"])
    watch.add("attention", t_att["attention"])

    kpa = float(res["kpa"][0])
    cat = cutoffs.categorize(kpa)
    withheld = ens.category_withheld(res["subset"])
    if withheld:
        warnings_out.append(withheld)
        cat = replace(cat, label=CATEGORY_WITHHELD, low_kpa=None, high_kpa=None)
    report = Report(
        stiffness_label=STIFFNESS_LABEL,
        stiffness_kpa=round(kpa, 3),
        interval_kpa=[round(float(res["low"][0]), 3), round(float(res["high"][0]), 3)],
        interval_coverage=res["coverage"],
        category=cat.label, category_band_kpa=[cat.low_kpa, cat.high_kpa], mre_bands=cutoffs.band_table(),
        cutoff_table=cutoffs.as_dict(),
        fold_predictions_kpa=[round(float(v), 3) for v in np.exp(res["fold_log"][:, 0])],
        ensemble_sd_log=round(float(res["sd_log"][0]), 4),
        sequence_contributions_kpa=attention.pop("sequence_contributions_kpa"),
        attention=attention,
        model=ens.meta.summary(Path(ens.model_dir)),
        device=str(ens.device),
        patient={c: getattr(facts, c) for c in ALL_COVARIATES},
        inputs={name: {"source": images.paths.get(name, ""), **geometry(img)} for name, img in (
            ("t1w", images.t1w), ("t2w", images.t2w), ("dwi", images.dwi.high_b if images.dwi else None),
            ("mask", images.mask)) if img is not None},
        dwi_b_values=list(images.dwi.b_values) if images.dwi else [], adc_available=prep.has_adc,
        preprocessing={"reference_sequence": prep.reference_name, "registration_to_reference": prep.registration,
                       "liver_medians": prep.liver_medians, "body_medians": prep.body_medians,
                       "crop": geometry(prep.crop)},
        sequences_used=list(prep.sequences), sequences_missing=missing, interval_basis=res["subset"],
        stiffness_map=None if stiffness_map is None else map_summary_kpa(stiffness_map, liver_crop(prep)),
        mask=mask_info or {"source": "given", "path": mask_path},
        mask_qa=qa_summary, input_range=input_range, warnings=warnings_out, outputs={},
        software={"liverstiffness": __version__, "torch": torch.__version__},
        **(report_extra or {}),
    )
    stage("write")
    with writing(f"--out {out_dir}"):                  # a full disk: one clear error, nothing half-written
        return _write_result(out_dir, report, images, prep, ResultMaps(maps, stiffness_map), opts, Path(ens.model_dir),
                             watch)


def liver_crop(prep: Prepared) -> np.ndarray:
    """[z, y, x] bool: the liver on the model's crop."""
    return prep.tensor[list(prep.spec.channels).index("mask")] > 0.5


def map_summary_kpa(kpa: np.ndarray, liver: np.ndarray) -> dict:
    """The report's entry for a stiffness map: its mean over the liver and the regional means."""
    regional = regional_means(kpa, liver)
    return {"file": "stiffness_map.nii.gz", "unit": "kPa", "note": STIFFNESS_MAP_NOTE,
            "liver_mean_kpa": round(float(kpa[liver].mean()), 3) if liver.any() else None,
            "regions_kpa": {k: round(v, 3) for k, v in regional.items()},
            "regions_by": f"geometry: {' and '.join(REGION_NAMES)} split at the liver's middle from right to left, "
                          "eight sectors by its middle front to back and top to bottom (not Couinaud segments)"}


@dataclass
class ResultMaps:
    """The maps of one estimate on the model's crop: attention (kind → array) and the stiffness map
    in kPa (None: the model has no map decoder)."""

    attention: dict
    stiffness_kpa: np.ndarray | None = None


def _write_result(out_dir: Path, report: Report, images: ExamImages, prep: Prepared, maps: ResultMaps,
                  opts: PredictOptions, model_dir: Path, watch: Stopwatch) -> Report:
    """``report`` and the maps into a staging folder beside ``out_dir``, then moved into place
    (report.json last, see :mod:`.outputs`): a failure or a kill leaves no partial result."""
    t_write = time.perf_counter()
    auto_mask = images.mask_info is not None
    # One more thread writes the maps: zlib lets go of the GIL, so they compress while this one
    # goes on (the montage, the report).
    pool = ThreadPoolExecutor(max_workers=1)
    tmp = staging_path(out_dir)    # named before it exists: a signal at any moment leaves nothing behind
    try:
        tmp.mkdir()                # inputs accepted: now we may write
        outputs, rollout, writes = _write_maps(tmp, prep, maps.attention, pool)
        report.outputs = outputs
        kpa_img = None
        if maps.stiffness_kpa is not None:   # kPa over the liver on the reference grid, 0 elsewhere
            kpa_img = prep.to_reference(maps.stiffness_kpa) * sitk.Cast(prep.mask_ref > 0, sitk.sitkFloat32)
            writes.append(pool.submit(write_nifti_gz, kpa_img, tmp / "stiffness_map.nii.gz"))
            outputs["stiffness_map"] = "stiffness_map.nii.gz"
        if auto_mask:  # the automatic mask itself, on the reference grid, for checking
            sitk.WriteImage(images.mask, str(tmp / "mask_auto.nii.gz"), useCompression=True)
            outputs["mask"] = "mask_auto.nii.gz"
        if opts.montage:
            from .montage import MRE_STYLE, write_montage
            write_montage(tmp / "attention_montage.png", prep.reference, rollout, prep.mask_ref,
                          title=f"{report.stiffness_kpa:.2f} kPa ({report.category}) — attention rollout",
                          unit="× uniform share")
            outputs["montage"] = "attention_montage.png"
            if kpa_img is not None:
                write_montage(tmp / "stiffness_map_montage.png", prep.reference, kpa_img, prep.mask_ref,
                              title=f"stiffness map (model estimate, not a measurement): liver mean "
                                    f"{report.stiffness_map['liver_mean_kpa']:.2f} kPa",
                              unit="kPa", style=MRE_STYLE)
                outputs["stiffness_map_montage"] = "stiffness_map_montage.png"
        _finish(writes, f"--out {out_dir}")
        watch.add("write", time.perf_counter() - t_write)
        report.timings_s = watch.total()
        from .report_page import write_report_page
        outputs["report_page"] = write_report_page(tmp / "report.html", report, tmp, model_dir).name
        atomic_write_text(tmp / REPORT, report.to_json())
        publish_folder(tmp, out_dir)
    except BaseException:
        pool.shutdown(cancel_futures=True)      # a write under way ends before its folder goes
        shutil.rmtree(tmp, ignore_errors=True)  # no half-written result is left behind
        raise
    pool.shutdown()
    return report


def _write_maps(folder: Path, prep: Prepared, maps: dict, pool: ThreadPoolExecutor) -> tuple[dict, sitk.Image, list]:
    """Each map back on the reference grid (the T1w's when given), in its own unit (times the uniform share; 0 outside the
    model's crop), unstretched: attention.nii.gz (rollout) and attention_<kind>.nii.gz for the
    others, plus the liver mask on the same grid (liver_mask.nii.gz) for "inside the liver only"
    displays. The files are written by ``pool``. Returns the outputs entry, the rollout image
    and the writes (see :func:`_finish`)."""
    written, writes, rollout = {}, [], None
    for kind, arr in maps.items():
        img = prep.to_reference(arr)
        name = "attention.nii.gz" if kind == DEFAULT_MAP else f"attention_{kind}.nii.gz"
        # GradCAM and saliency vary voxel by voxel; rollout and layer maps are constant over patches.
        writes.append(pool.submit(write_nifti_gz, img, folder / name, kind == "gradcam" or kind.startswith("saliency_")))
        written[kind] = name
        rollout = img if kind == DEFAULT_MAP else rollout
    writes.append(pool.submit(write_nifti_gz, prep.mask_ref, folder / "liver_mask.nii.gz"))
    return {"attention_maps": written, "liver_mask": "liver_mask.nii.gz"}, rollout, writes


def missing_sequences(images: ExamImages) -> dict[str, str]:
    """Sequence → why it is not used: the user's reason for leaving it out, or "not given"."""
    return {name: images.left_out.get(name, "not given") for name in ("t1w", "t2w", "dwi")
            if getattr(images, name) is None}


def _finish(writes: list, where: str) -> None:
    """Wait for the map writes; their first error is raised here (ITK reports a full disk as its
    own exception)."""
    for w in writes:
        try:
            w.result()
        except RuntimeError as exc:
            raise OutputError(where, f"cannot be written ({_last_line(exc)}); nothing was left half-written") from None


def _last_line(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:160]
