"""Operations: running the services around the re-ranking library on one machine.

Not part of the library proper; the ``lrt-rerank opensearch up|down|status`` and
``lrt-rerank stack up|down|status`` commands and the scale-out tests and benches use it.

* :mod:`lrt_rerank.ops.opensearch`  a local OpenSearch node or cluster built from Maven Central artifacts
* :mod:`lrt_rerank.ops.stack`       rerank replicas sharing Redis behind HAProxy, plus an OpenSearch cluster
"""
