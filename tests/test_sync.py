"""Lip-sync measured on a picture: a filmed face (the astronaut photograph, NASA, public
domain) whose mouth is opened by the footage lip-sync a known number of frames after a
test line's voiced stretches; the meter must find that number."""

from __future__ import annotations

import numpy as np
import pytest

from aiprod_post.generation.lipsync import MouthAnimator
from aiprod_post.generation.sync import SyncMeter, speech_activity

FPS = 24.0
#: voiced frames of the test line: stretches of unequal length, so one lag fits best
VOICED = [(4, 10), (15, 18), (24, 33), (39, 41)]
N = 48


def voice_line() -> np.ndarray:
    """A voice-like buzz (150 Hz and harmonics) on the voiced frames, silence between."""
    t = np.arange(int(N / FPS * 48000)) / 48000
    buzz = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 6))
    gate = np.zeros_like(t, bool)
    for a, b in VOICED:
        gate[int(a / FPS * 48000):int(b / FPS * 48000)] = True
    return (0.3 * buzz * gate).astype(np.float32)


def talking_face(lag: int) -> list[np.ndarray]:
    """The astronaut, her mouth open (shape D) ``lag`` frames after each voiced frame."""
    skimage = pytest.importorskip("skimage")
    face = skimage.data.astronaut()
    voiced = np.zeros(N, bool)
    for a, b in VOICED:
        voiced[a:b] = True
    animate = MouthAnimator(FPS)
    return [animate(face, i, "D" if 0 <= i - lag < N and voiced[i - lag] else "X")
            for i in range(N)]


@pytest.mark.parametrize("lag", [0, 3, -2])
def test_the_meter_finds_how_late_the_mouth_opens(lag):
    meter = SyncMeter(FPS)
    for frame in talking_face(lag):
        meter.add(frame)
    result = meter.result(voice_line(), 48000)
    assert result is not None and result.offset_frames == lag
    assert result.offset_ms == pytest.approx(1000 * lag / FPS)
    assert result.correlation > 0.8 and result.frames_with_face == N


def test_no_face_no_measurement():
    meter = SyncMeter(FPS)
    for _ in range(N):
        meter.add(np.full((64, 64, 3), 90, np.uint8))
    assert meter.result(voice_line(), 48000) is None


def test_speech_activity_marks_the_voiced_frames():
    a = speech_activity(voice_line(), 48000, FPS, N)
    expect = np.zeros(N)
    for s, e in VOICED:
        expect[s:e] = 1
    np.testing.assert_array_equal(a, expect)


def test_with_no_face_the_meter_looks_again_every_quarter_second(monkeypatch):
    """The cascade runs on every sixth frame at 24 fps until a face is found (not on every
    frame: on a noisy picture it takes a tenth of a second or more), then once a second."""
    from aiprod_post.generation import lipsync

    looked: list[int] = []
    meter = SyncMeter(24.0)
    face = (20, 20, 24, 24)
    monkeypatch.setattr(lipsync, "find_face", lambda f: looked.append(len(meter.openness))
                        or (face if len(meter.openness) >= 30 else None))
    for _ in range(80):
        meter.add(np.full((64, 64, 3), 90, np.uint8))
    assert looked == [0, 6, 12, 18, 24, 30, 48, 72]
