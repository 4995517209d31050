"""Background jobs share cores - 1 slots, and a training goes before queued link builds
(curator/index/cpu_budget.py): a stream of link builds cannot starve it."""

from __future__ import annotations

import os
import threading
import time

from curator.index import cpu_budget
from curator.index.cpu_budget import _Budget


def test_at_most_the_slots_run_and_urgent_goes_first() -> None:
    budget = _Budget(1)
    order: list[str] = []
    running = [0]
    peak = [0]
    release = threading.Event()

    def job(name: str, urgent: bool, hold: threading.Event | None = None) -> None:
        with budget.slot(urgent):
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            order.append(name)
            if hold is not None:
                assert hold.wait(10)
            running[0] -= 1

    first = threading.Thread(target=job, args=("first", False, release))
    first.start()
    while not order:
        time.sleep(0.001)
    links = [threading.Thread(target=job, args=(f"link{i}", False)) for i in range(3)]
    for t in links:
        t.start()
    time.sleep(0.05)  # the link builds wait for the slot
    train = threading.Thread(target=job, args=("train", True))
    train.start()
    time.sleep(0.05)
    release.set()
    for t in [first, *links, train]:
        t.join(10)
    assert order[:2] == ["first", "train"]  # before the link builds queued earlier
    assert sorted(order[2:]) == ["link0", "link1", "link2"] and peak[0] == 1


def test_one_core_is_left_to_requests() -> None:
    assert cpu_budget.SLOTS == max(1, (os.cpu_count() or 1) - 1)
