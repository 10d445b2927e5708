"""Opening an exam in a session: a folder under ``--data`` or uploaded files, read by the core's
readers into the session's scene (``series.py``). Opening another exam first closes the open one
and takes its result away: a result never sits beside inputs it was not computed from. A refused
exam leaves nothing open, and the page says why in one line.

``ExamOpening`` is a part of ``LiverStiffnessWebApp`` (app.py), kept here for the size of that
file: its methods use the app's state, scene, series and result.
"""
from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from liverstiffness.errors import InputError

from . import exams
from .inputs import NUMBER_FACTS
from .messages import public
from .series import ExamRead, add_series, chooser_items, read_exam, remove_series


class ExamOpening:
    """The exam actions of ``LiverStiffnessWebApp``: Open, upload, and what closing an exam clears."""

    async def load_exam(self, exam=None):
        """Open an exam folder under --data (the chooser's value, or ``exam``)."""
        rel = exam if exam is not None else self.state.exam
        if not self._close_exam():
            return
        if self.data is None:
            return self._refuse("exam: this server was started without --data; upload files instead")
        try:
            folder = exams.resolve_inside(self.data, rel)
            if not folder.is_dir():
                raise InputError(f"exam {rel}", "is not a folder")
        except InputError as exc:
            return self._refuse(str(exc))
        await self._open_folder(folder, f"exam {rel}")

    async def upload(self, files):
        """Files from the browser: into this session's folder, then opened as an exam."""
        if not self._close_exam():
            return
        self._uploads += 1
        dest = self.work / "uploads" / f"{self._uploads:03d}"
        try:
            exams.save_uploads(files or [], dest, self.max_upload)
            exams.group_dicom_uploads(dest)
        except InputError as exc:
            return self._refuse(str(exc))
        await self._open_folder(dest, "the upload", uploaded=True)

    def upload_refused(self, megabytes):
        """The browser refused files over the size limit (nothing was sent): the open exam goes too."""
        if self._close_exam():
            self._refuse(f"upload: {float(megabytes):.1f} MB is over the limit of {self.max_upload / 1e6:.0f} MB")

    def _close_exam(self) -> bool:
        """Before another exam is opened: the open one, and any result, go (a result must never sit
        beside inputs it was not computed from). False while an estimate runs."""
        if self.run is not None:
            self._error("An estimate is running: cancel it before opening another exam.")
            return False
        self._clear_exam()
        self.exam_label = None
        with self.state:
            st = self.state
            st.series_items, st.t1w, st.t2w, st.dwi, st.mask, st.dwi_b = [], None, None, None, None, ""
            st.age = st.bmi = st.pdff = st.ast = st.alt = st.platelets = ""
            st.sex, st.error, st.missing, st.sequences_note, st.background_name = None, "", "Choose an exam.", "", ""
            st.status = "Choose an exam, or upload its files."
        return True

    def _refuse(self, text: str) -> None:
        self._error(text)
        self.state.status = "Nothing is open: see the message above."

    async def _open_folder(self, folder: Path, label: str, uploaded: bool = False) -> None:
        with self.state:
            self.state.busy = f"Reading {label}…"
        try:
            read = await asyncio.to_thread(read_exam, folder if uploaded else self.data, folder, label)
        except InputError as exc:
            read = ExamRead([], {}, [str(exc)])
        finally:
            self.state.busy = ""
        if uploaded and not read.loaded:
            shutil.rmtree(folder, ignore_errors=True)  # nothing usable: do not keep it
        if not read.loaded:
            return self._refuse("; ".join(read.errors) or f"{label}: nothing could be read")
        self.refused = read.refused
        self.exam_label = f"upload {self._uploads}" if uploaded else label
        for s, images, b in read.loaded:
            self.series[s.name] = add_series(self.sapp.scene, s, images, b)
        with self.state:
            st = self.state
            st.series_items = chooser_items(self.series)
            for role in exams.ROLES:
                st[role] = next((x.name for x in self.series.values() if x.role == role), None)
            dwi = self.series.get(st.dwi)
            st.dwi_b = ",".join(f"{b:g}" for b in dwi.b_values) if dwi and dwi.b_values else ""
            f = read.facts
            for key in NUMBER_FACTS:           # age, BMI, PDFF and the blood tests, as the manifest gives them
                st[key] = f.get(key, "")
            st.sex = {"F": "F", "M": "M"}.get((f.get("sex") or "").strip().upper()[:1])
            st.error = public("; ".join(read.errors), self.data)
            st.status = f"Opened {label}: {len(self.series)} series. Check the assignment, then Check mask."
        self._update_views()

    def _clear_exam(self) -> None:
        self._drop_result()
        self.qa = None
        self.refused = {}
        if self.auto_mask is not None:
            self.sapp.scene.RemoveNode(self.auto_mask.segmentation)
            self.auto_mask = None
        for x in self.series.values():
            remove_series(self.sapp.scene, x)
        self.series = {}
        with self.state:
            self.state.flags, self.state.qa_text, self.state.auto_mask_text = [], "", ""
