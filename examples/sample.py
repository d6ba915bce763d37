"""A small inventory module: the sample file for `codeagent-lsp complete`."""

from dataclasses import dataclass


@dataclass
class Item:
    name: str
    price: float
    quantity: int


def total_value(items: list[Item]) -> float:
    """The value of all items in stock."""
    return sum(item.price * item.quantity for item in items)


def cheapest(items: list[Item]) -> Item:
    """The item with the lowest price."""
    return min(items, key=lambda item: item.price)


def in_stock(items: list[Item]) -> list[Item]:
    """The items with a positive quantity."""
    return [item for item in items if item.
