"""The HTTP service for publishing pipelines: jobs, artifacts, tokens, webhooks, metrics."""
