"""A served list, assembled at request time: the stored list, the request's filters, the catalog
as it is now, and the fallback list to fill what the filters removed.

:class:`ListAnswer` is the one place a served list is known in full (who it is for, its
``recommendation_id``, items with positions and sources, model version, variant, whether it is
the fallback list); :meth:`ListAnswer.impression` is what the impression log records of it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from recspark.api.catalog import CatalogView
from recspark.api.fallback_list import FallbackList
from recspark.api.impressions import ServedList
from recspark.api.serving_lists import Hit
from recspark.api.vocabulary import NULL, Vocabularies
from recspark.core import table_names as names
from recspark.core.recommendation_ids import new_recommendation_id

# The source of an item filled in at request time from the fallback list (``fallback_items``):
# a user or item without a list, or a list the request's filters left short.
FALLBACK = "fallback"
# What a category filter naming a category the service has never seen compares with: no item.
NO_CATEGORY = -2

USER_LIST, SIMILAR_LIST = "recommendations", "similar"
# The impression's ``list`` field (the serving table's name) for each kind of answer.
IMPRESSION_LISTS = {USER_LIST: names.RECOMMENDATIONS, SIMILAR_LIST: names.SIMILAR_ITEMS}


class ServedItem(NamedTuple):  # a tuple: cheap to make, many per response
    item_id: str
    position: int  # 1 = first
    score: float
    source: str | None
    because_item_id: str | None


@dataclass(frozen=True)
class ListAnswer:
    """A list as it leaves the service (see the module docstring). ``kind``: ``recommendations``
    (for ``user_id``) or ``similar`` (to ``item_id``); ``fallback``: the subject had no list of its
    own; ``variant``: the experiment arm, when the table has a variant column;
    ``recommendation_id``: a UUIDv7 (core/recommendation_ids.py), new for every answer."""

    recommendation_id: str
    kind: str
    subject: str
    items: tuple[ServedItem, ...]
    model_version: str | None
    variant: str | None
    has_variant: bool
    fallback: bool

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "recommendation_id": self.recommendation_id,
            "user_id" if self.kind == USER_LIST else "item_id": self.subject,
            "model_version": self.model_version,
        }
        if self.has_variant:
            body["variant"] = self.variant
        body["fallback"] = self.fallback
        body["items"] = [
            {
                "item_id": i.item_id,
                "position": i.position,
                "score": i.score,
                "source": i.source,
                "because_item_id": i.because_item_id,
            }
            for i in self.items
        ]
        return body

    def impression(self, user_id: str) -> ServedList | None:
        """What the impression log records of this answer, shown to ``user_id``; None for an
        answer without items (it showed nothing, and the contract's impression has items)."""
        if not self.items:
            return None
        sources = [i.source for i in self.items if i.source is not None]
        return ServedList(
            recommendation_id=self.recommendation_id,
            user_id=user_id,
            items=[i.item_id for i in self.items],
            list=IMPRESSION_LISTS[self.kind],
            model_version=self.model_version,
            variant=self.variant,
            sources=sources if len(sources) == len(self.items) else None,
            item_id=self.subject if self.kind == SIMILAR_LIST else "",
        )


@dataclass(frozen=True)
class Filters:
    """A request's filters, as codes: at most ``n`` items, none of ``exclude``, only items of
    ``category`` (None: any)."""

    n: int
    exclude: frozenset[int]
    category: int | None


Candidate = tuple[int, float, int, int]  # item code, score, source code, because-item code


def _stored(hit: Hit) -> Iterator[Candidate]:
    block, slot = hit.block, hit.slot
    start, end = int(block.offsets[slot]), int(block.offsets[slot + 1])
    yield from zip(
        block.item[start:end].tolist(),
        block.score[start:end].tolist(),
        block.source[start:end].tolist(),
        block.because[start:end].tolist(),
        strict=True,
    )


def _fallback(fallback: FallbackList | None, category: int | None, fill_code: int) -> Iterator[Candidate]:
    if fallback is None:
        return
    positions = range(fallback.rows) if category is None else fallback.by_category.get(category, ())
    items, scores = fallback.item, fallback.score
    for position in positions:
        yield int(items[position]), float(scores[position]), fill_code, NULL


def _pick(
    candidates: Iterator[Candidate], wanted: int, taken: set[int], catalog: CatalogView, category: int | None
) -> list[Candidate]:
    """The first ``wanted`` candidates not in ``taken``, available now and of ``category``;
    adds them to ``taken``."""
    picked: list[Candidate] = []
    if wanted <= 0:
        return picked
    for candidate in candidates:
        item = candidate[0]
        if item in taken or not catalog.available(item):
            continue
        if category is not None and catalog.category_of(item) != category:
            continue
        taken.add(item)
        picked.append(candidate)
        if len(picked) == wanted:
            break
    return picked


@dataclass(frozen=True)
class Shelf:
    """What one request reads: the tables and catalog as held when it arrived."""

    vocab: Vocabularies
    catalog: CatalogView
    fallback: FallbackList | None
    fill_source: int  # the label code of FALLBACK


def assemble(
    shelf: Shelf,
    kind: str,
    subject: str,
    hit: Hit | None,
    filters: Filters,
    has_variant: bool,
    also_exclude: int = NULL,
    fill_category: int | None = None,
) -> ListAnswer:
    """The served list of ``subject``: its stored list (``hit``) in rank order, filtered, then
    filled from the fallback list up to ``filters.n`` where it can be (``source`` "fallback",
    from ``fill_category`` when the request names none); without a stored list, the fallback
    list, flagged as such. As in the tables, the score never rises along the list (scores of
    different sources are not comparable; the position is the order)."""
    vocab = shelf.vocab
    taken = set(filters.exclude)
    if also_exclude != NULL:
        taken.add(also_exclude)
    picked = [] if hit is None else _pick(_stored(hit), filters.n, taken, shelf.catalog, filters.category)
    fill = filters.category if filters.category is not None else fill_category
    fallback = _fallback(shelf.fallback, fill, shelf.fill_source)
    picked += _pick(fallback, filters.n - len(picked), taken, shelf.catalog, fill)
    words, labels = vocab.items.words, vocab.labels.words
    items, ceiling = [], float("inf")
    for position, (item, score, source, because) in enumerate(picked, start=1):
        ceiling = min(ceiling, score)
        items.append(
            ServedItem(
                item_id=words[item],
                position=position,
                score=ceiling,
                source=labels[source] if source != NULL else None,
                because_item_id=words[because] if because != NULL else None,
            )
        )
    if hit is not None:
        version = int(hit.block.model_version[hit.slot])
        variant = int(hit.block.variant[hit.slot]) if hit.block.variant is not None else NULL
    else:
        version = shelf.fallback.model_version if shelf.fallback is not None else NULL
        variant = NULL
    return ListAnswer(
        recommendation_id=new_recommendation_id(),
        kind=kind,
        subject=subject,
        items=tuple(items),
        model_version=labels[version] if version != NULL else None,
        variant=labels[variant] if variant != NULL else None,
        has_variant=has_variant,
        fallback=hit is None,
    )
