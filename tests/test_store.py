"""The stage cache on an object store: real servers on loopback (moto's S3-compatible
one, gcp-storage-emulator's GCS JSON API), and a file:// store; entries published by one
node and fetched by another, concurrent publishers and readers, an upload killed halfway,
a missing bucket and an unreachable endpoint."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, NamedTuple

import pytest

from aiprod_post.errors import AiprodError
from aiprod_post.store import PART, Store

BUCKET = "films"


class Bucket(NamedTuple):
    """An object store server the tests reach: its scheme, the fsspec options that reach
    it, the environment that points a render (its own Store, no options) at it, and the
    options for the same kind of server at another endpoint."""

    scheme: str
    options: dict[str, Any]
    env: dict[str, str]
    at: Callable[[str], dict[str, Any]]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _s3_options(endpoint: str, **config: Any) -> dict[str, Any]:
    return {"key": "test", "secret": "test", "skip_instance_cache": True,
            "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
            "config_kwargs": config}


def _gs_options(endpoint: str) -> dict[str, Any]:
    return {"endpoint_url": endpoint, "token": "anon", "skip_instance_cache": True}


@pytest.fixture(scope="module")
def s3():
    """moto's S3 server on a free loopback port, with one bucket (nothing from the
    environment's AWS settings)."""
    pytest.importorskip("s3fs", reason="s3:// stores need s3fs (the s3 extra)")
    moto_server = pytest.importorskip("moto.server",
                                      reason="the s3:// tests run on moto's S3 server (the "
                                      "test extra)")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    options = _s3_options(endpoint)
    import boto3

    boto3.client("s3", aws_access_key_id="test", aws_secret_access_key="test",
                 **options["client_kwargs"]).create_bucket(Bucket=BUCKET)
    try:
        yield Bucket("s3", options, {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "test",
                                     "AWS_SECRET_ACCESS_KEY": "test",
                                     "AWS_DEFAULT_REGION": "us-east-1"},
                     # one attempt: an endpoint that does not answer is said at once
                     lambda other: _s3_options(other, retries={"max_attempts": 1}))
    finally:
        server.stop()


@pytest.fixture(scope="module")
def gs():
    """gcp-storage-emulator's GCS server (the JSON API gcsfs speaks) on a free loopback
    port, in memory, with one bucket; gcsfs reaches it anonymously."""
    pytest.importorskip("gcsfs", reason="gs:// stores need gcsfs (the gcs extra)")
    emulator = pytest.importorskip("gcp_storage_emulator.server",
                                   reason="the gs:// tests run on gcp-storage-emulator (the test "
                                          "extra)")
    # port 0: the system's free port (a port taken meanwhile would leave start() waiting
    # for ever for a server that failed to bind)
    server = emulator.create_server("127.0.0.1", 0, in_memory=True, default_bucket=BUCKET)
    server.start()
    host, port = server._api._httpd.server_address
    endpoint = f"http://{host}:{port}"
    try:
        yield Bucket("gs", _gs_options(endpoint), {"STORAGE_EMULATOR_HOST": endpoint},
                     _gs_options)
    finally:
        server.stop()


@pytest.fixture(params=["s3", "gs"])
def bucket(request) -> Bucket:
    """Each object store's server (skipped, saying why, where its packages are absent)."""
    return request.getfixturevalue(request.param)


@pytest.fixture(params=["s3", "gs", "file"])
def store_url(request, tmp_path):
    """A store URL and the options it needs: a prefix of a bucket (one per test), or a
    folder."""
    if request.param == "file":
        return (tmp_path / "shared store").as_uri(), {}
    server = request.getfixturevalue(request.param)
    return f"{server.scheme}://{BUCKET}/{tmp_path.name}/cache", server.options


def _entry(folder: Path, size: int, seed: int = 0) -> tuple[Path, str]:
    folder.mkdir(parents=True, exist_ok=True)
    data = np_bytes(size, seed)
    path = folder / f"made{seed}.mov"
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def np_bytes(size: int, seed: int) -> bytes:
    import numpy as np

    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _names(store: Store) -> list[str]:
    """Every object under the store's root, relative to it."""
    return sorted(p[len(store.root) + 1:] for p in store.fs.find(store.root))


def test_an_entry_one_node_publishes_another_fetches(store_url, tmp_path):
    url, options = store_url
    made, digest = _entry(tmp_path / "made", 3 * 1024 * 1024 + 17)
    one = Store(url, tmp_path / "node one", options)
    two = Store(url, tmp_path / "node two", options)
    assert two.get("shots", "abc", ".mov") is None  # nothing anywhere yet
    assert one.put("shots", "abc", ".mov", made) is True
    assert _names(one) == ["shots/abc.mov"]  # no temporary key left behind
    assert _sha(one.local_path("shots", "abc", ".mov")) == digest  # its own copy too
    fetched = two.get("shots", "abc", ".mov")
    assert fetched == tmp_path / "node two" / "shots" / "abc.mov" and _sha(fetched) == digest
    # the store had it: nothing is sent again
    assert two.put("shots", "abc", ".mov") is False
    # a local copy is only a cache: lost, it comes back from the store
    fetched.unlink()
    assert _sha(two.get("shots", "abc", ".mov")) == digest
    # the local copy is what get gives while it is there (no round trip to the store)
    assert [p.name for p in (tmp_path / "node two" / "shots").iterdir()] == ["abc.mov"]


def test_publishers_and_readers_of_one_entry_at_once_never_see_half_of_it(store_url,
                                                                          tmp_path):
    """Four nodes publish the same entry while two others fetch it over and over: every
    fetch is the whole entry, and the store ends with it whole."""
    url, options = store_url
    made, digest = _entry(tmp_path / "made", 8 * 1024 * 1024)
    seen: list[str] = []
    problems: list[BaseException] = []
    done = threading.Event()

    def publish(n: int) -> None:
        try:
            Store(url, tmp_path / f"publisher {n}", options).put("shots", "k", ".mov", made)
        except BaseException as exc:  # noqa: BLE001
            problems.append(exc)

    def read(n: int) -> None:
        node = Store(url, tmp_path / f"reader {n}", options)
        try:
            while not done.is_set():
                got = node.get("shots", "k", ".mov")
                if got is not None:
                    seen.append(_sha(got))
                    got.unlink()  # fetch again next time
        except BaseException as exc:  # noqa: BLE001
            problems.append(exc)

    readers = [threading.Thread(target=read, args=(n,)) for n in range(2)]
    publishers = [threading.Thread(target=publish, args=(n,)) for n in range(4)]
    for t in readers + publishers:
        t.start()
    for t in publishers:
        t.join()
    time.sleep(0.5)  # the readers fetch the finished entry too
    done.set()
    for t in readers:
        t.join()
    assert not problems, problems
    assert seen and set(seen) == {digest}
    check = Store(url, tmp_path / "check", options)
    assert _sha(check.get("shots", "k", ".mov")) == digest
    assert _names(check) == ["shots/k.mov"]


def test_an_upload_killed_halfway_leaves_no_entry(tmp_path):
    """A node killed while it publishes: the store has no entry (only its temporary key,
    which remove_stale_parts clears), and the next node makes and publishes it."""
    url = (tmp_path / "store").as_uri()
    made, digest = _entry(tmp_path / "made", 400 * 1024 * 1024)
    code = ("import sys; from aiprod_post.store import Store; "
            "Store(sys.argv[1], sys.argv[2]).put('shots', 'k', '.mov', sys.argv[3])")
    proc = subprocess.Popen([sys.executable, "-c", code, url, str(tmp_path / "node"),
                             str(made)])
    parts = tmp_path / "store" / "shots" / PART
    deadline = time.monotonic() + 60
    while not (parts.is_dir() and any(p.stat().st_size for p in parts.iterdir())):
        assert proc.poll() is None and time.monotonic() < deadline, "the upload never began"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    node = Store(url, tmp_path / "next node")
    assert node.get("shots", "k", ".mov") is None
    (left,) = parts.iterdir()
    assert left.stat().st_size < made.stat().st_size  # it was killed halfway
    assert node.remove_stale_parts(older_than=3600) == 0  # a recent one may be live
    assert node.remove_stale_parts(older_than=0) == 1
    assert not any(parts.iterdir())
    assert node.put("shots", "k", ".mov", made) is True
    assert _sha(Store(url, tmp_path / "third").get("shots", "k", ".mov")) == digest


def test_a_half_upload_left_in_a_bucket_is_no_entry_and_is_cleared(bucket, tmp_path):
    """What a node killed while it uploads leaves in a bucket (part of the entry under its
    temporary key): no entry for the others, cleared once stale, and the entry is then
    published whole."""
    url = f"{bucket.scheme}://{BUCKET}/{tmp_path.name}/cache"
    made, digest = _entry(tmp_path / "made", 64 * 1024)
    node = Store(url, tmp_path / "node", bucket.options)
    half = tmp_path / "half.mov"
    half.write_bytes(made.read_bytes()[:32 * 1024])
    node.fs.put_file(str(half), f"{node.root}/shots/{PART}/k.mov.0123abcd")
    assert node.get("shots", "k", ".mov") is None
    assert node.remove_stale_parts(older_than=3600) == 0  # a recent one may be live
    assert node.remove_stale_parts(older_than=0) == 1
    assert _names(node) == []
    assert node.put("shots", "k", ".mov", made) is True
    assert _sha(Store(url, tmp_path / "other", bucket.options).get("shots", "k", ".mov")) \
        == digest


def test_store_errors_name_the_url(tmp_path):
    with pytest.raises(AiprodError, match="not a store URL") as err:
        Store("ftp://host/cache", tmp_path)
    assert err.value.where == "--cache"
    for scheme in ("s3", "gs"):
        with pytest.raises(AiprodError, match="no bucket named"):
            Store(f"{scheme}:///cache", tmp_path)
    try:
        import gcsfs  # noqa: F401
    except ImportError:
        with pytest.raises(AiprodError, match=r"gs:// needs the gcsfs package: pip install "
                                              r"'aiprod-post\[gcs\]'"):
            Store("gs://bucket/cache", tmp_path)


def test_a_missing_bucket_is_refused_naming_the_url(bucket, tmp_path):
    url = f"{bucket.scheme}://no-such-bucket/cache"
    missing = Store(url, tmp_path / "node", bucket.options, where="[run] cache")
    assert missing.get("shots", "k", ".mov") is None  # no entry there
    made, _ = _entry(tmp_path / "made", 1024)
    with pytest.raises(AiprodError, match="no such bucket") as err:
        missing.put("shots", "k", ".mov", made)
    assert err.value.where == "[run] cache"
    assert f"{url}/shots/k.mov" in str(err.value)


def test_an_unreachable_endpoint_is_refused_naming_the_url(bucket, tmp_path, monkeypatch):
    """Nothing listens at the store's endpoint: get and put say so, naming the entry's
    URL and the endpoint, instead of taking the store for an empty one."""
    if bucket.scheme == "gs":
        import gcsfs.retry

        async def at_once(seconds: float) -> None:
            pass

        # gcsfs tries a request six times, waiting 1, 2, 4, 8 and 16 s between tries: the
        # tries are made, without the waits (a gcsfs that waits otherwise: the test waits)
        monkeypatch.setattr(gcsfs.retry, "asyncio", SimpleNamespace(sleep=at_once),
                            raising=False)
    endpoint = f"127.0.0.1:{_free_port()}"
    url = f"{bucket.scheme}://{BUCKET}/cache"
    away = Store(url, tmp_path / "node", bucket.at(f"http://{endpoint}"))
    made, _ = _entry(tmp_path / "made", 1024)
    for call in (lambda: away.get("shots", "k", ".mov"),
                 lambda: away.put("shots", "k", ".mov", made)):
        with pytest.raises(AiprodError) as err:
            call()
        assert f"{url}/shots/k.mov" in str(err.value) and endpoint in str(err.value)
        assert err.value.where == "--cache"


def test_renders_on_two_machines_share_their_shots_through_a_bucket(bucket, tmp_path,
                                                                    monkeypatch):
    """``--cache s3://BUCKET/PREFIX`` (or ``gs://``): a render publishes every shot
    (picture, keyframes) to the bucket; a render elsewhere (another output folder and
    another machine's local copy: another AIPROD_CACHE) fetches them instead of making
    them, and its masters are the first's."""
    from click.testing import CliRunner

    from aiprod_post.cli import main

    for name, value in bucket.env.items():  # how a user points a render at the server
        monkeypatch.setenv(name, value)
    script = tmp_path / "s.fountain"
    script.write_text("Title: Shared\n\nEXT. PIER - DAY\n\nGulls.\n\nNELL\nHello.\n\n"
                      "IVO\nTonight?\n")
    url = f"{bucket.scheme}://{BUCKET}/{tmp_path.name}/cache"
    reports = []
    for machine in ("a", "b"):
        monkeypatch.setenv("AIPROD_CACHE", str(tmp_path / f"machine-{machine}"))
        out = tmp_path / f"out-{machine}"
        result = CliRunner().invoke(main, ["render", str(script), "-o", str(out), "--size",
                                           "160x96", "--profile", "master", "--quiet",
                                           "--cache", url])
        assert result.exit_code == 0, result.output
        reports.append(json.loads((out / "report.json").read_text()))
        # this machine's copy of the cache is under its own AIPROD_CACHE
        assert list((tmp_path / f"machine-{machine}" / "stores").glob("*/shots/*.mov"))
    published = _names(Store(url, tmp_path / "look", bucket.options))
    shots = [s["id"] for s in reports[0]["shots"]]
    assert len([p for p in published if p.startswith("shots/") and p.endswith(".mov")]) \
        == len(shots)
    assert not [p for p in published if f"/{PART}/" in p]  # no temporary key left
    assert not any(s["cached"] for s in reports[0]["shots"])
    assert all(s["cached"] for s in reports[1]["shots"])  # fetched, not made
    a, b = (tmp_path / f"out-{m}" / "masters" / "Shared_master.mov" for m in "ab")
    assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()
