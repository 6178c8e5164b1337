"""Labelled text: every format, label mapping, and errors for missing labels."""

import json

import pytest
import torch

from qkv.data.labelled import LabelledDataset, infer_label_names, read_labelled, text_batch
from qkv.data.tokenizers import CharTokenizer

ROWS = [("a fine film", "1"), ("dull , dull", "0"), ("it 's ok", "1")]


@pytest.fixture
def tok():
    return CharTokenizer.train([t for t, _ in ROWS])


def write_all_formats(tmp_path):
    (tmp_path / "d.txt").write_text("".join(f"{l} {t}\n" for t, l in ROWS), encoding="utf-8")
    (tmp_path / "d.tsv").write_text("text\tlabel\n" + "".join(f"{t}\t{l}\n" for t, l in ROWS), encoding="utf-8")
    (tmp_path / "d.csv").write_text(
        "label,text\n" + "".join(f'{l},"{t}"\n' for t, l in ROWS), encoding="utf-8"
    )
    (tmp_path / "d.jsonl").write_text(
        "".join(json.dumps({"text": t, "label": int(l)}) + "\n" for t, l in ROWS), encoding="utf-8"
    )


@pytest.mark.parametrize("name", ["d.txt", "d.tsv", "d.csv", "d.jsonl"])
def test_formats_agree(tmp_path, name):
    write_all_formats(tmp_path)
    assert read_labelled(tmp_path / name) == ROWS


def test_dataset_and_batch(tmp_path, tok):
    write_all_formats(tmp_path)
    data = LabelledDataset.from_file(tmp_path / "d.txt", tok)
    assert data.label_names == ["0", "1"] and data.num_classes == 2
    batch = data.collate([data[i] for i in range(3)])
    assert batch.labels.tolist() == [1, 0, 1]
    assert batch.ids[:, 0].tolist() == [tok.bos_id] * 3
    assert batch.lengths.tolist() == [len(t) + 1 for t, _ in ROWS]
    assert torch.equal(batch.mask.sum(1), batch.lengths)
    assert tok.decode(batch.ids[1].tolist()) == "dull , dull"


def test_string_labels_and_shared_names(tok):
    train = LabelledDataset.from_pairs([("a", "pos"), ("b", "neg"), ("c", "neutral")], tok)
    assert train.label_names == ["neg", "neutral", "pos"] and train.labels.tolist() == [2, 0, 1]
    dev = LabelledDataset.from_pairs([("a", "neg")], tok, label_names=train.label_names)
    assert dev.labels.tolist() == [0]
    with pytest.raises(ValueError, match=r"dev.txt: labels \['great'\] are not among the classes"):
        LabelledDataset.from_pairs([("a", "great")], tok, label_names=train.label_names, source="dev.txt")
    assert infer_label_names(["2", "0"]) == ["0", "1", "2"]


def test_max_len_truncates(tok):
    data = LabelledDataset.from_pairs([("a fine film", "1")], tok, max_len=4)
    assert data.lengths.tolist() == [4] and tok.decode(data[0].ids) == "a f"


def test_missing_labels(tmp_path, tok):
    (tmp_path / "x.txt").write_text("1 good\nnolabel\n", encoding="utf-8")
    with pytest.raises(ValueError, match="x.txt: line 2 has no label"):
        read_labelled(tmp_path / "x.txt")
    (tmp_path / "y.txt").write_text("1 good\n\n", encoding="utf-8")
    with pytest.raises(ValueError, match="y.txt: line 2 is empty"):
        read_labelled(tmp_path / "y.txt")
    (tmp_path / "x.jsonl").write_text('{"text": "a", "label": 1}\n{"text": "b"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="x.jsonl: line 2 has no 'label' value"):
        read_labelled(tmp_path / "x.jsonl")
    (tmp_path / "x.csv").write_text("text,label\na,1\nb,\n", encoding="utf-8")
    with pytest.raises(ValueError, match="x.csv: row 3 has no 'label' value"):
        read_labelled(tmp_path / "x.csv")
    (tmp_path / "h.tsv").write_text("sentence\tscore\na\t1\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"h.tsv: header \['sentence', 'score'\] lacks column\(s\) \['text', 'label'\]"):
        read_labelled(tmp_path / "h.tsv")
    assert read_labelled(tmp_path / "h.tsv", text_field="sentence", label_field="score") == [("a", "1")]
    (tmp_path / "bad.jsonl").write_text("{oops\n", encoding="utf-8")
    with pytest.raises(ValueError, match="bad.jsonl: line 1 is not valid JSON"):
        read_labelled(tmp_path / "bad.jsonl")
    (tmp_path / "e.txt").write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match="e.txt is empty"):
        read_labelled(tmp_path / "e.txt")
    with pytest.raises(ValueError, match="format must be one of"):
        read_labelled(tmp_path / "x.txt", format="xml")


def test_text_batch_matches_training_layout(tok):
    data = LabelledDataset.from_pairs(ROWS, tok, max_len=6)
    batch = data.collate([data[i] for i in range(3)])
    ids, mask = text_batch([t for t, _ in ROWS], tok, max_len=6)
    assert torch.equal(ids, batch.ids) and torch.equal(mask, batch.mask)
