"""The coqui speech engine.

Model-folder checks run everywhere. The synthesis tests need coqui-tts, which needs a
torch and a torchaudio that load together: they build a tiny VITS from a config inside
the test (random weights, nothing downloaded), save it the way coqui-tts saves models,
and load it through the engine; they skip where coqui-tts cannot be imported (CI's CPU
torch has no matching torchaudio on PyPI).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from aiprod_post.cli import main
from aiprod_post.errors import MediaError
from aiprod_post.audio.coqui import CoquiEngine, model_files
from aiprod_post.audio.tts import Delivery, Voice, engine_by_name


def test_model_folder_errors_name_what_is_missing(tmp_path):
    with pytest.raises(MediaError, match="needs a local model folder"):
        model_files(None)
    with pytest.raises(MediaError, match="no such coqui-tts model folder"):
        model_files(tmp_path / "nope")
    (tmp_path / "m").mkdir()
    with pytest.raises(MediaError, match="no config.json"):
        model_files(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text("{not json")
    with pytest.raises(MediaError, match="not valid JSON"):
        model_files(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text("{}")
    with pytest.raises(MediaError, match="no checkpoint"):
        model_files(tmp_path / "m")
    for step in (500, 12000, 3000):
        (tmp_path / "m" / f"checkpoint_{step}.pth").write_bytes(b"x")
    assert model_files(tmp_path / "m")[1].name == "checkpoint_12000.pth"  # the latest
    (tmp_path / "m" / "model.pth").write_bytes(b"x")
    assert model_files(tmp_path / "m")[1].name == "model.pth"


def test_a_broken_model_is_a_clear_error_not_a_crash(tmp_path):
    (tmp_path / "config.json").write_text('{"model": "vits"}')
    (tmp_path / "model.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(MediaError) as err:
        engine_by_name("coqui", model=tmp_path).check()
    # without coqui-tts importable it says what to install; with it, that the file is bad
    assert "needs coqui-tts" in str(err.value) or "cannot load the coqui-tts model" in str(
        err.value)


def test_speak_with_coqui_and_no_model_exits_2(tmp_path):
    r = CliRunner().invoke(main, ["speak", "Hello.", "-o", str(tmp_path / "x.wav"),
                                  "--engine", "coqui"])
    assert r.exit_code == 2 and "needs a local model folder" in r.output
    assert not (tmp_path / "x.wav").exists()


# ---------------------------------------------------------------- with coqui-tts

def _coqui():
    try:
        import TTS  # noqa: F401
        from TTS.tts.models.vits import Vits  # noqa: F401
    except ImportError as exc:
        pytest.skip("coqui-tts cannot be imported here: " + (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120])


def build_tiny_vits(folder: Path, speakers: int = 0) -> Path:
    """A randomly initialised VITS of a few hundred kilobytes, saved like a trained one."""
    import json

    import torch
    from TTS.tts.configs.vits_config import VitsArgs, VitsConfig
    from TTS.tts.models.vits import Vits

    folder.mkdir(parents=True, exist_ok=True)
    speakers_file = None
    if speakers:
        speakers_file = str(folder / "speakers.json")
        Path(speakers_file).write_text(json.dumps({f"spk{i}": i for i in range(speakers)}))
    args = VitsArgs(hidden_channels=16, hidden_channels_ffn_text_encoder=32,
                    num_heads_text_encoder=2, num_layers_text_encoder=1,
                    num_layers_posterior_encoder=1, num_layers_flow=1,
                    resblock_kernel_sizes_decoder=[3], resblock_dilation_sizes_decoder=[[1, 3, 5]],
                    upsample_rates_decoder=[8, 8, 4], upsample_kernel_sizes_decoder=[16, 16, 8],
                    upsample_initial_channel_decoder=32, init_discriminator=False,
                    use_speaker_embedding=speakers > 0, speakers_file=speakers_file,
                    speaker_embedding_channels=8)
    config = VitsConfig(model_args=args, use_phonemes=False, text_cleaner="basic_cleaners",
                        add_blank=True, use_speaker_embedding=speakers > 0,
                        speakers_file=speakers_file)
    torch.manual_seed(0)
    model = Vits.init_from_config(config)
    torch.save({"model": model.state_dict(), "config": config.to_dict()}, folder / "model.pth")
    config.save_json(str(folder / "config.json"))
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    _coqui()
    return build_tiny_vits(tmp_path_factory.mktemp("tiny-vits"))


def test_speaks_with_word_timings_from_the_model(tiny):
    eng = CoquiEngine(tiny)
    s = eng.synthesize("Ferry's gone tonight.", Voice())
    assert s.sample_rate == 48000 and s.samples.dtype == np.float32 and s.duration > 0.1
    assert [w.text for w in s.words] == ["Ferry's", "gone", "tonight."]
    starts = [w.start for w in s.words]
    assert starts == sorted(starts) and all(w.end >= w.start for w in s.words)
    assert s.words[-1].end <= s.duration + 1e-3
    # the words lie where the model's durations put their characters: the model's own
    # token durations add up to the audio it made
    model = eng._synth.tts_model
    import torch
    with torch.inference_mode():
        torch.manual_seed(0)
        raw, tokens = eng._vits(model, "Ferry's gone tonight.", Voice(), Delivery(),
                                int(eng._synth.output_sample_rate))
    assert sum(t for _, t in tokens) == pytest.approx(len(raw) / eng._synth.output_sample_rate,
                                                      abs=1e-6)
    assert s.phonemes and s.phonemes[0].start >= s.words[0].start - 1e-3
    assert eng.identity["class"] == "Vits" and len(eng.identity["sha256"]) == 64


def test_same_line_same_audio_and_delivery_changes_it(tiny):
    eng = CoquiEngine(tiny)
    a = eng.synthesize("Why help me?", Voice())
    b = eng.synthesize("Why help me?", Voice())
    assert np.array_equal(a.samples, b.samples)
    slow = eng.synthesize("Why help me?", Voice(), Delivery(rate=0.5, pause_before=0.6))
    assert slow.words[0].start >= 0.6
    assert (slow.words[-1].end - slow.words[0].start) > 1.5 * (a.words[-1].end - a.words[0].start)


def test_speakers_of_a_multi_speaker_model_go_to_characters(tmp_path):
    _coqui()
    from aiprod_post.audio.tts import assign_voices

    eng = CoquiEngine(build_tiny_vits(tmp_path / "multi", speakers=4))
    voices = assign_voices(["NELL", "IVO", "CAPTAIN"])
    chosen = {n: eng.speaker_for(v) for n, v in voices.items()}
    assert set(chosen.values()) <= {"spk0", "spk1", "spk2", "spk3"}
    assert chosen == {n: eng.speaker_for(v) for n, v in voices.items()}  # stable
    # two characters the model voices with different speakers sound different
    many = assign_voices([f"PERSON{i}" for i in range(20)])
    by_speaker = {eng.speaker_for(v): v for v in many.values()}
    assert len(by_speaker) >= 2, "twenty characters all mapped to one of four speakers"
    (s1, v1), (s2, v2) = list(by_speaker.items())[:2]
    a = eng.synthesize("Tonight.", v1)
    b = eng.synthesize("Tonight.", v2)
    assert s1 != s2 and not np.array_equal(a.samples, b.samples)


def test_cast_speakers_by_their_measured_pitch(tmp_path, monkeypatch):
    """A multi-speaker model's speakers are measured once (cached under AIPROD_CACHE) and
    handed out by gender and age as audio.speakers.choose_speakers says, none shared."""
    _coqui()
    from aiprod_post.audio.speakers import choose_speakers
    from aiprod_post.errors import MediaError

    monkeypatch.setenv("AIPROD_CACHE", str(tmp_path / "cache"))
    eng = CoquiEngine(build_tiny_vits(tmp_path / "multi", speakers=4))
    pitches = eng.speaker_pitches()
    assert set(pitches) == {"spk0", "spk1", "spk2", "spk3"}
    cached = list((tmp_path / "cache" / "coqui-speaker-f0").glob("*.json"))
    assert [p.stem for p in cached] == [eng.identity["sha256"]]
    people = {"NELL": ("female", 65), "IVO": ("male", 20), "JONAH": ("male", 40)}
    chosen = eng.cast_speakers(people)
    assert chosen == choose_speakers(list(people), people, pitches)
    assert len(set(chosen.values())) == 3
    assert eng.cast_speakers(people, {"IVO": chosen["NELL"]})["IVO"] == chosen["NELL"]
    a = eng.synthesize("Tonight.", Voice(speaker=chosen["NELL"]))
    b = eng.synthesize("Tonight.", Voice(speaker=chosen["IVO"]))
    assert not np.array_equal(a.samples, b.samples)
    with pytest.raises(MediaError, match="no speaker 'zz'"):
        eng.synthesize("Tonight.", Voice(speaker="zz"))


def test_speak_command_with_a_coqui_model(tiny, tmp_path):
    out = tmp_path / "line.wav"
    r = CliRunner().invoke(main, ["speak", "Tonight, then.", "-o", str(out), "--engine",
                                  "coqui", "--model", str(tiny)])
    assert r.exit_code == 0, r.output
    assert out.is_file() and out.with_suffix(".json").is_file()


def test_a_render_with_coqui_and_no_model_stops_before_any_work(tmp_path):
    script = tmp_path / "s.fountain"
    script.write_text("EXT. PIER - DUSK\n\nNELL\nTonight.\n")
    project = tmp_path / "p.toml"
    project.write_text('[audio]\ntts_engine = "coqui"\ntts_model = "models/none"\n')
    r = CliRunner().invoke(main, ["render", str(script), "-o", str(tmp_path / "out"),
                                  "--project", str(project), "--size", "160x96", "--quiet"])
    assert r.exit_code == 2 and "no such coqui-tts model folder" in r.output
    assert not (tmp_path / "out" / "masters").exists()
