"""Calibration and decisions: temperature scaling (Guo et al., 2017) in ``decision.json``,
and named :class:`Decision` rules (``decisions/<name>.json``) that add a threshold for a
goal."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from sklearn import metrics as skm

from .runs import RunConflict, read_json, write_json

BINS = 15  # confidence bins of the reliability diagram and the ECE
_TINY = 1e-12


def reliability_table(labels: np.ndarray, probs: np.ndarray, bins: int = BINS) -> pd.DataFrame:
    """Count, mean confidence and accuracy of the predictions in each non-empty confidence bin."""
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
    """The bins' gaps between confidence and accuracy, weighted by count: 0.05 is 5 points."""
    table = reliability_table(labels, probs, bins)
    if not len(table):
        return math.nan
    gaps = (table["confidence"] - table["accuracy"]).abs()
    return float((gaps * table["count"]).sum() / table["count"].sum())


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log(probs) / temperature)``: over 1 softens, under 1 sharpens."""
    if temperature == 1.0:
        return probs
    logits = np.log(np.clip(probs, _TINY, 1.0)) / temperature
    scaled = np.exp(logits - logits.max(1, keepdims=True))
    return scaled / scaled.sum(1, keepdims=True)


def fit_temperature(labels: np.ndarray, probs: np.ndarray) -> float:
    """The temperature (0.05 to 20) of least negative log-likelihood: fit on validation only."""
    labels = np.asarray(labels)

    def nll(log_t: float) -> float:
        scaled = apply_temperature(probs, math.exp(log_t))
        return float(-np.log(np.clip(scaled[np.arange(len(labels)), labels], _TINY, 1)).mean())

    result = minimize_scalar(nll, bounds=(math.log(0.05), math.log(20)), method="bounded")
    return float(math.exp(result.x))


@dataclass(frozen=True)
class Decision:
    """The temperature and (two classes) a threshold on ``positive``, with what it gave."""

    temperature: float = 1.0
    positive: str = ""  # the class the threshold is on ("" = no threshold: the most likely)
    threshold: float = math.nan
    goal: str = ""
    precision: float = math.nan
    recall: float = math.nan

    @property
    def has_threshold(self) -> bool:
        return bool(self.positive) and not math.isnan(self.threshold)

    def to_dict(self) -> dict:
        """Plain values for JSON: NaN becomes null."""
        values = asdict(self).items()
        return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in values}

    @classmethod
    def from_dict(cls, values: dict) -> Decision:
        return cls(**{k: math.nan if v is None else v for k, v in values.items()})

    def calibrate(self, probs: np.ndarray) -> np.ndarray:
        return apply_temperature(probs, self.temperature)

    def in_words(self, answer: str, probs_row: np.ndarray, class_names: list[str]) -> str:
        """Why ``answer`` was given for calibrated ``probs_row`` ("" without a threshold)."""
        if not self.has_threshold or self.positive not in class_names:
            return ""
        p = probs_row[list(class_names).index(self.positive)]
        verb = "reaches" if answer == self.positive else "is below"
        goal = self.goal or f"the threshold on {self.positive}"
        return (
            f"{answer}: p_{self.positive} {p:.2f} {verb} the {self.threshold:.2f} needed for {goal}"
        )

    def decide(self, probs: np.ndarray, class_names: list[str]) -> np.ndarray:
        """Class indices: by the threshold where there is one, else the most likely class."""
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
    """The threshold reaching ``precision`` with the most recall (NaN when none does)."""
    if positive not in class_names:
        raise ValueError(f"{positive!r} is not one of the classes {class_names}")
    pos = class_names.index(positive)
    p, r, thresholds = skm.precision_recall_curve(np.asarray(labels) == pos, probs[:, pos])
    ok = np.nonzero(p[:-1] >= precision)[0]
    if not len(ok):
        return OperatingPoint(math.nan, math.nan, 0.0)
    best = ok[np.argmax(r[ok])]
    return OperatingPoint(float(thresholds[best]), float(p[best]), float(r[best]))


def decision_result(
    labels: np.ndarray, probs: np.ndarray, class_names: list[str], decision: Decision, positive: str
) -> OperatingPoint:
    """What ``decision`` gives for ``positive`` on these (test) predictions."""
    pos = class_names.index(positive)
    called = decision.decide(probs, class_names) == pos
    actual = np.asarray(labels) == pos
    precision = float(actual[called].mean()) if called.any() else math.nan
    recall = float(called[actual].mean()) if actual.any() else math.nan
    return OperatingPoint(decision.threshold, precision, recall)


def make_decision(
    labels: np.ndarray, probs: np.ndarray, class_names: list[str], *, positive="", precision=0.99
) -> Decision:
    """Fit the temperature and (with ``positive``) the threshold on validation predictions."""
    temperature = fit_temperature(labels, probs)
    if not positive or len(class_names) != 2:
        return Decision(temperature)
    scaled = apply_temperature(probs, temperature)
    point = choose_threshold(labels, scaled, class_names, positive, precision)
    goal = f"{precision:.0%} precision for {positive}"
    return Decision(temperature, positive, point.threshold, goal, point.precision, point.recall)


def decision_path(run_dir: str | Path, name: str = "") -> Path:
    """``decision.json``, or ``decisions/<name>.json``; ValueError for an unusable name."""
    if not name:
        return Path(run_dir) / "decision.json"
    if not re.fullmatch(r"[\w][\w.-]{0,63}", name):
        raise ValueError(f"decision name {name!r}: use letters, digits, '.', '-' and '_'")
    return Path(run_dir) / "decisions" / f"{name}.json"


def decision_names(run_dir: str | Path) -> list[str]:
    """The names of the decision rules saved with a run."""
    return sorted(p.stem for p in (Path(run_dir) / "decisions").glob("*.json"))


def save_decision(
    run_dir: str | Path, decision: Decision, *, name: str = "", overwrite: bool = False
) -> Path:
    """Write the calibration (no ``name``) or rule ``name``; a different one raises RunConflict."""
    path = decision_path(run_dir, name)
    values = read_json(path)
    before = None if values is None else Decision.from_dict(values)
    if before is not None and not overwrite and not _same(before, decision):
        raise RunConflict(
            f"{path} holds another decision ({before.goal or 'no threshold'}, temperature "
            f"{before.temperature:.3f}). Use OVERWRITE=True to replace it, or a new RUN_NAME."
        )
    return write_json(path, decision.to_dict())


def _same(a: Decision, b: Decision) -> bool:
    """Equal, with floats compared to 1e-6 (and NaN, None in ``to_dict``, equal to NaN)."""
    for x, y in zip(a.to_dict().values(), b.to_dict().values(), strict=True):
        close = isinstance(x, float) and isinstance(y, float) and math.isclose(x, y, rel_tol=1e-6)
        if not (close or x == y):
            return False
    return True


def read_decision(run_dir: str | Path, name: str = "") -> Decision | None:
    """Without ``name`` the run's temperature alone (None if unsaved); else the rule ``name``
    (FileNotFoundError if missing)."""
    values = read_json(decision_path(run_dir, name))
    if values is None and name:
        saved = ", ".join(decision_names(run_dir)) or "none yet (notebook 05 saves one)"
        raise FileNotFoundError(f"no decision rule {name!r} in {run_dir}: saved rules: {saved}")
    if values is None:
        return None
    decision = Decision.from_dict(values)
    return decision if name else Decision(decision.temperature)
