"""Full-size corpora, downloaded on request (``rnnbackends data fetch NAME``) into a per-user cache.

Every file is pinned by its SHA-256: a download whose bytes differ is refused and not kept. The URLs name fixed
commits, so their contents cannot change. Needs the ``data`` extra (``pip install 'rnnbackends[data]'``: pooch and
platformdirs). ``$RNNBACKENDS_CACHE`` replaces the cache folder; ``$RNNBACKENDS_DATA_MIRROR`` (an http(s) folder
URL) replaces every download URL by ``MIRROR/<file name>``, with the same pinned hashes.
"""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..files import write_atomically

CACHE_VARIABLE, MIRROR_VARIABLE = "RNNBACKENDS_CACHE", "RNNBACKENDS_DATA_MIRROR"
TIMEOUT_SECONDS = 60


@dataclass(frozen=True)
class RemoteFile:
    """One file to download: its name in the cache, the URLs to try in order, its pinned SHA-256 and size."""

    name: str
    urls: tuple
    sha256: str
    size: int
    unpack: tuple = ()                  # zip members extracted next to it (paths inside the zip)


@dataclass(frozen=True)
class Corpus:
    """A downloadable corpus: its files, and the file or folder (inside its cache folder) that ``--data`` takes."""

    name: str
    description: str
    licence: str
    files: tuple
    target: str                          # relative to the corpus folder; "." is the folder itself
    use: str                             # the command that trains on it


# UD English-EWT at the commit of release v2.16. The 14.2 MB train file's SHA-256 was computed from the file
# rebuilt with the repository's own recipe (not-to-release/tools/build.py at that commit), whose git blob id
# equals the released file's (34731d23bafeeff233fdcee18ffc0254b1aa0e28); dev, test and LICENSE.txt are the very
# files bundled (dev and test) or copied (LICENSE.txt) from that commit.
EWT = "https://raw.githubusercontent.com/UniversalDependencies/UD_English-EWT/15d613d8447b3478787d4c278730a1e48a945efb/"
# The 2018-05-13 manythings.org spa-eng.zip (TensorFlow's NMT tutorial file): pinned from the copy in the GitHub
# repository Hoangduc212001/hoang at commit 2cfd26f9 (2,767,131 bytes). The TensorFlow URL is tried second: its
# bytes were not checked here, so if they differ from that copy the hash check refuses them.
TATOEBA_GITHUB = "https://raw.githubusercontent.com/Hoangduc212001/hoang/2cfd26f9551f5c2d614e8000500891801840a438/"
TATOEBA_TENSORFLOW = "https://storage.googleapis.com/download.tensorflow.org/data/"

CORPORA = {corpus.name: corpus for corpus in (
    Corpus("ud-english-ewt",
           "UD English-EWT v2.16, CoNLL-U: the whole train set (12,544 sentences), dev and test (CC BY-SA 4.0)",
           "CC BY-SA 4.0 (LICENSE.txt); cite Silveira et al. 2014 and Universal Dependencies", files=(
               RemoteFile("en_ewt-ud-train.conllu", (EWT + "en_ewt-ud-train.conllu",),
                          "3fb78e2b55482c8ee00caa653af436c88c9e5bc9a73ce26e4ae3ddc79d2b7e7b", 14_203_025),
               RemoteFile("en_ewt-ud-dev.conllu", (EWT + "en_ewt-ud-dev.conllu",),
                          "531a54ff90d6ab12201c5a50c3e78e6ddac4de69abc4bce5d275d3cd29efe2b6", 1_805_545),
               RemoteFile("en_ewt-ud-test.conllu", (EWT + "en_ewt-ud-test.conllu",),
                          "e266e515a0a7547657ed3d90d9ba46487d6bd251f27ad4269d4e8a427c8555cd", 1_804_515),
               RemoteFile("LICENSE.txt", (EWT + "LICENSE.txt",),
                          "b3d1b0f4c6ae151f7eb78738f46ebd5ee140f8a7f76501ba26af123140d35ae7", 20_014)),
           target=".", use="rnnbackends train tagging --data"),
    Corpus("tatoeba-spa-eng",
           "Tatoeba English-Spanish pairs, all 118,964 (manythings.org file of 2018-05-13), 'English<TAB>Spanish'",
           "CC BY 2.0 FR; attribution: www.manythings.org/anki and tatoeba.org (spa-eng/_about.txt)", files=(
               RemoteFile("spa-eng.zip", (TATOEBA_GITHUB + "spa-eng.zip", TATOEBA_TENSORFLOW + "spa-eng.zip"),
                          "f80e581ae291aa34dd3aba7bd98b5e9505234da4318e2f3295df70a1520c7f61", 2_767_131,
                          unpack=("spa-eng/spa.txt", "spa-eng/_about.txt")),),
           target="spa-eng/spa.txt", use="rnnbackends train translation --data"),
)}


def corpus(name):
    """The corpus called ``name``."""
    if name not in CORPORA:
        raise ValueError(f"unknown corpus {name!r}; 'rnnbackends data list' shows them: {', '.join(CORPORA)}")
    return CORPORA[name]


def cache_folder():
    """Where fetched corpora live: ``$RNNBACKENDS_CACHE`` or the per-user cache folder (platformdirs)."""
    if os.environ.get(CACHE_VARIABLE):
        return Path(os.environ[CACHE_VARIABLE])
    try:
        import platformdirs
    except ImportError:
        raise ValueError("fetching corpora needs platformdirs and pooch: pip install 'rnnbackends[data]'") from None
    return Path(platformdirs.user_cache_dir("rnnbackends")) / "data"


def folder(name):
    """The cache folder of corpus ``name``."""
    return cache_folder() / corpus(name).name


def is_fetched(name):
    """Whether every file of corpus ``name`` and its unpacked members are in the cache."""
    here = folder(name)
    return all((here / f.name).is_file() and all((here / m).is_file() for m in f.unpack) for f in corpus(name).files)


def path(name):
    """What ``--data`` takes for corpus ``name`` (a file or folder in the cache); it must have been fetched."""
    if not is_fetched(name):
        raise ValueError(f"{name} is not downloaded yet; run 'rnnbackends data fetch {name}' first")
    return (folder(name) / corpus(name).target).resolve()


def fetch(name, progress=False, log=None):
    """Download (or re-check) every file of corpus ``name`` against its pinned SHA-256; returns ``path(name)``."""
    try:
        import pooch
    except ImportError:
        raise ValueError("fetching corpora needs pooch and platformdirs: pip install 'rnnbackends[data]'") from None
    pooch.get_logger().setLevel("WARNING")
    here = folder(name)
    for remote in corpus(name).files:
        downloaded = download(pooch, name, remote, here, progress, log)
        for member in remote.unpack:
            if not (here / member).is_file() or downloaded:
                unpack(downloaded or here / remote.name, member, here)
    return path(name)


def urls(remote):
    """The URLs to try for ``remote``: the mirror's only, when ``$RNNBACKENDS_DATA_MIRROR`` is set."""
    mirror = os.environ.get(MIRROR_VARIABLE)
    return (mirror.rstrip("/") + "/" + remote.name,) if mirror else remote.urls


def download(pooch, name, remote, here, progress, log):
    """Fetch one file into ``here`` unless a copy with the pinned hash is there; the path if it was downloaded."""
    target = here / remote.name
    if target.is_file() and pooch.file_hash(str(target)) == remote.sha256:
        return None
    failures = []
    for url in urls(remote):
        if log is not None:
            log(f"downloading {remote.name} ({remote.size / 1e6:.1f} MB) from {url}")
        downloader = pooch.HTTPDownloader(progressbar=progress, timeout=TIMEOUT_SECONDS)
        try:
            pooch.retrieve(url, known_hash=f"sha256:{remote.sha256}", fname=remote.name, path=here,
                           downloader=downloader)
            return target
        except ValueError as exc:                      # pooch: the downloaded file's hash differs; it was not kept
            if "hash" not in str(exc).lower():
                raise
            failures.append(f"{url} sent a file whose SHA-256 is not the pinned {remote.sha256} (refused, not kept)")
        except OSError as exc:                         # requests' errors are OSErrors: offline, refused, HTTP 404
            failures.append(f"{url}: {reason(exc)}")
    raise ValueError(f"cannot download {name}: {'; '.join(failures)}. Offline? Copy {remote.name} (SHA-256 "
                     f"{remote.sha256}) into {here}, or set ${MIRROR_VARIABLE} to a folder URL that has it")


def reason(exc):
    """A few words for a failed request: refused, timed out, not resolved, or the HTTP status."""
    text = str(exc)
    response = getattr(exc, "response", None)
    if response is not None:
        return f"HTTP {response.status_code}"
    for words, phrase in (("refused", "connection refused"), ("timed out", "timed out"),
                          ("Name or service not known", "host not found"), ("resolve", "host not found"),
                          ("NameResolution", "host not found"), ("unreachable", "network unreachable")):
        if words in text:
            return phrase
    return type(exc).__name__


def unpack(archive, member, here):
    """Extract ``member`` of the zip ``archive`` into ``here`` (atomically, keeping its path inside the zip)."""
    with zipfile.ZipFile(archive) as z:
        data = z.read(member)
    destination = here / member
    destination.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(destination, data)
