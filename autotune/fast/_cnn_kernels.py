"""Compiled CPU loops (numba) for the CNN's BatchNorm -> MaxPool(2) -> ReLU blocks.

Run as separate PyTorch ops, each step of such a block is a pass over a full-size feature
map in memory (statistics, pool, affine map, and in the backward ReLU's mask, the pool's
scatter, BatchNorm's affine gradient). These loops do each direction in two passes and keep
what the backward needs at a quarter of the size (the pool's choice as one byte per value
instead of an int64 index). For the first block of a CNN on one-channel images they go
further: the 3 x 3 convolution is computed inside the passes, 9 multiply-adds per value,
so its output is never stored, and the backward accumulates the convolution's weight
gradient where it computes the gradient it would have been handed.

All arrays are channels-last, (N, H, W, C), float32, C-contiguous; sums are accumulated in
float64, per thread, then added. Loops run on numba's OpenMP threading layer, which shares
the OpenMP runtime PyTorch loaded; callers set numba's thread count to PyTorch's first
(`parallel_chunks`). Compiled once per machine and cached beside this file (`cache=True`):
the first use compiles for ~10-20 s, later processes load in well under a second.
`_bn_pool_relu` and `_gray_block` call these and fall back to PyTorch ops
where numba is missing.
"""

from __future__ import annotations

import llvmlite.binding as llvm
import numpy as np
from numba import get_num_threads, njit, prange, set_num_threads


def _vectorize_short_loops() -> None:
    """Have LLVM vectorize the loops over channels on CPUs without AVX-512.

    There (AVX2: a Zen 3 EPYC here) LLVM's cost model left the pooling loops scalar for
    fewer than 32 channels: 3.5 ms for the mnist study's first block (N=128, 16 channels,
    28 x 28), against 0.17-0.19 ms vectorized with an interleave count of 2 forced
    (2 threads; both the pooling and the pooling-after-convolution loop, 8-48 channels).
    Set before anything here compiles; it reaches only what LLVM compiles in this process
    (numba's loops: PyTorch's kernels come compiled). AVX-512 CPUs keep LLVM's choice, which
    vectorized them (Zen 5: the first block's forward and backward in 1.31 ms); on a Zen 4
    forcing the interleave there made that block slower (4.3 -> 6.4 ms).
    """
    if not llvm.get_host_cpu_features().get("avx512f", False):
        llvm.set_option("autotune", "-force-vector-interleave=2")


_vectorize_short_loops()
_loop = njit(parallel=True, cache=True, nogil=True)  # compiled, threaded, cached on disk


def parallel_chunks(n_threads: int) -> int:
    """Use `n_threads` threads (PyTorch's count) for the loops; returns the chunk count."""
    if get_num_threads() != n_threads:
        set_num_threads(n_threads)
    return n_threads


# --- BatchNorm -> MaxPool(2) -> ReLU on a stored feature map ----------------------------

@_loop
def channel_sums(x: np.ndarray, n_chunks: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel sum and sum of squares of x (N, H, W, C), in float64."""
    n, h, w, c = x.shape
    sums = np.zeros((n_chunks, c))
    squares = np.zeros((n_chunks, c))
    for t in prange(n_chunks):
        s = np.zeros(c)
        q = np.zeros(c)
        for b in range(t * n // n_chunks, (t + 1) * n // n_chunks):
            for i in range(h):
                for j in range(w):
                    for k in range(c):
                        v = np.float64(x[b, i, j, k])
                        s[k] += v
                        q[k] += v * v
        sums[t] = s
        squares[t] = q
    return sums.sum(0), squares.sum(0)


@_loop
def pool_affine_relu(x: np.ndarray, sign: np.ndarray, scale_abs: np.ndarray,
                     shift: np.ndarray, out: np.ndarray, pooled: np.ndarray,
                     choice: np.ndarray) -> None:
    """out = relu(scale_abs * pooled + shift) with pooled = the 2 x 2 max of sign * x.

    choice: the window position (0-3, row-major) the max came from, the first on ties (as
    PyTorch's pool; a NaN wins). pooled, out: (N, H/2, W/2, C); choice uint8, same shape.
    """
    for b in prange(x.shape[0]):
        _pool_tile(x[b], sign, scale_abs, shift, out[b], pooled[b], choice[b])


@_loop
def pooled_grad_sums(grad_out: np.ndarray, out: np.ndarray, pooled: np.ndarray,
                     sign: np.ndarray, n_chunks: int) -> tuple[np.ndarray, np.ndarray]:
    """Per channel: the sum of dy = grad_out where out > 0 (ReLU's backward), and of dy
    times x at the pooled position (sign * pooled), in float64."""
    n, h2, w2, c = out.shape
    sums = np.zeros((n_chunks, c))
    products = np.zeros((n_chunks, c))
    for t in prange(n_chunks):
        s = np.zeros(c)
        p = np.zeros(c)
        for b in range(t * n // n_chunks, (t + 1) * n // n_chunks):
            for i in range(h2):
                for j in range(w2):
                    for k in range(c):
                        if out[b, i, j, k] > 0:
                            g = np.float64(grad_out[b, i, j, k])
                            s[k] += g
                            p[k] += g * (sign[k] * pooled[b, i, j, k])
        sums[t] = s
        products[t] = p
    return sums.sum(0), products.sum(0)


@_loop
def input_grad(x: np.ndarray, grad_out: np.ndarray, out: np.ndarray, choice: np.ndarray,
               scale: np.ndarray, x_coef: np.ndarray, shift: np.ndarray,
               grad_x: np.ndarray) -> None:
    """BatchNorm's input gradient through the pool: x_coef * x + shift everywhere, plus
    scale * dy at the position each window's max came from (dy = grad_out where out > 0)."""
    for b in prange(x.shape[0]):
        _grad_tile(x[b], grad_out[b], out[b], choice[b], scale, x_coef, shift, grad_x[b])


# --- the same block after a 3 x 3 convolution of one-channel images, never stored --------
# Per pixel: its 9 neighbours are loaded once, then one loop over the channels computes all
# of them (written as one expression, so it compiles to vector multiply-adds: ~5x faster
# here than a loop per neighbour). weight_t is the weight as (9, C): tap-major.

@njit(inline="always")
def _conv_pixel(padded: np.ndarray, b: int, i: int, j: int, weight_t: np.ndarray,
                bias: np.ndarray, out: np.ndarray) -> None:
    """out[k] = the convolution's channel k at pixel (i, j) of image b."""
    v0, v1, v2 = padded[b, i, j], padded[b, i, j + 1], padded[b, i, j + 2]
    v3, v4, v5 = padded[b, i + 1, j], padded[b, i + 1, j + 1], padded[b, i + 1, j + 2]
    v6, v7, v8 = padded[b, i + 2, j], padded[b, i + 2, j + 1], padded[b, i + 2, j + 2]
    for k in range(out.shape[0]):
        out[k] = (bias[k] + weight_t[0, k] * v0 + weight_t[1, k] * v1 + weight_t[2, k] * v2
                  + weight_t[3, k] * v3 + weight_t[4, k] * v4 + weight_t[5, k] * v5
                  + weight_t[6, k] * v6 + weight_t[7, k] * v7 + weight_t[8, k] * v8)


@_loop
def conv_channel_sums(padded: np.ndarray, weight_t: np.ndarray, bias: np.ndarray,
                      n_chunks: int) -> tuple[np.ndarray, np.ndarray]:
    """channel_sums of the convolution's output (N, H, W, C)."""
    n = padded.shape[0]
    h, w = padded.shape[1] - 2, padded.shape[2] - 2
    c = weight_t.shape[1]
    sums = np.zeros((n_chunks, c))
    squares = np.zeros((n_chunks, c))
    for t in prange(n_chunks):
        value = np.empty(c, dtype=np.float32)
        s32 = np.empty(c, dtype=np.float32)  # one image's sums: H * W terms in float32
        q32 = np.empty(c, dtype=np.float32)
        for b in range(t * n // n_chunks, (t + 1) * n // n_chunks):
            s32[:] = 0.0
            q32[:] = 0.0
            for i in range(h):
                for j in range(w):
                    _conv_pixel(padded, b, i, j, weight_t, bias, value)
                    for k in range(c):
                        s32[k] += value[k]
                        q32[k] += value[k] * value[k]
            for k in range(c):
                sums[t, k] += s32[k]
                squares[t, k] += q32[k]
    return sums.sum(0), squares.sum(0)


@_loop
def conv_pool_affine_relu(padded: np.ndarray, weight_t: np.ndarray, bias: np.ndarray,
                          sign: np.ndarray, scale_abs: np.ndarray, shift: np.ndarray,
                          out: np.ndarray, pooled: np.ndarray, choice: np.ndarray) -> None:
    """pool_affine_relu of the convolution's output, window by window."""
    n, h2, w2, c = out.shape
    for b in prange(n):
        corners = np.empty((4, c), dtype=np.float32)
        for i in range(h2):
            for j in range(w2):
                for p in range(4):
                    _conv_pixel(padded, b, 2 * i + p // 2, 2 * j + p % 2, weight_t, bias,
                                corners[p])
                _pool_pixel(corners[0], corners[1], corners[2], corners[3], sign, scale_abs,
                            shift, out[b, i, j], pooled[b, i, j], choice[b, i, j])


@njit(inline="always")
def _pool_pixel(a: np.ndarray, b: np.ndarray, d: np.ndarray, e: np.ndarray,
                sign: np.ndarray, scale_abs: np.ndarray, shift: np.ndarray, out: np.ndarray,
                pooled: np.ndarray, choice: np.ndarray) -> None:
    """One pooling window's channels: the max of sign * (a, b, d, e) (a NaN wins, the first
    on ties) into pooled, its position 0-3 into choice, relu(scale_abs * max + shift) into
    out. Written with selects, not branches, so that it compiles to vector instructions."""
    for k in range(out.shape[0]):
        s = sign[k]
        best = s * a[k]
        pick = np.uint8(0)
        v = s * b[k]
        g = (v > best) | (v != v)
        best = v if g else best
        pick = np.uint8(1) if g else pick
        v = s * d[k]
        g = (v > best) | (v != v)
        best = v if g else best
        pick = np.uint8(2) if g else pick
        v = s * e[k]
        g = (v > best) | (v != v)
        best = v if g else best
        pick = np.uint8(3) if g else pick
        pooled[k] = best
        choice[k] = pick
        out[k] = max(scale_abs[k] * best + shift[k], np.float32(0.0))


@njit(inline="always")
def _pool_tile(x: np.ndarray, sign: np.ndarray, scale_abs: np.ndarray, shift: np.ndarray,
               out: np.ndarray, pooled: np.ndarray, choice: np.ndarray) -> None:
    """pool_affine_relu for one image: x (H, W, C), out / pooled / choice (H/2, W/2, C)."""
    h2, w2, c = out.shape
    for i in range(h2):
        for j in range(w2):
            a, b = x[2 * i, 2 * j], x[2 * i, 2 * j + 1]
            d, e = x[2 * i + 1, 2 * j], x[2 * i + 1, 2 * j + 1]
            _pool_pixel(a, b, d, e, sign, scale_abs, shift, out[i, j], pooled[i, j],
                        choice[i, j])


@njit(inline="always")
def _grad_tile(x: np.ndarray, grad_out: np.ndarray, out: np.ndarray, choice: np.ndarray,
               scale: np.ndarray, x_coef: np.ndarray, shift: np.ndarray,
               grad_x: np.ndarray) -> None:
    """input_grad for one image: x, grad_x (H, W, C); grad_out, out, choice (H/2, W/2, C)."""
    h, w, c = x.shape
    h2, w2 = out.shape[0], out.shape[1]
    for i in range(h):
        for j in range(w):
            for k in range(c):
                grad_x[i, j, k] = x_coef[k] * x[i, j, k] + shift[k]
    for pi in range(h2):
        for pj in range(w2):
            for k in range(c):
                if out[pi, pj, k] > 0:
                    p = choice[pi, pj, k]
                    grad_x[2 * pi + p // 2, 2 * pj + p % 2, k] += scale[k] * grad_out[pi, pj, k]


@_loop
def conv_weight_grad(padded: np.ndarray, weight_t: np.ndarray, bias: np.ndarray,
                     grad_out: np.ndarray, out: np.ndarray, choice: np.ndarray,
                     scale: np.ndarray, x_coef: np.ndarray, shift: np.ndarray,
                     n_chunks: int) -> tuple[np.ndarray, np.ndarray]:
    """The convolution's weight gradient as (9, C) and its bias gradient (C,), float64.

    BatchNorm's input gradient at pixel q is x_coef * conv(q) + shift, plus scale * dy at
    the pixel each window's max came from (dy = grad_out where out > 0); it is formed one
    2 x 2 window at a time (the window's 4 x 4 neighbourhood loaded once) and multiplied
    with each pixel's 9 neighbours; pixels outside every window (odd sizes) get the first
    part alone.
    """
    n = padded.shape[0]
    h, w = padded.shape[1] - 2, padded.shape[2] - 2
    h2, w2 = out.shape[1], out.shape[2]
    c = weight_t.shape[1]
    weight_grads = np.zeros((n_chunks, 9, c))
    bias_grads = np.zeros((n_chunks, c))
    for t in prange(n_chunks):
        value = np.empty(c, dtype=np.float32)
        gw = np.empty((9, c), dtype=np.float32)  # one image's sums, in float32
        gb = np.empty(c, dtype=np.float32)
        for b in range(t * n // n_chunks, (t + 1) * n // n_chunks):
            gw[:] = 0.0
            gb[:] = 0.0
            for i in range(h):
                for j in range(w):
                    if i < 2 * h2 and j < 2 * w2:
                        continue  # inside a window: below
                    _conv_pixel(padded, b, i, j, weight_t, bias, value)
                    for k in range(c):
                        value[k] = x_coef[k] * value[k] + shift[k]
                    _add_taps(padded, b, i, j, value, gw, gb)
            for i in range(h2):
                for j in range(w2):
                    for p in range(4):
                        y, x = 2 * i + p // 2, 2 * j + p % 2
                        _conv_pixel(padded, b, y, x, weight_t, bias, value)
                        for k in range(c):
                            hit = np.float32(choice[b, i, j, k] == p) * np.float32(
                                out[b, i, j, k] > 0)
                            value[k] = (x_coef[k] * value[k] + shift[k]
                                        + hit * scale[k] * grad_out[b, i, j, k])
                        _add_taps(padded, b, y, x, value, gw, gb)
            for k in range(c):
                bias_grads[t, k] += gb[k]
                for tap in range(9):
                    weight_grads[t, tap, k] += gw[tap, k]
    return weight_grads.sum(0), bias_grads.sum(0)


@njit(inline="always")
def _add_taps(padded: np.ndarray, b: int, i: int, j: int, grad: np.ndarray, gw: np.ndarray,
              gb: np.ndarray) -> None:
    """gb += grad; gw[tap] += grad * the tap's neighbour of pixel (i, j) of image b."""
    v0, v1, v2 = padded[b, i, j], padded[b, i, j + 1], padded[b, i, j + 2]
    v3, v4, v5 = padded[b, i + 1, j], padded[b, i + 1, j + 1], padded[b, i + 1, j + 2]
    v6, v7, v8 = padded[b, i + 2, j], padded[b, i + 2, j + 1], padded[b, i + 2, j + 2]
    for k in range(grad.shape[0]):
        g = grad[k]
        gb[k] += g
        gw[0, k] += g * v0
        gw[1, k] += g * v1
        gw[2, k] += g * v2
        gw[3, k] += g * v3
        gw[4, k] += g * v4
        gw[5, k] += g * v5
        gw[6, k] += g * v6
        gw[7, k] += g * v7
        gw[8, k] += g * v8


def compile_all(n_threads: int | None = None) -> float:
    """Compile (or load from the cache) every loop for the argument types the blocks pass,
    running them on `n_threads` threads (PyTorch's count; default: numba's); returns the
    seconds it took. `scripts/bootstrap.sh` runs it, so a first trial does not wait for the
    compiler. A forked worker passes its one thread: a GNU OpenMP region of more threads
    would wait forever there for the parent's pool threads."""
    import time

    start = time.perf_counter()
    f32, u8 = np.float32, np.uint8
    x = np.zeros((2, 4, 4, 3), f32)
    vec = np.ones(3, f32)
    out, pooled, choice = np.zeros((2, 2, 2, 3), f32), np.zeros((2, 2, 2, 3), f32), np.zeros(
        (2, 2, 2, 3), u8)
    padded, weight_t = np.zeros((2, 6, 6), f32), np.zeros((9, 3), f32)
    chunks = parallel_chunks(n_threads or get_num_threads())
    channel_sums(x, chunks)
    pool_affine_relu(x, vec, vec, vec, out, pooled, choice)
    pooled_grad_sums(out, out, pooled, vec, chunks)
    input_grad(x, out, out, choice, vec, vec, vec, np.zeros_like(x))
    conv_channel_sums(padded, weight_t, vec, chunks)
    conv_pool_affine_relu(padded, weight_t, vec, vec, vec, vec, out, pooled, choice)
    conv_weight_grad(padded, weight_t, vec, out, out, choice, vec, vec, vec, chunks)
    return time.perf_counter() - start


if __name__ == "__main__":
    print(f"cnn_kernels: compiled in {compile_all():.1f} s")
