"""Valid supports of one layer of the combinatorial search, one per class of row permutations.

A layer's support is a 0/1 matrix ``rows × cols`` (rows = the layer's output units, cols = its input units, as in
a Linear weight) with ``nnz`` ones, no zero row (every unit keeps an incoming weight) and no zero column (every
input unit keeps an outgoing weight). Permuting the rows permutes the layer's output units, which, once the next
layer's columns follow, gives the same network: the search keeps one support per row permutation class.

**The canonical form** (the reference search's rule): rows carry non-increasing counts of ones, and rows of equal
count come in non-increasing binary order (the first column is the most significant bit); equal rows may repeat.
That order is total on rows, so each class of row permutations has exactly one canonical member: the canonical
supports are the multisets of ``rows`` nonempty column sets covering every column with ``nnz`` ones in all.

What it identifies and what it does not: it breaks the permutation symmetry of each layer's *rows*,
independently per layer. Every network up to hidden-unit permutation keeps a representative (sort layer 1's rows,
then layer 2's, ...; each sort only moves the next layer's columns). Networks whose layer has two identical rows
can keep more than one representative (those units could swap their outgoing columns in the next layer); column
permutations on their own are not a symmetry and stay distinct, as do supports that differ only in which weights
happen to matter after training.

**Counting and indexing** never need the list: :func:`count_supports` counts by inclusion–exclusion over the
uncovered columns, and :func:`unrank_support` finds the support at an index from such counts.

**The order** is the reference's, so a support's index names the same support there: by the tuple of row counts
(ascending), then by the rows' column sets taken from the last row to the first, each compared in combination
order (``itertools.combinations`` of the column indices; for sets of one size that is descending binary value).

Pure Python, no torch (supports are row bit sets): a study is counted before torch is imported; the search
(:mod:`hfprune.study.sparse.search`) makes the tensors.
"""

from __future__ import annotations

from functools import lru_cache
from itertools import combinations
from math import comb
from typing import Iterator

from hfprune.errors import HfpruneError


def check_layer(rows: int, cols: int, nnz: int) -> None:
    """One clear error unless a ``rows × cols`` layer can hold a valid support with ``nnz`` ones."""
    for name, value in (("rows", rows), ("cols", cols), ("nnz", nnz)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise HfpruneError(f"support {name} must be a positive integer, got {value!r}")
    low, high = max(rows, cols), rows * cols
    if not low <= nnz <= high:
        raise HfpruneError(f"a {rows}×{cols} support without zero rows or columns holds {low}..{high} nonzeros, "
                           f"not nnz={nnz}; pick nnz in that range")


def row_counts(rows: int, cols: int, nnz: int) -> Iterator[tuple[int, ...]]:
    """Non-increasing per-row counts of ones (each 1..cols) summing to ``nnz``, in ascending lexicographic order."""

    def extend(prefix: tuple[int, ...], rows_left: int, nnz_left: int, cap: int) -> Iterator[tuple[int, ...]]:
        if rows_left == 0:
            yield prefix
            return
        low = -(-nnz_left // rows_left)  # the first of non-increasing counts is at least their mean
        high = min(cap, nnz_left - (rows_left - 1))  # leave one for each row below
        for count in range(low, high + 1):
            yield from extend(prefix + (count,), rows_left - 1, nnz_left - count, count)

    yield from extend((), rows, nnz, cols)


@lru_cache(maxsize=None)
def _row_choices(cols: int, count: int) -> tuple[int, ...]:
    """Every row with ``count`` ones as a bit set (bit j = column j), in combination order."""
    return tuple(sum(1 << column for column in chosen) for chosen in combinations(range(cols), count))


def _supports_with_counts(cols: int, counts: tuple[int, ...]) -> Iterator[tuple[int, ...]]:
    """Canonical supports with these row counts as tuples of row bit sets, in the reference's order.

    Rows are chosen from the last to the first (the last row varies slowest); a row of the same count as the
    row below it takes a choice at or before that row's (the binary rule); a branch stops as soon as the rows
    left cannot cover the columns still uncovered.
    """
    full = (1 << cols) - 1
    ones_above = [sum(counts[:i]) for i in range(len(counts))]
    chosen: list[int] = [0] * len(counts)

    def place(row: int, covered: int, bound: int | None) -> Iterator[tuple[int, ...]]:
        choices = _row_choices(cols, counts[row])
        for position in range(len(choices) if bound is None else bound + 1):
            now_covered = covered | choices[position]
            if row == 0:
                if now_covered == full:
                    chosen[0] = choices[position]
                    yield tuple(chosen)
                continue
            if cols - now_covered.bit_count() > ones_above[row]:
                continue
            chosen[row] = choices[position]
            yield from place(row - 1, now_covered, position if counts[row - 1] == counts[row] else None)

    yield from place(len(counts) - 1, 0, None)


def iter_supports(rows: int, cols: int, nnz: int) -> Iterator[tuple[int, ...]]:
    """The canonical valid supports, lazily, each as a tuple of ``rows`` row bit sets (bit j = column j)."""
    check_layer(rows, cols, nnz)
    for counts in row_counts(rows, cols, nnz):
        yield from _supports_with_counts(cols, counts)


@lru_cache(maxsize=256)
def support_rows(rows: int, cols: int, nnz: int) -> tuple[tuple[int, ...], ...]:
    """All canonical valid supports as row bit sets (cached: the phase-2 search indexes them)."""
    return tuple(iter_supports(rows, cols, nnz))


def _lex_at_most(chosen: tuple[int, ...], allowed: int, cols: int) -> int:
    """How many subsets of the ``allowed`` columns (a bit set), of ``len(chosen)`` columns, come at or before
    ``chosen`` in combination order (lexicographic order of sorted column tuples)."""
    size, below, prefix_ok = len(chosen), 0, True
    for position, column in enumerate(chosen):
        start = chosen[position - 1] + 1 if position else 0
        for smaller in range(start, column):  # same prefix, a smaller column here, anything allowed after it
            if allowed >> smaller & 1:
                after = (allowed >> (smaller + 1)).bit_count()
                below += comb(after, size - position - 1)
        if not allowed >> column & 1:
            prefix_ok = False
            break
    return below + (1 if prefix_ok else 0)


def _completions(cols: int, counts: tuple[int, ...], uncovered: int, bound: int | None) -> int:
    """How many ways rows ``0 .. len(counts)-1`` (these counts) can be filled canonically so that they cover the
    ``uncovered`` columns, the last row's equal-count run keeping combination positions ≤ ``bound``.

    Canonical rows are multisets per run of equal counts, so by inclusion–exclusion over the uncovered columns S
    that all rows avoid: Σ_S (-1)^|S| · Π_runs C(choices(S) + m - 1, m), a run of m rows with count k choosing
    among the k-subsets avoiding S (for the bounded run: those at positions ≤ bound).
    """
    if not counts:
        return 1 if uncovered == 0 else 0
    runs: list[tuple[int, int]] = []
    for count in counts:
        if runs and runs[-1][0] == count:
            runs[-1] = (count, runs[-1][1] + 1)
        else:
            runs.append((count, 1))
    last_count, last_rows = runs.pop()
    limit = None if bound is None else _row_combination(cols, last_count, bound)
    full = (1 << cols) - 1
    columns = [c for c in range(cols) if uncovered >> c & 1]
    total = 0
    for avoid_size in range(len(columns) + 1):
        others = 1
        for count, rows in runs:
            others *= comb(comb(cols - avoid_size, count) + rows - 1, rows)
        if not others:
            continue
        for avoided in combinations(columns, avoid_size):
            allowed = full & ~sum(1 << c for c in avoided)
            choices = (comb(allowed.bit_count(), last_count) if limit is None
                       else _lex_at_most(limit, allowed, cols))
            total += (-1) ** avoid_size * others * comb(choices + last_rows - 1, last_rows)
    return total


@lru_cache(maxsize=None)
def _row_combination(cols: int, count: int, position: int) -> tuple[int, ...]:
    """The ``position``-th ``count``-subset of the columns in combination order, as a sorted tuple."""
    chosen, start = [], 0
    for slot in range(count):
        for column in range(start, cols):
            block = comb(cols - column - 1, count - slot - 1)  # subsets taking this column next
            if position < block:
                chosen.append(column)
                start = column + 1
                break
            position -= block
    return tuple(chosen)


def unrank_support(rows: int, cols: int, nnz: int, index: int) -> tuple[int, ...]:
    """The ``index``-th canonical valid support as row bit sets, without listing those before it.

    Walks the reference's order: the row-count tuple first, then the rows from the last to the first, each row's
    combination position found by bisection over the number of completions at or below it.
    """
    check_layer(rows, cols, nnz)
    full = (1 << cols) - 1
    for counts in row_counts(rows, cols, nnz):
        size = _completions(cols, counts, full, None)
        if index >= size:
            index -= size
            continue
        chosen: list[int] = [0] * rows
        uncovered, bound = full, None
        for row in range(rows - 1, -1, -1):
            same_run = row + 1 < rows and counts[row + 1] == counts[row]
            high = bound if same_run else comb(cols, counts[row]) - 1
            low = 0
            while low < high:  # the first position whose completions at or below it exceed the index
                middle = (low + high) // 2
                if _completions(cols, counts[:row + 1], uncovered, middle) > index:
                    high = middle
                else:
                    low = middle + 1
            if low:
                index -= _completions(cols, counts[:row + 1], uncovered, low - 1)
            bits = sum(1 << c for c in _row_combination(cols, counts[row], low))
            chosen[row], uncovered, bound = bits, uncovered & ~bits, low
        return tuple(chosen)
    raise HfpruneError(f"support index out of range for a {rows}×{cols} layer with {nnz} nonzeros")


@lru_cache(maxsize=None)
def _row_multisets(columns: int, rows: int) -> tuple[int, ...]:
    """Per total n (0..rows·columns): how many multisets of ``rows`` nonempty subsets of ``columns`` columns hold
    n ones in all."""
    most = rows * columns
    # ways[r][n]: multisets of r subsets holding n ones, over the subset sizes seen so far
    ways = [[0] * (most + 1) for _ in range(rows + 1)]
    ways[0][0] = 1
    for size in range(1, columns + 1):
        kinds = comb(columns, size)
        grown = [[0] * (most + 1) for _ in range(rows + 1)]
        for r in range(rows + 1):
            for n in range(most + 1):
                if not ways[r][n]:
                    continue
                for taken in range(0, min(rows - r, (most - n) // size) + 1):
                    grown[r + taken][n + taken * size] += ways[r][n] * comb(kinds + taken - 1, taken)
        ways = grown
    return tuple(ways[rows])


@lru_cache(maxsize=None)
def count_supports(rows: int, cols: int, nnz: int) -> int:
    """How many canonical valid supports a ``rows × cols`` layer with ``nnz`` ones has, without building them.

    Canonical supports are multisets of ``rows`` nonempty column sets covering all ``cols`` columns; inclusion–
    exclusion over the columns left uncovered counts them.
    """
    check_layer(rows, cols, nnz)
    return sum((-1) ** missing * comb(cols, missing) * _row_multisets(cols - missing, rows)[nnz]
               for missing in range(cols + 1) if nnz <= rows * (cols - missing))
