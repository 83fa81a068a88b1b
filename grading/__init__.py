"""Grading: LUT files, fast LUT application, colour management, shot matching, picture QA.

Planned (see DESIGN.md and the open issues). Nothing is implemented here yet;
nothing here pretends to be.
"""
