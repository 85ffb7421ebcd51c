"""Evaluation of annotation stores against ground-truth point tracks (TAP-Vid, BADJA-style PCK).

Sits beside `trackprep.pipeline` in the layering: it reads stores through `trackprep.io`
and computes with the pure metrics of `trackprep.core`.
"""
