"""DICOM in and out: from a study folder to the exam's images, and results a PACS can store.

- ``index``: header-only indexing of a folder (pydicom, no pixel data), grouped into series.
- ``rules`` and ``default_rules.json``: editable JSON rules that say which series is the T1w,
  the T2w and the DWI (descriptions, sequence type, TE/TR/flip ranges, ImageType, b-values,
  in/opposed-phase echoes).
- ``selection``: applies the rules to a study; the table of series considered, the choice per role
  and why; ambiguity or a missing role is an :class:`~liverstiffness.errors.InputError`.
- ``study_input``: the chosen series as the core's ``ExamImages`` (in-phase echo of a dual-echo
  T1w, DWI split by b-value, liver mask from a DICOM SEG), patient facts from the headers.
- ``seg``, ``parametric_map``, ``sr``, ``results``: the liver mask as a DICOM SEG, the attention
  map as a Parametric Map and the estimate as a TID 1500 Comprehensive 3D SR (highdicom).
- ``synthetic_study``: a phantom exam written as a multi-series study with vendor-like headers.

Coordinates are DICOM patient coordinates (LPS, mm), the same as ITK's.
"""
