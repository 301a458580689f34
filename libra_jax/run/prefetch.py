"""Run an iterator ahead of its consumer on a background thread (image decoding while the device computes)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_ITEM, _END, _ERROR = range(3)


def prefetch(items: Iterable[T], depth: int) -> Iterator[T]:
    """Yield `items` in order while a daemon thread produces up to `depth` of them ahead.

    An exception raised by the producer is re-raised here, at the point of the item it failed on.
    Closing the returned generator early stops the thread after its current item. depth <= 0: no thread.
    """
    if depth <= 0:
        yield from items
        return
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(kind: int, value) -> bool:
        while not stop.is_set():
            try:
                slots.put((kind, value), timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(_ITEM, item):
                    return
        except BaseException as e:  # handed to the consumer, which decides
            put(_ERROR, e)
            return
        put(_END, None)

    thread = threading.Thread(target=produce, name="libra-jax-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = slots.get()
            if kind == _END:
                return
            if kind == _ERROR:
                raise value
            yield value
    finally:
        stop.set()
        thread.join()
