"""The sparse engine: an ONNX classifier compiled into a program whose cost grows with the nonzero
activations (:mod:`~sparsity.sparse.program`), run by C kernels (:mod:`~sparsity.sparse.kernels`), with the
ONNX probe's interface (:class:`~sparsity.sparse.engine.SparseProbe`)."""
