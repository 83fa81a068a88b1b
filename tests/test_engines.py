"""The engines' registry: one entry per engine is all the front doors read.

A toy engine registered here (and nowhere else) is accepted by the project file, the
CLI's --engine choices and the service's validation; ``settings_for`` gives the four
built-in engines exactly what the pipeline built by hand before the registry (the
shots' cache keys hash it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from fastapi import HTTPException
from pydantic import Field

from aiprod_post import engines
from aiprod_post.cli import main
from aiprod_post.engines import EngineSpec
from aiprod_post.errors import AiprodError
from aiprod_post.project import Project, load_project
from aiprod_post.service.deps import Limits
from aiprod_post.service.estimates import EstimateRequest
from aiprod_post.service.jobs import JobRequest, _check

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "the_last_ferry.fountain"


class ToySettings(engines._Strict):
    strength: float = Field(0.5, ge=0.0, le=1.0)
    palette: str | None = None  # a path
    device: str = "cpu"


class ToyEngine:
    name = "toy"

    def __init__(self, **settings) -> None:
        self.s = ToySettings(**settings)


@pytest.fixture
def toy():
    engines.register(EngineSpec("toy", ToySettings, ToyEngine, paths=("palette",),
                                served=True, description="a test's"))
    yield engines.get("toy")
    engines.unregister("toy")


def test_a_registered_engine_is_read_by_the_project_file(toy, tmp_path):
    project = tmp_path / "project.toml"
    project.write_text('[engine]\nname = "toy"\n[engine.toy]\nstrength = 0.25\n'
                       'palette = "pal/warm.png"\n')
    p = load_project(project)
    assert p.engine.name == "toy"
    settings = engines.settings_for(p, "toy", {"strength": None, "burn_in": True})
    assert settings == {"strength": 0.25, "palette": str(tmp_path / "pal" / "warm.png"),
                        "device": "cpu"}
    assert not engines.uses_gpu("toy", settings)
    # its settings model checks the section; errors name the file and the key
    project.write_text('[engine]\nname = "toy"\n[engine.toy]\nstrength = 3\n')
    with pytest.raises(AiprodError, match=r"engine\.toy\.strength") as err:
        load_project(project)
    assert "less than or equal to 1" in str(err.value) and "project.toml" in str(err.value)
    project.write_text('[engine.toy]\nstrenght = 0.2\n')
    with pytest.raises(AiprodError, match=r"engine\.toy\.strenght: unknown key"):
        load_project(project)
    # the engine builds from the registry's factory with those settings
    from aiprod_post.generation.engine import engine_by_name

    assert engine_by_name("toy", **settings).s.palette.endswith("warm.png")


def test_an_unregistered_engine_is_refused_everywhere(tmp_path):
    project = tmp_path / "project.toml"
    project.write_text('[engine]\nname = "toy"\n')
    with pytest.raises(AiprodError, match="unknown engine 'toy': expected one of animatic"):
        load_project(project)
    project.write_text('[engine.toy]\nstrength = 0.2\n')
    with pytest.raises(AiprodError, match=r"engine\.toy: unknown key"):
        load_project(project)
    r = CliRunner().invoke(main, ["estimate", str(EXAMPLE), "--engine", "toy"])
    assert r.exit_code == 2 and "'toy' is not one of 'animatic', 'clips', 'ltx', 'ltx2'" \
        in r.output
    with pytest.raises(ValueError, match="unknown engine 'toy'"):
        EstimateRequest.model_validate({"script": "x", "engine": "toy"})
    with pytest.raises(HTTPException, match="not offered by this service: use animatic"):
        _check(JobRequest(script="x", engine="toy"), Limits())
    from aiprod_post.generation.engine import engine_by_name

    with pytest.raises(AiprodError, match="unknown engine 'toy'"):
        engine_by_name("toy")


def test_a_registered_engine_is_a_cli_choice_and_offered_by_the_service(toy):
    r = CliRunner().invoke(main, ["render", "--help"])
    assert "animatic|clips|ltx|ltx2|toy" in r.output
    r = CliRunner().invoke(main, ["estimate", str(EXAMPLE), "--engine", "toy", "--json"])
    assert r.exit_code == 0, r.output
    assert '"engine": "toy"' in r.output
    assert EstimateRequest.model_validate({"script": "x", "engine": "toy"}).engine == "toy"
    _check(JobRequest(script="x", engine="toy"), Limits())  # accepted: no error
    engines.register(EngineSpec("toy", ToySettings, ToyEngine))  # not served
    with pytest.raises(HTTPException, match="not offered by this service"):
        _check(JobRequest(script="x", engine="toy"), Limits())


def _by_hand(project: Project, name: str, burn_in: bool | None) -> dict:
    """What the pipeline built before the registry (pipeline.py, _Render.generation)."""
    settings: dict = {}
    if name == "animatic":
        settings["burn_in"] = burn_in if burn_in is not None else project.engine.burn_in
    elif name == "clips":
        c = project.engine.clips
        settings = {"media": {k: str(project.path(v)) for k, v in c.media.items()},
                    "folder": str(project.path(c.folder)) if c.folder else None,
                    "fit": c.fit, "fill": c.fill}
    elif name == "ltx":
        lx = project.engine.ltx.model_dump()
        for key in ("model", "config", "text_encoder", "tokenizer", "upsampler"):
            if lx.get(key):
                lx[key] = str(project.path(lx[key]))
        settings = lx
    elif name == "ltx2":
        lx = project.engine.ltx2.model_dump()
        for key in ("model", "control_lora", "upsampler"):
            if lx.get(key):
                lx[key] = str(project.path(lx[key]))
        lx["camera_loras"] = {k: str(project.path(v)) for k, v in lx["camera_loras"].items()}
        settings = lx
    return settings


@pytest.mark.parametrize("text", [
    "",
    '[engine]\nburn_in = true\n[engine.clips]\nfolder = "footage"\nfit = "letterbox"\n'
    'media = { "2C" = "pickups/2C.mov", "3A" = "/abs/3A.mov" }\ncolourspace = "ARRI LogC4"\n'
    '[engine.ltx]\nmodel = "models/ltx"\nconfig = "cfg"\ntokenizer = "/abs/tok"\n'
    'upsampler = "up"\nsteps = 3\ncompile = false\n'
    '[engine.ltx2]\nmodel = "models/ltx2"\ncontrol_lora = "loras/canny.safetensors"\n'
    'camera_loras = { dolly = "loras/dolly.safetensors" }\naudio = false\n',
])
@pytest.mark.parametrize("burn_in", [None, True, False])
def test_settings_for_is_what_the_pipeline_built(tmp_path, text, burn_in):
    project = tmp_path / "project.toml"
    project.write_text(text)
    p = load_project(project)
    for name in ("animatic", "clips", "ltx", "ltx2"):
        assert engines.settings_for(p, name, {"burn_in": burn_in}) == _by_hand(p, name, burn_in)
    built = engines.settings_for(p, "ltx2")
    assert engines.uses_gpu("ltx2", built) and not engines.uses_gpu("ltx2", {**built,
                                                                            "device": "cpu"})


def test_the_engines_take_the_registry_model_and_keep_their_keyword_api():
    from aiprod_post.generation.engine import engine_by_name
    from aiprod_post.generation.ltx import LTXSettings

    assert issubclass(LTXSettings, engines.LTXSettings)
    shared = set(engines.LTXSettings.model_fields)
    assert set(LTXSettings.model_fields) - shared == {"max_sequence_length", "extra"}
    eng = engine_by_name("ltx", model=Path("m"), steps=2, extra={"decode_timestep": 0.0})
    assert (eng.s.model, eng.s.steps, eng.s.extra) == ("m", 2, {"decode_timestep": 0.0})
    for bad, message in [({"steps": 0}, r"\[engine\.ltx\] steps: Input should be greater "),
                         ({"dtype": "int8"}, r"unknown dtype 'int8': expected 'bfloat16'"),
                         ({"lora": "x"}, "unknown ltx setting")]:
        with pytest.raises(AiprodError, match=message):
            engine_by_name("ltx", **bad)
    assert np.isclose(eng.s.character_strength, 0.35)


def test_an_engines_memory_is_its_weights_on_disk_each_file_once(tmp_path):
    """What a model engine's unit reserves on a cluster node: the bytes of every weights
    file its settings name (a folder's, a LoRA's), counted once however often named."""
    import os

    model = tmp_path / "model"
    (model / "transformer").mkdir(parents=True)
    (model / "transformer" / "diffusion_pytorch_model.safetensors").write_bytes(b"w" * 5000)
    (model / "vae.bin").write_bytes(b"v" * 1200)
    (model / "model_index.json").write_text("{}")  # not weights
    lora = tmp_path / "dolly.safetensors"
    lora.write_bytes(b"l" * 300)
    settings = {"model": str(model), "control_lora": str(lora),
                "camera_loras": {"dolly": str(lora), "pan": str(tmp_path / "missing.pt")}}
    expected = sum(os.path.getsize(p) for p in [
        model / "transformer" / "diffusion_pytorch_model.safetensors", model / "vae.bin", lora])
    assert engines.memory_for("ltx2", settings) == expected == 6500
    assert engines.memory_for("animatic", {"burn_in": False}) == 0
    assert engines.memory_for("clips", {"folder": str(model)}) == 0  # footage, no model
