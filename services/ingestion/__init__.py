"""Ingestion: validates labeled records against their dataset contract, de-duplicates them,
publishes them on data.validated and appends them to the dataset store; rejects the rest to
data.rejected with a reason a person understands."""
