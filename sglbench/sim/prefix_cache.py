"""The prefix cache of an aggregated or PD-prefill simulator: which prompts' KV stays on the GPU.

SGLang's ``RadixCache`` (``srt/mem_cache/radix_cache.py``, page size 1) to the extent the model
needs it:

* A radix tree over token ids; an edge holds a run of tokens. Matching walks the tree and
  splits an edge where a match ends inside it, as SGLang does. At most ``len(prompt) - 1``
  tokens match (the last one is always computed, for its logits).
* A request locks its matched prefix while it runs (SGLang's ``inc_lock_ref`` on the last node
  and every ancestor); after its prefill its whole prompt is inserted and locked instead; when
  it finishes the lock goes, and the tokens become *evictable*: cached, not in use.
* Eviction is LRU over unlocked leaves (SGLang's heap of evictable leaves by last access); a
  parent whose last child went becomes a leaf in turn. The engine evicts whenever the evictable
  tokens no longer fit in the free part of the KV pool, so cached prefixes never make a running
  request wait (SGLang's allocator evicts on demand, to the same effect).
* ``reset()`` empties it (``/flush_cache``).

Only the prompt is inserted (the simulator's output tokens are arbitrary words, and SGLang's bench
workloads share prompts, not outputs). Sizes are in tokens.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable


class _Node:
    __slots__ = ("children", "key", "last_access", "lock", "parent")

    def __init__(self, key: list[int], parent: _Node | None, lock: int, last_access: int) -> None:
        self.key = key
        self.parent = parent
        self.children: dict[int, _Node] = {}
        self.lock = lock
        self.last_access = last_access


def _match_len(key: list[int], ids: list[int], pos: int) -> int:
    """How many leading tokens of ``key`` equal ``ids[pos:]`` (slices compare in C)."""
    n = min(len(key), len(ids) - pos)
    if key[:n] == ids[pos : pos + n]:
        return n
    lo, hi = 0, n  # key[:lo] matches, key[:hi] does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if key[:mid] == ids[pos : pos + mid]:
            lo = mid
        else:
            hi = mid
    return lo


class RadixCache:
    """Token-prefix cache with lock counts and LRU eviction (see the module docstring)."""

    def __init__(self) -> None:
        """An empty tree."""
        self.reset()

    def reset(self) -> None:
        """Drop every cached prefix (SGLang's ``flush_cache``)."""
        self._root = _Node([], None, lock=1, last_access=0)  # the root is never evicted
        self._tick = 0
        self.evictable = 0  # cached tokens no running request uses
        self.protected = 0  # cached tokens locked by running requests

    def match(self, ids: list[int]) -> tuple[int, _Node]:
        """The longest cached prefix of ``ids``: its length and its last node."""
        self._tick += 1
        node, pos = self._root, 0
        while pos < len(ids):
            child = node.children.get(ids[pos])
            if child is None:
                break
            k = _match_len(child.key, ids, pos)
            if k < len(child.key):
                child = self._split(child, k)
            child.last_access = self._tick
            node, pos = child, pos + k  # after a split, no child of ``node`` matches ids[pos]
        return pos, node

    def insert(self, ids: list[int]) -> _Node:
        """Cache ``ids`` (the part not cached yet becomes a new, unlocked leaf); its last node."""
        pos, node = self.match(ids)
        if pos < len(ids):
            leaf = _Node(ids[pos:], node, lock=0, last_access=self._tick)
            node.children[leaf.key[0]] = leaf
            self.evictable += len(leaf.key)
            node = leaf
        return node

    def lock(self, node: _Node) -> None:
        """Protect ``node`` and its ancestors from eviction (one more running user)."""
        n: _Node | None = node
        while n is not None and n is not self._root:
            if n.lock == 0:
                self.evictable -= len(n.key)
                self.protected += len(n.key)
            n.lock += 1
            n = n.parent

    def unlock(self, node: _Node) -> None:
        """Undo one :meth:`lock` of ``node``."""
        n: _Node | None = node
        while n is not None and n is not self._root:
            n.lock -= 1
            if n.lock == 0:
                self.protected -= len(n.key)
                self.evictable += len(n.key)
            n = n.parent

    def evict(self, tokens: int) -> int:
        """Evict least-recently-used unlocked leaves until ``tokens`` went; tokens evicted."""
        heap = [(n.last_access, id(n), n) for n in self._leaves() if n.lock == 0]
        heapq.heapify(heap)
        evicted = 0
        while heap and evicted < tokens:
            _, _, node = heapq.heappop(heap)
            parent = node.parent
            assert parent is not None  # the root is locked, so never a candidate
            del parent.children[node.key[0]]
            evicted += len(node.key)
            self.evictable -= len(node.key)
            if parent is not self._root and not parent.children and parent.lock == 0:
                heapq.heappush(heap, (parent.last_access, id(parent), parent))
        return evicted

    def _leaves(self) -> list[_Node]:
        leaves, stack = [], [self._root]
        while stack:
            node = stack.pop()
            if node.children:
                stack.extend(node.children.values())
            elif node is not self._root:
                leaves.append(node)
        return leaves

    def _split(self, child: _Node, k: int) -> _Node:
        """Cut ``child``'s edge after ``k`` tokens; the new upper node (same lock state)."""
        parent = child.parent
        assert parent is not None
        upper = _Node(child.key[:k], parent, lock=child.lock, last_access=child.last_access)
        parent.children[upper.key[0]] = upper
        child.key = child.key[k:]
        child.parent = upper
        upper.children[child.key[0]] = child
        return upper


class PromptCache:
    """The engine's use of a :class:`RadixCache`: one lock per running request (``owner``)."""

    def __init__(self) -> None:
        """An empty cache, nothing held."""
        self.tree = RadixCache()
        self._held: dict[Hashable, _Node] = {}

    def admit(self, owner: Hashable, ids: list[int] | None) -> int:
        """Match a new request's prompt and lock the match; the cached tokens it can skip."""
        if not ids or len(ids) < 2:
            return 0
        hit, node = self.tree.match(ids[: len(ids) - 1])
        self._hold(owner, node)
        return hit

    def filled(self, owner: Hashable, ids: list[int] | None) -> None:
        """The request's prompt is computed: cache all of it, locked while it runs."""
        if ids:
            self._hold(owner, self.tree.insert(ids))

    def release(self, owner: Hashable) -> None:
        """The request ended (or was retracted): its prefix becomes evictable."""
        node = self._held.pop(owner, None)
        if node is not None:
            self.tree.unlock(node)

    def fit(self, free_tokens: int) -> None:
        """Evict until the evictable tokens fit in ``free_tokens`` of the KV pool."""
        excess = self.tree.evictable - max(0, free_tokens)
        if excess > 0:
            self.tree.evict(excess)

    def flush(self) -> bool:
        """Empty the cache if no request holds a part of it (SGLang flushes only when idle)."""
        if self._held:
            return False
        self.tree.reset()
        return True

    def _hold(self, owner: Hashable, node: _Node) -> None:
        self.tree.lock(node)  # before the old lock goes: the shared part never turns evictable
        self.release(owner)
        self._held[owner] = node
