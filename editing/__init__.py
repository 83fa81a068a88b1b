"""Editing: the OpenTimelineIO timeline, its exports for editing applications, conform to masters.

``timeline`` builds the edit; ``interchange`` reads it once in whole frames, and
``export`` writes it as .otio, FCP 7 XML (``fcp7``), FCPXML (``fcpxml``), CMX 3600
(``edl``) and AAF (``aaf``), naming media as ``media_paths`` says; ``check`` checks
such files as their applications would; ``readers`` reads them back; ``conform``
renders masters from any of them; ``subtitles`` writes SRT and WebVTT.
"""
