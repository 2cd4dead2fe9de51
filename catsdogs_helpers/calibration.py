"""Calibration and decisions: can you trust "90 % dog", and when should the answer be "dog"?

A model is *calibrated* when, of all the photos it calls dogs with probability 0.9, nine in
ten are dogs. Networks trained with cross-entropy are often over-confident. Two tools:

- the **reliability diagram** and the **expected calibration error** (ECE) measure it: bin
  the predictions by confidence, compare each bin's confidence with its accuracy;
- **temperature scaling** (Guo et al., 2017) fixes most of it with one number ``T`` fitted
  on the validation split: the log-probabilities are divided by ``T`` before the softmax.
  It never changes which class is most likely, so accuracy stays the same.

A **decision** then turns probabilities into an answer: the most likely class, or, with two
classes, "``positive`` only when its probability reaches ``threshold``", a threshold chosen
on the validation split for a stated goal (say 99 % precision for Cat). It is saved in the
run folder (``decision.json``) and every predict path uses it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from sklearn import metrics as skm

from .runs import RunConflict, read_json, write_json

#: Confidence bins of the reliability diagram and the ECE.
BINS = 15
_TINY = 1e-12


def reliability_table(labels: np.ndarray, probs: np.ndarray, bins: int = BINS) -> pd.DataFrame:
    """Per confidence bin (of the predicted class's probability): how many predictions fall
    in it, their mean confidence and their accuracy. Empty bins are left out."""
    if len(probs) == 0:
        return pd.DataFrame(columns=["count", "confidence", "accuracy", "low", "high"])
    confidence = probs.max(1)
    correct = probs.argmax(1) == np.asarray(labels)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    table = pd.DataFrame({"bin": which, "confidence": confidence, "correct": correct})
    out = table.groupby("bin").agg(
        count=("correct", "size"), confidence=("confidence", "mean"), accuracy=("correct", "mean")
    )
    out["low"], out["high"] = edges[out.index], edges[out.index + 1]
    return out.reset_index(drop=True)


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, bins: int = BINS) -> float:
    """The ECE: the gap between confidence and accuracy, averaged over the bins weighted by
    how many predictions each holds. 0 is perfectly calibrated; 0.05 means "off by 5 points
    on average"."""
    table = reliability_table(labels, probs, bins)
    if not len(table):
        return math.nan
    gaps = (table["confidence"] - table["accuracy"]).abs()
    return float((gaps * table["count"]).sum() / table["count"].sum())


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log(probs) / temperature)``: over 1 softens over-confident probabilities,
    under 1 sharpens them; the most likely class never changes."""
    if temperature == 1.0:
        return probs
    logits = np.log(np.clip(probs, _TINY, 1.0)) / temperature
    logits -= logits.max(1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(1, keepdims=True)


def fit_temperature(labels: np.ndarray, probs: np.ndarray) -> float:
    """The temperature (0.05 to 20) that minimises the negative log-likelihood of ``labels``
    (fit it on the validation split, never on the test split)."""
    labels = np.asarray(labels)

    def nll(log_t: float) -> float:
        scaled = apply_temperature(probs, math.exp(log_t))
        return float(-np.log(np.clip(scaled[np.arange(len(labels)), labels], _TINY, 1)).mean())

    result = minimize_scalar(nll, bounds=(math.log(0.05), math.log(20)), method="bounded")
    return float(math.exp(result.x))


@dataclass(frozen=True)
class Decision:
    """How probabilities become an answer: the temperature, and for two classes an optional
    threshold on ``positive``'s probability, with the goal it was chosen for and what it gave
    on the validation split."""

    temperature: float = 1.0
    positive: str = ""  # the class the threshold is on ("" = no threshold: the most likely)
    threshold: float = math.nan
    goal: str = ""
    precision: float = math.nan
    recall: float = math.nan

    @property
    def has_threshold(self) -> bool:
        """True when the answer is "``positive`` only above the threshold"."""
        return bool(self.positive) and not math.isnan(self.threshold)

    def to_dict(self) -> dict:
        """Plain values for JSON: a NaN (no threshold, say) becomes null."""
        return {k: None if isinstance(v, float) and math.isnan(v) else v
                for k, v in asdict(self).items()}  # fmt: skip

    @classmethod
    def from_dict(cls, values: dict) -> Decision:
        """The decision :meth:`to_dict` wrote (null back to NaN)."""
        return cls(**{k: math.nan if v is None else v for k, v in values.items()})

    def calibrate(self, probs: np.ndarray) -> np.ndarray:
        """The probabilities after temperature scaling."""
        return apply_temperature(probs, self.temperature)

    def decide(self, probs: np.ndarray, class_names: list[str]) -> np.ndarray:
        """Class indices: ``positive`` when its (calibrated) probability reaches the threshold
        and the other class otherwise; the most likely class without a threshold."""
        probs = self.calibrate(probs)
        if not self.has_threshold or len(class_names) != 2:
            return probs.argmax(1)
        if self.positive not in class_names:
            raise ValueError(f"the decision is about {self.positive!r}, not one of {class_names}")
        pos = class_names.index(self.positive)
        return np.where(probs[:, pos] >= self.threshold, pos, 1 - pos)


@dataclass(frozen=True)
class OperatingPoint:
    """A threshold on one class's probability, and the precision and recall it gives."""

    threshold: float
    precision: float
    recall: float


def choose_threshold(
    labels: np.ndarray, probs: np.ndarray, class_names: list[str], positive: str, precision: float
) -> OperatingPoint:
    """Among the thresholds on ``positive``'s probability whose precision reaches
    ``precision``, the one that keeps the most recall. A NaN threshold (and zero recall)
    when no threshold reaches it."""
    if positive not in class_names:
        raise ValueError(f"{positive!r} is not one of the classes {class_names}")
    pos = class_names.index(positive)
    hit = np.asarray(labels) == pos
    p, r, thresholds = skm.precision_recall_curve(hit, probs[:, pos])
    ok = np.nonzero(p[:-1] >= precision)[0]
    if not len(ok):
        return OperatingPoint(math.nan, math.nan, 0.0)
    best = ok[np.argmax(r[ok])]
    return OperatingPoint(float(thresholds[best]), float(p[best]), float(r[best]))


def decision_result(
    labels: np.ndarray,
    probs: np.ndarray,
    class_names: list[str],
    decision: Decision,
    positive: str,
) -> OperatingPoint:
    """What ``decision`` gives for the class ``positive`` on these (test) predictions: the
    precision of the photos it calls ``positive`` and the share of them it finds."""
    pos = class_names.index(positive)
    called = decision.decide(probs, class_names) == pos
    actual = np.asarray(labels) == pos
    precision = float(actual[called].mean()) if called.any() else math.nan
    recall = float(called[actual].mean()) if actual.any() else math.nan
    return OperatingPoint(decision.threshold, precision, recall)


def make_decision(
    labels: np.ndarray,
    probs: np.ndarray,
    class_names: list[str],
    *,
    positive: str = "",
    precision: float = 0.99,
) -> Decision:
    """Fit the temperature on these (validation) predictions and, with ``positive`` and two
    classes, the threshold that gives ``precision`` for it with the most recall."""
    temperature = fit_temperature(labels, probs)
    if not positive or len(class_names) != 2:
        return Decision(temperature)
    scaled = apply_temperature(probs, temperature)
    point = choose_threshold(labels, scaled, class_names, positive, precision)
    goal = f"precision >= {precision:.1%} for {positive}"
    return Decision(temperature, positive, point.threshold, goal, point.precision, point.recall)


def decision_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / "decision.json"


def save_decision(run_dir: str | Path, decision: Decision, *, overwrite: bool = False) -> Path:
    """Write ``decision.json``; a different decision already there raises
    :class:`~catsdogs_helpers.runs.RunConflict` unless ``overwrite``."""
    path = decision_path(run_dir)
    before = read_decision(run_dir)
    if before is not None and not overwrite and not _same(before, decision):
        raise RunConflict(
            f"{path} holds another decision ({before.goal or 'no threshold'}, temperature "
            f"{before.temperature:.3f}). Use OVERWRITE=True to replace it, or a new RUN_NAME."
        )
    return write_json(path, decision.to_dict())


def _same(a: Decision, b: Decision) -> bool:
    """Equal, with floats compared to 1e-6 and NaN equal to NaN."""
    for x, y in zip(asdict(a).values(), asdict(b).values(), strict=True):
        if isinstance(x, float) and isinstance(y, float):
            if not (math.isclose(x, y, rel_tol=1e-6) or (math.isnan(x) and math.isnan(y))):
                return False
        elif x != y:
            return False
    return True


def read_decision(run_dir: str | Path) -> Decision | None:
    """The run's saved decision, or None when none was saved."""
    values = read_json(decision_path(run_dir))
    return None if values is None else Decision.from_dict(values)
