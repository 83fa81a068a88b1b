"""A transformer's repeated block compiled ahead of time, kept in the user's cache and
loaded by later runs without tracing anything.

``torch.compile`` keeps inductor's generated code in a cache, but every run traces the
block again with dynamo, re-checks and re-loads each graph and starts inductor's compile
workers: on an H200 a warm start of LTX-Video's block took ~9.5 s, more than a quarter
of a distilled film. Here the block is exported once (``torch.export``, its weights as
inputs, so one artifact serves every block of the model; its token count symbolic, so
one artifact serves every frame count and size), compiled by inductor's standalone
compile (``torch._inductor.standalone_compile``: the same kernels ``torch.compile``
makes) and saved with its kernels in ``AIPROD_CACHE/aot/``; each block's ``forward``
then calls it with that block's own weights. A later run of any film on the same model
architecture, dtype, batch, text length, GPU and torch loads it with no dynamo and no
compile.

A cold cache's artifact can be built in a child process (:meth:`AOTBlocks.build_elsewhere`:
the block, its weights and one call's inputs handed over in a file, a lock file against a
second build of the same artifact) while the film's first shots run the block's own code;
:meth:`AOTBlocks.poll` loads it between two generations once it is ready. Building in a
thread of this process was tried first and withdrawn: the export and the compile are
Python and held the shots' kernel launches back, and ``torch.export`` patches
process-wide state while it traces, which broke the eager forwards running beside it.
:func:`prefetch` imports inductor's load path in a thread while an engine loads its
model from disk.

With static shapes (``dynamic=False``, LTX-2's block) there is one artifact per shape,
each named by the shape it was built for, so a later run loads the ones its film needs
without tracing any.

(AOTInductor's packages were tried first: on the H200 the 2B block took 93.5 s to
build and the package crashed loading, in its C++ start-up's ``std::regex``; the
standalone artifact has no C++ wrapper.)

A call no artifact was built for (another structure of inputs, dtype, device, a size
other than the token count, another value of a flag; or with gradients) runs the
block's own ``forward``; :attr:`AOTBlocks.fallbacks` counts those. LoRAs change the
block's modules, and which are on and their scale are traced in as constants: an engine
that switches LoRAs sets the :attr:`AOTBlocks.mode` it is in (``ltx2``: the adapters on and
their weights), and an artifact runs only in the mode it was built in; the LoRAs' files are
in the artifact's key.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

#: bumped when what an artifact holds or how it is called changes
FORMAT = 3


class _Captured(Exception):
    """Stops the capturing step at the first block, its inputs recorded."""


def inductor_options(mode: str) -> dict:
    """Inductor's options for an engine's ``compile_mode`` (CUDA graphs do not apply:
    the artifact is called once per block)."""
    return {"max_autotune": True} if mode.startswith("max-autotune") else {}


def _is_tensor(x) -> bool:
    import torch

    return isinstance(x, torch.Tensor)


_prefetch: threading.Thread | None = None


def prefetch() -> None:
    """Start importing inductor's load path and computing the keys of inductor's and
    Triton's caches (hashes of the installed torch's and Triton's sources) in a background
    thread, once a process. A new process spends ~4 s on them before it can load an
    artifact (H200, torch 2.11: importing ``torch._inductor.compile_fx`` 3.8 s, the keys
    0.6 s); an engine starts this before it loads its model from disk, which it then
    overlaps (reading the files, hashing them and the copies to the GPU release the GIL).
    :meth:`AOTBlocks.load` and :meth:`AOTBlocks.build` wait for it (:func:`prefetched`)."""
    global _prefetch
    if _prefetch is None:
        _prefetch = threading.Thread(target=_warm_imports, name="aiprod-inductor-prefetch",
                                     daemon=True)
        _prefetch.start()


def prefetched() -> float:
    """Wait for :func:`prefetch`'s thread, where one was started; seconds waited."""
    t = time.perf_counter()
    if _prefetch is not None:
        _prefetch.join()
    return time.perf_counter() - t


def _warm_imports() -> None:
    try:
        import torch._functorch._aot_autograd.autograd_cache  # noqa: F401
        import torch._inductor.async_compile  # noqa: F401
        import torch._inductor.compile_fx  # noqa: F401
        import torch._inductor.select_algorithm  # noqa: F401 (the artifacts' code imports it)
        import torch._inductor.standalone_compile  # noqa: F401
        from torch._inductor.codecache import torch_key

        torch_key()  # (functools caches: the load then finds them computed)
        try:
            from triton.runtime.cache import triton_key
        except ImportError:  # older Triton; or none (a CPU torch)
            try:
                from triton.compiler.compiler import triton_key
            except ImportError:
                return
        triton_key()
    except Exception:  # noqa: BLE001 - the load imports them itself and says what is wrong
        pass


class AOTBlocks:
    """The repeated block of ``transformer`` (its ``transformer_blocks``) compiled ahead
    of time into artifacts in ``folder``: built once (:meth:`build`), loaded by every
    later run (:meth:`load`), installed into every block (:meth:`install`). ``identity``:
    what else an artifact depends on (the engine's batch, text length, dtype...);
    ``dynamic``: one artifact with a symbolic token count, else one per shape."""

    def __init__(self, transformer, identity: list, folder: Path,
                 options: dict | None = None, dynamic: bool = True) -> None:
        import torch

        self.transformer = transformer
        self.options = dict(options or {})
        self.dynamic = dynamic
        self.identity = list(identity)
        block = transformer.transformer_blocks[0]
        device = next(block.parameters()).device
        gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
        import diffusers

        try:
            import triton

            compiler = triton.__version__
        except ImportError:  # a CPU torch: inductor's C++ kernels
            compiler = None
        # what is traced into the graph besides the weights: the attention processors
        # and their backend (diffusers' set_attention_backend), the device (its index too)
        processors = sorted({(type(m.processor).__qualname__,
                              str(getattr(m.processor, "_attention_backend", None)))
                             for m in block.modules() if hasattr(m, "processor")})
        self.key = hashlib.sha256(json.dumps(
            [FORMAT, torch.__version__, diffusers.__version__, compiler, sys.version_info[:2],
             gpu, str(device), type(block).__qualname__, type(transformer).__qualname__,
             {k: v for k, v in transformer.config.items() if not k.startswith("_")},
             processors, self.options, dynamic,
             identity], sort_keys=True, default=str).encode()).hexdigest()[:24]
        self.folder = Path(folder)
        self._runners: dict[tuple, tuple] = {}  # call key -> (artifact, output structure)
        self._spec = None  # the structure of the inputs
        self._mask: list[bool] | None = None  # the leaves whose dimension 1 is symbolic
        self.installed = False
        #: calls no artifact was built for, run by the block's own forward
        self.fallbacks = 0
        #: what the engine has on that the graph bakes in (ltx2: the LoRAs on and their
        #: weights, which peft reads as Python values): an artifact is called only in the
        #: mode it was built in (:meth:`set_mode`)
        self.mode: Any = None
        self._captured_mode: Any = None
        self._paused = 0
        #: a build in another process (:meth:`build_elsewhere`): the child, or the lock of
        #: another process's build, and the shape it builds
        self._child: Any = None
        self._pending: tuple | None = None
        self._job: Path | None = None
        #: what that build did, for the report (its load's seconds, when it was ready,
        #: an error)
        self.background: dict = {}

    def path_for(self, shape: tuple | None) -> Path:
        """The artifact of one shape (a static block; any name the engine gives it), or
        the one artifact (``None``)."""
        name = "" if shape is None else "-" + "x".join(str(v) for v in shape)
        return self.folder / f"{self.key}{name}.bin"

    def cached_for(self, shape: tuple | None) -> bool:
        path = self.path_for(shape)
        return path.is_file() and path.with_suffix(".json").is_file()

    @property
    def cached(self) -> bool:
        return self.cached_for(None)

    def set_mode(self, mode: Any) -> None:
        self.mode = _freeze(mode)

    @contextlib.contextmanager
    def paused(self):
        """Within: every block runs its own forward (a generation the artifacts were not
        built for, whatever its inputs look like: another pipeline's adapters)."""
        self._paused += 1
        try:
            yield
        finally:
            self._paused -= 1

    def failed_for(self, shape: tuple | None) -> str | None:
        """Why an earlier build of this artifact failed, where one did."""
        marker = self.path_for(shape).with_suffix(".failed")
        return marker.read_text() if marker.is_file() else None

    def mark_failed(self, shape: tuple | None, why: str) -> None:
        _write_text(self.path_for(shape).with_suffix(".failed"), why)

    def evict(self, shape: tuple | None) -> None:
        """Remove an artifact (one that failed to load): the next run builds it again."""
        path = self.path_for(shape)
        path.with_suffix(".json").unlink(missing_ok=True)
        path.unlink(missing_ok=True)

    # ---- building
    def capture(self, step: Callable[[], Any]) -> tuple[tuple, dict]:
        """The inputs of the first block in one call of ``step`` (which is stopped there)."""
        import torch

        seen: dict = {}

        def hook(module, args, kwargs):
            seen["inputs"] = (tuple(args), dict(kwargs))
            self._captured_mode = self.mode  # the engine's adapters stay so for the export
            raise _Captured

        handle = self.transformer.transformer_blocks[0].register_forward_pre_hook(
            hook, with_kwargs=True)
        try:
            with torch.no_grad():
                step()
        except _Captured:
            pass
        finally:
            handle.remove()
        if "inputs" not in seen:
            raise RuntimeError("the step never reached the transformer's first block")
        return seen["inputs"]

    def build(self, step: Callable[[], Any], shape: tuple | None = None) -> float:
        """Export the block from the inputs ``step`` hands its first block (the token count
        symbolic where the block is dynamic), compile it, and save the artifact (of
        ``shape``, for a static block) into the cache atomically. Seconds it took."""
        t0 = time.perf_counter()
        prefetched()
        args, kwargs = self.capture(step)
        _compile_block(self.transformer.transformer_blocks[0], args, kwargs,
                       self.path_for(shape), self.options, self.dynamic, self._captured_mode,
                       t0)
        return time.perf_counter() - t0

    def building(self) -> bool:
        """Whether an artifact is being built in another process now: this engine's child,
        or another run's (its lock names a live process)."""
        child = self._child
        if child is None:
            return False
        if isinstance(child, Path):
            return _lock_owner(child) is not None
        return child.poll() is None

    def build_elsewhere(self, step: Callable[[], Any], shape: tuple | None = None
                        ) -> dict | None:
        """Capture the first block's inputs from ``step`` here, and build the artifact from
        them in a child process (the block, its weights and inputs handed over in a file),
        while this one goes on with the block's own code; :meth:`poll` loads it once it is
        ready. Where another run builds it already, waits for that one instead. What was
        started, for the report; None where the artifact turned out to be in the cache
        (another run's, just finished: load it). Raises where the hand-over fails (nothing
        is left behind)."""
        import subprocess
        import tempfile

        import torch

        if self.building():
            return self._building_info()
        path = self.path_for(shape)
        lock = path.with_suffix(".building")
        self._pending = shape
        self.background = {"started": time.perf_counter(), "load_seconds": 0.0}
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = None
        if _lock_owner(lock) is None:
            with contextlib.suppress(FileExistsError):  # (another run took it meanwhile)
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                os.write(fd, str(os.getpid()).encode())  # this process's, till the child's
        if fd is None:
            self._child = lock
            return self._building_info()
        job = started = None
        try:
            if self.cached_for(shape):  # built by another run since this one looked
                self.background = {}
                return None
            args, kwargs = self.capture(step)
            handle, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".job",
                                            dir=path.parent)  # this user's only
            os.close(handle)
            job = Path(name)
            torch.save({"block": self.transformer.transformer_blocks[0], "args": args,
                        "kwargs": kwargs, "path": str(path), "options": self.options,
                        "dynamic": self.dynamic, "mode": self._captured_mode}, job)
            env = dict(os.environ)  # inductor's cache folder too
            # the modules this process sees, no others (-P: not its working folder's,
            # the cache folder)
            env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
            with open(path.with_suffix(".log"), "w") as log:
                started = subprocess.Popen(
                    [sys.executable, "-P", "-m", "aiprod_post.generation.aot", str(job)],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                    cwd=path.parent)
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(started.pid).encode(), 0)
            self._child, self._job = started, job  # the job is the child's now
            return self._building_info()
        finally:
            os.close(fd)
            if started is None:  # nothing started: nothing left behind
                lock.unlink(missing_ok=True)
                path.with_suffix(".log").unlink(missing_ok=True)
                if job is not None:
                    job.unlink(missing_ok=True)

    def _building_info(self) -> dict:
        child = self._child
        return {"building_in": _lock_owner(child) if isinstance(child, Path) else child.pid,
                "log": str(self.path_for(self._pending).with_suffix(".log"))}

    def stop_building(self, why: str) -> None:
        """Stop this engine's child build (the GPU ran out of memory beside it): the cache
        keeps nothing of it, and a later run builds it again."""
        child = self._child
        if child is None or isinstance(child, Path) or child.poll() is not None:
            return  # (one that ended: poll loads what it made)
        self._child = None
        child.terminate()
        try:
            child.wait(timeout=30)
        except Exception:  # noqa: BLE001 - subprocess.TimeoutExpired
            child.kill()
            child.wait()
        lock = self.path_for(self._pending).with_suffix(".building")
        if _lock_owner(lock) in (None, child.pid):  # (not another run's, taken since)
            lock.unlink(missing_ok=True)
        if self._job is not None:
            self._job.unlink(missing_ok=True)
        self.background.pop("started", None)
        self.background["error"] = f"stopped: {why}"

    def poll(self, wait: bool = False, timeout: float | None = None) -> float | None:
        """Where an artifact builds in another process (:meth:`build_elsewhere`): once it
        is ready, load and install it; seconds that took (None while it builds, where
        none does, or where the build failed: :attr:`background` says why). ``wait``:
        until the build ends (at most ``timeout`` seconds)."""
        child = self._child
        if child is None:
            return None
        end = None if timeout is None else time.monotonic() + timeout
        while wait and self.building() and (end is None or time.monotonic() < end):
            time.sleep(0.2)
        if self.building():
            return None
        self._child = None
        if self._job is not None:  # (a child that died before it read its job)
            self._job.unlink(missing_ok=True)
            self._job = None
        shape = self._pending
        started = self.background.pop("started", None)
        if started is not None:
            self.background["ready_after_s"] = round(time.perf_counter() - started, 2)
        if not self.cached_for(shape):
            code = getattr(child, "returncode", None)
            self.background["error"] = self.failed_for(shape) or (
                f"the build process ended with {code} (see "
                f"{self.path_for(shape).with_suffix('.log')})")
            return None
        try:
            seconds = self.load(shape)
        except Exception as exc:  # noqa: BLE001 - another Triton, a damaged file...
            self.background["error"] = f"{type(exc).__name__}: {exc} (removed from the cache)"
            self.evict(shape)
            return None
        self.install()
        self.background["load_seconds"] = round(seconds, 3)
        return seconds

    # ---- loading and calling
    def load(self, shape: tuple | None = None) -> float:
        """Load an artifact (``shape``'s, for a static block) from the cache; seconds it
        took."""
        t0 = time.perf_counter()
        prefetched()  # (not imported beside the thread that imports them)
        from torch._inductor import CompiledArtifact
        from torch.utils import _pytree as pytree

        path = self.path_for(shape)
        meta = json.loads(path.with_suffix(".json").read_text())
        tree = pytree.treespec_loads(meta["tree"])
        if self._spec is not None and (tree != self._spec or meta["mask"] != self._mask):
            raise RuntimeError(f"{path.name} was built for other inputs than the others")
        self._spec, self._mask = tree, meta["mask"]
        runner = CompiledArtifact.load(path=str(path), format="binary")
        self._runners[(_freeze(meta.get("mode")), _freeze(meta["key"]))] = (
            runner, pytree.treespec_loads(meta["out"]))
        return time.perf_counter() - t0

    def install(self) -> None:
        """Every block's ``forward`` calls the artifacts with that block's weights."""
        from torch.utils import _pytree as pytree

        if self.installed:
            return
        for block in self.transformer.transformer_blocks:
            block.forward = functools.partial(self._call, block, type(block).forward,
                                              pytree.tree_leaves(_weights(block)))
        self.installed = True

    def uninstall(self) -> None:
        for block in self.transformer.transformer_blocks:
            block.__dict__.pop("forward", None)
        self.installed = False

    def _call(self, block, forward, weights, *args, **kwargs):
        import torch
        from torch.utils import _pytree as pytree

        leaves, spec = pytree.tree_flatten((args, kwargs))
        found = None
        if not torch.is_grad_enabled() and not self._paused and spec == self._spec:
            found = self._runners.get((self.mode, _call_key(leaves, self._mask)))
        if found is None:
            self.fallbacks += 1
            return forward(block, *args, **kwargs)
        runner, out = found
        try:
            flat = runner(*weights, *filter(_is_tensor, leaves))
        except AssertionError:  # inductor's check of the inputs' strides: not built for
            self.fallbacks += 1
            return forward(block, *args, **kwargs)
        return pytree.tree_unflatten(flat, out)


def _compile_block(block, args: tuple, kwargs: dict, path: Path, options: dict,
                   dynamic: bool, mode: Any, t0: float) -> None:
    """Export ``block`` as a function of its weights from one call's inputs (the token
    count symbolic where ``dynamic``), compile it with inductor and save the artifact and
    what calls it (its call key, the inputs' structure, ``mode``) at ``path`` atomically."""
    import torch
    from torch.utils import _pytree as pytree

    hidden = kwargs.get("hidden_states", args[0] if args else None)
    tokens = hidden.shape[1]
    dim = torch.export.Dim("tokens", min=2, max=1 << 20)

    def spec(x):
        if dynamic and _is_tensor(x) and x.dim() >= 2 and x.shape[1] == tokens:
            return {1: dim}
        return None

    weights = _weights(block)
    # tree_map maps every leaf, None (an absent input) included
    shapes = ({k: None for k in weights}, pytree.tree_map(spec, args),
              pytree.tree_map(spec, kwargs))
    with torch.no_grad():
        program = torch.export.export(_Functional(block), (weights, args, kwargs),
                                      dynamic_shapes=shapes, strict=False
                                      ).run_decompositions({})
    # the exported graph as a plain one, its outputs flat, its inputs the tensors among
    # the leaves of (weights, args, kwargs) in order: the other leaves (None, flags)
    # are constants of the graph, checked by the call's key
    graph = torch.fx.GraphModule(program.graph_module, program.graph_module.graph)
    leaves = pytree.tree_leaves((weights, args, kwargs))
    inputs = [n for n in graph.graph.nodes if n.op == "placeholder"]
    if len(inputs) != len(leaves):
        raise RuntimeError(f"the block's exported inputs ({len(inputs)}) are not its "
                           f"{len(leaves)} leaves")
    for node, x in zip(inputs, leaves):
        if not _is_tensor(x):
            if node.users:
                raise RuntimeError(f"the exported block reads its input {node.name}, "
                                   "not a tensor")
            graph.graph.erase_node(node)
    graph.recompile()
    given, tree = pytree.tree_flatten((args, kwargs))
    mask = [spec(x) is not None for x in given]
    # an inference graph: with the weights' requires_grad, AOTAutograd would compile a
    # training graph that keeps the activations for a backward pass
    with torch.no_grad():
        artifact = torch._inductor.standalone_compile(
            graph, [x.detach() for x in leaves if _is_tensor(x)],
            dynamic_shapes="from_graph", options=options)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.bin")
    try:
        artifact.save(path=str(tmp), format="binary")
        meta = {"key": list(_call_key(given, mask)), "mask": mask, "mode": mode,
                "tree": pytree.treespec_dumps(tree),
                "out": pytree.treespec_dumps(program.call_spec.out_spec),
                "built_seconds": round(time.perf_counter() - t0, 2),
                "torch": torch.__version__}
        os.replace(tmp, path)
        _write_json(path.with_suffix(".json"), meta)
    finally:
        tmp.unlink(missing_ok=True)


def _lock_owner(lock: Path) -> int | None:
    """The process id in a build's lock file where that process still runs (a lock left
    by one that died is removed)."""
    try:
        pid = int(lock.read_text() or 0)
    except (OSError, ValueError):
        return None
    if pid:
        try:
            os.kill(pid, 0)
            return pid
        except ProcessLookupError:
            pass
        except PermissionError:  # another user's, running
            return pid
    else:
        try:
            if time.time() - lock.stat().st_mtime < 60:  # just made, its pid not yet in it
                return -1
        except OSError:
            return None
    lock.unlink(missing_ok=True)
    return None


def _main(job: str) -> int:
    """A child process's build (:meth:`AOTBlocks.build_elsewhere`): the job file's block
    and inputs compiled into the artifact it names. A block that cannot be built leaves
    the reason beside it (``.failed``, which later runs read and do not try again); a
    passing failure (out of memory beside the render, an unreadable job) does not. The
    job file and the lock are removed whatever happens."""
    import torch

    t0 = time.perf_counter()
    path = None
    try:
        try:
            spec = torch.load(job, weights_only=False)
        finally:
            os.unlink(job)
        path = Path(spec["path"])
        import torch._inductor.config

        torch._inductor.config.fx_graph_cache = True
        try:
            _compile_block(spec["block"], spec["args"], spec["kwargs"], path, spec["options"],
                           spec["dynamic"], spec["mode"], t0)
        except Exception as exc:  # export and inductor raise many kinds
            if isinstance(exc, torch.cuda.OutOfMemoryError) or \
                    "out of memory" in str(exc).lower():  # beside the render: passing
                raise
            _write_text(path.with_suffix(".failed"), one_line(exc))
            raise
        print(f"built {path.name} in {time.perf_counter() - t0:.1f} s", flush=True)
        return 0
    finally:
        lock = Path(job).with_name(Path(job).name.split(".")[1] + ".building") \
            if path is None else path.with_suffix(".building")
        lock.unlink(missing_ok=True)


def one_line(exc: BaseException) -> str:
    """An exception as one line of a report: its type and its message's first line."""
    return f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}"


def _call_key(leaves: list, mask: list[bool]) -> tuple:
    """What an artifact was built for, of a call's leaves: each tensor's dtype, device (its
    index too) and shape (dimension 1 left out where it is symbolic), each other leaf's value."""
    import torch

    return tuple((str(x.dtype), str(x.device),
                  tuple(-1 if (d and i == 1) else n for i, n in enumerate(x.shape)))
                 if isinstance(x, torch.Tensor) else repr(x)
                 for x, d in zip(leaves, mask))


def _freeze(value: Any) -> Any:
    """Lists (JSON's) as tuples, all the way down: a mode or call key read back."""
    return tuple(_freeze(v) for v in value) if isinstance(value, (list, tuple)) else value


class _Functional:
    """The block as a function of its weights (not a submodule: export must not lift the
    block's own parameters as constants of the package)."""

    def __new__(cls, block):
        import torch

        class Functional(torch.nn.Module):
            def forward(self, weights, args, kwargs):
                return torch.func.functional_call(block, weights, args, kwargs)

        return Functional()


def _weights(block) -> dict:
    """A block's parameters and buffers by name (the same order for every block)."""
    return {**dict(block.named_parameters()), **dict(block.named_buffers())}


def _write_json(path: Path, data: dict) -> None:
    _write_text(path, json.dumps(data))


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1]))
