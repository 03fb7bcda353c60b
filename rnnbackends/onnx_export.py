"""ONNX export: a checkpoint's models as ONNX graphs built with ``onnx.helper`` and checked by ``onnx.checker``.

The recurrent layers become ONNX's own RNN, GRU and LSTM operators (opset 17) with ``sequence_lens``: the gate
blocks are reordered (ours and PyTorch's LSTM i, f, g, o -> ONNX i, o, f, c; GRU r, z, n -> ONNX z, r, h with
``linear_before_reset=1``), W_X (D, G·H) and W_A (H, G·H) are transposed to ONNX's W (G·H, D) and R (G·H, H), and
b_A, b_R become ONNX's B = [Wb, Rb]. Stacked layers are chained, a bidirectional layer's two directions are
concatenated like ours. Embeddings become Gather, dense layers MatMul + Add; dropout is left out (evaluation).

Graphs by model (T steps, B rows; every id input is int64, every float float32; M members of an ensemble are
stacked on a leading axis of each output, and a classifier's ensemble also gets the averaged ``probability``):

- SequenceClassifier: ids (T, B), lengths (B,) -> logits (B,) [two classes] or (B, K), probability.
- SequenceTagger: ids (T, B), lengths (B,) -> logits (T, B, K); FeatureTagger: ids (T, B, F), lengths -> the same;
  CharTagger: ids (T, B, F), lengths, chars (C, U), char_lengths (U,), word_index (T, B) -> the same.
- LanguageModel: ids (T, B), state (layers, B, H) [LSTM: (2, layers, B, H)] -> logits (T, B, V), new_state.
- Forecaster: x (T, B, F), lengths (B,) -> predictions (B, horizon).
- SpeechRecognizer: features (T, B, F), lengths (B,) in frames -> logits (T', B, K+1), output_lengths (B,).
- EncoderDecoder: two graphs. The encoder: source_ids (S, B), source_lengths (B,) -> state (k, B, H), what
  ``EncoderDecoder.encode`` returns; the one-step decoder: tokens (B,), state -> logits (B, V), new_state. A decoding
  loop (greedy or beam search) calls the decoder once per output token.
- AttentionTranslator: two graphs. The encoder: source_ids (S, B), source_lengths (B,) -> state (parts, B, H) (the
  decoder's A_0, an LSTM's C_0 = 0 after it), memory M (S, B, K), keys M·W_αᵀ (S, B, H); the one-step decoder:
  tokens (B,), state, memory, keys, source_lengths -> logits (B, V), new_state, attention α (B, S).

Every file carries the checkpoint's meta (task, vocabularies, tokenizer, ...) as JSON in the metadata entry
``rnnbackends.meta``, and ``rnnbackends.graph`` names the graph (``model``, ``encoder`` or ``decoder``).
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

from . import checkpoint
from .files import write_atomically
from .layers import RNN, Embedding, to_host
from .tasks import TASKS, get_task

OPSET, IR_VERSION = 17, 8                      # opset 17: ONNX Runtime >= 1.13 and most other runtimes
GATE_ORDER = {"rnn": (0,), "gru": (1, 0, 2), "lstm": (0, 3, 1, 2)}   # ours -> ONNX: GRU z,r,h; LSTM i,o,f,c
OPERATOR = {"rnn": "RNN", "gru": "GRU", "lstm": "LSTM"}
ACTIVATION = {"tanh": "Tanh", "relu": "Relu"}
FORMATS = ("onnx",)
INSTALL = "pip install 'rnnbackends[onnx]'"


def require_onnx():
    """A ValueError naming the extra to install unless the ``onnx`` package is importable."""
    if importlib.util.find_spec("onnx") is None:
        raise ValueError(f"ONNX export needs the onnx package: {INSTALL}")


def output_paths(directory, out):
    """The files ``export`` writes for the checkpoint in ``directory``: OUT, or OUT's stem + .encoder.onnx and
    .decoder.onnx for an encoder-decoder (checked before any work; the weights are not read)."""
    out = Path(out)
    classes = {described["class"] for described in checkpoint.read_index(directory)["models"]}
    if classes & set(SEQ2SEQ):
        stem = out.with_suffix("") if out.suffix.lower() == ".onnx" else out
        return [stem.with_name(f"{stem.name}.{graph}.onnx") for graph in ("encoder", "decoder")]
    return [out]


def export(directory, out):
    """Write the checkpoint in ``directory`` as ONNX to ``out`` (see ``output_paths``); returns the paths written."""
    require_onnx()
    import onnx

    task = checkpoint.read_index(directory)["meta"].get("task")
    if task in TASKS:
        get_task(task)                                  # its module registers the task's own model classes
    models, meta = checkpoint.load(directory, backend="numpy")
    kind = type(models[0]).__name__
    if any(type(m).__name__ != kind for m in models):
        raise ValueError(f"{directory}: an ensemble of different model classes cannot be one ONNX graph")
    if kind not in BUILDERS:
        raise ValueError(f"{directory}: a {kind}; ONNX export knows {', '.join(sorted(BUILDERS))}")
    paths = output_paths(directory, out)
    graphs = BUILDERS[kind](models)
    for path, (name, graph) in zip(paths, graphs.items()):
        model = graph.model(f"rnnbackends {meta.get('task', kind)} {name}", {"rnnbackends.meta": json.dumps(meta),
                                                                            "rnnbackends.graph": name})
        onnx.checker.check_model(model, full_check=True)
        write_atomically(path, model.SerializeToString())
    return paths


class Graph:
    """One ONNX graph under construction: nodes, weights (initializers), inputs and outputs, with fresh names."""

    def __init__(self):
        from onnx import TensorProto, helper, numpy_helper
        self.helper, self.numpy_helper, self.tensor = helper, numpy_helper, TensorProto
        self.nodes, self.initializers, self.inputs, self.outputs, self.count = [], [], [], [], 0

    def fresh(self, hint):
        """A new tensor name."""
        self.count += 1
        return f"{hint}_{self.count}"

    def constant(self, array, hint="const"):
        """A weight or constant tensor (float arrays stored as float32) -> its name."""
        array = np.asarray(array)
        array = array.astype(np.float32) if array.dtype.kind == "f" else array
        name = self.fresh(hint)
        self.initializers.append(self.numpy_helper.from_array(array.copy(order="C"), name))
        return name

    def ints(self, *values):
        """A 1-D int64 constant (shapes, axes, indices)."""
        return self.constant(np.array(values, dtype=np.int64), "ints")

    def op(self, op_type, inputs, outputs=1, hint=None, **attributes):
        """Add one node; returns its output name (or the list of ``outputs`` names)."""
        names = [self.fresh(hint or op_type.lower()) for _ in range(outputs)]
        self.nodes.append(self.helper.make_node(op_type, list(inputs), names, **attributes))
        return names[0] if outputs == 1 else names

    def input(self, name, shape, integer=False):
        """A graph input (int64 or float32) with symbolic dimensions."""
        kind = self.tensor.INT64 if integer else self.tensor.FLOAT
        self.inputs.append(self.helper.make_tensor_value_info(name, kind, shape))
        return name

    def output(self, name, tensor, shape, integer=False):
        """Expose ``tensor`` as the graph output ``name``."""
        self.nodes.append(self.helper.make_node("Identity", [tensor], [name]))
        kind = self.tensor.INT64 if integer else self.tensor.FLOAT
        self.outputs.append(self.helper.make_tensor_value_info(name, kind, shape))

    def model(self, name, metadata):
        """The ModelProto of this graph, opset 17, with ``metadata`` as its metadata entries."""
        helper = self.helper
        graph = helper.make_graph(self.nodes, name, self.inputs, self.outputs, self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="rnnbackends")
        model.ir_version = IR_VERSION
        helper.set_model_props(model, metadata)
        return model


def gate_blocks(array, order, H):
    """The G gate blocks of width H on the last axis of ``array``, put in ``order``."""
    return np.concatenate([array[..., k * H:(k + 1) * H] for k in order], axis=-1)


def onnx_weights(rnn, layer):
    """W (dirs, G·H, D), R (dirs, G·H, H), B (dirs, 2·G·H) of one layer of ``rnn`` in ONNX's gate order."""
    H, order = rnn.hidden_size, GATE_ORDER[rnn.cell]
    W, R, B = [], [], []
    for direction in range(rnn.directions):
        key = RNN.key(layer, direction)
        w_x, w_a, b_a = (to_host(rnn.params[f"{name}_{key}"]) for name in ("w_x", "w_a", "b_a"))
        b_r = to_host(rnn.params[f"b_r_{key}"]) if f"b_r_{key}" in rnn.params else np.zeros_like(b_a)
        W.append(gate_blocks(w_x, order, H).T)                                      # (G·H, D)
        R.append(gate_blocks(w_a, order, H).T)                                      # (G·H, H)
        B.append(np.concatenate([gate_blocks(b_a, order, H), gate_blocks(b_r, order, H)]))   # (2·G·H,)
    return np.stack(W), np.stack(R), np.stack(B)


def recurrent(g, rnn, x, lengths=None, state=None):
    """The stacked, optionally bidirectional ``rnn`` over X (T, B, D) -> (A (T, B, H·dirs), [A_n per layer]
    (dirs, B, H), [C_n per layer]); ``lengths`` an int32 tensor (B,), ``state`` (A_0, C_0 or None) tensors
    (layers·dirs, B, H)."""
    dirs = rnn.directions
    finals, cells = [], []
    for layer in range(rnn.num_layers):
        W, R, B = onnx_weights(rnn, layer)
        inputs = [x, g.constant(W, "W"), g.constant(R, "R"), g.constant(B, "B"), lengths or ""]
        if state is not None:
            rows = g.ints(layer * dirs), g.ints((layer + 1) * dirs), g.ints(0)
            inputs += [g.op("Slice", [part, *rows]) for part in state if part is not None]
        attributes = dict(hidden_size=rnn.hidden_size, direction="bidirectional" if dirs == 2 else "forward")
        if rnn.cell == "rnn":
            attributes["activations"] = [ACTIVATION[rnn.nonlinearity]] * dirs
        if rnn.cell == "gru":
            attributes["linear_before_reset"] = 1
        outputs = g.op(OPERATOR[rnn.cell], inputs, outputs=3 if rnn.cell == "lstm" else 2, hint=rnn.cell,
                       **attributes)
        y = g.op("Transpose", [outputs[0]], perm=[0, 2, 1, 3])                     # (T, dirs, B, H) -> (T, B, dirs, H)
        x = g.op("Reshape", [y, g.ints(0, 0, -1)])                                 # (T, B, H·dirs)
        finals.append(outputs[1])                                                  # A_n (dirs, B, H)
        cells.append(outputs[2] if rnn.cell == "lstm" else None)                   # C_n
    return x, finals, cells


def last_states(g, final):
    """A_n (dirs, B, H) -> (B, H·dirs), directions side by side as ``RNN.forward`` returns them."""
    return g.op("Reshape", [g.op("Transpose", [final], perm=[1, 0, 2]), g.ints(0, -1)])


def dense(g, layer, x):
    """X (..., H) -> X·W_y + b_y (..., K)."""
    return g.op("Add", [g.op("MatMul", [x, g.constant(to_host(layer.params["w_y"]), "W_y")]),
                        g.constant(to_host(layer.params["b_y"]), "b_y")])


def encode_words(g, encoder, ids):
    """ids (T, B) -> X (T, B, D): an Embedding's Gather, or the lecture's one-hot vectors (padding -> 0)."""
    if isinstance(encoder, Embedding):
        return g.op("Gather", [g.constant(to_host(encoder.params["weight"]), "embedding"), ids])
    x = g.op("OneHot", [ids, g.ints(encoder.vocab_size), g.constant(np.array([0.0, 1.0]))], axis=-1)
    if encoder.padding_idx is None:
        return x
    keep = g.op("Cast", [g.op("Not", [g.op("Equal", [ids, g.ints(encoder.padding_idx)])])], to=g.tensor.FLOAT)
    return g.op("Mul", [x, g.op("Unsqueeze", [keep, g.ints(-1)])])


def valid_steps(g, x, lengths):
    """(T, B, 1) booleans: step t < lengths[b] of X (T, B, ...)."""
    T = g.op("Squeeze", [g.op("Shape", [x], start=0, end=1), g.ints(0)])
    steps = g.op("Range", [g.constant(np.array(0, dtype=np.int64)), T, g.constant(np.array(1, dtype=np.int64))])
    valid = g.op("Less", [g.op("Unsqueeze", [steps, g.ints(1)]), g.op("Unsqueeze", [lengths, g.ints(0)])])
    return g.op("Unsqueeze", [valid, g.ints(2)])


def lengths_input(g, name="lengths"):
    """The int64 lengths input (B,) and its int32 copy for ``sequence_lens``."""
    lengths = g.input(name, ["B"], integer=True)
    return lengths, g.op("Cast", [lengths], to=g.tensor.INT32)


def stack_members(g, tensors):
    """Ensemble members' outputs -> stacked on a new leading axis (one member: unchanged)."""
    if len(tensors) == 1:
        return tensors[0]
    return g.op("Concat", [g.op("Unsqueeze", [t, g.ints(0)]) for t in tensors], axis=0)


def classifier_graphs(models):
    """SequenceClassifier: ids (T, B), lengths (B,) -> logits, probability (averaged over an ensemble)."""
    g = Graph()
    ids = g.input("ids", ["T", "B"], integer=True)
    lengths, lengths32 = lengths_input(g)
    logits = []
    for model in models:
        a, finals, _ = recurrent(g, model.rnn, encode_words(g, model.encoder, ids), lengths32)
        if model.pooling == "last":
            features = last_states(g, finals[-1])                                 # (B, H·dirs)
        elif model.pooling == "mean":
            valid = g.op("Cast", [valid_steps(g, a, lengths)], to=g.tensor.FLOAT)
            count = g.op("Unsqueeze", [g.op("Cast", [lengths], to=g.tensor.FLOAT), g.ints(1)])
            features = g.op("Div", [g.op("ReduceSum", [g.op("Mul", [a, valid]), g.ints(0)], keepdims=0), count])
        else:
            masked = g.op("Where", [valid_steps(g, a, lengths), a, g.constant(np.array(-np.inf, dtype=np.float32))])
            features = g.op("ReduceMax", [masked], axes=[0], keepdims=0)
        out = dense(g, model.output, features)                                    # (B, K)
        logits.append(g.op("Squeeze", [out, g.ints(1)]) if model.output.output_size == 1 else out)
    binary = models[0].output.output_size == 1
    members = ["M"] if len(models) > 1 else []
    g.output("logits", stack_members(g, logits), members + (["B"] if binary else ["B", "K"]))
    p = [g.op("Sigmoid", [t]) if binary else g.op("Softmax", [t], axis=-1) for t in logits]
    mean = p[0] if len(p) == 1 else g.op("ReduceMean", [stack_members(g, p)], axes=[0], keepdims=0)
    g.output("probability", mean, ["B"] if binary else ["B", "K"])
    return {"model": g}


def feature_embeddings(g, embedding, ids):
    """ids (T, B, F) -> the F embeddings of each word side by side (T, B, F·D)."""
    return g.op("Reshape", [g.op("Gather", [g.constant(to_host(embedding.params["weight"]), "embedding"), ids]),
                            g.ints(0, 0, -1)])


def tagger_graphs(models):
    """SequenceTagger (ids (T, B)) or FeatureTagger (ids (T, B, F)), lengths (B,) -> logits (T, B, K)."""
    g = Graph()
    features = type(models[0]).__name__ == "FeatureTagger"
    ids = g.input("ids", ["T", "B", "F"] if features else ["T", "B"], integer=True)
    _, lengths32 = lengths_input(g)
    logits = []
    for model in models:
        x = feature_embeddings(g, model.embedding, ids) if features else encode_words(g, model.encoder, ids)
        logits.append(dense(g, model.output, recurrent(g, model.rnn, x, lengths32)[0]))
    g.output("logits", stack_members(g, logits), (["M"] if len(models) > 1 else []) + ["T", "B", "K"])
    return {"model": g}


def char_tagger_graphs(models):
    """CharTagger: ids (T, B, F), lengths (B,), chars (C, U), char_lengths (U,), word_index (T, B) -> logits
    (T, B, K); each distinct word spelled once by the char RNN, its final states gathered for every token."""
    g = Graph()
    ids = g.input("ids", ["T", "B", "F"], integer=True)
    _, lengths32 = lengths_input(g)
    chars = g.input("chars", ["C", "U"], integer=True)
    _, char_lengths32 = lengths_input(g, "char_lengths")
    word_index = g.input("word_index", ["T", "B"], integer=True)
    logits = []
    for model in models:
        spelled = g.op("Gather", [g.constant(to_host(model.char_embedding.params["weight"]), "char_embedding"),
                                  chars])                                         # (C, U, D_c)
        spellings = last_states(g, recurrent(g, model.char_rnn, spelled, char_lengths32)[1][-1])   # (U, 2·H_c)
        x = g.op("Concat", [feature_embeddings(g, model.embedding, ids), g.op("Gather", [spellings, word_index])],
                 axis=2)                                                          # (T, B, F·D + 2·H_c)
        logits.append(dense(g, model.output, recurrent(g, model.rnn, x, lengths32)[0]))
    g.output("logits", stack_members(g, logits), (["M"] if len(models) > 1 else []) + ["T", "B", "K"])
    return {"model": g}


def language_model_graphs(models):
    """LanguageModel: ids (T, B), state -> logits (T, B, V), state (call with T = 1 to sample step by step)."""
    if len(models) > 1:
        raise ValueError("an ensemble of language models cannot be one ONNX graph; export one checkpoint each")
    model, g = models[0], Graph()
    lstm = model.rnn.cell == "lstm"
    ids = g.input("ids", ["T", "B"], integer=True)
    state = g.input("state", ([2] if lstm else []) + [model.rnn.num_layers, "B", model.rnn.hidden_size])
    parts = [g.op("Gather", [state, g.constant(np.array(i, dtype=np.int64))]) for i in range(2)] if lstm else [state]
    a, finals, cells = recurrent(g, model.rnn, encode_words(g, model.encoder, ids), state=parts)
    g.output("logits", dense(g, model.output, a), ["T", "B", model.output.output_size])
    new_state = g.op("Concat", finals, axis=0)                                    # (layers, B, H)
    if lstm:
        new_state = stack_members(g, [new_state, g.op("Concat", cells, axis=0)])  # (2, layers, B, H)
    g.output("new_state", new_state, ([2] if lstm else []) + [model.rnn.num_layers, "B", model.rnn.hidden_size])
    return {"model": g}


def forecaster_graphs(models):
    """Forecaster: x (T, B, F), lengths (B,) -> predictions (B, horizon), members stacked first."""
    g = Graph()
    x = g.input("x", ["T", "B", models[0].config["input_size"]])
    _, lengths32 = lengths_input(g)
    predictions = [dense(g, m.output, last_states(g, recurrent(g, m.rnn, x, lengths32)[1][-1])) for m in models]
    g.output("predictions", stack_members(g, predictions),
             (["M"] if len(models) > 1 else []) + ["B", models[0].output.output_size])
    return {"model": g}


def speech_graphs(models):
    """SpeechRecognizer: features (T, B, F), lengths (B,) frames -> CTC logits (T', B, K+1), output_lengths (B,)."""
    if len(models) > 1:
        raise ValueError("an ensemble of speech recognizers cannot be one ONNX graph; export one checkpoint each")
    model, g = models[0], Graph()
    stride = model.stride
    x = g.input("features", ["T", "B", model.config["num_features"]])
    lengths = g.input("lengths", ["B"], integer=True)
    T = g.op("Shape", [x], start=0, end=1)
    padding = g.op("Sub", [g.op("Mul", [g.op("Div", [g.op("Add", [T, g.ints(stride - 1)]), g.ints(stride)]),
                                         g.ints(stride)]), T])                    # frames to make T a multiple
    padded = g.op("Pad", [x, g.op("Concat", [g.ints(0, 0, 0), padding, g.ints(0, 0)], axis=0)])
    grouped = g.op("Reshape", [padded, g.op("Concat", [g.ints(-1, stride), g.op("Shape", [x], start=1)], axis=0)])
    stacked = g.op("Reshape", [g.op("Transpose", [grouped], perm=[0, 2, 1, 3]), g.ints(0, 0, -1)])  # (T', B, s·F)
    steps = g.op("Div", [g.op("Add", [lengths, g.ints(stride - 1)]), g.ints(stride)])  # ceil(length / stride)
    a, _, _ = recurrent(g, model.rnn, stacked, g.op("Cast", [steps], to=g.tensor.INT32))
    g.output("logits", dense(g, model.output, a), ["T'", "B", model.output.output_size])
    g.output("output_lengths", steps, ["B"], integer=True)
    return {"model": g}


def encoder_decoder_graphs(models):
    """EncoderDecoder: the encoder graph and the one-step decoder graph."""
    if len(models) > 1:
        raise ValueError("an ensemble of translators cannot be one ONNX graph; export one checkpoint each")
    model = models[0]
    lstm, H = model.encoder.cell == "lstm", model.encoder.hidden_size
    rows = 1 + lstm + bool(model.feed_context)                                    # A (, C) (, the fed context)
    encoder = Graph()
    source = encoder.input("source_ids", ["S", "B"], integer=True)
    _, lengths32 = lengths_input(encoder, "source_lengths")
    x = encoder.op("Gather", [encoder.constant(to_host(model.source_embedding.params["weight"]), "embedding"),
                              source])
    _, finals, cells = recurrent(encoder, model.encoder, x, lengths32)
    parts = finals + (cells if lstm else []) + (finals if model.feed_context else [])
    encoder.output("state", encoder.op("Concat", parts, axis=0), [rows, "B", H])
    decoder = Graph()
    tokens = decoder.input("tokens", ["B"], integer=True)
    state = decoder.input("state", [rows, "B", H])
    x = decoder.op("Gather", [decoder.constant(to_host(model.target_embedding.params["weight"]), "embedding"),
                              decoder.op("Unsqueeze", [tokens, decoder.ints(0)])])      # (1, B, D)
    if model.feed_context:
        context = decoder.op("Slice", [state, decoder.ints(rows - 1), decoder.ints(rows), decoder.ints(0)])
        x = decoder.op("Concat", [x, context], axis=2)                              # (1, B, D + H)
    initial = [decoder.op("Slice", [state, decoder.ints(i), decoder.ints(i + 1), decoder.ints(0)])
               for i in range(1 + lstm)]
    a, finals, cells = recurrent(decoder, model.decoder, x, state=(initial[0], initial[1] if lstm else None))
    logits = decoder.op("Squeeze", [dense(decoder, model.output, a), decoder.ints(0)])  # (B, V)
    decoder.output("logits", logits, ["B", model.output.output_size])
    kept = [decoder.op("Slice", [state, decoder.ints(1 + lstm), decoder.ints(rows), decoder.ints(0)])] \
        if model.feed_context else []
    decoder.output("new_state", decoder.op("Concat", finals + (cells if lstm else []) + kept, axis=0), [rows, "B", H])
    return {"encoder": encoder, "decoder": decoder}


def attention_translator_graphs(models):
    """AttentionTranslator: the encoder graph (memory, its keys, the decoder's initial state) and the one-step
    decoder graph that attends over the memory."""
    if len(models) > 1:
        raise ValueError("an ensemble of translators cannot be one ONNX graph; export one checkpoint each")
    model = models[0]
    lstm, H, K = model.decoder.cell == "lstm", model.decoder.hidden_size, model.attention.memory_size
    parts = 2 if lstm else 1
    encoder = Graph()
    source = encoder.input("source_ids", ["S", "B"], integer=True)
    _, lengths32 = lengths_input(encoder, "source_lengths")
    x = encoder.op("Gather", [encoder.constant(to_host(model.source_embedding.params["weight"]), "embedding"),
                              source])                                               # (S, B, D)
    memory, finals, _ = recurrent(encoder, model.encoder, x, lengths32)              # M (S, B, K)
    a0 = encoder.op("Unsqueeze", [encoder.op("Tanh", [dense(encoder, model.bridge, last_states(encoder, finals[0]))]),
                                  encoder.ints(0)])                                  # A_0 (1, B, H)
    state = encoder.op("Concat", [a0, encoder.op("Sub", [a0, a0])], axis=0) if lstm else a0   # C_0 = 0
    encoder.output("state", state, [parts, "B", H])
    encoder.output("memory", memory, ["S", "B", K])
    encoder.output("keys", encoder.op("MatMul", [memory, encoder.constant(
        to_host(model.attention.params["w_alpha"]).T * model.attention.scale, "W_alpha_T")]), ["S", "B", H])
    # keys M·W_αᵀ/√H (S, B, H)
    decoder = Graph()
    tokens = decoder.input("tokens", ["B"], integer=True)
    state = decoder.input("state", [parts, "B", H])
    memory = decoder.input("memory", ["S", "B", K])
    keys = decoder.input("keys", ["S", "B", H])
    lengths = decoder.input("source_lengths", ["B"], integer=True)
    x = decoder.op("Gather", [decoder.constant(to_host(model.target_embedding.params["weight"]), "embedding"),
                              decoder.op("Unsqueeze", [tokens, decoder.ints(0)])])      # (1, B, D)
    initial = [decoder.op("Slice", [state, decoder.ints(i), decoder.ints(i + 1), decoder.ints(0)])
               for i in range(parts)]
    a, finals, cells = recurrent(decoder, model.decoder, x, state=(initial[0], initial[1] if lstm else None))
    q = decoder.op("Transpose", [a], perm=[1, 0, 2])                                  # A_t (B, 1, H)
    scores = decoder.op("MatMul", [q, decoder.op("Transpose", [keys], perm=[1, 2, 0])])   # (B, 1, S)
    valid = decoder.op("Transpose", [valid_steps(decoder, memory, lengths)], perm=[1, 2, 0])   # (B, 1, S)
    alpha = decoder.op("Softmax", [decoder.op("Where", [valid, scores, decoder.constant(
        np.array(-np.inf, dtype=np.float32))])], axis=-1)                             # α_t (B, 1, S)
    context = decoder.op("MatMul", [alpha, decoder.op("Transpose", [memory], perm=[1, 0, 2])])   # C_t (B, 1, K)
    joined = decoder.op("Concat", [context, q], axis=2)                                # [C_t; A_t] (B, 1, K+H)
    attended = decoder.op("Tanh", [decoder.op("Add", [
        decoder.op("MatMul", [joined, decoder.constant(to_host(model.attention.params["w_c"]), "W_c")]),
        decoder.constant(to_host(model.attention.params["b_c"]), "b_c")])])           # Ã_t (B, 1, H)
    logits = dense(decoder, model.output, decoder.op("Squeeze", [attended, decoder.ints(1)]))   # (B, V)
    decoder.output("logits", logits, ["B", model.output.output_size])
    decoder.output("new_state", decoder.op("Concat", finals + (cells if lstm else []), axis=0), [parts, "B", H])
    decoder.output("attention", decoder.op("Squeeze", [alpha, decoder.ints(1)]), ["B", "S"])
    return {"encoder": encoder, "decoder": decoder}


SEQ2SEQ = ("EncoderDecoder", "AttentionTranslator")
BUILDERS = {"SequenceClassifier": classifier_graphs, "SequenceTagger": tagger_graphs, "FeatureTagger": tagger_graphs,
            "CharTagger": char_tagger_graphs,
            "LanguageModel": language_model_graphs, "Forecaster": forecaster_graphs,
            "SpeechRecognizer": speech_graphs, "EncoderDecoder": encoder_decoder_graphs,
            "AttentionTranslator": attention_translator_graphs}
