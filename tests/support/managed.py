"""The `with` block every process of the harness is used in."""

from __future__ import annotations

import abc
from typing import Self


class Managed(abc.ABC):
    """Started on entering the block, ended on leaving it, and ended too when starting fails
    halfway: a server that started but never became ready is not left running."""

    @abc.abstractmethod
    def start(self) -> object: ...

    @abc.abstractmethod
    def end(self) -> None:
        """Ends whatever start() began; safe to call after a start that failed."""

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.end()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.end()
