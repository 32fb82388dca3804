"""phxq.client — the producer/reader client library (async first, thin sync wrapper)."""

from phxq.client.client import Ack, Client, ClusterMap, Message
from phxq.client.sync import SyncClient

__all__ = ["Ack", "Client", "ClusterMap", "Message", "SyncClient"]
