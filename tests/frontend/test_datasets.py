"""Bundled task data (plain, .gz, .xz) and ``data fetch`` against a local HTTP server: pinned hashes, offline errors."""
import functools
import gzip
import hashlib
import http.server
import io
import lzma
import socket
import sys
import threading
import zipfile

import pytest

from rnnbackends import cli
from rnnbackends.datasets import BUNDLED, HERE, default_data, read_text, remote


def test_every_task_has_bundled_data_with_its_source_and_licence():
    for task in ("sentiment", "timeseries", "tagging", "textgen", "translation"):
        path = default_data(task)
        assert path.exists(), task
        source = (path if path.is_dir() else path.parent) / "SOURCE.md"
        assert "## Licen" in source.read_text(encoding="utf-8"), source
    compressed = sum(p.stat().st_size for p in HERE.rglob("*") if p.suffix in (".xz", ".gz"))
    assert compressed < 3_000_000                                # a few MB in the package, not 6.9 MB of text
    with pytest.raises(ValueError, match="no bundled data for 'weather'.*speech"):
        default_data("weather")


def test_bundled_files_decompress_to_the_documented_texts():
    text = read_text(default_data("textgen"))
    assert len(text) == 1_115_394 and text.startswith("First Citizen:") and text.endswith("\n")
    lines = read_text(default_data("translation")).split("\n")
    assert len(lines) == 40_001 and lines[0] == "Go.\tVe." and lines[-1] == ""
    folder = default_data("tagging")
    assert sorted(p.name for p in folder.glob("*.conllu.xz")) == [
        "en_ewt-ud-dev.conllu.xz", "en_ewt-ud-test.conllu.xz", "en_ewt-ud-train.subset.conllu.xz"]
    assert (folder / "LICENSE.txt").is_file() and (default_data("translation").parent / "_about.txt").is_file()


@pytest.mark.parametrize("part", ["dev", "test"])
def test_bundled_ewt_dev_and_test_are_the_upstream_files_that_fetch_pins(part):
    pinned = {f.name: f.sha256 for f in remote.corpus("ud-english-ewt").files}
    data = lzma.decompress((default_data("tagging") / f"en_ewt-ud-{part}.conllu.xz").read_bytes())
    assert hashlib.sha256(data).hexdigest() == pinned[f"en_ewt-ud-{part}.conllu"]


@pytest.mark.parametrize("suffix, compress", [("", bytes), (".gz", gzip.compress), (".xz", lzma.compress)])
def test_read_text_keeps_line_endings_and_reads_compressed_files(tmp_path, suffix, compress):
    text = "a\tb\r\nc\u0085d\n\u00e9\n"                          # CR LF and NEL stay as they are
    path = tmp_path / f"data.txt{suffix}"
    path.write_bytes(compress(text.encode("utf-8")))
    assert read_text(path) == text


@pytest.mark.parametrize("suffix, compress", [(".gz", gzip.compress), (".xz", lzma.compress)])
def test_read_text_refuses_truncated_or_corrupt_files_in_one_line(tmp_path, suffix, compress):
    whole = compress(("line\n" * 5000).encode())
    for name, data in (("cut", whole[:len(whole) // 2]), ("junk", b"not compressed at all")):
        path = tmp_path / f"{name}.txt{suffix}"
        path.write_bytes(data)
        with pytest.raises(ValueError, match="cannot read it") as error:
            read_text(path)
        assert "\n" not in str(error.value)


def test_read_text_refuses_missing_folders_and_non_utf8(tmp_path):
    (tmp_path / "latin1.txt").write_bytes("caf\u00e9\n".encode("latin-1"))
    for path, message in ((tmp_path / "nope.txt", "no such file"), (tmp_path, "is a folder, not a file"),
                          (tmp_path / "latin1.txt", "not UTF-8 text")):
        with pytest.raises(ValueError, match=message):
            read_text(path)


# --- data fetch against a local server -------------------------------------------------------------------------


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the fixture folder; remembers the paths asked for."""

    requests = []

    def log_message(self, *args):
        """No request log on stderr."""

    def do_GET(self):
        QuietHandler.requests.append(self.path)
        super().do_GET()


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 serving ``tmp_path / "www"``; yields (base URL, folder)."""
    www = tmp_path / "www"
    www.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(www)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    QuietHandler.requests = []
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", www
    httpd.shutdown()
    httpd.server_close()


def free_port():
    """A port on 127.0.0.1 that nothing listens on (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sha256(data):
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def corpora(server, tmp_path, monkeypatch):
    """Two fixture corpora (a plain file, a zip to unpack) served locally, and a fresh cache folder."""
    pytest.importorskip("pooch")
    base, www = server
    text = "Go.\tVe.\nHi.\tHola.\n" * 60
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("pairs/spa.txt", text)
        z.writestr("pairs/_about.txt", "attribution\n")
    files = {"train.conllu": b"1\tHi\thi\tINTJ\t_\t_\t0\troot\t_\t_\n\n", "pairs.zip": archive.getvalue()}
    for name, data in files.items():
        (www / name).write_bytes(data)
    fixtures = {
        "plain": remote.Corpus("plain", "a file", "CC0", (
            remote.RemoteFile("train.conllu", (base + "train.conllu",), sha256(files["train.conllu"]), 40),),
            target=".", use="rnnbackends train tagging --data"),
        "zipped": remote.Corpus("zipped", "a zip", "CC0", (
            remote.RemoteFile("pairs.zip", (base + "pairs.zip",), sha256(files["pairs.zip"]), 400,
                              unpack=("pairs/spa.txt", "pairs/_about.txt")),),
            target="pairs/spa.txt", use="rnnbackends train translation --data"),
    }
    monkeypatch.setattr(remote, "CORPORA", fixtures)
    monkeypatch.setenv(remote.CACHE_VARIABLE, str(tmp_path / "cache"))
    monkeypatch.delenv(remote.MIRROR_VARIABLE, raising=False)
    return base, www, files, text


def test_fetch_downloads_checks_unpacks_and_then_reuses_the_cache(corpora, tmp_path):
    base, www, files, text = corpora
    with pytest.raises(ValueError, match="not downloaded yet; run 'rnnbackends data fetch zipped' first"):
        remote.path("zipped")
    target = remote.fetch("zipped")
    assert target == tmp_path / "cache" / "zipped" / "pairs" / "spa.txt" and read_text(target) == text
    assert remote.path("zipped") == target and QuietHandler.requests == ["/pairs.zip"]
    assert remote.fetch("zipped") == target and QuietHandler.requests == ["/pairs.zip"]   # no second download
    (target).unlink()
    assert remote.fetch("zipped") == target and len(QuietHandler.requests) == 1          # unpacked again, offline
    assert remote.fetch("plain") == tmp_path / "cache" / "plain"
    assert (remote.path("plain") / "train.conllu").read_bytes() == files["train.conllu"]


def test_a_file_whose_hash_differs_is_refused_and_not_kept(corpora, tmp_path):
    base, www, files, text = corpora
    (www / "pairs.zip").write_bytes(files["pairs.zip"][:-1] + b"!")           # one byte changed upstream
    with pytest.raises(ValueError, match="not the pinned .*refused, not kept") as error:
        remote.fetch("zipped")
    assert "\n" not in str(error.value)
    assert list((tmp_path / "cache" / "zipped").iterdir()) == []             # no partial or temporary file left
    (tmp_path / "cache" / "zipped" / "pairs.zip").write_bytes(b"tampered")   # a wrong copy in the cache is replaced
    (www / "pairs.zip").write_bytes(files["pairs.zip"])
    assert read_text(remote.fetch("zipped")) == text


def test_offline_and_http_errors_are_one_line_naming_the_fix(corpora, monkeypatch):
    base, www, files, text = corpora
    refused = f"http://127.0.0.1:{free_port()}/"
    for url, reason in ((refused + "pairs.zip", "connection refused"), (base + "missing.zip", "HTTP 404")):
        corpus = remote.CORPORA["zipped"]
        broken = remote.RemoteFile("pairs.zip", (url,), corpus.files[0].sha256, 400, corpus.files[0].unpack)
        monkeypatch.setitem(remote.CORPORA, "zipped", remote.Corpus(
            "zipped", "a zip", "CC0", (broken,), "pairs/spa.txt", "rnnbackends train translation --data"))
        with pytest.raises(ValueError) as error:
            remote.fetch("zipped")
        message = str(error.value)
        assert "\n" not in message and reason in message and "Offline? Copy pairs.zip" in message
        assert remote.MIRROR_VARIABLE in message


def test_the_next_url_is_tried_after_a_failure_and_a_mirror_replaces_them_all(corpora, monkeypatch, tmp_path):
    base, www, files, text = corpora
    corpus = remote.CORPORA["zipped"]
    first_fails = remote.RemoteFile("pairs.zip", (f"http://127.0.0.1:{free_port()}/pairs.zip", base + "pairs.zip"),
                                    corpus.files[0].sha256, 400, corpus.files[0].unpack)
    monkeypatch.setitem(remote.CORPORA, "zipped", remote.Corpus(
        "zipped", "a zip", "CC0", (first_fails,), "pairs/spa.txt", "rnnbackends train translation --data"))
    assert read_text(remote.fetch("zipped")) == text
    mirror = www / "mirror"
    mirror.mkdir()
    (mirror / "train.conllu").write_bytes(files["train.conllu"])
    monkeypatch.setenv(remote.MIRROR_VARIABLE, base + "mirror/")
    remote.fetch("plain")
    assert QuietHandler.requests[-1] == "/mirror/train.conllu"


def test_data_commands_on_the_cli(corpora, capsys):
    assert cli.main(["data", "path", "zipped"]) == 2
    assert "data fetch zipped" in capsys.readouterr().err
    assert cli.main(["data", "fetch", "zipped", "--no-progress"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.endswith("spa.txt")
    assert cli.main(["data", "path", "zipped"]) == 0 and capsys.readouterr().out.strip() == out
    assert cli.main(["data", "list"]) == 0
    listing = capsys.readouterr().out
    assert "tagging" in listing and "zipped" in listing and f"fetched: rnnbackends train translation --data {out}" \
        in listing
    (corpora[1] / "pairs.zip").write_bytes(b"changed")
    (remote.folder("zipped") / "pairs.zip").unlink()
    assert cli.main(["data", "fetch", "zipped"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 + err.count("downloading") and "Traceback" not in err


def test_the_real_corpora_pin_every_file_by_sha256_at_fixed_commits():
    for corpus in remote.CORPORA.values():
        for f in corpus.files:
            assert len(f.sha256) == 64 and int(f.sha256, 16) >= 0 and f.size > 0
            assert all(url.startswith("https://") for url in f.urls)
    ewt = remote.corpus("ud-english-ewt").files[0].urls[0]
    assert "/15d613d8447b3478787d4c278730a1e48a945efb/" in ewt       # a commit, not a branch
    with pytest.raises(ValueError, match="unknown corpus 'ewt'"):
        remote.corpus("ewt")
    assert set(BUNDLED) >= {"tagging", "translation"}


def test_without_the_data_extra_fetch_says_what_to_install(corpora, monkeypatch):
    monkeypatch.setitem(sys.modules, "pooch", None)
    with pytest.raises(ValueError, match=r"pip install 'rnnbackends\[data\]'"):
        remote.fetch("plain")
