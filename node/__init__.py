"""oob-node: out-of-band traffic analysis for Istio/Envoy (receiver -> queue -> processing ->
aggregation)."""

__version__ = "0.1.0"
