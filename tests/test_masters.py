"""Masters as a delivery engineer probes them: GOP, keyframes, picture types, B-frames,
level, bitrate cap, colour tags, frame count - read back from real encodes with PyAV's
decoder and demuxer, against figures written out here."""

from __future__ import annotations

import dataclasses
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import opentimelineio as otio
import pytest

from aiprod_post.audio.io import write_wav
from aiprod_post.editing.conform import PROFILES, conform, encode_master, verify_master
from aiprod_post.editing.timeline import NAMESPACE, path_to_url

W, H, FPS = 320, 180, Fraction(24)
SHOT_LENGTHS = (60, 70, 50)  # cuts at 60 and 130; 180 frames, 7.5 s
GOP = 48  # 2 s at 24 fps


def painted(n: int, seed: int):
    """Moving sine-modulated RGB with a little grain: something an encoder must work at."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    phase = rng.uniform(0, 6, 3)
    for k in range(n):
        chans = [127 + 100 * np.sin((x + 3 * k) / (17 + 9 * c) + (y - 2 * k) / 23 + phase[c])
                 for c in range(3)]
        frame = np.stack(chans, axis=-1) + rng.normal(0, 3, (H, W, 3))
        yield np.clip(frame, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def film(tmp_path_factory):
    """Three intra-only ProRes shots cut together, and a mix."""
    folder = tmp_path_factory.mktemp("masters")
    track = otio.schema.Track(name="V1", kind=otio.schema.TrackKind.Video)
    for i, n in enumerate(SHOT_LENGTHS):
        path = folder / f"shot{i}.mov"
        encode_master(painted(n, i), n, FPS, W, H, path, PROFILES["prores"], None)
        track.append(otio.schema.Clip(
            name=f"shot{i}", media_reference=otio.schema.ExternalReference(path_to_url(path)),
            source_range=otio.opentime.TimeRange(otio.opentime.RationalTime(0, 24),
                                                 otio.opentime.RationalTime(n, 24))))
    tl = otio.schema.Timeline(name="film", metadata={NAMESPACE: {
        "width": W, "height": H, "rate": "24"}})
    tl.tracks.append(track)
    t = np.arange(int(sum(SHOT_LENGTHS) * 2000)) / 48000
    write_wav(folder / "mix.wav", np.stack([0.1 * np.sin(2 * np.pi * 440 * t)] * 2, axis=1))
    return folder, tl


def decoded_types(path: Path) -> tuple[str, list[int]]:
    """Picture types (I/P/B) in display order and the key frames, as the decoder says."""
    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))
    return ("".join(" IPB"[int(f.pict_type)] for f in frames),
            [k for k, f in enumerate(frames) if f.key_frame])


def decode_order(path: Path) -> list[tuple[int, bool]]:
    """(display frame number, keyframe) of each video packet, in decode order."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        tb = s.time_base  # read while the file is open
        packets = [(p.pts, p.is_keyframe) for p in c.demux(s) if p.size]
    first = min(p for p, _ in packets)
    return [(int(round((p - first) * tb * FPS)), key) for p, key in packets]


def assert_closed_gops(path: Path) -> None:
    """No frame decoded after a keyframe is shown before it (nothing reaches back past a
    GOP start)."""
    order = decode_order(path)
    start = 0
    for shown, key in order:
        if key:
            start = shown
        assert shown >= start, f"frame {shown} decoded after the GOP starting at {start}"


def test_shots_are_intra_only(film):
    folder, _ = film
    types, keys = decoded_types(folder / "shot0.mov")
    assert types == "I" * SHOT_LENGTHS[0] and keys == list(range(SHOT_LENGTHS[0]))


def test_web_master_from_prores_shots_is_long_gop(film, tmp_path):
    folder, tl = film
    m = conform(tl, tmp_path / "web.mp4", "h264", audio=folder / "mix.wav")
    types, keys = decoded_types(m)
    assert len(types) == 180
    assert keys == [0, 48, 96, 144]  # a closed GOP of 2 s; the cuts get none
    assert [k for k, t in enumerate(types) if t == "I"] == keys
    assert types.count("B") > 60 and "BBB" not in types  # 2 consecutive B-frames at most
    assert_closed_gops(m)
    sei = m.read_bytes()
    for setting in (b"keyint=48", b"open_gop=0", b"scenecut=0", b"bframes=2", b"b_pyramid=2",
                    b"vbv_maxrate=1000", b"vbv_bufsize=2000"):
        assert setting in sei  # as x264 records its settings in the stream
    check = verify_master(m, tl, "h264")
    assert check["ok"], check["problems"]
    assert check["measured"]["keyframes"] == 4 and check["measured"]["level"] == 20


def test_keyframes_at_cuts_where_the_profile_asks(film, tmp_path):
    folder, tl = film
    at_cuts = dataclasses.replace(PROFILES["h264"], keyframes_at_cuts=True)
    m = conform(tl, tmp_path / "cuts.mp4", at_cuts, audio=folder / "mix.wav")
    types, keys = decoded_types(m)
    assert keys == [0, 48, 60, 108, 130, 178]  # the GOP count restarts at each cut
    assert [k for k, t in enumerate(types) if t == "I"] == keys
    assert_closed_gops(m)
    assert verify_master(m, tl, at_cuts)["ok"]


def test_hevc_hdr_master_is_long_gop(film, tmp_path):
    folder, tl = film
    m = conform(tl, tmp_path / "pq.mov", "hdr-pq", audio=folder / "mix.wav")
    types, keys = decoded_types(m)
    assert len(types) == 180 and keys == [0, 48, 96, 144]
    assert [k for k, t in enumerate(types) if t == "I"] == keys
    assert types.count("B") > 60
    assert_closed_gops(m)
    check = verify_master(m, tl, "hdr-pq")
    assert check["ok"], check["problems"]


def test_hevc_masters_are_hvc1_with_hdr10_metadata(film, tmp_path):
    """An HEVC master in MOV has the hvc1 sample entry (QuickTime and Apple's devices play
    no other) and an HDR10 one its static metadata; the probe names an hev1 file."""
    from aiprod_post.editing.conform import probe

    folder, tl = film
    m = conform(tl, tmp_path / "pq.mov", "hdr-pq")
    assert probe(m)["video"]["tag"] == "hvc1"
    with av.open(str(m)) as c:
        kinds = {sd.type.name for sd in next(c.decode(video=0)).side_data}
    assert {"MASTERING_DISPLAY_METADATA", "CONTENT_LIGHT_LEVEL"} <= kinds
    bad = tmp_path / "hev1.mov"  # the same stream in FFmpeg's default sample entry
    with av.open(str(m)) as src, av.open(str(bad), "w", format="mov") as dst:
        s = dst.add_stream_from_template(src.streams.video[0])
        s.codec_tag = "hev1"
        for p in src.demux(video=0):
            if p.dts is not None:
                p.stream = s
                dst.mux(p)
    assert probe(bad)["video"]["tag"] == "hev1"
    assert any("sample entry is hev1, expected hvc1" in p
               for p in verify_master(bad, tl, "hdr-pq")["problems"])
    # the SDR picture checks refuse it, naming the file (exit 2, no report)
    from click.testing import CliRunner

    from aiprod_post.cli import main

    said = CliRunner().invoke(main, ["qa", str(m)])
    assert said.exit_code == 2 and "HDR video (PQ transfer)" in said.output \
        and "pq.mov" in said.output and "{" not in said.output


def test_prores_master_stays_intra(film, tmp_path):
    folder, tl = film
    m = conform(tl, tmp_path / "master.mov", "prores", audio=folder / "mix.wav")
    types, keys = decoded_types(m)
    assert types == "I" * 180 and keys == list(range(180))
    assert verify_master(m, tl, "prores")["ok"]


def test_verify_master_names_a_wrong_gop(film, tmp_path):
    folder, tl = film
    # every frame forced to a keyframe: the intra-only web master this check is for
    frames = (f for n, s in zip(SHOT_LENGTHS, range(3)) for f in painted(n, s))
    m = encode_master(frames, 180, FPS, W, H, tmp_path / "intra.mp4", PROFILES["h264"], None,
                      keyframes=range(180))
    assert decoded_types(m)[1] == list(range(180))
    check = verify_master(m, tl, "h264")
    assert not check["ok"]
    assert any("180 keyframes, expected 4" in p for p in check["problems"])
    assert any("no B-frames" in p for p in check["problems"])


def noise(n: int):
    rng = np.random.default_rng(7)
    for _ in range(n):
        yield rng.integers(0, 256, (H, W, 3), dtype=np.uint8)


def window_bits(path: Path, frames: int) -> float:
    """Most video bits in any ``frames`` consecutive frames (display order)."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        sizes = sorted((p.pts, p.size * 8) for p in c.demux(s) if p.size)
    bits = np.array([b for _, b in sizes], float)
    return float(np.convolve(bits, np.ones(frames), "valid").max())


def test_web_bitrate_is_capped_for_streaming(tmp_path):
    # noise at CRF 18 wants far more than the 1 Mbit/s a 180-line stream may have
    n = 72
    capped = encode_master(noise(n), n, FPS, W, H, tmp_path / "capped.mp4", PROFILES["h264"],
                           None)
    free = encode_master(noise(n), n, FPS, W, H, tmp_path / "free.mp4",
                         dataclasses.replace(PROFILES["h264"], capped=False), None)
    maxrate, bufsize = 1_000_000, 2_000_000  # bit/s, bits: the 360p row
    # a leaky bucket of bufsize filled at maxrate can hand out at most this in 2 s
    bound = maxrate * 2 + bufsize
    assert window_bits(free, 48) > 2 * bound  # the uncapped encode really is over
    assert window_bits(capped, 48) <= bound
    total = sum(p.size * 8 for p in av.open(str(capped)).demux(video=0) if p.size)
    assert total / (n / 24) <= maxrate * 1.3  # the first buffer's worth on top


def test_level_fits_the_picture_and_the_cap(tmp_path):
    # 1280x720 at 24 fps, 5 Mbit/s cap: 3600 macroblocks a frame needs level 3.1
    frames = (np.full((720, 1280, 3), 40 + k, np.uint8) for k in range(12))
    m = encode_master(frames, 12, FPS, 1280, 720, tmp_path / "l.mp4", PROFILES["h264"], None)
    with av.open(str(m)) as c:
        cc = c.streams.video[0].codec_context
        assert (cc.profile, cc.level) == ("High", 31)
        assert (cc.color_primaries, cc.color_trc, cc.colorspace) == (1, 1, 1)


def strict_decode(path: Path) -> list:
    """Every frame, by FFmpeg's decoder told to stop at the first damaged bit."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.codec_context.options = {"err_detect": "explode+bitstream+buffer+crccheck"}
        return [(f.pts, f.key_frame, f.to_ndarray(format="rgb24")) for f in c.decode(s)]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b) ** 2)
    return 99.0 if mse == 0 else 10 * np.log10(255**2 / mse)


def test_segments_encoded_in_parallel_join_into_the_single_encode(film, tmp_path):
    folder, tl = film
    one = conform(tl, tmp_path / "one.mp4", "h264", audio=folder / "mix.wav")
    two = conform(tl, tmp_path / "two.mp4", "h264", audio=folder / "mix.wav", workers=2)
    # the same timestamps, decode order and keyframes, packet by packet
    assert decode_order(two) == decode_order(one)
    with av.open(str(one)) as a, av.open(str(two)) as b:
        pa = [(p.pts, p.dts) for p in a.demux(video=0) if p.size]
        pb = [(p.pts, p.dts) for p in b.demux(video=0) if p.size]
        assert pb == pa
        assert b.streams.audio[0].frames == a.streams.audio[0].frames
    single, joined = strict_decode(one), strict_decode(two)
    assert len(joined) == len(single) == 180
    assert [(p, k) for p, k, _ in joined] == [(p, k) for p, k, _ in single]
    # pictures within CRF noise: as close to the source as the single encode, frame by frame
    from aiprod_post.editing.conform import timeline_frames

    for (_, _, x), (_, _, y), src in zip(single, joined, timeline_frames(tl, folder)):
        assert abs(psnr(y, src) - psnr(x, src)) < 1.5
        assert psnr(x, y) > 38
    assert verify_master(two, tl, "h264")["ok"]
    assert not list(tmp_path.glob(".segments-*"))  # the segments are cleaned up


def test_an_hdr10_master_in_segments_is_the_single_encodes_kind(film, tmp_path):
    """An HDR10 master encoded in parallel segments keeps what the single encode has: the
    hvc1 sample entry (the joined file's own, not the template's default) and the HDR10
    metadata measured once for all segments."""
    folder, tl = film
    m = conform(tl, tmp_path / "pq2.mov", "hdr-pq", audio=folder / "mix.wav", workers=2)
    check = verify_master(m, tl, "hdr-pq")
    assert check["ok"], check["problems"]
    with av.open(str(m)) as c:
        assert c.streams.video[0].codec_tag == "hvc1"
        kinds = {sd.type.name for sd in next(c.decode(video=0)).side_data}
    assert {"MASTERING_DISPLAY_METADATA", "CONTENT_LIGHT_LEVEL"} <= kinds


def test_hdr10_light_levels_count_burned_in_subtitles(film):
    """The light levels are those of the pictures the master gets: burned-in subtitles
    (near-white text with a dark outline) are counted: the brightest pixel is the text's
    (196 cd/m² beside the pictures' 166), and the frame averages change."""
    from aiprod_post.editing.conform import light_levels
    from aiprod_post.editing.subtitles import Cue

    folder, tl = film
    plain = light_levels(tl, folder)
    with_text = light_levels(tl, folder, subtitles=[Cue(0.0, 7.0, ["WWWWWWWWWWWW"] * 2)])
    assert with_text[0] > plain[0] + 20 and with_text[1] != plain[1]


def test_segments_with_other_parameter_sets_are_refused(film, tmp_path):
    from aiprod_post.editing.conform import encode_segment, join_segments
    from aiprod_post.errors import MediaError

    folder, tl = film
    text = otio.adapters.write_to_string(tl, "otio_json")
    web = PROFILES["h264"]
    other = dataclasses.replace(web, b_frames=0)  # another SPS: no reordering
    a = encode_segment(text, str(folder), web, 0, 96, str(tmp_path / "a.mp4"))
    b = encode_segment(text, str(folder), other, 96, 180, str(tmp_path / "b.mp4"))
    with pytest.raises(MediaError, match="parameter sets"):
        join_segments([(Path(a), 0), (Path(b), 96)], tmp_path / "x.mp4", web, None, FPS, 180)
    assert not (tmp_path / "x.mp4").exists()


def test_a_failing_segment_encoder_fails_the_master_cleanly(film, tmp_path):
    from aiprod_post.errors import MediaError

    folder, tl = film
    broken = tl.clone()
    last = list(broken.tracks[0].find_clips())[-1]
    last.media_reference = otio.schema.ExternalReference(path_to_url(folder / "gone.mov"))
    with pytest.raises(MediaError, match="shot2 is missing"):
        conform(broken, tmp_path / "x.mp4", "h264", audio=folder / "mix.wav", workers=2)
    assert list(tmp_path.iterdir()) == []  # no master, no part file, no segments


def test_web_master_pictures_are_the_shots_scaled_faded_and_dissolved(tmp_path):
    """The frame path of a conform (decoded frames handed to the encoder's scaler, a shot
    at another size scaled on decode, fades and a dissolve blended in RGB, one scaler for
    each kind of frame): every frame of the web master is the picture the edit asks for,
    against the shots decoded here on their own and blended by the documented weights."""
    big = tmp_path / "big.mov"  # twice the timeline's size: scaled to it frame by frame
    encode_master((np.repeat(np.repeat(f, 2, 0), 2, 1) for f in painted(50, 7)), 50, FPS,
                  2 * W, 2 * H, big, PROFILES["prores"], None)
    small = tmp_path / "small.mov"
    encode_master(painted(40, 8), 40, FPS, W, H, small, PROFILES["prores"], None)

    def rt(v: int) -> otio.opentime.RationalTime:
        return otio.opentime.RationalTime(v, 24)

    def clip(path: Path, first: int, n: int) -> otio.schema.Clip:
        return otio.schema.Clip(name=path.stem,
                                media_reference=otio.schema.ExternalReference(path_to_url(path)),
                                source_range=otio.opentime.TimeRange(rt(first), rt(n)))

    track = otio.schema.Track(name="V1", kind=otio.schema.TrackKind.Video)
    track.append(otio.schema.Transition(in_offset=rt(0), out_offset=rt(8),
                                        metadata={NAMESPACE: {"kind": "fade-in"}}))
    track.append(clip(small, 0, 30))  # frames 0-29, the first 8 fading in
    track.append(otio.schema.Transition(in_offset=rt(4), out_offset=rt(4),
                                        metadata={NAMESPACE: {"kind": "dissolve"}}))
    track.append(clip(big, 10, 40))  # frames 30-69; 26-33 dissolve from the small shot
    tl = otio.schema.Timeline(name="path", metadata={NAMESPACE: {
        "width": W, "height": H, "rate": "24"}})
    tl.tracks.append(track)
    master = conform(tl, tmp_path / "web.mp4", "h264")

    def pictures(path: Path) -> list[np.ndarray]:
        """Decoded to 8-bit RGB by swscale's planar writer with exact rounding: its packed
        rgb24 is 0.8 % dark from the 10-bit shots (the reference carried the conform's old
        error) and rounds the 8-bit master down (191 came back 190)."""
        from av.video.reformatter import Interpolation

        with av.open(str(path)) as c:
            return [f.reformat(width=W, height=H, format="gbrp", interpolation=(
                Interpolation.BILINEAR | Interpolation.ACCURATE_RND)).to_ndarray()
                .astype(np.float32) for f in c.decode(video=0)]

    a, b, got = pictures(small), pictures(big), pictures(master)
    want = []
    for t in range(70):
        if t < 26:
            want.append(a[t] * min(1.0, (t + 0.5) / 8))
        elif t < 34:
            w = (t - 26 + 0.5) / 8  # the incoming shot's share
            want.append(a[t] * (1 - w) + b[10 - 30 + t] * w)
        else:
            want.append(b[10 - 30 + t])
    assert len(got) == 70
    for t, (g, e) in enumerate(zip(got, want)):
        assert psnr(g, e) > 32, f"frame {t}"
        # and not a neighbour's picture (the shots move every frame: about 3 dB apart)
        for other in (want[t - 1] if t else None, want[t + 1] if t < 69 else None):
            if other is not None:
                assert psnr(g, e) > psnr(g, other) + 1.5, f"frame {t}"
    # the blends at the shots' levels: the fade's and the dissolve's frames on average
    # (one frame's mean moves up to 0.8 with x264's quantiser); 0.8 % dark decoding of the
    # 10-bit shots made them -0.8 and -1.6
    for blend in (range(0, 8), range(26, 34)):
        shift = float(np.mean([np.mean(got[t] - want[t]) for t in blend]))
        assert abs(shift) < 0.5, (blend, shift)


def test_one_table_of_delivery_codecs():
    """Conform, grade, the delivery profiles and the command line read one table
    (aiprod_post.codecs): a codec added there is offered everywhere, and no copy drifts."""
    from click.testing import CliRunner

    from aiprod_post import codecs
    from aiprod_post.cli import main
    from aiprod_post.editing import conform as conform_module
    from aiprod_post.grading import grade
    from aiprod_post.project import DELIVERY_PROFILES

    assert conform_module.PROFILES is codecs.PROFILES and conform_module.Profile is codecs.Profile
    assert grade.MASTERS is codecs.MASTERS and grade.Master is codecs.Master
    assert {k: {f: getattr(v, f) for f in codecs.DELIVERIES[k]}
            for k, v in DELIVERY_PROFILES.items()} == dict(codecs.DELIVERIES)
    assert all(p.video in codecs.PROFILES for p in DELIVERY_PROFILES.values())
    runner = CliRunner()
    said = runner.invoke(main, ["conform", "x.otio", "-o", "m.mp4", "--profile", "vp9"])
    assert said.exit_code == 2
    for name in codecs.PROFILES:  # every master of the table is a choice
        assert name in said.output
    grade_help = runner.invoke(main, ["grade", "--help"]).output
    for suffix, names in codecs.MASTERS.items():
        assert suffix in grade_help or suffix == ".tiff"
        if len(names) > 1:
            assert all(n in " ".join(grade_help.split()) for n in names)
