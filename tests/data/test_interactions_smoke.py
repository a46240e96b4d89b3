from recscope.data import Interactions, leave_last_n
from tests.conftest import make_log


def test_vocabularies_are_dense_and_shared_by_splits() -> None:
    data = Interactions.from_table(make_log())
    assert data.user_index.max() == data.n_users - 1
    split = leave_last_n(data, 1)
    assert split.test.users == data.users and split.train.items == data.items


def test_relevance_from_pairs_merges_duplicates() -> None:
    import numpy as np

    from recscope.data import Relevance

    u, i = np.array([0, 0, 0, 1]), np.array([2, 2, 1, 0])
    binary = Relevance.from_pairs(u, i, 2, 3)
    assert binary.indices.tolist() == [1, 2, 0] and binary.grades is None
    graded = Relevance.from_pairs(u, i, 2, 3, grades=np.array([1.0, 3.0, 2.0, 1.0]))
    assert graded.indices.tolist() == [1, 2, 0] and graded.grades.tolist() == [2.0, 3.0, 1.0]
