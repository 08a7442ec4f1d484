"""lockwatch run's bootstrap: Python imports this at start-up from PYTHONPATH.

It only watches for ``django.conf`` (standard library only, so a Python program that
never loads Django pays almost nothing), then hands the settings to
``lockwatch.autorun``. Afterwards it runs the sitecustomize this one hides, if any.
Nothing here may stop the program: lockwatch's failures are one line on stderr.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys

TYPE_CHECKING = False  # not typing's: importing typing would double this module's cost
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any

_HERE = os.path.dirname(os.path.abspath(__file__))
_claimed: dict[str, Any] = {}


def _first(key: str) -> bool:
    """True in the first process of this run to ask for KEY (every gunicorn worker loads
    the settings: one warning, not one per worker). A name in Linux's abstract socket
    space is held while the process lives and leaves no file behind."""
    import hashlib  # here: most programs never warn, and these cost ~7 ms to import
    import socket

    if key in _claimed:
        return False
    _claimed[key] = None
    run_id = os.environ.get("LOCKWATCH_RUN_ID", "")
    if not run_id or not sys.platform.startswith("linux"):
        return True
    digest = hashlib.sha1(f"{run_id}:{key}".encode()).hexdigest()[:24]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(f"\0lockwatch-run-{digest}")
    except OSError:
        sock.close()
        return False
    _claimed[key] = sock
    return True


def warn(key: str, message: str) -> None:
    try:
        if _first(key):
            print(f"lockwatch run: warning: {message}", file=sys.stderr, flush=True)
    except Exception:
        pass


def _settings_loaded(module: ModuleType) -> None:
    try:
        try:
            from lockwatch import autorun
        except ImportError:
            # This Python lacks lockwatch on its path: try the copy this file came with.
            sys.path.append(os.path.dirname(os.path.dirname(_HERE)))
            from lockwatch import autorun
        autorun.hook(module, warn)
    except Exception as exc:
        warn("failed", f"lockwatch could not instrument this process ({exc!r}); it runs without it")


class _Loader:
    """django.conf's own loader, then the hook on the module it made."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        module.__loader__ = self._loader
        self._loader.exec_module(module)
        _settings_loaded(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class _Finder:
    """On sys.meta_path until django.conf is found."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "django.conf":
            return None
        try:
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(name)
            if spec is not None and spec.loader is not None:
                spec.loader = _Loader(spec.loader)  # type: ignore[assignment]
            return spec
        except Exception as exc:
            warn("failed", f"lockwatch could not watch for Django's settings ({exc!r})")
            return None


def _chain() -> None:
    """Run the sitecustomize module that this one hides on sys.path, as if Python had."""
    rest = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules["sitecustomize"] = module
    spec.loader.exec_module(module)


# Only as Python's own sitecustomize: imported as lockwatch._bootstrap.sitecustomize (by a
# tool that walks the package), it does nothing.
if __name__ == "sitecustomize":
    if os.environ.get("LOCKWATCH_RUN") == "1":
        if "django.conf" in sys.modules:
            _settings_loaded(sys.modules["django.conf"])
        else:
            sys.meta_path.insert(0, _Finder())
    _chain()
