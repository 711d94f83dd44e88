"""The decision sequences of a study's finished trials as a prefix tree, which
``ReinforceSampler`` reads to propose no candidate twice (``avoid_duplicates``)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the tree needs no torch
    from archlab.search.samplers._controller import Decision


class Node:
    """A prefix of decision sequences of finished trials (a node of their prefix tree).

    ``done`` marks a prefix that is itself a finished trial's whole sequence, or
    one whose every continuation is: proposing it again would re-run a trial.
    """

    __slots__ = ("children", "done")

    def __init__(self) -> None:
        self.children: dict[tuple[str, int], dict[int, Node]] = {}  # (key, n) -> index -> node
        self.done = False

    def add(self, decisions: Sequence[Decision]) -> None:
        """Insert a finished trial's sequence and update ``done`` along its path."""
        path = [self]
        for key, n, index in decisions:
            path.append(path[-1].children.setdefault((key, n), {}).setdefault(index, Node()))
        path[-1].done = True
        for (key, n, _), node in zip(reversed(decisions), reversed(path[:-1])):
            if node.done:
                break
            kids = node.children[(key, n)]
            node.done = len(kids) == n and all(k.done for k in kids.values())
            if not node.done:
                break

    def child(self, key: str, n: int, index: int) -> Node | None:
        kids = self.children.get((key, n))
        return None if kids is None else kids.get(index)

    def exhausted(self, key: str, n: int) -> list[bool]:
        """For each choice of decision ``(key, n)`` here: is everything after it done?"""
        kids = self.children.get((key, n), {})
        return [i in kids and kids[i].done for i in range(n)]
