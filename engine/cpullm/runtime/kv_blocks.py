"""Block bookkeeping for the paged KV cache, with prefix caching.

The native cache is ``n_blocks`` physical blocks of ``block_size`` token slots. Each sequence owns a
block table (logical block -> physical block). A block that is full is immutable, so it can be shared:
it is registered under a hash of (the hash of the blocks before it, its tokens), and a new sequence
whose prompt starts with the same tokens takes those blocks instead of recomputing them. A released
block that holds a registered prefix is kept, evictable in least-recently-used order, until its slots
are needed.

Blocks are handed out so that the memory in use stays that of the busiest moment, not the whole pool
(the native cache is allocated untouched; a block's pages become resident when it is first written):
a released block without a cached prefix is taken first (the last released first), then the least
recently used cached block, and a block never used before only when neither is left. A sequence's
blocks are released tail first, so its shared head (a system prompt) is the last of them evicted.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field


class OutOfBlocks(Exception):
    """No free or evictable block is left; the caller must wait or preempt."""


@dataclass
class BlockTable:
    blocks: list[int] = field(default_factory=list)
    hashes: list[int] = field(default_factory=list)  # hash of each full, registered block, in order


class BlockManager:
    def __init__(self, n_blocks: int, block_size: int) -> None:
        if n_blocks <= 0 or block_size <= 0:
            raise ValueError("the KV cache needs a positive number of blocks and block size")
        self.n_blocks, self.block_size = n_blocks, block_size
        self._free: list[int] = []  # released blocks holding no cached prefix; the last released on top
        self._fresh = 0  # blocks [_fresh, n_blocks) have never been handed out
        self._refs = [0] * n_blocks
        self._by_hash: dict[int, int] = {}
        self._hash_of: dict[int, int] = {}
        self._evictable: OrderedDict[int, None] = OrderedDict()  # cached blocks nobody uses, LRU first
        self.prefix_hits = 0  # tokens served from the prefix cache (for metrics)

    # ---- capacity ----
    @property
    def n_free(self) -> int:
        return len(self._free) + len(self._evictable) + self.n_blocks - self._fresh

    @property
    def n_touched(self) -> int:
        """Blocks ever handed out (their memory is resident); the rest of the pool was never written."""
        return self._fresh

    @property
    def n_used(self) -> int:
        return self.n_blocks - self.n_free

    def blocks_for(self, n_tokens: int) -> int:
        return -(-n_tokens // self.block_size)

    # ---- allocation ----
    def _take(self) -> int:
        if self._free:
            block = self._free.pop()
        elif self._evictable:
            block, _ = self._evictable.popitem(last=False)
            del self._by_hash[self._hash_of.pop(block)]
        elif self._fresh < self.n_blocks:
            block = self._fresh
            self._fresh += 1
        else:
            raise OutOfBlocks
        self._refs[block] = 1
        return block

    def match_prefix(self, table: BlockTable, tokens: Sequence[int]) -> int:
        """Share cached blocks for the longest registered prefix of ``tokens``; returns the tokens covered.

        At least one token is always left to compute, so the caller gets logits for the last one.
        """
        parent = 0
        covered = 0
        limit = (len(tokens) - 1) // self.block_size
        for i in range(limit):
            h = hash((parent, tuple(tokens[i * self.block_size : (i + 1) * self.block_size])))
            block = self._by_hash.get(h)
            if block is None:
                break
            if self._refs[block] == 0:
                del self._evictable[block]
            self._refs[block] += 1
            table.blocks.append(block)
            table.hashes.append(h)
            parent, covered = h, covered + self.block_size
        self.prefix_hits += covered
        return covered

    def ensure(self, table: BlockTable, n_tokens: int) -> None:
        """Grow ``table`` to hold ``n_tokens`` tokens; all or nothing (raises OutOfBlocks)."""
        need = self.blocks_for(n_tokens) - len(table.blocks)
        if need <= 0:
            return
        if need > self.n_free:
            raise OutOfBlocks
        table.blocks.extend(self._take() for _ in range(need))

    def register_full(self, table: BlockTable, tokens: Sequence[int]) -> None:
        """Register every newly completed block of a sequence whose computed tokens are ``tokens``."""
        full = len(tokens) // self.block_size
        for i in range(len(table.hashes), min(full, len(table.blocks))):
            parent = table.hashes[-1] if table.hashes else 0
            h = hash((parent, tuple(tokens[i * self.block_size : (i + 1) * self.block_size])))
            table.hashes.append(h)
            block = table.blocks[i]
            if h not in self._by_hash and block not in self._hash_of:
                self._by_hash[h] = block
                self._hash_of[block] = h

    def release(self, table: BlockTable) -> None:
        """Give a finished (or cancelled) sequence's blocks back, at once (tail first, see above)."""
        for block in reversed(table.blocks):
            self._refs[block] -= 1
            if self._refs[block] == 0:
                if block in self._hash_of:
                    self._evictable[block] = None
                else:
                    self._free.append(block)
        table.blocks.clear()
        table.hashes.clear()
