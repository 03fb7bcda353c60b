"""ONNX export: each task's model (built by its constructor with the task's sizes, random weights, checkpointed)
goes through `rnnbackends export`, runs in ONNX Runtime on the CPU on real inputs from the bundled data, and
matches our logits to 1e-5 (float32); translation decodes greedily through the two graphs. Then the command's
bad input: format, checkpoint, existing output, a missing onnx package."""
import itertools
import json
import lzma

import numpy as np
import pytest

from rnnbackends import checkpoint
from rnnbackends.cli import main
from rnnbackends.data import Tokenizer, Vocabulary, pad_batch
from rnnbackends.datasets import default_data, read_text
from rnnbackends.decoding import beam_search
from rnnbackends.layers import to_host
from rnnbackends.models import EncoderDecoder, FeatureTagger, Forecaster, LanguageModel, SequenceClassifier
from rnnbackends.tasks import sentiment, speech, tagging, textgen, timeseries, translation

ort = pytest.importorskip("onnxruntime", reason="the [onnx] extra: pip install 'rnnbackends[onnx]'")
pytest.importorskip("onnx", reason="the [onnx] extra: pip install 'rnnbackends[onnx]'")
conllu = pytest.importorskip("conllu")

CELLS = ("rnn", "gru", "lstm")
TOLERANCE = dict(rtol=1e-5, atol=1e-5)


def with_random_weights(model, seed):
    """Every parameter moved off its initial value by half its spread (dense biases, which start at 0, by 0.05),
    in evaluation mode: weights of a trained model's size, not a chaotic recurrence that float32 rounding decides."""
    rng = np.random.default_rng(seed)
    model.load_state_dict({k: v + rng.normal(0.0, 0.5 * v.std() or 0.05, v.shape)
                           for k, v in model.state_dict().items()})
    model.eval()
    return model


def exported(tmp_path, models, task, capsys):
    """Save ``models`` as a checkpoint of ``task``, export it with the CLI; ONNX Runtime sessions of the files."""
    checkpoint.save(tmp_path / "ckpt", models, {"task": task})
    out = tmp_path / "model.onnx"
    assert main(["export", "--checkpoint", str(tmp_path / "ckpt"), "--format", "onnx", str(out)]) == 0
    written = [line.removeprefix("wrote ") for line in capsys.readouterr().out.splitlines()]
    return [ort.InferenceSession(path, providers=["CPUExecutionProvider"]) for path in written]


@pytest.mark.parametrize("cell", CELLS)
def test_sentiment_ensemble_matches_on_test_sentences(tmp_path, capsys, cell):
    d = sentiment.prepare(None)
    models = [with_random_weights(SequenceClassifier(len(d.vocabulary), 2, **sentiment.HYPERPARAMETERS, cell=cell,
                                                     backend="numpy", seed=s), s) for s in range(2)]
    (session,) = exported(tmp_path, models, "sentiment", capsys)
    rows = d.test[:32]
    ids, lengths = pad_batch([d.ids[i] for i in rows])
    assert len(set(lengths)) > 5                                           # padding and reversal within lengths
    logits, probability = session.run(["logits", "probability"], {"ids": ids, "lengths": lengths})
    np.testing.assert_allclose(logits, np.stack([to_host(m.forward(ids, lengths)) for m in models]), **TOLERANCE)
    np.testing.assert_allclose(probability, sentiment.probabilities(models, d.ids, rows), **TOLERANCE)


@pytest.mark.parametrize("options", [dict(pooling="last", num_layers=2), dict(pooling="mean", nonlinearity="relu"),
                                     dict(embed_dim=0, num_classes=3, pooling="max")])
def test_classifier_options_match_one_hot_relu_last_and_mean_pooling_three_classes(tmp_path, capsys, options):
    d = sentiment.prepare(None)
    options = {"embed_dim": 16, "hidden_size": 16, "bidirectional": True, "num_classes": 2, **options}
    models = [with_random_weights(SequenceClassifier(len(d.vocabulary), backend="numpy", seed=s, **options), s)
              for s in range(2)]
    (session,) = exported(tmp_path, models, "sentiment", capsys)
    ids, lengths = pad_batch([d.ids[i] for i in d.test[:16]])
    logits, probability = session.run(["logits", "probability"], {"ids": ids, "lengths": lengths})
    ours = np.stack([to_host(m.forward(ids, lengths)) for m in models])
    np.testing.assert_allclose(logits, ours, **TOLERANCE)
    if options["num_classes"] == 3:                                            # softmax, averaged over members
        e = np.exp(ours - ours.max(axis=-1, keepdims=True))
        np.testing.assert_allclose(probability, (e / e.sum(axis=-1, keepdims=True)).mean(axis=0), **TOLERANCE)


def test_timeseries_ensemble_matches_on_airline_windows(tmp_path, capsys):
    _, _, values, n_train, _, _, _ = timeseries.TASK.prepare(None)
    scaler = timeseries.Scaler.fit(values[:n_train], values)
    x, _ = timeseries.windows(scaler.changes(scaler.to_level(values)), 25, 0, len(values) - 1)   # (T, N, 1)
    x = x.astype(np.float32)
    lengths = np.full(x.shape[1], x.shape[0], dtype=np.int64)
    for cell in CELLS:
        models = [with_random_weights(Forecaster(1, **timeseries.HYPERPARAMETERS, cell=cell, backend="numpy", seed=s),
                                      s) for s in range(2)]
        (session,) = exported(tmp_path / cell, models, "timeseries", capsys)
        (predictions,) = session.run(["predictions"], {"x": x, "lengths": lengths})
        np.testing.assert_allclose(predictions, np.stack([to_host(m.forward(x, lengths)) for m in models]),
                                   **TOLERANCE)


def ewt_sentences(count):
    """The word forms of the first ``count`` sentences of the bundled EWT test file."""
    with lzma.open(default_data("tagging") / "en_ewt-ud-test.conllu.xz", "rt", encoding="utf-8") as f:
        sentences = list(itertools.islice(conllu.parse_incr(f), count))
    return [[token["form"] for token in s if isinstance(token["id"], int)] for s in sentences]


@pytest.mark.parametrize("cell", ["gru"])                                         # the task's tagger is CharTagger
def test_feature_tagger_matches_on_ewt_sentences(tmp_path, capsys, cell):
    words = ewt_sentences(24)
    vocabulary = Vocabulary.build([[w.lower() for w in s] + [w[-3:] for w in s] for s in words])
    lengths = np.array([len(s) for s in words])
    ids = np.zeros((lengths.max(), len(words), 2), dtype=np.int64)              # (T, B, F = 2): word, suffix
    for b, sentence in enumerate(words):
        ids[:len(sentence), b] = [vocabulary.encode([w.lower(), w[-3:]]) for w in sentence]
    model = with_random_weights(FeatureTagger(len(vocabulary), 2, 17, embed_dim=48, hidden_size=128, num_layers=2,
                                              cell=cell, backend="numpy"), 1)
    (session,) = exported(tmp_path, [model], "tagging", capsys)
    (logits,) = session.run(["logits"], {"ids": ids, "lengths": lengths})
    np.testing.assert_allclose(logits, to_host(model.forward(ids, lengths)), **TOLERANCE)


@pytest.mark.parametrize("cell", CELLS)
def test_char_tagger_matches_on_ewt_sentences_with_the_tasks_inputs(tmp_path, capsys, cell):
    from rnnbackends.char_tagger import CharTagger
    words = ewt_sentences(24)
    vocabulary = Vocabulary.build(tagging.features(w) for s in words[:16] for w in s)    # unseen words too
    characters = Vocabulary.build(list(w) for s in words[:16] for w in s)
    ids, lengths, chars, char_lengths, word_index = tagging.model_inputs(
        [tagging.encode_sentence(vocabulary, s) for s in words], words, characters)
    model = with_random_weights(CharTagger(len(vocabulary), tagging.NUM_FEATURES, len(characters), len(tagging.UPOS),
                                           **tagging.HYPERPARAMETERS, cell=cell, backend="numpy"), 5)
    (session,) = exported(tmp_path, [model], "tagging", capsys)
    (logits,) = session.run(["logits"], {"ids": ids, "lengths": lengths, "chars": chars, "char_lengths": char_lengths,
                                         "word_index": word_index})
    np.testing.assert_allclose(logits, to_host(model.forward(ids, lengths, chars, char_lengths, word_index)),
                               **TOLERANCE)


@pytest.mark.parametrize("cell", CELLS)
def test_language_model_matches_and_carries_its_state_on_shakespeare(tmp_path, capsys, cell):
    text = read_text(default_data("textgen"))[:20000]
    tokenizer = Tokenizer("char")
    vocabulary = Vocabulary.build([tokenizer(text)])
    stream = np.array(vocabulary.encode(tokenizer(text)), dtype=np.int64)
    sizes = textgen.GATED_MODEL                                                  # the task's two-layer sizes
    model = with_random_weights(LanguageModel(len(vocabulary), textgen.EMBED_DIM["char"], sizes["hidden"],
                                              sizes["layers"], cell=cell, stateful=True, backend="numpy"), 2)
    (session,) = exported(tmp_path, [model], "textgen", capsys)
    batch = stream[:2 * 4 * 50].reshape(4, 2, 50).transpose(2, 0, 1)           # two chunks (50, B = 4)
    shape = ((2,) if cell == "lstm" else ()) + (model.rnn.num_layers, 4, model.rnn.hidden_size)
    state = np.zeros(shape, dtype=np.float32)
    for chunk in range(2):                                                      # the state carries across chunks
        logits, state = session.run(["logits", "new_state"], {"ids": batch[:, :, chunk], "state": state})
        np.testing.assert_allclose(logits, to_host(model.forward(batch[:, :, chunk])), **TOLERANCE)
        np.testing.assert_allclose(state, to_host(model.state), **TOLERANCE)
    step_logits, _ = session.run(["logits", "new_state"], {"ids": batch[:1, :, 0], "state": state})
    np.testing.assert_allclose(step_logits[0], model.step(batch[0, :, 0], to_host(model.state))[0], **TOLERANCE)


def greedy_onnx(encoder, decoder, source_ids, source_lengths, start_id, end_id, max_steps):
    """The documented decoding loop: encode once, then feed each step's most probable token back."""
    (state,) = encoder.run(["state"], {"source_ids": source_ids, "source_lengths": source_lengths})
    tokens = np.full(source_ids.shape[1], start_id, dtype=np.int64)
    outputs, steps = [], []
    for _ in range(max_steps):
        logits, state = decoder.run(["logits", "new_state"], {"tokens": tokens, "state": state})
        steps.append(logits)
        tokens = logits.argmax(axis=1)
        outputs.append(tokens)
    ids = np.stack(outputs, axis=1)
    return [list(row[:list(row).index(end_id)] if end_id in row else row) for row in ids], steps


def tatoeba_sources():
    """Vocabularies of 400 bundled Tatoeba pairs (1 to 11 words) and 10 of their sources padded: (english, spanish,
    source ids (S, 10), lengths (10,), start id, end id)."""
    pairs = translation.read_pairs(None)[::100]
    tokenizer = Tokenizer("word")
    english = Vocabulary.build([tokenizer(e) for e, _ in pairs])
    spanish = translation.target_vocabulary([tokenizer(s) for _, s in pairs], 1000)
    source_ids, lengths = pad_batch([english.encode(tokenizer(e)) for e, _ in pairs[::40]])
    assert len(set(lengths)) > 2
    return english, spanish, source_ids, lengths, spanish.index[translation.START], spanish.index[translation.END]


@pytest.mark.parametrize("cell", CELLS)
def test_translation_encoder_and_decoder_step_match_and_decode_like_ours(tmp_path, capsys, cell):
    english, spanish, source_ids, source_lengths, start, end = tatoeba_sources()
    model = with_random_weights(EncoderDecoder(len(english), len(spanish), embed_dim=128, hidden_size=256,
                                               cell=cell, feed_context=cell == "gru", backend="numpy"), 3)
    encoder, decoder = exported(tmp_path, [model], "translation", capsys)
    ours_ids, _ = model.translate(source_ids, source_lengths, start, end, max_steps=8)
    theirs_ids, theirs_logits = greedy_onnx(encoder, decoder, source_ids, source_lengths, start, end, 8)
    assert [list(x) for x in ours_ids] == theirs_ids
    state = model.encode(source_ids, source_lengths)
    np.testing.assert_allclose(encoder.run(["state"], {"source_ids": source_ids,
                                                       "source_lengths": source_lengths})[0], state, **TOLERANCE)
    tokens = np.full(source_ids.shape[1], start, dtype=np.int64)
    for logits in theirs_logits[:3]:                                            # the same steps, logits to 1e-5
        ours, state = model.step(tokens, state)
        np.testing.assert_allclose(logits, ours, **TOLERANCE)
        tokens = ours.argmax(axis=1)

    def onnx_step(tokens, state):
        """The decoder graph as the ``step`` function of rnnbackends.decoding."""
        return tuple(decoder.run(["logits", "new_state"], {"tokens": np.asarray(tokens, dtype=np.int64),
                                                           "state": np.asarray(state, dtype=np.float32)}))

    encoded = encoder.run(["state"], {"source_ids": source_ids, "source_lengths": source_lengths})[0]
    theirs_beam, _ = beam_search(onnx_step, encoded, start, end, 8, beam_size=3)
    ours_beam, _ = model.translate(source_ids, source_lengths, start, end, max_steps=8, beam_size=3)
    assert [list(x) for x in theirs_beam] == [list(x) for x in ours_beam]


def test_speech_recognizer_matches_on_bundled_utterances(tmp_path, capsys):
    from rnnbackends.speech.corpus import read_corpus
    from rnnbackends.speech.model import SpeechRecognizer
    utterances = read_corpus(speech.BUNDLED)[:5]
    x, lengths = speech.pad_features([speech.features_of(u.samples, u.rate) for u in utterances])
    assert len(set(lengths)) > 1 and any(length % 3 for length in lengths)      # frame stacking pads
    for cell in CELLS:
        model = with_random_weights(SpeechRecognizer(x.shape[2], 11, **speech.HYPERPARAMETERS, cell=cell,
                                                     backend="numpy"), 4)
        (session,) = exported(tmp_path / cell, [model], "speech", capsys)
        logits, steps = session.run(["logits", "output_lengths"], {"features": x.astype(np.float32),
                                                                   "lengths": lengths})
        np.testing.assert_allclose(logits, to_host(model.forward(x, lengths)), **TOLERANCE)
        np.testing.assert_array_equal(steps, model.output_lengths(lengths))


def test_the_file_carries_the_checkpoint_meta_and_passes_the_checker(tmp_path, capsys):
    import onnx
    d = sentiment.prepare(None)
    model = SequenceClassifier(len(d.vocabulary), 2, **sentiment.HYPERPARAMETERS, backend="numpy")
    checkpoint.save(tmp_path / "ckpt", model, {"task": "sentiment", "vocabulary": d.vocabulary.tokens})
    assert main(["export", "--checkpoint", str(tmp_path / "ckpt"), str(tmp_path / "m.onnx")]) == 0
    model = onnx.load(tmp_path / "m.onnx")
    onnx.checker.check_model(model, full_check=True)
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["rnnbackends.meta"])["vocabulary"] == d.vocabulary.tokens
    assert props["rnnbackends.graph"] == "model" and model.opset_import[0].version == 17
    assert {n.op_type for n in model.graph.node} >= {"Gather", "RNN", "MatMul", "ReduceMax", "Sigmoid"}


def error(capsys):
    """The one error line the CLI printed."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rnnbackends: error: "), lines
    return lines[0]


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    checkpoint.save(tmp_path / "ckpt", Forecaster(1, hidden_size=4, backend="numpy"), {"task": "timeseries"})
    ckpt, out = str(tmp_path / "ckpt"), tmp_path / "f.onnx"
    assert main(["export", "--checkpoint", ckpt, "--format", "tflite", str(out)]) == 2
    assert "invalid choice: 'tflite'" in error(capsys)
    assert main(["export", "--checkpoint", str(tmp_path / "nothing"), str(out)]) == 2
    assert "no such folder" in error(capsys)
    assert main(["export", "--checkpoint", ckpt, str(tmp_path / "f.txt")]) == 2
    assert "ending in one of .onnx" in error(capsys)
    out.write_bytes(b"keep")
    assert main(["export", "--checkpoint", ckpt, str(out)]) == 2
    assert "exists; give another file name, or add --force" in error(capsys) and out.read_bytes() == b"keep"
    assert main(["export", "--checkpoint", ckpt, "--force", str(out)]) == 0 and out.read_bytes() != b"keep"
    import rnnbackends.onnx_export as onnx_export
    real = onnx_export.importlib.util.find_spec
    monkeypatch.setattr(onnx_export.importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else
                        real(name, *a))
    assert main(["export", "--checkpoint", ckpt, "--force", str(out)]) == 2
    assert "pip install 'rnnbackends[onnx]'" in error(capsys)
