"""Grading: LUT files, LUT application, colour management, CDLs, shot matching, QA.

``lut`` reads and writes .cube/.3dl/.spi1d/.spi3d/.csp with per-channel ranges;
``apply`` applies them (float NumPy reference, the exact 8-bit table, a compiled float
path, torch on a GPU); ``cdl`` reads, writes and applies ASC CDLs; ``colour`` converts
through OpenColorIO's pinned config; ``looks`` finds the bundled looks; ``match`` matches
shots; ``grade`` grades a file to a master by suffix (``media`` reads and writes its
files); ``qa`` checks the picture.
"""
