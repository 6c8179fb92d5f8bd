"""The paper's report figures, on predictions whose answers are known."""
import json

import numpy as np
import pytest

from SSIMQualityLib.evaluation import metrics


def test_metrics_on_known_predictions():
    true = np.array([0.95, 0.90, 0.70, 0.65, 0.30, 0.50])
    pred = true + np.array([0.01, -0.01, 0.02, 0.0, 0.02, -0.07])
    m = metrics(pred, true)
    r = pred - true
    assert m["n"] == 6
    assert np.isclose(m["residual_mean"], r.mean()) and np.isclose(m["residual_std"], r.std())
    assert np.isclose(m["mae"], np.abs(r).mean())
    # 3 equal bins (edges 1/3, 2/3): 0.30 -> 0 (pred 0.32), 0.50 and 0.65 -> 1 (0.43, 0.65), the rest -> 2
    assert m["accuracy_3"] == 1.0
    # clinical: only 0.70 + 0.02 stays sufficient; 0.90 - 0.01 stays good; nothing crosses
    assert m["accuracy_clinical"] == 1.0
    by = m["residual_by_true_class"]
    assert by["good"]["n"] == 2 and np.isclose(by["good"]["mean"], 0.0)
    assert by["sufficient"]["n"] == 2 and np.isclose(by["sufficient"]["std"], 0.01)
    assert by["rescan"]["n"] == 2 and np.isclose(by["rescan"]["mean"], -0.025) and np.isclose(by["rescan"]["std"], 0.045)
    assert m["confusion_matrices"]["clinical"] == [[2, 0, 0], [0, 2, 0], [0, 0, 2]]


def test_metrics_count_misclassified_and_empty_classes():
    true = np.array([0.95, 0.90, 0.86])
    pred = np.array([0.95, 0.80, 0.86])  # one good slice called sufficient
    m = metrics(pred, true)
    assert np.isclose(m["accuracy_clinical"], 2 / 3)
    assert m["confusion_matrices"]["clinical"][0] == [2, 1, 0]
    assert m["residual_by_true_class"]["rescan"]["n"] == 0
    assert np.isnan(m["residual_by_true_class"]["rescan"]["std"])
    # As written to report.json: strict JSON, the empty class's figures null (Python's NaN breaks JSON.parse).
    from SSIMQualityLib.outputs import json_text

    written = json.loads(json_text(m), parse_constant=lambda c: pytest.fail(f"report.json would hold {c}"))
    assert written["residual_by_true_class"]["rescan"]["std"] is None and written["n"] == m["n"]


def test_metrics_leave_unscored_slices_out_and_refuse_what_cannot_pair():
    """A slice with no head has a NaN prediction: it counted as misclassified (accuracy 0.69 instead of 0.92 on
    a real run) while every residual figure came out NaN. Now it is left out of every figure, and counted."""
    from SSIMQualityLib.errors import BadParameterError

    true = np.array([0.95, 0.90, 0.70, 0.40])
    pred = np.array([0.96, np.nan, 0.72, 0.45])
    m = metrics(pred, true)
    assert m["n"] == 3 and m["not_scored"] == 1
    assert m["accuracy_clinical"] == 1.0 and np.isclose(m["residual_mean"], np.mean([0.01, 0.02, 0.05]))
    assert metrics(pred[[0, 2, 3]], true[[0, 2, 3]])["accuracy_3"] == m["accuracy_3"]
    with pytest.raises(BadParameterError, match="3 predictions against 4 labels"):
        metrics(pred[:3], true)
    with pytest.raises(BadParameterError, match="no slice has both"):
        metrics([np.nan], [0.5])


def test_evaluate_command_writes_report_and_figures_and_keeps_them(tmp_path, capsys):
    from SSIMQualityLib.cli import main

    out = tmp_path / "ev"
    assert main(["evaluate", "-n", "24", "--out", str(out), "--workers", "1"]) == 0
    # Strict JSON (JSON.parse and jq refuse NaN): an empty class's figures are null.
    report = json.loads((out / "report.json").read_text(encoding="utf-8"),
                        parse_constant=lambda c: pytest.fail(f"report.json holds {c}"))
    assert report["n"] == 24
    for key in ("residual_mean", "residual_std", "accuracy_3", "accuracy_5", "accuracy_10", "accuracy_clinical"):
        assert 0 <= abs(report[key]) <= 1, key
    assert set(report["classification_reports"]) == {"3", "5", "10", "clinical"}
    assert sum(v["n"] for v in report["residual_by_true_class"].values()) == 24
    assert report["clean_real"]["slices"] > 0
    # Named by the bundled model's catalogue entry and the recipe of its synthetic slices.
    from SSIMQualityLib.data import DATA_VERSION
    from SSIMQualityLib.models import bundled_model_entry, sha256_of

    entry = bundled_model_entry()
    assert report["model"]["name"] == entry["name"] and report["model"]["sha256"] == entry["sha256"]
    assert sha256_of(report["model"]["file"]) == entry["sha256"]
    assert report["protocol"]["recipe"] == DATA_VERSION and report["protocol"]["split_version"] is None
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["confusion_matrices.png", "residuals.png", "scatter.png"], pngs
    printed = capsys.readouterr().out
    assert "residual by true class: good" in printed and "clean real scans:" in printed
    # a second run refuses to overwrite the report without --force
    before = (out / "report.json").read_bytes()
    assert main(["evaluate", "-n", "8", "--out", str(out)]) != 0
    assert (out / "report.json").read_bytes() == before
