"""An item-item model version as MLflow keeps it: its weights as an artifact, and a ``predict``
that turns histories into top items, for anyone who loads the version with ``mlflow.pyfunc``.

Serving does not need it (it reads the weights from the lake), but every registered version must
be a loadable model, whatever its family."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel
from scipy import sparse

TOP_N = 10


class ItemItemModel(PythonModel):
    """``predict``: a frame with a ``history`` column (lists of item ids) -> ``items`` (top ids)."""

    def load_context(self, context: Any) -> None:
        weights = pd.read_parquet(context.artifacts["similarity"])
        self.items = np.unique(np.concatenate([weights["item_id"], weights["similar_item_id"]]))
        self.position = {item: i for i, item in enumerate(self.items)}
        self.matrix = sparse.csr_matrix(
            (
                weights["weight"].to_numpy(np.float32),
                (weights["item_id"].map(self.position), weights["similar_item_id"].map(self.position)),
            ),
            shape=(len(self.items), len(self.items)),
        )

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        n = int((params or {}).get("n", TOP_N))
        out: list[list[str]] = []
        for history in model_input["history"]:
            known = sorted({self.position[i] for i in history if i in self.position})
            if not known:
                out.append([])
                continue
            scores = np.asarray(self.matrix[known].sum(axis=0)).ravel()
            scores[known] = -np.inf
            top = np.argsort(-scores, kind="stable")[:n]
            out.append([str(self.items[i]) for i in top if np.isfinite(scores[i]) and scores[i] != 0])
        return pd.DataFrame({"items": out})
