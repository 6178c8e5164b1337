"""Reading user files: gzip, strict UTF-8 with the line named, empty files, misaligned files."""

import gzip

import pytest

from qkv.data.files import fingerprint, read_aligned, read_lines, read_text


def write(path, data: bytes):
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


@pytest.mark.parametrize("name", ["a.txt", "a.txt.gz"])
def test_plain_and_gzip_lines(tmp_path, name):
    path = write(tmp_path / name, "eins\r\nzwei ü\n\ndrei".encode())
    assert read_lines(path) == ["eins", "zwei ü", "", "drei"]
    assert read_text(path) == "eins\r\nzwei ü\n\ndrei"


def test_byte_order_mark_is_dropped(tmp_path):
    path = write(tmp_path / "bom.txt", "\ufeffhallo\n".encode())
    assert read_lines(path) == ["hallo"] and read_text(path) == "hallo\n"


@pytest.mark.parametrize("name", ["bad.txt", "bad.txt.gz"])
def test_invalid_utf8_names_file_and_line(tmp_path, name):
    path = write(tmp_path / name, b"ok\nstill ok\nbroken \xff\xfe here\n")
    with pytest.raises(ValueError, match=rf"{name}: line 3 is not valid UTF-8 .*byte 7"):
        read_lines(path)
    with pytest.raises(ValueError, match=rf"{name}: line 3 is not valid UTF-8"):
        read_text(path)


def test_empty_files(tmp_path):
    empty = write(tmp_path / "empty.en", b"")
    with pytest.raises(ValueError, match="empty.en is empty"):
        read_lines(empty)
    assert read_lines(empty, allow_empty=True) == []
    with pytest.raises(ValueError, match="empty.en is empty"):
        read_text(write(tmp_path / "empty.en", b"\n  \n"))


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.de"):
        read_lines(tmp_path / "nope.de")


def test_corrupt_gzip(tmp_path):
    path = tmp_path / "corrupt.de.gz"
    path.write_bytes(b"this is not gzip data")
    with pytest.raises(ValueError, match="corrupt.de.gz: cannot read the file"):
        read_lines(path)


def test_aligned_files_must_match(tmp_path):
    de = write(tmp_path / "train.de", b"a\nb\nc\n")
    en = write(tmp_path / "train.en.gz", b"x\ny\n")
    with pytest.raises(ValueError, match=r"train.de has 3 lines but .*train.en.gz has 2 lines"):
        read_aligned(de, en)
    en = write(tmp_path / "train.en.gz", b"x\ny\nz\n")
    assert read_aligned(de, en) == (["a", "b", "c"], ["x", "y", "z"])
    with pytest.raises(ValueError, match="empty.de is empty"):
        read_aligned(write(tmp_path / "empty.de", b""), en)


def test_fingerprint_changes_with_content_and_extra(tmp_path):
    a = write(tmp_path / "a.txt", b"hello")
    key = fingerprint([a], "tok")
    assert key == fingerprint([a], "tok") and len(key) == 16
    assert key != fingerprint([a], "other tokenizer")
    write(a, b"hellp")
    assert key != fingerprint([a], "tok")
