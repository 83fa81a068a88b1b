"""The stage cache on an object store: a real S3-compatible server on loopback (moto's),
and a file:// store; entries published by one node and fetched by another, concurrent
publishers and readers, an upload killed halfway."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from aiprod_post.errors import AiprodError
from aiprod_post.store import PART, Store

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

BUCKET = "films"


@pytest.fixture(scope="module")
def s3():
    """moto's S3 server on a free loopback port, with one bucket; fsspec options that
    reach it (nothing from the environment's AWS settings)."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    options = {"key": "test", "secret": "test", "skip_instance_cache": True,
               "client_kwargs": {"endpoint_url": f"http://{host}:{port}",
                                 "region_name": "us-east-1"}}
    import boto3

    boto3.client("s3", aws_access_key_id="test", aws_secret_access_key="test",
                 **options["client_kwargs"]).create_bucket(Bucket=BUCKET)
    try:
        yield options
    finally:
        server.stop()


@pytest.fixture(params=["s3", "file"])
def store_url(request, s3, tmp_path):
    """A store URL and the options it needs: a prefix of the S3 bucket (one per test),
    or a folder."""
    if request.param == "s3":
        return f"s3://{BUCKET}/{tmp_path.name}/cache", s3
    return (tmp_path / "shared store").as_uri(), {}


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


def test_store_errors_name_the_url(s3, tmp_path):
    with pytest.raises(AiprodError, match="not a store URL") as err:
        Store("ftp://host/cache", tmp_path)
    assert err.value.where == "--cache"
    with pytest.raises(AiprodError, match="no bucket named"):
        Store("s3:///cache", tmp_path, s3)
    missing = Store("s3://no-such-bucket/cache", tmp_path / "node", s3, where="[run] cache")
    made, _ = _entry(tmp_path / "made", 1024)
    with pytest.raises(AiprodError) as err:
        missing.put("shots", "k", ".mov", made)
    assert err.value.where == "[run] cache"
    assert "s3://no-such-bucket/cache/shots/k.mov" in str(err.value)
    try:
        import gcsfs  # noqa: F401
    except ImportError:
        with pytest.raises(AiprodError, match=r"gs:// needs the gcsfs package: pip install "
                                              r"'aiprod-post\[gcs\]'"):
            Store("gs://bucket/cache", tmp_path)


def test_renders_on_two_machines_share_their_shots_through_an_s3_cache(s3, tmp_path,
                                                                        monkeypatch):
    """``--cache s3://BUCKET/PREFIX``: a render publishes every shot (picture, keyframes)
    to the bucket; a render elsewhere (another output folder and another machine's local
    copy: another AIPROD_CACHE) fetches them instead of making them, and its masters are
    the first's."""
    from click.testing import CliRunner

    from aiprod_post.cli import main

    endpoint = s3["client_kwargs"]["endpoint_url"]
    for name, value in (("AWS_ENDPOINT_URL", endpoint), ("AWS_ACCESS_KEY_ID", "test"),
                        ("AWS_SECRET_ACCESS_KEY", "test"), ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(name, value)
    script = tmp_path / "s.fountain"
    script.write_text("Title: Shared\n\nEXT. PIER - DAY\n\nGulls.\n\nNELL\nHello.\n\n"
                      "IVO\nTonight?\n")
    url = f"s3://{BUCKET}/{tmp_path.name}/cache"
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
    import fsspec

    fs = fsspec.filesystem("s3", **s3)
    published = fs.ls(f"{BUCKET}/{tmp_path.name}/cache/shots")
    shots = [s["id"] for s in reports[0]["shots"]]
    assert len([p for p in published if p.endswith(".mov")]) == len(shots)
    assert not any(s["cached"] for s in reports[0]["shots"])
    assert all(s["cached"] for s in reports[1]["shots"])  # fetched, not made
    a, b = (tmp_path / f"out-{m}" / "masters" / "Shared_master.mov" for m in "ab")
    assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()
