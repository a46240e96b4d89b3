"""Model registry with lineage, on MLflow's Model Registry.

A registered version is a pyfunc model (:class:`RecscopePyfunc`) wrapping a recscope model
directory, so ``mlflow.pyfunc.load_model("models:/NAME@champion")`` serves it: its
``predict`` takes a frame with a ``user_id`` column (and an optional ``k`` parameter) and
returns ``user_id, item_id, score, rank``. Inside recscope, :func:`load_registered` gives
the component and its id vocabularies back.

Aliases: every new version becomes ``challenger``. It becomes ``champion`` only when
there is no champion yet, or when its gate (:func:`make_gate`, a paired test of the
candidate against the current champion on the same test users) shows an improvement whose
lower interval end exceeds the margin. A refused promotion leaves the version registered
as challenger and says why.

Lineage, as version tags: the training data fingerprint, the model directory's content
hash, the config (``recscope.config``), the pipeline version, the validation/test metrics
and the gate; :func:`record_use` adds ``used_by.<what>`` tags when a later run (an
evaluation, a simulated launch, the server) uses the version.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recscope.errors import ConfigError, RecscopeError
from recscope.orchestration.model_dir import ModelDir, load_model_dir, model_fingerprint, read_info

GATE_KIND = "recscope.gate/1"
CHAMPION, CHALLENGER = "champion", "challenger"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def recommend_frame(md: ModelDir, frame: Any, k: int) -> Any:
    """Top-``k`` rows (``user_id, item_id, score, rank``) for the users of ``frame``."""
    import pandas as pd

    from recscope.data.vocab import Vocabulary

    if "user_id" not in getattr(frame, "columns", []):
        raise ConfigError("the input frame needs a user_id column", key="user_id")
    ext = pd.Series(frame["user_id"]).to_numpy()
    vocab = Vocabulary(md.user_ids, name="user_id")
    idx = vocab.index(ext.astype(md.user_ids.to_numpy(zero_copy_only=False).dtype),
                      missing="ignore")
    unknown = idx < 0
    idx = np.where(unknown, len(md.user_ids) + np.cumsum(unknown) - 1, idx).astype(np.int32)
    ranked = md.model.recommend(idx, k)
    items = md.item_ids.to_numpy(zero_copy_only=False)
    rows = []
    for r, user in enumerate(ext):
        for pos in range(ranked.items.shape[1]):
            item = ranked.items[r, pos]
            if item < 0:
                continue
            rows.append((user, items[item], float(ranked.scores[r, pos]), pos + 1))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "score", "rank"])


# ---------------------------------------------------------------------------- gate
@dataclass
class Gate:
    """A paired test of a candidate model against the champion (see :func:`make_gate`)."""

    metric: str
    test: str
    alpha: float
    margin: float
    estimate: float
    ci_low: float
    ci_high: float
    p_value: float
    n: int
    candidate: dict[str, Any]
    baseline: dict[str, Any]
    test_data_fingerprint: str

    @property
    def passed(self) -> bool:
        """Significant improvement beyond the margin: lower end above margin, p < alpha."""
        return (math.isfinite(self.ci_low) and self.ci_low > self.margin
                and self.p_value < self.alpha)

    def statement(self) -> str:
        """One line: the test, the margin, the numbers and the decision."""
        return (f"{self.test} test on {self.metric} against {self.baseline.get('label')}: "
                f"diff {self.estimate:+.4f} [{self.ci_low:+.4f}, {self.ci_high:+.4f}], "
                f"p = {self.p_value:.3g}, margin {self.margin:+.4f}, alpha {self.alpha}: "
                + ("significant improvement" if self.passed else "not a significant "
                   "improvement beyond the margin"))

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {"kind": GATE_KIND, **asdict(self), "passed": self.passed}


def read_gate(path: str | Path) -> Gate:
    """Read and check a gate file; errors name the file and the key."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError("gate file not found", file=str(p)) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"not a JSON gate file: {exc}", file=str(p)) from None
    if not isinstance(doc, dict) or doc.get("kind") != GATE_KIND:
        raise ConfigError(f"not a recscope gate (kind must be {GATE_KIND!r}; write one with "
                          "'recscope registry gate')", key="kind", file=str(p))
    fields = ("metric", "test", "alpha", "margin", "estimate", "ci_low", "ci_high",
              "p_value", "n", "candidate", "baseline", "test_data_fingerprint")
    for key in fields:
        if key not in doc:
            raise ConfigError("missing", key=key, file=str(p))
    for key in ("alpha", "margin", "estimate", "ci_low", "ci_high", "p_value"):
        if doc[key] is not None and not isinstance(doc[key], int | float):
            raise ConfigError(f"must be a number, got {doc[key]!r}", key=key, file=str(p))
    for key in ("candidate", "baseline"):
        if not isinstance(doc[key], dict):
            raise ConfigError("must be an object", key=key, file=str(p))
    nums = {k: math.nan if doc[k] is None else float(doc[k])
            for k in ("alpha", "margin", "estimate", "ci_low", "ci_high", "p_value")}
    return Gate(metric=str(doc["metric"]), test=str(doc["test"]), n=int(doc["n"] or 0),
                candidate=doc["candidate"], baseline=doc["baseline"],
                test_data_fingerprint=str(doc["test_data_fingerprint"]), **nums)


def _rankings_in(md: ModelDir, target: ModelDir, users_ext: Any, k: int) -> Any:
    """``md``'s top-k for external users, with users and items in ``target``'s indices."""
    from recscope.data.rankings import RankedLists
    from recscope.data.vocab import Vocabulary

    uidx = Vocabulary(md.user_ids, name="user_id").index(users_ext, missing="ignore")
    unknown = uidx < 0
    uidx = np.where(unknown, len(md.user_ids) + np.cumsum(unknown) - 1, uidx).astype(np.int32)
    ranked = md.model.recommend(uidx, k)
    own_items = md.item_ids.take(np.maximum(ranked.items, 0).ravel())
    mapped = Vocabulary(target.item_ids, name="item_id").index(own_items, missing="ignore")
    mapped = mapped.reshape(ranked.items.shape)
    mapped = np.where(ranked.items < 0, -1, mapped).astype(np.int32)
    tusers = Vocabulary(target.user_ids, name="user_id").index(users_ext).astype(np.int32)
    return RankedLists(tusers, mapped, ranked.scores)


def make_gate(candidate_dir: str | Path, test_data: Any, *, baseline_dir: str | Path,
              baseline: dict[str, Any], metric: str = "ndcg@10", margin: float = 0.0,
              alpha: float = 0.05, seed: int = 0) -> Gate:
    """Paired test of the candidate against the baseline (the champion) on ``test_data``
    (Interactions with external ids): both rank the same test users, relevance is the test
    pairs both models know, per-user metric differences are tested (paired t) with an
    interval (:func:`recscope.offline.compare`)."""
    from recscope.data.rankings import Relevance
    from recscope.data.vocab import Vocabulary
    from recscope.offline import compare, evaluate
    from recscope.offline.metrics import parse_metrics

    spec = parse_metrics([metric])[0]
    k = int(spec.k) if getattr(spec, "k", None) else 100
    cand = load_model_dir(candidate_dir)
    base = load_model_dir(baseline_dir)
    t_users = test_data.users.ids.take(test_data.user_index)
    t_items = test_data.items.ids.take(test_data.item_index)
    cu = Vocabulary(cand.user_ids, name="user_id").index(t_users, missing="ignore")
    ci = Vocabulary(cand.item_ids, name="item_id").index(t_items, missing="ignore")
    bu = Vocabulary(base.user_ids, name="user_id").index(t_users, missing="ignore")
    bi = Vocabulary(base.item_ids, name="item_id").index(t_items, missing="ignore")
    keep = (cu >= 0) & (ci >= 0) & (bu >= 0) & (bi >= 0)
    if not keep.any():
        raise ConfigError("no test pair is known to both models (another data set?)",
                          key="test_data")
    truth = Relevance.from_pairs(cu[keep], ci[keep], len(cand.user_ids), len(cand.item_ids))
    users_c = np.unique(cu[keep]).astype(np.int32)
    users_ext = cand.user_ids.take(users_c)
    ev = {"champion": evaluate(_rankings_in(base, cand, users_ext, k), truth, [metric],
                               seed=seed),
          "candidate": evaluate(_rankings_in(cand, cand, users_ext, k), truth, [metric],
                                seed=seed)}
    cmp = compare(ev, baseline="champion", seed=seed, n_boot=1000)
    t = cmp.get("candidate", metric)
    cand_info = read_info(candidate_dir)
    return Gate(metric=metric, test=f"paired {cmp.test}", alpha=alpha, margin=margin,
                estimate=float(t.estimate), ci_low=float(t.ci_low), ci_high=float(t.ci_high),
                p_value=float(t.p_value), n=int(t.n),
                candidate={"version": cand_info.get("version"),
                           "data_fingerprint": cand_info.get("data_fingerprint"),
                           "mean": ev["candidate"].mean(metric)},
                baseline={**baseline, "mean": ev["champion"].mean(metric)},
                test_data_fingerprint=test_data.fingerprint())


# ---------------------------------------------------------------------------- registry
def _client(uri: str) -> Any:
    import logging

    from mlflow.tracking import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.ERROR)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def check_name(name: str) -> str:
    """A registered model name: letters, digits, ``_ . -`` (what URIs can carry)."""
    if not _NAME.match(name):
        raise ConfigError(f"invalid model name {name!r} (letters, digits, _ . - only)",
                          key="--name")
    return name


def _store_missing(uri: str) -> bool:
    """A local SQLite store that does not exist yet holds no model (and must not be created
    by a read)."""
    return uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists()


def champion(uri: str, name: str) -> Any | None:
    """The champion version of ``name`` (None when there is none or no such model)."""
    from mlflow.exceptions import MlflowException

    if _store_missing(uri):
        return None
    client = _client(uri)
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def champion_fingerprint(uri: str, name: str) -> str | None:
    """The champion's model fingerprint (None without one). For a local SQLite store it reads
    MLflow's alias and tag tables directly (no MLflow import: a workflow re-run that does
    nothing stays fast), falling back to the MLflow client for other stores or schemas."""
    import sqlite3

    if _store_missing(uri):
        return None
    if uri.startswith("sqlite:///"):
        db = uri.removeprefix("sqlite:///")
        try:
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            try:
                row = con.execute(
                    "SELECT t.value FROM registered_model_aliases a JOIN model_version_tags t "
                    "ON t.name = a.name AND t.version = a.version WHERE a.name = ? AND "
                    "a.alias = ? AND t.key = 'recscope.model_fingerprint'",
                    (name, CHAMPION)).fetchone()
                has_alias = con.execute(
                    "SELECT 1 FROM registered_model_aliases WHERE name = ? AND alias = ?",
                    (name, CHAMPION)).fetchone()
            finally:
                con.close()
            if row is not None:
                return str(row[0])
            if has_alias is None:
                return None
        except sqlite3.Error:
            pass
    c = champion(uri, name)
    return None if c is None else str(dict(c.tags).get("recscope.model_fingerprint"))


@dataclass
class Registration:
    """What :func:`register` did."""

    name: str
    version: str
    aliases: list[str]
    promoted: bool
    reason: str


def register(model_dir: str | Path, name: str, *, uri: str, gate: Gate | None = None,
             gate_file: str | None = None, lineage: dict[str, Any] | None = None
             ) -> Registration:
    """Register ``model_dir`` as a new version of ``name`` (see the module docstring).

    Everything is checked before MLflow is touched; a failure after the version was created
    deletes it again, so no half-registered version stays behind.
    """


    check_name(name)
    md_path = Path(model_dir)
    info = read_info(md_path)
    current = champion(uri, name)
    if gate is not None:
        _check_gate(gate, info, current, gate_file)
    client = _client(uri)
    fp = model_fingerprint(md_path)
    tags = {"recscope.data_fingerprint": str(info.get("data_fingerprint")),
            "recscope.model_fingerprint": fp,
            "recscope.version": str(info.get("version")),
            "recscope.name": str(info.get("name")),
            "recscope.config": json.dumps(info.get("config", {}), sort_keys=True)[:5000],
            "recscope.model_dir": str(md_path.resolve())}
    for key, value in (info.get("validation") or {}).items():
        tags[_key(f"recscope.metric.validation.{key}")] = str(value)
    for key, value in (lineage or {}).items():
        tags[_key(f"recscope.lineage.{key}")] = str(value)
    if gate is not None:
        tags["recscope.gate"] = gate.statement()
        tags[_key(f"recscope.metric.test.{gate.metric}")] = str(gate.candidate.get("mean"))

    import os
    import warnings

    from recscope.tracking.runs import EXPERIMENT

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    warnings.filterwarnings("ignore", module="mlflow")

    exp = client.get_experiment_by_name(EXPERIMENT)
    exp_id = exp.experiment_id if exp is not None else client.create_experiment(EXPERIMENT)
    with _mlflow_uris(uri):
        version, promoted, reason = _create_version(client, exp_id, name, md_path, tags,
                                                    current, gate)
    aliases = [CHALLENGER] + ([CHAMPION] if promoted else [])
    return Registration(name, version, aliases, promoted, reason)


@contextlib.contextmanager
def _mlflow_uris(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API at ``uri`` for the block, then restore exactly what was
    set before (including "nothing set", so later defaults still follow the environment)."""
    import os

    import mlflow
    import mlflow.tracking._model_registry.utils as registry_utils
    import mlflow.tracking._tracking_service.utils as tracking_utils

    old_t = getattr(tracking_utils, "_tracking_uri", None)
    old_r = getattr(registry_utils, "_registry_uri", None)
    env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        tracking_utils._tracking_uri = old_t  # type: ignore[attr-defined]
        registry_utils._registry_uri = old_r  # type: ignore[attr-defined]
        for key, value in env.items():  # MLflow exports the URIs to the environment too
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _create_version(client: Any, exp_id: str, name: str, md_path: Path, tags: dict[str, str],
                    current: Any, gate: Gate | None) -> tuple[str, bool, str]:
    """Log the pyfunc model, create the version, set aliases; undo the version on failure."""
    import mlflow

    from recscope.orchestration.pyfunc import RecscopePyfunc

    created: Any = None
    try:
        with mlflow.start_run(experiment_id=exp_id, run_name=f"register-{name}") as run:
            mlflow.set_tags({"recscope.command": "registry register", **tags})
            logged = mlflow.pyfunc.log_model(name="model", python_model=RecscopePyfunc(),
                                             artifacts={"model": str(md_path.resolve())},
                                             pip_requirements=["recscope"],
                                             signature=_signature(md_path))
            run_id = run.info.run_id
        try:
            client.get_registered_model(name)
        except Exception:
            client.create_registered_model(name, tags={"recscope.kind": "recommender"})
        created = client.create_model_version(name, logged.model_uri, run_id=run_id,
                                              tags=tags, model_id=logged.model_id)
        version = str(created.version)
        _wait_ready(client, name, version)
        client.set_registered_model_alias(name, CHALLENGER, version)
        if current is None:
            promoted, reason = True, "first version: no champion to beat"
        elif gate is None:
            promoted, reason = False, ("no gate given: registered as challenger; promote "
                                       "with a gate that shows a significant improvement")
        else:
            promoted, reason = gate.passed, gate.statement()
        if promoted:
            client.set_registered_model_alias(name, CHAMPION, version)
            client.set_model_version_tag(name, version, "recscope.promoted",
                                         time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        client.set_model_version_tag(name, version, "recscope.decision", reason)
    except BaseException:
        if created is not None:
            with contextlib.suppress(Exception):  # the store itself failed: nothing to undo
                client.delete_model_version(name, created.version)
        raise
    return version, promoted, reason


def _signature(md_path: Path) -> Any:
    """Input ``user_id`` (the model's id type), output rows, parameter ``k`` (default 10)."""
    import pandas as pd
    import pyarrow.parquet as pq
    from mlflow.models import infer_signature

    ids = pq.read_table(md_path / "users.parquet").column("user_id").slice(0, 2).to_pylist()
    out = pd.DataFrame({"user_id": ids, "item_id": ids, "score": [0.0] * len(ids),
                        "rank": [1] * len(ids)})
    return infer_signature(pd.DataFrame({"user_id": ids}), out, params={"k": 10})


def _key(text: str) -> str:
    """MLflow tag names allow alphanumerics and ``_ - . : /`` and space; ``@`` becomes ``_``."""
    return "".join(c if c.isalnum() or c in "_-.:/ " else "_" for c in text)


def _wait_ready(client: Any, name: str, version: str, timeout: float = 60.0) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        mv = client.get_model_version(name, version)
        if mv.status == "READY":
            return
        time.sleep(0.2)
    raise RecscopeError(f"model version {name}/{version} did not become ready")


def _check_gate(gate: Gate, info: dict[str, Any], current: Any, file: str | None) -> None:
    """The gate must be about this model and about the current champion."""
    want = info.get("data_fingerprint")
    got = gate.candidate.get("data_fingerprint")
    if got != want:
        raise ConfigError(f"the gate was computed for a model trained on data {got}, but the "
                          f"model directory was trained on {want}",
                          key="candidate.data_fingerprint", file=file)
    if gate.candidate.get("version") != info.get("version"):
        raise ConfigError(f"the gate is about model version {gate.candidate.get('version')}, "
                          f"not {info.get('version')}", key="candidate.version", file=file)
    if current is not None:
        champ = dict(current.tags).get("recscope.model_fingerprint")
        if gate.baseline.get("model_fingerprint") != champ:
            raise ConfigError(f"the gate compares against {gate.baseline.get('label')}, which "
                              f"is not the current champion (version {current.version})",
                              key="baseline.model_fingerprint", file=file)


def promote(uri: str, name: str, version: str, *, gate: Gate | None = None,
            gate_file: str | None = None, force: bool = False) -> Registration:
    """Move the ``champion`` alias to ``version`` when its gate passes (or ``force``)."""
    check_name(name)
    if _store_missing(uri):
        raise ConfigError(f"no registered model {name!r}: the store {uri} is empty",
                          key="name")
    client = _client(uri)
    try:
        mv = client.get_model_version(name, version)
    except Exception:
        raise ConfigError(f"no version {version} of model {name!r}", key="version") from None
    tags = dict(mv.tags)
    current = champion(uri, name)
    if current is not None and str(current.version) == str(version):
        return Registration(name, str(version), [CHAMPION], True, "already the champion")
    if gate is None and not force and current is not None:
        raise ConfigError("promoting over a champion needs --gate (or --force)", key="--gate")
    if gate is not None:
        _check_gate(gate, {"data_fingerprint": tags.get("recscope.data_fingerprint"),
                           "version": tags.get("recscope.version")}, current, gate_file)
    if gate is not None and not gate.passed and not force:
        client.set_model_version_tag(name, version, "recscope.decision", gate.statement())
        return Registration(name, str(version), [], False, gate.statement())
    reason = "forced by the user" if force and (gate is None or not gate.passed) else (
        gate.statement() if gate is not None else "no champion yet")
    client.set_registered_model_alias(name, CHAMPION, version)
    client.set_model_version_tag(name, version, "recscope.decision", reason)
    if gate is not None:
        client.set_model_version_tag(name, version, "recscope.gate", gate.statement())
    return Registration(name, str(version), [CHAMPION], True, reason)


def record_use(uri: str, name: str, version: str, what: str, ref: str) -> None:
    """Lineage: a later run (``what``: evaluation, simulation, serve...) used the version."""
    client = _client(uri)
    client.set_model_version_tag(name, str(version), _key(f"recscope.used_by.{what}"), ref)


def versions(uri: str, name: str | None = None) -> list[dict[str, Any]]:
    """Every registered version (of ``name``, or of every model) with aliases and lineage."""
    from mlflow.exceptions import MlflowException

    if _store_missing(uri):
        if name:
            raise ConfigError(f"no registered model {name!r} (the store is empty)", key="name")
        return []
    client = _client(uri)
    try:
        models = ([client.get_registered_model(name)] if name
                  else client.search_registered_models())
    except MlflowException:
        raise ConfigError(f"no registered model {name!r}", key="name") from None
    out = []
    for m in models:
        aliases: dict[str, list[str]] = {}
        for alias, v in (m.aliases or {}).items():
            aliases.setdefault(str(v), []).append(alias)
        for mv in client.search_model_versions(f"name='{m.name}'"):
            t = dict(mv.tags)
            out.append({"name": m.name, "version": str(mv.version),
                        "aliases": sorted(aliases.get(str(mv.version), [])),
                        "run_id": mv.run_id, "created": mv.creation_timestamp,
                        "data_fingerprint": t.get("recscope.data_fingerprint"),
                        "model_fingerprint": t.get("recscope.model_fingerprint"),
                        "recscope_version": t.get("recscope.version"),
                        "decision": t.get("recscope.decision"),
                        "tags": t})
    return sorted(out, key=lambda r: (r["name"], int(r["version"])))


def parse_uri(uri: str) -> tuple[str, str]:
    """``models:/NAME@alias`` or ``models:/NAME/VERSION`` -> (name, alias-or-version)."""
    m = re.match(r"^models:/([^/@]+)(?:@([A-Za-z0-9_-]+)|/(\d+))$", uri)
    if not m:
        raise ConfigError(f"not a model URI {uri!r} (models:/NAME@alias or "
                          "models:/NAME/VERSION)", key="uri")
    return m.group(1), m.group(2) or m.group(3)


def resolve_version(uri: str, *, store: str | None = None) -> tuple[str, str]:
    """``models:/NAME@alias`` or ``models:/NAME/VERSION`` -> (name, version number)."""
    from mlflow.exceptions import MlflowException

    from recscope.tracking import tracking_uri

    name, ref = parse_uri(uri)
    if ref.isdigit():
        return name, ref
    tracking = tracking_uri(store)
    if _store_missing(tracking):
        raise ConfigError(f"cannot resolve {uri}: the store {tracking} is empty", key="uri")
    try:
        return name, str(_client(tracking).get_model_version_by_alias(name, ref).version)
    except MlflowException:
        raise ConfigError(f"cannot resolve {uri}: no version has alias {ref!r}",
                          key="uri") from None


def load_registered(uri: str, *, store: str | None = None, used_by: str | None = None
                    ) -> ModelDir:
    """Load a registered version (``models:/NAME@champion``) as a recscope model directory:
    the fitted component, its user and item id vocabularies and its ``train.json``.

    ``store``: the MLflow store (folder or URI; default as :func:`recscope.tracking.
    tracking_uri`). The version's model files are downloaded from the store's artifacts.
    ``info["registry"]`` says which version the URI resolved to; ``used_by`` (e.g.
    ``"serve"``) records that use in the version's lineage (:func:`record_use`).
    """
    import os

    import mlflow
    from mlflow.exceptions import MlflowException

    from recscope.tracking import tracking_uri

    parse_uri(uri)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    tracking = tracking_uri(store)
    try:
        with _mlflow_uris(tracking):
            model = mlflow.pyfunc.load_model(uri)
    except MlflowException as exc:
        raise ConfigError(f"cannot load {uri}: {' '.join(str(exc).split())[:300]}",
                          key="uri") from None
    md = model.unwrap_python_model().md
    name, version = resolve_version(uri, store=store)
    md.info = {**md.info, "registry": {"uri": uri, "name": name, "version": version}}
    if used_by:
        record_use(tracking, name, version, used_by,
                   time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    return md


__all__ = ["CHALLENGER", "CHAMPION", "Gate", "Registration", "champion", "load_registered",
           "make_gate", "parse_uri", "promote", "read_gate", "record_use", "register",
           "resolve_version",
           "versions"]
