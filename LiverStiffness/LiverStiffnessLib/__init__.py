"""Slicer-side helpers of the LiverStiffness module that need MRML but no Qt.

``logic`` converts MRML nodes to the core package's inputs and results back to nodes;
``dependencies`` checks and installs the Python packages the core needs.
"""
