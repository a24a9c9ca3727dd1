"""device='cuda' tiers 2 and 3 of attention_with_kvcache: the compiled split-KV decode kernel.

One launch per call: the partials and their combine run in one kernel (the last split of each
group combines, counted by int32 arrival counters that this launch zeroes first and the kernel
leaves at zero), so the host only uploads, launches once and downloads. The packing of the
launch (pointer names, workspaces, run-time values) is templates.attention_decode.launch's, the
one the emulated float64 tests check. The new keys and values are appended by the kernel into
the uploaded caches, which are copied back into the caller's arrays (the in-place append)
only once the launch has succeeded, so a failure that falls back to tier 1 appends once.

UNVERIFIED on hardware: written against generator.device's API and checked on the CPU with a
fake device whose "launch" runs the same kernel source on the host emulator
(tests/runtime/test_cuda_decode.py); the gpu-marked tests there run it on a GPU. NumPy inputs
only: attention_with_kvcache's checks refuse device arrays before a kernel is chosen.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from runtime.signature import Variant
from runtime.tiers import Tier
from templates.attention_decode.launch import ZEROED_OUTPUTS, DecodeLaunch, decode_launch
from templates.family import Family, LaunchGeometry
from tessera_core.types import AttentionDecodeProblem, TileConfig

CHUNK_BYTES = 16  # the kernel's vector copies: every buffer gets at least one chunk


class CudaDecodeKernel:
    """A loaded decode kernel of one problem class (tier 2) or one problem (tier 3)."""

    def __init__(
        self,
        *,
        tier: Tier,
        config: TileConfig,
        kernel_key: str,
        loaded: Any,
        family: Family,
        arch: str,
    ) -> None:
        self.tier = tier
        self.config: TileConfig | None = config
        self.kernel_key: str | None = kernel_key
        self._loaded = loaded
        self._family = family
        self._arch = arch

    def plan(
        self, inputs: tuple[Any, ...], *, causal: bool
    ) -> tuple[AttentionDecodeProblem, DecodeLaunch, LaunchGeometry]:
        """This call's problem (a generic kernel serves every shape of its key), its launch
        (the split count: forced, else the configuration's where the cache has enough key
        tiles, else the heuristic's) and its geometry."""
        from generator.emulate_decode import decode_problem
        from runtime.backends import splits_for
        from templates.attention_decode.launch import with_splits

        assert self.config is not None
        q, k_cache, _, k, _, lengths, table, slopes, options = inputs
        if not isinstance(q, np.ndarray):
            raise NotImplementedError(
                "attention_with_kvcache on device='cuda' takes NumPy arrays; copy device "
                "arrays to the host first"
            )
        problem = decode_problem(
            q, k_cache, cache_seqlens=lengths, seq_new=0 if k is None else int(k.shape[1]),
            paged=table is not None, causal=causal, alibi_slopes=slopes,
        )  # fmt: skip
        tiles = splits_for(problem, self.config, self._arch)
        assert tiles is not None  # self.config is
        config = with_splits(tiles, options.num_splits)
        names = ("q", "k_cache", "v_cache", "k", "v", "cache_seqlens", "block_table")
        tensors = dict(zip(names, inputs[:7], strict=True)) | {"alibi_slopes": slopes}
        launch = decode_launch(
            problem, config, tensors, window_size=options.window_size, softcap=options.softcap
        )
        return problem, launch, self._family.launch_geometry(problem, config)

    def run(
        self, inputs: tuple[Any, ...], *, causal: bool, scale: float | None, variant: Variant = ()
    ) -> tuple[Any, Any]:
        from generator import device

        problem, launch, geometry = self.plan(inputs, causal=causal)
        k_cache, v_cache = inputs[1], inputs[2]
        owned: list[Any] = []  # every buffer of this call, freed before returning
        try:
            pointers: dict[str, int] = {}
            uploaded: dict[str, Any] = {}
            for name, array in launch.inputs.items():
                buffer = device.allocate(max(array.nbytes, CHUNK_BYTES))
                owned.append(buffer)
                if array.nbytes:
                    buffer.upload(array)
                uploaded[name] = buffer
                pointers[name] = buffer.ptr
            outputs: dict[str, Any] = {}
            for name, (shape, dtype) in launch.outputs.items():
                nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
                outputs[name] = device.allocate(max(nbytes, CHUNK_BYTES))
                owned.append(outputs[name])
                pointers[name] = outputs[name].ptr
            for name in ZEROED_OUTPUTS:
                outputs[name].zero()  # legacy default stream: ordered before the launch
            make_params: Any = self._family.make_params  # the protocol does not name `run`
            params = make_params(problem, pointers=pointers, scale=scale, run=launch.run)
            self._loaded.launch(params, geometry)
            self._loaded.device.sync()  # before the downloads and the frees
            o = outputs["o"].download(*launch.outputs["o"])
            lse = outputs["lse"].download(*launch.outputs["lse"])
            if launch.run.seq_new:  # the in-place append, once the launch has succeeded
                for name, cache in (("k_cache", k_cache), ("v_cache", v_cache)):
                    cache[...] = uploaded[name].download(cache.shape, cache.dtype)
            return o, lse
        finally:
            for buffer in owned:
                with contextlib.suppress(Exception):  # keep the launch's own error
                    buffer.free()
