"""The one hook a backend plugin implements."""
import pluggy

PROJECT = "rnnbackends"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def rnnbackends_register_backends(register):
    """Call ``register(BackendSpec(...))`` once per backend this plugin provides; import nothing heavy."""
