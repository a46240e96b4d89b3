from recscope.data import Interactions, leave_last_n
from tests.conftest import make_log


def test_vocabularies_are_dense_and_shared_by_splits() -> None:
    data = Interactions.from_table(make_log())
    assert data.user_index.max() == data.n_users - 1
    split = leave_last_n(data, 1)
    assert split.test.users == data.users and split.train.items == data.items
