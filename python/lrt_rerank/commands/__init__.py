"""Sub-commands of the ``lrt-rerank`` CLI, one module per area."""
