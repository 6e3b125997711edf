"""fleet-webhook: receives git provider webhooks and records the pushed commit on Fleet GitRepos."""

__version__ = "0.1.0"
