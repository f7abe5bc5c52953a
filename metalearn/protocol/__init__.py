"""The shared evaluation protocol: the loop, R and b, metrics, checkpoints."""

from metalearn.protocol.loop import NonFiniteLossError, Protocol, ProtocolSettings

__all__ = ["NonFiniteLossError", "Protocol", "ProtocolSettings"]
