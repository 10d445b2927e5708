"""Slicer's translation function for the user-facing strings of the logic layer.

``_("text")`` is ``slicer.i18n.tr`` in the application (the context is the calling file's name,
as Slicer's string extraction expects); outside it (tests, the web front end) the text itself.
"""
from __future__ import annotations

import os
import sys


def _(text: str) -> str:
    try:
        import slicer

        app = slicer.app
    except (ImportError, AttributeError):  # slicer-core from PyPI has no application
        return text
    context = os.path.splitext(os.path.basename(sys._getframe(1).f_code.co_filename))[0]
    return app.translate(context, text)
