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

(AOTInductor's packages were tried first: on the H200 the 2B block took 93.5 s to
build and the package crashed loading, in its C++ start-up's ``std::regex``; the
standalone artifact has no C++ wrapper.)

A call the artifact was not built for (another structure of inputs, dtype, device or a
size other than the token count; or with gradients) runs the block's own ``forward``;
:attr:`AOTBlocks.fallbacks` counts those. LoRAs change the block's modules, so an
engine with LoRAs keeps ``torch.compile`` (whose guards see them).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Callable

#: bumped when what a package holds or how it is called changes
FORMAT = 2


class _Captured(Exception):
    """Stops the capturing step at the first block, its inputs recorded."""


def inductor_options(mode: str) -> dict:
    """Inductor's options for an engine's ``compile_mode`` (CUDA graphs do not apply:
    the artifact is called once per block)."""
    return {"max_autotune": True} if mode.startswith("max-autotune") else {}


def _leaf_signature(x) -> Any:
    import torch

    if isinstance(x, torch.Tensor):
        return ["tensor", str(x.dtype), x.device.type, list(x.shape)]
    return repr(x)


class AOTBlocks:
    """The repeated block of ``transformer`` (its ``transformer_blocks``) as one
    AOTInductor package in ``folder``: built once (:meth:`build`), loaded by every later
    run (:meth:`load`), installed into every block (:meth:`install`). ``identity``: what
    else the package depends on (the engine's batch, text length, dtype...)."""

    def __init__(self, transformer, identity: list, folder: Path,
                 options: dict | None = None) -> None:
        import torch

        self.transformer = transformer
        self.options = dict(options or {})
        block = transformer.transformer_blocks[0]
        device = next(block.parameters()).device
        gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
        import diffusers

        self.key = hashlib.sha256(json.dumps(
            [FORMAT, torch.__version__, diffusers.__version__, gpu, type(block).__qualname__,
             type(transformer).__qualname__,
             {k: v for k, v in transformer.config.items() if not k.startswith("_")},
             self.options,
             identity], sort_keys=True, default=str).encode()).hexdigest()[:24]
        self.path = Path(folder) / f"{self.key}.bin"
        self._runner = None
        self._spec = None  # the structure of the inputs it was built for
        self.installed = False
        #: calls the package was not built for, run by the block's own forward
        self.fallbacks = 0

    @property
    def cached(self) -> bool:
        return self.path.is_file() and self.path.with_suffix(".json").is_file()

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

    def build(self, step: Callable[[], Any]) -> float:
        """Export the block from the inputs ``step`` hands its first block (the token count
        symbolic), compile the package into the cache atomically. Seconds it took."""
        import torch
        from torch.utils import _pytree as pytree

        t0 = time.perf_counter()
        args, kwargs = self.capture(step)
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        tokens = hidden.shape[1]
        dim = torch.export.Dim("tokens", min=2, max=1 << 20)

        def spec(x):
            if isinstance(x, torch.Tensor) and x.dim() >= 2 and x.shape[1] == tokens:
                return {1: dim}
            return None

        block = self.transformer.transformer_blocks[0]
        weights = _weights(block)
        # tree_map maps every leaf, None (an absent input) included
        dynamic = ({k: None for k in weights}, pytree.tree_map(spec, args),
                   pytree.tree_map(spec, kwargs))
        with torch.no_grad():
            program = torch.export.export(_Functional(block), (weights, args, kwargs),
                                          dynamic_shapes=dynamic, strict=False
                                          ).run_decompositions({})
        # the exported graph as a plain one (its inputs the leaves of (weights, args,
        # kwargs) in order, its outputs flat): what the artifact is called with
        graph = torch.fx.GraphModule(program.graph_module, program.graph_module.graph)
        leaves = pytree.tree_leaves((weights, args, kwargs))
        inputs = [n for n in graph.graph.nodes if n.op == "placeholder"]
        if len(inputs) != len(leaves) or not all(isinstance(x, torch.Tensor) for x in leaves):
            raise RuntimeError(f"the block's exported inputs ({len(inputs)}) are not its "
                               f"{len(leaves)} tensors")
        # an inference graph: with the weights' requires_grad, AOTAutograd would compile a
        # training graph that keeps the activations for a backward pass
        with torch.no_grad():
            artifact = torch._inductor.standalone_compile(
                graph, [x.detach() for x in leaves], dynamic_shapes="from_graph",
                options=self.options)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.stem}.{os.getpid()}.bin")
        try:
            artifact.save(path=str(tmp), format="binary")
            given, tree = pytree.tree_flatten((args, kwargs))
            meta = {"signature": [_leaf_signature(x) for x in given],
                    "tree": pytree.treespec_dumps(tree),
                    "out": pytree.treespec_dumps(program.call_spec.out_spec),
                    "tokens_dim": [spec(x) is not None for x in given],
                    "built_seconds": round(time.perf_counter() - t0, 2),
                    "torch": torch.__version__}
            os.replace(tmp, self.path)
            _write_json(self.path.with_suffix(".json"), meta)
        finally:
            tmp.unlink(missing_ok=True)
        return time.perf_counter() - t0

    # ---- loading and calling
    def load(self) -> float:
        """Load the package from the cache; seconds it took."""
        from torch.utils import _pytree as pytree

        t0 = time.perf_counter()
        meta = json.loads(self.path.with_suffix(".json").read_text())
        from torch._inductor import CompiledArtifact

        self._runner = CompiledArtifact.load(path=str(self.path), format="binary")
        self._spec = pytree.treespec_loads(meta["tree"])
        self._out = pytree.treespec_loads(meta["out"])
        self._tokens = list(meta["tokens_dim"])
        self._meta = meta
        return time.perf_counter() - t0

    def install(self) -> None:
        """Every block's ``forward`` calls the artifact with that block's weights."""
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

    def _fits(self, leaves: list) -> bool:
        import torch

        for x, sig, dyn in zip(leaves, self._meta["signature"], self._tokens):
            if isinstance(x, torch.Tensor):
                if sig[0] != "tensor" or str(x.dtype) != sig[1] or x.device.type != sig[2] \
                        or x.dim() != len(sig[3]):
                    return False
                if any(s != want for i, (s, want) in enumerate(zip(x.shape, sig[3]))
                       if not (dyn and i == 1)):
                    return False
            elif repr(x) != sig:
                return False
        return True

    def _call(self, block, forward, weights, *args, **kwargs):
        import torch
        from torch.utils import _pytree as pytree

        leaves, spec = pytree.tree_flatten((args, kwargs))
        if torch.is_grad_enabled() or spec != self._spec or not self._fits(leaves):
            self.fallbacks += 1
            return forward(block, *args, **kwargs)
        return pytree.tree_unflatten(
            self._runner(*weights, *leaves), self._out)


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
