"""The five driftloop services, one package each.

Each is runnable alone as `python -m services.<name>` or `driftloop run <name>`.
"""
