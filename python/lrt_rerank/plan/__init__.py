"""``lrt-rerank plan``: choose the whole pipeline (re-rankers, depths, max lengths, weights, cascades) on a
split's judged queries and this machine's latency, under a p95 budget.

* :mod:`~lrt_rerank.plan.grid`: the candidate pipelines;
* :mod:`~lrt_rerank.plan.quality`: their quality, from each model's scores recorded once per query;
* :mod:`~lrt_rerank.plan.latency`: their latency, timed per component and checked whole;
* :mod:`~lrt_rerank.plan.choice`: the choice under the budget, with ``tune``'s guard;
* :mod:`~lrt_rerank.plan.planfile`: ``plan.json``; :mod:`~lrt_rerank.plan.planner`: the whole run;
* :mod:`~lrt_rerank.plan.plot`: the trade-off figure (``plot`` extra).
"""
