"""The local text tokenizer (transcripts + OCR): round trips, shared ids, split digits and written
forms undone when decoding, bad settings named by key, and its CLI."""

from __future__ import annotations

import numpy as np
import pytest

from dmlm.errors import DmlmError
from dmlm.storage import Ragged, write_table


def test_text_tokenizer_round_trip_and_shared_ids(tmp_path):
    from dmlm.tokens.text import decode, encode_table, load_tokenizer, normalize, train_text_tokenizer

    transcripts = [
        "3 x plus 5 equals 12",
        "7 minus y equals 2",
        "12 divided by 4 equals 3",
        "x times 10 equals 100",
    ]
    write_table(tmp_path / "manifest.tsv", [{"id": f"train-{i:06d}", "transcript": t} for i, t in enumerate(transcripts)])
    ocr = ["3X+5=12", "", "007-y=2", "12/4=3"]
    write_table(tmp_path / "ocr.tsv", [{"id": f"train-{i:06d}", "ocr": t, "engine": "x"} for i, t in enumerate(ocr)])
    tok = train_text_tokenizer(tmp_path / "manifest.tsv", tmp_path / "ocr.tsv", tmp_path / "tok.json", {"min_frequency": 1})
    train_text_tokenizer(tmp_path / "manifest.tsv", tmp_path / "ocr.tsv", tmp_path / "tok2.json", {"min_frequency": 1})
    assert (tmp_path / "tok.json").read_text() == (tmp_path / "tok2.json").read_text()  # deterministic
    assert tok.token_to_id("[UNK]") == 0

    t_ids = encode_table(tmp_path / "tok.json", tmp_path / "manifest.tsv", "transcript", tmp_path / "t")
    o_ids = encode_table(tmp_path / "tok.json", tmp_path / "ocr.tsv", "ocr", tmp_path / "o")
    loaded = load_tokenizer(tmp_path / "tok.json")
    for text, ids in zip(transcripts, t_ids):
        assert decode(loaded, ids) == text  # exact round trip: WER is computed on this
        assert normalize(loaded, text) == text
    assert decode(loaded, o_ids[0]) == "3 x + 5 = 12"
    assert len(o_ids[1]) == 0  # empty OCR string -> zero tokens
    assert decode(loaded, o_ids[2]) == "007 - y = 2"  # numeric-looking text kept verbatim
    twelve = loaded.token_to_id("12")
    assert twelve is not None and o_ids[0][-1] == twelve and t_ids[0][-1] == twelve
    assert o_ids[0][0] == t_ids[0][0] and o_ids[0][1] == t_ids[0][1]  # "3", "x" shared
    on_disk = Ragged.load(tmp_path / "o")
    assert on_disk.data.dtype == np.int32 and on_disk.lengths().tolist() == [len(x) for x in o_ids]
    assert decode(loaded, loaded.encode("3 Q plus").ids) == "3 [UNK] plus"


WRITTEN = {"plus": "+", "minus": "-", "equals": "=", "over": "/", "to the power of": "^", "log of": "log"}


def test_text_tokenizer_split_digits_and_written_forms(tmp_path):
    """digits: split and written forms: transcripts and OCR share digit and symbol tokens, the
    transcript reads back exactly (WER is scored on it), and adjacent numbers stay apart."""
    from dmlm.tokens.text import decode, encode_table, load_tokenizer, normalize, train_text_tokenizer

    # the corpus' own words; "22 over 3 47 t": two numbers side by side where one equation ends
    transcripts = [
        "17 over 41 d minus log of 4 equals 22 over 3 47 t minus x equals 42 over 41 k",
        "7 to the power of 6 minus 2 equals h 20 q plus c equals 5 n to the power of 2",
    ]
    ocr = ["47T -X = 4241K 1741D - LOG 4 = 223", "7-2=H 20Q + = 5N"]  # tesseract's reading of the images
    write_table(tmp_path / "manifest.tsv", [{"id": f"train-{i:06d}", "transcript": t} for i, t in enumerate(transcripts)])
    write_table(tmp_path / "ocr.tsv", [{"id": f"train-{i:06d}", "ocr": t, "engine": "x"} for i, t in enumerate(ocr)])
    settings = {"min_frequency": 1, "digits": "split", "written": WRITTEN}
    train_text_tokenizer(tmp_path / "manifest.tsv", tmp_path / "ocr.tsv", tmp_path / "tok.json", settings)
    tok = load_tokenizer(tmp_path / "tok.json")
    t_ids = encode_table(tmp_path / "tok.json", tmp_path / "manifest.tsv", "transcript", tmp_path / "t")
    o_ids = encode_table(tmp_path / "tok.json", tmp_path / "ocr.tsv", "ocr", tmp_path / "o")

    pieces = [tok.id_to_token(int(i)) for i in t_ids[0]]
    assert pieces == ["1", "##7", "/", "4", "##1", "d", "-", "log", "4", "=", "2", "##2", "/", "3",
                      "4", "##7", "t", "-", "x", "=", "4", "##2", "/", "4", "##1", "k"]
    assert [tok.id_to_token(int(i)) for i in o_ids[0]][:9] == ["4", "##7", "t", "-", "x", "=", "4", "##2", "##4"]
    assert o_ids[0][:6].tolist() == t_ids[0][14:20].tolist()  # "47t - x =": the same ids in both
    assert "^" in [tok.id_to_token(int(i)) for i in t_ids[1]]
    for text, ids in zip(transcripts, t_ids):
        assert decode(tok, ids) == text  # exact: "22 over 3 47 t" is not read as "22 over 347 t"
        assert normalize(tok, text) == text
    assert not any(tok.id_to_token(i).isdigit() and len(tok.id_to_token(i)) > 1 for i in range(tok.get_vocab_size()))
    assert tok.token_to_id("[UNK]") == 0 and decode(tok, [0, *t_ids[0][:2]]) == "17"  # [UNK] skipped, as below

    # each option on its own
    train_text_tokenizer(tmp_path / "manifest.tsv", tmp_path / "ocr.tsv", tmp_path / "d.json", {"min_frequency": 1, "digits": "split"})
    assert decode(tmp_path / "d.json", load_tokenizer(tmp_path / "d.json").encode("42 over 41 k").ids) == "42 over 41 k"
    train_text_tokenizer(tmp_path / "manifest.tsv", tmp_path / "ocr.tsv", tmp_path / "w.json", {"min_frequency": 1, "written": WRITTEN})
    w = load_tokenizer(tmp_path / "w.json")
    assert w.encode("42 over 41 k").tokens == ["42", "/", "41", "k"]
    assert decode(w, w.encode("42 over 41 k").ids) == "42 over 41 k"
    assert decode(w, w.encode("42 over 99 k").ids) == "42 over k"  # an unseen word ([UNK]) is dropped


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"digits": "bytes"}, "tokens.text.digits"),
        ({"written": {"plus": "+ +"}}, "tokens.text.written.plus: '\\+ \\+' must be one token piece"),
        ({"written": {"plus": "+", "minus": "+"}}, "two phrases share a symbol"),
        ({"written": {"Plus": "+"}}, "lowercase words"),
        # a number as a symbol: "x equals 22" would come back as "x equals two2"
        ({"digits": "split", "written": {"two": "2"}}, "tokens.text.written.two: '2' is a number"),
        # "log" also stands alone in this transcript: "log of" -> "log" could not be read back
        ({"written": {"log of": "log"}}, "'3 log of x log' does not read back"),
    ],
)
def test_text_tokenizer_bad_settings_name_the_key(tmp_path, settings, message):
    from dmlm.tokens.text import train_text_tokenizer

    write_table(tmp_path / "manifest.tsv", [{"id": "train-000000", "transcript": "3 log of x log"}])
    with pytest.raises(DmlmError, match=message):
        train_text_tokenizer(tmp_path / "manifest.tsv", None, tmp_path / "tok.json", {"min_frequency": 1, **settings})
    assert not (tmp_path / "tok.json").exists()


def test_cli_text(tmp_path, monkeypatch):
    import dmlm.cli
    from dmlm.tokens.text import decode

    monkeypatch.setattr(dmlm.cli, "STAGE_CLIS", ("dmlm.tokens.cli",))
    write_table(tmp_path / "manifest.tsv", [{"id": "train-000000", "transcript": "3 x plus 5 equals 12"}])
    write_table(tmp_path / "ocr.tsv", [{"id": "train-000000", "ocr": "3x+5=12", "engine": "tesseract"}])
    assert dmlm.cli.main(["text-tokenizer", "--manifest", str(tmp_path / "manifest.tsv"), "--ocr",
                          str(tmp_path / "ocr.tsv"), "--out", str(tmp_path / "tok.json"),
                          "--settings", '{"min_frequency": 1}']) == 0
    assert dmlm.cli.main(["encode-text", "--tokenizer", str(tmp_path / "tok.json"), "--table",
                          str(tmp_path / "manifest.tsv"), "--column", "transcript",
                          "--out-prefix", str(tmp_path / "t")]) == 0
    assert decode(tmp_path / "tok.json", Ragged.load(tmp_path / "t")[0]) == "3 x plus 5 equals 12"
