"""Audio: speech, mouth shapes, mixing, loudness and stems.

``tts`` voices lines with espeak-ng (word and phoneme times from its events) and
``coqui`` with a local coqui-tts model; ``visemes`` turns phonemes into mouth shapes;
``mix`` places dialogue and beds into DX/MX/FX stems a window at a time; ``loudness``
measures BS.1770-4 / EBU R128 (true peak, loudness range, curves for the report);
``normalize`` meets a delivery's target with a look-ahead true-peak limiter; ``stream``
and ``io`` read and write audio a block at a time.
"""
