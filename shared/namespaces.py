"""Which namespaces an installation serves (pure): those labelled ``leoflow.io/staging-instance: <instance>``,
narrowed to the configured list when there is one.

A namespace carries one value of the label, so two installations can never both serve it. A listed namespace
that is not labelled for the instance is not served (its owner, if any, is another installation): the caller
reports it, so an operator who forgot ``kubectl label`` sees why nothing happens there.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from shared.labels import INSTANCE


def instance_selector(instance: str) -> str:
    """The label selector of the namespaces (and PVCs) of ``instance``."""
    return f"{INSTANCE}={instance}"


@dataclass(frozen=True)
class Served:
    """The namespaces an installation acts in, and the listed ones it may not act in."""

    namespaces: frozenset[str]
    unlabelled: tuple[str, ...] = ()  # listed, but not labelled for this instance

    def __contains__(self, namespace: object) -> bool:
        return namespace in self.namespaces


def served_namespaces(labelled: Iterable[str], listed: Sequence[str]) -> Served:
    """``labelled``: the namespaces carrying the instance's label; ``listed``: the configured list (empty:
    every labelled namespace)."""
    have = frozenset(labelled)
    if not listed:
        return Served(namespaces=have)
    return Served(namespaces=have & frozenset(listed),
                  unlabelled=tuple(sorted(n for n in set(listed) if n not in have)))
