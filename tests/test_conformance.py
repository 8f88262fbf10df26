"""tools/conformance.py: ONNX's backend node tests through TensorRT's parser and the evaluator.

The node tests come from the onnx sdist on PyPI (fetched and cached by the tool itself). Done when,
among the tests the parser accepts: none fails, every unsupported one needs a layer type the WeNet
networks do not use, at least 90% pass, and documented TensorRT deviations stay rare.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
import conformance  # noqa: E402

# What the evaluator leaves unimplemented among the parser's layers, with a phrase of its error:
# random fills (Bernoulli) and casts to FP8/FP4/INT4 (TensorRT produces those types only in quantize
# layers; its builder refuses such a cast). The WeNet networks use neither.
NOT_NEEDED_BY_WENET = {"FILL": "RANDOM", "CAST": "(use a quantize layer)"}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("conformance") / "conformance.json"
    status = conformance.main(["--json", str(out)])
    report = json.loads(out.read_text())
    assert status == (1 if report["summary"]["failed"] else 0)
    return report


def test_summary_meets_the_bar(report):
    s = report["summary"]
    assert s["total"] == len(report["tests"]) > 1000
    assert s["accepted"] == s["passed"] + s["failed"] + s["unsupported"] + s["deviations"]
    assert s["accepted"] + s["rejected"] == s["total"]
    failed = [f"{t['name']}: {t['error']}" for t in report["tests"] if t["status"] == "failed"]
    assert not failed, "\n".join(failed)
    assert s["passed"] >= 0.9 * s["accepted"], s
    # every deviation is one of the listed, referenced TensorRT behaviours, and they stay rare
    assert s["deviations"] < 0.02 * s["accepted"], s


def test_unsupported_tests_need_layers_wenet_does_not_use(report):
    unsupported = [t for t in report["tests"] if t["status"] == "unsupported"]
    assert unsupported
    for t in unsupported:
        assert t["layer_type"] in NOT_NEEDED_BY_WENET, t
        assert NOT_NEEDED_BY_WENET[t["layer_type"]] in t["error"], t


def test_deviations_are_the_documented_ones(report):
    deviations = {t["name"]: t for t in report["tests"] if t["status"] == "deviation"}
    assert set(deviations) <= set(conformance.KNOWN_DEVIATIONS)
    for t in deviations.values():
        assert t["reference"].startswith("https://") and t["deviation"]


def test_by_op_summary_and_statuses(report):
    assert report["by_op"]["Conv"].get("passed", 0) >= 3
    assert report["by_op"]["MatMul"].get("passed", 0) >= 3
    statuses = {t["status"] for t in report["tests"]}
    assert statuses <= {"passed", "failed", "unsupported", "deviation", "rejected"}
    rejected = [t for t in report["tests"] if t["status"] == "rejected"]
    assert all(t["error"] for t in rejected)


def test_compare_tolerances():
    import numpy as np

    assert conformance.compare("y", np.float32([1.0, np.nan]), np.float32([1.0005, np.nan])) is None
    assert "values differ" in conformance.compare("y", np.float32([1.0, 2.0]), np.float32([1.0, 2.1]))
    assert "shape" in conformance.compare("y", np.zeros(2), np.zeros(3))
    assert conformance.compare("i", np.int32([1, 2]), np.int64([1, 2])) is None
    assert "values differ" in conformance.compare("i", np.int64([1, 3]), np.int64([1, 2]))
