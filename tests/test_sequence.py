"""Sequence assembly: block order, blocked/interleaved layout, loss weights (weighted and balanced),
the over-length policy; what the model sees, position by position, built by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from dmlm import grid
from dmlm.errors import DmlmError
from dmlm.model import checkpoint
from dmlm.model.backbone import build_backbone
from dmlm.model.batches import Sequences, assemble_split, collate, dropped_rows, fit_to_length
from dmlm.model.decode import greedy_decode
from dmlm.model.sequence import (
    LOSS_VARIANTS,
    SequenceSettings,
    assemble,
    check_lengths,
    input_streams,
    loss_variant,
    prompt,
    prompt_length,
    sequence_length,
)
from dmlm.model.train import train_run
from dmlm.model.vocab import VocabLayout, text_vocab_size
from dmlm.storage import Ragged, save_ragged
from test_model import TINY, WORDS, fixed_batch_losses, settings, tokenizer_json  # noqa: F401  (a fixture)

torch.set_num_threads(1)

CODEBOOKS = {"audio": 16, "lips": 8, "image": 8}
PAPER = {"audio": 0.3, "lips": 0.5, "image": 0.5, "ocr": 0.5, "transcript": 1.0}

# One utterance with known frame times. Local layout ids (text size 10): <bos> 1, </s> 2, <text> 3,
# <audio> 4, </audio> 5, <lips> 6, </lips> 7, <image> 8, </image> 9, <ocr> 10, </ocr> 11; text
# 12..21, audio 22..37, lips 38..45, image 46..53.
STREAMS = {
    "audio": np.array([0, 5, 7]),  # 25 Hz units, repeats collapsed: frames 0, 1, 3
    "audio.times": np.array([0.0, 0.04, 0.12]),
    "lips": np.array([2, 3]),  # 25 fps: frames 0 and 2
    "lips.times": np.array([0.0, 0.08]),
    "image": np.array([1, 4]),
    "ocr": np.array([3]),
    "transcript": np.array([1, 2]),
}
A = [4, 22, 27, 29, 5]  # <audio> a0 a5 a7 </audio>
L = [6, 40, 41, 7]  # <lips> l2 l3 </lips>
I = [8, 47, 50, 9]  # noqa: E741  <image> i1 i4 </image>
O = [10, 15, 11]  # <ocr> t3 </ocr>
T = [3, 13, 14, 2]  # <text> t1 t2 </s>
# interleaved by time: a0 and l2 both at 0 s (the modality first in the order goes first), a5 at
# 0.04 s, l3 at 0.08 s, a7 at 0.12 s; begin tokens in order, end tokens in reverse order
AL = [4, 6, 22, 40, 27, 41, 29, 7, 5]
LA = [6, 4, 40, 22, 27, 41, 29, 5, 7]

# the study's set written L+I+A+O, under each order value and layout
EXPECTED = {
    ("audio_first", "blocked"): [1, *A, *L, *I, *O, *T],
    ("audio_first", "interleaved"): [1, *AL, *I, *O, *T],
    ("audio_last", "blocked"): [1, *L, *I, *O, *A, *T],
    ("audio_last", "interleaved"): [1, *LA, *I, *O, *T],  # the block sits where lips (first) is
    ("written", "blocked"): [1, *L, *I, *A, *O, *T],
    ("written", "interleaved"): [1, *LA, *I, *O, *T],
    ("OIAL", "blocked"): [1, *O, *I, *A, *L, *T],
    ("OIAL", "interleaved"): [1, *O, *I, *AL, *T],
}


def layout_for(order: str, arrangement: str, modset: str = "L+I+A+O") -> VocabLayout:
    """The layout a run of ``modset`` gets for these axis values (through the grid, as the workflow does)."""
    modalities = grid.modality_names(grid.ordered(modset, order))
    return VocabLayout(modalities, CODEBOOKS, 10, arrangement=grid.run_layout(modset, arrangement))


@pytest.mark.parametrize("order, arrangement", list(EXPECTED), ids=lambda v: str(v))
def test_assembled_ids_for_each_order_and_layout(order, arrangement):
    layout = layout_for(order, arrangement)
    ids, w = assemble(STREAMS, layout, PAPER)
    assert ids.tolist() == EXPECTED[order, arrangement]
    assert prompt(STREAMS, layout).tolist() == EXPECTED[order, arrangement][:-3]  # up to <text>
    lengths = {k: len(v) for k, v in STREAMS.items()}
    assert sequence_length(lengths, layout) == len(ids) and prompt_length(lengths, layout) == len(ids) - 3


def test_weights_at_every_position():
    layout = layout_for("audio_first", "blocked")
    _, w = assemble(STREAMS, layout, PAPER)
    #                       <bos> <audio> a a a </audio> <lips> l l </lips>  image: 4    ocr: 3      transcript: 4
    assert w.tolist() == pytest.approx([0, .3, .3, .3, .3, .3, .5, .5, .5, .5, .5, .5, .5, .5, .5, .5, .5, 1, 1, 1, 1])
    # balanced: a group's weight over its count in this sequence: audio 5 (3 tokens + 2 tags),
    # lips 4, image 4, OCR 3, transcript 4 (<text>, 2 words, </s>)
    _, b = assemble(STREAMS, layout, PAPER, "balanced")
    a, l, i, o, t = .3 / 5, .5 / 4, .5 / 4, .5 / 3, 1 / 4
    assert b.tolist() == pytest.approx([0, a, a, a, a, a, l, l, l, l, i, i, i, i, o, o, o, t, t, t, t])
    assert b.sum() == pytest.approx(sum(PAPER.values()))  # each group adds up to its weight

    layout = layout_for("audio_last", "interleaved")  # <lips> <audio> l2 a0 a5 l3 a7 </audio> </lips> ...
    _, w = assemble(STREAMS, layout, PAPER)
    assert w.tolist() == pytest.approx([0, .5, .3, .5, .3, .3, .5, .3, .3, .5, .5, .5, .5, .5, .5, .5, .5, 1, 1, 1, 1])
    _, b = assemble(STREAMS, layout, PAPER, "balanced")
    assert b.tolist() == pytest.approx([0, l, a, l, a, a, l, a, a, l, i, i, i, i, o, o, o, t, t, t, t])


def test_interleaving_needs_two_synchronized_streams_and_their_times():
    # audio + OCR: nothing to interleave, the layout is the blocked one
    blocked = VocabLayout(["audio", "ocr"], CODEBOOKS, 10)
    inter = VocabLayout(["audio", "ocr"], CODEBOOKS, 10, arrangement="interleaved")
    assert assemble(STREAMS, inter, PAPER)[0].tolist() == assemble(STREAMS, blocked, PAPER)[0].tolist()
    assert input_streams(inter) == ["audio", "ocr"]
    both = VocabLayout(["audio", "lips"], CODEBOOKS, 10, arrangement="interleaved")
    assert input_streams(both) == ["audio", "lips", "audio.times", "lips.times"]
    no_times = {k: v for k, v in STREAMS.items() if k != "lips.times"}
    with pytest.raises(DmlmError, match=r"lips\.times"):
        assemble(no_times, both, PAPER)
    with pytest.raises(DmlmError, match=r"lips\.times holds 1 times for 2 lips tokens"):
        assemble({**STREAMS, "lips.times": np.array([0.0])}, both, PAPER)
    with pytest.raises(DmlmError, match="layout: unknown sequence layout 'zigzag'"):
        VocabLayout(["audio"], CODEBOOKS, 10, arrangement="zigzag")
    # the arrangement travels with the layout (checkpoints); older dicts without it are blocked
    assert VocabLayout.from_dict(both.to_dict()).arrangement == "interleaved"
    assert "arrangement" not in blocked.to_dict()


def test_bad_sequence_settings_name_the_key():
    assert SequenceSettings.from_settings(None) == SequenceSettings("blocked", "error")
    with pytest.raises(DmlmError, match=r"sequence\.layout: unknown layout 'zigzag'"):
        SequenceSettings.from_settings({"layout": "zigzag"})
    with pytest.raises(DmlmError, match=r"sequence\.over_length: unknown policy 'truncate'"):
        SequenceSettings.from_settings({"over_length": "truncate"})
    with pytest.raises(DmlmError, match=r"sequence\.order: unknown key"):
        SequenceSettings.from_settings({"order": "audio_first"})
    assert loss_variant({"audio": 1}) == "weighted"
    with pytest.raises(DmlmError, match=r"loss_weights\.w\.variant: unknown variant 'fair'"):
        loss_variant({"variant": "fair"}, "w")


def test_over_length_policy():
    lengths = np.array([10, 30, 12, 31])
    with pytest.raises(DmlmError, match=r"backbones\.b\.max_positions = 20 .*utterance 3 .* 31 tokens \(2 of 4 .*sequence\.over_length"):
        check_lengths(lengths, 20, "b", "the train split")
    assert check_lengths(lengths, 40, "b", "the train split").all()
    assert check_lengths(lengths, 20, "b", "the train split", "drop").tolist() == [True, False, True, False]
    with pytest.raises(DmlmError, match="none would be left"):
        check_lengths(lengths, 5, "b", "the train split", "drop")
    seqs = Sequences([np.arange(n) for n in lengths], [np.ones(n) for n in lengths], np.array([3, 4, 5, 6]), lengths, 0)
    kept = fit_to_length(seqs, 20, "b", "train", "drop")
    assert kept.lengths.tolist() == [10, 12] and kept.text_start.tolist() == [3, 5]
    assert [len(x) for x in kept.ids] == [10, 12]


# -- training -----------------------------------------------------------------------------------
def make_split(folder, n, seed):
    """Audio (2 units per word) and lips (1 unit per word) both spell the transcript, on one time
    line (a word every 0.2 s); image and OCR ids are noise."""
    rng = np.random.default_rng(seed)
    transcripts = [rng.integers(1, len(WORDS), rng.integers(3, 7)) for _ in range(n)]
    items = {
        "audio": [np.concatenate([[(3 * w) % 16, (3 * w + 1) % 16] for w in t]) for t in transcripts],
        "audio.times": [np.concatenate([[0.2 * k, 0.2 * k + 0.1] for k in range(len(t))]) for t in transcripts],
        "lips": [t % 8 for t in transcripts],
        "lips.times": [0.2 * np.arange(len(t)) + 0.05 for t in transcripts],
        "image": [rng.integers(0, 8, 4) for _ in range(n)],
        "ocr": [rng.integers(1, len(WORDS), rng.integers(0, 3)) for _ in range(n)],
        "transcript": transcripts,
    }
    folder.mkdir(parents=True, exist_ok=True)
    prefixes = {}
    for name, values in items.items():
        prefixes[name] = str(folder / name)
        save_ragged(prefixes[name], values, dtype=np.float64 if name.endswith(".times") else np.int32)
    return prefixes


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("seqdata")
    return {"train": make_split(root / "train", 24, 1), "val": make_split(root / "val", 8, 2)}


def only(prefixes: dict, layout: VocabLayout) -> dict:
    return {k: v for k, v in prefixes.items() if k in (*input_streams(layout), "transcript")}


# one case per axis value: (order, layout, loss-weight variant)
AXIS_VALUES = [
    ("audio_first", "blocked", "weighted"),
    ("audio_last", "blocked", "weighted"),
    ("written", "blocked", "weighted"),
    ("OIAL", "blocked", "weighted"),
    ("audio_first", "interleaved", "weighted"),
    ("audio_last", "interleaved", "weighted"),
    ("audio_first", "blocked", "balanced"),
]


@pytest.mark.parametrize("order, arrangement, variant", AXIS_VALUES, ids=lambda v: str(v))
def test_each_axis_value_overfits_a_fixed_batch(tokenizer_json, data, order, arrangement, variant):  # noqa: F811
    modalities = grid.modality_names(grid.ordered("L+I+A+O", order))
    layout = VocabLayout(modalities, CODEBOOKS, text_vocab_size(tokenizer_json), arrangement=arrangement)
    streams = {k: Ragged.load(p) for k, p in only(data["train"], layout).items()}
    seqs = assemble_split(streams, layout, PAPER, variant)
    ids, w, _ = collate(seqs, np.arange(8))
    # the batch holds what assemble gives for each utterance
    first = assemble({k: r[0] for k, r in streams.items()}, layout, PAPER, variant)
    assert ids[0, : len(first[0])].tolist() == first[0].tolist()
    assert w[0, : len(first[1])].tolist() == pytest.approx(first[1].tolist())
    torch.manual_seed(0)
    model = build_backbone(dict(TINY, hidden=64, ffn=128), layout.vocab_size, "tiny")
    losses = fixed_batch_losses(model, ids, w)
    assert losses[-1] <= 0.5 * losses[0], losses[::10]


def test_interleaved_balanced_run_trains_drops_and_decodes(tokenizer_json, data, tmp_path):  # noqa: F811
    """End to end through train_run: layout and variant from the settings, over-length drop, the
    checkpoint keeps the arrangement and the decoder rebuilds the interleaved prompts."""
    s = settings(
        modalities=["audio", "lips"],
        loss_weights={"variant": "balanced", "audio": 1.0, "lips": 1.0, "transcript": 1.0},
        loss_weights_name="counts",
        sequence={"layout": "interleaved", "over_length": "drop"},
        backbone=dict(TINY, max_positions=30),
    )
    s["training"].update(max_steps=20, eval_every=10)
    layout = VocabLayout(["audio", "lips"], CODEBOOKS, len(WORDS), arrangement="interleaved")
    streams = {split: only(p, layout) for split, p in data.items()}
    lengths = sequence_length({k: Ragged.load(p).lengths() for k, p in streams["train"].items()}, layout)
    assert 0 < (lengths > 30).sum() < len(lengths)  # some train utterances are too long
    with pytest.raises(DmlmError, match=r"sequence\.over_length"):
        train_run(dict(s, sequence={"layout": "interleaved"}), streams, tokenizer_json, str(tmp_path / "e"))
    with pytest.raises(DmlmError, match=r"train:lips\.times is missing"):
        bad = {split: {k: v for k, v in p.items() if k != "lips.times"} for split, p in streams.items()}
        train_run(s, bad, tokenizer_json, str(tmp_path / "e"))
    assert not (tmp_path / "e").exists()

    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        train_run(s, streams, tokenizer_json, str(tmp_path / "run"))
    assert f"left out {(lengths > 30).sum()} of 24 utterances of the train split" in err.getvalue()
    log = pd.read_csv(tmp_path / "run" / "train_log.tsv", sep="\t")
    assert log["val_loss"].iloc[-1] < log["val_loss"].iloc[0]
    model, saved, _ = checkpoint.load(tmp_path / "run" / "checkpoint.pt")
    assert saved.arrangement == "interleaved" and saved.modalities == ["audio", "lips"]
    test = {k: Ragged.load(p) for k, p in streams["val"].items() if k != "transcript"}
    short = [i for i in range(len(test["audio"])) if prompt({k: r[i] for k, r in test.items()}, saved).size < 30]
    hyps = greedy_decode(model, saved, {k: [r[i] for i in short] for k, r in test.items()}, 4, 8, progress=False)
    assert len(hyps) == len(short) > 0
    with pytest.raises(DmlmError, match=r"no 'audio\.times' stream given"):
        greedy_decode(model, saved, {k: v for k, v in test.items() if k != "audio.times"}, 4, 8, progress=False)


@pytest.mark.parametrize("arrangement", ["blocked", "interleaved"])
def test_dropped_sequences_leave_out_exactly_the_audio(tokenizer_json, data, arrangement):  # noqa: F811
    """Modality dropout's sequences: the audio's tokens and tags gone, every other position kept in
    its order with its weight (for the balanced variant too: other groups keep their counts)."""
    modalities = grid.modality_names(grid.ordered("L+I+A+O", "audio_first"))
    layout = VocabLayout(modalities, CODEBOOKS, text_vocab_size(tokenizer_json), arrangement=arrangement)
    streams = {k: Ragged.load(p) for k, p in only(data["train"], layout).items()}
    audio_ids = {layout.begin("audio"), layout.end("audio"), *layout.to_lm("audio", np.arange(CODEBOOKS["audio"])).tolist()}
    for variant in LOSS_VARIANTS:
        seqs = assemble_split(streams, layout, PAPER, variant, drop="audio")
        assert len(seqs.dropped) == len(seqs)
        for i in range(len(seqs)):
            keep = np.array([x not in audio_ids for x in seqs.ids[i].tolist()])
            assert seqs.dropped.ids[i].tolist() == seqs.ids[i][keep].tolist()
            assert seqs.dropped.weights[i].tolist() == seqs.weights[i][keep].tolist()
            assert seqs.lengths[i] - seqs.dropped.lengths[i] == len(streams["audio"][i]) + 2
        # collate takes the rows it is told to from the dropped sequences, padded to the batch
        idx = np.arange(4)
        ids, w, text = collate(seqs, idx, np.array([True, False, True, False]))
        for row, i in enumerate(idx):
            src = seqs.dropped if row in (0, 2) else seqs
            n = src.lengths[i]
            assert ids[row, :n].tolist() == src.ids[i].tolist() and (ids[row, n:] == layout.pad).all()
            assert text[row].sum() == n - src.text_start[i]
        assert ids.shape[1] == max(seqs.lengths[1], seqs.lengths[3], seqs.dropped.lengths[0], seqs.dropped.lengths[2])
    # a subset keeps the two in step
    keep = np.arange(len(seqs)) % 2 == 0
    sub = seqs.subset(keep)
    assert [x.tolist() for x in sub.dropped.ids] == [x.tolist() for x in seqs.dropped.ids[::2]]


def test_dropped_rows_are_seeded_and_drawn_at_their_share():
    a = [dropped_rows(8, 0.25, seed=3, micro_step=s) for s in range(1, 2001)]
    assert all((x == dropped_rows(8, 0.25, seed=3, micro_step=s)).all() for s, x in enumerate(a[:20], start=1))
    assert not all((x == dropped_rows(8, 0.25, seed=4, micro_step=s)).all() for s, x in enumerate(a[:20], start=1))
    assert np.mean(a) == pytest.approx(0.25, abs=0.02)
    assert not dropped_rows(8, 0.0, seed=3, micro_step=1).any()
