"""A model folder's test on labelled cases that none of its networks trained on.

Cross-validation scores each training case with the networks that held it out (one per run); a
folder is used as the whole ensemble, every network trained on every training case but its
fold's. Cases from outside the training folder test exactly that ensemble, as ``segment`` runs it
(all networks, the test-time scales, the post-processing), on the case's own grid.

A test case must really be unseen: one whose voxels are a training image's (the same scan under
another name, file format, header or intensity scale) is refused, since its score would be a
training score. Voxels are compared by correlation, not by an exact hash: a copy rescaled, retyped or
with a rewritten header is still the same scan.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..imageio import read_volume
from ..stiffness.checkpoint import sha256
from .data import find_pairs, read_label
from .metrics import compare

PROTOCOL = ("The model folder's whole ensemble (every network, as `segment` runs it) on labelled cases that no "
            "network trained on, each on its own grid, after post-processing.")


# Two different patients' scans on one grid correlate far below this: at most 0.69 among the 20 CHAOS
# T2-SPIR cases of equal size.
SAME_SCAN_CORRELATION = 0.999


def _unit_voxels(image: sitk.Image) -> np.ndarray:
    """The voxels as a zero-mean, unit-length float32 vector: their dot product is the Pearson correlation."""
    v = sitk.GetArrayFromImage(image).astype(np.float32).ravel()
    v -= v.mean()
    norm = float(np.linalg.norm(v))
    return v / norm if norm else v


def unseen_pairs(test_folder: str | Path, training_folders: list[str | Path]) -> list[tuple[str, Path, Path]]:
    """The image/label pairs of ``test_folder``; InputError naming the first image that is a training
    image of ``training_folders`` (same grid size, voxels correlating >= SAME_SCAN_CORRELATION), before
    anything is scored. Memory holds the test images (a handful) and one training image at a time."""
    pairs = find_pairs(test_folder)
    tests = []                                                # (grid size, voxels) per test image
    for _, img, _ in pairs:
        image = read_volume(img)
        tests.append((image.GetSize(), _unit_voxels(image)))
    twins: dict[int, str] = {}                                # test index -> the training image it is
    for folder in training_folders:
        for case_id, img, _ in find_pairs(folder):
            image = read_volume(img)
            same_grid = [i for i, (size, _) in enumerate(tests) if size == image.GetSize() and i not in twins]
            if same_grid:
                voxels = _unit_voxels(image)
                for i in same_grid:
                    if float(tests[i][1] @ voxels) >= SAME_SCAN_CORRELATION:
                        twins[i] = f"{img} ({case_id})"
    if twins:
        first = min(twins)
        raise InputError(str(pairs[first][1]), f"is the training image {twins[first]}: a model cannot be tested on "
                                               "a case it trained on")
    return pairs


class UnseenCase(NamedTuple):
    case_id: str
    image_path: Path
    label_path: Path
    image: sitk.Image
    result: object          # the segmenter's result: mask, probability, confidence
    liver: sitk.Image       # the manual liver label, 0/1
    seconds: float          # reading the image and segmenting it


def segment_unseen(segmenter, pairs: list[tuple[str, Path, Path]], label_value: int | None = 1):
    """Each case read once (the project's checked reader) and segmented once, as ``segment`` runs it;
    a generator, so a caller keeps only what it needs."""
    for case_id, img_path, lab_path in pairs:
        t = time.perf_counter()
        image = read_volume(img_path)
        res = segmenter.segment(image, str(img_path), require_liver=False)
        seconds = time.perf_counter() - t
        yield UnseenCase(case_id, img_path, lab_path, image, res, read_label(lab_path, label_value), seconds)


def unseen_row(case: UnseenCase) -> dict:
    """Dice, HD95, mean surface distance and volumes against the manual label, the report's confidence,
    the seconds it took and the SHA-256 of both files (which data was scored)."""
    conf = case.result.confidence
    return {"case_id": case.case_id, "source": "real", **compare(case.result.mask, case.liver),
            "mean_probability": conf["mean_probability"], "fold_agreement_dice": conf["fold_agreement_dice"],
            "tta_agreement_dice": conf["tta_agreement_dice"], "low_confidence": conf["low_confidence"],
            "seconds": round(case.seconds, 2), "image_sha256": sha256(case.image_path),
            "label_sha256": sha256(case.label_path)}


def score_unseen(segmenter, pairs: list[tuple[str, Path, Path]], label_value: int | None = 1) -> list[dict]:
    """One row (:func:`unseen_row`) per case."""
    return [unseen_row(case) for case in segment_unseen(segmenter, pairs, label_value)]
