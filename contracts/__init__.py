"""Every event and HTTP payload driftloop exchanges, as pydantic models.

This package depends on pydantic only. Services import their contracts from
here and never define their own copy; `contracts.catalogue` maps each topic to
its event model and CloudEvents type, and `contracts.export` writes the JSON
Schema documents committed under contracts/schemas/.
"""
