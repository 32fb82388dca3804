"""phxq.client — the producer/reader client library (async first, thin sync wrapper)."""

from phxq.client.client import Client
from phxq.client.sync import SyncClient
from phxq.client.types import Ack, ClusterMap, ConsumedMessage, Message

__all__ = ["Ack", "Client", "ClusterMap", "ConsumedMessage", "Message", "SyncClient"]
