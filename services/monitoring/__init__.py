"""Monitoring: joins late labels to predictions, runs a River detector on each model's error
stream (concept drift) and population-stability checks of input features against the
training data (data drift), raises and resolves alerts, and requests retraining on concept
drift — debounced, one request in flight per model."""
