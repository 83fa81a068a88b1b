"""Generation: engines that turn a shot into frames.

Planned (see DESIGN.md and the open issues): the offline ``animatic`` engine,
``ltx`` (LTX-Video through diffusers, local weights) and ``clips`` (user media),
the keyframe store and lip-sync. Nothing is implemented here yet; nothing here
pretends to be.
"""
