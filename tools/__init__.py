"""Developer and test tooling for fleet-webhook (not shipped in the wheel)."""
