"""The serving systems :mod:`benchmarks.peers_bench` compares this service with, each a small program run by its
own virtualenv (their pins collide with the service's): MLServer (a custom ``MLModel``), KServe (a
``kserve.Model``, V1 and V2 routes) and plain BentoML, all running the same ONNX file on ONNX Runtime with one
intra-op thread. They import nothing from this project."""
