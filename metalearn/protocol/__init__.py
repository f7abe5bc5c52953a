"""The shared evaluation protocol: the loop, R and b, metrics, checkpoints."""

from metalearn.protocol.loop import NonFiniteLossError, Protocol, ProtocolSettings
from metalearn.protocol.stopping import RunStopped

__all__ = ["NonFiniteLossError", "Protocol", "ProtocolSettings", "RunStopped"]
