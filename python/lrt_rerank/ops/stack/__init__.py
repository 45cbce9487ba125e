"""Scale-out on one machine: rerank replicas sharing Redis behind HAProxy, and an OpenSearch cluster.

:mod:`lrt_rerank.ops.stack.spec` holds what to run (:class:`~lrt_rerank.ops.stack.spec.StackSpec`),
:mod:`lrt_rerank.ops.stack.launcher` starts and stops the whole stack (``lrt-rerank stack up|down|status``),
:mod:`lrt_rerank.ops.stack.haproxy` writes the load balancer's configuration and reads its stats, and
:mod:`lrt_rerank.ops.stack.processes` keeps track of the detached processes.
"""
