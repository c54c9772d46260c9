"""The floor that the fused pass's in-order float64 sums put under it, on this machine (issue 15, target 4).

    python bench/stats_sum_floor.py

The fused pass keeps its float64 sums in element order (the accumulation policy that makes numba-cpu's
results bit-identical from release to release). Each of its 11 sums is then a chain of dependent additions
that no vector unit can split. This times just those 11 in-order sums (and the 6 products beside them) over
data that sits in the L1 cache, in CPU seconds of one thread (other processes' load does not count), so
decoding, the per-element terms, the histogram and memory traffic are all left out: a lower bound on the
fused pass's cost per element. Compare it with bench/stats.py's memory-read floor.
"""
import time, numpy as np, numba
@numba.njit(nogil=True)
def sums(a, b, c, d, e, f, g, reps):
    s = np.zeros(11)
    for _ in range(reps):
        s0=s1=s2=s3=s4=s5=s6=s7=s8=s9=s10=0.0
        for j in range(a.size):
            x=a[j]; y=b[j]; z=c[j]; u=d[j]; v=e[j]
            s0 += x; s1 += x*x; s2 += y; s3 += y*y; s4 += z; s5 += z*z
            s6 += u*u; s7 += v*v; s8 += u*v; s9 += f[j]; s10 += g[j]
        s[0]+=s0+s1+s2+s3+s4+s5+s6+s7+s8+s9+s10
    return s
@numba.njit(nogil=True)
def sums_pre(a, b, c, d, e, f, g, reps):
    s = np.zeros(11)
    for _ in range(reps):
        s0=s1=s2=s3=s4=s5=s6=s7=s8=s9=s10=0.0
        for j in range(a.size):
            s0 += a[j]; s1 += b[j]; s2 += c[j]; s3 += d[j]; s4 += e[j]; s5 += f[j]
            s6 += g[j]; s7 += a[j]; s8 += b[j]; s9 += c[j]; s10 += d[j]
        s[0]+=s0+s1+s2+s3+s4+s5+s6+s7+s8+s9+s10
    return s
n=4096; arrs=[np.random.rand(n) for _ in range(7)]
for fn in (sums, sums_pre):
    fn(*arrs, 1); best=1e9
    for _ in range(7):
        t=time.process_time(); fn(*arrs, 2000); best=min(best, time.process_time()-t)
    print(fn.__name__, f"{best/(n*2000)*1e9:.2f} ns/elem CPU time (one thread, in-L1 data)")
