"""When the simulator's streams send a chunk: stream interval and catching up when behind."""

from __future__ import annotations

from sglbench.sim.service import Token
from sglbench.sim.stream import held_back


def token(index: int, finished: bool = False, more_due: bool = False) -> Token:
    return Token(index, 100 + index, "a", b"a", str(100 + index).encode(), finished, 1.0 + index,
                 more_due)  # fmt: skip


def test_every_token_gets_its_own_chunk_when_the_server_keeps_up() -> None:
    assert not any(held_back(token(i), 1) for i in range(5))


def test_a_late_token_waits_for_the_newest_due_one_but_the_last_token_is_always_sent() -> None:
    assert held_back(token(3, more_due=True), 1)
    assert not held_back(token(4, finished=True, more_due=True), 1)


def test_stream_interval_sends_one_chunk_per_n_tokens_and_the_last() -> None:
    sent = [i for i in range(10) if not held_back(token(i, finished=i == 9), 4)]
    assert sent == [3, 7, 9]
