"""``genedge router`` and ``genedge plan --prompts`` with routing, end to end: real subprocesses on real
prompt files (PartiPrompts, files written by pandas), and in-process where a test varies only the input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import PARTIPROMPTS, genedge_in_process, needs_partiprompts, run_genedge
from test_router import SOLVER_ATOL

from genedge.router import load_router


def _unlabelled_csv(path, n=40):
    """A prompt file as a user has one: pandas-written CSV, a Prompt column and no labels."""
    prompts = pd.read_csv(PARTIPROMPTS, sep="\t", quoting=3)["Prompt"].tolist()[:n]
    pd.DataFrame({"Prompt": prompts, "id": range(n)}).to_csv(path, index=False)
    return prompts


def test_router_list_shows_both_shipped_routers_above_macro_f1_0_70():
    out = run_genedge("router", "list", check=True).stdout
    assert "paper4-tfidf" in out and "paper4-minilm" in out
    assert "tfidf" in out and "embedding" in out and "Basic,Detail,Imagination,Complex" in out
    # The figures are each router's recorded nested cross-validation: accuracy, then macro-F1.
    figures = {line.split()[0]: [float(v) for v in line.split()[-2:]] for line in out.splitlines()[1:]}
    assert figures["paper4-tfidf"] == [0.799, 0.744] and figures["paper4-minilm"] == [0.777, 0.71]
    assert all(macro_f1 >= 0.70 for _, macro_f1 in figures.values())


@needs_partiprompts
def test_predict_routes_a_long_prompt_away_from_basic_by_its_length(tmp_path):
    # Thirty times "cat" has the TF-IDF vector of "cat": the shipped router tells them apart by length alone.
    requests = tmp_path / "requests.csv"
    pd.DataFrame({"Prompt": ["cat", " ".join(["cat"] * 30)]}).to_csv(requests, index=False)
    routed = tmp_path / "routed.csv"
    run_genedge("router", "predict", requests, "--router", "paper4-tfidf", "--out", routed, check=True)
    frame = pd.read_csv(routed)
    assert frame["category"].tolist()[0] == "Basic" and frame["category"].tolist()[1] != "Basic"
    assert frame["p_Basic"][0] > 0.5 > frame["p_Basic"][1]


@pytest.mark.parametrize("sub", ["train", "eval", "predict", "list"])
def test_every_router_subcommand_has_help(capsys, sub):
    done = genedge_in_process(capsys, "router", sub, "--help")
    assert done.returncode == 0 and "usage: genedge router" in done.stdout


@pytest.mark.slow
@needs_partiprompts
def test_train_then_predict_an_unlabelled_file_routes_every_row(tmp_path):
    router_path = tmp_path / "router.json"
    out = run_genedge("router", "train", PARTIPROMPTS, "--out", router_path, check=True).stdout
    assert "1,079 labelled prompts" in out and "stratified 5-fold" in out
    trained, shipped = load_router(router_path), load_router("paper4-tfidf")
    assert trained.to_dict() | {"classifier": None} == shipped.to_dict() | {
        "training": trained.training,
        "classifier": None,
    }
    # The fit stops at L-BFGS's gradient tolerance: another BLAS kernel stops nearby (SOLVER_ATOL).
    np.testing.assert_allclose(trained.classifier.coef, shipped.classifier.coef, rtol=0, atol=SOLVER_ATOL)
    np.testing.assert_allclose(trained.classifier.intercept, shipped.classifier.intercept, rtol=0, atol=SOLVER_ATOL)
    prompts = _unlabelled_csv(tmp_path / "requests.csv")
    predictions = tmp_path / "routed.parquet"
    done = run_genedge(
        "router", "predict", tmp_path / "requests.csv", "--router", router_path, "--out", predictions, check=True
    )
    assert "routed 40 prompts" in done.stdout
    frame = pd.read_parquet(predictions)
    assert frame["Prompt"].tolist() == prompts and frame["id"].tolist() == [str(i) for i in range(40)]
    categories = ["Basic", "Detail", "Imagination", "Complex"]
    assert set(frame["category"]) <= set(categories)
    proba = frame[[f"p_{c}" for c in categories]].to_numpy()
    assert np.allclose(proba.sum(axis=1), 1) and np.allclose(proba.max(axis=1), frame["probability"])


@needs_partiprompts
def test_predict_writes_csv_and_tsv_that_pandas_reads(capsys, tmp_path):
    _unlabelled_csv(tmp_path / "requests.csv", n=12)
    for suffix, sep in ((".csv", ","), (".tsv", "\t")):
        out = tmp_path / f"routed{suffix}"
        done = genedge_in_process(capsys, "router", "predict", str(tmp_path / "requests.csv"), "--out", str(out))
        assert done.returncode == 0, done.stderr
        frame = pd.read_csv(out, sep=sep)
        assert len(frame) == 12 and {"category", "probability", "p_Basic"} <= set(frame.columns)


@pytest.mark.slow
@needs_partiprompts
def test_eval_prints_backend_beside_the_majority_baseline_and_draws_the_confusion(tmp_path):
    figure, report = tmp_path / "confusion.png", tmp_path / "report.json"
    out = run_genedge(
        "router", "eval", PARTIPROMPTS, "--backend", "tfidf", "--figure", figure, "--out", report, check=True
    ).stdout
    assert "nested: C chosen among 0.3, 1, 3, 10, 30 by inner 5-fold macro-F1" in out
    assert [line.split()[0] for line in out.splitlines()[2:5]] == ["tfidf", "length", "majority"]
    assert "\nlength          0.760    0.594" in out
    assert "confusion of tfidf (rows true, columns predicted; C per outer fold 30, 10, 10, 10, 3)" in out
    assert "confusion of length" in out and "confusion of majority" not in out
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    reports = json.loads(report.read_text())["reports"]
    assert list(reports) == ["tfidf", "length", "majority"]
    assert reports["majority"]["accuracy"] == pytest.approx(544 / 1079) and reports["majority"]["c_per_fold"] == []
    # The reported figures are the outer folds' predictions, one per prompt; the C behind each fold is kept.
    assert np.asarray(reports["tfidf"]["confusion"]).sum() == np.asarray(reports["length"]["confusion"]).sum() == 1079
    assert reports["tfidf"]["c_per_fold"] == [30, 10, 10, 10, 3] and reports["tfidf"]["c_grid"] == [0.3, 1, 3, 10, 30]
    # The same nested cross-validation as the shipped router's: the same figures.
    assert reports["tfidf"]["confusion"] == load_router("paper4-tfidf").cross_validation.confusion.tolist()
    # Length alone beats the majority class; TF-IDF with length beats length alone.
    assert reports["length"]["accuracy"] > reports["majority"]["accuracy"] + 0.2
    assert reports["tfidf"]["macro_f1"] > reports["length"]["macro_f1"] + 0.1


@pytest.mark.slow
@needs_partiprompts
def test_eval_of_both_backends_in_one_run_on_partiprompts(capsys):
    # In this process: the command's user path is the tfidf eval above; here only the backends vary.
    done = genedge_in_process(capsys, "router", "eval", PARTIPROMPTS)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    rows = {
        line.split()[0]: [float(v) for v in line.split()[1:3]]
        for line in out.splitlines()
        if line.split()[:1] in (["tfidf"], ["embedding"], ["length"], ["majority"])
    }
    assert list(rows) == ["tfidf", "embedding", "length", "majority"]
    # Each backend's figures are its shipped router's recorded nested cross-validation, macro-F1 >= 0.70.
    for backend, name in (("tfidf", "paper4-tfidf"), ("embedding", "paper4-minilm")):
        cv = load_router(name).cross_validation
        assert rows[backend] == [round(cv.accuracy, 3), round(cv.macro_f1, 3)] and rows[backend][1] >= 0.70
        assert rows[backend][1] > rows["length"][1] > rows["majority"][1]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the file is empty"),
        (b"Prompt\n", "only its header"),
        (b"Prompt\ncaf\xe9 au lait\n", "not UTF-8"),
    ],
)
def test_predict_refuses_empty_and_non_utf8_files_clearly(capsys, tmp_path, content, message):
    path = tmp_path / "prompts.tsv"
    path.write_bytes(content)
    done = genedge_in_process(capsys, "router", "predict", str(path))
    assert done.returncode == 2 and str(path) in done.stderr and message in done.stderr


def test_predict_refuses_a_file_without_a_prompt_column(capsys, tmp_path):
    path = tmp_path / "prompts.csv"
    pd.DataFrame({"text": ["a red cube"]}).to_csv(path, index=False)
    done = genedge_in_process(capsys, "router", "predict", str(path))
    assert done.returncode == 2 and "expected a column 'Prompt'" in done.stderr


def test_unknown_router_name_lists_the_shipped_ones(capsys, tmp_path):
    path = tmp_path / "prompts.csv"
    pd.DataFrame({"Prompt": ["a red cube"]}).to_csv(path, index=False)
    done = genedge_in_process(capsys, "router", "predict", str(path), "--router", "paper9")
    assert done.returncode == 2 and "no prompt router 'paper9'" in done.stderr and "'paper4-tfidf'" in done.stderr


@needs_partiprompts
def test_plan_routes_every_row_of_an_unlabelled_prompt_file(capsys, tmp_path):
    _unlabelled_csv(tmp_path / "requests.csv", n=60)
    path = tmp_path / "plan.json"
    done = genedge_in_process(capsys, "plan", "--prompts", str(tmp_path / "requests.csv"), "--out", str(path))
    assert done.returncode == 0, done.stderr
    prompts = json.loads(path.read_text())["inputs"]["prompts"]
    assert sum(prompts["labelled"].values()) == 0 and sum(prompts["routed"].values()) == 60
    assert "60 prompts from" in done.stdout and "0 labelled by Challenge, 60 routed by paper4-tfidf" in done.stdout


@needs_partiprompts
def test_plan_at_a_rate_keeps_the_routed_mixture(capsys, tmp_path):
    _unlabelled_csv(tmp_path / "requests.csv", n=30)
    path = tmp_path / "plan.json"
    done = genedge_in_process(
        capsys, "plan", "--prompts", str(tmp_path / "requests.csv"), "--rate", "0.05", "--compare", "paper",
        "--out", str(path),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    document = json.loads(path.read_text())
    assert sum(document["inputs"]["workload"].values()) == pytest.approx(0.05)
    composition = document["inputs"]["prompts"]["composition"]
    assert all(sum(shares.values()) == pytest.approx(1) for shares in composition.values())
    assert document["inputs"]["misrouting"]["loss"] >= -1e-9 and "lost to misrouting" in done.stdout


@needs_partiprompts
def test_plan_refuses_a_router_of_another_mapping(capsys, tmp_path):
    mapping, router = tmp_path / "two.json", tmp_path / "two-router.json"
    labels = {"Plain": ["Basic"], "Hard": ["Imagination", "Complex"]}
    mapping.write_text(json.dumps({"name": "two", "column": "Challenge", "labels": labels}))
    out = genedge_in_process(
        capsys, "router", "train", str(PARTIPROMPTS), "--category-mapping", str(mapping), "--out", str(router)
    ).stdout
    assert "535 labelled prompts, mapping 'two' on Challenge" in out
    _unlabelled_csv(tmp_path / "requests.csv", n=5)
    done = genedge_in_process(capsys, "plan", "--prompts", str(tmp_path / "requests.csv"), "--router", str(router))
    assert done.returncode == 2 and "train a router on this mapping" in done.stderr


@pytest.mark.slow
@needs_partiprompts
def test_plan_with_the_embedding_router_counts_all_of_partiprompts(capsys, tmp_path):
    path = tmp_path / "plan.json"
    done = genedge_in_process(
        capsys, "plan", "--prompts", PARTIPROMPTS, "--router", "paper4-minilm", "--weight", "0.001", "--out", path
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    prompts = json.loads(path.read_text())["inputs"]["prompts"]
    assert prompts["router"] == "paper4-minilm" and sum(prompts["routed"].values()) == 553
    assert "553 routed by paper4-minilm" in out and "lost to misrouting" in out


@pytest.mark.slow
@needs_partiprompts
def test_eval_prints_each_backend_before_a_later_one_fails(capsys, tmp_path):
    done = genedge_in_process(
        capsys, "router", "eval", str(PARTIPROMPTS), "--embedding-model", str(tmp_path / "no-such-model")
    )
    assert done.returncode == 2 and "no-such-model" in done.stderr
    assert "\ntfidf           0.799    0.744" in done.stdout
