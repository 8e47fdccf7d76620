"""The numerical engine behind :mod:`genedge.optimizer.model._queueing`: stationary queue-length laws.

Private: callers use the public functions of :mod:`~genedge.optimizer.model._queueing`, which validate their inputs and
broadcast. Here queues are flat arrays grouped by batch size; each group builds one law over its distinct loads
(M/D/1 by Franx's positive sums, the bulk-service queue by its generating function's roots and an FFT), truncated
where a Chernoff bound puts the tail mass below :data:`TAIL_TOL`, and quantiles are found by ITP root finding.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
from scipy.fft import irfft, next_fast_len
from scipy.special import gammaln, lambertw, xlogy

#: Queue lengths are truncated where the stationary tail mass beyond them is at most this
#: (a Chernoff bound, see :func:`states_needed`); it bounds the error of every distribution here.
TAIL_TOL = 1e-16
#: Quantile searches stop when the bracket is this narrow relative to the response time.
QUANTILE_RTOL = 1e-12
# Longest queue-length vector one chain may use. It binds only above ρ ≈ 0.99997, where the
# truncation error P(N ≥ 2^20) then exceeds TAIL_TOL (it is ≈ 1e-9 at ρ = 0.99999).
_MAX_STATES = 2**20
# Shortest FFT used for the bulk queue's queue-length law.
_MIN_FFT = 64
# The Chernoff bound evaluates the generating function at z = exp(θ) with θ at most this, and at
# this fraction of the largest θ where it is finite (closer to the pole gives a larger bound).
_CHERNOFF_MAX_LOG_Z = 5.0
_CHERNOFF_FRACTION = 0.9
# Poisson terms kept for a mean m ≤ b: P(N ≥ b + 10√b + 40) < 1e-40 for every b ≥ 1.
_POISSON_SD = 10.0
_POISSON_PAD = 40
# ITP root finding: truncation constant κ1·(bracket width) and steps allowed beyond bisection's count.
_ITP_KAPPA = 0.2
_ITP_SLACK = 1

Array = npt.NDArray[np.float64]


class Queues:
    """Flat arrays of queues (load ρ, call time S, batch b or None for M/D/1) and their laws.

    Queues with 0 < ρ < 1 are grouped by b; each group builds one law over its distinct loads,
    so repeated (ρ, b) pairs share the work.
    """

    def __init__(
        self,
        load: Array,
        service: Array,
        batch: Array | None,
        wait_units: Array | None = None,
        images: Array | None = None,
    ) -> None:
        """``wait_units``: the waits (in units of S) the caller will ask the M/D/1 CDF about, if known: the
        chains then stop at the states those need instead of at the tail (a CDF at a short SLO needs a
        handful, the tail hundreds). ``images``: P(X = k), k = 1..K, the images per request of every queue,
        each image served alone (M^X/D/1, b = 1 only); None or [1.0] for one image per request."""
        if images is not None and images.size > 1 and batch is not None:
            raise ValueError("Expected batches of 1 with requests of several images (batch service is not modelled)")
        many = images is not None and images.size > 1
        self.load = load
        self.service = service
        self.regular = (load > 0) & (load < 1)
        self.groups: list[tuple[np.ndarray, _MD1Law | _BulkLaw, np.ndarray]] = []
        reg = np.flatnonzero(self.regular)
        keys = [None] if batch is None else [int(b) for b in np.unique(batch[reg])]
        for b in keys:
            sel = reg if b is None else reg[batch[reg] == b]
            if sel.size == 0:
                continue
            loads, chain = np.unique(load[sel], return_inverse=True)
            if many:
                law: _MD1Law | _BulkLaw = _BatchArrivalLaw(loads, images, _states_for(wait_units, sel))
            elif b is None:
                law = _MD1Law(loads, _states_for(wait_units, sel))
            else:
                law = _BulkLaw(loads, b)
            self.groups.append((sel, law, chain.ravel()))

    def wait_cdf_units(self, xs: Array, mask: np.ndarray | None = None) -> Array:
        """P(W ≤ xs·S) per element, xs in units of S (NaN stays NaN); only ``mask``'s queues are evaluated."""
        out = np.zeros(xs.shape)
        zero = self.load == 0
        out[zero] = xs[zero] >= 0
        for sel, law, chain in self.groups:
            if mask is not None:
                keep = mask[sel]
                sel, chain = sel[keep], chain[keep]
            x = xs[sel]
            res = np.where(x == np.inf, 1.0, 0.0)
            inside = (x >= 0) & np.isfinite(x)
            if inside.any():
                res[inside] = law.cdf(chain[inside], x[inside])
            out[sel] = res
        out[np.isnan(xs)] = np.nan
        return out

    def wait_cdf(self, x: Array) -> Array:
        xs = np.where(self.regular, x / np.where(self.regular, self.service, 1.0), x)
        return self.wait_cdf_units(xs)

    def response_cdf(self, x: Array, mask: np.ndarray | None = None) -> Array:
        """P(W + S ≤ x) per element; elements outside ``mask`` (if given) come back 0."""
        zero = self.load == 0
        safe = np.where(self.regular, self.service, 1.0)
        xs = np.where(self.regular, x / safe - 1.0, -1.0)
        out = self.wait_cdf_units(xs, mask)
        out[zero] = x[zero] >= self.service[zero]
        out[np.isnan(x)] = np.nan
        if mask is not None:
            out[~mask] = 0.0
        return out

    def response_quantile(self, q: Array) -> Array:
        out = np.full(q.shape, np.inf)
        zero = self.load == 0
        out[zero] = np.where(q[zero] < 1, self.service[zero], np.inf)
        for sel, law, chain in self.groups:
            out[sel] = self.service[sel] * (1 + _wait_quantile_units(law, chain, q[sel]))
        return out


def _wait_quantile_units(law: _MD1Law | _BulkLaw, chain: np.ndarray, q: Array) -> Array:
    """min{x : P(W ≤ x·S) ≥ q} in units of S.

    The whole multiple of S below the answer is found by bisection over integers (the CDF there
    needs no new Poisson terms), then :func:`solve_increasing` finishes inside that service time,
    where the CDF is smooth and strictly increasing.
    """
    out = np.zeros(q.shape)
    out[q >= 1] = np.inf
    todo = np.flatnonzero((q > law.p_idle[chain]) & (q < 1))
    if todo.size == 0:
        return out
    c, target = chain[todo], q[todo]
    lo = np.zeros(todo.size, dtype=np.int64)
    hi = law.xs_max[c].astype(np.int64)
    beyond = law.cdf(c, hi.astype(float)) < target  # q within the truncated tail mass of 1
    while (hi - lo > 1).any():
        mid = (lo + hi) // 2
        ok = law.cdf(c, mid.astype(float)) >= target
        hi = np.where(ok, mid, hi)
        lo = np.where(ok, lo, mid)
    a, z = lo.astype(float), hi.astype(float)
    result = solve_increasing(
        lambda x, i: law.cdf(c[i], x) - target[i], a, z, law.cdf(c, a) - target, law.cdf(c, z) - target, 1 + a
    )
    result[beyond] = np.inf
    out[todo] = result
    return out


def solve_increasing(
    gap: Callable[[Array, np.ndarray], Array], a: Array, z: Array, gap_a: Array, gap_z: Array, scale: Array
) -> Array:
    """Per element, the smallest x in (a, z] with gap(x) ≥ 0, for a nondecreasing gap with gap(a) < 0 ≤ gap(z).

    The ITP method (Oliveira & Takahashi 2021, ACM TOMS 47(1):5): a regula-falsi point, truncated
    and projected into a shrinking window around the midpoint, so it converges superlinearly on a
    smooth gap yet never needs more steps than bisection plus one, even across the jumps of a
    mixture's atoms. Stops when z − a ≤ QUANTILE_RTOL·scale and returns z. ``gap(x, i)``
    evaluates the elements ``i``.
    """
    a, z, gap_a, gap_z = (np.array(v, dtype=float) for v in (a, z, gap_a, gap_z))
    eps = QUANTILE_RTOL * np.asarray(scale, dtype=float) / 2
    width = z - a
    most = np.ceil(np.log2(np.maximum(width / (2 * eps), 1.0))) + _ITP_SLACK
    kappa = _ITP_KAPPA / np.where(width > 0, width, 1.0)
    for step in range(int(most.max(initial=0)) + 1):
        idx = np.flatnonzero(z - a > 2 * eps)
        if idx.size == 0:
            break
        lo, hi, g_lo, g_hi = a[idx], z[idx], gap_a[idx], gap_z[idx]
        middle = (lo + hi) / 2
        radius = eps[idx] * 2.0 ** (most[idx] - step) - (hi - lo) / 2
        shift = kappa[idx] * (hi - lo) ** 2
        with np.errstate(divide="ignore", invalid="ignore"):
            falsi = lo - g_lo * (hi - lo) / (g_hi - g_lo)
        falsi = np.where(np.isfinite(falsi), falsi, middle)
        sign = np.sign(middle - falsi)
        trunc = np.where(shift <= np.abs(middle - falsi), falsi + sign * shift, middle)
        x = np.where(np.abs(trunc - middle) <= radius, trunc, middle - sign * radius)
        g = gap(x, idx)
        up = g >= 0
        # gap(x) = 0 exactly: x is the crossing (gap increases strictly where these are used).
        a[idx] = np.where(g == 0, x, np.where(up, lo, x))
        z[idx] = np.where(up, x, hi)
        gap_a[idx] = np.where(up, g_lo, g)
        gap_z[idx] = np.where(up, g, g_hi)
    return z


def _poisson_pmf(mean: Array, terms: int) -> Array:
    """P(Poisson(mean) = i) for i < terms, shape (len(mean), terms); exact at mean 0."""
    i = np.arange(terms)
    return np.exp(xlogy(i, mean[:, None]) - mean[:, None] - gammaln(i + 1))


def _poisson_terms(max_mean: float) -> int:
    return math.ceil(max_mean + _POISSON_SD * math.sqrt(max_mean) + _POISSON_PAD)


def inner_roots(c: Array, b: int) -> np.ndarray:
    """Roots z_r (r = 1..b−1) of z^b = e^{bc(z−1)} in the open unit disk, shape (len(c), b−1).

    z = ω e^{c(z−1)} with ω = e^{2πir/b} gives z = −W_0(−c ω e^{−c})/c (principal Lambert W; its
    argument has modulus c e^{−c} < 1/e, inside the principal branch's disk).
    """
    omega = np.exp(2j * np.pi * np.arange(1, b) / b)
    return -lambertw(-(c * np.exp(-c))[:, None] * omega[None, :], k=0) / c[:, None]


def empty_after_batch(c: Array, b: int, roots: np.ndarray) -> Array:
    """π_0 = P(a batch leaves no one waiting) = (b − μ) Π_r (−z_r)/(1 − z_r), μ = bc."""
    return (b - b * c) * np.prod(-roots / (1 - roots), axis=1).real


def states_needed(c: Array, b: int, roots: np.ndarray, *, in_system: bool) -> np.ndarray:
    """Smallest n with P(V ≥ n) ≤ TAIL_TOL by Chernoff, P(V ≥ n) ≤ E[z^V] z^{−n} for 1 < z < z_0.

    V is Y (the queue left when a batch starts) or, with ``in_system``, Y + Poisson(μ) (for b = 1
    the M/D/1 number in system). z_0 = −W_{−1}(−c e^{−c})/c is the pole of E[z^Y] (the real root
    > 1 of z^b = e^{μ(z−1)}); z = z_0^0.9, capped at e^5.
    """
    mu = b * c
    big = -lambertw(-c * np.exp(-c), k=-1).real / c
    theta = np.minimum(_CHERNOFF_FRACTION * np.log(big), _CHERNOFF_MAX_LOG_Z)
    # Near ρ = 1 the Lambert-W value of z_0 is coarse: step back until the PGF is finite there.
    for _ in range(60):
        gap = b * theta - mu * np.expm1(theta)
        if (gap > 0).all():
            break
        theta = np.where(gap > 0, theta, theta / 2)
    z = np.exp(theta)
    log_pgf = (
        np.log(b - mu)
        + np.log(np.expm1(theta))
        - mu * np.expm1(theta)
        - np.log(np.expm1(gap))
        + np.sum(np.log(np.abs(z[:, None] - roots)) - np.log(np.abs(1 - roots)), axis=1)
    )
    if in_system:
        log_pgf = log_pgf + mu * np.expm1(theta)
    n = np.ceil((log_pgf - math.log(TAIL_TOL)) / theta) + 1
    return np.clip(np.where(np.isfinite(n), n, _MAX_STATES), 1, _MAX_STATES).astype(np.int64)


def _size_classes(sizes: np.ndarray) -> list[np.ndarray]:
    """Chains grouped by length up to the next power of two: each group shares one padded table,
    so a short chain (light load) costs its own length, not the longest one's."""
    klass = np.ceil(np.log2(np.maximum(sizes, 1))).astype(int)
    return [np.flatnonzero(klass == k) for k in np.unique(klass)]


class _Padded:
    """Per-chain sequences t[row, i] readable at any integer i: 0 below 0; above the last column 0
    (``above='zero'``) or the last value (``above='last'``)."""

    def __init__(self, table: Array, above: str) -> None:
        rows, self.width = table.shape
        right = np.zeros((rows, 1)) if above == "zero" else table[:, -1:]
        self.flat = np.hstack([np.zeros((rows, 1)), table, right]).ravel()

    def __call__(self, rows: np.ndarray, cols: np.ndarray) -> Array:
        rows = rows.reshape(rows.shape + (1,) * (cols.ndim - rows.ndim))
        return self.flat[rows * (self.width + 2) + np.clip(cols, -1, self.width) + 1]


class _ChainLaw:
    """Stationary laws of several queues of one kind, one chain per load, in padded tables.

    Attributes:
        p_idle: P(W = 0) per chain.
        xs_max: a whole wait (in units of S) where the CDF is within TAIL_TOL of 1, per chain.
    """

    p_idle: Array
    xs_max: np.ndarray

    def _place(self, sizes: np.ndarray) -> list[np.ndarray]:
        classes = _size_classes(sizes)
        self.where = np.zeros((sizes.size, 2), dtype=np.int64)  # (table, row in it) per chain
        for k, members in enumerate(classes):
            self.where[members, 0] = k
            self.where[members, 1] = np.arange(members.size)
        return classes

    def cdf(self, chain: np.ndarray, xs: Array) -> Array:
        """P(W ≤ xs·S) for finite xs ≥ 0."""
        out = np.empty(xs.shape)
        for k in range(len(self.tables)):
            sel = np.flatnonzero(self.where[chain, 0] == k) if len(self.tables) > 1 else np.arange(xs.size)
            if sel.size:
                out[sel] = self._class_cdf(k, chain[sel], self.where[chain[sel], 1], xs[sel])
        return out


def _states_for(wait_units: Array | None, members: np.ndarray) -> int | None:
    """The states p_0..p_{k+1} a CDF at waits of at most k + u service times needs, or None for all."""
    if wait_units is None:
        return None
    finite = wait_units[members][np.isfinite(wait_units[members])]
    return int(np.floor(max(float(finite.max()), 0.0))) + 2 if finite.size else 1


class _MD1Law(_ChainLaw):
    """Stationary number in system p_j of M/D/1 queues (one chain per load ρ ∈ (0, 1))."""

    # Poisson(ρ < 1) terms kept: P(A ≥ 48) < 1e-61.
    _TERMS = 48

    def __init__(self, rho: Array, max_states: int | None = None) -> None:
        """``max_states``: keep p_0..p_{max_states} at most (enough for CDFs below that many service times)."""
        self.rho = rho
        self.terms = self._TERMS
        self.p_idle = 1 - rho
        sizes = states_needed(rho, 1, np.zeros((rho.size, 0)), in_system=True)
        if max_states is not None:
            sizes = np.minimum(sizes, max_states)
        self.xs_max = sizes + 1
        self._build(sizes, self._arrival_pmf(np.arange(rho.size), np.ones(rho.size), self.terms + 1))

    def _arrival_pmf(self, chain: np.ndarray, span: Array, terms: int) -> Array:
        """P(A = n) for n < terms, A the arrivals (in images) of ``span`` service times, one row per element."""
        return _poisson_pmf(self.rho[chain] * span, terms)

    def _build(self, sizes: np.ndarray, arrivals: Array) -> None:
        """The padded chain tables from the arrivals of one full service time, ``arrivals``[chain, n] = P(A = n)."""
        self.below_full = np.cumsum(arrivals[:, : self.terms], axis=1)  # P(A ≤ n) at the full mean
        self.tables: list[tuple[_Padded, _Padded, Array]] = []
        for members in self._place(sizes):
            width = int(sizes[members].max())
            p = self._chains(members, arrivals[members], width)
            # Σ_{j=1}^{m} p_j for m = 0..width.
            tail = np.concatenate([np.zeros((members.size, 1)), np.cumsum(p[:, 1:], axis=1)], axis=1)
            self.tables.append((_Padded(p, "zero"), _Padded(tail, "last"), p[:, 0]))

    def _chains(self, members: np.ndarray, arrivals: Array, width: int) -> Array:
        """p_0..p_width per chain (M/D/1: at departures = at a random time), see :func:`_departure_chain`."""
        at_least = _at_least(arrivals)
        return _departure_chain(1 - self.rho[members], at_least[:, 1:], arrivals, width)

    def _class_cdf(self, k: int, chain: np.ndarray, rows: np.ndarray, xs: Array) -> Array:
        """Franx's positive sum (see :func:`~genedge.optimizer.model._queueing.md1_wait_cdf`)."""
        return self._franx(k, rows, xs, self._below(chain, xs - np.floor(xs)))

    def _below(self, chain: np.ndarray, frac: Array) -> Array:
        """P(A ≤ n), n < terms, for the arrivals A of the window 1 − frac before each tagged arrival."""
        if frac.any():
            return np.cumsum(self._arrival_pmf(chain, 1 - frac, self.terms), axis=1)
        return self.below_full[chain]  # whole multiples of t: the window is one full service time

    def _franx(self, k: int, rows: np.ndarray, xs: Array, below: Array) -> Array:
        """P(W ≤ xs) = p_0 P(A ≤ ⌊x⌋) + Σ_{j=1}^{⌊x⌋+1} p_j P(A ≤ ⌊x⌋ + 1 − j), ``below`` = P(A ≤ n) per element."""
        p, tail, p0 = self.tables[k]
        terms = self.terms
        n = np.arange(terms)
        kk = np.floor(xs).astype(np.int64)
        # Terms j = k + 1 − n with P(A ≤ n) < 1 one by one; those with n ≥ terms (P(A ≤ n) = 1) summed.
        j = kk[:, None] + 1 - n[None, :]
        mixed = np.sum(np.where(n[None, :] <= kk[:, None], below * p(rows, j), 0.0), axis=1)
        plain = tail(rows, np.maximum(kk + 1 - terms, 0))
        empty = p0[rows] * below[np.arange(xs.size), np.minimum(kk, terms - 1)]
        return plain + mixed + empty


def _at_least(pmf: Array) -> Array:
    """P(A ≥ l) per row from P(A = n), summed from the tail (no cancellation)."""
    return np.cumsum(pmf[:, ::-1], axis=1)[:, ::-1]


def _departure_chain(p0: Array, drive_tail: Array, arrivals: Array, width: int) -> Array:
    """p_0..p_width per chain by the level-crossing recursion of the departure-epoch chain,

    a_0 p_n = p_0 C̄_n + Σ_{l=1}^{n−1} Ā_{l+1} p_{n−l}   (n ≥ 1),

    one step for all chains at a time; every term is nonnegative. Ā_l = P(A ≥ l) for the arrivals A of
    one service time; C̄_n = P(what an idle server's next service leaves behind + 1 ≥ n + 1): Ā_n for
    one image per request (``drive_tail`` = Ā_1, Ā_2, …), P(X + A ≥ n + 1) for a request of X images.
    (scipy.signal.lfilter would run it per chain, but importing scipy.signal loads scipy.stats.)
    """
    at_least = _at_least(arrivals)
    taps = at_least.shape[1] - 2  # Ā_{l+1} for l = 1..terms − 1; beyond, negligible
    a0 = arrivals[:, 0]
    # Coefficients in window order: the window holds p_{n−taps} .. p_{n−1}.
    weights = (at_least[:, 2:] / a0[:, None])[:, ::-1]
    drive = p0[:, None] * drive_tail / a0[:, None]  # p_0 C̄_n / a_0, n = 1, 2, …
    buf = np.zeros((p0.size, taps + width + 1))  # p_{−taps..0} read as 0: p_0 enters via drive
    for n in range(1, width + 1):
        value = np.einsum("ij,ij->i", buf[:, n : n + taps], weights)
        if n <= drive.shape[1]:
            value += drive[:, n - 1]
        buf[:, taps + n] = value
    p = buf[:, taps:]
    p[:, 0] = p0
    return p


class _BatchArrivalLaw(_MD1Law):
    """Image-level M^X/D/1 queues: Poisson requests of X images each (law g_k = P(X = k), k = 1..K), every
    image served alone in the deterministic time S, first in first out; one chain per load ρ = λ_images S.

    The wait of a request's first image is the workload V a Poisson arrival finds; Franx's positive sum
    (:meth:`_MD1Law._class_cdf`) holds for it unchanged with the images in system at a random time π_j and
    the images A arriving in the window (compound Poisson): at most one service ends in a window of length
    ≤ S, whatever the arrivals' grouping. The i-th image of a request waits V + (i − 1)S; a random image is
    the i-th of its request with probability w_i = P(X ≥ i)/E[X], so the law of :meth:`cdf` is
    Σ_i w_i P(V ≤ x − (i − 1)S). The images in system: departures leave d_n (:func:`_departure_chain` with
    an idle server's next service leaving X − 1 + A behind, d_0 = (1 − ρ)/E[X]); an arriving request crosses
    level n upwards from every j ≤ n with X > n − j, so E[X] d_n = Σ_{j≤n} π_j P(X > n − j).
    """

    # Requests in one service time kept: P(Poisson(ρ/E[X] ≤ 1) ≥ 20) < 2e-19; each brings ≤ K images.
    _REQUESTS = 20

    def __init__(self, rho: Array, images: Array, max_states: int | None = None) -> None:
        """``max_states``: keep π_0..π_{max_states} at most (enough for CDFs below that many service times)."""
        self.rho = rho
        self.images = images
        k_max = images.size
        self.mean_images = float(np.dot(np.arange(1, k_max + 1), images))
        self.request_load = rho / self.mean_images  # requests per service time
        self.terms = self._REQUESTS * k_max
        self._fft = next_fast_len(2 * self.terms, real=True)
        self.position = np.cumsum(images[::-1])[::-1] / self.mean_images  # w_i, i = 1..K
        self.p_idle = (1 - rho) * self.position[0]
        sizes = _batch_states_needed(rho, images)
        if max_states is not None:
            sizes = np.minimum(sizes, max_states)
        self.xs_max = sizes + k_max
        self._build(sizes, self._arrival_pmf(np.arange(rho.size), np.ones(rho.size), self.terms + 1))

    def _arrival_pmf(self, chain: np.ndarray, span: Array, terms: int) -> Array:
        """Compound Poisson P(A = n), n < terms, by a real inverse FFT of exp(m(X(z) − 1)) on the unit circle
        (m requests on average; the mass beyond the FFT's length, which would wrap, is below 1e-19)."""
        mean = self.request_load[chain] * span
        theta = -2 * np.pi * np.arange(self._fft // 2 + 1) / self._fft
        k = np.arange(1, self.images.size + 1)
        pgf_minus_one = np.exp(1j * np.outer(theta, k)) @ self.images - 1  # X(z) − 1
        values = np.exp(mean[:, None] * pgf_minus_one[None, :])
        return np.clip(irfft(values, n=self._fft, axis=1)[:, :terms], 0.0, None)

    def _chains(self, members: np.ndarray, arrivals: Array, width: int) -> Array:
        """π_0..π_width per chain: the departure chain d, then π_n = E[X] d_n − Σ_{1≤i<K} P(X > i) π_{n−i}.

        The second recursion subtracts, but its error does not grow: its characteristic roots are the
        zeros of (1 − X(z))/(1 − z), none inside the unit disk. Both run as linear filters (scipy.signal,
        imported here: only requests of several images need it).
        """
        from scipy.signal import lfilter

        rho = self.rho[members]
        k_max = self.images.size
        with_request = np.zeros((members.size, arrivals.shape[1] + k_max))  # P(X + A = n)
        for k in range(1, k_max + 1):
            with_request[:, k : k + arrivals.shape[1]] += self.images[k - 1] * arrivals
        after_idle = _at_least(with_request)[:, 2:]  # P(X + A ≥ n + 1), n = 1, 2, …
        at_least = _at_least(arrivals)
        d = np.zeros((members.size, width + 1))
        d[:, 0] = (1 - rho) / self.mean_images
        drive = np.zeros(width)
        for row in range(members.size):
            # a_0 d_n − Σ_{l≥1} Ā_{l+1} d_{n−l} = d_0 P(X + A ≥ n + 1), n = 1..width (every term ≥ 0).
            used = min(width, after_idle.shape[1])
            drive[:] = 0.0
            drive[:used] = d[row, 0] * after_idle[row, :used]
            denominator = np.concatenate([[arrivals[row, 0]], -at_least[row, 2:]])
            d[row, 1:] = lfilter([1.0], denominator, drive)
        beyond = np.concatenate([[1.0], 1 - np.cumsum(self.images)[:-1]])  # P(X > i), i = 0..K−1
        return np.clip(lfilter([1.0], beyond, self.mean_images * d, axis=1), 0.0, None)

    def _class_cdf(self, k: int, chain: np.ndarray, rows: np.ndarray, xs: Array) -> Array:
        """Σ_i w_i P(V ≤ x − (i − 1)) (units of S), V by Franx's sum; the windows' arrivals are the same for
        every i (x − (i − 1) has x's fractional part)."""
        below = self._below(chain, xs - np.floor(xs))
        out = np.zeros(xs.shape)
        for i, weight in enumerate(self.position):
            x = xs - i
            inside = x >= 0
            if inside.any():
                out[inside] += weight * self._franx(k, rows[inside], x[inside], below[inside])
        return out


def _batch_states_needed(rho: Array, images: Array) -> np.ndarray:
    """Smallest n with P(N ≥ n) ≤ TAIL_TOL by Chernoff for the images N in an M^X/D/1 system at a random time.

    E[z^N] = (1 − ρ)(z − 1)A(z)/(z − A(z)) with A(z) = exp((ρ/E[X])(X(z) − 1)) the images arriving in one
    service time; it is finite for 1 < z < z_0, the root of A(z) = z. With θ = log z, h(θ) = θ − log A(e^θ)
    is concave with h(0) = 0 and h'(0) = 1 − ρ > 0: z_0 = e^{θ_0} by bisection, then z = z_0^0.9 (capped at
    e^5) as for :func:`states_needed`.
    """
    k = np.arange(1, images.size + 1)
    request_load = rho / float(np.dot(k, images))

    def log_a(theta: Array) -> Array:
        return request_load * (np.exp(np.multiply.outer(theta, k)) @ images - 1)

    lo, hi = np.zeros(rho.size), np.ones(rho.size)
    for _ in range(60):  # grow hi until h(hi) < 0
        grow = hi - log_a(hi) >= 0
        if not grow.any():
            break
        hi = np.where(grow, 2 * hi, hi)
    for _ in range(60):
        mid = (lo + hi) / 2
        up = mid - log_a(mid) > 0
        lo, hi = np.where(up, mid, lo), np.where(up, hi, mid)
    theta = np.minimum(_CHERNOFF_FRACTION * lo, _CHERNOFF_MAX_LOG_Z)
    gap = theta - log_a(theta)  # log z − log A(z) > 0
    log_pgf = np.log1p(-rho) + np.log(np.expm1(theta)) + log_a(theta) - theta - np.log(-np.expm1(-gap))
    n = np.ceil((log_pgf - math.log(TAIL_TOL)) / theta) + 1
    return np.clip(np.where(np.isfinite(n), n, _MAX_STATES), 1, _MAX_STATES).astype(np.int64)


class _BulkLaw(_ChainLaw):
    """Queue left at batch starts Y of M/D^(1,b)/1 queues (one chain per load ρ ∈ (0, 1))."""

    def __init__(self, rho: Array, b: int) -> None:
        self.b = b
        self.mu = b * rho
        roots = inner_roots(rho, b)
        empty = empty_after_batch(rho, b, roots)
        self.p_idle = empty / (self.mu + empty)
        self.terms = _poisson_terms(b)
        self._log_factorial = gammaln(np.arange(self.terms + 2) + 1)
        sizes = np.maximum(states_needed(rho, b, roots, in_system=False), _MIN_FFT)
        self.xs_max = -(-sizes // b) + 2
        self.excess_full = self._excess(self.mu, np.ones(rho.size))
        self.tables: list[tuple[_Padded, _Padded]] = []
        for members in self._place(sizes):
            length = next_fast_len(int(sizes[members].max()), real=True)
            pmf = self._queue_pmf(self.mu[members], b, roots[members], length)
            self.tables.append((_Padded(pmf, "zero"), _Padded(np.cumsum(pmf, axis=1), "last")))

    @staticmethod
    def _queue_pmf(mu: Array, b: int, roots: np.ndarray, length: int) -> Array:
        """P(Y = y), y < length, by a real inverse FFT of E[z^Y] on the unit circle.

        z − 1, z^b − 1 and e^{μ(z−1)} − 1 are formed from real expm1/sin/cos (numpy's complex expm1
        and division are several times slower), accurate near z = 1 where the ratio is 0/0.
        """
        theta = -2 * np.pi * np.arange(1, length // 2 + 1) / length
        step = -2 * np.sin(theta / 2) ** 2 + 1j * np.sin(theta)  # z − 1
        power = -2 * np.sin(b * theta / 2) ** 2 + 1j * np.sin(b * theta)  # z^b − 1
        re, im = mu[:, None] * step.real[None, :], mu[:, None] * step.imag[None, :]
        grow = np.expm1(re)
        arrival = grow * np.cos(im) - 2 * np.sin(im / 2) ** 2 + 1j * (1 + grow) * np.sin(im)  # e^{μ(z−1)} − 1
        denom = power[None, :] - arrival
        values = ((b - mu)[:, None] * step[None, :]) * denom.conj() / (denom.real**2 + denom.imag**2)
        z = np.exp(1j * theta)
        scale = 1 / (1 - roots)
        for r in range(roots.shape[1]):
            values *= (z[None, :] - roots[:, r, None]) * scale[:, r, None]
        values = np.concatenate([np.ones((mu.size, 1)), values], axis=1)  # E[z^Y] = 1 at z = 1
        return np.clip(irfft(values, n=length, axis=1), 0.0, None)

    def _excess(self, mu: Array, span: Array) -> Array:
        """R_n(T) = E[(Poisson(μT) − n − 1)^+]/μ for n < terms, shape (len(mu), terms)."""
        mean = (mu * span)[:, None]
        i = np.arange(self.terms + 2)
        pmf = np.exp(xlogy(i, mean) - mean - self._log_factorial)
        at_least = np.cumsum(pmf[:, ::-1], axis=1)[:, ::-1]  # P(N ≥ i)
        excess = np.cumsum(at_least[:, ::-1], axis=1)[:, ::-1]  # Σ_{i' ≥ i} P(N ≥ i')
        return excess[:, 2:] / mu[:, None]

    def _class_cdf(self, k: int, chain: np.ndarray, rows: np.ndarray, xs: Array) -> Array:
        """The busy-server integral Φ of :func:`~genedge.optimizer.model._queueing.bulk_response_cdf`, plus the idle
        atom."""
        pmf, cum = self.tables[k]
        b = self.b
        n = np.arange(self.terms)
        whole = np.floor(xs)
        frac = xs - whole
        span = 1 - frac
        low = whole.astype(np.int64) * b - 1
        high = low + b
        full = self.excess_full[chain]
        part = self._excess(self.mu[chain], span) if frac.any() else full
        phi_low = span * cum(rows, low) - np.sum(part * pmf(rows, low[:, None] - n), axis=1)
        upper = frac * cum(rows, high) - np.sum((full - part) * pmf(rows, high[:, None] - n), axis=1)
        idle = self.p_idle[chain]
        return idle + (1 - idle) * (phi_low + upper)
