"""Images as the registry and the runtime name them: references, platforms, manifests and the
platform choice among an index's entries."""
