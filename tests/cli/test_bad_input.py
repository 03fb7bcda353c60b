"""The bad-input battery: every case ends in exit status 2 and exactly one clear error line, never a traceback.

Cases cover every command and option of the CLI, data files of every task, output paths, backends, checkpoints
given to predict/generate/translate/evaluate, and input lines. The few cases marked ``ok`` are inputs that look
odd but are valid: they must give the right answer and exit 0.
"""
import json
import shutil

import pytest

from rnnbackends import checkpoint
from rnnbackends.cli import main

T, S, G, R, E = "timeseries", "sentiment", "textgen", "translation", "tagging"

# (case id, argv with {placeholders}, standard input or None, a fragment of the error line)
CASES = [
    # the parser: commands, missing and malformed options
    ("no-command", [], None, "required: COMMAND"),
    ("unknown-command", ["fly"], None, "invalid choice: 'fly'"),
    ("train-no-task", ["train"], None, "required: task"),
    ("train-unknown-task", ["train", "nosuchtask"], None, "unknown task 'nosuchtask'"),
    ("train-empty-task", ["train", ""], None, "argument task: must not be empty"),
    ("train-unknown-flag", ["train", T, "--fast"], None, "unrecognized arguments: --fast"),
    ("epochs-zero", ["train", T, "--epochs", "0"], None, "--epochs: must be at least 1, got 0"),
    ("epochs-negative", ["train", T, "--epochs", "-3"], None, "--epochs: must be at least 1, got -3"),
    ("epochs-word", ["train", T, "--epochs", "ten"], None, "--epochs: expected a whole number, got 'ten'"),
    ("epochs-float", ["train", T, "--epochs", "1.5"], None, "--epochs: expected a whole number"),
    ("epochs-empty", ["train", T, "--epochs", ""], None, "--epochs: expected a whole number"),
    ("seed-negative", ["train", S, "--seed", "-1"], None, "--seed: must be at least 0, got -1"),
    ("seed-word", ["train", S, "--seed", "x"], None, "--seed: expected a whole number"),
    ("data-empty", ["train", S, "--data", ""], None, "--data: must not be empty"),
    ("data-blank", ["train", S, "--data", "  "], None, "--data: must not be empty"),
    ("save-empty", ["train", T, "--save", ""], None, "--save: must not be empty"),
    ("metrics-empty", ["train", T, "--metrics-out", ""], None, "--metrics-out: must not be empty"),
    ("plot-empty", ["train", T, "--plot", ""], None, "--plot: must not be empty"),
    ("backend-empty", ["train", T, "--backend", ""], None, "--backend: must not be empty"),
    ("level-bad", ["train", G, "--level", "byte"], None, "--level must be one of char, word, got 'byte'"),
    ("level-other-task", ["train", S, "--level", "word"], None, "task sentiment does not take --level"),
    ("level-empty", ["train", G, "--level", ""], None, "--level: must not be empty"),
    ("season-one", ["train", T, "--season", "1"], None, "--season: must be at least 2, got 1"),
    ("season-word", ["train", T, "--season", "year"], None, "--season: expected a whole number, got 'year'"),
    ("season-other-task", ["train", G, "--season", "12"], None, "task textgen does not take --season"),
    ("season-too-long", ["train", T, "--data", "{data[timeseries]}", "--season", "40"], None, "--season 40: too long"),
    ("resume-without-save", ["train", S, "--resume"], None, "--resume needs --save DIR"),
    ("resume-missing-folder", ["train", T, "--resume", "--save", "{tmp}/none"], None, "does not exist"),
    ("resume-empty-folder", ["train", T, "--resume", "--save", "{tmp}/empty", "--data", "{data[timeseries]}",
                             "--backend", "numpy"], None, "holds no interrupted run of timeseries"),
    ("predict-no-checkpoint", ["predict"], None, "required: --checkpoint"),
    ("predict-empty-checkpoint", ["predict", "--checkpoint", ""], None, "--checkpoint: must not be empty"),
    ("predict-empty-input", ["predict", "--checkpoint", "{ckpt[timeseries]}", ""], None, "FILE|-: must not be empty"),
    ("evaluate-no-checkpoint", ["evaluate"], None, "required: --checkpoint"),
    ("generate-length-negative", ["generate", "--checkpoint", "{ckpt[textgen]}", "--length", "-1"], None,
     "--length: must be at least 0"),
    ("generate-temperature-negative", ["generate", "--checkpoint", "{ckpt[textgen]}", "--temperature", "-0.5"], None,
     "--temperature: must be a finite number >= 0"),
    ("generate-temperature-nan", ["generate", "--checkpoint", "{ckpt[textgen]}", "--temperature", "nan"], None,
     "--temperature: must be a finite number >= 0"),
    ("generate-temperature-inf", ["generate", "--checkpoint", "{ckpt[textgen]}", "--temperature", "inf"], None,
     "--temperature: must be a finite number >= 0"),
    ("generate-temperature-word", ["generate", "--checkpoint", "{ckpt[textgen]}", "--temperature", "hot"], None,
     "--temperature: expected a number"),
    ("generate-top-k-zero", ["generate", "--checkpoint", "{ckpt[textgen]}", "--top-k", "0"], None,
     "--top-k: must be at least 1"),
    ("generate-seed-negative", ["generate", "--checkpoint", "{ckpt[textgen]}", "--seed", "-2"], None,
     "--seed: must be at least 0"),
    ("translate-beam-zero", ["translate", "--checkpoint", "{ckpt[translation]}", "--beam", "0"], None,
     "--beam: must be at least 1"),
    ("translate-beam-word", ["translate", "--checkpoint", "{ckpt[translation]}", "--beam", "wide"], None,
     "--beam: expected a whole number"),
    # --data of every task
    *[(f"data-missing-{task}", ["train", task, "--data", "{tmp}/nothing-here"], None, "no such file or folder")
      for task in (S, T, E, G, R)],
    *[(f"data-folder-{task}", ["train", task, "--data", "{tmp}"], None, "is a folder") for task in (T, G, R)],
    ("data-file-tagging", ["train", E, "--data", "{bad}/series-text.csv"], None, "not CoNLL-U"),
    ("series-text", ["train", T, "--data", "{bad}/series-text.csv"], None,
     "series-text.csv:3: the value 'twelve' is not a number"),
    ("series-columns", ["train", T, "--data", "{bad}/series-columns.csv"], None, "expected 2 columns"),
    ("series-short", ["train", T, "--data", "{bad}/series-short.csv"], None, "too few"),
    ("series-header-only", ["train", T, "--data", "{bad}/series-header.csv"], None, "expected a header line and rows"),
    ("series-empty", ["train", T, "--data", "{bad}/empty.txt"], None, "expected a header line and rows"),
    ("series-nan", ["train", T, "--data", "{bad}/series-nan.csv"], None, "NaN or infinite"),
    ("series-inf", ["train", T, "--data", "{bad}/series-inf.csv"], None, "NaN or infinite"),
    ("series-latin1", ["train", T, "--data", "{bad}/latin1.txt"], None, "latin1.txt"),
    ("sentiment-no-label", ["train", S, "--data", "{bad}/sentiment-no-label.txt"], None,
     "sentiment-no-label.txt:1: expected 'sentence<TAB>label'"),
    ("sentiment-label-2", ["train", S, "--data", "{bad}/sentiment-label-2.txt"], None, "label 0 or 1"),
    ("sentiment-few", ["train", S, "--data", "{bad}/sentiment-few.txt"], None, "need at least 20"),
    ("sentiment-empty-folder", ["train", S, "--data", "{tmp}/empty"], None, "no *_labelled.txt files"),
    ("sentiment-latin1", ["train", S, "--data", "{bad}/latin1.txt"], None, "not UTF-8"),
    ("textgen-short", ["train", G, "--data", "{bad}/sentiment-few.txt"], None, "a language model needs at least 1000"),
    ("textgen-empty", ["train", G, "--data", "{bad}/empty.txt"], None, "a language model needs at least 1000"),
    ("textgen-latin1", ["train", G, "--data", "{bad}/latin1.txt"], None, "not UTF-8"),
    ("textgen-truncated-xz", ["train", G, "--data", "{bad}/cut.txt.xz"], None, "cut.txt.xz"),
    ("translation-no-tab", ["train", R, "--data", "{bad}/series-text.csv"], None, "expected 'English<TAB>Spanish'"),
    ("translation-few", ["train", R, "--data", "{bad}/pairs-few.txt"], None, "need at least 100"),
    ("translation-empty-column", ["train", R, "--data", "{bad}/pairs-empty-column.txt"], None,
     "expected 'English<TAB>Spanish'"),
    ("tagging-no-test-part", ["train", E, "--data", "{bad}/pos-no-test"], None, "no *test*.conllu file"),
    ("tagging-not-conllu", ["train", E, "--data", "{bad}/pos-not-conllu"], None, "are not UPOS tags"),
    ("tagging-empty-folder", ["train", E, "--data", "{tmp}/empty"], None, "no *train*.conllu file"),
    # output paths, checked before any training
    ("metrics-out-folder", ["train", T, "--metrics-out", "{tmp}"], None, "--metrics-out {tmp}: is a folder"),
    ("metrics-out-no-folder", ["train", T, "--metrics-out", "{tmp}/no/m.json"], None,
     "the folder {tmp}/no does not exist"),
    ("plot-folder", ["train", T, "--plot", "{tmp}"], None, "--plot {tmp}: is a folder"),
    ("plot-no-folder", ["train", T, "--plot", "{tmp}/no/p.png"], None, "does not exist"),
    ("plot-bad-format", ["train", T, "--plot", "{tmp}/p.xyz"], None, "give a file name ending in one of"),
    ("plot-no-suffix", ["train", T, "--plot", "{tmp}/plot"], None, "give a file name ending in one of"),
    ("plot-same-as-metrics", ["train", T, "--plot", "{tmp}/x.png", "--metrics-out", "{tmp}/./x.png"], None,
     "name the same file"),
    ("save-is-file", ["train", T, "--save", "{bad}/series-text.csv"], None, "is a file; give a folder"),
    ("save-foreign-files", ["train", T, "--save", "{bad}/foreign"], None,
     "holds files that are not an rnnbackends checkpoint"),
    ("save-fake-checkpoint", ["train", T, "--save", "{bad}/fake-checkpoint"], None, "not an rnnbackends checkpoint"),
    ("save-other-task", ["train", T, "--save", "{ckpt[translation]}"], None,
     "holds a translation checkpoint, not a timeseries one"),
    ("resume-other-task", ["train", T, "--resume", "--save", "{ckpt[sentiment]}"], None,
     "holds a sentiment checkpoint"),
    # backends
    ("backend-unknown", ["train", T, "--backend", "nosuchbackend"], None, "unknown backend 'nosuchbackend'"),
    ("backend-upper-case", ["train", T, "--backend", "NUMPY"], None, "did you mean 'numpy'?"),
    ("backend-typo", ["predict", "--checkpoint", "{ckpt[timeseries]}", "--backend", "numpi"], "1\n",
     "did you mean 'numpy'?"),
    ("backend-list-unknown", ["train", T, "--backend", "nosuch,numpy"], None, "unknown backend 'nosuch'"),
    ("evaluate-backend-unknown", ["evaluate", "--checkpoint", "{ckpt[timeseries]}", "--backend", "nosuch"], None,
     "unknown backend 'nosuch'"),
    ("generate-backend-unknown", ["generate", "--checkpoint", "{ckpt[textgen]}", "--backend", "nosuch"], None,
     "unknown backend 'nosuch'"),
    ("translate-backend-unknown", ["translate", "--checkpoint", "{ckpt[translation]}", "--backend", "nosuch"], "Hi.\n",
     "unknown backend 'nosuch'"),
    # checkpoints given to predict, generate, translate and evaluate
    *[(f"{command}-checkpoint-missing", [command, "--checkpoint", "{tmp}/none"], "x\n", "no such folder")
      for command in ("predict", "generate", "translate", "evaluate")],
    *[(f"{command}-checkpoint-file", [command, "--checkpoint", "{bad}/empty.txt"], "x\n", "is a file")
      for command in ("predict", "generate", "translate", "evaluate")],
    *[(f"{command}-checkpoint-empty-folder", [command, "--checkpoint", "{tmp}/empty"], "x\n", "not a checkpoint")
      for command in ("predict", "generate", "translate", "evaluate")],
    ("checkpoint-invalid-json", ["predict", "--checkpoint", "{bad}/ckpt-invalid-json"], "x\n",
     "checkpoint.json: not valid JSON"),
    ("checkpoint-json-list", ["predict", "--checkpoint", "{bad}/ckpt-list"], "x\n", "a JSON list, not an object"),
    ("checkpoint-json-empty", ["predict", "--checkpoint", "{bad}/ckpt-empty-object"], "x\n",
     "not an rnnbackends-checkpoint file"),
    ("checkpoint-unknown-task", ["predict", "--checkpoint", "{bad}/ckpt-unknown-task"], "x\n",
     "a checkpoint of task 'weather', which this version does not know"),
    ("checkpoint-relabelled", ["predict", "--checkpoint", "{bad}/ckpt-relabelled"], "1 2 3\n", "ckpt-relabelled"),
    ("checkpoint-weights-missing", ["predict", "--checkpoint", "{bad}/ckpt-no-weights"], "1 2\n", "ckpt-no-weights"),
    ("checkpoint-weights-truncated", ["predict", "--checkpoint", "{bad}/ckpt-truncated"], "1 2\n", "ckpt-truncated"),
    ("checkpoint-weights-outside", ["predict", "--checkpoint", "{bad}/ckpt-outside"], "1 2\n", "ckpt-outside"),
    ("checkpoint-meta-incomplete", ["predict", "--checkpoint", "{bad}/ckpt-meta-incomplete"], "1 2\n",
     "an incomplete checkpoint (its meta has no 'scaler')"),
    ("evaluate-meta-incomplete", ["evaluate", "--checkpoint", "{bad}/ckpt-meta-incomplete"], None,
     "an incomplete checkpoint"),
    ("generate-timeseries-checkpoint", ["generate", "--checkpoint", "{ckpt[timeseries]}"], None,
     "a timeseries checkpoint; 'generate' needs a textgen one"),
    ("generate-sentiment-checkpoint", ["generate", "--checkpoint", "{ckpt[sentiment]}"], None, "needs a textgen one"),
    ("translate-sentiment-checkpoint", ["translate", "--checkpoint", "{ckpt[sentiment]}"], "Hello.\n",
     "a sentiment checkpoint; 'translate' needs a translation one"),
    ("translate-tagging-checkpoint", ["translate", "--checkpoint", "{ckpt[tagging]}"], "Hello.\n",
     "needs a translation one"),
    ("predict-textgen-checkpoint", ["predict", "--checkpoint", "{ckpt[textgen]}"], "x\n",
     "rnnbackends generate --checkpoint"),
    ("evaluate-other-data", ["evaluate", "--checkpoint", "{ckpt[timeseries]}", "--data", "{bad}/series-text.csv"], None,
     "not a number"),
    ("evaluate-missing-data", ["evaluate", "--checkpoint", "{ckpt[sentiment]}", "--data", "{tmp}/none"], None,
     "no such file or folder"),
    # input lines
    ("predict-input-missing", ["predict", "--checkpoint", "{ckpt[timeseries]}", "{tmp}/none.txt"], None,
     "no such file"),
    ("predict-input-folder", ["predict", "--checkpoint", "{ckpt[timeseries]}", "{tmp}"], None, "is a folder"),
    ("predict-input-latin1", ["predict", "--checkpoint", "{ckpt[sentiment]}", "{bad}/latin1.txt"], None, "not UTF-8"),
    ("translate-input-missing", ["translate", "--checkpoint", "{ckpt[translation]}", "{tmp}/none.txt"], None,
     "no such file"),
    ("series-input-nan", ["predict", "--checkpoint", "{ckpt[timeseries]}"], " ".join(["120"] * 40) + " nan\n",
     "input line 1: the value nan (position 41) is not finite"),
    ("series-input-inf", ["predict", "--checkpoint", "{ckpt[timeseries]}"], " ".join(["120"] * 40) + " inf\n",
     "is not finite"),
    ("series-input-minus-inf", ["predict", "--checkpoint", "{ckpt[timeseries]}"],
     "-inf " + " ".join(["120"] * 40) + "\n",
     "is not finite"),
    ("series-input-word", ["predict", "--checkpoint", "{ckpt[timeseries]}"], "1 2 three\n",
     "input line 1: expected numbers"),
    ("series-input-short", ["predict", "--checkpoint", "{ckpt[timeseries]}"], "1 2 3\n", "need at least"),
    ("series-input-second-line", ["predict", "--checkpoint", "{ckpt[timeseries]}"],
     " ".join(["120"] * 40) + "\n1e999 " + " ".join(["120"] * 40) + "\n", "input line 2"),
    ("series-input-not-positive", ["predict", "--checkpoint", "{ckpt[timeseries]}"], " ".join(["120"] * 40) + " 0\n",
     "the value 0.0 (position 41) is not positive; this model works on log values"),
]

OK = [   # odd but valid: exit 0 and the right answer
    ("backends", ["backends"], None, "selected now:"),
    ("predict-blank-lines", ["predict", "--checkpoint", "{ckpt[timeseries]}"], "\n  \n\n", ""),
    ("generate-length-zero", ["generate", "--checkpoint", "{ckpt[textgen]}", "--length", "0", "--prime", "ROMEO:"],
     None, "ROMEO:"),
    ("translate-blank-line-kept-out", ["translate", "--checkpoint", "{ckpt[translation]}", "--beam", "1"],
     "Hello.\n\n", None),
    ("predict-comma-separated", ["predict", "--checkpoint", "{ckpt[timeseries]}"], ",".join(["120"] * 40) + "\n", None),
]


@pytest.fixture(scope="module")
def bad(tmp_path_factory, checkpoints):
    """A folder of malformed data files and checkpoints."""
    root = tmp_path_factory.mktemp("bad")
    files = {
        "series-text.csv": "date,value\n2000,12\n2001,twelve\n",
        "series-columns.csv": "date,value\n2000,1,2\n",
        "series-short.csv": "date,value\n" + "".join(f"{i},{i + 1}\n" for i in range(10)),
        "series-header.csv": "date,value\n",
        "series-nan.csv": "date,value\n" + "".join(f"{i},{'nan' if i == 30 else i + 1}\n" for i in range(60)),
        "series-inf.csv": "date,value\n" + "".join(f"{i},{'inf' if i == 30 else i + 1}\n" for i in range(60)),
        "empty.txt": "",
        "sentiment-no-label.txt": "a sentence without a label\n",
        "sentiment-label-2.txt": "a sentence\t2\n",
        "sentiment-few.txt": "good\t1\nbad\t0\n",
        "pairs-few.txt": "Hello.\tHola.\n" * 5,
        "pairs-empty-column.txt": "Hello.\t\n",
    }
    for name, content in files.items():
        (root / name).write_text(content, encoding="utf-8")
    (root / "latin1.txt").write_bytes("date,value\ncafé,1\n".encode("latin-1"))
    (root / "cut.txt.xz").write_bytes(b"\xfd7zXZ\x00\x00\x04\xe6\xd6\xb4F")
    (root / "pos-no-test").mkdir()
    (root / "pos-no-test" / "a-train.conllu").write_text("1\tHi\thi\tINTJ\t_\t_\t0\troot\t_\t_\n\n")
    (root / "pos-no-test" / "a-dev.conllu").write_text("1\tHi\thi\tINTJ\t_\t_\t0\troot\t_\t_\n\n")
    (root / "pos-not-conllu").mkdir()
    for part in ("train", "dev", "test"):
        (root / "pos-not-conllu" / f"x-{part}.conllu").write_text("1\tHello\n\n")
    (root / "foreign").mkdir()
    (root / "foreign" / "notes.txt").write_text("mine")
    (root / "fake-checkpoint").mkdir()
    (root / "fake-checkpoint" / "checkpoint.json").write_text("{}")
    (root / "fake-checkpoint" / "weights-final.npz").write_bytes(b"not ours")
    index = json.loads((checkpoints[T] / "checkpoint.json").read_text())
    for name, text in (("ckpt-invalid-json", "{"), ("ckpt-list", "[1, 2]"), ("ckpt-empty-object", "{}")):
        (root / name).mkdir()
        (root / name / "checkpoint.json").write_text(text)
    for name, change in (("ckpt-relabelled", lambda i: i["meta"].update(task="sentiment")),
                         ("ckpt-no-weights", lambda i: i.update(weights="weights-0000.npz")),
                         ("ckpt-truncated", None),
                         ("ckpt-outside", lambda i: i.update(weights="../series-text.csv"))):
        shutil.copytree(checkpoints[T], root / name, ignore=shutil.ignore_patterns("member-*"))
        changed = json.loads(json.dumps(index))
        if change is not None:
            change(changed)
        (root / name / "checkpoint.json").write_text(json.dumps(changed))
    models, _ = checkpoint.load(checkpoints[T], "numpy")
    checkpoint.save(root / "ckpt-meta-incomplete", models, {"task": T})
    checkpoint.save(root / "ckpt-unknown-task", models, {"task": "weather"})
    weights = root / "ckpt-truncated" / index["weights"]
    weights.write_bytes(weights.read_bytes()[:100])
    return root


def run(argv, stdin, context, monkeypatch, capsys):
    """(exit status, standard output, standard error lines) of the CLI on the formatted ``argv``."""
    import io
    monkeypatch.setenv("RNNBACKENDS_BACKEND", "numpy")
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin or ""))
    status = main([arg.format(**context) for arg in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err.strip().splitlines()


@pytest.fixture
def context(tmp_path, checkpoints, tiny_data, bad):
    (tmp_path / "empty").mkdir()
    return {"tmp": tmp_path, "ckpt": checkpoints, "data": tiny_data, "bad": bad}


@pytest.mark.parametrize("argv,stdin,fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_error_line_and_exit_2(argv, stdin, fragment, context, monkeypatch, capsys):
    status, out, err = run(argv, stdin, context, monkeypatch, capsys)
    assert status == 2, (out, err)
    assert len(err) == 1, err
    assert err[0].startswith("rnnbackends: error: ") and "Traceback" not in err[0]
    assert fragment.format(**context) in err[0]


@pytest.mark.parametrize("argv,stdin,expected", [c[1:] for c in OK], ids=[c[0] for c in OK])
def test_odd_but_valid_input_gives_the_answer(argv, stdin, expected, context, monkeypatch, capsys):
    status, out, err = run(argv, stdin, context, monkeypatch, capsys)
    assert status == 0, err
    if expected:
        assert expected in out
    if argv[0] == "predict" and stdin and stdin.strip():
        assert len(out.split()) == 1 and float(out) > 0
    if argv[0] == "translate":
        assert len(out.rstrip("\n").split("\n")) == 1


def test_the_battery_has_at_least_100_cases():
    assert len(CASES) + len(OK) >= 100 and len({c[0] for c in CASES + OK}) == len(CASES) + len(OK)
