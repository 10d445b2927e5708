"""Mask QA of one exam as the user gives it — files, a manifest row or a DICOM study — and its
qa.json. The checks themselves are in :mod:`.qa`; ``qa`` on the command line and the batch use
this. Like ``predict``, QA takes any non-empty subset of T1w, T2w and DWI; the DWI needs no ADC fit."""
from __future__ import annotations

from .errors import InputError
from .imageio import read_dwi, read_mask, read_volume
from .manifest import ExamRecord
from .preprocess import ExamImages
from .qa import QAThresholds, run_qa


def read_qa_exam(exam: ExamRecord, segmenter=None) -> tuple[ExamImages, dict | None]:
    """The exam to check; ``exam.mask`` None or 'auto': made by ``segmenter()`` on the T2w (the
    returned info says how, else None)."""
    if not (exam.t1w or exam.t2w or exam.dwi):
        raise InputError("qa", "needs at least one of --t1w, --t2w and --dwi")
    t1 = read_volume(exam.t1w, "t1w") if exam.t1w else None
    t2 = read_volume(exam.t2w, "t2w") if exam.t2w else None
    d = read_dwi(exam.dwi, exam.dwi_b, "dwi", fit_adc=False) if exam.dwi else None
    paths = {name: str(path) for name, path in (("t1w", exam.t1w), ("t2w", exam.t2w), ("dwi", exam.dwi),
                                                ("mask", exam.mask)) if path}
    if exam.mask is None or str(exam.mask) == "auto":
        if not exam.t2w:
            raise InputError("--mask auto", "needs --t2w (the liver model segments T2-weighted images)")
        from .segmentation.auto_mask import auto_mask
        return auto_mask(t1, t2, d, paths, segmenter())
    images = ExamImages(t1, t2, d, read_mask(exam.mask, exam.mask_label, "mask", allow_empty=True), paths)
    return images, None


def read_qa_study(request, segmenter=None, quiet: bool = True) -> tuple[ExamImages, dict | None, dict]:
    """A DICOM study's exam for QA (series by the rules) and the qa.json entries saying how."""
    from .dicom.study_run import select, study_exam

    selection = select(request, quiet)
    images, auto, _, _ = study_exam(selection, request, segmenter, fit_adc=False)
    return images, auto, {"study": selection.report()}


def check_exam_mask(exam: ExamRecord, thresholds: QAThresholds | None = None, segmenter=None):
    """QA of one manifest row or single exam: (result, images, automatic-mask info, qa.json extras)."""
    extra = None
    if exam.study is not None:
        from .dicom.study_run import StudyRequest
        request = StudyRequest(exam.study, mask=exam.mask, auto_without_seg=True)
        images, auto, extra = read_qa_study(request, segmenter)
    else:
        images, auto = read_qa_exam(exam, segmenter)
    return run_exam_qa(images, thresholds), images, auto, extra


def run_exam_qa(images: ExamImages, thresholds: QAThresholds | None = None):
    """QA of the sequences given, the others registered to the reference."""
    return run_qa(images, thresholds)


def qa_json(res, auto: dict | None, extra: dict | None = None) -> dict:
    """qa.json: the QA result, and how the mask was made when it was automatic."""
    return {**res.to_dict(), "mask": auto or {"source": "given"}, **(extra or {})}
