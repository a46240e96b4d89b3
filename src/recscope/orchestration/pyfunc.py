"""The MLflow pyfunc wrapper of a recscope model directory (see ``registry``).

``mlflow.pyfunc.load_model("models:/NAME@champion").predict(frame, params={"k": 10})``
takes a frame with a ``user_id`` column and returns ``user_id, item_id, score, rank``.
Kept in its own module because it imports MLflow at import time.
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc

from recscope.orchestration.model_dir import load_model_dir


class RecscopePyfunc(mlflow.pyfunc.PythonModel):
    """A recscope model directory (the ``model`` artifact) served through pyfunc."""

    def load_context(self, context: Any) -> None:
        self.md = load_model_dir(context.artifacts["model"])

    def predict(self, context: Any, model_input: Any, params: dict[str, Any] | None = None
                ) -> Any:
        from recscope.orchestration.registry import recommend_frame

        return recommend_frame(self.md, model_input, int((params or {}).get("k", 10)))
