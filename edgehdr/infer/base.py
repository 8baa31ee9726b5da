"""The one runner interface every neural stage uses: ``load`` -> ``run(dict) -> dict`` -> ``describe``.

Runners own exactly the resources they create (a session, an engine, device
buffers, a stream) and free them in ``close`` (or on leaving a ``with`` block),
after Polygraphy's runners. Heavy libraries are imported in ``load``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["Runner", "BackendUnavailable", "EngineMismatch"]


class BackendUnavailable(RuntimeError):
    """The backend's library or hardware is absent; the message says what to install."""


class EngineMismatch(RuntimeError):
    """An engine built for another device or TensorRT version; the message says how to rebuild."""


class Runner:
    name = "runner"

    def load(self) -> "Runner":
        raise NotImplementedError

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def describe(self) -> dict:
        """Provider, precision, device and I/O of the loaded model."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self.load()

    def __exit__(self, *exc):
        self.close()
