"""tools/compare.py on the tiny model: the whole report (8 engines, 9 cases each) is produced once per
module, then checked against the plans on disk, a metric recomputed here in float64 from ONNX
Runtime's reference, the machine's runtime status, and the PNG's pixels."""
from __future__ import annotations

import json

import numpy as np
import pytest

from netdef.evaluator import evaluate
from netdef.parser_baseline import parse_onnx
from netdef.runtime import check_manifest, gpu_runtime_status
from tools import compare

CASES = ["b1.t16", "b1.t64", "b1.t256", "b4.t16", "b4.t64", "b4.t256", "b16.t16", "b16.t64", "b16.t256"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model):
    out = tmp_path_factory.mktemp("compare") / "report"
    import contextlib
    import io

    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        rc = compare.main(["--model", "tiny", "--out", str(out), "--quiet"])
    assert rc == 0
    return out, json.loads((out / "report.json").read_text()), stdout.getvalue()


def find(report, kind, network, precision):
    (entry,) = [e for e in report["engines"] if (e["kind"], e["network"], e["precision"]) == (kind, network, precision)]
    return entry


def test_one_entry_per_engine_with_the_issue_schema(run):
    _, report, _ = run
    keys = {"kind", "network", "precision", "layers", "build_s", "plan_bytes", "accuracy", "latency_ms"}
    combos = sorted((e["kind"], e["network"], e["precision"]) for e in report["engines"])
    assert combos == sorted((k, n, p) for k in ("netdef", "parser") for n in ("encoder", "decoder") for p in ("fp32", "fp16"))
    for entry in report["engines"]:
        assert set(entry) == keys
        outputs = compare.COMPARED[entry["network"]]
        assert [(r["case"], r["output"]) for r in entry["accuracy"]] == [(c, o) for c in CASES for o in outputs]
        assert all(set(r) >= {"a", "r", "pass"} and np.isfinite([r["a"], r["r"]]).all() for r in entry["accuracy"])


def test_columns_match_the_plans_on_disk(run):
    out, report, _ = run
    for entry in report["engines"]:
        engine_dir = out / "engines" / f"{entry['kind']}-{entry['precision']}"
        manifest = check_manifest(engine_dir)  # fresh, same backend, sources unchanged
        assert manifest["kind"] == entry["kind"] and manifest["precision"] == entry["precision"]
        assert entry["plan_bytes"] == (engine_dir / f"{entry['network']}.plan").stat().st_size
        assert entry["layers"] == manifest["engines"][entry["network"]]["layers"] > 0
        assert entry["build_s"] > 0


def test_parser_layer_count_is_the_parsed_networks(run, tiny_model):
    _, report, _ = run
    for network in ("encoder", "decoder"):
        _, parsed, _parser = parse_onnx(getattr(tiny_model, f"{network}_onnx"), fp16=False)
        assert find(report, "parser", network, "fp32")["layers"] == parsed.num_layers


def test_accuracy_row_recomputed_from_onnx_runtime(run, tiny_model):
    """The hackathon's a and r, written out here in float64, for one case of the parser FP32 encoder."""
    _, report, _ = run
    cases = np.load(tiny_model.cases)
    _, network, _parser = parse_onnx(tiny_model.encoder_onnx, fp16=False)
    got = evaluate(network, {"speech": cases["encoder.b4.t64.speech"], "speech_lengths": cases["encoder.b4.t64.speech_lengths"]})
    ref = cases["encoder.b4.t64.encoder_out"].astype(np.float64)
    diff = np.abs(got["encoder_out"].astype(np.float64) - ref)
    (row,) = [r for r in find(report, "parser", "encoder", "fp32")["accuracy"] if (r["case"], r["output"]) == ("b4.t64", "encoder_out")]
    assert row["a"] == pytest.approx(diff.max(), rel=1e-6, abs=1e-12)
    assert row["r"] == pytest.approx(np.median(diff / (np.abs(ref) + 5e-5)), rel=1e-6, abs=1e-12)
    assert row["pass"] == (diff.max() < 3.5e-2 and np.median(diff / (np.abs(ref) + 5e-5)) < 2e-3)


def test_fp32_engines_agree_with_onnx_runtime_and_fp16_is_really_fp16(run):
    _, report, _ = run
    for kind in ("netdef", "parser"):
        for network, output in (("encoder", "encoder_out"), ("decoder", "decoder_out")):
            worst = lambda precision: max(r["a"] for r in find(report, kind, network, precision)["accuracy"] if r["output"] == output)
            assert all(r["pass"] for r in find(report, kind, network, "fp32")["accuracy"])
            assert worst("fp32") < 1e-4
            assert worst("fp16") > 10 * worst("fp32")  # FP16 rounding shows; an FP32 engine labelled FP16 would not


def test_latency_column_follows_the_machine(run):
    _, report, table = run
    usable, _ = gpu_runtime_status()
    if usable:
        for entry in report["engines"]:
            assert [r["case"] for r in entry["latency_ms"]] == CASES
            assert all(r["latency_ms"] > 0 and r["graph_latency_ms"] > 0 for r in entry["latency_ms"])
    else:
        assert report["latency_note"] == "not measured: no TensorRT runtime on this machine"
        assert all(e["latency_ms"] is None for e in report["engines"])
        assert table.count("not measured: no TensorRT runtime on this machine") == 8


def test_table_and_markdown_list_every_engine(run):
    out, report, table = run
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["kind", "network", "precision"]
    for entry in report["engines"]:
        assert any(line.split()[:4] == [entry["kind"], entry["network"], entry["precision"], str(entry["layers"])] for line in lines)
    markdown = (out / "report.md").read_text()
    assert markdown.count("| parser encoder fp16 | encoder_out |") == 1 and "b16.t256" in markdown


def test_chart_is_a_readable_png(run):
    import matplotlib.image

    out, _, _ = run
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = matplotlib.image.imread(out / "report.png")
    assert pixels.shape[0] >= 900 and pixels.shape[1] >= 1600
    assert pixels[..., :3].std() > 0.1  # drawn, not blank


def test_chart_with_latency(tmp_path, run):
    """The GPU branch of the chart and table, fed measured-looking numbers (no GPU here to measure them)."""
    _, report, _ = run
    report = json.loads(json.dumps(report))
    for i, entry in enumerate(report["engines"]):
        entry["latency_ms"] = [
            {"case": c, "batch": 1, "seq": 16, "latency_ms": 1.0 + i, "throughput": 16e3 / (1 + i), "graph_latency_ms": 0.5 + i, "graph_throughput": 32e3}
            for c in CASES
        ]
    report["latency_note"] = "measured with CUDA events"
    paths = compare.write_report(report, tmp_path)
    assert paths["png"].stat().st_size > 10_000
    assert "1.000 ms (0.500 ms graph), mean of 9 cases" in compare.format_table(report)


def test_bad_arguments_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        compare.parse_args(["--kinds", "netdef,onnx"])
    assert exc.value.code == 2
    assert "--kinds: expected a comma list of netdef, parser, got 'netdef,onnx'" in capsys.readouterr().err


def test_report_on_a_users_model(tiny_model, tmp_path):
    """--onnx DIR --weights WDIR: a folder with only the two ONNX files (no cases): the cases are made
    with ONNX Runtime, and the netdef FP32 engines match them."""
    import json
    import shutil

    onnx_dir = tmp_path / "my_model"
    onnx_dir.mkdir()
    for f in ("encoder.onnx", "decoder.onnx"):
        shutil.copy(tiny_model.dir / f, onnx_dir / f)
    out = tmp_path / "report"
    rc = compare.main(["--onnx", str(onnx_dir), "--weights", str(tiny_model.weights_dir), "--kinds", "netdef",
                       "--precisions", "fp32", "--out", str(out), "--quiet"])
    assert rc == 0 and (out / "cases.npz").is_file() and not (onnx_dir / "cases.npz").exists()
    report = json.loads((out / "report.json").read_text())
    assert report["model"] == "my_model"
    assert {e["network"] for e in report["engines"]} == {"encoder", "decoder"}
    assert all(r["pass"] for e in report["engines"] for r in e["accuracy"])


def test_onnx_needs_weights():
    with pytest.raises(SystemExit):
        compare.parse_args(["--onnx", "somewhere"])
