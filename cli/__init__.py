"""The `driftloop` command: run services, bring the platform up, run the demo, produce
records and tail alerts. A client of the platform, not part of any service."""
