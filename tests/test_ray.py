"""The ray executor on a real local Ray cluster (a head and one more node, one CPU each):
the same masters as the local executor, a worker killed mid-shot, a batch of scripts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from aiprod_post.cli import main
from aiprod_post.pipeline import RenderOptions, conditioned_on, render
from aiprod_post.planner import PlannerSettings, plan_source
from aiprod_post.project import load_project

from test_pipeline import SCRIPT, SMALL, master_digest, write_script

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

NODE = {"num_cpus": 1, "object_store_memory": 100 * 1024 ** 2}


@pytest.fixture(scope="module")
def cluster():
    """A head and a second node process on this machine (Ray puts them on the machine's
    own address, not loopback); shut down however the tests end."""
    c = Cluster(initialize_head=True, head_node_args={**NODE, "include_dashboard": False})
    try:
        c.add_node(**NODE)
        c.wait_for_nodes()
        yield c
    finally:
        if ray.is_initialized():
            ray.shutdown()
        c.shutdown()


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    """The small film by the local executor: the reference the cluster must match."""
    folder = tmp_path_factory.mktemp("local")
    script = write_script(folder)
    result = render(script, folder / "out", RenderOptions(**SMALL))
    return script, {name: master_digest(path) for name, path in result.masters.items()}


def _node_ids() -> set[str]:
    return {n["NodeID"] for n in ray.nodes() if n["Alive"]}


def test_shots_wait_only_for_the_shots_their_keyframes_come_from(tmp_path):
    settings = PlannerSettings(width=160, height=96)
    plan, _ = plan_source(write_script(tmp_path), settings)
    # scene 1's establishing shot before the shots matched to it; scene 2 on its own
    assert conditioned_on(plan) == {"1": [], "1A": ["1"], "1B": ["1"], "2": [], "2A": ["2"]}
    (tmp_path / "c").mkdir()
    continuous = SCRIPT.replace("INT. BOOTH - NIGHT", "INT. BOOTH - CONTINUOUS")
    plan, _ = plan_source(write_script(tmp_path / "c", continuous), settings)
    # a continuous scene opens on the last frame of the shot before: a chain across scenes
    assert conditioned_on(plan)["2"] == ["1B"]
    assert conditioned_on(plan)["2A"] == ["2"]


def test_the_cluster_makes_the_local_executors_masters(cluster, local, tmp_path):
    script, reference = local
    result = render(script, tmp_path / "out", RenderOptions(**SMALL, executor="ray",
                                                            address=cluster.address))
    assert result.exit_code == 0
    assert {name: master_digest(path) for name, path in result.masters.items()} == reference
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["executor"]["name"] == "ray" and report["executor"]["nodes"] == 2
    # the lines were voiced as tasks too, in the cluster's worker processes
    lines = report["speech_placement"]
    assert len(lines) == 3 and all(p["worker"] != os.getpid() for p in lines.values())
    placement = report["placement"]
    assert sorted(placement) == ["1", "1A", "1B", "2", "2A"]
    # scenes 1 and 2 open at once on one CPU per node: the work spreads over both nodes
    ray.init(address=cluster.address)
    try:
        nodes = _node_ids()
    finally:
        ray.shutdown()
    assert {p["node"] for p in placement.values()} == nodes
    assert all(p["waited_s"] >= 0 and p["seconds"] > 0 and p["worker"] != os.getpid()
               for p in placement.values())
    page = (tmp_path / "out" / "report.html").read_text()
    assert "<th>made on</th>" in page and all(f"({n[:8]})" in page for n in nodes)


def _pids_writing(folder: Path) -> set[int]:
    """Processes with a half-written file (an encoder's .part.mov) open in ``folder``."""
    pids = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith(str(folder)) and ".part." in target:
                    pids.add(int(proc.name))
        except OSError:
            continue
    return pids


def _start_holding_1a(cluster, script: Path, out: Path, seconds: float, *flags: str
                      ) -> tuple[subprocess.Popen, int]:
    """Start a render on the cluster whose shot 1A stops for ``seconds`` halfway through
    its frames (on every try); once the other shots are made, the render and the pid of
    the worker holding 1A."""
    env = dict(os.environ, AIPROD_HOLD_SHOT=f"1A={seconds}")
    cmd = [sys.executable, "-m", "aiprod_post.cli", "render", str(script), "-o", str(out),
           "--size", "160x96", "--log-json", "--executor", "ray", "--address", cluster.address,
           *flags]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            text=True)
    made: set[str] = set()
    deadline = time.monotonic() + 240
    for line in proc.stdout:
        event = json.loads(line)  # --log-json: nothing but events on stdout
        if event["event"] == "item" and event["stage"] == "generation":
            made.add(event["item"])
        if made == {"1", "1B", "2", "2A"}:
            held = _held_writer(out, timeout=max(1.0, deadline - time.monotonic()))
            if held:
                assert held[0] != proc.pid
                return proc, held[0]
            break
    proc.kill()
    raise AssertionError(f"no worker was writing shot 1A: {proc.communicate()[1]}")


def _render_killing_the_worker_of_1a(cluster, script: Path, out: Path, *flags: str
                                     ) -> tuple[int, int]:
    """Render on the cluster and SIGKILL the worker process making shot 1A halfway through
    its frames; the render's exit status and the pid killed."""
    proc, killed = _start_holding_1a(cluster, script, out, 6, *flags)
    os.kill(killed, signal.SIGKILL)
    proc.communicate(timeout=240)
    return proc.returncode, killed


def _until(condition, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/status").read_text().find("State:\tZ") >= 0


def _cluster_idle(address: str) -> bool:
    """No task or actor holds a CPU of the cluster (its figures lag by a second or so)."""
    ray.init(address=address, log_to_driver=False)
    try:
        return _until(lambda: ray.available_resources().get("CPU", 0)
                      == ray.cluster_resources()["CPU"])
    finally:
        ray.shutdown()


def _no_masters(out: Path) -> bool:
    return not (out / "report.json").exists() and not any(
        p.is_file() for p in (out / "masters").glob("*")) if (out / "masters").exists() \
        else not (out / "report.json").exists()


@pytest.fixture
def interruptible():
    """Ctrl-C reaches this process and the renders it starts, as at a terminal. A shell
    starts a background job (``make test &``) with SIGINT ignored, which every process it
    starts inherits: a render there could not be interrupted at all."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def _held_writer(out: Path, timeout: float = 240) -> list[int]:
    """The pid of the process holding shot 1A of the render into ``out`` (the hold drill
    writes it into the cache's ``held/1A`` while it holds); none by ``timeout``."""
    marker = out / ".cache" / "held" / "1A"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return [int(marker.read_text())]
        except (FileNotFoundError, ValueError):
            time.sleep(0.1)
    return []


def test_ctrl_c_cancels_the_renders_tasks_on_the_cluster(cluster, local, tmp_path,
                                                         interruptible):
    script, _ = local
    out = tmp_path / "out"
    proc, worker = _start_holding_1a(cluster, script, out, 120)
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    _, err = proc.communicate(timeout=60)
    assert proc.returncode not in (0, 3), err
    # the worker making 1A (held for two minutes) has ended, nothing writes into the
    # cache, and no task holds a CPU of the cluster
    assert _until(lambda: _gone(worker)), f"the worker {worker} making 1A is still running"
    assert not _pids_writing(out / ".cache" / "shots")
    assert _cluster_idle(cluster.address)
    assert _no_masters(out)


def _interrupt_once_1a_is_held(out: Path) -> list[int]:
    """Ctrl-C this process once a process holds shot 1A of the render into ``out``; the
    list returned gets that process's id."""
    import threading

    held: list[int] = []

    def interrupt() -> None:
        held.extend(_held_writer(out))
        if held:  # else the render ends on its own, and the test says so
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C

    threading.Thread(target=interrupt, daemon=True).start()
    return held


def test_an_interrupted_render_cancels_its_tasks_while_its_process_lives_on(
        cluster, local, tmp_path, monkeypatch, interruptible):
    """A render interrupted in a process that stays connected to the cluster (a batch, a
    notebook): its own cancelling, not the end of its process, ends the shot's task."""
    script, _ = local
    out = tmp_path / "out"
    monkeypatch.setenv("AIPROD_HOLD_SHOT", "1A=120")
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        held = _interrupt_once_1a_is_held(out)
        with pytest.raises(KeyboardInterrupt):
            render(script, out, RenderOptions(**SMALL, executor="ray", address=cluster.address))
        assert held, "no worker was holding shot 1A"
        # the render's process is still on the cluster; the task making 1A is not
        assert _until(lambda: _gone(held[0])), f"the worker {held[0]} is still running"
        assert _until(lambda: ray.available_resources().get("CPU", 0)
                      == ray.cluster_resources()["CPU"])
    finally:
        ray.shutdown()
    assert not _pids_writing(out / ".cache" / "shots")
    assert _no_masters(out)


def test_a_worker_killed_mid_shot_is_retried_to_the_same_masters(cluster, local, tmp_path):
    script, reference = local
    out = tmp_path / "out"
    status, killed = _render_killing_the_worker_of_1a(cluster, script, out)
    assert status == 0
    report = json.loads((out / "report.json").read_text())
    assert report["failed_shots"] == {}
    # Ray ran it again on a new worker process
    assert report["placement"]["1A"]["worker"] not in (killed, 0)
    assert {name: master_digest(out / path) for name, path in report["masters"].items()} \
        == reference


def test_a_shot_whose_worker_dies_on_every_try_is_slated(cluster, local, tmp_path):
    script, _ = local
    project = tmp_path / "project.toml"
    project.write_text("[run]\nretries = 0\n")  # no second try
    out = tmp_path / "out"
    status, _ = _render_killing_the_worker_of_1a(cluster, script, out, "--project",
                                                 str(project))
    assert status == 3  # finished, with a slate where the shot would be
    report = json.loads((out / "report.json").read_text())
    assert list(report["failed_shots"]) == ["1A"]
    assert "died on every try" in report["failed_shots"]["1A"]
    assert report["masters"] and all((out / p).is_file() for p in report["masters"].values())


def test_batch_of_three_scripts_on_the_cluster(cluster, local, tmp_path):
    script, reference = local
    folder = tmp_path / "scripts"
    folder.mkdir()
    (folder / "a_two_lines.fountain").write_text(SCRIPT)
    for name, heading in (("b_dock", "EXT. DOCK - DAY"), ("c_hall", "INT. HALL - NIGHT")):
        (folder / f"{name}.fountain").write_text(
            f"Title: {name}\n\n{heading}\n\nA lamp swings.\n\nNELL\nStill here.\n")
    # the cluster named by the project file's [run] table
    project = tmp_path / "project.toml"
    project.write_text(f'[run]\nexecutor = "ray"\naddress = "{cluster.address}"\n')
    result = CliRunner().invoke(main, ["batch", str(folder), "-o", str(tmp_path / "out"),
                                       "--size", "160x96", "--jobs", "2",
                                       "--project", str(project)])
    assert result.exit_code == 0, result.output
    runs = json.loads((tmp_path / "out" / "batch.json").read_text())
    assert [r["status"] for r in runs] == ["ok"] * 3
    for r in runs:
        report = json.loads((Path(r["output"]) / "report.json").read_text())
        assert report["executor"]["name"] == "ray"
        assert set(report["placement"]) == {s["id"] for s in report["shots"]}
    first = json.loads((tmp_path / "out" / "a_two_lines" / "report.json").read_text())
    assert {name: master_digest(tmp_path / "out" / "a_two_lines" / path)
            for name, path in first["masters"].items()} == reference


@pytest.mark.parametrize("need, named", [
    ({"gpus": 1.0}, "1 CPU, 1 GPU, the most any node has is 1 CPU, 0 GPU"),  # no GPU
    ({"memory": 2 ** 50}, "1 CPU, 1048576.0 GiB of memory"),  # weights no node can hold
])
def test_a_unit_no_node_can_run_is_named_not_queued_for_ever(cluster, monkeypatch, need,
                                                            named):
    """Ray would keep a unit no node can run queued for ever: after waiting for a node
    to join (an autoscaler's; 1 s here), the run fails naming what it needs; units that fit
    run with their memory reserved."""
    from aiprod_post.errors import AiprodError
    from aiprod_post.executors import Unit
    from aiprod_post.executors.ray import RayExecutor

    monkeypatch.setenv("AIPROD_RAY_NODE_WAIT_S", "1")
    doubled = lambda payload, deps, shared: 2 * payload  # noqa: E731 (sent by value)
    with RayExecutor(cluster.address) as ex:
        fits = [Unit("a", 1, memory=2 ** 20), Unit("b", 2, after=("a",), memory=2 ** 20)]
        assert {u.id: r for u, r, _ in ex.run(doubled, fits)} == {"a": 2, "b": 4}
        t0 = time.monotonic()
        with pytest.raises(AiprodError, match=f"unit big: it needs {named}"):
            list(ex.run(doubled, [Unit("big", 1, **need)]))
        assert time.monotonic() - t0 < 30


def test_an_unreachable_cluster_is_named_and_exits_2(tmp_path):
    script = write_script(tmp_path)
    result = CliRunner().invoke(main, ["render", str(script), "-o", str(tmp_path / "out"),
                                       "--size", "160x96", "--executor", "ray",
                                       "--address", "127.0.0.1:1"])
    assert result.exit_code == 2
    assert "--address: cannot reach the Ray cluster at 127.0.0.1:1" in result.output
    assert not (tmp_path / "out" / "masters").exists()
    # Ray's own variable, when no address is given, and named as such
    result = CliRunner().invoke(main, ["render", str(script), "-o", str(tmp_path / "out"),
                                       "--size", "160x96", "--executor", "ray"],
                                env={"RAY_ADDRESS": "127.0.0.1:1"})
    assert result.exit_code == 2
    assert "RAY_ADDRESS: cannot reach the Ray cluster at 127.0.0.1:1" in result.output


def test_ray_address_from_the_environment_joins_that_cluster(cluster, local, tmp_path,
                                                             monkeypatch):
    script, reference = local
    monkeypatch.setenv("RAY_ADDRESS", cluster.address)
    result = render(script, tmp_path / "out", RenderOptions(**SMALL, executor="ray"))
    assert result.report["executor"]["address"] == cluster.address
    assert result.report["executor"]["nodes"] == 2
    assert {n: master_digest(p) for n, p in result.masters.items()} == reference


def test_two_output_folders_share_one_cache_through_a_file_url(cluster, local, tmp_path):
    script, reference = local
    store = tmp_path / "shared cache"
    url = "file://" + str(store).replace(" ", "%20")
    first = render(script, tmp_path / "one", RenderOptions(**SMALL, cache=url))
    assert not (tmp_path / "one" / ".cache").exists() and (store / "shots").is_dir()
    # another folder, on the cluster: every shot comes from what the first render made
    second = render(script, tmp_path / "two", RenderOptions(**SMALL, cache=url, executor="ray",
                                                            address=cluster.address))
    assert second.report["cached"]["generation"] == 5
    assert second.report["made"]["generation"] == 0
    for result in (first, second):
        assert {n: master_digest(p) for n, p in result.masters.items()} == reference


def test_a_cache_url_of_another_store_is_refused_naming_it(tmp_path):
    script = write_script(tmp_path)
    result = CliRunner().invoke(main, ["render", str(script), "-o", str(tmp_path / "out"),
                                       "--size", "160x96", "--cache", "ftp://host/cache"])
    assert result.exit_code == 2
    assert "--cache: ftp:// is not a store the cache can use" in result.output
    assert not (tmp_path / "out" / "masters").exists()


def test_the_ltx_engine_on_the_cluster_makes_the_local_masters(cluster, tmp_path):
    """A per-film engine (ltx: the frame counts it generates at) is shaped on each worker
    as on the runner, so the cluster's shots are the local ones (a tiny random LTX-Video
    on the CPU); on the cluster the render's own process loads no model."""
    pytest.importorskip("diffusers")
    from test_ltx import build_tiny_ltx

    model = build_tiny_ltx(tmp_path / "tiny")
    project = tmp_path / "project.toml"
    project.write_text(f'[engine]\nname = "ltx"\n[engine.ltx]\nmodel = "{model}"\n'
                       'device = "cpu"\ndtype = "float32"\nsteps = 1\n'
                       # one frame count for the film: its shorter shots are generated longer
                       # and trimmed, which a worker must know to make the same pictures
                       'max_buckets = 1\n')
    script = write_script(tmp_path)
    masters = {}
    for executor in ("local", "ray"):
        result = render(script, tmp_path / executor, RenderOptions(
            width=64, height=64, quiet=True, profiles=["master"], executor=executor,
            address=cluster.address if executor == "ray" else None,
            project=load_project(project)))
        assert result.exit_code == 0, result.failed_shots
        masters[executor] = {n: master_digest(p) for n, p in result.masters.items()}
    assert masters["ray"] == masters["local"]
    # the model was loaded, checked and shaped on the cluster, not in the render's process
    # (a driver without the GPU, or beside the actor on it, must not load a second copy)
    from aiprod_post.stages import picture

    assert picture._ENGINES and all(e._pipe is None for e in picture._ENGINES.values())
    assert result.report["compile"]["buckets"] and \
        not result.report["compile"]["made_by"].endswith(f":{os.getpid()}")


def _counting_engines(work, log: str):
    """``work``, in a process whose engine constructions are each written to ``log`` (a
    line with the process id): how often a GPU engine would load its model."""

    def counted(job, conditioned, characters=None):
        from aiprod_post.generation import engine as engines

        if not getattr(engines, "_counted", False):
            build = engines.engine_by_name

            def counting(name, **settings):
                with open(log, "a") as f:
                    f.write(f"{os.getpid()}\n")
                return build(name, **settings)

            engines.engine_by_name, engines._counted = counting, True
        return work(job, conditioned, characters)

    return counted


@pytest.fixture
def actor_routed(cluster, tmp_path, monkeypatch):
    """A test hook: the renders' shots (the animatic engine's) go to a long-lived actor as
    a GPU engine's do, keyed by the engine's name; each actor's engine constructions are
    written to the file yielded. The actors are ended after the test (they would outlive it)."""
    import dataclasses

    from aiprod_post.executors import ray as ray_executor

    log = tmp_path / "engines.log"
    run = ray_executor.RayExecutor.run
    key = f"test {{}} {tmp_path.name}"

    def routed(self, work, units, shared=None):
        if not all(hasattr(u.payload, "engine") for u in units):  # the speech stage's lines
            return run(self, work, units, shared)
        units = [dataclasses.replace(u, actor=key.format(u.payload.engine[0])) for u in units]
        return run(self, _counting_engines(work, str(log)), units, shared)

    monkeypatch.setattr(ray_executor.RayExecutor, "run", routed)
    yield log
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        for actor in _test_actors(tmp_path):
            ray.kill(actor)
        assert _until(lambda: ray.available_resources().get("CPU", 0)
                      == ray.cluster_resources()["CPU"]), "a task or actor still holds a CPU"
    finally:
        ray.shutdown()


def _test_actors(tmp_path: Path) -> list:
    """The live actors the test hook's renders made (one per CPU of the cluster at most),
    from a driver connected to the cluster."""
    from aiprod_post.executors import ray as ray_executor

    found = []
    for n in range(int(ray.cluster_resources()["CPU"])):
        try:
            found.append(ray.get_actor(ray_executor.actor_name(
                f"test animatic {tmp_path.name} #{n}"), namespace=ray_executor.NAMESPACE))
        except ValueError:  # none made, or ended
            pass
    return found


# The actor tests compare the ProRes master: the shots are the pictures compared. The web
# master's x264 at 160x96 reads memory nothing wrote (see tests/test_golden.py), so its
# bytes follow this process's allocator history, which earlier renders here have moved.


def _built(log: Path) -> list[int]:
    """The processes that built an engine, once for each build."""
    return sorted(int(pid) for pid in log.read_text().split())


def test_actor_routed_shots_reuse_one_actor_and_engine_across_renders(cluster, local,
                                                                      tmp_path, actor_routed):
    """Two renders, each its own Ray job, make their shots in the same actor processes
    (one per CPU of the cluster at most), each of which builds its engine once; the
    masters are the local executor's."""
    script, reference = local
    workers = []
    for name in ("one", "two"):
        result = render(script, tmp_path / name, RenderOptions(
            **SMALL, executor="ray", address=cluster.address))
        assert result.exit_code == 0, result.failed_shots
        assert master_digest(result.masters["master"]) == reference["master"]
        workers.append({p["worker"] for p in result.report["placement"].values()})
        # the actors live on holding no CPU, so the next render's lines (tasks) run at once
        assert _cluster_idle(cluster.address), "an idle actor holds a CPU"
    assert 1 <= len(workers[0]) <= 2 and workers[1] <= workers[0]  # the first's actors
    assert _built(actor_routed) == sorted(workers[0])  # each built its engine once


def test_an_actor_killed_mid_shot_is_made_again_to_the_same_masters(cluster, local, tmp_path,
                                                                    actor_routed, monkeypatch):
    script, reference = local
    out = tmp_path / "out"
    # long enough for the watcher to find it on a loaded machine (6 s was missed once in CI)
    monkeypatch.setenv("AIPROD_HOLD_SHOT", "1A=30")
    killed: list[int] = []

    def kill_the_actor_holding_1a() -> None:
        killed.extend(_held_writer(out, timeout=120))
        for pid in killed:
            os.kill(pid, signal.SIGKILL)

    import threading

    threading.Thread(target=kill_the_actor_holding_1a, daemon=True).start()
    result = render(script, out, RenderOptions(**SMALL, executor="ray",
                                               address=cluster.address))
    assert killed, "no actor was holding shot 1A"
    assert result.exit_code == 0 and result.failed_shots == {}
    assert result.report["placement"]["1A"]["worker"] not in (killed[0], 0)
    assert master_digest(result.masters["master"]) == reference["master"]
    # the actor made again built its engine again; every actor built it once
    built = _built(actor_routed)
    assert killed[0] in built and result.report["placement"]["1A"]["worker"] in built
    assert len(built) == len(set(built))


def test_an_interrupted_render_ends_the_actor_running_its_shot(cluster, local, tmp_path,
                                                               actor_routed, monkeypatch,
                                                               interruptible):
    """An actor's running method cannot be interrupted: the actor is ended; the render's
    other actor, idle, stays for the next render."""
    script, _ = local
    out = tmp_path / "out"
    monkeypatch.setenv("AIPROD_HOLD_SHOT", "1A=120")
    held = _interrupt_once_1a_is_held(out)
    with pytest.raises(KeyboardInterrupt):
        render(script, out, RenderOptions(**SMALL, executor="ray", address=cluster.address))
    assert held, "no actor was holding shot 1A"
    assert _until(lambda: _gone(held[0])), f"the actor {held[0]} is still running"
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        # what is left runs nothing: each answers at once
        left = _test_actors(tmp_path)
        assert len(left) <= 1
        ray.get([a.__ray_ready__.remote() for a in left], timeout=10)
        # no task holds a CPU, nor does an actor left (an actor holds no CPU)
        assert _until(lambda: ray.available_resources().get("CPU", 0)
                      == ray.cluster_resources()["CPU"])
    finally:
        ray.shutdown()
    assert not _pids_writing(out / ".cache" / "shots")
    assert _no_masters(out)


def test_serve_with_the_ray_executor_renders_its_jobs_on_the_cluster(cluster, local, tmp_path):
    from test_service import Server, submit, token, wait

    data = tmp_path / "data"
    data.mkdir()
    alice, _ = token(data, "alice")
    server = Server(data, "--executor", "ray", "--address", cluster.address).start()
    try:
        r = submit(server, alice)
        assert r.status_code == 202, r.text
        job = wait(server, alice, r.json()["id"])
        assert job["state"] == "succeeded", job
    finally:
        server.kill()
    report = json.loads((data / "jobs" / job["id"] / "out" / "report.json").read_text())
    assert report["executor"]["name"] == "ray" and report["executor"]["nodes"] == 2
    assert set(report["placement"]) == {s["id"] for s in report["shots"]}


def test_a_cancelled_service_job_leaves_nothing_running_on_the_cluster(cluster, tmp_path,
                                                                       monkeypatch):
    from test_service import Server, auth, submit, token, wait

    monkeypatch.setenv("AIPROD_HOLD_SHOT", "1A=120")  # the server's renders inherit it
    data = tmp_path / "data"
    data.mkdir()
    alice, _ = token(data, "alice")
    server = Server(data, "--executor", "ray", "--address", cluster.address).start()
    try:
        job_id = submit(server, alice).json()["id"]
        out = data / "jobs" / job_id / "out"
        held = _held_writer(out)
        assert held, "no worker was holding shot 1A"
        r = httpx.delete(f"{server.url}/v1/jobs/{job_id}", headers=auth(alice), timeout=30)
        assert r.status_code < 300, r.text
        assert wait(server, alice, job_id)["state"] == "cancelled"
        assert _until(lambda: _gone(held[0])), f"the worker {held[0]} is still running"
    finally:
        server.kill()
    assert not _pids_writing(out / ".cache" / "shots")
    assert _cluster_idle(cluster.address)
    assert _no_masters(out)
    # interrupted, as by Ctrl-C, so that it cancelled its own units: Click's word for a
    # KeyboardInterrupt ends the log, unless the render outlived its 20-s grace on a loaded
    # machine and was killed (nothing printed; what matters is asserted above: no task left)
    log = (data / "jobs" / job_id / "render.log").read_text()
    assert not log.strip() or log.strip().endswith("Aborted!"), log


def test_serve_with_the_ray_executor_and_no_cluster_named_exits_2(tmp_path):
    result = CliRunner().invoke(main, ["serve", "--data", str(tmp_path), "--executor", "ray"],
                                env={"RAY_ADDRESS": None})
    assert result.exit_code == 2
    assert "--address: serve --executor ray needs the cluster every job joins" in result.output
    result = CliRunner().invoke(main, ["serve", "--data", str(tmp_path), "--executor", "ray",
                                       "--address", "127.0.0.1:1"])
    assert result.exit_code == 2 and "cannot reach the Ray cluster at 127.0.0.1:1" \
        in result.output
