"""aiprod-post: a screenplay in; graded, mixed masters and an editable timeline out.

This package holds the data model (the shot plan), the Fountain parser, the
shot planner and the command line. Signal processing lives in the sibling
stage packages ``generation``, ``audio``, ``grading`` and ``editing``.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
