"""The numba-cpu build of the shared drift source, the CPU's blocked loop over a tile, and its parallel drivers.

A tile is reduced by ``accumulate_blocks``: the shared per-element terms (_numba_source.py), computed for a
block of elements at a time so that the compiler can put them on the vector units, then added to the
running sums in element order. It gives the state of the per-element ``accumulate_range`` bit for bit, at
a fraction of its time: the in-order sums are all that is left element by element.

Everything here is a module-level function so that Numba's on-disk cache hits in every new process
(closures are keyed on their cells, which differ per process, so a closure recompiles every time), and the
cache is keyed on every source the kernels are built from (_numba_cache.py).
"""
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from ..stats.layout import NB
from . import _numba_build, _numba_cache

@intrinsic
def f64_as_i64(typingctx, x):
    """Reinterpret a float's float64 bits as int64."""
    if not isinstance(x, types.Float):
        return None

    def codegen(context, builder, sig, args):
        value = context.cast(builder, args[0], sig.args[0], types.float64)
        return builder.bitcast(value, ir.IntType(64))

    return types.int64(x), codegen


@intrinsic
def i64_as_f64(typingctx, x):
    """Reinterpret an integer's int64 bits as float64."""
    if not isinstance(x, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        value = context.cast(builder, args[0], sig.args[0], types.int64)
        return builder.bitcast(value, ir.DoubleType())

    return types.float64(x), codegen


# error_model="numpy": a float division by zero gives Inf/NaN instead of raising. The kernels never divide
# by zero (the relative error's denominator is at least rel_floor > 0), so results are the same, but
# without the check (a possible exception) the compiler can vectorize the loop that holds the division.
_jit = _numba_cache.jit(nogil=True, error_model="numpy")
# Helpers are compiled as functions of their own (LLVM inlines them). Numba's IR-level inlining
# (inline="always") saved about a tenth of the first compile but made the blocked loop ten times slower.
_helper = _jit


@_helper
def hist_add(hist, b):
    hist[b] += 1


_compiled = _numba_build.compile_for(_helper, f64_as_i64=f64_as_i64, i64_as_f64=i64_as_f64, hist_add=hist_add)
accumulate_range = _compiled.accumulate_range  # the per-element loop: what accumulate_blocks must equal
merge_into = _compiled.merge_into
load = _compiled.load
unpack_params = _compiled.unpack_params
store_state = _compiled.store_state
first_finite = _compiled.first_finite
side_terms = _compiled.side_terms
range_risk = _compiled.range_risk
pair_terms = _compiled.pair_terms
reset_nonfinite = _compiled.reset_nonfinite
count_nonfinite = _compiled.count_nonfinite

# ---- the blocked loop ------------------------------------------------------------------------------------
BLOCK = 256  # elements a block: its scratch rows (9 x 256 x 8 bytes) stay in the L1 cache
F_ROWS = 7  # float64 scratch rows:
RV, TV, R_DEV, T_DEV, ABS_D, REL, ULPS = range(F_ROWS)
I_ROWS = 2  # int64 scratch rows:
BIN, ABS_KEY = range(I_ROWS)
KEY_MAX = np.iinfo(np.int64).max
KEY_MIN = np.iinfo(np.int64).min
SIGN_FLIP = np.iinfo(np.int64).max  # the bits order_key flips in negative numbers


@_helper
def order_key(x):
    """An int64 ordered like the (non-NaN) float64 ``x``, -0.0 just below +0.0.

    The compiler vectorizes integer maxima and minima; floating-point ones it would only reorder under
    fast-math flags, which may change results.
    """
    bits = f64_as_i64(x)
    return bits ^ ((bits >> 63) & SIGN_FLIP)


@_helper
def key_value(key):
    """The float64 whose ``order_key`` is ``key`` (the map is its own inverse on the bits); KEY_MAX and
    KEY_MIN give a NaN, which never replaces a running min or max."""
    return i64_as_f64(key ^ ((key >> 63) & SIGN_FLIP))


# ---- operands of any storage kind -----------------------------------------------------------------------
# One compiled kernel serves every storage dtype: an operand is a "side", a tuple of three views of its
# memory (float64, float32 and uint16 elements at the same address and byte stride), the 65536-entry table
# that decodes 16-bit floats, and its kind, which says which view holds it. Numba compiles per argument
# type, so passing the arrays themselves would compile the whole kernel again for every dtype pair a
# comparison meets (seconds each on a first run).
KIND_F64, KIND_F32, KIND_F16, KIND_BF16 = range(4)


@_helper
def side_at(address, stride, size, kind, table_f16, table_bf16):
    """The side of an operand of ``size`` elements at ``address``, ``stride`` bytes apart."""
    table = table_bf16 if kind == KIND_BF16 else table_f16
    return (view_of(np.float64, address, size, stride), view_of(np.float32, address, size, stride),
            view_of(np.uint16, address, size, stride), table, kind)


@_helper
def side_of(values, table, decode):
    """The side of a 1-D array: float64 or float32 values, or 16-bit patterns decoded through ``table``."""
    kind = KIND_F16 if decode else (KIND_F64 if values.itemsize == 8 else KIND_F32)
    return side_at(values.ctypes.data, values.strides[0], values.size, kind, table, table)


@_helper
def load_at(side, i):
    """Element i of a side as float64 (the scalar paths: a branch on the kind per element)."""
    v64, v32, v16, table, kind = side
    if kind == KIND_F64:
        return v64[i]
    if kind == KIND_F32:
        return float(v32[i])
    return table[int(v16[i])]


@_helper
def first_finite_at(side, start, stop):
    """``first_finite`` (step 1) of a side: the first finite element of start, ..., stop - 1, else 0.0."""
    for pos in range(start, stop):
        v = load_at(side, pos)
        if abs(v) < np.inf:
            return v
    return 0.0


@_helper
def first_zero(side, lo, m):
    """The first +0.0 or -0.0 among elements lo, ..., lo + m - 1 (0.0 if none)."""
    for pos in range(lo, lo + m):
        v = load_at(side, pos)
        if v == 0.0:
            return v
    return 0.0


@_helper
def merge_min(current, key, side, lo, m):
    """``min`` over current and then a block's finite elements, whose smallest order key is ``key``.

    The element loop's ``min`` keeps its running value unless an element compares smaller, so it returns
    the first element equal to the minimum. Equal but different floats are only +0.0 and -0.0: when the
    block's minimum is a zero below ``current``, the first zero of the block is the answer.
    """
    value = key_value(key)
    if value < current:
        return first_zero(side, lo, m) if value == 0.0 else value
    return current


@_helper
def merge_max(current, key, side, lo, m):
    """``max`` over current and then a block's finite elements, whose largest order key is ``key`` (as
    ``merge_min``)."""
    value = key_value(key)
    if value > current:
        return first_zero(side, lo, m) if value == 0.0 else value
    return current


@_helper
def first_with_key(keys, m, key):
    """The first j < m with keys[j] == key (m if none)."""
    for j in range(m):
        if keys[j] == key:
            return j
    return m


@_helper
def decode_block(side, lo, m, out):
    """out[j] = element lo + j as float64: one loop per kind, each simple enough to vectorize.

    The position is unsigned: a signed index makes Numba wrap negative ones around, which costs
    instructions on every element and keeps the compiler from vectorizing the loop over a contiguous array.
    """
    v64, v32, v16, table, kind = side
    if kind == KIND_F64:
        for j in range(m):
            out[j] = v64[np.uint64(lo + j)]
    elif kind == KIND_F32:
        for j in range(m):
            out[j] = float(v32[np.uint64(lo + j)])
    else:
        for j in range(m):
            out[j] = table[int(v16[np.uint64(lo + j)])]


@_helper
def count_nonfinite_block(r_side, t_side, lo, m, base, out_i):
    """count_nonfinite for every pair of the block with a NaN or ±Inf."""
    for pos in range(lo, lo + m):
        rv = load_at(r_side, pos)
        tv = load_at(t_side, pos)
        if not (abs(rv) < np.inf and abs(tv) < np.inf):
            count_nonfinite(rv, tv, pos - base, out_i)


@_jit
def accumulate_blocks(ref, test, table_r, table_t, decode_r, decode_t, start, stop, base, p,
                      out_i, out_f, hist):
    """``accumulate_tile`` of two arrays (the signature of the per-element ``accumulate_range``, step 1)."""
    accumulate_tile(side_of(ref, table_r, decode_r), side_of(test, table_t, decode_t), start, stop, base, p,
                    out_i, out_f, hist)


@_jit
def accumulate_tile(r_side, t_side, start, stop, base, p, out_i, out_f, hist):
    """``accumulate_range`` over start, ..., stop - 1 (step 1) of two sides, block by block, to the same bits.

    A block of BLOCK elements is read in passes over small scratch rows:

    1. decode both sides to float64;
    2. every element's terms (side_terms, range_risk, pair_terms) into the rows. Its only loop-carried
       values are integers (counts, and extremes as order keys), so the compiler vectorizes it;
    3. the pairs with a NaN or ±Inf, if the block has any (count_nonfinite);
    4. the sums, element after element: floating-point addition is not associative, so they are added in
       the element loop's order, which is what makes the state bit-identical to it.

    Extremes follow the element loop's rules: the first index among equal maxima of |d|, and for
    min/max the first of equal values (merge_min). The relative errors and ULPs are never NaN or -0.0,
    so their maxima have the same bits in any order.
    """
    atol, rtol, rel_floor, precision, emin, emax, overflow_at, underflow_at = unpack_params(p)
    reset_nonfinite(out_i)
    nf = 0
    mismatch = 0
    argmax = -1
    overflow = 0
    underflow = 0
    no_abs_key = order_key(-1.0)  # max |d| starts at -1.0: no finite pair yet
    max_abs_key = no_abs_key
    max_rel_key = 0
    max_ulp_key = 0
    sum_abs = 0.0
    sum_d2 = 0.0
    sum_r2 = 0.0
    sum_t2 = 0.0
    sum_rt = 0.0
    sum_rel = 0.0
    sum_ulp = 0.0
    r_n = 0
    r_shift = first_finite_at(r_side, start, stop)
    r_s1 = 0.0
    r_s2 = 0.0
    r_min = np.inf
    r_max = -np.inf
    t_n = 0
    t_shift = first_finite_at(t_side, start, stop)
    t_s1 = 0.0
    t_s2 = 0.0
    t_min = np.inf
    t_max = -np.inf

    rows = np.empty((F_ROWS, BLOCK))
    rv_row, tv_row, r_dev_row, t_dev_row = rows[RV], rows[TV], rows[R_DEV], rows[T_DEV]
    abs_row, rel_row, ulps_row = rows[ABS_D], rows[REL], rows[ULPS]
    int_rows = np.empty((I_ROWS, BLOCK), dtype=np.int64)
    bin_row, key_row = int_rows[BIN], int_rows[ABS_KEY]
    counts = np.zeros(NB + 1, dtype=np.int64)  # the histogram, plus a slot for NO_BIN

    for lo in range(start, stop, BLOCK):
        m = min(BLOCK, stop - lo)
        # 1. decode
        decode_block(r_side, lo, m, rv_row)
        decode_block(t_side, lo, m, tv_row)

        block_r_n = 0
        block_t_n = 0
        block_nf = 0
        block_abs_key = no_abs_key
        r_lo = KEY_MAX
        r_hi = KEY_MIN
        t_lo = KEY_MAX
        t_hi = KEY_MIN
        for j in range(m):  # 2. terms (vectorized)
            rv = rv_row[j]
            tv = tv_row[j]
            r_finite, r_dev, r_value = side_terms(rv, r_shift)
            t_finite, t_dev, t_value = side_terms(tv, t_shift)
            finite = r_finite & t_finite
            overflows, underflows = range_risk(rv, r_finite, overflow_at, underflow_at)
            abs_d, rel, ulps, mismatches, b = pair_terms(rv, tv, finite, atol, rtol, rel_floor, precision,
                                                         emin, emax)
            block_r_n += r_finite
            block_t_n += t_finite
            block_nf += finite
            overflow += overflows
            underflow += underflows
            mismatch += mismatches
            r_key = order_key(r_value)
            t_key = order_key(t_value)
            r_lo = min(r_lo, r_key if r_finite else KEY_MAX)
            r_hi = max(r_hi, r_key if r_finite else KEY_MIN)
            t_lo = min(t_lo, t_key if t_finite else KEY_MAX)
            t_hi = max(t_hi, t_key if t_finite else KEY_MIN)
            abs_key = order_key(abs_d) if finite else no_abs_key
            block_abs_key = max(block_abs_key, abs_key)
            max_rel_key = max(max_rel_key, order_key(rel))
            max_ulp_key = max(max_ulp_key, order_key(ulps))
            rv_row[j] = rv if finite else 0.0  # the pair's r and t for sum_r2, sum_t2, sum_rt
            tv_row[j] = tv if finite else 0.0
            r_dev_row[j] = r_dev
            t_dev_row[j] = t_dev
            abs_row[j] = abs_d
            rel_row[j] = rel
            ulps_row[j] = ulps
            bin_row[j] = b
            key_row[j] = abs_key

        r_n += block_r_n
        t_n += block_t_n
        nf += block_nf
        r_min = merge_min(r_min, r_lo, r_side, lo, m)
        r_max = merge_max(r_max, r_hi, r_side, lo, m)
        t_min = merge_min(t_min, t_lo, t_side, lo, m)
        t_max = merge_max(t_max, t_hi, t_side, lo, m)
        if block_abs_key > max_abs_key:  # strictly: an earlier block keeps an equal maximum
            max_abs_key = block_abs_key
            argmax = lo + first_with_key(key_row, m, block_abs_key) - base
        if block_nf < m:  # 3. NaN and Inf
            count_nonfinite_block(r_side, t_side, lo, m, base, out_i)

        for j in range(m):  # 4. sums, in element order
            r_dev = r_dev_row[j]
            r_s1 += r_dev
            r_s2 += r_dev * r_dev
            t_dev = t_dev_row[j]
            t_s1 += t_dev
            t_s2 += t_dev * t_dev
            abs_d = abs_row[j]
            rv = rv_row[j]
            tv = tv_row[j]
            sum_abs += abs_d
            sum_d2 += abs_d * abs_d
            sum_r2 += rv * rv
            sum_t2 += tv * tv
            sum_rt += rv * tv
            sum_rel += rel_row[j]
            sum_ulp += ulps_row[j]
            counts[bin_row[j]] += 1

    for b in range(NB):
        hist[b] += counts[b]
    store_state(out_i, out_f, (max(stop - start, 0), nf, mismatch, argmax, overflow, underflow),
                (key_value(max_abs_key), sum_abs, sum_d2, sum_r2, sum_t2, sum_rt, key_value(max_rel_key),
                 sum_rel, key_value(max_ulp_key), sum_ulp),
                (r_n, r_shift, r_s1, r_s2, r_min, r_max), (t_n, t_shift, t_s1, t_s2, t_min, t_max))


# ---- parallel drivers ------------------------------------------------------------------------------------
@intrinsic
def view_of(typingctx, dtype, address, size, stride):
    """A 1-D array (layout 'A') of ``dtype`` (a NumPy scalar type such as ``np.float32``): ``size`` elements
    at ``address``, ``stride`` bytes apart.

    The operands reach the driver as addresses in an int64 table rather than in a ``numba.typed.List``:
    Numba compiles a typed list's methods anew in every process (about 0.6 s), a table costs nothing.
    The caller keeps the arrays alive for the call.
    """
    if not isinstance(dtype, types.NumberClass) or not all(
            isinstance(arg, types.Integer) for arg in (address, size, stride)):
        return None
    element_type = dtype.instance_type
    array_type = types.Array(element_type, 1, "A")

    def codegen(context, builder, signature, args):
        from numba.np.arrayobj import make_array, populate_array

        _, ptr, count, step = args
        element = context.get_data_type(element_type)
        ary = make_array(array_type)(context, builder)
        itemsize = context.get_constant(types.intp, context.get_abi_sizeof(element))
        populate_array(ary, data=builder.inttoptr(ptr, element.as_pointer()), shape=[count], strides=[step],
                       itemsize=itemsize, meminfo=None)
        return ary._getvalue()

    return array_type(dtype, types.int64, types.int64, types.int64), codegen


# operand table columns (int64): the two operands' addresses and byte strides, and the pair's element count
O_PTR_R, O_STRIDE_R, O_PTR_T, O_STRIDE_T, O_SIZE = range(5)


@_jit
def reduce_tiles(operands, kinds, table_f16, table_bf16, params, tile_pair, tile_start, tile_stop, first_tile,
                 tile_step, i_rows, f_rows, h_rows):
    """Tiles first_tile, first_tile + tile_step, ... of the work table: tile t reduces into state row t.

    ``kinds[p]``: the storage kinds (KIND_*) of pair p's two operands. One compilation serves them all.
    The parallelism is the caller's: each of its threads runs this (without the GIL) over its own share
    of tiles. Numba's ``prange`` would do the same at several seconds of extra compile time.
    """
    base = np.int64(0)  # a variable: a literal 0 would compile accumulate_tile a second time
    for t in range(first_tile, tile_pair.size, tile_step):
        p = tile_pair[t]
        r_side = side_at(operands[p, O_PTR_R], operands[p, O_STRIDE_R], operands[p, O_SIZE], kinds[p, 0],
                         table_f16, table_bf16)
        t_side = side_at(operands[p, O_PTR_T], operands[p, O_STRIDE_T], operands[p, O_SIZE], kinds[p, 1],
                         table_f16, table_bf16)
        accumulate_tile(r_side, t_side, tile_start[t], tile_stop[t], base, params[p], i_rows[t], f_rows[t],
                        h_rows[t])


@_jit
def merge_pairs(first, i_rows, f_rows, h_rows, out_i, out_f, out_h):
    """Merge each pair's tile rows (``first[p]:first[p + 1]``) into its output row, in tile order.

    A few rows a pair: serial. Histograms are added element by element (an array ``+=`` would compile
    NumPy's broadcasting and its error messages, seconds of compile time for nothing).
    """
    for p in range(first.size - 1):
        for t in range(first[p], first[p + 1]):
            merge_into(out_i[p], out_f[p], i_rows[t], f_rows[t])
            for b in range(out_h.shape[1]):
                out_h[p, b] += h_rows[t, b]
