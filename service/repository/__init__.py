"""The model repository while serving: which versions serve, changed without a restart, in every worker.

BentoML's workers are separate processes that share nothing but the model store, so the served set lives in
a directory they all read (``SPARSITY_REPOSITORY_DIR``, made by the supervising process at start):

- ``served.json``: the **desired** set, ``{"generation": g, "models": {tag: "loading" | "ready"}, "shadows":
  {name: spec}}`` (:mod:`service.shadow`), written whole (a temporary file renamed over it) under a file lock;
- ``workers/<index>.json``: each worker's **acknowledgement** of the generation it has applied, with the
  tags it could not load and why.

Each worker runs a :class:`WorkerSync` thread that notices a new generation (one ``stat`` every
``SYNC_SECONDS``), loads what is new (audit, load, warm-up, replay of the card's examples), switches its
data plane to the ``ready`` tags in one step, releases what left (after its requests in flight), and
acknowledges.

A load (:meth:`Manager.load`, in whichever worker received the request) is a two-step change, one
management operation at a time over all workers:

1. the tag is added as ``loading``: every worker loads and checks it while the previous version serves;
2. when every worker has acknowledged it without a problem, it becomes ``ready`` (and, for a load of a
   name's latest version, the name's other versions leave): every worker switches.

If any worker cannot load it, or not within the timeout, the tag is withdrawn, the previous version never
stopped serving, and the load answers with the first worker's reason. A worker that restarts reads the
desired set at start, so it serves what the others serve.
"""
