"""WER, RB, perceptual score, bootstrap CIs and the report files, against values computed by hand
and by jiwer itself."""

import math

import jiwer
import numpy as np
import pandas as pd
import pytest

from dmlm.evaluation.permute import derangement
from dmlm.evaluation.wer import corpus_wer, utterance_counts
from dmlm.report.cli import OUTPUTS, build_report
from dmlm.report.metrics import (
    draw_resamples,
    interval,
    perceptual_score,
    perceptual_with_ci,
    rb_with_ci,
    relative_benefit,
    wer_with_ci,
)
from dmlm.report.tables import Bootstrap, rb_table, snr_order
from dmlm.storage import read_table, write_json, write_table


def test_corpus_wer_equals_jiwer():
    refs = ["3 x plus 5 equals 12", "log of 2 y minus 4 equals 9"]
    hyps = ["3 x plus 6 equals 12", "log of y minus 4 equals 9 9"]
    out = corpus_wer(refs, hyps)
    assert out["wer"] == pytest.approx(jiwer.wer(refs, hyps))
    # by hand: 1 substitution; 1 deletion ("2") and 1 insertion ("9"); 6 + 8 = 14 reference words
    assert (out["substitutions"], out["deletions"], out["insertions"]) == (1, 1, 1)
    assert out["ref_words"] == 14 and out["wer"] == pytest.approx(3 / 14)
    # the per-utterance counts the bootstrap resamples add up to the corpus counts
    per = [utterance_counts(r, h) for r, h in zip(refs, hyps)]
    assert per[0] == {"substitutions": 1, "deletions": 0, "insertions": 0, "ref_words": 6}
    for key in ("substitutions", "deletions", "insertions", "ref_words"):
        assert sum(p[key] for p in per) == out[key]


def test_relative_benefit_by_hand():
    assert relative_benefit(0.20, 0.16) == pytest.approx(0.20)
    assert relative_benefit(0.5, 0.6) == pytest.approx(-0.2)
    assert math.isnan(relative_benefit(0.0, 0.1))  # zero-WER rule: undefined, not 0 or inf
    # the same function on arrays (bootstrap resamples), element by element
    rb = relative_benefit(np.array([0.2, 0.0, 0.5]), np.array([0.16, 0.1, 0.5]))
    assert rb[0] == pytest.approx(0.2) and math.isnan(rb[1]) and rb[2] == 0


def test_perceptual_score_by_hand():
    assert perceptual_score(0.2, 0.3) == pytest.approx((0.1, 0.5))
    assert perceptual_score(0.4, 0.3) == pytest.approx((-0.1, -0.25))  # permuting helped: negative
    raw, norm = perceptual_score(0.0, 0.3)
    assert raw == pytest.approx(0.3) and math.isnan(norm)


def test_derangement_moves_every_item_and_is_seeded():
    for seed in range(20):
        perm = derangement(7, seed)
        assert sorted(perm) == list(range(7)) and not np.any(perm == np.arange(7))
    assert derangement(50, 3).tolist() == derangement(50, 3).tolist()
    assert derangement(50, 3).tolist() != derangement(50, 4).tolist()
    # n = 3 has exactly two derangements (the two 3-cycles); both are drawn
    assert {tuple(derangement(3, s)) for s in range(40)} == {(1, 2, 0), (2, 0, 1)}
    from dmlm.errors import DmlmError

    with pytest.raises(DmlmError, match="at least 2"):
        derangement(1, 0)


def test_resamples_are_seeded_counts():
    a, b = draw_resamples(10, 3, 200, seed=5), draw_resamples(10, 3, 200, seed=5)
    assert (a.utterances == b.utterances).all() and (a.seeds == b.seeds).all()
    assert (a.utterances.sum(axis=1) == 10).all() and (a.seeds.sum(axis=1) == 3).all()
    one = draw_resamples(10, 1, 200, seed=5)
    assert (one.seeds == 1).all()  # a single seed is not resampled


# Two utterances of 2 reference words. Resampling them with replacement gives (u1, u1) with
# probability 1/4, (u1, u2) with 1/2 and (u2, u2) with 1/4, so each bootstrap distribution below
# has three values with masses 1/4, 1/2, 1/4: its 2.5/97.5 percentiles are the two extremes and
# its 30/70 percentiles both the middle value.
REFS = np.array([2.0, 2.0])
B = 4000


def test_wer_ci_by_hand():
    draws = draw_resamples(2, 1, B, seed=0)
    # errors 0 and 2: WER 0 (both u1), 2/4 = 0.5 (one each), 4/4 = 1 (both u2); corpus WER 0.5
    assert wer_with_ci([[0, 2]], REFS, draws, 0.95) == pytest.approx((0.5, 0.0, 1.0))
    assert wer_with_ci([[0, 2]], REFS, draws, 0.40) == pytest.approx((0.5, 0.5, 0.5))


def test_seeds_are_resampled_too():
    # two seeds at WER 0.25 and 0.75 on every utterance: only the seed draw moves the mean:
    # (s1, s1) 0.25, (s1, s2) 0.5, (s2, s2) 0.75
    draws = draw_resamples(2, 2, B, seed=1)
    assert wer_with_ci([[0.5, 0.5], [1.5, 1.5]], REFS, draws, 0.95) == pytest.approx((0.5, 0.25, 0.75))
    assert wer_with_ci([[0.5, 0.5], [1.5, 1.5]], REFS, draws, 0.40) == pytest.approx((0.5, 0.5, 0.5))


def test_rb_ci_by_hand_and_zero_wer_rule():
    draws = draw_resamples(2, 1, B, seed=2)
    # audio-only: 1 error per utterance, WER 0.5 on every resample; A+M: errors 0 and 2 as above, so
    # RB = (0.5 - w) / 0.5 is 1, 0 or -1; the pair shares each resample
    assert rb_with_ci([[1, 1]], [[0, 2]], REFS, draws, 0.95) == pytest.approx((0.0, -1.0, 1.0))
    assert rb_with_ci([[1, 1]], [[0, 2]], REFS, draws, 0.40) == pytest.approx((0.0, 0.0, 0.0))
    # A+M errors 0 and 1: RB of the resamples 1, 0.5, 0; corpus RB (0.5 - 0.25) / 0.5
    assert rb_with_ci([[1, 1]], [[0, 1]], REFS, draws, 0.95) == pytest.approx((0.5, 0.0, 1.0))
    mean, low, high = rb_with_ci([[0, 0]], [[0, 1]], REFS, draws, 0.95)  # WER_A = 0: undefined
    assert math.isnan(mean) and math.isnan(low) and math.isnan(high)


def test_perceptual_ci_by_hand():
    draws = draw_resamples(2, 1, B, seed=3)
    # WER 0.25 on every resample (half an error per 2 words) and, permuted, errors 0.5 and 1.5:
    # 0.25, 0.5 or 0.75; raw score 0, 0.25 or 0.5; corpus: raw 0.5 - 0.25, normalised 0.25 / 0.25
    assert perceptual_with_ci([[0.5, 0.5]], [[0.5, 1.5]], REFS, draws, 0.95) == pytest.approx((0.25, 1.0, 0.0, 0.5))
    # errors 1 and 3 permuted: WER 1.0 (0.5, 1.0, 1.5 on the resamples); raw 0.75, normalised 3
    assert perceptual_with_ci([[0.5, 0.5]], [[1, 3]], REFS, draws, 0.95) == pytest.approx((0.75, 3.0, 0.25, 1.25))


def test_interval_ignores_undefined_resamples():
    assert interval(np.array([np.nan, 1.0, 1.0]), 0.95) == (1.0, 1.0)
    assert all(math.isnan(v) for v in interval(np.array([np.nan]), 0.95))


def test_snr_order_goes_from_clean_to_loudest_noise():
    assert snr_order(["clean", -10, 10, 0]) == ["clean", 10, 0, -10]


# a small study: 10 test utterances of 5 words (50 reference words); errors per evaluation
WORDS = "one two three four five".split()
ERRORS = {  # (modalities, snr) -> substituted words in total (spread over the utterances)
    ("A", "clean"): 10, ("A", -10): 25,
    ("A+O", "clean"): 9, ("A+O", -10): 15,
    ("A+L", "clean"): 12, ("A+L", -10): 25,
}
PERMUTED = {("A+O", "clean", "ocr"): 20, ("A+O", -10, "ocr"): 15, ("A+L", "clean", "lips"): 12,
            ("A+L", -10, "lips"): 30}


def hypotheses(n_errors: int) -> list[str]:
    """10 hypotheses of WORDS with ``n_errors`` words substituted, spread over the utterances."""
    out = []
    for i in range(10):
        k = n_errors // 10 + (1 if i < n_errors % 10 else 0)
        out.append(" ".join(["wrong"] * k + WORDS[k:]))
    return out


def write_eval(folder, n_errors):
    refs = [" ".join(WORDS)] * 10
    hyps = hypotheses(n_errors)
    write_table(folder / "hyps.tsv", [{"id": f"t{i}", "reference": r, "hypothesis": h, **utterance_counts(r, h)}
                                      for i, (r, h) in enumerate(zip(refs, hyps))])
    write_json(folder / "wer.json", {**corpus_wer(refs, hyps), "decode_seconds": 2.0, "utterances_per_s": 5.0,
                                     "generated_tokens": 50, "tokens_per_s": 25.0, "device": "cpu", "threads": 1,
                                     "tokens_per_utterance": {"audio": 30.0, "transcript": 5.0, "ocr": 5.0}})


def evals():
    rows = []
    for modalities in ("A", "A+O", "A+L"):
        for snr in ("clean", -10):
            enc = "mfcc+pixels" if modalities == "A+L" else "mfcc"
            rows.append(dict(run=f"{modalities}.{enc}.mix.b.w.s0", modalities=modalities, encoders=enc,
                             audio_encoder="mfcc", lips_encoder="pixels" if "L" in modalities else "",
                             image_encoder="", train_noise="mix", backbone="b", loss_weights="w", seed=0,
                             placement="second_half", snr=snr, cond="clean" if snr == "clean" else f"snr{snr}"))
    return rows


def make_study(root, skip=()):
    for ev in evals():
        run_dir = root / "runs" / ev["run"]
        if ev["run"] in skip:
            continue
        (run_dir / "checkpoint.pt").parent.mkdir(parents=True, exist_ok=True)
        (run_dir / "checkpoint.pt").write_bytes(b"")
        write_eval(run_dir / "eval" / ev["cond"], ERRORS[ev["modalities"], ev["snr"]])
        for (m, snr, modality), n in PERMUTED.items():
            if m == ev["modalities"] and snr == ev["snr"]:
                write_eval(run_dir / "eval" / ev["cond"] / f"perm-{modality}", n)
        write_table(run_dir / "train_log.tsv", [
            {"step": 0, "train_loss": "", "val_loss": 3.0, "val_transcript_loss": 3.0},
            {"step": 10, "train_loss": 2.5, "val_loss": 2.0, "val_transcript_loss": 2.2}])
    return {"study": "s", "evals": evals(), "families": {"b": "opt"},
            "report": {"bootstrap_resamples": 500, "confidence": 0.95, "bootstrap_seed": 0}}


def test_report_files(tmp_path):
    settings = make_study(tmp_path)
    missing = build_report(settings, tmp_path / "runs", tmp_path / "report")
    assert missing == []
    for name in OUTPUTS:
        assert (tmp_path / "report" / name).stat().st_size > 0, name
    for name in ("rb.png", "wer_heatmap.png", "perceptual.png", "training.png", "contrasts.png"):
        assert (tmp_path / "report" / name).stat().st_size > 10_000, name
    wer = read_table(tmp_path / "report" / "wer.csv").set_index(["modalities", "snr"])
    assert wer.loc[("A", "clean"), "wer"] == pytest.approx(0.2) and wer.loc[("A+O", "-10"), "wer"] == 0.3
    assert wer.loc[("A", "clean"), "wer_ci_low"] <= 0.2 <= wer.loc[("A", "clean"), "wer_ci_high"]
    rb = read_table(tmp_path / "report" / "rb.csv").set_index(["modalities", "snr"])
    assert len(rb) == 4 and {"rb", "delta_wer", "wer_audio", "rb_ci_low", "rb_ci_high"} <= set(rb.columns)
    assert rb.loc[("A+O", "clean"), "rb"] == pytest.approx((0.2 - 0.18) / 0.2)
    assert rb.loc[("A+O", "-10"), "rb_mean"] == pytest.approx((0.5 - 0.3) / 0.5)
    assert rb.loc[("A+L", "clean"), "rb"] == pytest.approx(-0.2) and rb.loc[("A+L", "-10"), "rb"] == 0
    # every utterance of A at -10 dB has 2-3 errors, of A+O 1-2: RB stays clearly positive
    assert 0 < rb.loc[("A+O", "-10"), "rb_ci_low"] < 0.4 < rb.loc[("A+O", "-10"), "rb_ci_high"]
    perc = read_table(tmp_path / "report" / "perceptual.csv").set_index(["modalities", "snr", "permuted"])
    assert perc.loc[("A+O", "clean", "ocr"), "score"] == pytest.approx(0.4 - 0.18)
    assert perc.loc[("A+O", "clean", "ocr"), "score_norm"] == pytest.approx((0.4 - 0.18) / 0.18)
    assert perc.loc[("A+L", "-10", "lips"), "score"] == pytest.approx(0.1)
    speed = read_table(tmp_path / "report" / "speed.csv")
    assert set(speed["tokens_per_s"]) == {25.0} and len(speed) == 6
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "Missing" not in summary
    # the peak-RB table: A+O peaks at -10 dB (RB 40.0%), A+L at -10 dB (0.0 > -20.0)
    peak_rows = [line for line in summary.splitlines() if line.startswith("| A+")]
    assert any("A+O" in r and "-10 dB" in r and "40.0 [" in r for r in peak_rows)
    for phrase in ("Synchronized A+L", "single input order", "One loss-weight setting (w)",
                   "Only one backbone, b (Transformer)", "5.0 utterances/s, 25 generated tokens/s",
                   "A+O 12% (mean RB 25.0%)", "ocr in A+O +11.0 WER points (normalised +0.61)"):
        assert phrase in summary, phrase


def test_report_names_what_is_missing(tmp_path, capsys):
    """A run whose training failed (no checkpoint, no evaluations) and a permuted evaluation that
    never ran: the report is made from the rest and lists both, in summary.md and on stderr."""
    from dmlm.cli import main

    settings = make_study(tmp_path, skip={"A+L.mfcc+pixels.mix.b.w.s0"})
    failed = tmp_path / "runs" / "A+L.mfcc+pixels.mix.b.w.s0"
    failed.mkdir(parents=True)
    (tmp_path / "runs" / "A+O.mfcc.mix.b.w.s0" / "eval" / "snr-10" / "perm-ocr" / "wer.json").unlink()
    import json

    code = main(["report", "--settings", json.dumps(settings), "--runs-dir", str(tmp_path / "runs"),
                 "--out-dir", str(tmp_path / "report")])
    assert code == 0
    err = capsys.readouterr().err
    summary = (tmp_path / "report" / "summary.md").read_text()
    for text in (err, summary):
        assert "A+L.mfcc+pixels.mix.b.w.s0/eval/clean/wer.json" in text
        assert "A+L.mfcc+pixels.mix.b.w.s0/eval/snr-10/perm-lips/wer.json" in text
        assert "A+L.mfcc+pixels.mix.b.w.s0/train_log.tsv" in text
        assert "A+O.mfcc.mix.b.w.s0/eval/snr-10/perm-ocr/wer.json" in text
        assert "no checkpoint: training failed or did not finish" in text
    assert "6 file(s) missing" in err  # A+L: 2 evaluations, 2 permuted ones, its log; A+O: 1 permuted
    rb = read_table(tmp_path / "report" / "rb.csv")
    assert set(rb["modalities"]) == {"A+O"}  # the rest still reported
    perc = read_table(tmp_path / "report" / "perceptual.csv")
    assert list(perc["snr"].astype(str)) == ["clean"]


def test_rb_pairs_on_an_axis_the_audio_only_runs_vary(tmp_path):
    """A generic extra axis (here `order`): audio-only runs with one value serve every order of
    the A+M runs; where the audio-only runs vary it too, pairs match on it."""
    from dmlm.report.collect import Utterances

    rows, utts = [], {}
    for modalities, order, wer in (("A", "-", 0.5), ("A+O", "audio-first", 0.25), ("A+O", "audio-last", 0.4)):
        run = f"{modalities}.{order}"
        rows.append(dict(run=run, modalities=modalities, order=order, audio_encoder="m", train_noise="mix",
                         backbone="b", loss_weights="w", seed=0, snr=0, cond="snr0", wer=wer))
        utts[(run, "snr0")] = Utterances(ids=np.array(["a", "b"]), errors=np.array([wer * 4] * 2),
                                         ref_words=np.array([4.0, 4.0]))
    frame = pd.DataFrame(rows)
    axes = ["modalities", "order", "audio_encoder", "train_noise", "backbone", "loss_weights", "seed", "snr"]
    boot = Bootstrap({"bootstrap_resamples": 200, "confidence": 0.95, "bootstrap_seed": 0})
    rb = rb_table(frame, utts, axes, boot).set_index("order")
    assert rb.loc["audio-first", "rb"] == pytest.approx(0.5) and rb.loc["audio-last", "rb"] == pytest.approx(0.2)
    assert rb.loc["audio-first", "audio_run"] == "A.-"
    from dmlm.report.analyses import order_sentence

    assert "by input order: audio-first: 50.0% at 0 dB" in order_sentence(rb.reset_index(), axes)


def test_tables_key_rows_by_every_axis_the_study_varies():
    """Two training-noise recipes: the rows are 'A / mix', 'A / clean', ... not a silent mean."""
    from dmlm.report.tables import pivot

    rows = []
    for noise, wer in (("mix", 0.2), ("clean", 0.4)):
        for ev in evals():
            rows.append({**ev, "train_noise": noise, "wer": wer + (0.1 if ev["snr"] == -10 else 0)})
    axes = [a for a in evals()[0] if a not in ("run", "cond")]
    table = pivot(pd.DataFrame(rows), "wer", axes)
    assert set(table.index) == {f"{m} / {n}" for m in ("A", "A+O", "A+L") for n in ("mix", "clean")}
    assert table.loc["A / clean", "clean"] == pytest.approx(0.4) and table.loc["A / mix", -10] == pytest.approx(0.3)
    assert list(table.columns) == ["clean", -10]
    assert "encoders" not in table.index.name  # encoders differ between sets by construction only


def test_report_with_nothing_evaluated_lists_everything(tmp_path):
    settings = make_study(tmp_path, skip={ev["run"] for ev in evals()})
    (tmp_path / "runs").mkdir(exist_ok=True)
    missing = build_report(settings, tmp_path / "runs", tmp_path / "report")
    assert len(missing) == 6 + 4 + 3  # evaluations, permuted evaluations, training logs
    assert {m.reason for m in missing} == {"run not started: no run folder"}
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "## Missing (13 file(s))" in summary and "No evaluation of this study was found." in summary
    for name in OUTPUTS:
        assert (tmp_path / "report" / name).exists(), name


def test_an_unreadable_evaluation_is_named(tmp_path):
    settings = make_study(tmp_path)
    broken = tmp_path / "runs" / "A+O.mfcc.mix.b.w.s0" / "eval" / "clean" / "wer.json"
    broken.write_text("{ truncated")
    missing = build_report(settings, tmp_path / "runs", tmp_path / "report")
    assert [m.path for m in missing] == [str(broken.parent)] and missing[0].reason.startswith("unreadable")
    rb = read_table(tmp_path / "report" / "rb.csv")
    assert len(rb) == 3  # A+O at -10 dB and A+L at both SNRs


def test_report_settings_from_the_config():
    from pathlib import Path

    import yaml

    from dmlm.config import validate_config
    from dmlm.errors import DmlmError
    from dmlm.report.settings import report_settings

    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "presets" / "tiny.yaml").read_text())
    settings = report_settings(config, "tiny")
    assert settings["report"] == {"bootstrap_resamples": 1000, "confidence": 0.95, "bootstrap_seed": 0}
    assert settings["families"] == {"opt-tiny": "opt"} and len(settings["evals"]) == 4
    assert "study" not in settings["evals"][0] and {"backbone", "loss_weights", "snr"} <= set(settings["evals"][0])
    config["report"] = {"confidence": 1.5}
    with pytest.raises(DmlmError, match=r"config key report\.confidence"):
        validate_config(config)
    config["report"] = {"confidence": 0.9, "bootstrap_resamples": 200}
    validate_config(config)
    assert report_settings(config, "tiny")["report"]["confidence"] == 0.9
    with pytest.raises(DmlmError, match="no study 'nope'"):
        report_settings(config, "nope")


def test_two_seeds_average_and_widen_the_interval(tmp_path):
    """Seed 1 repeats seed 0 with 5 more errors in every A+O evaluation: the cell's mean is the
    mean of the two seeds, RB's mean the mean of the per-seed RBs."""
    settings = make_study(tmp_path)
    second = []
    for ev in evals():
        ev1 = {**ev, "seed": 1, "run": ev["run"].replace(".s0", ".s1")}
        second.append(ev1)
        n = ERRORS[ev["modalities"], ev["snr"]] + (5 if ev["modalities"] == "A+O" else 0)
        write_eval(tmp_path / "runs" / ev1["run"] / "eval" / ev1["cond"], n)
        (tmp_path / "runs" / ev1["run"] / "checkpoint.pt").write_bytes(b"")
        write_table(tmp_path / "runs" / ev1["run"] / "train_log.tsv", [{"step": 0, "val_transcript_loss": 3.0}])
        for (m, snr, modality), k in PERMUTED.items():
            if m == ev["modalities"] and snr == ev["snr"]:
                write_eval(tmp_path / "runs" / ev1["run"] / "eval" / ev1["cond"] / f"perm-{modality}", k)
    settings["evals"] += second
    assert build_report(settings, tmp_path / "runs", tmp_path / "report") == []
    wer = read_table(tmp_path / "report" / "wer.csv").set_index(["modalities", "snr", "seed"])
    assert wer.loc[("A+O", "clean", 1), "wer"] == pytest.approx(0.28)
    assert wer.loc[("A+O", "clean", 0), "wer_mean"] == pytest.approx((0.18 + 0.28) / 2)
    assert wer.loc[("A+O", "clean", 0), "seeds"] == 2
    rb = read_table(tmp_path / "report" / "rb.csv").set_index(["modalities", "snr", "seed"])
    assert rb.loc[("A+O", "-10", 1), "rb"] == pytest.approx((0.5 - 0.4) / 0.5)
    assert rb.loc[("A+O", "-10", 0), "rb_mean"] == pytest.approx((0.4 + 0.2) / 2)
    # resampling the seeds too: the interval spans both seeds' RB
    assert rb.loc[("A+O", "-10", 0), "rb_ci_low"] < 0.2 and rb.loc[("A+O", "-10", 0), "rb_ci_high"] > 0.4
    assert "mean over seeds (up to 2)" in (tmp_path / "report" / "summary.md").read_text()


def test_an_audio_only_study_says_what_it_cannot_compute(tmp_path):
    settings = make_study(tmp_path)
    settings["evals"] = [ev for ev in settings["evals"] if ev["modalities"] == "A"]
    assert build_report(settings, tmp_path / "runs", tmp_path / "report") == []
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "no multimodal run with an audio-only twin, so no RB peak is computed" in summary
    assert "Sequence noise is not computed: the study has no multimodal run." in summary
    assert len(read_table(tmp_path / "report" / "rb.csv")) == 0
    assert (tmp_path / "report" / "perceptual.png").stat().st_size > 5_000


def test_a_study_without_audio_only_runs_says_why_it_has_no_rb(tmp_path):
    # study `weights` compares loss weights of A+L and A+O runs by WER: no audio-only twin, no RB
    settings = make_study(tmp_path)
    settings["evals"] = [ev for ev in settings["evals"] if ev["modalities"] != "A"]
    assert build_report(settings, tmp_path / "runs", tmp_path / "report") == []
    summary = (tmp_path / "report" / "summary.md").read_text()
    rb_section = summary.split("## Relative benefit")[1].split("## Perceptual score")[0]
    assert "no multimodal run with an audio-only twin" in rb_section
    assert "| modalities" not in rb_section and "RB at peak" not in summary  # no empty table, no undefined peaks
    assert "neither holds" not in summary and "no lips (synchronized) run" not in summary
    assert "no RB without an audio-only twin" in summary
