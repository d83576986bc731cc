"""The Kubernetes API, one adapter: how the agent gets access (in cluster: `access`; the user's
kubeconfig: `kubeconfig`), one HTTP client (`client`) with one error table (`errors`), and
what each feature asks of the API (`node` for the readiness gate, `fleet` for the fleet view)."""
