"""The analyses' sentences: computed from the numbers, and saying so where the study lacks an axis."""

import pandas as pd

from dmlm.report import analyses

AXES = ["modalities", "backbone", "loss_weights", "seed", "snr"]


def rb_frame(curves: dict, backbone="opt-small") -> pd.DataFrame:
    """rb.csv-like rows: {modalities: {snr: mean RB}} with a +-0.05 interval, one seed."""
    rows = []
    for modalities, by_snr in curves.items():
        for snr, rb in by_snr.items():
            rows.append(dict(run=f"{modalities}.r", modalities=modalities, backbone=backbone, loss_weights="paper",
                             seed=0, snr=snr, rb=rb, rb_mean=rb, rb_ci_low=rb - 0.05, rb_ci_high=rb + 0.05, seeds=1))
    return pd.DataFrame(rows)


def test_peak_snr_and_the_synchronized_pattern():
    rb = rb_frame({"A+L": {"clean": 0.0, 0: 0.05, -10: 0.2}, "A+I": {"clean": 0.01, 0: 0.1, -10: 0.02}})
    peaks = analyses.peak_table(rb, AXES).set_index("set")
    assert peaks.loc["A+L", "peak_snr"] == -10 and peaks.loc["A+I", "peak_snr"] == 0
    assert peaks.loc["A+I", "rb_peak_ci_low"] == 0.1 - 0.05
    sentence = analyses.peak_sentence(peaks.reset_index())
    assert "A+L at -10 dB (20.0% [15.0, 25.0])" in sentence and "A+I at 0 dB (10.0% [5.0, 15.0])" in sentence
    assert sentence.endswith("2 of 2 peak intervals lie above 0 (a benefit distinguishable from none).")
    sync = analyses.sync_sentence(peaks.reset_index(), ["clean", 0, -10])
    assert "Synchronized A+L (RB 20.0% at -10 dB" in sync and "unsynchronized A+I (RB 2.0% at -10 dB" in sync
    assert "both hold" in sync
    # lips peaking at a moderate level instead: only the image half of the pattern holds
    rb2 = rb_frame({"A+L": {"clean": 0.0, 0: 0.3, -10: 0.2}, "A+I": {"clean": 0.01, 0: 0.1, -10: 0.02}})
    assert "only the second holds" in analyses.sync_sentence(analyses.peak_table(rb2, AXES), ["clean", 0, -10])


def test_sentences_say_what_the_study_lacks():
    rb = rb_frame({"A+O": {"clean": 0.1, -10: 0.2}})
    peaks = analyses.peak_table(rb, AXES)
    assert "no lips (synchronized) run" in analyses.sync_sentence(peaks, ["clean", -10])
    rb_lo = rb_frame({"A+O": {"clean": 0.1, -10: 0.2}, "A+L": {"clean": 0.1, -10: 0.3}})
    assert "no moderate noise level" in analyses.sync_sentence(analyses.peak_table(rb_lo, AXES), ["clean", -10])
    assert "single input order" in analyses.order_sentence(rb, AXES)
    wer = rb.assign(wer=0.3)
    assert "One loss-weight setting (paper) only" in analyses.loss_weights_sentence(wer, pd.DataFrame(), AXES)
    speed = wer.assign(utterances_per_s=10.0, tokens_per_s=200.0)
    sentence = analyses.backbone_sentence(wer, rb, speed, {"opt-small": "opt"})
    assert sentence.startswith("Only one backbone, opt-small (Transformer)") and "10.0 utterances/s" in sentence
    assert "did not record tokens per utterance" in analyses.sequence_noise_sentence(wer, rb, AXES)


def test_transformer_against_mamba():
    rows = []
    for backbone, wer, rb, speed in (("opt-small", 0.4, 0.1, 10.0), ("mamba-small", 0.5, 0.2, 20.0)):
        frame = rb_frame({"A+O": {"clean": rb, -10: rb}}, backbone)
        rows.append(frame.assign(wer=wer, utterances_per_s=speed, tokens_per_s=10 * speed))
    frame = pd.concat(rows, ignore_index=True)
    sentence = analyses.backbone_sentence(frame, frame, frame, {"opt-small": "opt", "mamba-small": "mamba"})
    assert "opt-small (Transformer): WER 40.0%, RB 10.0%, 10.0 utterances/s, 100 generated tokens/s" in sentence
    assert "mamba-small (Mamba): WER 50.0%, RB 20.0%, 20.0 utterances/s, 200 generated tokens/s" in sentence
    assert "no Transformer-against-Mamba pair" not in sentence


def test_loss_weights_chosen_on_validation_reported_on_test():
    rows, logs = [], []
    # validation prefers `paper` for A and `flat` for A+O; on test `flat` is better for both
    for modalities, weights, val, wer in (("A", "paper", 1.0, 0.30), ("A", "flat", 1.2, 0.20),
                                          ("A+O", "paper", 1.1, 0.25), ("A+O", "flat", 0.9, 0.15)):
        run = f"{modalities}.{weights}"
        for snr in ("clean", -10):
            rows.append(dict(run=run, modalities=modalities, backbone="b", loss_weights=weights, seed=0, snr=snr,
                             wer=wer))
        logs += [dict(run=run, step=0, val_transcript_loss=5.0), dict(run=run, step=10, val_transcript_loss=val)]
    sentence = analyses.loss_weights_sentence(pd.DataFrame(rows), pd.DataFrame(logs), AXES)
    assert ("A: `paper` (validation transcript loss 1.000; test WER 30.0% mean over SNRs and seeds; `flat` would "
            "have scored 20.0%)") in sentence
    assert "A+O: `flat` (validation transcript loss 0.900; test WER 15.0% mean over SNRs and seeds)" in sentence


def test_sequence_noise_beside_the_benefit():
    rows = []
    for modalities, extra, rb in (("A+I", 60.0, -0.2), ("A+L", 30.0, 0.0), ("A+O", 5.0, 0.1)):
        key = {"A+I": "image", "A+L": "lips", "A+O": "ocr"}[modalities]
        rows.append(dict(run=modalities, modalities=modalities, backbone="b", loss_weights="w", seed=0, snr=0,
                         rb=rb, mean_tokens_audio=30.0, mean_tokens_transcript=10.0, **{f"mean_tokens_{key}": extra}))
    frame = pd.DataFrame(rows)
    sentence = analyses.sequence_noise_sentence(frame, frame, AXES)
    # shares: 60 / 100, 30 / 70, 5 / 45; ranks of share and RB exactly reversed
    assert "A+I 60% (mean RB -20.0%); A+L 43% (mean RB 0.0%); A+O 11% (mean RB 10.0%)" in sentence
    assert "Spearman correlation of share and RB over 3 sets: -1.00 (more sequence noise, less benefit)" in sentence


def test_peaks_over_several_settings_are_counted():
    rb = pd.concat([rb_frame({"A+L": {"clean": 0.0, 0: 0.05, -10: 0.2}, "A+I": {"clean": 0.0, 0: 0.1, -10: 0.0}},
                             "opt"),
                    rb_frame({"A+L": {"clean": 0.0, 0: 0.3, -10: 0.1}, "A+I": {"clean": 0.0, 0: 0.2, -10: 0.1}},
                             "mamba")], ignore_index=True)
    peaks = analyses.peak_table(rb, AXES)
    assert set(peaks["set"]) == {"A+L / opt", "A+I / opt", "A+L / mamba", "A+I / mamba"}
    sentence = analyses.peak_sentence(peaks)
    assert ("A+L at -10 dB (1 of 2), 0 dB (1 of 2) over 2 settings (highest 30.0% [25.0, 35.0] in A+L / mamba)"
            in sentence)
    assert "A+I at 0 dB (2 of 2) over 2 settings (highest 20.0% [15.0, 25.0] in A+I / mamba)" in sentence
    sync = analyses.sync_sentence(peaks, ["clean", 0, -10])
    assert sync.startswith("Synchronized A+L (RB 15.0% at -10 dB, peak at -10 dB (1 of 2), 0 dB (1 of 2))")
    assert "only the second holds" in sync
