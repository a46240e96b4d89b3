"""Real-data loaders: exact counts from each data set's documentation, mapping decisions,
format detection, and errors on malformed files."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recscope.data import Interactions
from recscope.data.loaders import (
    FORMATS,
    detect_format,
    load,
    load_coat,
    load_lastfm,
    load_mind,
    load_movielens,
    load_obd,
)
from recscope.errors import ConfigError, DataValidationError, OutputError
from tests.conftest import data_path, make_log


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def _ts(data: Interactions) -> pd.Series:
    return data.table.column("timestamp").to_pandas()


# ---------------------------------------------------------------------- MovieLens
@pytest.fixture(scope="module")
def ml100k() -> Interactions:
    return load_movielens(data_path("ml-100k"))


def test_movielens_100k_counts_and_schema(ml100k: Interactions) -> None:
    s = ml100k.summary()
    assert (s["n_interactions"], s["n_users"], s["n_items"]) == (100_000, 943, 1_682)
    assert (ml100k.n_users, ml100k.n_items) == (943, 1_682)
    assert s["events"] == {"rating": 100_000}
    assert set(np.unique(ml100k.column("value"))) == {1.0, 2.0, 3.0, 4.0, 5.0}
    # first line of u.data: 196 242 3 881250949
    first = ml100k.table.slice(0, 1).to_pylist()[0]
    assert (first["user_id"], first["item_id"], first["value"]) == (196, 242, 3.0)
    assert first["timestamp"] == datetime.fromtimestamp(881250949, UTC)
    assert s["time_range"] == ["1997-09-20T03:05:10+00:00", "1998-04-22T23:10:38+00:00"]


def test_movielens_100k_side_tables(ml100k: Interactions) -> None:
    items = ml100k.item_features.to_pandas().set_index("item_id")
    assert len(items) == 1_682
    assert items.loc[1, "text"] == "Toy Story (1995)"
    assert list(items.loc[1, "genres"]) == ["Animation", "Children's", "Comedy"]
    assert items.loc[1, "topic"] == "Animation"
    assert items.loc[2, "topic"] == "Action"  # GoldenEye: Action, Adventure, Thriller
    assert items["text"].notna().all() and items["topic"].notna().all()
    users = ml100k.user_features.to_pandas().set_index("user_id")
    assert len(users) == 943
    assert users.loc[1].tolist() == [24, "M", "technician", "85711"]


def test_movielens_file_path_and_auto_detection(ml100k: Interactions) -> None:
    assert detect_format(data_path("ml-100k")) == "movielens"
    assert detect_format(data_path("ml-100k", "u.data")) == "movielens"
    from_file = load(data_path("ml-100k", "u.data"))
    assert from_file.fingerprint() == ml100k.fingerprint()


def test_movielens_100k_own_split_files_share_vocabularies(ml100k: Interactions) -> None:
    base = load(data_path("ml-100k", "u1.base"))
    test = load(data_path("ml-100k", "u1.test"))
    assert (len(base), len(test)) == (80_000, 20_000)
    assert base.users == test.users == ml100k.users and base.items == test.items
    pairs = set(zip(base.user_index.tolist(), base.item_index.tolist(), strict=True))
    assert not pairs & set(zip(test.user_index.tolist(), test.item_index.tolist(),
                               strict=True))


def test_movielens_csv_family(tmp_path: Path) -> None:
    (tmp_path / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.5,964981247\n"
        "2,1,2.5,1445714835\n")
    (tmp_path / "movies.csv").write_text(
        'movieId,title,genres\n1,Toy Story (1995),Adventure|Animation|Children\n'
        '2,"Jumanji, The (1995)",Adventure|Children|Fantasy\n'
        "3,Grumpier Old Men (1995),(no genres listed)\n")
    assert detect_format(tmp_path) == "movielens"
    data = load(tmp_path)
    assert (len(data), data.n_users, data.n_items) == (3, 2, 3)  # movie 2 from movies.csv
    assert data.column("value").tolist() == [4.0, 4.5, 2.5]
    assert _ts(data).iloc[2] == pd.Timestamp(1445714835, unit="s", tz="UTC")
    items = data.item_features.to_pandas().set_index("item_id")
    assert items.loc[2, "text"] == "Jumanji, The (1995)"
    assert items.loc[1, "topic"] == "Adventure"
    assert items.loc[3, "topic"] == "(no genres listed)"
    assert load_movielens(tmp_path / "ratings.csv").fingerprint() == data.fingerprint()


def test_movielens_csv_missing_column_is_named(tmp_path: Path) -> None:
    (tmp_path / "ratings.csv").write_text("userId,movieId,timestamp\n1,1,964982703\n")
    with pytest.raises(DataValidationError) as err:
        load(tmp_path)
    assert err.value.column == "rating" and "ratings.csv" in str(err.value)


# ---------------------------------------------------------------------- Open Bandit
def test_obd_random_all() -> None:
    path = data_path("obd", "random", "all")
    data = load(path)
    raw = pd.read_csv(path / "all.csv", index_col=0)
    assert len(data) == 10_000 == len(raw)
    np.testing.assert_array_equal(data.column("propensity"), np.full(10_000, 1 / 80))
    np.testing.assert_array_equal(data.column("position"), raw["position"].to_numpy() - 1)
    assert set(np.unique(data.column("position"))) == {0, 1, 2}
    np.testing.assert_array_equal(data.column("value"), raw["click"].to_numpy())
    np.testing.assert_array_equal(data.column("item_id"), raw["item_id"].to_numpy())
    assert data.summary()["events"] == {"impression": 10_000}
    assert set(data.column("surface")) == {"all"} and set(data.column("policy")) == {"random"}
    assert data.n_items == 80 and data.item_features.num_rows == 80
    assert sum(c.startswith("affinity_") for c in data.table.column_names) == 80
    # the context id stands for the four user features, which the side table restores
    users = data.user_features.to_pandas().set_index("user_id")
    joined = users.loc[data.column("user_id")].reset_index(drop=True)
    feats = [f"user_feature_{k}" for k in range(4)]
    pd.testing.assert_frame_equal(joined[feats], raw[feats].reset_index(drop=True),
                                  check_dtype=False)
    assert _ts(data).iloc[0] == pd.Timestamp("2019-11-24 00:00:34.762830", tz="UTC")


def test_obd_bts_from_root_and_policy_propensities() -> None:
    data = load_obd(data_path("obd"), policy="bts", campaign="men")
    assert len(data) == 10_000 and data.n_items == 34
    p = data.column("propensity")
    assert (p > 0).all() and (p <= 1).all() and p.std() > 0
    assert set(data.column("policy")) == {"bts"} and set(data.column("surface")) == {"men"}
    assert detect_format(data_path("obd")) == "obd"
    assert detect_format(data_path("obd", "bts", "men", "men.csv")) == "obd"
    slim = load_obd(data_path("obd", "bts", "men"), affinities=False)
    assert not any(c.startswith("affinity_") for c in slim.table.column_names)


def test_obd_unknown_policy_or_campaign() -> None:
    with pytest.raises(ConfigError) as err:
        load_obd(data_path("obd"), policy="greedy")
    assert err.value.key == "policy" and "bts" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load(data_path("obd"), campaign="kids")
    assert err.value.key == "campaign"


def test_obd_rejects_zero_based_positions(tmp_path: Path) -> None:
    src = data_path("obd", "random", "men")
    raw = pd.read_csv(src / "men.csv", index_col=0).head(5)
    raw.loc[3, "position"] = 0
    raw.to_csv(tmp_path / "men.csv")
    with pytest.raises(DataValidationError) as err:
        load_obd(tmp_path / "men.csv")
    assert (err.value.column, err.value.row) == ("position", 3)


# ---------------------------------------------------------------------- Coat
def test_coat_train_and_test_counts() -> None:
    train = load_coat(data_path("coat"))
    test = load_coat(data_path("coat"), part="test")
    assert len(train) == 6_960 and len(test) == 4_640
    assert train.users == test.users and train.items == test.items
    assert (train.n_users, train.n_items) == (290, 300)
    assert set(np.unique(train.column("value"))) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert np.bincount(test.user_index).tolist() == [16] * 290  # 16 random items per user


def test_coat_matches_an_independent_triplet_conversion() -> None:
    """AutoDebias' (user, item, rating) conversion of the same matrices agrees row for row."""
    for part, name in (("train", "user.txt"), ("test", "random.txt")):
        data = load_coat(data_path("coat"), part=part)
        ours = np.c_[data.column("user_id"), data.column("item_id"), data.column("value")]
        theirs = np.loadtxt(data_path("coat", "autodebias_derived", name), delimiter=",")
        order = np.lexsort((theirs[:, 1], theirs[:, 0]))
        np.testing.assert_array_equal(ours, theirs[order])


def test_coat_propensities_and_features() -> None:
    data = load_coat(data_path("coat"))
    prop = np.loadtxt(data_path("coat", "propensities.ascii"))
    np.testing.assert_array_equal(data.column("propensity"),
                                  prop[data.column("user_id"), data.column("item_id")])
    users = data.user_features.to_pandas()
    assert users.columns.tolist() == ["user_id", "gender", "age", "location",
                                      "fashioninterest"]
    assert users.drop(columns="user_id").notna().all().all()
    items = data.item_features.to_pandas().set_index("item_id")
    assert items.loc[0, "topic"] == "bomber" and items.loc[0, "text"].startswith("men's bomber")
    assert set(items["gender"]) == {"men", "women"}


def test_coat_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_coat(data_path("coat"), part="validation")  # type: ignore[arg-type]
    np.savetxt(tmp_path / "train.ascii", np.ones((2, 3)))
    np.savetxt(tmp_path / "propensities.ascii", np.ones((3, 3)) / 2)
    with pytest.raises(DataValidationError, match=r"propensit.*\(3, 3\).*\(2, 3\)"):
        load_coat(tmp_path)


# ---------------------------------------------------------------------- Amazon
def test_amazon_musical_instruments() -> None:
    data = load(data_path("amazon-musical-instruments-5core"))
    s = data.summary()
    # SOURCES.md: 10261 reviews, 1429 reviewers, 900 items, 2004-09-18..2014-07-22
    assert (s["n_interactions"], s["n_users"], s["n_items"]) == (10_261, 1_429, 900)
    assert [t[:10] for t in s["time_range"]] == ["2004-09-18", "2014-07-22"]
    assert s["events"] == {"review": 10_261}
    text = data.table.column("review_text").to_pylist()
    assert text[0].startswith("Not much to write about here")
    assert data.column("helpful_votes")[1] == 13 and data.column("total_votes")[1] == 14
    items = data.item_features.to_pandas().set_index("item_id")
    ts = _ts(data)
    assert items.loc["1384719342", "first_review_time"] == ts[
        data.column("item_id") == "1384719342"].min()
    # 5-core: every user and item has at least 5 reviews
    assert np.bincount(data.user_index).min() >= 5 and np.bincount(data.item_index).min() >= 5


# ---------------------------------------------------------------------- MIND
def test_mind_impressions_and_history() -> None:
    path = data_path("mind-small-subset")
    data = load_mind(path)
    beh = pd.read_csv(path / "behaviors.tsv", sep="\t", header=None,
                      names=["imp", "user", "time", "history", "impressions"])
    tokens = beh["impressions"].str.split().explode()
    hist = beh.assign(h=beh["history"].str.split()).explode("h").dropna(subset=["h"])
    n_hist = len(hist[["user", "h"]].drop_duplicates())
    events = data.summary()["events"]
    assert events == {"impression": len(tokens), "click": n_hist}
    assert len(beh) == 5_000 and len(tokens) == 189_359
    imp = data.filter(events=["impression"])
    assert imp.column("value").sum() == (tokens.str[-1] == "1").sum() == 7_542
    assert np.unique(imp.column("impression_id")).size == 5_000
    # history clicks are stamped before every impression (a temporal cut keeps them first)
    assert data.filter(events=["click"]).timestamps.max() < imp.timestamps.min()
    items = data.item_features.to_pandas().set_index("item_id")
    assert len(items) == 2_000 and items["topic"].nunique() == 15
    assert items.loc["N16278", "topic"] == "sports"
    assert items.loc["N16278", "text"].startswith("Silver Spring Man Nabs Title")
    no_hist = load_mind(path, history=False)
    assert len(no_hist) == len(tokens)


def test_mind_unlabelled_impressions_are_rejected(tmp_path: Path) -> None:
    (tmp_path / "behaviors.tsv").write_text(
        "1\tU1\t11/12/2019 2:14:46 PM\tN1 N2\tN3-0 N4-1\n"
        "2\tU2\t11/12/2019 2:15:46 PM\t\tN3 N4\n")
    with pytest.raises(DataValidationError) as err:
        load_mind(tmp_path)
    assert (err.value.column, err.value.row) == ("impressions", 1)
    (tmp_path / "behaviors.tsv").write_text("1\tU1\tyesterday\tN1\tN3-0\n")
    with pytest.raises(DataValidationError, match="unparsable time"):
        load_mind(tmp_path)


# ---------------------------------------------------------------------- Last.fm
def test_lastfm_user_artists() -> None:
    data = load(data_path("lastfm", "music"))
    s = data.summary()
    # SOURCES.md: 92834 rows, 1892 users, 17632 artists
    assert (s["n_interactions"], s["n_users"], s["n_items"]) == (92_834, 1_892, 17_632)
    assert s["events"] == {"play": 92_834}
    assert data.column("value")[0] == 13_883 and (data.column("value") >= 1).all()
    assert (data.timestamps == 0).all()
    ent = data.item_features.to_pandas().set_index("item_id")
    assert ent.loc[2, "entity_id"] == 0 and len(ent) == 3_846


def test_lastfm_artist_names(tmp_path: Path) -> None:
    (tmp_path / "user_artists.dat").write_text("userID\tartistID\tweight\n2\t51\t13883\n")
    (tmp_path / "artists.dat").write_text("id\tname\turl\tpictureURL\n51\tDuran Duran\tu\tp\n")
    data = load_lastfm(tmp_path)
    assert data.item_features.to_pylist() == [{"item_id": 51, "text": "Duran Duran"}]


# ---------------------------------------------------------------------- dispatcher
def test_saved_directory_and_parquet_are_recognised(tmp_path: Path) -> None:
    data = Interactions.from_table(make_log(extra=True))
    data.save(tmp_path / "saved")
    assert detect_format(tmp_path / "saved") == "recscope"
    assert load(tmp_path / "saved").fingerprint() == data.fingerprint()
    doubled = Interactions.from_table(pa.concat_tables([make_log(), make_log()]))
    doubled.save(tmp_path / "doubled")
    assert len(load(tmp_path / "doubled", duplicates="drop")) == 600
    with pytest.raises(DataValidationError) as err:
        load(tmp_path / "doubled", duplicates="error")
    assert err.value.row == 600
    pq.write_table(make_log(), tmp_path / "log.parquet")
    assert detect_format(tmp_path / "log.parquet") == "parquet"
    assert len(load(tmp_path / "log.parquet")) == 600


def test_plain_csv_with_mapping(tmp_path: Path) -> None:
    (tmp_path / "log.csv").write_text("uid,iid,ts\na,x,1700000000\nb,y,1700000060\n")
    data = load(tmp_path / "log.csv", columns={"user_id": "uid", "item_id": "iid",
                                               "timestamp": "ts"}, event="click", value=1)
    assert data.summary()["events"] == {"click": 2}
    assert _ts(data).iloc[1] == pd.Timestamp(1700000060, unit="s", tz="UTC")


def test_unknown_folder_lists_formats(tmp_path: Path) -> None:
    (tmp_path / "notes.md").write_text("nothing here")
    with pytest.raises(DataValidationError) as err:
        load(tmp_path)
    for fmt in FORMATS[1:]:
        assert fmt in str(err.value)


def test_bad_format_and_options() -> None:
    with pytest.raises(ConfigError) as err:
        load(data_path("coat"), "netflix")
    assert err.value.key == "format"
    with pytest.raises(ConfigError) as err:
        load(data_path("coat"), part="test", campaign="men")
    assert err.value.key == "campaign" and "part" in str(err.value)
    with pytest.raises(ConfigError, match="csv/parquet"):
        load(data_path("coat"), columns={"user_id": "u"})


def test_duplicate_policy_reaches_loaders(tmp_path: Path) -> None:
    (tmp_path / "user_artists.dat").write_text(
        "userID\tartistID\tweight\n2\t51\t10\n2\t51\t10\n3\t51\t4\n")
    assert len(load_lastfm(tmp_path)) == 3
    assert len(load(tmp_path, duplicates="drop")) == 2
    with pytest.raises(DataValidationError) as err:
        load(tmp_path, duplicates="error")
    assert err.value.row == 1


def test_timestamps_are_utc_microseconds() -> None:
    data = load_movielens(data_path("ml-100k"))
    assert data.table.schema.field("timestamp").type == pa.timestamp("us", tz="UTC")
    assert data.table.column("timestamp")[0].as_py() == _utc(1997, 12, 4, 15, 55, 49)


def test_split_folders_are_not_amazon_and_round_trip(tmp_path: Path) -> None:
    """A ``Split.save`` folder holds JSON (split.json, meta.json, manifests) but is a split:
    it loads as its train part, and ``load_split`` gives the three parts on one vocabulary."""
    from recscope.data import random_holdout
    from recscope.data.loaders import load_split

    data = Interactions.from_table(make_log(extra=True))
    split = random_holdout(data, 0.25, seed=1)
    split.save(tmp_path / "s", info={"source": {"path": "log"}})
    assert detect_format(tmp_path / "s") == "split"
    assert detect_format(tmp_path / "s" / "test") == "recscope"
    assert load(tmp_path / "s").table.equals(split.train.table)
    back = load_split(tmp_path / "s")
    assert back.test.table.equals(split.test.table) and back.test.users is back.train.users
    with pytest.raises(OutputError, match=r"--force|not empty"):
        split.save(tmp_path / "s")  # an existing split is not replaced without force
    split.save(tmp_path / "s", force=True)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "meta.json").write_text("{}")
    with pytest.raises(DataValidationError, match="cannot tell"):
        detect_format(tmp_path / "other")  # recscope's own JSON names are not reviews
    with pytest.raises(DataValidationError, match="split part not found"):
        load_split(tmp_path / "other")


@pytest.mark.parametrize(("name", "content", "words"), [
    ("empty.csv", b"", ["empty"]),
    ("bad.parquet", b"xx", ["cannot read as Parquet"]),
    ("latin.csv", b"user_id,item_id,timestamp\nu,caf\xe9,1\n", ["UTF-8", "'item_id'"]),
    ("semi.csv", b"user_id;item_id;timestamp\nu;i;1\n", ["delimiter"]),
])
def test_unreadable_files_name_the_file(tmp_path: Path, name: str, content: bytes,
                                        words: list[str]) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataValidationError) as err:
        load(tmp_path / name)
    assert name in str(err.value) and all(w in str(err.value) for w in words)
    assert "\n" not in str(err.value)


def test_folder_named_like_a_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "log.parquet").mkdir()
    with pytest.raises(DataValidationError, match="is a folder; expected a file"):
        load(tmp_path / "log.parquet")
    with pytest.raises(DataValidationError, match="not found"):
        load(tmp_path / "nope.csv")
    (tmp_path / "train").mkdir()
    with pytest.raises(DataValidationError, match=r"did you mean .*train/"):
        load(tmp_path / "train.parquet")  # the old split layout's name suggests the folder
