"""The maximum drawdown as a monoid: a run of booked trades in close order, summarised so
that two runs, one after the other, combine into the run of both.

A run keeps its net PnL, the highest and lowest cumulative PnL it reaches (both counted
from 0, before its first trade) and its worst fall: the largest drop from a running
peak that starts at 0. For A then B, the peak B's trades are measured from is A's high
(or higher), so the fall across the seam is `A.high - (A.net + B.low)`. The empty run
is the identity, and a run's `fall` is the `max_drawdown` of the README's definition
(None without a trade). Everything is exact `Decimal` arithmetic on the values
PostgreSQL casts to `numeric`, as the SQL definition in `db.stats.raw` computes them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Run:
    n: int = 0
    net: Decimal = _ZERO
    high: Decimal = _ZERO
    low: Decimal = _ZERO
    fall: Decimal = _ZERO

    def then(self, later: Run) -> Run:
        """This run followed by `later`."""
        if not later.n:
            return self
        if not self.n:
            return later
        return Run(
            self.n + later.n,
            self.net + later.net,
            max(self.high, self.net + later.high),
            min(self.low, self.net + later.low),
            max(self.fall, later.fall, self.high - (self.net + later.low)),
        )

    @property
    def max_drawdown(self) -> Decimal | None:
        return self.fall if self.n else None

    @classmethod
    def of(cls, pnls: Iterable[Decimal]) -> Run:
        """The run of these PnLs, in the order given."""
        n, net, high, low, fall = 0, _ZERO, _ZERO, _ZERO, _ZERO
        for pnl in pnls:
            n += 1
            net += pnl
            if net > high:
                high = net
            elif net < low:
                low = net
            if high - net > fall:
                fall = high - net
        return cls(n, net, high, low, fall)

    @classmethod
    def of_columns(cls, row) -> Run:
        """The run kept in a row's booked_n, booked_net, booked_high, booked_low, booked_fall."""
        return cls(row.booked_n, row.booked_net, row.booked_high, row.booked_low, row.booked_fall)

    def columns(self) -> dict[str, object]:
        return {
            "booked_n": self.n,
            "booked_net": self.net,
            "booked_high": self.high,
            "booked_low": self.low,
            "booked_fall": self.fall,
        }


EMPTY = Run()


def chain(runs: Iterable[Run]) -> Run:
    """Runs one after the other."""
    total = EMPTY
    for run in runs:
        total = total.then(run)
    return total


def suffix_runs(
    opened: Sequence[datetime], pnls: Sequence[Decimal], day_start: datetime, day_end: datetime
) -> list[tuple[datetime, Run]]:
    """For the booked trades of one close day (in close order, with their opening times),
    the run of those opened at or after each threshold, as `(threshold, run)`.

    A trade opened within the day is above every threshold a query outside the day can
    ask for, so the day's own trades share one threshold, its start; every trade opened
    on another day brings its own opening time. The runs come from a segment tree over
    the close order, the trades switched on from the latest opening time down: each
    threshold costs O(log n), the day's own trades O(n) at once.
    """
    count = len(pnls)
    if not count:
        return []
    size = 1 << max(0, (count - 1).bit_length())
    tree = [EMPTY] * (2 * size)
    order = sorted(range(count), key=lambda i: opened[i], reverse=True)
    thresholds: list[tuple[datetime, Run]] = []
    position = 0
    while position < count:
        first = opened[order[position]]
        own_day = day_start <= first < day_end
        threshold = day_start if own_day else first
        batch = []
        while position < count:
            when = opened[order[position]]
            if (day_start <= when < day_end) != own_day or (not own_day and when != first):
                break
            batch.append(order[position])
            position += 1
        for index in batch:
            tree[size + index] = Run.of((pnls[index],))
        if len(batch) > 8:  # many at once: rebuild every node (O(n)) rather than each path
            for node in range(size - 1, 0, -1):
                tree[node] = tree[2 * node].then(tree[2 * node + 1])
        else:
            for index in batch:
                node = (size + index) // 2
                while node:
                    tree[node] = tree[2 * node].then(tree[2 * node + 1])
                    node //= 2
        thresholds.append((threshold, tree[1]))
    thresholds.reverse()  # earliest threshold first
    return thresholds
