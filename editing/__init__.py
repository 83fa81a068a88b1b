"""Editing: the OpenTimelineIO timeline, Resolve/Premiere exports, subtitles, conform to masters.

Planned (see DESIGN.md and the open issues). Nothing is implemented here yet;
nothing here pretends to be.
"""
