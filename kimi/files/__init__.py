"""Files sent inside chat messages: fetching, decoding and reading them."""

from .data_url import DataFile, DataUrl, open_data_url, parse_data_url
from .fetch import FetchedFile, PinnedAddressAdapter, SafeFetcher, is_public_address

__all__ = [
    "DataFile",
    "DataUrl",
    "FetchedFile",
    "PinnedAddressAdapter",
    "SafeFetcher",
    "is_public_address",
    "open_data_url",
    "parse_data_url",
]
