"""Discovery, availability and selection (docs/backends.md), with throwaway plugins from entry points."""
import logging
import subprocess
import sys

import numpy as np
import pytest

import rnnbackends
from rnnbackends import registry
from tests.backends.plugin_fixtures import write_dist_info


@pytest.fixture
def fresh(monkeypatch):
    """A registry that rediscovers plugins, with no selection in the environment."""
    monkeypatch.delenv("RNNBACKENDS_BACKEND", raising=False)
    monkeypatch.delenv("RNNBACKENDS_STRICT_PLUGINS", raising=False)
    registry.reset()
    yield
    registry.reset()


@pytest.fixture
def plugins(fresh, tmp_path, monkeypatch):
    """The throwaway distribution (working, broken, old-API plugins) importable for this test."""
    site = write_dist_info(tmp_path / "site")
    monkeypatch.syspath_prepend(str(site))
    registry.reset()
    return site


def by_name():
    return {row.name: row for row in rnnbackends.list_backends()}


def test_builtin_backends_are_listed(fresh):
    rows = by_name()
    assert {"numpy", "numba", "cupy"} <= set(rows)
    assert rows["numpy"].available and rows["numpy"].distribution == "rnnbackends"
    assert rows["cupy"].spec.priority > rows["numba"].spec.priority > rows["numpy"].spec.priority
    for row in rows.values():
        assert row.reason, f"{row.name} gives no reason"


def test_third_party_plugin_is_discovered_and_selectable(plugins, monkeypatch):
    rows = by_name()
    assert rows["thirdparty"].available
    assert (rows["thirdparty"].distribution, rows["thirdparty"].version) == ("throwaway-rnn-plugins", "1.2.3")
    monkeypatch.setenv("RNNBACKENDS_BACKEND", "thirdparty")
    backend = rnnbackends.get_backend()
    assert backend.name == "thirdparty" and backend.capabilities == {"rnn", "tanh", "float32", "float64", "lengths"}
    assert "API version 1, adapted: cell='rnn' only" in rows["thirdparty"].reason      # listed with that reason
    assert backend.api_version == 1
    (x, a0, w_x, w_a, b_a) = [np.ones(s) * 0.1 for s in [(3, 2, 2), (2, 4), (2, 4), (4, 4), (4,)]]
    a, a_n, _ = backend.forward_sequence(x, a0, w_x, w_a, b_a, lengths=np.array([3, 1]))
    assert a.shape == (3, 2, 4) and np.all(a[1:, 1] == 0)
    with pytest.raises(NotImplementedError, match="relu"):
        backend.forward_sequence(x, a0, w_x, w_a, b_a, nonlinearity="relu")


def test_broken_plugin_is_reported_and_others_work(plugins):
    rows = by_name()
    assert rows["broken"].status == "broken"
    assert "this_module_does_not_exist_anywhere" in rows["broken"].reason
    assert rows["broken"].distribution == "throwaway-rnn-plugins"
    assert rnnbackends.get_backend("numpy").name == "numpy"
    with pytest.raises(rnnbackends.UnknownBackendError, match="failed to load: broken"):
        rnnbackends.get_backend("broken")


def test_strict_plugins_reraise(plugins, monkeypatch):
    monkeypatch.setenv("RNNBACKENDS_STRICT_PLUGINS", "1")
    with pytest.raises(ModuleNotFoundError, match="this_module_does_not_exist_anywhere"):
        rnnbackends.list_backends()


def test_wrong_api_version_is_unavailable_with_reason(plugins):
    row = by_name()["oldapi"]
    assert row.status == "unavailable"
    assert "API version 0" in row.reason and "versions 1, 2" in row.reason
    with pytest.raises(rnnbackends.BackendUnavailableError, match="API version 0"):
        rnnbackends.get_backend("oldapi")
    # higher priority than everything, but never chosen automatically
    assert rnnbackends.selected_backend_name()[0] != "oldapi"


def test_unknown_name_suggests_the_close_one(fresh, monkeypatch):
    monkeypatch.setenv("RNNBACKENDS_BACKEND", "nmupy")
    with pytest.raises(rnnbackends.UnknownBackendError) as err:
        rnnbackends.get_backend()
    message = str(err.value)
    assert "did you mean 'numpy'?" in message and "RNNBACKENDS_BACKEND" in message
    assert "numba" in message and "cupy" in message  # lists what is installed


def test_named_but_unavailable_is_an_error_with_reason(fresh, monkeypatch):
    monkeypatch.setenv("RNNBACKENDS_BACKEND", "cupy")
    if by_name()["cupy"].available:
        pytest.skip("cupy is available on this machine")
    with pytest.raises(rnnbackends.BackendUnavailableError) as err:
        rnnbackends.get_backend()
    message = str(err.value)
    assert "unavailable" in message and by_name()["cupy"].reason in message
    assert "RNNBACKENDS_BACKEND=cupy," in message  # the hint to give a preference list


def test_comma_list_is_an_ordered_preference(fresh, monkeypatch, caplog):
    unavailable = next(r.name for r in rnnbackends.list_backends() if not r.available)
    monkeypatch.setenv("RNNBACKENDS_BACKEND", f"{unavailable},numpy")
    with caplog.at_level(logging.INFO, logger="rnnbackends"):
        assert rnnbackends.get_backend().name == "numpy"
    assert "numpy" in caplog.text and f"{unavailable} unavailable" in caplog.text
    monkeypatch.setenv("RNNBACKENDS_BACKEND", "numpy,nmupy")
    with pytest.raises(rnnbackends.UnknownBackendError, match="nmupy"):
        rnnbackends.get_backend()


def test_automatic_picks_highest_priority_available(fresh, monkeypatch):
    best = max((r for r in rnnbackends.list_backends() if r.available), key=lambda r: r.spec.priority)
    for value in (None, "auto", "AUTO", ""):
        if value is None:
            monkeypatch.delenv("RNNBACKENDS_BACKEND", raising=False)
        else:
            monkeypatch.setenv("RNNBACKENDS_BACKEND", value)
        name, why = rnnbackends.selected_backend_name()
        assert name == best.name and "automatic" in why


def test_precedence_argument_over_context_over_env(fresh, monkeypatch):
    monkeypatch.setenv("RNNBACKENDS_BACKEND", "nmupy")  # would fail if it were consulted
    with rnnbackends.use_backend("numpy") as backend:
        assert backend.name == "numpy"
        assert rnnbackends.get_backend().name == "numpy"
        assert "use_backend" in rnnbackends.selected_backend_name()[1]
    assert rnnbackends.get_backend("numpy").name == "numpy"
    with pytest.raises(rnnbackends.UnknownBackendError):
        rnnbackends.get_backend()
    with pytest.raises(rnnbackends.UnknownBackendError):  # the with-statement itself fails
        with rnnbackends.use_backend("nmupy"):
            pass


def test_import_is_cheap():
    """import rnnbackends imports neither numba nor cupy (nor torch), even after listing backends."""
    code = ("import sys, rnnbackends; rnnbackends.list_backends(); rnnbackends.get_backend('numpy');"
            "print(sorted(m for m in ('numba', 'cupy', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code.replace("rnnbackends.list_backends(); ", "")],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_cli_backends_table_lists_broken_plugins(plugins, monkeypatch):
    env = {"PYTHONPATH": str(plugins), "RNNBACKENDS_BACKEND": "nmupy"}
    out = subprocess.run([sys.executable, "-m", "rnnbackends.cli", "backends"], capture_output=True,
                         text=True, env={**__import__("os").environ, **env})
    assert out.returncode == 0, out.stderr
    for text in ("numpy", "numba", "cupy", "thirdparty", "broken", "oldapi", "throwaway-rnn-plugins 1.2.3",
                 "this_module_does_not_exist_anywhere", "did you mean 'numpy'?"):
        assert text in out.stdout, f"{text!r} missing from:\n{out.stdout}"
