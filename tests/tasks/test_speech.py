"""The speech task's data: the generator, the voice split, the bundled corpus, audio files and features; predict."""
import io
import wave

import numpy as np
import pytest

from rnnbackends import checkpoint
from rnnbackends.speech.audio import read_audio, resample, write_wav
from rnnbackends.speech.corpus import (
    SPLITS,
    WORDS,
    Utterance,
    read_corpus,
    read_transcripts,
    split_of_name,
    voice_split,
    write_transcripts,
)
from rnnbackends.speech.features import log_mel, mel_filterbank, utterance_features
from rnnbackends.speech.model import SpeechRecognizer
from rnnbackends.tasks import speech
from rnnbackends.tasks.speech import BUNDLED, TASK, edit_distance, label_set, word_error_rate


def variants_by_split(utterances):
    """The set of voice variants (``accent+variant`` -> variant) heard in each split."""
    return {s: {u.voice.split("+", 1)[1] for u in utterances if u.split == s} for s in SPLITS}


@pytest.fixture(scope="module")
def bundled():
    return read_corpus(BUNDLED)


def test_bundled_corpus_loads(bundled):
    assert len(bundled) >= 500
    assert {u.split for u in bundled} == set(SPLITS)
    assert all(u.rate == 8000 and 0.3 < len(u.samples) / u.rate < 6.0 for u in bundled)
    assert all(1 <= len(u.text.split()) <= 7 and set(u.text.split()) <= set(WORDS) for u in bundled)
    assert all(np.abs(u.samples).max() <= 1.0 for u in bundled)


def test_bundled_held_out_voices_are_disjoint(bundled):
    heard = variants_by_split(bundled)
    assert not heard["test"] & heard["train"] and not heard["valid"] & heard["train"]
    assert not heard["test"] & heard["valid"]
    assert len(heard["test"]) >= 10


def test_voice_split_is_disjoint_and_covers_everything():
    variants = [f"v{i}" for i in range(37)]
    groups = voice_split(variants)
    assert sorted(sum(groups.values(), [])) == sorted(variants)
    assert all(not set(groups[a]) & set(groups[b]) for a in SPLITS for b in SPLITS if a < b)


def test_generator_is_deterministic_and_holds_out_voices(tmp_path):
    pytest.importorskip("espeakng_loader", reason="making a corpus needs pip install 'rnnbackends[speech]'")
    from rnnbackends.speech.corpus import make_corpus
    first = make_corpus(tmp_path / "a", 20, seed=5, rate=8000)
    make_corpus(tmp_path / "b", 20, seed=5, rate=8000)
    other = make_corpus(tmp_path / "c", 20, seed=6, rate=8000, bundle=True)
    assert (tmp_path / "a" / "transcripts.tsv").read_bytes() == (tmp_path / "b" / "transcripts.tsv").read_bytes()
    for u in first:
        assert (tmp_path / "a" / u.name).read_bytes() == (tmp_path / "b" / u.name).read_bytes()
    assert [u.text for u in first] != [u.text for u in other]
    heard = variants_by_split(first + other)
    assert not heard["test"] & heard["train"] and heard["test"]
    loaded = read_corpus(tmp_path / "c")                                        # the bundled format round trip
    assert [u.text for u in loaded] == [u.text for u in other]
    for u, v in zip(loaded, other):
        np.testing.assert_allclose(u.samples, v.samples, atol=1 / 127 + 1e-6)
    assert [u.split for u in read_corpus(tmp_path / "a")] == [u.split for u in first]


def test_wav_round_trip_and_formats(tmp_path):
    samples = (0.5 * np.sin(np.arange(800) / 5.0)).astype(np.float32)
    write_wav(tmp_path / "a.wav", samples, 8000)
    back, rate = read_audio(tmp_path / "a.wav")
    assert rate == 8000
    np.testing.assert_allclose(back, samples, atol=1e-4)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as f:                                          # 8-bit stereo
        f.setnchannels(2)
        f.setsampwidth(1)
        f.setframerate(16000)
        f.writeframes(np.array([[128 + 64, 128 - 64]] * 10, dtype=np.uint8).tobytes())
    (tmp_path / "b.wav").write_bytes(buffer.getvalue())
    stereo, rate = read_audio(tmp_path / "b.wav")
    assert rate == 16000 and np.allclose(stereo, 0.0)
    soundfile = pytest.importorskip("soundfile")
    soundfile.write(tmp_path / "c.flac", samples, 8000)
    flac, rate = read_audio(tmp_path / "c.flac")
    np.testing.assert_allclose(flac, samples, atol=1e-4)


def test_bad_audio_and_transcripts_are_one_line_errors(tmp_path):
    (tmp_path / "x.wav").write_text("not audio")
    with pytest.raises(ValueError, match="x.wav"):
        read_audio(tmp_path / "x.wav")
    with pytest.raises(ValueError, match="no such audio file"):
        read_audio(tmp_path / "missing.wav")
    with pytest.raises(ValueError, match="no transcripts.tsv"):
        read_transcripts(tmp_path)
    (tmp_path / "transcripts.tsv").write_text("only-a-name\n")
    with pytest.raises(ValueError, match=r"transcripts.tsv:1: expected 'file<TAB>text'"):
        read_transcripts(tmp_path)


def test_resample_keeps_a_tone():
    rate = 22050
    tone = np.sin(2 * np.pi * 440 * np.arange(rate) / rate)
    down = resample(tone, rate, 8000)
    assert len(down) == 8000
    spectrum = np.abs(np.fft.rfft(down))
    assert abs(np.argmax(spectrum) - 440) <= 1


def test_features():
    filters = mel_filterbank(8000, 256, 40)
    assert filters.shape == (40, 129) and (filters.sum(axis=1) > 0).all()
    samples = np.random.default_rng(0).normal(size=8000) * 0.1
    assert log_mel(samples, 8000).shape == (99, 40)                     # 1 + ceil((8000 - 200) / 80)
    normalised = utterance_features(samples, 8000)
    np.testing.assert_allclose(normalised.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(normalised.std(axis=0), 1.0, atol=1e-3)


def test_labels_and_metrics():
    assert label_set(["one two", "two oh"]) == ("word", ["oh", "one", "two"])
    many = [" ".join(f"w{i}" for i in range(j, j + 10)) for j in range(0, 100, 10)]
    unit, symbols = label_set(many)
    assert unit == "char" and " " in symbols and "w" in symbols
    assert edit_distance("a b c".split(), "a c d".split()) == 2
    wer, accuracy = word_error_rate(["one two", "three"], ["one two", "four four"])
    assert wer == pytest.approx(2 / 3) and accuracy == 0.5
    assert split_of_name("test/x.wav") == "test" and split_of_name("dev/x.wav") == "valid"
    assert split_of_name("x.wav") in SPLITS


def write_tiny_corpus(folder, texts):
    """A corpus folder of noise 'recordings' (WAV) under train/valid/test."""
    rng = np.random.default_rng(0)
    utterances = []
    for i, text in enumerate(texts):
        split = SPLITS[i % 3]
        samples = (rng.normal(size=4000) * 0.1).astype(np.float32)
        (folder / split).mkdir(parents=True, exist_ok=True)
        write_wav(folder / split / f"{i}.wav", samples, 16000)
        utterances.append(Utterance(f"{split}/{i}.wav", text, split, f"speaker{i % 4}", samples, 16000))
    write_transcripts(folder / "transcripts.tsv", utterances)
    return utterances


def test_predict_on_wav_files(tmp_path):
    write_tiny_corpus(tmp_path / "corpus", ["yes", "no", "yes no"] * 2)
    model = SpeechRecognizer(40, 2, hidden_size=8, num_layers=1, stride=3, backend="numpy")
    checkpoint.save(tmp_path / "run", model, {"task": "speech", "unit": "word", "symbols": ["no", "yes"],
                                              "feature_rate": speech.FEATURE_RATE})
    paths = [str(tmp_path / "corpus" / "train" / "0.wav"), str(tmp_path / "corpus" / "test" / "2.wav")]
    texts = TASK.predict(tmp_path / "run", paths, backend="numpy")
    assert len(texts) == 2 and all(set(t.split()) <= {"yes", "no"} for t in texts)
    with pytest.raises(ValueError, match="no such audio file"):
        TASK.predict(tmp_path / "run", [str(tmp_path / "nothing.wav")], backend="numpy")


def test_train_on_a_user_folder_with_its_own_labels(tmp_path, monkeypatch):
    write_tiny_corpus(tmp_path / "corpus", ["ja", "nein", "ja nein", "nein ja", "ja ja", "nein"] * 2)
    monkeypatch.setitem(speech.HYPERPARAMETERS, "hidden_size", 8)
    monkeypatch.setitem(speech.HYPERPARAMETERS, "num_layers", 1)
    monkeypatch.setitem(speech.BASELINE, "epochs", 1)
    monkeypatch.setitem(speech.BASELINE, "hidden_size", 8)
    result = TASK.train(tmp_path / "corpus", backend="numpy", epochs=1, save=tmp_path / "run", progress=False)
    assert result.metric == "test WER" and 0.0 <= result.value and set(result.baselines) == set(TASK.baselines)
    assert checkpoint.load(tmp_path / "run")[1]["symbols"] == ["ja", "nein"]
    assert TASK.evaluate(tmp_path / "run", tmp_path / "corpus").value == pytest.approx(result.value)
    TASK.check_data(tmp_path / "corpus")
    with pytest.raises(ValueError, match="no transcripts.tsv"):
        TASK.check_data(tmp_path / "corpus" / "train")


@pytest.mark.slow
def test_bundled_training_beats_the_baselines(tmp_path):
    result = TASK.train(epochs=12, save=tmp_path / "run", progress=False)         # about 5 minutes on 2 cores
    assert result.value < 0.6 and result.value < result.baselines["most frequent transcript"]
    assert result.details["test sentence accuracy"] > 0.2
    predicted = TASK.predict(tmp_path / "run", [], backend=None)
    assert predicted == []
