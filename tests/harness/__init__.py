"""Real containerd and docker-registry processes and synthesized images, for tests and the demo."""
