"""The model store: the cards (:mod:`modelstore.card`), one module per model kind found through one table
(:mod:`modelstore.kinds`), registration, the store's write side (:mod:`modelstore.register`, ``python -m
modelstore register``), the audit, its read side and the one servability check (:mod:`modelstore.audit`),
saving (:mod:`modelstore.files`) and the runtimes' interface (:mod:`modelstore.runtime`).

Training and the lab register their models through it; the service chooses, audits and loads through it.
It imports the core (:mod:`sparsity`), never training, the lab or the service."""
