"""A model folder as a MONAI bundle (``liverstiffness export-bundle``), and its metadata checked offline.

The bundle (layout in :mod:`.bundle_layout`) keeps the model folder's files unchanged in
``models/``, so the SHA-256 of every weight file in ``model.json`` / ``seg_model.json`` still holds
and the same loaders read it. ``configs/inference.json`` runs the same code as ``liverstiffness
predict`` / ``segment`` (:mod:`.bundle`) and carries the model's description as config entries:
the ensemble (architecture, fold weight files and their SHA-256), the preprocessing spec, the
covariate encoding and the interval calibration (segmenter: input spec and inference settings).
That copy is checked against the model folder before every run, so it cannot drift from what
runs. ``configs/metadata.json`` follows MONAI's metadata schema, of which a copy is vendored
(``bundle_schema/``): :func:`verify_metadata` runs MONAI's own ``verify_metadata`` against that
file, which never downloads (MONAI downloads only when the file is absent).
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from . import __version__
from .bundle_layout import DOCS, INFERENCE, METADATA, MODELS, model_folder
from .errors import InputError

SCHEMA_NAME = "meta_schema_20240725.json"
#: The vendored copy of MONAI's bundle metadata schema (README.md beside it: source and licence).
SCHEMA_FILE = Path(__file__).resolve().parent / "bundle_schema" / SCHEMA_NAME
SCHEMA_SHA256 = "cd64aa8a5904426f6fc6855dabe46af8c742d5bad644b4e9cfb78ebad09ad678"
#: What the metadata's ``schema`` field names: the URL Model Zoo bundles use for this schema.
SCHEMA_URL = f"https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/{SCHEMA_NAME}"
SEG_LICENCE = "LICENSE-WEIGHTS.md"
CODE_LICENCE = "the liverstiffness code that runs them: Apache-2.0"
DEFAULT_AUTHORS = "the LiverStiffness developers"


def kind_of(model_dir: Path) -> str:
    """"stiffness" (model.json) or "segmentation" (seg_model.json); InputError for anything else."""
    if (model_dir / "model.json").is_file():
        return "stiffness"
    if (model_dir / "seg_model.json").is_file():
        return "segmentation"
    raise InputError(f"MODEL_DIR {model_dir}", "is neither a stiffness model folder (model.json) nor a segmentation "
                                               "model folder (seg_model.json)")


def _raw(model_dir: Path, kind: str) -> dict:
    name = "model.json" if kind == "stiffness" else "seg_model.json"
    return json.loads((model_dir / name).read_text(encoding="utf-8"))


def covariate_encoding(n_covariates: int = 4) -> dict:
    """How the clinical facts enter a model with ``n_covariates`` tokens (:mod:`.stiffness.covariates`), as data."""
    from .stiffness.covariates import _LAB_SCALING, _LOG_SCALING, _SCALING, model_covariates

    names = model_covariates(n_covariates)
    units = {"age": "years", "bmi": "kg/m²", "pdff": "percent", "ast": "U/L", "alt": "U/L",   # no text may start
             "platelets": "10^9/L", "fib4": "age x AST / (platelets x sqrt(ALT))"}           # with % ($, @): MONAI's syntax
    enc = {n: {"centre": c, "scale": s, "unit": units[n], "value": "(x - centre) / scale"}
           for n, (c, s) in {**_SCALING, **_LAB_SCALING}.items()}
    enc.update({n: {"centre": c, "scale": s, "unit": units[n], "value": "(ln x - centre) / scale"}
                for n, (c, s) in _LOG_SCALING.items()})
    enc["sex"] = {"F": -1.0, "M": 1.0}
    return {"order": list(names), "encoding": {n: enc[n] for n in names},
            "unknown": "known flag false: the model's learned missing-value embedding"}


def model_entry(model_dir: Path, kind: str) -> dict:
    """The model's description as ``inference.json`` carries it (and as it is checked before a run)."""
    d = _raw(model_dir, kind)
    folds = [{k: f[k] for k in ("file", "sha256", "run", "seed") if k in f} for f in d["folds"]]
    entry = {"name": d["name"], "version": d["version"], "format": d["format"],
             "ensemble": {"architecture": d["architecture"], "folds": folds}}
    if kind == "stiffness":
        entry["ensemble"]["combination"] = "the geometric mean of the fold networks' kPa (the mean of their ln kPa)"
        entry["preprocessing"] = {"input_spec": d["input_spec"], "preprocess": d["preprocess"]}
        entry["covariates"] = covariate_encoding(d["architecture"]["n_covariates"])
        entry["interval_calibration"] = d.get("calibration")
    else:
        entry["ensemble"]["combination"] = "the mean of the fold networks' liver probabilities"
        entry["preprocessing"] = {"input_spec": d["input_spec"]}
        entry["inference"] = d["inference"]
    return entry


def check_model_entry(bundle_root: Path, entry, kind: str) -> Path:
    """The bundle's ``models/`` folder, after checking that the config's model entry describes it;
    InputError naming the first entry that differs."""
    folder = model_folder(bundle_root)
    if kind_of(folder) != kind:
        raise InputError(f"bundle {bundle_root}", f"holds a {kind_of(folder)} model, not a {kind} model")
    actual = json.loads(json.dumps(model_entry(folder, kind)))
    if not isinstance(entry, dict):
        raise InputError(f"{bundle_root / INFERENCE}", "has no 'model' entry describing the model")
    differ = [k for k in sorted(set(actual) | set(entry)) if actual.get(k) != entry.get(k)]
    if differ:
        raise InputError(f"{bundle_root / INFERENCE}", f"its model entry differs from {MODELS}/ ({', '.join(differ)}): "
                                                       "the config must describe the model that runs; export it again")
    return folder


def _versions() -> dict:
    import monai
    import numpy
    import SimpleITK
    import torch

    return {"monai_version": monai.__version__, "pytorch_version": torch.__version__.split("+")[0],
            "numpy_version": numpy.__version__,
            "required_packages_version": {"liverstiffness": __version__, "SimpleITK": SimpleITK.Version_VersionString(),
                                          "einops": _dist_version("einops"), "scipy": _dist_version("scipy")}}


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return ""


def _tensor(kind: str, fmt: str, channels: int, shape: list, dtype: str = "float32", value_range=(), names=None) -> dict:
    d = {"type": kind, "format": fmt, "num_channels": channels, "spatial_shape": shape, "dtype": dtype,
         "value_range": list(value_range), "is_patch_data": False}
    if names:
        d["channel_def"] = {str(i): n for i, n in enumerate(names)}
    return d


def _stiffness_metadata(d: dict) -> dict:
    arch, spec = d["architecture"], d["input_spec"]
    covariates = covariate_encoding(arch["n_covariates"])["order"]
    cal = d.get("calibration") or {}
    trained = d.get("trained_on") or {}
    source = "synthetic MRI phantoms (liverstiffness synth)" if d.get("synthetic_training_data") else "MRI exams with MRE"
    return {
        "task": "Liver shear stiffness (kPa, as MR elastography at 60 Hz measures it) from non-contrast T1w, T2w and "
                "DWI MRI with a liver mask",
        "description": f"{d['name']} {d['version']}: an ensemble of {len(d['folds'])} cross-validation fold networks "
                       f"({arch.get('class')}); the estimate is the geometric mean of their kPa, with a "
                       f"{cal.get('coverage', 0):.0%} CV+ interval (configs/inference.json: model#interval_calibration). "
                       "configs/inference.json runs liverstiffness's own pipeline (input checks, mask QA, registration, "
                       "preprocessing, attention maps) and writes what `liverstiffness predict` writes.",
        "data_source": f"{trained.get('n_exams', '?')} exams of {trained.get('n_patients', '?')} patients, {source}",
        "intended_use": d.get("intended_use") or "research use only; not a medical device",
        "eval_metrics": (d.get("metrics") or {}).get("cross_validation", {}).get("transformer", {}),
        "network_data_format": {
            "inputs": {
                "image": _tensor("image", "magnitude", len(spec["channels"]), list(arch["img_size"]),
                                 names=spec["channels"]),
                "covariates": _tensor("tensor", "covariates", arch["n_covariates"], [], names=covariates),
                "known": _tensor("tensor", "mask", arch["n_covariates"], [], "bool", (0, 1), covariates),
            },
            "outputs": {"pred": _tensor("tensor", "regression", 1, [], names=["ln(stiffness in kPa), one per fold network"])},
        },
    }


def _seg_metadata(d: dict) -> dict:
    arch = d["architecture"]
    context = int(arch.get("context", (arch["in_channels"] - 1) // 2))
    slices = [f"slice {k:+d}" if k else "slice" for k in range(-context, context + 1)]
    return {
        "task": "Automatic liver mask of an axial T2-weighted abdominal MRI",
        "description": f"{d['name']} {d['version']}: {len(d['folds'])} 2.5-D MONAI UNets (axial slices with "
                       f"{context} neighbours each side) whose mean liver probability, with test-time scales "
                       f"{d['inference'].get('tta_scales', [1.0])}, is thresholded and cleaned. configs/inference.json "
                       "runs liverstiffness's own segmenter and writes what `liverstiffness segment` writes.",
        "data_source": "; ".join(f"{v} {k}" for k, v in (d.get("trained_on") or {}).items()) or "not recorded",
        "intended_use": d.get("intended_use") or "Research use only, not a medical device: an automatic liver mask "
                                                 "for liverstiffness predict --mask auto; check it before use.",
        "eval_metrics": {k: v for k, v in (d.get("metrics") or {}).items() if k == "held_out"},
        "network_data_format": {
            "inputs": {"image": _tensor("image", "magnitude", arch["in_channels"], ["*", "*"], value_range=(0, 1),
                                        names=slices)},
            "outputs": {"pred": _tensor("image", "segmentation", arch["out_channels"], ["*", "*"],
                                        names=["liver logit (sigmoid: probability)"])},
        },
    }


def metadata(model_dir: Path, kind: str, authors: str = DEFAULT_AUTHORS, rights: str | None = None) -> dict:
    """``configs/metadata.json`` for a model folder."""
    d = _raw(model_dir, kind)
    part = _stiffness_metadata(d) if kind == "stiffness" else _seg_metadata(d)
    if rights is None:
        rights = (f"Weights: the terms in docs/{SEG_LICENCE}; {CODE_LICENCE}" if kind == "segmentation"
                  else f"Weights: Copyright {authors}; {CODE_LICENCE}")
    return {"schema": SCHEMA_URL, "version": str(d["version"]),
            "changelog": {str(d["version"]): f"{d['name']} {d['version']}, exported by liverstiffness {__version__}"},
            **_versions(), "name": d["name"], **part, "authors": authors, "copyright": rights,
            "data_type": "3-D MRI read with SimpleITK: NIfTI, NRRD, MHA or a DICOM series folder",
            "references": []}


def inference_config(model_dir: Path, kind: str) -> dict:
    """``configs/inference.json``: the inputs as config entries (overridable: ``--t1w FILE``), the
    model's description, and ``run`` calling :mod:`.bundle`'s component."""
    common = {"bundle_root": ".", "device": "auto"}
    if kind == "stiffness":
        inputs = {"t1w": None, "t2w": None, "dwi": None, "mask": None, "dwi_b": None, "mask_label": None,
                  "age": None, "sex": None, "bmi": None, "pdff": None}
        options = {"maps": "default", "montage": True, "qa": True, "cutoffs": None, "seg_model": None}
        return {**common, **inputs, **options, "output_dir": "$@bundle_root + '/eval'",
                "model": model_entry(model_dir, kind),
                "exam": {k: f"@{k}" for k in inputs}, "options": {k: f"@{k}" for k in options},
                "predictor": {"_target_": "liverstiffness.bundle.StiffnessBundle", "bundle_root": "@bundle_root",
                              "model": "@model", "device": "@device"},
                "run": ["$@predictor.run(@exam, @options, @output_dir)"]}
    return {**common, "image": None, "output": "$@bundle_root + '/eval/liver_mask.nii.gz'", "probability": None,
            "report": None, "model": model_entry(model_dir, kind),
            "segmenter": {"_target_": "liverstiffness.bundle.SegmentationBundle", "bundle_root": "@bundle_root",
                          "model": "@model", "device": "@device"},
            "run": ["$@segmenter.run(@image, @output, @probability, @report)"]}


def _check_weights(model_dir: Path, kind: str) -> None:
    """Every weight file present and matching its SHA-256 (a broken folder is not exported)."""
    from .stiffness.checkpoint import read_meta, sha256

    if kind == "stiffness":
        folds = read_meta(model_dir).folds
    else:
        from .segmentation.model_folder import read_meta as read_seg_meta
        folds = read_seg_meta(model_dir).folds
        if not (model_dir / SEG_LICENCE).is_file():
            raise InputError(f"MODEL_DIR {model_dir}", f"has no {SEG_LICENCE}: the weights' terms must travel with them")
    for fold in folds:
        path = model_dir / fold["file"]
        if not path.is_file():
            raise InputError(f"MODEL_DIR {model_dir}", f"weight file {fold['file']} is missing")
        if sha256(path) != fold["sha256"]:
            raise InputError(path, "SHA-256 does not match the model description (file changed or corrupt)")


def export_bundle(model_dir: str | Path, out: str | Path, authors: str = DEFAULT_AUTHORS,
                  rights: str | None = None) -> tuple[str, bool]:
    """Write the bundle of ``model_dir`` (a model folder or a bundle) to ``out`` (new or empty).
    Returns the model kind and whether the metadata was verified against MONAI's schema (False
    only when jsonschema, which that needs, is not installed)."""
    from .outputs import publish_folder, staging_path, writing

    src, out = model_folder(Path(model_dir)), Path(out)
    kind = kind_of(src)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"OUT {out}", "exists and is not an empty folder")
    if out.resolve().is_relative_to(src.resolve()):
        raise InputError(f"OUT {out}", "lies inside the model folder")
    _check_weights(src, kind)
    meta, config = metadata(src, kind, authors, rights), inference_config(src, kind)
    _check_parses(config, src, kind)
    with writing(f"OUT {out}"):
        tmp = staging_path(out)
        try:
            tmp.mkdir()
            for sub in ("configs", MODELS, DOCS):
                (tmp / sub).mkdir()
            for f in sorted(src.iterdir()):
                if f.is_file() and not f.is_symlink():
                    shutil.copy2(f, tmp / MODELS / f.name)
            card = src / "MODEL_CARD.md"
            if card.is_file():
                shutil.copy2(card, tmp / DOCS / "README.md")
            if (src / SEG_LICENCE).is_file():
                shutil.copy2(src / SEG_LICENCE, tmp / DOCS / SEG_LICENCE)
            (tmp / METADATA).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
            (tmp / INFERENCE).write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
            verified = jsonschema_available()
            if verified:
                verify_metadata(tmp)
            if out.exists():
                out.rmdir()
            publish_folder(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return kind, verified


def _check_parses(config: dict, model_dir: Path, kind: str) -> None:
    """MONAI's config parser reads the model entry back as written (no string of it taken for a
    reference or an expression)."""
    from monai.bundle import ConfigParser

    try:
        same = ConfigParser(json.loads(json.dumps(config))).get_parsed_content("model") == json.loads(json.dumps(
            model_entry(model_dir, kind)))
    except (ValueError, KeyError, RuntimeError):
        same = False
    if not same:
        raise InputError(f"MODEL_DIR {model_dir}", "has a description that MONAI's config parser does not read back "
                                                   "unchanged (a text starting with $, @ or %?)")


def jsonschema_available() -> bool:
    from importlib.util import find_spec

    return find_spec("jsonschema") is not None


def verify_metadata(bundle: str | Path) -> None:
    """``monai.bundle.verify_metadata`` on the bundle's metadata against the vendored schema: no
    download (the schema file exists, and its SHA-256 is checked). InputError when it fails."""
    from monai.bundle import verify_metadata as monai_verify

    meta_file = Path(bundle) / METADATA
    if not meta_file.is_file():
        raise InputError(f"bundle {bundle}", f"has no {METADATA}")
    if not jsonschema_available():
        raise InputError("jsonschema", "is not installed; MONAI's verify_metadata needs it (pip install jsonschema)")
    if hashlib.sha256(SCHEMA_FILE.read_bytes()).hexdigest() != SCHEMA_SHA256:
        raise RuntimeError(f"{SCHEMA_FILE} is not the vendored schema (SHA-256 differs): reinstall liverstiffness")
    try:
        monai_verify(meta_file=str(meta_file), filepath=str(SCHEMA_FILE), hash_val=SCHEMA_SHA256, hash_type="sha256")
    except ValueError as exc:
        first = " ".join(str(exc).split())[:300]
        raise InputError(meta_file, f"does not follow MONAI's bundle metadata schema ({first})") from None
