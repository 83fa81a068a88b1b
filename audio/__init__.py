"""Audio: TTS with phoneme timings, visemes, mixing, BS.1770 loudness and stems.

Planned (see DESIGN.md and the open issues). Nothing is implemented here yet;
nothing here pretends to be.
"""
