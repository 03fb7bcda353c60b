"""A plugin installed with pip is listed, selectable and checked by the kit; a broken one is reported."""
import os
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version

import pytest

from tests.backends.plugin_fixtures import write_project


def run(args, env, cwd):
    return subprocess.run(args, capture_output=True, text=True, env={**os.environ, **env}, cwd=cwd)


def test_pip_installed_third_party_plugins(tmp_path):
    """pip install a throwaway project: two working plugins (one a two-method chain backend), a broken, an old-API."""
    project = write_project(tmp_path / "project")
    target = tmp_path / "site"
    pip = run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
               "--target", str(target), str(project)], {}, tmp_path)
    assert pip.returncode == 0, pip.stderr
    env = {"PYTHONPATH": str(target)}
    table = run([sys.executable, "-m", "rnnbackends.cli", "backends"], env, tmp_path)
    assert table.returncode == 0, table.stderr
    assert "thirdparty" in table.stdout and "throwaway-rnn-plugins 1.2.3" in table.stdout
    assert "broken" in table.stdout and "this_module_does_not_exist_anywhere" in table.stdout
    chosen = run([sys.executable, "-c", "import rnnbackends; print(rnnbackends.get_backend().name)"],
                 {**env, "RNNBACKENDS_BACKEND": "thirdparty"}, tmp_path)
    assert chosen.stdout.strip() == "thirdparty", chosen.stderr
    for name in ("thirdparty", "chainonly"):       # its own loop; two chain methods over rnnbackends.chain
        kit = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--pyargs", "rnnbackends.testing"],
                  {**env, "RNNBACKENDS_TEST_BACKEND": name}, tmp_path)
        assert kit.returncode == 0, kit.stdout[-3000:]
        assert " passed" in kit.stdout and "failed" not in kit.stdout
    broken = run([sys.executable, "-m", "pytest", "-x", "-p", "no:cacheprovider", "--pyargs", "rnnbackends.testing"],
                 {**env, "RNNBACKENDS_TEST_BACKEND": "broken"}, tmp_path)
    assert broken.returncode != 0 and "backend 'broken' failed to load" in broken.stdout


def test_template_plugin_passes_the_kit(tmp_path):
    """plugins/rnnbackends-torch, installed with pip (CI does), passes the kit by its name."""
    try:
        version("rnnbackends-torch")
    except PackageNotFoundError:
        pytest.skip("rnnbackends-torch is not installed: pip install torch==2.13.0 -e plugins/rnnbackends-torch")
    pytest.importorskip("torch")
    kit = run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "--pyargs",
               "rnnbackends.testing"], {"RNNBACKENDS_TEST_BACKEND": "torch"}, tmp_path)
    assert kit.returncode == 0, kit.stdout[-3000:]
    # it declares every capability and cell: only the checks that do not apply to a full backend may skip
    not_applicable = ("implements the contract calls itself", "backend 'torch' declares",
                      *(f"backend 'torch' does not declare {kernel}"      # the optional front-end kernels
                        for kernel in ("softmax_cross_entropy", "embedding_backward", "adam_update", "matmul")))
    skips = [line for line in kit.stdout.splitlines() if line.startswith("SKIPPED")]
    assert all(any(reason in line for reason in not_applicable) for line in skips), skips
    chosen = run([sys.executable, "-c", "import rnnbackends; print(rnnbackends.get_backend().name)"],
                 {"RNNBACKENDS_BACKEND": "torch"}, tmp_path)
    assert chosen.stdout.strip() == "torch", chosen.stderr
