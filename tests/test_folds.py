import pytest

from preprocessing.folds import assign_folds
from preprocessing.runner import StepError


def test_deterministic_and_seed_dependent():
    sizes = {f"g{i}": (i % 7) + 1 for i in range(40)}
    a = assign_folds(sizes, 5, seed=1)
    assert a == assign_folds(sizes, 5, seed=1)
    assert set(a.values()) == set(range(5))
    assert any(assign_folds(sizes, 5, seed=s) != a for s in range(2, 6))


def test_balanced_rows():
    sizes = {f"g{i}": (i % 7) + 1 for i in range(40)}
    load = [0] * 5
    for g, k in assign_folds(sizes, 5, seed=0).items():
        load[k] += sizes[g]
    assert max(load) - min(load) <= max(sizes.values())


def test_fewer_groups_than_folds_is_a_loud_error():
    with pytest.raises(StepError, match="only 3 groups"):
        assign_folds({"a": 1, "b": 2, "c": 3}, 5, seed=0)
