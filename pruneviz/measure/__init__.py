"""Numbers about a model: metrics, storage sizes, latency, one Meter per session, the
masked / slimmed / sparse forms and other compression techniques. Records nothing."""
