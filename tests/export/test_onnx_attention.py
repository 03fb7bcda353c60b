"""ONNX export of the translation task's attention model: the encoder graph's state, memory and keys, three decoder
steps (logits, state, attention weights) to 1e-5 on real Tatoeba sources, and beam search through the graphs
giving exactly our translations."""
import numpy as np
import pytest

from rnnbackends.attention import AttentionTranslator
from rnnbackends.decoding import beam_search
from tests.export.test_onnx_export import CELLS, TOLERANCE, exported, tatoeba_sources, with_random_weights

pytest.importorskip("onnxruntime", reason="the [onnx] extra: pip install 'rnnbackends[onnx]'")


@pytest.mark.parametrize("cell", CELLS)
def test_attention_translator_matches_step_by_step_and_beam_searches_like_ours(tmp_path, capsys, cell):
    english, spanish, source_ids, lengths, start, end = tatoeba_sources()
    model = with_random_weights(AttentionTranslator(len(english), len(spanish), embed_dim=128, hidden_size=256,
                                                    cell=cell, backend="numpy"), 6)
    encoder, decoder = exported(tmp_path, [model], "translation", capsys)
    state, memory, keys = encoder.run(["state", "memory", "keys"], {"source_ids": source_ids,
                                                                     "source_lengths": lengths})
    ours = model.encode(source_ids, lengths)
    np.testing.assert_allclose(state, ours[0], **TOLERANCE)
    np.testing.assert_allclose(memory, model.memory, **TOLERANCE)
    np.testing.assert_allclose(keys, model.memory_keys, **TOLERANCE)
    tokens = np.full(source_ids.shape[1], start, dtype=np.int64)
    for _ in range(3):
        logits, state, alpha = decoder.run(["logits", "new_state", "attention"], {
            "tokens": tokens, "state": state, "memory": memory, "keys": keys, "source_lengths": lengths})
        ours_logits, ours = model.step(tokens, ours)
        np.testing.assert_allclose(logits, ours_logits, **TOLERANCE)
        np.testing.assert_allclose(state, ours[0], **TOLERANCE)
        np.testing.assert_allclose(alpha, model.attention.weights[0], **TOLERANCE)
        tokens = ours_logits.argmax(axis=1)

    def onnx_step(tokens, state):
        """The decoder graph as rnnbackends.decoding's ``step``: state (decoder state, rows of the sources)."""
        decoder_state, rows = state
        logits, new_state = decoder.run(["logits", "new_state"], {
            "tokens": np.asarray(tokens, dtype=np.int64), "state": np.asarray(decoder_state, dtype=np.float32),
            "memory": memory[:, rows[0]], "keys": keys[:, rows[0]], "source_lengths": lengths[rows[0]]})
        return logits, (new_state, rows)

    initial = encoder.run(["state"], {"source_ids": source_ids, "source_lengths": lengths})[0]
    theirs, _ = beam_search(onnx_step, (initial, np.arange(source_ids.shape[1])[None]), start, end, 8, beam_size=3)
    ours_ids, _ = model.translate(source_ids, lengths, start, end, max_steps=8, beam_size=3)
    assert [list(x) for x in theirs] == [list(x) for x in ours_ids]
