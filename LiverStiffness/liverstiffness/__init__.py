"""LiverStiffness core: estimate liver shear stiffness (kPa) from non-contrast abdominal MRI.

Pure Python (numpy, SimpleITK, torch, MONAI); importable without 3D Slicer. The Slicer module
(`LiverStiffness.py`) and the command line (`liverstiffness`) are thin layers over this package.
"""

__version__ = "0.1.0"
