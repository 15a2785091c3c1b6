"""Training: resolves a training request's data window to an immutable snapshot, trains the
declared River pipeline, scores it (and the current champion) on a time-ordered holdout,
stores a signed artifact and publishes models.trained with metrics and lineage. It also
requests each model's first training once enough validated data has arrived."""
