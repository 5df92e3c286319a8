"""token_stats for the CPU: every column from the two models' raw logits, a few vectorised passes
over the vocabulary per position, positions in parallel.

On a CPU each [n, V] pass of the vectorised torch path (log-softmax, exp, bucketize, scatter_add,
comparisons, top-k: about twenty of them, each with its own [n, V] temporary) costs as much as the
output head's matmul. Here, per position, while its two rows of logits sit in the core's cache:

  0. `_log_norm`: log sum_v exp(x_v) of each model's logits, in float64, so log p = x - log_norm
     (the log-softmax, in float64, of the float32 logits);
  1. `_sums`: p and q by a vectorisable exp (`_exp`), both entropies, the four band sums (which
     add up to both KLs and to TV) and sum_v q log q (log p - log q) (for the first-order entropy
     change), accumulated in float64 with branch-free selects so that LLVM vectorises the loop;
     each entry's two KL shares are kept in a per-thread scratch row;
  2. `_ranks`: the two ranks, by comparison counts on the logits;
  3. `_tops`: the top-k of p log(p/q) and of q log(q/p) from the scratch rows: only the blocks whose
     maximum reaches the k-th largest block maximum can hold a top-k entry, so only those are walked.

Positions are claimed one at a time from a shared atomic counter (`_claim`), not split into one
fixed share per thread: when another process keeps a core busy, the thread on that core does fewer
positions instead of holding up the whole region (a static split makes the region as slow as its
slowest share). The threads come from numba's OpenMP layer, a second GNU OpenMP runtime beside
torch's; `apply_thread_settings` runs before it loads so that its idle workers sleep rather than spin
(OMP_WAIT_POLICY=PASSIVE, klviz.threads) even in a process that did not set it.

No [n, V] temporary is allocated: the caller's two logit buffers are all the memory it needs.
A row where some probability is exactly 0 against a positive one (a logit of -inf) has an infinite
KL; `_bands_one_by_one` sums its bands entry by entry so that no band becomes inf - inf.
Same definitions and outputs as klviz.engine.divergence.token_stats_torch; tests/unit/test_divergence_math.py
checks both against a float64 brute force, and `_exp` against numpy's exp. Compiled once per
machine by numba (cached next to this file).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from klviz.engine.columns import token_columns
from klviz.threads import apply_thread_settings

# numba loads its OpenMP runtime (the system's libgomp, not torch's copy) at the first parallel call,
# and GNU OpenMP reads OMP_WAIT_POLICY once, when it loads: set it now (a value the user set is kept).
apply_thread_settings()

try:  # numba is a dependency, but a missing or broken install only costs speed
    import numba
    from llvmlite import ir
    from numba.core import cgutils, types
    from numba.extending import intrinsic

    HAVE_NUMBA = True
except Exception:  # pragma: no cover - exercised only where numba cannot import
    HAVE_NUMBA = False

# Reassociation lets LLVM vectorise the float64 sums. No "nnan"/"ninf": 0 * log 0 and infinite KLs
# are handled by explicit selects that must survive.
_FASTMATH = {"reassoc", "contract", "arcp", "nsz"}
_BLOCK = 256  # entries per block of the top-k screen
N_SCALARS = 7  # entropy_policy, entropy_sft, logp_y, logq_y, log_norm_policy, log_norm_sft, cross

# exp(x) = 2^k e^r, k = round(x / ln 2), r = x - k ln 2 (Cody-Waite: ln 2 in two parts), e^r by its
# Taylor series to r^13 (|r| <= ln2/2: truncation < 2e-16 relative). numba compiles _exp with its
# caller's fast-math flags, and reassociation may fold the two parts of ln 2 into one: then the
# error is |k| * 2.3e-17 relative, under 4e-15 where float32 logits leave p above 1e-45 and under
# 3e-14 anywhere (tests/unit/test_divergence_math.py).
_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_EXP_MIN = -708.0  # below this 2^k leaves float64's normal range; exp(x) < 3.3e-308 counts as 0
_INV_FACT = tuple(1.0 / math.factorial(i) for i in range(14))


if HAVE_NUMBA:
    @intrinsic
    def _f64_from_bits(typingctx, bits):
        """Reinterpret an int64 as a float64 (how 2^k is built without a libm call)."""
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], ir.DoubleType())
        return types.float64(types.int64), codegen

    @intrinsic
    def _claim(typingctx, counter):
        """counter[0] += 1 atomically; returns the value before (the next position to work on)."""
        def codegen(context, builder, signature, args):
            aryty = signature.args[0]
            ary = context.make_array(aryty)(context, builder, args[0])
            ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [context.get_constant(types.intp, 0)])
            return builder.atomic_rmw("add", ptr, context.get_constant(types.int64, 1), "monotonic")
        return types.int64(counter), codegen


def _exp(x):
    """exp(x) for x <= ~0 in float64 (see above for its error), branch-free so that loops around it
    vectorise (numba's math.exp is a scalar libm call). Exactly 0 for x < -708 and for x = -inf."""
    xc = max(x, _EXP_MIN)
    k = math.floor(xc * _LOG2E + 0.5)
    r = (xc - k * _LN2_HI) - k * _LN2_LO
    c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13 = _INV_FACT
    poly = c0 + r * (c1 + r * (c2 + r * (c3 + r * (c4 + r * (c5 + r * (c6 + r * (
        c7 + r * (c8 + r * (c9 + r * (c10 + r * (c11 + r * (c12 + r * c13))))))))))))  # Horner
    scale = _f64_from_bits((np.int64(k) + 1023) << 52)  # 2^k
    return poly * scale if x >= _EXP_MIN else 0.0


def _exp_sum(x, u):
    """(log sum_v exp(x_v), sum_v u_v) in float64, with u_v = exp(x_v - max x) kept for `_sums`."""
    m = -math.inf
    for v in range(x.shape[0]):
        xv = np.float64(x[v])
        m = xv if xv > m else m
    if m == -math.inf or m == math.inf:  # no finite logit: nothing to normalise (the row is NaN)
        u[:] = 0.0
        return m, 1.0
    s = 0.0
    for v in range(x.shape[0]):
        t = _exp(np.float64(x[v]) - m)
        u[v] = t
        s += t
    return m + math.log(s), s


def _sums(x, z, cx, cz, sx, sz, e, bands, rev, fwd):
    """Entropies and cross = sum_v q log q (log p - log q) (returned), and per SFT band the mass
    gained and lost and both KL shares (into bands).

    x, z: Float32[V] logits of policy and SFT; cx, cz: their log-norms; on entry rev and fwd hold
    exp(x - max x) and exp(z - max z), whose sums are sx and sz (so p = rev / sx, q = fwd / sz);
    on return they hold each entry's p log(p/q) and q log(q/p). Band i holds e[i-1] <= q < e[i]
    (e: the 6 inner edges), summed by selects rather than a scatter, so that the loop vectorises.
    """
    isx, isz = 1.0 / sx, 1.0 / sz
    h_p = h_q = cross = 0.0
    g0 = g1 = g2 = g3 = g4 = g5 = g6 = 0.0
    l0 = l1 = l2 = l3 = l4 = l5 = l6 = 0.0
    r0 = r1 = r2 = r3 = r4 = r5 = r6 = 0.0
    f0 = f1 = f2 = f3 = f4 = f5 = f6 = 0.0
    e1, e2, e3, e4, e5, e6 = e[0], e[1], e[2], e[3], e[4], e[5]
    for v in range(x.shape[0]):
        a, b = np.float64(x[v]) - cx, np.float64(z[v]) - cz  # log p, log q
        pv, qv = rev[v] * isx, fwd[v] * isz
        d = a - b
        rv = pv * d if pv > 0.0 else 0.0  # 0 log 0 = 0
        fv = -(qv * d) if qv > 0.0 else 0.0
        rev[v], fwd[v] = rv, fv
        h_p -= pv * a if pv > 0.0 else 0.0
        h_q -= qv * b if qv > 0.0 else 0.0
        cross += qv * b * d if qv > 0.0 else 0.0  # one more accumulator, the same pass
        gd, ls = max(pv - qv, 0.0), max(qv - pv, 0.0)
        m = qv < e1
        g0 += gd if m else 0.0; l0 += ls if m else 0.0; r0 += rv if m else 0.0; f0 += fv if m else 0.0  # noqa: E702
        m = (qv >= e1) & (qv < e2)
        g1 += gd if m else 0.0; l1 += ls if m else 0.0; r1 += rv if m else 0.0; f1 += fv if m else 0.0  # noqa: E702
        m = (qv >= e2) & (qv < e3)
        g2 += gd if m else 0.0; l2 += ls if m else 0.0; r2 += rv if m else 0.0; f2 += fv if m else 0.0  # noqa: E702
        m = (qv >= e3) & (qv < e4)
        g3 += gd if m else 0.0; l3 += ls if m else 0.0; r3 += rv if m else 0.0; f3 += fv if m else 0.0  # noqa: E702
        m = (qv >= e4) & (qv < e5)
        g4 += gd if m else 0.0; l4 += ls if m else 0.0; r4 += rv if m else 0.0; f4 += fv if m else 0.0  # noqa: E702
        m = (qv >= e5) & (qv < e6)
        g5 += gd if m else 0.0; l5 += ls if m else 0.0; r5 += rv if m else 0.0; f5 += fv if m else 0.0  # noqa: E702
        m = qv >= e6
        g6 += gd if m else 0.0; l6 += ls if m else 0.0; r6 += rv if m else 0.0; f6 += fv if m else 0.0  # noqa: E702
    bands[0, 0], bands[0, 1], bands[0, 2], bands[0, 3], bands[0, 4], bands[0, 5], bands[0, 6] = g0, g1, g2, g3, g4, g5, g6
    bands[1, 0], bands[1, 1], bands[1, 2], bands[1, 3], bands[1, 4], bands[1, 5], bands[1, 6] = l0, l1, l2, l3, l4, l5, l6
    bands[2, 0], bands[2, 1], bands[2, 2], bands[2, 3], bands[2, 4], bands[2, 5], bands[2, 6] = r0, r1, r2, r3, r4, r5, r6
    bands[3, 0], bands[3, 1], bands[3, 2], bands[3, 3], bands[3, 4], bands[3, 5], bands[3, 6] = f0, f1, f2, f3, f4, f5, f6
    return h_p, h_q, cross


def _band(q, e):
    """Index i of the band e[i-1] <= q < e[i] (e: inner edges)."""
    b = 0
    while b < e.shape[0] and q >= e[b]:
        b += 1
    return b


def _bands_one_by_one(x, z, cx, cz, e, bands, rev, fwd):
    """The band sums entry by entry: right when a share is infinite (no inf - inf between bands)."""
    bands[:, :] = 0.0
    for v in range(x.shape[0]):
        qv = _exp(np.float64(z[v]) - cz)
        diff = _exp(np.float64(x[v]) - cx) - qv
        b = _band(qv, e)
        bands[0, b] += max(diff, 0.0)
        bands[1, b] += max(-diff, 0.0)
        bands[2, b] += rev[v]
        bands[3, b] += fwd[v]


def _ranks(x, z, y, ranks):
    """rank = 1 + #{v : q(v) > q(y)} (likewise with p), compared on the logits (same order)."""
    xy, zy = x[y], z[y]
    rq = rp = 0
    for v in range(x.shape[0]):
        rq += np.int32(z[v] > zy)
        rp += np.int32(x[v] > xy)
    ranks[0], ranks[1] = rq + 1, rp + 1


def _block_max(rev, fwd, block_max):
    """block_max[0, i], block_max[1, i]: the largest of rev and of fwd in block i."""
    V = rev.shape[0]
    for s in range(0, V, _BLOCK):
        mr = mf = -math.inf
        for v in range(s, min(s + _BLOCK, V)):
            mr = rev[v] if rev[v] > mr else mr
            mf = fwd[v] if fwd[v] > mf else mf
        block_max[0, s // _BLOCK], block_max[1, s // _BLOCK] = mr, mf


def _insert(vals, ids, k, value, v):
    """Keep vals[:k] sorted descending with their ids; earlier ids win ties (like a stable sort)."""
    if value <= vals[k - 1]:
        return
    j = k - 1
    while j > 0 and vals[j - 1] < value:
        vals[j] = vals[j - 1]
        ids[j] = ids[j - 1]
        j -= 1
    vals[j] = value
    ids[j] = v


def _top(values, k, block_max, top_ids, top_vals):
    """The k largest of `values`, largest first, earlier index first among equals.

    block_max[i] is the largest value in block i. The k largest block maxima are k distinct
    entries, so the k-th largest entry is at least the k-th largest block maximum t: a block whose
    maximum is below t holds no top-k entry and none that ties with one. The other blocks are
    walked in order, as a full scan would.
    """
    V = values.shape[0]
    for j in range(k):
        top_vals[j], top_ids[j] = -math.inf, 0
    n_blocks = (V + _BLOCK - 1) // _BLOCK
    t = np.sort(block_max[:n_blocks])[n_blocks - k] if n_blocks >= k else -math.inf
    for blk in range(n_blocks):
        if block_max[blk] >= t:
            for v in range(blk * _BLOCK, min((blk + 1) * _BLOCK, V)):
                _insert(top_vals, top_ids, k, values[v], v)


def _row(x, z, y, e, k, scalars, ranks, bands, top_ids, top_vals, top_p, top_q, scratch, block_max):
    """Every column of one position from its Float32[V] logits x (policy) and z (SFT) and token y."""
    rev, fwd = scratch[0], scratch[1]
    cx, sx = _exp_sum(x, rev)
    cz, sz = _exp_sum(z, fwd)
    h_p, h_q, cross = _sums(x, z, cx, cz, sx, sz, e, bands, rev, fwd)
    if not (math.isfinite(bands[2].sum()) and math.isfinite(bands[3].sum())):
        _bands_one_by_one(x, z, cx, cz, e, bands, rev, fwd)
    scalars[0], scalars[1] = h_p, h_q
    scalars[2], scalars[3] = np.float64(x[y]) - cx, np.float64(z[y]) - cz
    scalars[4], scalars[5], scalars[6] = cx, cz, cross
    _ranks(x, z, y, ranks)
    _block_max(rev, fwd, block_max)
    _top(rev, k, block_max[0], top_ids[0], top_vals[0])
    _top(fwd, k, block_max[1], top_ids[1], top_vals[1])
    for g in range(2):
        for j in range(k):
            v = top_ids[g, j]
            top_p[g, j] = _exp(np.float64(x[v]) - cx)
            top_q[g, j] = _exp(np.float64(z[v]) - cz)


if HAVE_NUMBA:
    _jit = dict(cache=True, error_model="numpy", boundscheck=False)
    _exp = numba.njit(**_jit)(_exp)
    _band = numba.njit(inline="always", **_jit)(_band)
    _insert = numba.njit(inline="always", **_jit)(_insert)
    _exp_sum, _sums, _bands_one_by_one, _ranks, _block_max, _top, _row = (
        numba.njit(fastmath=_FASTMATH, **_jit)(f)
        for f in (_exp_sum, _sums, _bands_one_by_one, _ranks, _block_max, _top, _row))

    @numba.njit(cache=True, parallel=True)
    def _rows(x, z, ids, e, k, scalars, ranks, bands, top_ids, top_vals, top_p, top_q, scratch, block_max, counter):
        for w in numba.prange(scratch.shape[0]):  # one worker per thread, each with its own scratch rows
            i = _claim(counter)
            while i < x.shape[0]:  # positions handed out one by one: a slowed thread takes fewer
                _row(x[i], z[i], ids[i], e, k, scalars[i], ranks[i], bands[i], top_ids[i], top_vals[i],
                     top_p[i], top_q[i], scratch[w], block_max[w])
                i = _claim(counter)


def fused_token_stats(policy_logits: torch.Tensor, sft_logits: torch.Tensor, token_ids: torch.Tensor,
                      top_k: int, band_edges) -> dict[str, torch.Tensor]:
    """token_stats on the CPU from Float[n, V] logits of each model (log-softmax rows are fine too:
    they are normalised again, in float64) and token_ids Long[n]."""
    x = policy_logits.detach().float().contiguous().numpy()
    z = sft_logits.detach().float().contiguous().numpy()
    ids = token_ids.detach().to(torch.int64).contiguous().numpy()
    n, V = x.shape
    k = min(top_k, V)
    edges = np.asarray(band_edges[1:-1], dtype=np.float64)
    scalars, ranks = np.zeros((n, N_SCALARS)), np.zeros((n, 2), dtype=np.int64)
    bands = np.zeros((n, 4, len(band_edges) - 1))
    top_ids, top_vals = np.zeros((n, 2, k), dtype=np.int64), np.zeros((n, 2, k))
    top_p, top_q = np.zeros((n, 2, k)), np.zeros((n, 2, k))
    torch_threads = torch.get_num_threads()
    threads = max(1, min(torch_threads, numba.config.NUMBA_NUM_THREADS))
    scratch = np.empty((threads, 2, V))
    block_max = np.empty((threads, 2, (V + _BLOCK - 1) // _BLOCK))
    numba.set_num_threads(threads)
    try:
        _rows(x, z, ids, edges, k, scalars, ranks, bands, top_ids, top_vals, top_p, top_q, scratch, block_max,
              np.zeros(1, dtype=np.int64))
    finally:
        # numba's OpenMP layer resets the thread's OpenMP team size, which torch reads as its own
        # thread count: put back what the caller (e.g. a PPO job limited to 1 thread) had set.
        torch.set_num_threads(torch_threads)
    def t(a):  # an owned, contiguous tensor of a numpy column (slices of the outputs above)
        return torch.from_numpy(a.copy())

    return token_columns(t(scalars[:, 2]), t(scalars[:, 3]), (t(scalars[:, 0]), t(scalars[:, 1])),
                         t(scalars[:, 6]),
                         (t(ranks[:, 0]), t(ranks[:, 1])), tuple(t(bands[:, i]) for i in range(4)),
                         (t(top_ids[:, 0]), t(top_vals[:, 0]), t(top_p[:, 0]), t(top_q[:, 0])),
                         (t(top_ids[:, 1]), t(top_vals[:, 1]), t(top_p[:, 1]), t(top_q[:, 1])))
