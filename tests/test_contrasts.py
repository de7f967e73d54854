"""contrasts.csv (dmlm.report.contrasts): paired differences between the values of an axis, on
made-up evaluations whose WERs and intervals are known by hand."""

import numpy as np
import pandas as pd
import pytest

from dmlm.errors import DmlmError
from dmlm.report.collect import Utterances
from dmlm.report.contrasts import contrast_table
from dmlm.report.tables import Bootstrap, rb_table

AXES = ["modalities", "encoders", "order", "audio_encoder", "image_encoder", "train_noise", "backbone",
        "loss_weights", "seed", "snr"]
BOOT = {"bootstrap_resamples": 200, "confidence": 0.95, "bootstrap_seed": 0}


def study(cases, ids=tuple("abcdefgh")):
    """(frame, utterances): cases are (modalities, order, encoders, backbone, {seed: wer}); every
    utterance of an evaluation has the same share of errors, so only seeds spread the resamples."""
    rows, utts = [], {}
    for modalities, order, encoders, backbone, by_seed in cases:
        for seed, wer in by_seed.items():
            run = f"{modalities}.{encoders}.{order if modalities != 'A' else 'any'}.{backbone}.s{seed}"
            rows.append(dict(run=run, modalities=modalities, encoders=encoders, order=order, audio_encoder="mfcc",
                             image_encoder=encoders.split("+")[1] if "+" in encoders else "", train_noise="mix",
                             backbone=backbone, loss_weights="w", seed=seed, snr=0, cond="snr0", wer=wer))
            utts[(run, "snr0")] = Utterances(ids=np.array(ids), errors=np.full(len(ids), wer * 8),
                                             ref_words=np.full(len(ids), 8.0))
    return pd.DataFrame(rows), utts


def contrasts(frame, utts):
    boot = Bootstrap(BOOT)
    return contrast_table(frame, rb_table(frame, utts, AXES, boot), utts, AXES, boot)


CASES = [("A", "audio_first", "mfcc", "b", {0: 0.5, 1: 0.5}), ("A", "audio_last", "mfcc", "b", {0: 0.5, 1: 0.5}),
         ("A+O", "audio_first", "mfcc", "b", {0: 0.25, 1: 0.25}), ("A+O", "audio_last", "mfcc", "b", {0: 0.375, 1: 0.5}),
         ("A+I", "audio_first", "mfcc+patches", "b", {0: 0.5, 1: 0.5}),
         ("A+I", "audio_first", "mfcc+craft", "b", {0: 0.25, 1: 0.5})]


def test_contrasts_pair_each_value_with_the_axis_reference():
    """audio-last against audio-first for A+O, seed by seed on shared resamples; audio only (the
    same runs under both orders) is not contrasted with itself; an encoders axis takes its
    reference per modality set."""
    table = contrasts(*study(CASES)).set_index(["axis", "modalities", "metric"])
    assert ("order", "A", "wer") not in table.index  # the same runs: nothing to contrast
    order_wer = table.loc[("order", "A+O", "wer")]
    assert (order_wer["reference"], order_wer["value"]) == ("audio_first", "audio_last")
    assert order_wer["difference"] == pytest.approx(((0.375 - 0.25) + (0.5 - 0.25)) / 2)
    # every utterance errs alike: the only spread is over the 2 seeds (0.125 and 0.25 points)
    assert 0.125 - 1e-9 <= order_wer["ci_low"] < order_wer["ci_high"] <= 0.25 + 1e-9
    order_rb = table.loc[("order", "A+O", "rb")]
    assert order_rb["reference_mean"] == pytest.approx(0.5) and order_rb["value_mean"] == pytest.approx((0.25 + 0) / 2)
    assert order_rb["difference"] == pytest.approx(-0.375) and order_rb["ci_high"] < 0
    craft = table.loc[("encoders", "A+I", "rb")]
    assert (craft["reference"], craft["value"], craft["seeds"]) == ("mfcc+patches", "mfcc+craft", 2)
    assert craft["difference"] == pytest.approx(0.25)  # RB 0.5 vs 0 at seed 0, 0 vs 0 at seed 1


def test_without_audio_only_runs_only_wer_is_contrasted():
    """e.g. loss weights compared by WER alone: no RB contrast, no lookup of a missing twin."""
    frame, utts = study(CASES)
    table = contrasts(frame[frame["modalities"] != "A"], utts)
    assert set(table["metric"]) == {"wer"} and len(table) == 2  # order (A+O) and encoders (A+I)


def test_a_second_varying_axis_is_named_in_each_row():
    """order contrasted under two backbones: two rows told apart by `given`, not one hiding the other."""
    cases = [c for c in CASES if c[0] in ("A", "A+O")]
    cases += [(m, o, e, "mamba", {s: w + 0.125 for s, w in by_seed.items()}) for m, o, e, _, by_seed in cases]
    table = contrasts(*study(cases))
    order = table[(table["axis"] == "order") & (table["metric"] == "wer")]
    assert sorted(order["given"]) == ["backbone=b", "backbone=mamba"]
    backbone = table[(table["axis"] == "backbone") & (table["metric"] == "wer")]
    assert sorted(backbone["given"]) == ["order=audio_first", "order=audio_first", "order=audio_last"]
    assert backbone["difference"].to_numpy() == pytest.approx([0.125] * 3)  # A (once), A+O first, A+O last


def test_a_missing_reference_is_skipped_not_replaced():
    """At -10 dB the patches runs are missing: craft and raster are not compared with each other."""
    cases = [c for c in CASES if c[0] == "A+I"] + [("A+I", "audio_first", "mfcc+raster", "b", {0: 0.125, 1: 0.125})]
    frame, utts = study(cases)
    noisy = frame[frame["encoders"] != "mfcc+patches"].assign(snr=-10, cond="snr-10")
    for run in noisy["run"]:
        utts[(run, "snr-10")] = utts[(run, "snr0")]
    table = contrasts(pd.concat([frame, noisy], ignore_index=True), utts)
    assert set(table["snr"]) == {0}
    assert set(table["reference"]) == {"mfcc+patches"} and set(table["value"]) == {"mfcc+craft", "mfcc+raster"}


def test_rb_uses_the_seeds_that_have_twins():
    cases = [c for c in CASES if c[1] == "audio_first" or c[0] == "A+O"]
    frame, utts = study(cases)
    frame = frame[~((frame["modalities"] == "A") & (frame["seed"] == 1))]  # seed 1 lost its audio-only run
    table = contrasts(frame, utts).set_index(["axis", "modalities", "metric"])
    assert table.loc[("order", "A+O", "wer"), "seeds"] == 2
    assert table.loc[("order", "A+O", "rb"), "seeds"] == 1
    assert table.loc[("order", "A+O", "rb"), "difference"] == pytest.approx(0.25 - 0.5)  # seed 0: RB 0.25 vs 0.5


def test_sides_on_different_test_sets_are_refused():
    frame, utts = study(CASES)
    run = frame[(frame["modalities"] == "A+O") & (frame["order"] == "audio_last")]["run"].iloc[0]
    u = utts[(run, "snr0")]
    utts[(run, "snr0")] = Utterances(ids=np.array(list("abcdefgz")), errors=u.errors, ref_words=u.ref_words)
    with pytest.raises(DmlmError, match="different test sets"):
        contrasts(frame, utts)


def test_contrasts_figure(tmp_path):
    """contrasts.png: one panel per axis and metric (here order and backbone, WER and RB)."""
    from PIL import Image

    from dmlm.report.plots import plot_contrasts

    cases = [c for c in CASES if c[0] in ("A", "A+O")]
    cases += [(m, o, e, "mamba", {s: w + 0.125 for s, w in by_seed.items()}) for m, o, e, _, by_seed in cases]
    table = contrasts(*study(cases))
    plot_contrasts("s", table, tmp_path / "contrasts.png", 0.95)
    plot_contrasts("s", table.iloc[:0], tmp_path / "empty.png", 0.95)
    panels = table.groupby(["axis", "metric"]).ngroups
    assert panels == 4
    width = Image.open(tmp_path / "contrasts.png").size[0]
    assert width > 3 * Image.open(tmp_path / "empty.png").size[0]  # 4 panels side by side vs 1


def test_noise_trend_compares_each_snr_with_the_noisiest():
    """axis `snr`: RB at each SNR minus RB at the noisiest, on the same runs; here the lips' RB
    grows with the noise (0.5 at 0 dB, 2/3 at -10 dB): a negative difference."""
    cases = [("A", "audio_first", "mfcc", "b", {0: 0.5, 1: 0.5}), ("A+L", "audio_first", "mfcc+pixels", "b", {0: 0.25, 1: 0.25})]
    frame, utts = study(cases)
    noisy = frame.assign(snr=-10, cond="snr-10", wer=frame["wer"].map({0.5: 0.75, 0.25: 0.25}))
    for run, wer in zip(noisy["run"], noisy["wer"]):
        u = utts[(run, "snr0")]
        utts[(run, "snr-10")] = Utterances(ids=u.ids, errors=np.full(len(u.ids), wer * 8), ref_words=u.ref_words)
    table = contrasts(pd.concat([frame, noisy], ignore_index=True), utts)
    trend = table[table["axis"] == "snr"].iloc[0]
    assert (trend["modalities"], trend["reference"], trend["value"], trend["metric"]) == ("A+L", -10, 0, "rb")
    assert trend["difference"] == pytest.approx(0.5 - 2 / 3) and trend["ci_high"] < 0
    assert len(table) == 1  # no WER row for the trend, nothing else varies


def test_summary_leaves_the_trend_reference_cell_empty():
    """A study that also varies an axis has contrasts at the noisiest SNR, where the noise trend has
    none: that cell is empty in summary.md, not `nan`."""
    from dmlm.report.summary import contrasts_markdown

    rows = [dict(axis="encoders", reference="mfcc+pixels", value="mfcc+visemes", modalities="A+L", given="",
                 snr=snr, metric="wer", difference=-0.1, ci_low=-0.12, ci_high=-0.08) for snr in (0, -10)]
    rows.append(dict(axis="snr", reference=-10, value=0, modalities="A+L", given="encoders=mfcc+pixels", snr=0,
                     metric="rb", difference=-0.05, ci_low=-0.08, ci_high=-0.02))
    text = contrasts_markdown(pd.DataFrame(rows))
    assert "nan" not in text and "RB at each SNR - RB at -10 dB" in text
    trend_row = next(line for line in text.splitlines() if "RB at each SNR" in line)
    assert trend_row.rstrip(" |").endswith("]") and trend_row.count("[") == 1  # 0 dB filled, -10 dB empty
