"""Shadows and canaries: a candidate version beside the version that answers a name (the *primary*).

- **mirror** (a shadow): ``share`` of the requests the primary answers also run on the candidate, off the
  request's path. Each worker has one shadow process (:mod:`service.shadow.process`) that runs only on CPU time
  nothing else wants (``SCHED_IDLE``), fed through a socket whose send buffer is the bounded queue
  (``SHADOW_QUEUE_BYTES``): a request only sends its inputs and the primary's answer as one message
  (microseconds), and when there is no room they are dropped and counted, never the primary's work. The two
  answers are compared (:mod:`modelstore.compare`) and the figures go to Prometheus series per pair, which every
  process writes and the ``GET`` reads back summed over all of them, so the answer, ``/metrics`` and an offline
  ``compare`` agree.
- **canary**: ``share`` of the requests to the name are answered by the candidate instead. A request with the
  header ``X-Canary-Key`` always lands on the same side for the same key (a hash of the key, the name and the
  candidate version), in every worker and replica; without one, each request is drawn at random. The answer
  says which version answered and as what (``X-Model-Version``, ``X-Model-Role``).

The spec of each name's shadow lives in the shared served set (:mod:`service.repository`), so every worker
follows it within ``SYNC_SECONDS``; setting one never changes the primary (it is pinned while the shadow lasts).
"""
