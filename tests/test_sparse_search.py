"""The combinatorial search: canonical supports (hand-derived and brute-forced), phase-1/phase-2 candidates, masks."""

from __future__ import annotations

from itertools import combinations, product

import pytest
import torch

from hfprune.errors import HfpruneError
from hfprune.study.sparse.supports import support_rows, unrank_support
from hfprune.study.sparse.search import (SearchCandidate, count_phase1, count_phase2, count_supports,
                                         phase1_candidates, phase1_nonzeros, phase2_candidates, smallest_widths,
                                         valid_supports)


def as_lists(supports):
    return [t.int().tolist() for t in supports]


def binary(row):
    value = 0
    for bit in row:
        value = 2 * value + bit
    return value


def canonical(matrix):
    """The reference's canonical form, independently: rows by count, then by binary value, both non-increasing."""
    return tuple(sorted(matrix, key=lambda row: (sum(row), binary(row)), reverse=True))


def brute_force(rows, cols, nnz):
    """Every 0/1 matrix with nnz ones, no zero row and no zero column, canonicalised."""
    found = set()
    for bits in product((0, 1), repeat=rows * cols):
        matrix = tuple(tuple(bits[r * cols:(r + 1) * cols]) for r in range(rows))
        if sum(bits) != nnz or any(sum(row) == 0 for row in matrix):
            continue
        if any(all(row[c] == 0 for row in matrix) for c in range(cols)):
            continue
        found.add(canonical(matrix))
    return found


def reference_order_key(matrix):
    """The reference's enumeration order: row counts ascending, then each row's rank in combination order
    (itertools.combinations of its column indices), the last row most significant."""
    cols = len(matrix[0])

    def rank(row):
        ones = tuple(c for c in range(cols) if row[c])
        return list(combinations(range(cols), len(ones))).index(ones)

    return (tuple(sum(row) for row in matrix), tuple(rank(row) for row in reversed(matrix)))


def test_two_by_two_supports_by_hand():
    # n=2: only the diagonal (the anti-diagonal is its row swap); n=3: a full row above either single one;
    # n=4: all ones.
    assert as_lists(valid_supports(2, 2, 2)) == [[[1, 0], [0, 1]]]
    assert as_lists(valid_supports(2, 2, 3)) == [[[1, 1], [1, 0]], [[1, 1], [0, 1]]]
    assert as_lists(valid_supports(2, 2, 4)) == [[[1, 1], [1, 1]]]
    assert [count_supports(2, 2, n) for n in (2, 3, 4)] == [1, 2, 1]


def test_three_rows_two_columns_by_hand():
    # Rows are multisets of nonempty subsets of {0, 1} covering both columns.
    # n=3, three singletons: {0,0,1}, {0,1,1} -> 2; n=4, {01} + two singletons {00,01,11} -> 3;
    # n=5, two full rows + one singleton -> 2; n=6 -> 1.
    assert [count_supports(3, 2, n) for n in range(3, 7)] == [2, 3, 2, 1]
    # Equal counts: [1,0] (binary 2) before [0,1] (binary 1); order: the last row slowest.
    assert as_lists(valid_supports(3, 2, 3)) == [[[1, 0], [1, 0], [0, 1]], [[1, 0], [0, 1], [0, 1]]]


def test_three_by_three_by_hand():
    # n=3: permutation matrices -> 1. n=4: counts (2,1,1): pair P and two singletons including the missing
    # column: 3 pairs x 3 -> 9. n=5: (3,1,1): C(4,2)=6 singleton multisets; (2,2,1): {P,P}+complement 3,
    # {P,Q} (3) x any singleton (3) = 9 -> 18. n=6: (3,2,1) 3x3=9, (2,2,2) C(5,3)-3=7 -> 16.
    # n=7: (3,3,1) 3, (3,2,2) 6 -> 9. n=8: (3,3,2) -> 3. n=9 -> 1.
    assert [count_supports(3, 3, n) for n in range(3, 10)] == [1, 9, 18, 16, 9, 3, 1]
    # The first n=4 support: last two rows the first singleton [1,0,0], the top row must cover columns 1, 2.
    assert as_lists(valid_supports(3, 3, 4))[0] == [[0, 1, 1], [1, 0, 0], [1, 0, 0]]
    assert as_lists(valid_supports(3, 3, 3)) == [[[1, 0, 0], [0, 1, 0], [0, 0, 1]]]


@pytest.mark.parametrize("rows,cols", [(2, 2), (3, 2), (2, 3), (3, 3), (1, 3), (3, 1), (3, 4), (4, 3)])
def test_supports_match_brute_force_and_reference_order(rows, cols):
    for nnz in range(max(rows, cols), rows * cols + 1):
        found = [tuple(map(tuple, m)) for m in as_lists(valid_supports(rows, cols, nnz))]
        assert len(found) == len(set(found)), "no support twice"
        assert set(found) == brute_force(rows, cols, nnz)
        assert found == sorted(found, key=reference_order_key)
        assert count_supports(rows, cols, nnz) == len(found)
        for matrix in found:
            assert sum(map(sum, matrix)) == nnz


def test_count_supports_closed_cases_and_larger_layers():
    assert count_supports(5, 5, 25) == 1  # all ones
    assert count_supports(6, 6, 6) == 1  # one permutation class
    assert count_supports(4, 1, 4) == 1  # one column, every row keeps it
    # 4x4 by enumeration (also exercises the search's pruning against the formula)
    assert [count_supports(4, 4, n) for n in range(4, 17)] == [len(valid_supports(4, 4, n)) for n in range(4, 17)]


def test_unranking_matches_the_enumeration():
    for rows, cols in [(2, 2), (3, 2), (2, 3), (3, 3), (3, 4), (4, 3), (4, 4), (1, 3), (3, 1)]:
        for nnz in range(max(rows, cols), rows * cols + 1):
            listed = support_rows(rows, cols, nnz)
            assert [unrank_support(rows, cols, nnz, i) for i in range(len(listed))] == list(listed)
    listed = support_rows(5, 5, 12)
    assert [unrank_support(5, 5, 12, i) for i in range(0, len(listed), 1009)] == list(listed[::1009])


def test_wide_candidates_are_masked_by_unranking():
    # (8,8,8) has ~1e31 phase-2 candidates: a sampled few still get exact masks
    found = list(phase2_candidates((8, 8, 8), budgets=[100], per_budget_limit=2, seed=3))
    assert len(found) == 2 == count_phase2((8, 8, 8), budgets=[100], per_budget_limit=2)
    for candidate in found:
        masks = candidate.masks(8)
        assert sum(int(m.sum()) for n, m in masks.items() if n.endswith("weight")) == candidate.nonzeros == 100
        for i in range(3):
            block = masks[f"layers.{i}.weight"].int().tolist()
            assert all(any(row) for row in block) and all(any(col) for col in zip(*block))
            assert tuple(map(tuple, block)) == canonical(tuple(map(tuple, block)))


def test_bad_support_requests_name_the_field():
    with pytest.raises(HfpruneError, match="nnz=5"):
        valid_supports(2, 2, 5)
    with pytest.raises(HfpruneError, match="nnz=2"):
        count_supports(3, 2, 2)
    with pytest.raises(HfpruneError, match="rows"):
        valid_supports(0, 2, 2)


def test_phase1_ranges_one_to_two():
    found = list(phase1_candidates(range(1, 3)))
    assert count_phase1(range(1, 3)) == 8
    # 2·d1 + d1·d2 + d2·d3 + d3, d1 slowest: (1,1,1) 2+1+1+1=5, (1,1,2) 2+1+2+2=7, (1,2,1) 2+2+2+1=7,
    # (1,2,2) 2+2+4+2=10, (2,1,1) 4+2+1+1=8, (2,1,2) 4+2+2+2=10, (2,2,1) 4+4+2+1=11, (2,2,2) 4+4+4+2=14
    assert [c.widths for c in found] == list(product((1, 2), repeat=3))
    assert [c.nonzeros for c in found] == [5, 7, 7, 10, 8, 10, 11, 14]
    assert [c.mask_id for c in found][:2] == ["w1-1-1", "w1-1-2"]
    assert all(c.phase == 1 and c.layers is None for c in found)
    assert phase1_nonzeros((16, 16, 16)) == 2 * 16 + 16 * 16 + 16 * 16 + 16
    assert [c.widths for c in phase1_candidates([[1], [2, 3], [4]])] == [(1, 2, 4), (1, 3, 4)]


def test_phase1_masks_keep_exactly_the_dense_blocks():
    candidate = SearchCandidate(1, (2, 1, 3))
    masks = candidate.masks(4)
    assert sorted(masks) == [f"layers.{i}.{kind}" for i in range(4) for kind in ("bias", "weight")]
    shapes = {"layers.0.weight": (4, 2), "layers.1.weight": (4, 4), "layers.2.weight": (4, 4),
              "layers.3.weight": (1, 4)}
    blocks = {"layers.0.weight": (2, 2), "layers.1.weight": (1, 2), "layers.2.weight": (3, 1),
              "layers.3.weight": (1, 3)}
    for name, shape in shapes.items():
        expected = torch.zeros(shape, dtype=torch.bool)
        expected[:blocks[name][0], :blocks[name][1]] = True
        assert torch.equal(masks[name], expected)
    assert masks["layers.1.bias"].tolist() == [True, False, False, False]
    assert masks["layers.3.bias"].tolist() == [True]
    assert sum(int(m.sum()) for n, m in masks.items() if n.endswith("weight")) == candidate.nonzeros == 4 + 2 + 3 + 3


def test_phase2_masks_place_the_supports():
    candidate = SearchCandidate.from_mask_id("w3-3-3:n4-6-5:s0-11-3")
    assert candidate.layers == ((4, 0), (6, 11), (5, 3)) and candidate.nonzeros == 4 + 6 + 5 + 3
    assert candidate.mask_id == "w3-3-3:n4-6-5:s0-11-3"
    masks = candidate.masks({"layers.0.weight": (5, 2), "layers.1.weight": (5, 5), "layers.2.weight": (5, 5),
                             "layers.3.weight": (1, 5)})
    assert torch.equal(masks["layers.0.weight"][:3, :2], valid_supports(3, 2, 4)[0])
    assert torch.equal(masks["layers.1.weight"][:3, :3], valid_supports(3, 3, 6)[11])
    assert torch.equal(masks["layers.2.weight"][:3, :3], valid_supports(3, 3, 5)[3])
    assert masks["layers.3.weight"].tolist() == [[True, True, True, False, False]]
    for name in ("layers.1.weight", "layers.2.weight"):
        assert not masks[name][3:].any() and not masks[name][:, 3:].any()
    assert sum(int(m.sum()) for n, m in masks.items() if n.endswith("weight")) == 18


def test_masks_check_the_model():
    with pytest.raises(HfpruneError, match="widen the model"):
        SearchCandidate(1, (3, 3, 3)).masks(2)
    with pytest.raises(HfpruneError, match="no parameter layers.1.weight"):
        SearchCandidate(1, (1, 1, 1)).masks({"layers.0.weight": (4, 2)})
    with pytest.raises(HfpruneError, match="out of range"):
        SearchCandidate(2, (3, 3, 3), ((4, 3), (6, 0), (5, 0)))  # a 3x2 layer with 4 ones has 3 supports
    with pytest.raises(HfpruneError, match="not a search mask id"):
        SearchCandidate.from_mask_id("3-3-3")


def test_masks_from_a_module():
    model = torch.nn.Module()
    model.layers = torch.nn.ModuleList([torch.nn.Linear(2, 4), torch.nn.Linear(4, 4), torch.nn.Linear(4, 4),
                                        torch.nn.Linear(4, 1)])
    masks = SearchCandidate(1, (1, 2, 3)).masks(model)
    assert {name: tuple(m.shape) for name, m in masks.items()} == {
        name: tuple(p.shape) for name, p in model.named_parameters()}


def test_phase2_counts_and_order():
    # 3x2 layer: 2+3+2+1 = 8 supports; 3x3 layers: 57 each
    assert count_phase2((3, 3, 3)) == 8 * 57 * 57
    found = list(phase2_candidates((3, 3, 3), budgets=[13]))
    # 13 = n1+n2+n3+3: (4,3,3) 3·1·1 + (3,4,3) 2·9·1 + (3,3,4) 2·1·9 = 39
    assert len(found) == count_phase2((3, 3, 3), budgets=[13]) == 39
    assert all(c.nonzeros == 13 for c in found)
    assert [c.layers for c in found[:3]] == [((3, 0), (3, 0), (4, 0)), ((3, 0), (3, 0), (4, 1)),
                                             ((3, 0), (3, 0), (4, 2))]
    assert [c.layers for c in phase2_candidates((3, 3, 3), budgets=[12])] == [((3, 0), (3, 0), (3, 0)),
                                                                              ((3, 1), (3, 0), (3, 0))]
    assert len({c.mask_id for c in found}) == 39


def test_per_budget_limit_is_a_seeded_ordered_subset():
    widths = (3, 3, 3)
    full = [c.mask_id for c in phase2_candidates(widths, budgets=[13, 14, 12])]
    limited = [c.mask_id for c in phase2_candidates(widths, budgets=[13, 14, 12], per_budget_limit=5, seed=7)]
    assert limited == [c.mask_id for c in phase2_candidates(widths, budgets=[12, 13, 14], per_budget_limit=5,
                                                            seed=7)]
    assert set(limited) <= set(full)
    assert limited == [m for m in full if m in set(limited)], "the reference's order is kept"
    by_total = {}
    for mask_id in limited:
        total = SearchCandidate.from_mask_id(mask_id).nonzeros
        by_total[total] = by_total.get(total, 0) + 1
    assert by_total == {12: 2, 13: 5, 14: 5}  # budget 12 has only 2 candidates: both kept
    assert count_phase2(widths, budgets=[12, 13, 14], per_budget_limit=5) == 12
    # one budget's sample does not depend on the other budgets asked for
    alone = [c.mask_id for c in phase2_candidates(widths, budgets=[13], per_budget_limit=5, seed=7)]
    assert alone == [m for m in limited if SearchCandidate.from_mask_id(m).nonzeros == 13]
    other_seed = [c.mask_id for c in phase2_candidates(widths, budgets=[13], per_budget_limit=5, seed=8)]
    assert other_seed != alone


def test_smallest_widths():
    records = [
        {"widths": [2, 2, 2], "final_test_acc": 0.99, "nonzeros": 14},
        {"widths": [2, 2, 1], "final_test_acc": 0.90, "nonzeros": 11, "repeat": 0},
        {"widths": [2, 2, 1], "final_test_acc": 0.96, "nonzeros": 11, "repeat": 1},  # the best run counts
        {"widths": [1, 2, 2], "final_test_acc": 0.97, "nonzeros": 10},
        {"widths": [2, 1, 2], "final_test_acc": 0.97, "nonzeros": 10},  # same nonzeros, same units: lexicographic
        {"widths": [1, 1, 1], "final_test_acc": None, "nonzeros": 5},
        {"widths": [1, 1, 2], "final_test_acc": 0.99, "nonzeros": 7, "phase": 2},  # not phase 1
    ]
    assert smallest_widths(records, 0.95) == (1, 2, 2)
    assert smallest_widths(records, 0.98) == (2, 2, 2)
    assert smallest_widths(records, 0.995) is None
    # 11 nonzeros three ways: (3,1,1) 6+3+1+1 and (2,2,1) 4+4+2+1 in 5 units, (1,1,4) 2+1+4+4 in 6 units
    tie = [{"widths": list(w), "final_test_acc": 1.0, "nonzeros": phase1_nonzeros(w)}
           for w in ((1, 1, 4), (3, 1, 1), (2, 2, 1))]
    assert [r["nonzeros"] for r in tie] == [11, 11, 11]
    assert smallest_widths(tie[:2], 0.5) == (3, 1, 1)  # fewer units beat the lexicographically smaller widths
    assert smallest_widths(tie, 0.5) == (2, 2, 1)  # same units: lexicographic
