"""The canonical interaction schema shared by every box of recscope.

Interactions carry ``user_id``, ``item_id``, ``timestamp``, ``event`` and ``value``;
``surface``, ``position``, ``propensity`` and ``session_id`` are optional. Ids may be
integers or strings (kept as given, mapped to dense int32 indices by vocabularies).
Timestamps are UTC, microsecond precision. Positions are 0-based slots on a slate.
"""

from __future__ import annotations

import pyarrow as pa

TIMESTAMP_TYPE = pa.timestamp("us", tz="UTC")

REQUIRED_COLUMNS: tuple[str, ...] = ("user_id", "item_id", "timestamp", "event", "value")
OPTIONAL_COLUMNS: tuple[str, ...] = ("surface", "position", "propensity", "session_id")
CANONICAL_COLUMNS: tuple[str, ...] = REQUIRED_COLUMNS + OPTIONAL_COLUMNS

#: Arrow type each canonical column is stored as (ids keep their integer or string type).
COLUMN_TYPES: dict[str, pa.DataType] = {
    "timestamp": TIMESTAMP_TYPE,
    "event": pa.string(),
    "value": pa.float64(),
    "surface": pa.string(),
    "position": pa.int32(),
    "propensity": pa.float64(),
}

ID_COLUMNS: tuple[str, ...] = ("user_id", "item_id", "session_id")

#: Well-known event names. Other names are allowed; these have documented meaning.
EVENTS: dict[str, str] = {
    "rating": "explicit rating; value is the rating",
    "impression": "item shown to the user; value is 1, or in logged bandit feedback "
                  "(OBD, MIND loaders) the click outcome 0/1 of that impression",
    "click": "user opened the item (a closeup)",
    "save": "user saved the item to a board",
    "hide": "user hid the item (negative feedback)",
    "play": "implicit consumption; value is a count",
    "review": "user reviewed the item; value is the rating",
}

#: Columns of the optional item side table (keyed by ``item_id``).
ITEM_COLUMNS: tuple[str, ...] = ("item_id", "text", "topic", "creator_id")
#: Columns of the optional user side table (keyed by ``user_id``).
USER_COLUMNS: tuple[str, ...] = ("user_id",)
