"""Results schema: JSON round trip, CSV columns with units, loading errors."""
import json

import pytest

from sparsecli.plumbing.output_files import write_text_atomic
from sparsecli.bench import results as res
from sparsecli.plumbing.errors import UserError

from .conftest import results_doc


def test_json_round_trip_and_schema(tmp_path):
    doc = results_doc({"sparse": 1.0, "sdpa-flash": 2.0, "three-op": "oom"})
    doc["results"][0]["max_rel_err"] = float("inf")  # a NaN-writing kernel: kept as text, still valid JSON
    path = write_text_atomic(tmp_path / "r.json", res.to_json(doc))
    back = res.load(path)
    assert back["schema_version"] == res.SCHEMA_VERSION
    assert set(back) >= {"schema_version", "env", "config", "results"}
    assert list(back["results"][0]) == list(res.COLUMNS)
    assert back["results"][0]["max_rel_err"] == "inf"
    assert back["results"][2]["status"] == "oom" and back["results"][2]["median_ms"] is None
    assert not list(tmp_path.glob(".r.json.*"))  # no temporary left behind


def test_csv_has_unit_columns():
    text = res.to_csv(results_doc({"sparse": 1.0})["results"])
    header = text.splitlines()[0].split(",")
    assert header == list(res.COLUMNS)
    assert {"median_ms", "p20_ms", "p80_ms", "peak_mem_mib", "index_build_ms"} <= set(header)


def test_env_names_the_gpu_and_versions():
    env = res.capture_env()
    for key in ("gpu", "capability", "torch", "triton", "cuda", "sparsecli", "git_sha"):
        assert key in env


@pytest.mark.parametrize("content, match", [
    ("{", "not JSON"),
    ('{"schema_version": 99, "results": []}', "schema_version 99"),
    ('{"schema_version": 1}', "no 'results' list"),
    ('{"schema_version": 1, "results": [{}]}', "case_id"),
    ('{"schema_version": 1, "results": [{"case_id": "a", "status": "ok"}]}', "results\\[0\\] \\(a\\) has no key 'group_id'"),
    ('{"schema_version": 1, "results": [1]}', "results\\[0\\] is not an object"),
])
def test_load_rejects_bad_files(tmp_path, content, match):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(UserError, match=match):
        res.load(path)


def test_load_checks_every_key_the_table_plot_and_gate_read(tmp_path):
    good = results_doc({"sparse": 1.0, "sdpa-flash": 2.0, "three-op": "oom"})
    path = tmp_path / "r.json"
    for key in res.ROW_KEYS:
        doc = json.loads(res.to_json(good))
        del doc["results"][0][key]
        path.write_text(json.dumps(doc))
        with pytest.raises(UserError, match=f"^{path}: results\\[0\\].* has no key '{key}'$"):
            res.load(path)
    for key, value in (("median_ms", "fast"), ("median_ms", 0), ("p20_ms", None), ("p80_ms", True)):
        doc = json.loads(res.to_json(good))
        doc["results"][0][key] = value  # an ok row: the gate divides by these, the table formats them
        path.write_text(json.dumps(doc))
        with pytest.raises(UserError, match=f"'{key}' must be a"):
            res.load(path)
    doc = json.loads(res.to_json(good))
    doc["gate"] = {"x": {"noise": 0.1}}
    path.write_text(json.dumps(doc))
    with pytest.raises(UserError, match="gate\\['x'\\] has no key 'ratio'"):
        res.load(path)
    doc["gate"] = {"x": {"ratio": 0}}
    path.write_text(json.dumps(doc))
    with pytest.raises(UserError, match="'ratio' must be a positive number"):
        res.load(path)
