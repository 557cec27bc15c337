"""The proxy judge's concept axis: a TF-IDF logistic regression per concept.

For each concept a logistic regression on TF-IDF features (word 1–2-grams, sublinear term
frequency, vocabulary fitted once on all training outputs) learns P(concept | text) from the
concept's training positives against negatives:

* ``"genre"``: the shared AxBench negatives of the concept's genre (as AxBench trains);
* ``"all"``: all shared negatives;
* ``"all+others"`` (default): all shared negatives plus the other concepts' positives, at most
  ``max_negatives`` of them (sampled with the seed). On Concept10 (2B L10) this separates the
  eval positives from the eval negatives best (see :func:`concept_auroc`).

Calibration (:mod:`unisteer.evaluate.calibration`): 5-fold out-of-fold probabilities of the
training positives (good) and negatives (bad) give the 0/1 threshold (Youden's J) and the 1/2
threshold (the lower quartile of the positives).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from unisteer.evaluate.judges.calibration import Thresholds, calibrate

NegativeSet = Literal["genre", "all", "all+others"]


@dataclass
class ConceptScorer:
    """P(concept | text) for one concept, and its calibrated thresholds."""

    concept_id: int
    concept: str
    vectorizer: Any
    classifier: Any
    thresholds: Thresholds | None

    def prob(self, texts: Sequence[str]) -> np.ndarray:
        features = self.vectorizer.transform(list(texts))
        return np.asarray(self.classifier.predict_proba(features)[:, 1], dtype=np.float64)


def fit_vectorizer(texts: Sequence[str]) -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    vectorizer.fit(list(texts))
    return vectorizer


def training_rows(
    train: pd.DataFrame,
    concept_id: int,
    negatives: NegativeSet = "all+others",
    max_negatives: int = 2000,
    seed: int = 0,
) -> tuple[list[str], np.ndarray]:
    """Texts and labels (1 = the concept) to train one concept's classifier on."""
    if negatives not in ("genre", "all", "all+others"):
        raise ValueError(f"negatives must be 'genre', 'all' or 'all+others', got {negatives!r}")
    pos = train[(train["concept_id"] == concept_id) & (train["category"] == "positive")]
    if pos.empty:
        raise ValueError(f"no training positives for concept {concept_id}")
    neg = train[(train["category"] == "negative") & (train["concept_id"] < 0)]
    if negatives == "genre" and "concept_genre" in train.columns:
        neg = neg[neg["concept_genre"] == pos["concept_genre"].iloc[0]]
    if negatives == "all+others":
        others = train[
            (train["category"] == "positive")
            & (train["concept_id"] >= 0)
            & (train["concept_id"] != concept_id)
        ]
        neg = pd.concat([neg, others])
    if len(neg) > max_negatives:
        neg = neg.sample(max_negatives, random_state=seed)
    if neg.empty:
        raise ValueError(f"no training negatives for concept {concept_id}")
    texts = [str(t) for t in pos["output"]] + [str(t) for t in neg["output"]]
    labels = np.r_[np.ones(len(pos)), np.zeros(len(neg))].astype(np.int64)
    return texts, labels


def _classifier() -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=10.0, max_iter=2000, class_weight="balanced")


def fit_concept_scorer(
    train: pd.DataFrame,
    concept_id: int,
    concept: str,
    vectorizer: Any,
    *,
    negatives: NegativeSet = "all+others",
    max_negatives: int = 2000,
    seed: int = 0,
    q_high: float = 0.25,
    calibrate_thresholds: bool = True,
) -> ConceptScorer:
    """Train (and calibrate) one concept's scorer on ``train`` (AxBench training rows)."""
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    texts, labels = training_rows(train, concept_id, negatives, max_negatives, seed)
    features = vectorizer.transform(texts)
    classifier = _classifier().fit(features, labels)
    thresholds = None
    if calibrate_thresholds:
        folds = min(5, int(labels.sum()), int((1 - labels).sum()))
        if folds >= 2:
            cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
            oof = cross_val_predict(_classifier(), features, labels, cv=cv, method="predict_proba")
            p = oof[:, 1]
        else:  # too few rows to hold any out: calibrate in-sample
            p = classifier.predict_proba(features)[:, 1]
        thresholds = calibrate(p[labels == 1], p[labels == 0], q_high)
    return ConceptScorer(concept_id, concept, vectorizer, classifier, thresholds)


def concept_auroc(
    path: Any,
    *,
    negatives: NegativeSet = "all+others",
    embeddings: str | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """AUROC of the proxy concept scorer on AxBench concept-detection eval data.

    Trains each concept's scorer on ``generate/train_data.parquet`` and scores the eval
    positives against the eval negatives of ``inference/latent_eval_data.parquet`` (hard
    negatives are left out, as in AxBench). ``embeddings="minilm"`` (or ``"auto"``) adds the
    AUROC of the cosine between each text and the concept description. Returns one row per
    concept and a last row ``concept_id == -1`` with the means.
    """
    from sklearn.metrics import roc_auc_score

    from unisteer.evaluate.axbench.concepts import read_concepts, read_eval_frame, read_train_frame

    train = read_train_frame(path)
    evaluation = read_eval_frame(path)
    concepts = read_concepts(path)
    vectorizer = fit_vectorizer([str(t) for t in train["output"]])
    embedder = None
    if embeddings is not None:
        from unisteer.evaluate.judges.embeddings import MiniLMEmbedder, load_embedder

        loaded = load_embedder(embeddings, [str(t) for t in train["output"]])
        embedder = loaded if isinstance(loaded, MiniLMEmbedder) else None
    rows = []
    for c in concepts:
        rows_c = evaluation[
            (evaluation["concept_id"] == c.concept_id)
            & evaluation["category"].isin(["positive", "negative"])
        ]
        if rows_c.empty:
            continue
        y = (rows_c["category"] == "positive").to_numpy().astype(int)
        texts = [str(t) for t in rows_c["output"]]
        scorer = fit_concept_scorer(
            train,
            c.concept_id,
            c.concept,
            vectorizer,
            negatives=negatives,
            seed=seed,
            calibrate_thresholds=False,
        )
        row: dict[str, Any] = {
            "concept_id": c.concept_id,
            "concept": c.concept,
            "genre": c.genre,
            "n_positive": int(y.sum()),
            "n_negative": int((1 - y).sum()),
            "auroc_tfidf_lr": float(roc_auc_score(y, scorer.prob(texts))),
        }
        if embedder is not None:
            cos = embedder.cosine(texts, [c.concept] * len(texts))
            row["auroc_minilm_cosine"] = float(roc_auc_score(y, cos))
        rows.append(row)
    table = pd.DataFrame(rows)
    means: dict[str, Any] = {"concept_id": -1, "concept": "(mean)", "genre": None}
    for col in table.columns:
        if col.startswith("auroc"):
            means[col] = float(table[col].mean())
    out = pd.concat([table, pd.DataFrame([means])], ignore_index=True)
    for col in ("n_positive", "n_negative"):
        out[col] = out[col].astype("Int64")
    return out
