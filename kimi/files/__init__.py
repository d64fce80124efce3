"""Files sent inside chat messages: fetching, decoding and reading them."""

from .data_url import DataFile, parse_data_url
from .fetch import FetchedFile, PinnedAddressAdapter, SafeFetcher, is_public_address

__all__ = [
    "DataFile",
    "FetchedFile",
    "PinnedAddressAdapter",
    "SafeFetcher",
    "is_public_address",
    "parse_data_url",
]
