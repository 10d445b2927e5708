"""A manifest turned into model inputs: preprocessed once per case, cached, in parallel.

The cache key includes the input spec, the preprocessing options and the preprocessing version,
so a cache is never reused for a model that sees the images differently. A case that fails is
reported with its reason instead of stopping the cohort.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..errors import InputError
from ..manifest import ExamRecord
from ..preprocess import PREPROCESS_VERSION, InputSpec, PreprocessOptions, prepare_files
from .covariates import ALL_COVARIATES, encode


@dataclass
class CohortArrays:
    images: np.ndarray      # [N, C, z, y, x] float32
    cov: np.ndarray         # [N, K] float32
    known: np.ndarray       # [N, K] bool
    records: list[ExamRecord]
    failures: dict          # case_id → one-line reason
    dense: np.ndarray | None = None   # [N, 2, z, y, x] elastogram targets (ln kPa, weight; dense.py), or None

    @property
    def has_maps(self) -> bool:
        return self.dense is not None and bool(self.dense[:, 1].any())

    @property
    def log_kpa(self) -> np.ndarray:
        return np.log(np.array([r.stiffness_kpa for r in self.records], np.float32))

    def subset(self, idx) -> CohortArrays:
        idx = np.asarray(idx)
        return CohortArrays(self.images[idx], self.cov[idx], self.known[idx], [self.records[i] for i in idx], {},
                            None if self.dense is None else self.dense[idx])


def cohort_counts(records: list[ExamRecord]) -> dict:
    """Exams, patients, and exams per site, vendor and field strength (a model folder's "trained_on")."""
    def count(key):
        return dict(sorted(Counter(str(key(r)) for r in records).items()))
    return {"n_exams": len(records), "n_patients": len({r.patient_id for r in records}),
            "by_site": count(lambda r: r.site), "by_vendor": count(lambda r: r.vendor),
            "by_field_strength_T": count(lambda r: r.field_strength)}


def cache_key(spec: InputSpec, options: PreprocessOptions) -> str:
    blob = json.dumps({"spec": spec.to_dict(), "options": asdict(options), "version": PREPROCESS_VERSION}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def cache_name(rec: ExamRecord) -> str:
    """An exam's cache file: one per case and subset of its sequences (an exam run without its
    T1w is preprocessed differently)."""
    missing = [name for name in ("t1w", "t2w", "dwi") if getattr(rec, name) is None]
    return f"{rec.case_id}.npz" if not missing else f"{rec.case_id}.without_{'_'.join(missing)}.npz"


def _save(path: Path | None, **arrays) -> None:
    if path is not None:
        tmp = Path(str(path) + ".tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)


def _prepare_one(args) -> tuple[str, np.ndarray | None, str | None, np.ndarray | None]:
    """(case_id, input tensor or None, error or None, elastogram targets or None)."""
    rec, spec, options, cache_file, with_maps = args
    import SimpleITK as sitk

    from .dense import crop_of, map_targets

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)  # one process per core instead
    # The elastogram's targets are cached beside the tensor (a cache made before maps is reused).
    wants_map = with_maps and rec.mre_map is not None
    map_file = Path(str(cache_file)[:-4] + ".mre.npz") if cache_file is not None and wants_map else None
    try:
        if cache_file is not None and Path(cache_file).is_file():
            x, crop = np.load(cache_file)["x"], None
        else:
            prep = prepare_files(rec.t1w, rec.t2w, rec.dwi, rec.mask, spec, rec.dwi_b, options)
            x, crop = prep.tensor, prep.crop
            _save(cache_file, x=x)
        if not wants_map:
            return rec.case_id, x, None, None
        if map_file is not None and map_file.is_file():
            return rec.case_id, x, None, np.load(map_file)["m"]
        liver = x[list(spec.channels).index("mask")]
        m = map_targets(rec.mre_map, rec.mre_confidence, crop if crop is not None else crop_of(rec, spec, options), liver)
        _save(map_file, m=m)
        return rec.case_id, x, None, m
    except InputError as exc:
        return rec.case_id, None, str(exc), None


def load_cohort(records: list[ExamRecord], spec: InputSpec, options: PreprocessOptions,
                cache_dir: Path | None = None, workers: int = 0, progress: bool = True,
                covariates: tuple[str, ...] = ALL_COVARIATES, with_maps: bool = True) -> CohortArrays:
    """Preprocess every record (or read it from the cache). ``covariates``: the covariate columns
    (default every one this version knows; a model reads its first ``n_covariates``).
    ``with_maps``: also the elastogram targets of the exams that have one (``dense``)."""
    if cache_dir is not None:
        cache_dir = Path(cache_dir) / cache_key(spec, options)
        cache_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(r, spec, options, (cache_dir / cache_name(r)) if cache_dir else None, with_maps) for r in records]
    workers = workers or min(len(jobs), os.cpu_count() or 1)
    results = {}
    bar = tqdm(total=len(jobs), desc="preprocess", unit="exam", disable=not progress)
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            for case_id, x, err, m in pool.map(_prepare_one, jobs, chunksize=4):
                results[case_id] = (x, err, m)
                bar.update()
    else:
        for job in jobs:
            case_id, x, err, m = _prepare_one(job)
            results[case_id] = (x, err, m)
            bar.update()
    bar.close()
    ok = [r for r in records if results[r.case_id][0] is not None]
    failures = {cid: err for cid, (x, err, _) in results.items() if x is None}
    if not ok:
        raise InputError("manifest", f"no case could be preprocessed (first error: {next(iter(failures.values()))})")
    enc = [encode(r.facts, tuple(covariates)) for r in ok]
    images = np.stack([results[r.case_id][0] for r in ok]).astype(np.float32)
    dense = None
    if any(results[r.case_id][2] is not None for r in ok):   # exams without an elastogram: weight 0
        dense = np.zeros((len(ok), 2, *images.shape[2:]), np.float32)
        for i, r in enumerate(ok):
            if results[r.case_id][2] is not None:
                dense[i] = results[r.case_id][2]
    return CohortArrays(images=images, cov=np.stack([e[0] for e in enc]), known=np.stack([e[1] for e in enc]),
                        records=ok, failures=failures, dense=dense)
