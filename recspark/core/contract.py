"""Words and limits the public data contract fixes (``shared/contract.md``): the event types, the
fields an event must carry, the longest id, how a catalog spells `available`, what an impression
names. Ingest, the lookup service, the quality gates and the synthetic shop read them from here."""

# The event types that say something about a user's interest in an item (what interactions fold).
INTEREST_EVENT_TYPES = ("view", "add_to_cart", "remove_from_cart", "purchase", "rating")
# A served list shown to a user: never interest in an item (data contract §1).
IMPRESSION = "impression"
EVENT_TYPES = (*INTEREST_EVENT_TYPES, IMPRESSION)
# The fields every event must carry (data contract §1); an impression may leave item_id empty.
REQUIRED_FIELDS = ("event_id", "event_time", "user_id", "item_id", "event_type")
# Longer ids are quarantined by ingest, so no table holds one (and the lookup service refuses them).
MAX_ID_LENGTH = 256
# How a catalog may spell `available` (data contract §2; case and surrounding spaces aside): read
# by the Spark catalog reader (core/catalog.py) and the lookup service's (api/catalog.py).
TRUE_WORDS = ("true", "1", "yes", "y")
FALSE_WORDS = ("false", "0", "no", "n")
IMPRESSION_REQUIRED_FIELDS = ("recommendation_id", "items")
# The events an impression's recommendation_id attributes to it: a click (a view), an add-to-cart,
# a purchase of one of its items (recommendation_outcomes' clicks, add_to_carts, purchases).
ATTRIBUTED_EVENT_TYPES = ("view", "add_to_cart", "purchase")
# Which list an impression shows (its optional ``list`` field): a user's recommendations, or an
# item's similar items (the serving tables' names).
SERVED_LISTS = ("recommendations", "similar_items")
