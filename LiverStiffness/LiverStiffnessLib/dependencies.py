"""Python packages the core needs inside Slicer: one list, read by both the check and the install.

The check looks at installed versions (not only whether a module imports) and says what is wrong
with each; the install runs only after the user agreed (the widget asks, LiverStiffness.py):

- PyTorch comes through the PyTorch extension (``PyTorchUtils``, SlicerPyTorch), which picks
  the CUDA or CPU build for the machine; the extension is a declared dependency (.s4ext).
- SimpleITK and NumPy come with Slicer and are never pip-installed into it (Slicer's SimpleITK
  carries Slicer's own image IO; replacing it breaks the application): a wrong version there
  means a newer Slicer is needed.
- The rest are pip-installed with their version bounds.
"""
from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass

from .i18n import _

PIP, PYTORCH, SLICER = "pip", "pytorch", "slicer"


@dataclass(frozen=True)
class Requirement:
    module: str        # import name
    dist: str          # distribution name (pip, importlib.metadata)
    spec: str          # version specifier, e.g. ">=1.4,<1.7"
    size: str          # approximate download, for the confirmation dialog
    route: str = PIP   # PIP, PYTORCH (the PyTorch extension) or SLICER (shipped with Slicer, never installed)

    @property
    def pip(self) -> str:
        return f"{self.dist}{self.spec}"


# The one list. pyproject.toml's dependencies carry the same bounds (a test holds them together).
REQUIREMENTS = (
    Requirement("torch", "torch", ">=2.2", "200 MB (CPU) to 2.5 GB (CUDA)", PYTORCH),
    Requirement("monai", "monai", ">=1.4,<1.7", "3 MB"),
    Requirement("einops", "einops", ">=0.7", "<1 MB"),
    Requirement("SimpleITK", "SimpleITK", ">=2.3", "comes with Slicer", SLICER),
    Requirement("numpy", "numpy", ">=1.24", "comes with Slicer", SLICER),
    Requirement("scipy", "scipy", ">=1.10", "35 MB"),
    Requirement("sklearn", "scikit-learn", ">=1.3", "12 MB"),
    Requirement("matplotlib", "matplotlib", ">=3.7", "9 MB"),
    Requirement("tqdm", "tqdm", ">=4.60", "<1 MB"),
    Requirement("pydicom", "pydicom", ">=2.4", "2 MB"),
    Requirement("highdicom", "highdicom", ">=0.28", "1 MB"),
)
BY_MODULE = {r.module: r for r in REQUIREMENTS}


def installed_version(req: Requirement) -> str | None:
    try:
        return importlib.metadata.version(req.dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def version_ok(version: str, spec: str) -> bool:
    """Whether ``version`` satisfies ``spec`` (local build tags such as ``+cpu`` ignored)."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    try:
        return SpecifierSet(spec).contains(Version(version.split("+")[0]), prereleases=True)
    except InvalidVersion:
        return False


def problems() -> dict[str, str]:
    """Import name → what is wrong ("not installed", "version 1.3 installed, needs >=1.4,<1.7")
    for every requirement that is not met; empty when all are."""
    out = {}
    for req in REQUIREMENTS:
        version = installed_version(req)
        if version is None:
            out[req.module] = _("not installed")
        elif not version_ok(version, req.spec):
            out[req.module] = _("version {found} installed, needs {spec}").format(found=version, spec=req.spec)
    return out


def missing() -> list[str]:
    """Import names of the requirements that are not met (torch first)."""
    return list(problems())


def installable(names: list[str]) -> bool:
    """False when one of ``names`` ships with Slicer: then no install can fix it."""
    return all(BY_MODULE[n].route != SLICER for n in names)


def describe(names: list[str]) -> str:
    """One paragraph for the confirmation dialog: what, why, how big, and by which route."""
    found = problems()
    parts = []
    for n in names:
        req = BY_MODULE[n]
        why = found.get(n, "")
        if req.route == PYTORCH:
            parts.append(_("PyTorch {spec} ({size}; {why}) through the PyTorch extension").format(
                spec=req.spec, size=req.size, why=why))
        elif req.route == SLICER:
            parts.append(_("{dist} {spec} ({why}): it comes with Slicer and is never installed by this module; "
                           "use a Slicer release that ships it").format(dist=req.dist, spec=req.spec, why=why))
        else:
            parts.append(f"{req.pip} ({req.size}; {why})")
    text = _("LiverStiffness needs these Python packages in Slicer's Python: {list}.").format(list="; ".join(parts))
    if installable(names):
        text += " " + _("Install them now? This needs an internet connection and may take minutes.")
    return text


def install(names: list[str]) -> None:
    """Install the requirements ``names`` into Slicer's Python (call only after the user agreed).
    Raises RuntimeError with a sentence for the user when a route is not available."""
    import slicer

    reqs = [BY_MODULE[n] for n in names]
    shipped = [r.dist for r in reqs if r.route == SLICER]
    if shipped:
        raise RuntimeError(_("{names} come(s) with Slicer and cannot be installed by this module: "
                             "use a Slicer release that ships the required version.").format(names=", ".join(shipped)))
    torch = [r for r in reqs if r.route == PYTORCH]
    if torch:
        try:
            import PyTorchUtils  # the PyTorch extension picks the right CUDA/CPU build
        except ImportError:
            raise RuntimeError(_("PyTorch is installed through the PyTorch extension: install 'PyTorch' from the "
                                 "Extensions Manager, restart Slicer, and try again.")) from None
        logic = PyTorchUtils.PyTorchUtilsLogic()
        if logic.installTorch(askConfirmation=False, torchVersionRequirement=torch[0].spec) is None:
            raise RuntimeError(_("PyTorch installation was not completed."))
    pip = [r.pip for r in reqs if r.route == PIP]
    if pip:
        slicer.util.pip_install(pip)


def versions() -> dict[str, str]:
    shown = ("torch", "monai", "SimpleITK", "numpy")
    return {r.dist: installed_version(r) or "missing" for r in REQUIREMENTS if r.module in shown}
