"""Registry: records training runs and versions with their lineage, applies the promotion
policy against the current champion, publishes lifecycle decisions, and serves a REST API to
read models, versions, lineage and the audit log, and to promote or roll back by hand."""
