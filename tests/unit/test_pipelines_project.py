"""Pipelines from allowlisted specs only, and the project file's fail-fast validation."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from river import linear_model, metrics, optim, preprocessing, tree

from shared.errors import ConfigError
from shared.pipelines import build_detector, build_pipeline, validate_step
from shared.project import PipelineStep, Project, load_project
from tests.unit.factories import PROJECT_FILE, demo_project

SCALER_LOGREG = [
    {"estimator": "preprocessing.StandardScaler"},
    {"estimator": "linear_model.LogisticRegression", "params": {"l2": 0.0}},
]


def separable(n: int, seed: int = 1) -> list[tuple[dict[str, float], bool]]:
    """Two features on very different scales; the label is a linear rule of both."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        x = {"small": rng.uniform(-1, 1), "large": rng.uniform(-1000, 1000)}
        rows.append((x, x["small"] + x["large"] / 1000 > 0))
    return rows


# -- build_pipeline -------------------------------------------------------------------------


def test_single_step_builds_the_estimator_with_its_params() -> None:
    model = build_pipeline([{"estimator": "tree.HoeffdingTreeClassifier",
                             "params": {"grace_period": 50, "delta": 1e-5}}])
    assert isinstance(model, tree.HoeffdingTreeClassifier)
    assert model.grace_period == 50 and model.delta == 1e-5


def test_two_steps_make_a_pipeline_that_learns() -> None:
    model = build_pipeline(SCALER_LOGREG)
    assert [type(step) for step in model.steps.values()] == [
        preprocessing.StandardScaler, linear_model.LogisticRegression]
    accuracy = metrics.Accuracy()
    for x, y in separable(2000):
        accuracy.update(y, model.predict_one(x))
        model.learn_one(x, y)
    assert accuracy.get() > 0.9
    held_out = metrics.Accuracy()
    for x, y in separable(500, seed=2):
        held_out.update(y, model.predict_one(x))
    assert held_out.get() > 0.95


def test_each_build_is_a_fresh_model() -> None:
    first, second = build_pipeline(SCALER_LOGREG), build_pipeline(SCALER_LOGREG)
    for x, y in separable(200):
        first.learn_one(x, y)
    x, _ = separable(1, seed=3)[0]
    assert second.predict_proba_one(x) != first.predict_proba_one(x)


def test_allowlisted_optimizer() -> None:
    model = build_pipeline([{"estimator": "linear_model.LogisticRegression",
                             "params": {"optimizer": {"name": "optim.SGD", "lr": 0.2}}}])
    assert isinstance(model.optimizer, optim.SGD)
    assert model.optimizer.learning_rate == 0.2


@pytest.mark.parametrize("estimator", ["os.system", "compose.FuncTransformer",
                                       "builtins.eval", "tree", "", None])
def test_unlisted_estimator_is_refused(estimator: Any) -> None:
    with pytest.raises(ValueError, match="not allowed"):
        build_pipeline([{"estimator": estimator}])


def test_unlisted_step_anywhere_in_the_pipeline_is_refused() -> None:
    with pytest.raises(ValueError, match="compose.FuncTransformer"):
        build_pipeline([SCALER_LOGREG[0], {"estimator": "compose.FuncTransformer",
                                           "params": {"func": "print"}}])


@pytest.mark.parametrize("value", [[1, 2], {"a": 1}, ("x",), object()])
def test_non_scalar_params_are_refused(value: Any) -> None:
    with pytest.raises(ValueError, match="must be a number, string or boolean"):
        build_pipeline([{"estimator": "tree.HoeffdingTreeClassifier",
                         "params": {"grace_period": value}}])


def test_unlisted_optimizer_is_refused() -> None:
    with pytest.raises(ValueError, match="optimizer"):
        validate_step({"estimator": "linear_model.LogisticRegression",
                       "params": {"optimizer": {"name": "os.system"}}})


def test_empty_pipeline_is_refused() -> None:
    with pytest.raises(ValueError):
        build_pipeline([])


def test_detectors_are_allowlisted() -> None:
    detector = build_detector("ADWIN", {"delta": 0.01})
    assert detector.delta == 0.01
    with pytest.raises(ValueError, match="not allowed"):
        build_detector("os.system", {})


def test_pipeline_step_model_refuses_unlisted_estimator() -> None:
    with pytest.raises(ValidationError, match="not allowed"):
        PipelineStep(estimator="compose.FuncTransformer")


# -- load_project ---------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "project.toml"
    path.write_text(text, encoding="utf-8")
    return path


def demo_text() -> str:
    return PROJECT_FILE.read_text(encoding="utf-8")


def test_demo_project_loads() -> None:
    project = demo_project()
    assert set(project.datasets) == {"loans"}
    assert project.model("loans-tree").dataset == "loans"
    assert project.models_of("loans") == ["loans-tree"]
    assert project.model("loans-tree").monitor.concept.detector == "ADWIN"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found") as caught:
        load_project(tmp_path / "absent.toml")
    assert "absent.toml" in str(caught.value)


def test_bad_toml(tmp_path: Path) -> None:
    path = write(tmp_path, 'name = "x"\n[datasets.loans\n')
    with pytest.raises(ConfigError, match="not valid TOML") as caught:
        load_project(path)
    assert str(path) in str(caught.value)


def test_undeclared_dataset(tmp_path: Path) -> None:
    text = demo_text().replace('dataset = "loans"', 'dataset = "mortgages"')
    with pytest.raises(ConfigError, match="undeclared dataset 'mortgages'") as caught:
        load_project(write(tmp_path, text))
    assert "loans-tree" in str(caught.value)


def test_unknown_detector(tmp_path: Path) -> None:
    text = demo_text().replace('detector = "ADWIN"', 'detector = "Magic"')
    with pytest.raises(ConfigError, match="detector 'Magic' is not allowed") as caught:
        load_project(write(tmp_path, text))
    assert "models.loans-tree.monitor.concept.detector" in str(caught.value)


def test_unlisted_estimator_in_project_file(tmp_path: Path) -> None:
    text = demo_text().replace('"tree.HoeffdingTreeClassifier"', '"os.system"')
    with pytest.raises(ConfigError, match="estimator 'os.system' is not allowed"):
        load_project(write(tmp_path, text))


def test_typo_in_a_key_is_named(tmp_path: Path) -> None:
    text = demo_text().replace("promotion_margin", "promotion_margn")
    with pytest.raises(ConfigError, match="promotion_margn"):
        load_project(write(tmp_path, text))


def test_monitoring_an_undeclared_feature_is_refused() -> None:
    raw = demo_project().model_dump(mode="json")
    raw["models"]["loans-tree"]["monitor"]["data"]["features"] = ["salary", "height"]
    with pytest.raises(ValidationError, match="undeclared feature 'height'"):
        Project.model_validate(raw)
