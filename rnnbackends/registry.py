"""Backend discovery through pluggy entry points, availability probes and selection (docs/backends.md)."""
from __future__ import annotations

import contextlib
import contextvars
import difflib
import importlib
import logging
import os
import threading
from dataclasses import dataclass, field
from importlib.metadata import entry_points

import pluggy

from . import hookspecs

BACKEND_API_VERSION = 2
SUPPORTED_API_VERSIONS = (1, 2)   # version 1 plugins serve cell="rnn" through an adapter in dispatch
ENTRY_POINT_GROUP = "rnnbackends"
log = logging.getLogger("rnnbackends")


class BackendError(RuntimeError):
    """A backend could not be selected or loaded."""


class UnknownBackendError(BackendError, LookupError):
    """No installed backend has that name."""


class BackendUnavailableError(BackendError):
    """The backend is installed but cannot run here (its reason says why)."""


@dataclass(frozen=True)
class BackendSpec:
    """What a plugin registers: ``factory`` is a ``"module:Class"`` string imported only when needed."""

    name: str
    api_version: int
    priority: int
    device: str
    factory: str
    description: str = ""


@dataclass(frozen=True)
class BackendInfo:
    """One row of ``list_backends()``: a registered backend, or a plugin that failed to load."""

    name: str
    status: str  # "available" | "unavailable" | "broken"
    reason: str
    spec: BackendSpec | None = None
    distribution: str = ""
    version: str = ""
    capabilities: frozenset = field(default_factory=frozenset)

    @property
    def available(self) -> bool:
        return self.status == "available"


@dataclass
class _Entry:
    spec: BackendSpec
    distribution: str
    version: str


def _strict() -> bool:
    return os.environ.get("RNNBACKENDS_STRICT_PLUGINS", "") not in ("", "0")


def _import_factory(factory: str):
    """Import ``"pkg.mod:Class"`` and return the class."""
    module_name, _, attr = factory.partition(":")
    if not module_name or not attr:
        raise ValueError(f"factory must look like 'package.module:Class', got {factory!r}")
    obj = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


class _Registry:
    """Process-wide state: discovered specs, broken plugins, cached probes and backend instances."""

    def __init__(self):
        self._lock = threading.RLock()
        self.reset()

    def reset(self):
        """Forget everything; the next call discovers plugins again (tests and notebooks)."""
        with self._lock:
            self._entries: dict[str, _Entry] | None = None
            self._broken: list[BackendInfo] = []
            self._probes: dict[str, BackendInfo] = {}
            self._classes: dict[str, type] = {}
            self._instances: dict[str, object] = {}
            self._last_logged: tuple | None = None

    # -- discovery ---------------------------------------------------------------------------
    def entries(self) -> dict[str, _Entry]:
        with self._lock:
            if self._entries is None:
                self._discover()
            return self._entries

    def _discover(self):
        pm = pluggy.PluginManager(hookspecs.PROJECT)
        pm.add_hookspecs(hookspecs)
        origin: dict[str, tuple[str, str]] = {}
        for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = getattr(ep, "dist", None)
            dist_name, dist_version = (dist.metadata["Name"], dist.version) if dist else ("", "")
            try:
                plugin = ep.load()
                pm.register(plugin, name=f"{ep.name}@{dist_name}")
                origin[f"{ep.name}@{dist_name}"] = (dist_name, dist_version)
            except Exception as exc:  # a broken plugin never breaks the others
                if _strict():
                    raise
                self._broken.append(BackendInfo(
                    name=ep.name, status="broken", distribution=dist_name, version=dist_version,
                    reason=f"entry point {ep.value!r} failed to load: {type(exc).__name__}: {exc}"))
        entries: dict[str, _Entry] = {}
        for impl in pm.hook.rnnbackends_register_backends.get_hookimpls():
            dist_name, dist_version = origin.get(impl.plugin_name, ("", ""))

            def register(spec, _dist=dist_name, _ver=dist_version):
                if not isinstance(spec, BackendSpec):
                    raise TypeError(f"register() takes a rnnbackends.BackendSpec, got {type(spec).__name__}")
                if not spec.name or "," in spec.name or spec.name != spec.name.strip():
                    raise ValueError(f"backend name {spec.name!r} must be non-empty, without commas or spaces")
                if spec.name in entries:
                    raise ValueError(f"backend name {spec.name!r} is already registered by "
                                     f"{entries[spec.name].distribution or 'another plugin'}")
                entries[spec.name] = _Entry(spec, _dist, _ver)

            try:
                impl.function(**{name: register for name in impl.argnames})
            except Exception as exc:
                if _strict():
                    raise
                self._broken.append(BackendInfo(
                    name=impl.plugin_name.split("@")[0], status="broken", distribution=dist_name,
                    version=dist_version,
                    reason=f"rnnbackends_register_backends failed: {type(exc).__name__}: {exc}"))
        self._entries = entries

    # -- availability ---------------------------------------------------------------------------
    def probe(self, name: str) -> BackendInfo:
        """Availability of one registered backend: cached per process, never raises (unless strict)."""
        with self._lock:
            if name in self._probes:
                return self._probes[name]
            entry = self.entries()[name]
            info = self._probe(entry)
            self._probes[name] = info
            return info

    def _probe(self, entry: _Entry) -> BackendInfo:
        spec = entry.spec
        row = dict(name=spec.name, spec=spec, distribution=entry.distribution, version=entry.version)
        if spec.api_version not in SUPPORTED_API_VERSIONS:
            return BackendInfo(status="unavailable", **row, reason=(
                f"built for backend API version {spec.api_version}; this rnnbackends "
                f"speaks versions {', '.join(map(str, SUPPORTED_API_VERSIONS))}"))
        try:
            cls = _import_factory(spec.factory)
            capabilities = frozenset(cls.capabilities)
        except Exception as exc:
            if _strict():
                raise
            return BackendInfo(status="broken", **row,
                               reason=f"cannot import {spec.factory}: {type(exc).__name__}: {exc}")
        try:
            ok, reason = cls.availability()
        except Exception as exc:  # probes must not raise; a plugin whose probe does is reported
            ok, reason = False, f"availability() raised {type(exc).__name__}: {exc}"
        self._classes[spec.name] = cls
        if spec.api_version == 1:                    # adapted in dispatch: the simple cell only
            capabilities |= {"rnn"}
            reason = f"{reason} (backend API version 1, adapted: cell='rnn' only)"
        return BackendInfo(status="available" if ok else "unavailable", reason=str(reason),
                           capabilities=capabilities, **row)

    def infos(self) -> list[BackendInfo]:
        rows = [self.probe(name) for name in self.entries()]
        rows.sort(key=lambda r: (-r.spec.priority, r.name))
        return rows + list(self._broken)

    # -- selection ---------------------------------------------------------------------------
    def resolve(self, name: str | None = None) -> tuple[str, str]:
        """The backend a call would use now, and a sentence saying why."""
        request, source = _requested(name)
        names = [n.strip() for n in request.split(",") if n.strip()]
        if not names:
            raise UnknownBackendError(f"empty backend name from {source}; give a name such as "
                                      f"'numpy' or a preference list such as 'numba,numpy'")
        known = self.entries()
        for n in names:
            if n != "auto" and n not in known:
                raise UnknownBackendError(_unknown_message(n, source, known, self._broken))
        if len(names) == 1 and names[0] != "auto":
            info = self.probe(names[0])  # probe only what was named: no heavy imports for the rest
            if not info.available:
                raise BackendUnavailableError(
                    f"backend {info.name!r} ({source}) is installed but unavailable: {info.reason}. "
                    f"Choose another backend, or give a preference list such as "
                    f"RNNBACKENDS_BACKEND={info.name},numba,numpy.")
            return info.name, f"{source} {request!r}"
        tried = []
        for n in names:
            if n == "auto":
                best = sorted((i for i in map(self.probe, known) if i.available), key=lambda i: -i.spec.priority)
                if best:
                    why = "automatic: highest-priority available backend" if source == "automatic" \
                        else f"{source} {request!r}: 'auto' picked the highest-priority available backend"
                    return best[0].name, why
                tried.append("auto: no backend is available")
                continue
            if self.probe(n).available:
                skipped = f" ({'; '.join(tried)})" if tried else ""
                return n, f"{source} {request!r}: first available{skipped}"
            tried.append(f"{n} unavailable: {self.probe(n).reason}")
        raise BackendUnavailableError(f"no backend of {request!r} ({source}) is available: " + "; ".join(tried))

    def instance(self, name: str):
        with self._lock:
            if name not in self._instances:
                info = self.probe(name)
                if not info.available:
                    raise BackendUnavailableError(f"backend {name!r} is unavailable: {info.reason}")
                self._instances[name] = self._classes[name]()
            return self._instances[name]

    def log_choice(self, name: str, why: str):
        if self._last_logged != (name, why):
            self._last_logged = (name, why)
            log.info("rnnbackends: using backend %r (%s)", name, why)


def _unknown_message(name, source, known, broken) -> str:
    lowered = {k.lower(): k for k in known}
    close = [lowered[name.lower()]] if name.lower() in lowered else \
        difflib.get_close_matches(name, list(known), n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else "."
    msg = f"unknown backend {name!r} ({source}){hint} Installed backends: {', '.join(sorted(known)) or 'none'}."
    broken_names = [b.name for b in broken]
    if broken_names:
        msg += f" Plugins that failed to load: {', '.join(broken_names)} (see `rnnbackends backends`)."
    return msg


_REGISTRY = _Registry()
_context: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("rnnbackends_use", default=())


def _requested(name: str | None) -> tuple[str, str]:
    """The requested name and where it came from: argument > use_backend() > RNNBACKENDS_BACKEND > automatic."""
    if name is not None:
        if not isinstance(name, str):
            raise TypeError(f"backend must be a name such as 'numba' or a comma list such as 'numba,numpy', "
                            f"got {type(name).__name__} {name!r}")
        return name, "backend= argument"
    stack = _context.get()
    if stack:
        return stack[-1], "use_backend()"
    env = os.environ.get("RNNBACKENDS_BACKEND", "").strip()
    if env and env.lower() != "auto":
        return env, "RNNBACKENDS_BACKEND"
    return "auto", "automatic"


def list_backends() -> list[BackendInfo]:
    """Every registered backend (highest priority first), then every plugin that failed to load."""
    return _REGISTRY.infos()


def selected_backend_name(name: str | None = None) -> tuple[str, str]:
    """The backend ``get_backend(name)`` would return, and why; raises BackendError if none fits."""
    return _REGISTRY.resolve(name)


def get_backend(name: str | None = None):
    """The validating handle of the selected backend: argument > use_backend() > env > automatic."""
    from .dispatch import Backend

    chosen, why = _REGISTRY.resolve(name)
    _REGISTRY.log_choice(chosen, why)
    return Backend(_REGISTRY.instance(chosen), _REGISTRY.probe(chosen))


@contextlib.contextmanager
def use_backend(name: str):
    """Within the block, ``get_backend()`` selects ``name`` (one name or a comma preference list)."""
    _REGISTRY.resolve(name)  # fail at the ``with``, not at the first call inside it
    token = _context.set(_context.get() + (name,))
    try:
        yield get_backend(name)
    finally:
        _context.reset(token)


def reset():
    """Forget discovered plugins and cached probes (after installing a plugin in-process)."""
    _REGISTRY.reset()
