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

With static shapes (``dynamic=False``, LTX-2's block) there is one artifact per shape,
each named by the shape it was built for, so a later run loads the ones its film needs
without tracing any.

(AOTInductor's packages were tried first: on the H200 the 2B block took 93.5 s to
build and the package crashed loading, in its C++ start-up's ``std::regex``; the
standalone artifact has no C++ wrapper.)

A call no artifact was built for (another structure of inputs, dtype, device, a size
other than the token count, another value of a flag; or with gradients) runs the
block's own ``forward``; :attr:`AOTBlocks.fallbacks` counts those. LoRAs change the
block's modules (and their scale is traced in as a constant), so an engine with LoRAs
keeps ``torch.compile`` (whose guards see them).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
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
        block = transformer.transformer_blocks[0]
        device = next(block.parameters()).device
        gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
        import diffusers

        self.key = hashlib.sha256(json.dumps(
            [FORMAT, torch.__version__, diffusers.__version__, gpu, type(block).__qualname__,
             type(transformer).__qualname__,
             {k: v for k, v in transformer.config.items() if not k.startswith("_")},
             self.options, dynamic,
             identity], sort_keys=True, default=str).encode()).hexdigest()[:24]
        self.folder = Path(folder)
        self._runners: dict[tuple, tuple] = {}  # call key -> (artifact, output structure)
        self._spec = None  # the structure of the inputs
        self._mask: list[bool] | None = None  # the leaves whose dimension 1 is symbolic
        self.installed = False
        #: calls no artifact was built for, run by the block's own forward
        self.fallbacks = 0
        #: calls made before the artifacts were all in (:meth:`start`), run the same way
        self.early = 0
        self._done = threading.Event()
        self._done.set()
        self._thread: threading.Thread | None = None

    @property
    def path(self) -> Path:
        """The one artifact of a dynamic block."""
        return self.path_for(None)

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

    # ---- building
    def capture(self, step: Callable[[], Any]) -> tuple[tuple, dict]:
        """The inputs of the first block in one call of ``step`` (which is stopped there)."""
        import torch

        seen: dict = {}

        def hook(module, args, kwargs):
            seen["inputs"] = (tuple(args), dict(kwargs))
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
        self.build_from(self.capture(step), shape)
        return time.perf_counter() - t0

    def build_from(self, captured: tuple[tuple, dict], shape: tuple | None = None,
                   block=None) -> float:
        """:meth:`build` from a block's captured inputs, tracing ``block`` (a copy of the
        first block where the model runs meanwhile: export swaps the weights of the block
        it traces)."""
        import torch
        from torch.utils import _pytree as pytree

        t0 = time.perf_counter()
        args, kwargs = captured
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        tokens = hidden.shape[1]
        dim = torch.export.Dim("tokens", min=2, max=1 << 20)

        def spec(x):
            if self.dynamic and _is_tensor(x) and x.dim() >= 2 and x.shape[1] == tokens:
                return {1: dim}
            return None

        block = self.transformer.transformer_blocks[0] if block is None else block
        weights = _weights(block)
        # tree_map maps every leaf, None (an absent input) included
        dynamic = ({k: None for k in weights}, pytree.tree_map(spec, args),
                   pytree.tree_map(spec, kwargs))
        with torch.no_grad():
            program = torch.export.export(_Functional(block), (weights, args, kwargs),
                                          dynamic_shapes=dynamic, strict=False
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
                dynamic_shapes="from_graph", options=self.options)
        path = self.path_for(shape)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.bin")
        try:
            artifact.save(path=str(tmp), format="binary")
            meta = {"key": list(_call_key(given, mask)), "mask": mask,
                    "tree": pytree.treespec_dumps(tree),
                    "out": pytree.treespec_dumps(program.call_spec.out_spec),
                    "built_seconds": round(time.perf_counter() - t0, 2),
                    "torch": torch.__version__}
            os.replace(tmp, path)
            _write_json(path.with_suffix(".json"), meta)
        finally:
            tmp.unlink(missing_ok=True)
        return time.perf_counter() - t0

    # ---- loading and calling
    def load(self, shape: tuple | None = None) -> float:
        """Load an artifact (``shape``'s, for a static block) from the cache; seconds it
        took."""
        from torch._inductor import CompiledArtifact
        from torch.utils import _pytree as pytree

        t0 = time.perf_counter()
        path = self.path_for(shape)
        meta = json.loads(path.with_suffix(".json").read_text())
        tree = pytree.treespec_loads(meta["tree"])
        if self._spec is not None and (tree != self._spec or meta["mask"] != self._mask):
            raise RuntimeError(f"{path.name} was built for other inputs than the others")
        self._spec, self._mask = tree, meta["mask"]
        runner = CompiledArtifact.load(path=str(path), format="binary")
        self._runners[_frozen(meta["key"])] = (runner, pytree.treespec_loads(meta["out"]))
        return time.perf_counter() - t0

    def start(self, work: list[tuple[tuple | None, tuple | None]], info: dict) -> None:
        """Build (from captured block inputs) or load each ``(shape, captured)`` of
        ``work`` in a thread beside the film, which calls the blocks meanwhile: a call
        whose artifact is not in yet runs the block's own forward (:attr:`early`), and each
        artifact is used from the call after it is loaded. ``info`` gets the seconds
        (``build_seconds``, ``load_seconds``, ``ready_seconds`` from the start, each
        shape's in ``shapes``), or ``error`` (the film goes on with the blocks' own
        forward). :meth:`wait` waits for it; a process waits for it before exiting, so
        the next run finds what it built."""
        block = None
        if any(captured is not None for _, captured in work):
            first = self.transformer.transformer_blocks[0]
            installed = first.__dict__.pop("forward", None)  # a copy of the block's own
            try:
                block = copy.deepcopy(first)
            finally:
                if installed is not None:
                    first.forward = installed
        t0 = time.perf_counter()
        self._done.clear()

        def run() -> None:
            import torch

            try:
                with torch.no_grad():
                    for shape, captured in work:
                        t = time.perf_counter()
                        if captured is not None:
                            info["build_seconds"] = round(info.get("build_seconds", 0.0)
                                                          + self.build_from(captured, shape,
                                                                            block), 2)
                            info["built"] = True
                        info["load_seconds"] = round(info.get("load_seconds", 0.0)
                                                     + self.load(shape), 3)
                        info.setdefault("shapes", []).append(
                            [*(shape or ()), round(time.perf_counter() - t, 2)])
                info["ready_seconds"] = round(time.perf_counter() - t0, 2)
            except Exception as exc:  # export and inductor raise many kinds
                info["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
            finally:
                self._done.set()

        self._thread = threading.Thread(target=run, name="aiprod-aot-blocks")
        self._thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for :meth:`start`'s thread; whether it is done."""
        return self._done.wait(timeout)

    @property
    def ready(self) -> bool:
        return self._done.is_set()

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
        if not torch.is_grad_enabled() and spec == self._spec:
            found = self._runners.get(_call_key(leaves, self._mask))
        if found is None:
            if self._done.is_set():
                self.fallbacks += 1
            else:
                self.early += 1
            return forward(block, *args, **kwargs)
        runner, out = found
        return pytree.tree_unflatten(runner(*weights, *filter(_is_tensor, leaves)), out)


def _call_key(leaves: list, mask: list[bool]) -> tuple:
    """What an artifact was built for, of a call's leaves: each tensor's dtype, device and
    shape (dimension 1 left out where it is symbolic), each other leaf's value."""
    import torch

    return tuple((str(x.dtype), x.device.type,
                  tuple(-1 if (d and i == 1) else n for i, n in enumerate(x.shape)))
                 if isinstance(x, torch.Tensor) else repr(x)
                 for x, d in zip(leaves, mask))


def _frozen(key: list) -> tuple:
    """A call key read back from JSON (lists for tuples)."""
    return tuple((k[0], k[1], tuple(k[2])) if isinstance(k, list) else k for k in key)


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
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)
