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

    def __init__(self, load: Array, service: Array, batch: Array | None, wait_units: Array | None = None) -> None:
        """``wait_units``: the waits (in units of S) the caller will ask the M/D/1 CDF about, if known: the
        chains then stop at the states those need instead of at the tail (a CDF at a short SLO needs a
        handful, the tail hundreds)."""
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
            law = _MD1Law(loads, _states_for(wait_units, sel)) if b is None else _BulkLaw(loads, b)
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
        self.p_idle = 1 - rho
        sizes = states_needed(rho, 1, np.zeros((rho.size, 0)), in_system=True)
        if max_states is not None:
            sizes = np.minimum(sizes, max_states)
        self.xs_max = sizes + 1
        arrivals = _poisson_pmf(rho, self._TERMS + 1)
        self.below_full = np.cumsum(arrivals[:, : self._TERMS], axis=1)  # P(A ≤ n) at the full mean ρ
        at_least = np.cumsum(arrivals[:, ::-1], axis=1)[:, ::-1]  # Ā_l = P(A ≥ l)
        self.tables: list[tuple[_Padded, _Padded, Array]] = []
        for members in self._place(sizes):
            width = int(sizes[members].max())
            p = self._chains(rho[members], at_least[members], width)
            # Σ_{j=1}^{m} p_j for m = 0..width.
            tail = np.concatenate([np.zeros((members.size, 1)), np.cumsum(p[:, 1:], axis=1)], axis=1)
            self.tables.append((_Padded(p, "zero"), _Padded(tail, "last"), p[:, 0]))

    @classmethod
    def _chains(cls, rho: Array, at_least: Array, width: int) -> Array:
        """p_0..p_width per chain by the level-crossing recursion of the departure-epoch chain,

        a_0 p_n = p_0 Ā_n + Σ_{l=1}^{n−1} Ā_{l+1} p_{n−l}   (n ≥ 1),

        one step for all chains at a time; every term is nonnegative. (scipy.signal.lfilter would
        run it per chain, but importing scipy.signal loads scipy.stats.)
        """
        taps = cls._TERMS - 1  # Ā_{l+1} for l = 1..47; beyond, Ā < 1e-61
        a0 = np.exp(-rho)
        p0 = 1 - rho
        # Coefficients in window order: the window holds p_{n−47} .. p_{n−1}.
        weights = (at_least[:, 2:] / a0[:, None])[:, ::-1]
        drive = p0[:, None] * at_least[:, 1:] / a0[:, None]  # p_0 Ā_n / a_0, n = 1..48
        buf = np.zeros((rho.size, taps + width + 1))  # p_{−47..0} read as 0: p_0 enters via drive
        for n in range(1, width + 1):
            value = np.einsum("ij,ij->i", buf[:, n : n + taps], weights)
            if n <= drive.shape[1]:
                value += drive[:, n - 1]
            buf[:, taps + n] = value
        p = buf[:, taps:]
        p[:, 0] = p0
        return p

    def _class_cdf(self, k: int, chain: np.ndarray, rows: np.ndarray, xs: Array) -> Array:
        """Franx's positive sum (see :func:`~genedge.optimizer.model._queueing.md1_wait_cdf`)."""
        p, tail, p0 = self.tables[k]
        terms = self._TERMS
        n = np.arange(terms)
        whole = np.floor(xs)
        frac = xs - whole
        kk = whole.astype(np.int64)
        if frac.any():
            below = np.cumsum(_poisson_pmf(self.rho[chain] * (1 - frac), terms), axis=1)
        else:  # whole multiples of t: the window is one full service time
            below = self.below_full[chain]
        # Terms j = k + 1 − n with P(A ≤ n) < 1 one by one; those with n ≥ terms (P(A ≤ n) = 1) summed.
        j = kk[:, None] + 1 - n[None, :]
        mixed = np.sum(np.where(n[None, :] <= kk[:, None], below * p(rows, j), 0.0), axis=1)
        plain = tail(rows, np.maximum(kk + 1 - terms, 0))
        empty = p0[rows] * below[np.arange(xs.size), np.minimum(kk, terms - 1)]
        return plain + mixed + empty


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
