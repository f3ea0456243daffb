"""Baseline purchases: baskets with weekly seasonality, 1-3 lines each, from member preferences."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from features.sim import config as C
from features.sim.config import SimConfig
from features.sim.members import DAY, Members

__all__ = ["Lines", "Purchases", "make_purchases", "mean_line_value", "sample_categories"]


@dataclass
class Lines:
    """Basket lines (one row each) with their basket's attributes broadcast."""

    member: np.ndarray  # int32
    basket: np.ndarray  # int64 basket number (unique across all sources of lines)
    ts: np.ndarray  # int64 s
    category: np.ndarray  # int8
    sku: np.ndarray  # int16 within category
    quantity: np.ndarray  # float32
    amount: np.ndarray  # float64 line total
    channel: np.ndarray  # int8 index into C.TXN_CHANNELS
    store: np.ndarray  # int16 global store number, -1 online


@dataclass
class Purchases:
    """Baseline baskets sorted by (member, ts) and their lines.

    ``key`` = member << ``bits`` | (ts - ``origin``) is sorted, so per-member window queries
    are two ``searchsorted`` calls; ``cum_amount[i]`` is the total of baskets ``< i``.
    """

    origin: int
    bits: int
    key: np.ndarray  # int64 sorted
    cum_amount: np.ndarray  # float64, len(key) + 1
    lines: Lines
    # Non-easy levels only: basket number and category bit mask of each key position (baskets
    # removed by harm or pull-forward leave ``key``; their lines are dropped at the end).
    basket_no: np.ndarray | None = None
    cat_bits: np.ndarray | None = None

    def member_key(self, member: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """Keys of (member, ts) pairs, for searchsorted against ``key``."""
        rel = np.clip(ts - self.origin, 0, (1 << self.bits) - 1)
        return (member.astype(np.int64) << self.bits) | rel

    def first_at_or_after(self, member: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """Time of each member's first basket at or after ``ts`` (int64 max when none)."""
        pos = np.searchsorted(self.key, self.member_key(member, ts), side="left")
        ok = pos < len(self.key)
        k = self.key[np.minimum(pos, len(self.key) - 1)]
        ok &= (k >> self.bits) == member
        return np.where(ok, (k & ((1 << self.bits) - 1)) + self.origin, np.iinfo(np.int64).max)

    def last_before(self, member: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """Time of each member's last basket before ``ts`` (-1 when none)."""
        pos = np.searchsorted(self.key, self.member_key(member, ts), side="left") - 1
        k = self.key[np.maximum(pos, 0)]
        ok = (pos >= 0) & ((k >> self.bits) == member)
        return np.where(ok, (k & ((1 << self.bits) - 1)) + self.origin, -1)

    def first_pos(self, member: np.ndarray, start: np.ndarray, stop: np.ndarray) -> np.ndarray:
        """Key position of each member's first basket in [start, stop) (-1 when none)."""
        pos = np.searchsorted(self.key, self.member_key(member, start), side="left")
        end = np.searchsorted(self.key, self.member_key(member, stop), side="left")
        return np.where(pos < end, pos, -1)

    def totals(self, pos: np.ndarray) -> np.ndarray:
        """Basket totals at key positions."""
        return self.cum_amount[pos + 1] - self.cum_amount[pos]

    def without(self, pos: np.ndarray) -> Purchases:
        """The same purchases without the baskets at key positions ``pos``."""
        keep = np.ones(len(self.key), dtype=bool)
        keep[pos] = False
        amounts = np.diff(self.cum_amount)[keep]
        cum = np.zeros(len(amounts) + 1)
        np.cumsum(amounts, out=cum[1:])
        return Purchases(
            origin=self.origin,
            bits=self.bits,
            key=self.key[keep],
            cum_amount=cum,
            lines=self.lines,
            basket_no=None if self.basket_no is None else self.basket_no[keep],
            cat_bits=None if self.cat_bits is None else self.cat_bits[keep],
        )

    def window(self, member: np.ndarray, start: np.ndarray, stop: np.ndarray) -> tuple:
        """Number and total amount of each member's baskets in [start, stop)."""
        a = np.searchsorted(self.key, self.member_key(member, start), side="left")
        b = np.searchsorted(self.key, self.member_key(member, stop), side="left")
        return b - a, self.cum_amount[b] - self.cum_amount[a]


def mean_line_value(m: Members) -> np.ndarray:
    """Expected amount of one basket line of each member (float32)."""
    mean_qty = float(np.dot(np.arange(1, 4), C.QUANTITY_P))
    return (m.pref @ C.UNIT_PRICE.astype(np.float32)) * m.spend_scale * np.float32(mean_qty)


def sample_categories(
    rng: np.random.Generator, pref: np.ndarray, member: np.ndarray, chunk: int
) -> np.ndarray:
    """One category per row, drawn from the row's member preferences (inverse CDF, chunked)."""
    out = np.empty(len(member), dtype=np.int8)
    cum = np.cumsum(pref, axis=1, dtype=np.float32)
    cum /= cum[:, -1:]
    last = pref.shape[1] - 1
    for a in range(0, len(member), chunk):
        mm = member[a : a + chunk]
        u = rng.random(len(mm), dtype=np.float32)
        out[a : a + chunk] = np.minimum((u[:, None] > cum[mm]).sum(axis=1), last)
    return out


def line_amounts(
    rng: np.random.Generator, category: np.ndarray, scale: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SKU, quantity and line total for lines of the given categories and member price scales."""
    n = len(category)
    sku = np.floor(C.SKUS_PER_CATEGORY * rng.random(n) ** 2).astype(np.int16)
    quantity = (rng.choice(3, size=n, p=C.QUANTITY_P) + 1).astype(np.float32)
    unit = C.UNIT_PRICE[category] * scale * np.exp(rng.normal(-0.18, 0.6, n))
    # Each SKU has its own price level around the category's.
    unit *= 0.75 + 0.5 * ((sku.astype(np.int64) * 7919) % 101) / 100
    amount = np.maximum(np.round(unit * quantity, 2), 0.2)
    return sku, quantity, amount


def basket_places(
    rng: np.random.Generator, m: Members, member: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Channel and store of baskets: mostly the home store, some other stores, some online."""
    n = len(member)
    channel = rng.choice(len(C.TXN_CHANNELS), size=n, p=C.TXN_CHANNEL_P).astype(np.int8)
    home = rng.random(n) < 0.85
    local = np.where(
        home, m.home_store[member], rng.integers(0, C.STORES_PER_REGION, n).astype(np.int16)
    )
    store = (m.region[member].astype(np.int16) * C.STORES_PER_REGION + local).astype(np.int16)
    return channel, np.where(channel == 0, store, -1).astype(np.int16)


def make_purchases(rng: np.random.Generator, m: Members, cfg: SimConfig, end_s: int) -> Purchases:
    """Baseline baskets of every member over the history (before any campaign effect)."""
    origin = end_s - cfg.history_days * DAY
    bits = int(cfg.history_days * DAY).bit_length()
    start = np.maximum(origin, m.joined_at)
    stop = np.minimum(end_s, m.lapse_at)
    span = np.maximum(stop - start, 0)

    # Poisson proposals, thinned by the day-of-week weight (weekly seasonality).
    accept = C.WEEKDAY_WEIGHT / C.WEEKDAY_WEIGHT.max()
    lam = m.rate * (span / (365 * DAY)) / accept.mean()
    count = rng.poisson(lam)
    member = np.repeat(np.arange(m.n, dtype=np.int64), count)
    t = start[member] + (rng.random(len(member)) * span[member]).astype(np.int64)
    day = t // DAY
    keep = rng.random(len(member)) < accept[(day + 3) % 7]  # epoch day 0 was a Thursday
    member, day = member[keep], day[keep]
    del t, keep
    hour = rng.choice(24, size=len(member), p=C.HOUR_WEIGHT / C.HOUR_WEIGHT.sum())
    ts = day * DAY + hour * 3600 + rng.integers(0, 3600, len(member))
    ts = np.clip(ts, start[member], stop[member] - 1)
    key = np.sort((member << bits) | (ts - origin))
    del member, ts, day, hour
    b_member = (key >> bits).astype(np.int32)
    b_ts = (key & ((1 << bits) - 1)) + origin
    nb = len(key)

    n_lines = rng.choice(3, size=nb, p=C.LINES_P) + 1
    basket = np.repeat(np.arange(nb, dtype=np.int64), n_lines)
    del n_lines
    l_member = b_member[basket]
    category = sample_categories(rng, m.pref, l_member, cfg.chunk_rows)
    sku, quantity, amount = line_amounts(rng, category, m.spend_scale[l_member])
    channel, store = basket_places(rng, m, b_member)
    cum = np.zeros(nb + 1)
    np.cumsum(np.bincount(basket, weights=amount, minlength=nb), out=cum[1:])
    lines = Lines(
        member=l_member,
        basket=basket,
        ts=b_ts[basket],
        category=category,
        sku=sku,
        quantity=quantity,
        amount=amount,
        channel=channel[basket],
        store=store[basket],
    )
    return Purchases(origin=origin, bits=bits, key=key, cum_amount=cum, lines=lines)
