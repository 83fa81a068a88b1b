"""Generation: engines that turn a shot into frames.

``engine`` holds the interface and the registry; ``animatic`` is the offline default
(and the previz the diffusion engines follow), ``clips`` plays the user's footage with
mouths animated on a detected face, ``ltx`` and ``ltx2`` run LTX-Video and LTX-2 through
diffusers from local weights; the keyframe store (in ``engine``), ``lipsync``, ``control``
(control signals from the animatic), ``sync`` (lip-sync offset) and ``coherence`` serve
them.
"""
