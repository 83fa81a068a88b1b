"""Ray executor benchmark: the example film rendered by the local executor and on a local
Ray cluster with 1 and 2 worker nodes (one CPU each; the head runs no work), in one run.

For each: wall seconds of the whole render and of its speech and generation stages (the
lines and the shots, the parts an executor spreads), from a cold stage cache. Each is rendered twice into fresh
folders: first in a new process (the local executor's: this one; the cluster's: new
worker processes), which imports the package and compiles its kernels once, then again in
the same, warm, as a service or a cluster that renders film after film runs. Scaling efficiency is the generation stage's speed-up from
1 to N nodes over N. Ray's overhead per task: the same 200 empty units through the ray
and the local executor, the difference per unit.

Prints one JSON object. On two cores the 2-node figures share them with the driver.
``python benchmarks/bench_ray.py [--size 320x180] [--nodes 1,2] [--script FILE]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "the_last_ferry.fountain"
NODE = {"num_cpus": 1, "object_store_memory": 100 * 1024 ** 2}


def _nothing(payload, deps, shared):
    return payload


def render_once(script: Path, out: Path, size: tuple[int, int], **executor) -> dict:
    from aiprod_post.pipeline import RenderOptions, render

    t0 = time.perf_counter()
    result = render(script, out, RenderOptions(width=size[0], height=size[1], quiet=True,
                                               **executor))
    wall = time.perf_counter() - t0
    placement = result.report.get("placement", {})
    return {"wall_s": round(wall, 2),
            "generation_s": result.report["stage_seconds"].get("generation"),
            # the lines are units too: voiced as tasks on a cluster
            "speech_s": result.report["stage_seconds"].get("speech"),
            "lines": len(result.report.get("speech_placement", {})),
            "shots": len(placement),
            "shot_seconds_sum": round(sum(p["seconds"] for p in placement.values()), 2),
            "waited_s_mean": round(sum(p["waited_s"] for p in placement.values())
                                   / max(1, len(placement)), 3),
            "nodes_used": len({p["node"] for p in placement.values()}),
            "failed": len(result.failed_shots)}


def overhead_per_task(n: int = 200) -> dict:
    """Seconds per unit the ray executor adds to the local one, on empty units."""
    from aiprod_post.executors import Unit
    from aiprod_post.executors.local import LocalExecutor
    from aiprod_post.executors.ray import RayExecutor

    units = [Unit(str(i), i) for i in range(n)]
    t0 = time.perf_counter()
    with LocalExecutor() as ex:
        list(ex.run(_nothing, units))
    local = time.perf_counter() - t0
    with RayExecutor() as ex:  # connected already: the cluster in use
        list(ex.run(_nothing, units[:20]))  # the workers started
        t0 = time.perf_counter()
        list(ex.run(_nothing, units))
        remote = time.perf_counter() - t0
    return {"units": n, "local_s": round(local, 4), "ray_s": round(remote, 3),
            "overhead_ms_per_task": round((remote - local) / n * 1000, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="320x180")
    ap.add_argument("--nodes", default="1,2")
    ap.add_argument("--script", type=Path, default=EXAMPLE)
    args = ap.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    import ray
    from ray.cluster_utils import Cluster

    out: dict = {"script": args.script.name, "size": args.size, "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        script = work / args.script.name
        script.write_text(args.script.read_text())
        # twice, as the cluster's workers: the first pays this process's imports and
        # kernel compiles, the second is what a warm process renders in
        out["local"] = {name: render_once(script, work / f"local_{name}", size)
                        for name in ("cold_process", "warm_process")}
        out["ray"] = {}
        for k in [int(v) for v in args.nodes.split(",")]:
            cluster = Cluster(initialize_head=True, head_node_args={
                "num_cpus": 0, "object_store_memory": NODE["object_store_memory"],
                "include_dashboard": False})
            try:
                for _ in range(k):
                    cluster.add_node(**NODE)
                cluster.wait_for_nodes()
                ray.init(address=cluster.address, log_to_driver=False,
                         logging_level="WARNING")
                runs = {}
                for name in ("cold_workers", "warm_workers"):
                    runs[name] = render_once(script, work / f"ray{k}_{name}", size,
                                             executor="ray", address=cluster.address)
                runs["overhead"] = overhead_per_task()
                out["ray"][str(k)] = runs
            finally:
                if ray.is_initialized():
                    ray.shutdown()
                cluster.shutdown()
    one = out["ray"].get("1", {}).get("warm_workers")
    if one:
        warm = out["local"]["warm_process"]
        out["ray_1_node_vs_local_wall"] = round(one["wall_s"] / warm["wall_s"], 3)
        out["ray_1_node_vs_local_generation"] = round(one["generation_s"]
                                                      / warm["generation_s"], 3)
        for k, runs in out["ray"].items():
            gen = runs["warm_workers"]["generation_s"]
            out.setdefault("scaling_efficiency_generation", {})[k] = \
                round(one["generation_s"] / (int(k) * gen), 3) if gen else None
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    sys.exit(main())
