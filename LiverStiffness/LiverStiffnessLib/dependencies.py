"""Python packages the core needs inside Slicer: check them, explain what is missing, and
install on request (PyTorch through the PyTorch extension when it is there, else pip).

Never installs at import time or silently: the widget asks first (see LiverStiffness.py).
"""
from __future__ import annotations

import importlib
import importlib.metadata

# module name → (pip requirement, approximate download size for the confirmation dialog)
REQUIREMENTS = {
    "monai": ("monai>=1.4,<1.7", "3 MB"),
    "einops": ("einops>=0.7", "<1 MB"),
    "SimpleITK": ("SimpleITK>=2.3", "50 MB"),
    "scipy": ("scipy>=1.10", "35 MB"),
    "sklearn": ("scikit-learn>=1.3", "12 MB"),
    "matplotlib": ("matplotlib>=3.7", "9 MB"),
    "tqdm": ("tqdm>=4.60", "<1 MB"),
    "pydicom": ("pydicom>=2.4", "2 MB"),
    "highdicom": ("highdicom>=0.28", "1 MB"),
}
TORCH_REQUIREMENT = "torch>=2.2"
TORCH_SIZE = "200 MB (CPU) to 2.5 GB (CUDA)"


def missing() -> list[str]:
    """Import names that cannot be imported now (torch first)."""
    out = []
    for name in ("torch", *REQUIREMENTS):
        try:
            importlib.import_module(name)
        except ImportError:
            out.append(name)
    return out


def describe(names: list[str]) -> str:
    """One paragraph for the confirmation dialog: what, why, how big."""
    parts = []
    for n in names:
        if n == "torch":
            parts.append(f"PyTorch ({TORCH_SIZE}; through the PyTorch extension if installed)")
        else:
            req, size = REQUIREMENTS[n]
            parts.append(f"{req} ({size})")
    return ("LiverStiffness needs these Python packages, which are not installed in Slicer's Python: "
            + "; ".join(parts) + ". Install them now? This needs an internet connection and may take minutes.")


def install(names: list[str]) -> None:
    """Install the missing packages into Slicer's Python (call only after the user agreed)."""
    import slicer

    if "torch" in names:
        try:
            import PyTorchUtils  # the PyTorch extension picks the right CUDA/CPU build

            if PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False, torchVersionRequirement=">=2.2") is None:
                raise RuntimeError("PyTorch installation was not completed")
        except ImportError:
            slicer.util.pip_install(TORCH_REQUIREMENT)
    rest = [REQUIREMENTS[n][0] for n in names if n != "torch"]
    if rest:
        slicer.util.pip_install(rest)


def versions() -> dict[str, str]:
    out = {}
    for dist in ("torch", "monai", "SimpleITK", "numpy"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "missing"
    return out
