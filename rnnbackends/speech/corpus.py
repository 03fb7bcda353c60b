"""Spoken digit strings made with eSpeak NG (in the spirit of TIDIGITS), and reading speech corpora from disk.

A corpus is a folder with ``transcripts.tsv`` (``file<TAB>text``, optionally a third column naming the speaker or
voice) and the audio files it names, relative to the folder. Files under ``train/``, ``valid/`` (or ``dev/``) and
``test/`` form those splits. The bundled corpus keeps its audio in one ``speech.npz`` instead of separate files
(same ``transcripts.tsv``): 8-bit PCM stored as first differences (mod 256), which deflate compresses to about
7.5 kB per utterance at 8 kHz, against 11 kB for 8-bit mu-law.

``make_corpus`` is seeded and deterministic: utterance i depends only on (seed, i) (eSpeak NG carries state from one
utterance to the next, so each run of 50 is synthesised in a fresh process). Every tenth utterance is a test
utterance and every tenth plus one a validation one, each spoken by a voice whose variant the training utterances
never use: eSpeak NG's voice variants (``m3``, ``f2``, ``klatt``, ...) are split three ways, and every English
accent appears in every split. Half the training utterances are spoken by a variant made up for that utterance
(random formant frequencies, bandwidths, pitch, voicing, sometimes the Klatt synthesiser or breath), so training
hears thousands of voices, and the test voices are still ones it never heard.
"""
from __future__ import annotations

import csv
import io
import multiprocessing
import shutil
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..files import write_atomically
from .audio import read_audio, resample, write_wav

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
WORDS = DIGITS + ("oh",)
SPLITS = ("train", "valid", "test")
TRANSCRIPTS, BUNDLED_AUDIO = "transcripts.tsv", "speech.npz"
MAX_DIGITS = 7
CHUNK = 50                               # utterances synthesised per fresh process
PERTURBATION = dict(rate_wpm=(120, 240), pitch=(20, 80), pitch_range=(20, 90), speed=(0.9, 1.1),
                    snr_db=(10.0, 40.0), clean_share=0.15, reverb_share=0.5, rt60_seconds=(0.1, 0.5),
                    silence_seconds=(0.05, 0.25), peak=(0.5, 0.95), random_voice_share=0.5)
"""Ranges drawn uniformly per utterance: eSpeak rate (words/minute), pitch and range (0-100), speed factor
(resampling, so tempo and pitch together), SNR of additive white/pink/brown noise, the share of utterances
without noise and with reverberation, the reverberation time, leading/trailing silence, the peak level, and the
share of training utterances spoken by a made-up voice variant."""


@dataclass
class Utterance:
    """One recording: its name (path in the corpus), transcript, split, speaker/voice, and waveform."""

    name: str
    text: str
    split: str
    voice: str
    samples: np.ndarray
    rate: int


def split_of(index):
    """The split of utterance ``index``: every tenth is test, every tenth plus one validation."""
    return "test" if index % 10 == 9 else "valid" if index % 10 == 8 else "train"


def voice_split(variants):
    """The eSpeak NG voice variants of each split (disjoint): sorted, two in ten to test, one in ten to valid."""
    groups = {split: [] for split in SPLITS}
    for i, variant in enumerate(sorted(variants)):
        groups["test" if i % 10 in (2, 7) else "valid" if i % 10 == 4 else "train"].append(variant)
    return groups


def digit_string(rng):
    """1-7 random digits as words; zero is said "zero" or "oh" with equal chance."""
    digits = rng.integers(0, 10, size=int(rng.integers(1, MAX_DIGITS + 1)))
    return " ".join(("oh" if rng.random() < 0.5 else "zero") if d == 0 else DIGITS[d] for d in digits)


def coloured_noise(rng, n, colour):
    """Unit-power noise (n,): white, pink (1/f power) or brown (1/f² power)."""
    white = rng.standard_normal(n)
    if colour == "white":
        return white
    spectrum = np.fft.rfft(white)
    f = np.maximum(np.arange(len(spectrum)), 1.0)
    shaped = np.fft.irfft(spectrum / (np.sqrt(f) if colour == "pink" else f), n)
    return shaped / (shaped.std() + 1e-12)


def room_response(rng, rate, rt60):
    """A simple room impulse response: the direct sound, then exponentially decaying noise (60 dB in ``rt60`` s)."""
    n = int(rt60 * rate)
    t = np.arange(n) / rate
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
    tail[: int(0.002 * rate)] = 0.0                                  # the first reflections arrive after 2 ms
    response = tail * rng.uniform(0.1, 0.5) / np.sqrt((tail ** 2).sum() + 1e-12)
    response[0] = 1.0
    return response


def convolve(samples, response):
    """Full linear convolution by the FFT."""
    n = len(samples) + len(response) - 1
    size = 1 << (n - 1).bit_length()
    return np.fft.irfft(np.fft.rfft(samples, size) * np.fft.rfft(response, size), size)[:n]


def perturb(rng, speech, rate):
    """Speed change, silence around, reverberation, additive noise at a random SNR, a random level."""
    p = PERTURBATION
    speech = resample(speech, rate * rng.uniform(*p["speed"]), rate).astype(np.float64)
    lead, trail = (int(rng.uniform(*p["silence_seconds"]) * rate) for _ in range(2))
    x = np.concatenate([np.zeros(lead), speech, np.zeros(trail)])
    if rng.random() < p["reverb_share"]:
        x = convolve(x, room_response(rng, rate, rng.uniform(*p["rt60_seconds"])))[:len(x)]
    colour = ("white", "pink", "brown")[int(rng.integers(3))]
    snr_db = rng.uniform(*p["snr_db"])
    noise = coloured_noise(rng, len(x), colour)
    if rng.random() >= p["clean_share"]:
        speech_power = np.mean(speech ** 2) + 1e-12
        x = x + noise * np.sqrt(speech_power / 10 ** (snr_db / 10))
    return (x * rng.uniform(*p["peak"]) / (np.abs(x).max() + 1e-12)).astype(np.float32)


def synthesise(index, seed, synthesizer, voices, rate):
    """Utterance ``index`` of the corpus of ``seed``: text, voice and perturbations from rng([seed, index])."""
    from .synth import ACCENTS, RANDOM_VARIANT, random_variant
    rng = np.random.default_rng([seed, index])
    split = split_of(index)
    text = digit_string(rng)
    accent = ACCENTS[int(rng.integers(len(ACCENTS)))]
    variants = voices[split]
    variant = variants[int(rng.integers(len(variants)))]
    made_up = None
    if split == "train" and rng.random() < PERTURBATION["random_voice_share"]:
        variant = f"{RANDOM_VARIANT}{index}"
        made_up = synthesizer.data_path / "voices" / "!v" / variant
        made_up.write_text(random_variant(rng), encoding="utf-8")
    voice = f"{accent}+{variant}"
    p = PERTURBATION
    try:
        speech = synthesizer.speak(text, voice, rng.uniform(*p["rate_wpm"]), rng.uniform(*p["pitch"]),
                                   rng.uniform(*p["pitch_range"]), seed=int(rng.integers(2 ** 31)))
    finally:
        if made_up is not None:
            made_up.unlink()                                 # eSpeak NG lists at most 350 voices in all
    speech = resample(speech, synthesizer.sample_rate, rate)
    samples = perturb(rng, speech, rate)
    return Utterance(f"{split}/{index:05d}.wav", text, split, voice, samples, rate)


def synthesise_chunk(job):
    """Utterances start..stop-1 of the corpus of ``seed``, synthesised from a fresh eSpeak NG (in a new process)."""
    from .synth import Synthesizer
    seed, start, stop, rate, data_path = job
    synthesizer = Synthesizer.shared(data_path)
    voices = voice_split(synthesizer.variants())
    return [synthesise(index, seed, synthesizer, voices, rate) for index in range(start, stop)]


def make_corpus(out, size=2000, seed=0, rate=16000, bundle=False, jobs=1, progress=None):
    """Synthesise ``size`` utterances into folder ``out`` (WAV files, or one ``speech.npz`` with ``bundle``) using
    ``jobs`` processes; returns the utterances."""
    from .synth import Synthesizer
    if size < 10:
        raise ValueError(f"--size must be at least 10 (one test and one validation utterance), got {size}")
    Synthesizer.shared()                                                # fails early, in one line, without the wheel
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    utterances = []
    with tempfile.TemporaryDirectory(prefix="rnnbackends-espeak-") as scratch:
        data_path = Path(scratch) / "espeak-ng-data"                    # a copy, to add the made-up variants to
        shutil.copytree(Synthesizer.bundled_data_path(), data_path)
        chunks = [(seed, start, min(start + CHUNK, size), rate, str(data_path)) for start in range(0, size, CHUNK)]
        with multiprocessing.get_context("spawn").Pool(jobs, maxtasksperchild=1) as pool:
            for chunk in pool.imap(synthesise_chunk, chunks):
                for utterance in chunk:
                    if not bundle:
                        (out / utterance.split).mkdir(exist_ok=True)
                        write_wav(out / utterance.name, utterance.samples, rate)
                utterances += chunk
                if progress is not None:
                    progress(len(utterances), size)
    if bundle:
        write_bundle(out / BUNDLED_AUDIO, utterances, rate)
    write_transcripts(out / TRANSCRIPTS, utterances)
    return utterances


def write_transcripts(path, utterances):
    """``file<TAB>text<TAB>voice`` lines, atomically."""
    write_atomically(path, "".join(f"{u.name}\t{u.text}\t{u.voice}\n" for u in utterances))


def write_bundle(path, utterances, rate):
    """All waveforms in one compressed ``.npz`` (no pickle): 8-bit PCM first differences, offsets and the rate."""
    pcm = [np.clip(np.round(u.samples * 127.0), -128, 127).astype(np.int16) for u in utterances]
    differences = np.concatenate([np.diff(p, prepend=0) for p in pcm]).astype(np.uint8)   # mod 256
    offsets = np.cumsum([0] + [len(p) for p in pcm]).astype(np.int64)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, pcm8_differences=differences, offsets=offsets, rate=np.int64(rate))
    write_atomically(path, buffer.getvalue())


def read_bundle(path):
    """(list of float32 waveforms, rate) from a ``write_bundle`` file."""
    with np.load(path, allow_pickle=False) as npz:
        differences, offsets, rate = npz["pcm8_differences"], npz["offsets"], int(npz["rate"])
    waves = []
    for start, end in zip(offsets[:-1], offsets[1:]):
        pcm = np.cumsum(differences[start:end], dtype=np.uint8).view(np.int8)              # undo mod-256 differences
        waves.append(pcm.astype(np.float32) / 127.0)
    return waves, rate


def read_transcripts(folder):
    """[(file, text, voice or "")] from ``folder/transcripts.tsv``."""
    path = Path(folder) / TRANSCRIPTS
    if not path.is_file():
        raise ValueError(f"{folder}: no {TRANSCRIPTS}; a speech corpus is a folder of audio files with a "
                         f"{TRANSCRIPTS} of 'file<TAB>text' lines")
    rows = []
    with open(path, encoding="utf-8", newline="") as f:
        for number, fields in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), 1):
            if not fields or not "".join(fields).strip():
                continue
            if len(fields) < 2 or not fields[0].strip():
                raise ValueError(f"{path}:{number}: expected 'file<TAB>text', got {fields!r}")
            rows.append((fields[0].strip(), " ".join(fields[1].split()), fields[2].strip() if len(fields) > 2 else ""))
    if not rows:
        raise ValueError(f"{path}: no transcripts")
    return rows


def split_of_name(name):
    """The split a file's top folder names (train, valid/dev, test), else one by a hash of the name (80/10/10)."""
    top = Path(name).parts[0].lower() if len(Path(name).parts) > 1 else ""
    if top in ("train", "valid", "test"):
        return top
    if top == "dev":
        return "valid"
    return split_of(zlib.crc32(name.encode("utf-8")))


def read_corpus(folder):
    """Every utterance of a corpus folder (audio files, or the bundled ``speech.npz``) with its split."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder; expected a folder of audio files with a {TRANSCRIPTS}")
    rows = read_transcripts(folder)
    bundled = folder / BUNDLED_AUDIO
    if bundled.is_file():
        samples, rate = read_bundle(bundled)
        if len(samples) != len(rows):
            raise ValueError(f"{bundled}: holds {len(samples)} recordings but {TRANSCRIPTS} lists {len(rows)}")
        waves = [(s, rate) for s in samples]
    else:
        waves = [read_audio(folder / name) for name, _, _ in rows]
    return [Utterance(name, text, split_of_name(name), voice, samples, rate)
            for (name, text, voice), (samples, rate) in zip(rows, waves)]
