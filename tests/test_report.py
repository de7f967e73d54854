"""WER, RB and the report tables, against values computed by hand and by jiwer itself."""

import math

import jiwer
import pandas as pd
import pytest

from dmlm.evaluation.wer import corpus_wer
from dmlm.report.cli import build_report
from dmlm.report.metrics import relative_benefit
from dmlm.report.tables import relative_benefits, snr_order
from dmlm.storage import read_table, write_json


def test_corpus_wer_equals_jiwer():
    refs = ["3 x plus 5 equals 12", "log of 2 y minus 4 equals 9"]
    hyps = ["3 x plus 6 equals 12", "log of y minus 4 equals 9 9"]
    out = corpus_wer(refs, hyps)
    assert out["wer"] == pytest.approx(jiwer.wer(refs, hyps))
    # by hand: 1 substitution; 1 deletion ("2") and 1 insertion ("9"); 6 + 8 = 14 reference words
    assert (out["substitutions"], out["deletions"], out["insertions"]) == (1, 1, 1)
    assert out["ref_words"] == 14 and out["wer"] == pytest.approx(3 / 14)


def test_relative_benefit_by_hand():
    assert relative_benefit(0.20, 0.16) == pytest.approx(0.20)
    assert relative_benefit(0.5, 0.6) == pytest.approx(-0.2)
    assert math.isnan(relative_benefit(0.0, 0.1))


def test_snr_order_goes_from_clean_to_loudest_noise():
    assert snr_order(["clean", -10, 10, 0]) == ["clean", 10, 0, -10]


def _evals():
    rows = []
    for modalities, wers in {"A": [0.2, 0.5], "A+O": [0.18, 0.3], "A+L": [0.25, 0.5]}.items():
        for snr, wer in zip(["clean", -10], wers):
            rows.append(dict(run=f"{modalities}.mfcc.mix.b.w.s0", modalities=modalities, encoders="mfcc", audio_encoder="mfcc",
                             train_noise="mix",
                             backbone="b", loss_weights="w", seed=0, snr=snr,
                             cond="clean" if snr == "clean" else f"snr{snr}", wer=wer))
    return rows


def test_rb_pairs_each_run_with_its_audio_only_twin():
    wer = pd.DataFrame(_evals())
    rb = relative_benefits(wer).set_index(["modalities", "snr"])["rb"]
    assert rb[("A+O", "clean")] == pytest.approx((0.2 - 0.18) / 0.2)
    assert rb[("A+O", -10)] == pytest.approx((0.5 - 0.3) / 0.5)
    assert rb[("A+L", "clean")] == pytest.approx(-0.25)


def test_report_files(tmp_path):
    evals = _evals()
    for ev in evals:
        write_json(tmp_path / "runs" / ev["run"] / "eval" / ev["cond"] / "wer.json",
                   dict(wer=ev["wer"], substitutions=1, deletions=0, insertions=0, ref_words=10, utterances=5))
    settings = {"study": "s", "evals": [{k: v for k, v in ev.items() if k != "wer"} for ev in evals]}
    build_report(settings, tmp_path / "runs", tmp_path / "report")
    wer = read_table(tmp_path / "report" / "wer.csv")
    rb = read_table(tmp_path / "report" / "rb.csv")
    assert len(wer) == 6 and len(rb) == 4
    assert set(rb.columns) >= {"modalities", "snr", "wer", "rb", "delta_wer"}
    table = (tmp_path / "report" / "table.md").read_text()
    assert "A+O" in table and "40" in table  # RB at -10 dB = 40 %
    assert (tmp_path / "report" / "rb.png").stat().st_size > 10_000


def test_tables_key_rows_by_every_axis_the_study_varies():
    """Two training-noise recipes: the rows are 'A / mix', 'A / clean', ... not a silent mean."""
    from dmlm.report.tables import pivot

    rows = []
    for noise, wer in (("mix", 0.2), ("clean", 0.4)):
        for ev in _evals():
            rows.append({**ev, "train_noise": noise, "wer": ev["wer"] + wer})
    table = pivot(pd.DataFrame(rows), "wer")
    assert set(table.index) == {f"{m} / {n}" for m in ("A", "A+O", "A+L") for n in ("mix", "clean")}
    assert table.loc["A / clean", "clean"] == pytest.approx(0.2 + 0.4)
    assert "encoders" not in table.index.name  # encoders differ between sets by construction only
