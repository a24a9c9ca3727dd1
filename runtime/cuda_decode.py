"""device='cuda' attention_with_kvcache: the compiled split-KV decode kernel (tiers 2 and 3),
and tier 1 for CUDA-array inputs.

One launch per call: the partials and their combine run in one kernel (the last split of each
group combines, counted by int32 arrival counters that this launch zeroes first and the kernel
leaves at zero), so the host only moves data, launches once and synchronizes. The run-time
values and workspaces are templates.attention_decode.launch's, the ones the emulated float64
tests check. NumPy inputs are uploaded: the kernel appends the new keys and values into the
uploaded caches, which are copied back into the caller's arrays only once the launch has
succeeded (a failure that falls back to tier 1 appends once). CUDA arrays are used in place:
the kernel appends into the caller's caches, O and LSE come back as DeviceOutputs.

UNVERIFIED on hardware: written against generator.device's API and checked on the CPU with a
fake device whose "launch" runs the same kernel source on the host emulator and whose CUDA
arrays are host memory (tests/runtime/test_cuda_decode.py); its gpu-marked test runs tiers 1-3
on a GPU. The producer stream of CUDA arrays is not waited on (the caller orders it, as for
the forward's, see runtime.arrays).
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from runtime.arrays import NUMPY_DTYPES, device_array
from runtime.backends import ReferenceKernel, splits_for
from runtime.cuda_backend import DeviceOutput, to_device_output, to_host
from runtime.signature import Variant
from runtime.tiers import Tier
from runtime.validate_decode import DecodeOptions
from templates.attention_decode.family import ALIBI_POINTER, DecodeRun
from templates.attention_decode.launch import (
    ZEROED_OUTPUTS,
    OutputSpec,
    launch_values,
    with_splits,
)
from templates.family import Family, LaunchGeometry
from tessera_core.types import AttentionDecodeProblem, TileConfig

CHUNK_BYTES = 16  # the kernel's vector copies: every buffer gets at least one chunk
# The kernel's pointers in the order of the checked call's inputs (ALiBi slopes last, optional).
INPUT_POINTERS = ("q", "k_cache", "v_cache", "k_new", "v_new", "cache_seqlens", "block_table")


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(x.shape) if isinstance(x, np.ndarray) else device_array(x).shape


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
    ) -> tuple[AttentionDecodeProblem, DecodeRun, dict[str, OutputSpec], LaunchGeometry]:
        """This call's problem (a generic kernel serves every shape of its key), its run-time
        values, output buffers and geometry; the split count is the forced one, else the
        configuration's where the cache has enough key tiles, else the heuristic's."""
        assert self.config is not None
        q, k_cache, _, k, _, _, table, _, options = inputs
        problem = _problem(options)
        tiles = splits_for(problem, self.config, self._arch)
        assert tiles is not None  # self.config is
        config = with_splits(tiles, options.num_splits)
        run, outputs = launch_values(
            problem, config, q_shape=_shape(q), cache_shape=_shape(k_cache),
            seq_new=0 if k is None else _shape(k)[1],
            max_pages=None if table is None else _shape(table)[1],
            dtype=NUMPY_DTYPES[problem.dtype],
            window_size=options.window_size, softcap=options.softcap,
        )  # fmt: skip
        return problem, run, outputs, self._family.launch_geometry(problem, config)

    def run(
        self, inputs: tuple[Any, ...], *, causal: bool, scale: float | None, variant: Variant = ()
    ) -> tuple[Any, Any]:
        from generator import device

        problem, run, outputs, geometry = self.plan(inputs, causal=causal)
        on_host = isinstance(inputs[0], np.ndarray)
        arrays = dict(zip(INPUT_POINTERS, inputs[:7], strict=True))
        if problem.alibi != "none":
            arrays[ALIBI_POINTER] = inputs[7]
        owned: list[Any] = []  # buffers this call allocated
        handed_over = False
        try:
            pointers: dict[str, int] = {}
            uploaded: dict[str, Any] = {}
            for name, array in arrays.items():
                if array is not None and not isinstance(array, np.ndarray):
                    pointers[name] = device_array(array).pointer  # in place, no copy
                    continue
                nbytes = 0 if array is None else array.nbytes  # None: no new tokens, no table
                uploaded[name] = device.allocate(max(nbytes, CHUNK_BYTES))
                owned.append(uploaded[name])
                if nbytes:
                    uploaded[name].upload(array)
                pointers[name] = uploaded[name].ptr
            buffers: dict[str, Any] = {}
            for name, (shape, dtype) in outputs.items():
                nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
                buffers[name] = device.allocate(max(nbytes, CHUNK_BYTES))
                owned.append(buffers[name])
                pointers[name] = buffers[name].ptr
            for name in ZEROED_OUTPUTS:
                buffers[name].zero()  # legacy default stream: ordered before the launch
            make_params: Any = self._family.make_params  # the protocol does not name `run`
            params = make_params(problem, pointers=pointers, scale=scale, run=run)
            self._loaded.launch(params, geometry)
            self._loaded.device.sync()  # before the downloads and the frees
            if not on_host:
                handed_over = True
                o_out = DeviceOutput(buffers["o"], *outputs["o"])
                return o_out, DeviceOutput(buffers["lse"], *outputs["lse"])
            o, lse = (buffers[n].download(*outputs[n]) for n in ("o", "lse"))
            if run.seq_new:  # the in-place append, once the launch has succeeded
                for name in ("k_cache", "v_cache"):
                    cache = arrays[name]
                    cache[...] = uploaded[name].download(cache.shape, cache.dtype)
            return o, lse
        finally:
            kept = {id(buffers[n]) for n in ("o", "lse")} if handed_over else set()
            for buffer in owned:
                if id(buffer) not in kept:
                    with contextlib.suppress(Exception):  # keep the launch's own error
                        buffer.free()


def _problem(options: DecodeOptions) -> AttentionDecodeProblem:
    if options.problem is None:
        raise ValueError("a decode call's options carry its problem (runtime.validate_decode)")
    return options.problem


def reference_on_device(
    inputs: tuple[Any, ...], *, causal: bool, scale: float | None
) -> tuple[Any, Any]:
    """Tier 1 of a call with CUDA arrays: the NumPy reference on host copies; the appended
    caches are copied back into the caller's device caches, O and LSE go up as DeviceOutputs."""
    host: tuple[Any, ...] = tuple(
        x if x is None or isinstance(x, np.ndarray) else to_host(x) for x in inputs[:8]
    )
    o, lse = ReferenceKernel("attention_decode").run((*host, inputs[8]), causal=causal, scale=scale)
    if inputs[3] is not None:  # the reference appended into the host copies
        for index in (1, 2):
            copy_into(inputs[index], host[index])
    return to_device_output(np.asarray(o)), to_device_output(np.asarray(lse, np.float32))


def copy_into(target: Any, array: np.ndarray) -> None:
    """Overwrite the CUDA array `target` with the host `array` of the same size."""
    from cuda.bindings import driver

    from generator.device import current_device
    from generator.toolchain import check

    data = np.ascontiguousarray(array)
    current_device()
    check(
        driver.cuMemcpyHtoD(device_array(target).pointer, data.ctypes.data, data.nbytes),
        call="cuMemcpyHtoD",
    )
